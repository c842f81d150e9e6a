//! What the workloads of a release look like, for the refresh: the Deployments, StatefulSets
//! and DaemonSets a readiness wait's selector matches, each as a digest of its `spec.template` and, when the release
//! sets the replica count and no HorizontalPodAutoscaler scales it, its replica count. The wait
//! records them once the workloads are ready; the refresh compares them, so `kubectl edit` of
//! a pod template or `kubectl scale` drifts the release, while an autoscaler scaling does not.
//!
//! "The release sets it": right after the release, `spec.replicas` is owned by a field manager
//! (helm's; its name is its binary's) and not only defaulted by the API server (a defaulted
//! field has no owner). `kubectl scale` later moves the field to kubectl's manager, so that
//! ownership is read when recording only.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{KubeError, client_error};
use crate::sensitive::Redactor;

/// One workload as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadState {
    /// Hex SHA-256 of `spec.template` as the API server returns it.
    pub template: String,
    /// The replica count, when the release sets it and no autoscaler targets the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

/// The workloads of a namespace, by `Kind/name`, with the labels to select them by.
#[derive(Debug, Clone, Default)]
pub struct Workloads {
    items: BTreeMap<String, Live>,
}

#[derive(Debug, Clone)]
struct Live {
    labels: BTreeMap<String, String>,
    template: String,
    replicas: Option<i32>,
    /// A field manager other than the controllers owns `spec.replicas`.
    replicas_owned: bool,
    /// A HorizontalPodAutoscaler targets the workload.
    autoscaled: bool,
}

/// The controllers' manager: its ownership of `spec.replicas` (an autoscaler's writes) is not
/// the release setting it.
const CONTROLLER_MANAGER: &str = "kube-controller-manager";

fn release_sets_replicas(meta: &ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() != Some(CONTROLLER_MANAGER)
            && entry
                .fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .is_some_and(|spec| spec.get("f:replicas").is_some())
    })
}

fn digest(value: &Value) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(value).expect("JSON")))
}

impl Workloads {
    /// Lists the namespace's Deployments, StatefulSets, DaemonSets and autoscalers (one list of
    /// each).
    pub async fn list(client: &Client, namespace: &str) -> Result<Workloads, KubeError> {
        let params = ListParams::default();
        let list_error = |what: &str| {
            let what = format!("{what} in namespace {namespace}");
            move |error| client_error("list", what, error, &Redactor::new())
        };
        let deployments = Api::<Deployment>::namespaced(client.clone(), namespace)
            .list(&params)
            .await
            .map_err(list_error("deployments"))?;
        let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .list(&params)
            .await
            .map_err(list_error("statefulsets"))?;
        let daemon_sets = Api::<DaemonSet>::namespaced(client.clone(), namespace)
            .list(&params)
            .await
            .map_err(list_error("daemonsets"))?;
        let autoscalers = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
            .list(&params)
            .await
            .map_err(list_error("horizontalpodautoscalers"))?;
        let scaled: BTreeSet<String> = autoscalers
            .items
            .iter()
            .filter_map(|hpa| {
                hpa.spec.as_ref().map(|s| format!("{}/{}", s.scale_target_ref.kind, s.scale_target_ref.name))
            })
            .collect();
        let mut items = BTreeMap::new();
        let mut add = |kind: &str, meta: &ObjectMeta, template: Value, replicas: Option<i32>| {
            let key = format!("{kind}/{}", meta.name.clone().unwrap_or_default());
            let live = Live {
                labels: meta.labels.clone().unwrap_or_default(),
                template: digest(&template),
                replicas,
                replicas_owned: release_sets_replicas(meta),
                autoscaled: scaled.contains(&key),
            };
            items.insert(key, live);
        };
        for deployment in &deployments.items {
            let spec = deployment.spec.as_ref();
            let template =
                spec.map(|s| serde_json::to_value(&s.template).expect("JSON")).unwrap_or(Value::Null);
            add("Deployment", &deployment.metadata, template, spec.and_then(|s| s.replicas));
        }
        for stateful_set in &stateful_sets.items {
            let spec = stateful_set.spec.as_ref();
            let template =
                spec.map(|s| serde_json::to_value(&s.template).expect("JSON")).unwrap_or(Value::Null);
            add("StatefulSet", &stateful_set.metadata, template, spec.and_then(|s| s.replicas));
        }
        for daemon_set in &daemon_sets.items {
            // One pod per node: no replica count.
            let template = daemon_set.spec.as_ref().map(|s| serde_json::to_value(&s.template).expect("JSON"));
            add("DaemonSet", &daemon_set.metadata, template.unwrap_or(Value::Null), None);
        }
        Ok(Workloads { items })
    }

    /// What to record of the workloads a label selector of equality terms (`k=v,k2=v2`)
    /// matches: the replica count only where the release sets it and no autoscaler scales it.
    pub fn to_record(&self, selector: &str) -> BTreeMap<String, WorkloadState> {
        self.selected(selector)
            .map(|(key, live)| {
                let replicas = live.replicas.filter(|_| live.replicas_owned && !live.autoscaled);
                (key.clone(), WorkloadState { template: live.template.clone(), replicas })
            })
            .collect()
    }

    /// The workloads as they are now, to compare with a record: the replica count unless an
    /// autoscaler scales the workload now.
    pub fn to_compare(&self, selector: &str) -> BTreeMap<String, WorkloadState> {
        self.selected(selector)
            .map(|(key, live)| {
                let replicas = live.replicas.filter(|_| !live.autoscaled);
                (key.clone(), WorkloadState { template: live.template.clone(), replicas })
            })
            .collect()
    }

    fn selected<'a>(&'a self, selector: &str) -> impl Iterator<Item = (&'a String, &'a Live)> + 'a {
        let terms: Vec<(&str, &str)> = selector
            .split(',')
            .filter_map(|term| term.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim_start_matches('=').trim()))
            .collect();
        let terms: Vec<(String, String)> =
            terms.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        self.items.iter().filter(move |(_, live)| terms.iter().all(|(k, v)| live.labels.get(k) == Some(v)))
    }
}

/// Why the live workloads differ from the recorded ones (the first difference), if they do.
pub fn workload_drift(
    recorded: &BTreeMap<String, WorkloadState>,
    live: &BTreeMap<String, WorkloadState>,
) -> Option<String> {
    for (key, was) in recorded {
        let Some(now) = live.get(key) else { return Some(format!("{key} deleted")) };
        if now.template != was.template {
            return Some(format!("{key}: the pod template changed"));
        }
        // Compared only when recorded (the release sets it) and not autoscaled now.
        if let (Some(was), Some(now)) = (was.replicas, now.replicas)
            && was != now
        {
            return Some(format!("{key}: {now} replicas, recorded {was}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(template: &str, replicas: Option<i32>) -> WorkloadState {
        WorkloadState { template: template.to_owned(), replicas }
    }

    #[test]
    fn drift_is_a_deleted_workload_a_changed_template_or_other_replicas_when_tracked() {
        let recorded = BTreeMap::from([("Deployment/api".to_owned(), state("aa", Some(1)))]);
        assert_eq!(workload_drift(&recorded, &recorded), None);
        assert_eq!(workload_drift(&recorded, &BTreeMap::new()).as_deref(), Some("Deployment/api deleted"));
        let edited = BTreeMap::from([("Deployment/api".to_owned(), state("bb", Some(1)))]);
        assert_eq!(
            workload_drift(&recorded, &edited).as_deref(),
            Some("Deployment/api: the pod template changed")
        );
        let scaled = BTreeMap::from([("Deployment/api".to_owned(), state("aa", Some(3)))]);
        assert_eq!(
            workload_drift(&recorded, &scaled).as_deref(),
            Some("Deployment/api: 3 replicas, recorded 1")
        );
        // An autoscaler now owns the count: replicas are not tracked, so scaling is no drift.
        let autoscaled = BTreeMap::from([("Deployment/api".to_owned(), state("aa", None))]);
        assert_eq!(workload_drift(&recorded, &autoscaled), None);
    }
}
