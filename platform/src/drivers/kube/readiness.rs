//! Waiting for a component's workloads to become available: the Deployments and StatefulSets
//! of a namespace that match a label selector (`app.kubernetes.io/instance=<release>`). The
//! wait polls with exponential backoff up to a deadline; when the deadline passes, the error
//! lists every workload that is not ready and why. A selector that matches nothing is ready:
//! a component without workloads has nothing to wait for.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::time::Instant;

use super::{KubeError, client_error};
use crate::sensitive::Redactor;

/// How long and how often to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadinessOptions {
    /// Give up after this long.
    pub timeout: Duration,
    /// The pause after the first look; it doubles after each look up to `max_poll_interval`.
    pub first_poll_interval: Duration,
    pub max_poll_interval: Duration,
}

impl Default for ReadinessOptions {
    fn default() -> ReadinessOptions {
        ReadinessOptions {
            timeout: Duration::from_secs(600),
            first_poll_interval: Duration::from_secs(1),
            max_poll_interval: Duration::from_secs(10),
        }
    }
}

/// Waits until every Deployment and StatefulSet in `namespace` matching `selector` is
/// available, or fails with [`KubeError::NotReady`] listing the ones that are not.
pub async fn wait_for_workloads(
    client: &Client,
    namespace: &str,
    selector: &str,
    options: &ReadinessOptions,
) -> Result<(), KubeError> {
    let deadline = Instant::now() + options.timeout;
    let mut interval = options.first_poll_interval;
    loop {
        let not_ready = not_ready_workloads(client, namespace, selector).await?;
        if not_ready.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(KubeError::NotReady {
                selector: format!("{namespace}/{selector}"),
                timeout: options.timeout,
                not_ready,
            });
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(options.max_poll_interval);
    }
}

/// One look at the workloads: a description of each one that is not ready.
async fn not_ready_workloads(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<Vec<String>, KubeError> {
    let params = ListParams::default().labels(selector);
    let what = format!("workloads in namespace {namespace} matching `{selector}`");
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
        .map_err(|error| client_error("list", format!("deployments of {what}"), error, &Redactor::new()))?;
    let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
        .map_err(|error| client_error("list", format!("statefulsets of {what}"), error, &Redactor::new()))?;
    let mut not_ready = Vec::new();
    for deployment in &deployments.items {
        if let Some(reason) = deployment_not_ready(deployment) {
            let name = deployment.metadata.name.as_deref().unwrap_or_default();
            not_ready.push(format!("deployment {namespace}/{name}: {reason}"));
        }
    }
    for stateful_set in &stateful_sets.items {
        if let Some(reason) = stateful_set_not_ready(stateful_set) {
            let name = stateful_set.metadata.name.as_deref().unwrap_or_default();
            not_ready.push(format!("statefulset {namespace}/{name}: {reason}"));
        }
    }
    Ok(not_ready)
}

/// Why a Deployment is not available yet, following `kubectl rollout status`.
fn deployment_not_ready(deployment: &Deployment) -> Option<String> {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let replicas = deployment.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0);
    if observed < generation {
        return Some(format!("generation {generation} not yet observed by the controller (at {observed})"));
    }
    // The controller gives up on a rollout after spec.progressDeadlineSeconds; say so rather
    // than only counting replicas, as `kubectl rollout status` does.
    let stuck = status.conditions.iter().flatten().any(|condition| {
        condition.type_ == "Progressing" && condition.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    let stuck = if stuck { " (rollout stuck: progress deadline exceeded)" } else { "" };
    let updated = status.updated_replicas.unwrap_or(0);
    if updated != replicas {
        return Some(format!("{updated} of {replicas} replicas updated{stuck}"));
    }
    let available = status.available_replicas.unwrap_or(0);
    if available < replicas {
        return Some(format!("{available} of {replicas} replicas available{stuck}"));
    }
    None
}

/// Why a StatefulSet is not available yet.
fn stateful_set_not_ready(stateful_set: &StatefulSet) -> Option<String> {
    let generation = stateful_set.metadata.generation.unwrap_or(0);
    let replicas = stateful_set.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
    let status = stateful_set.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0);
    if observed < generation {
        return Some(format!("generation {generation} not yet observed by the controller (at {observed})"));
    }
    let ready = status.ready_replicas.unwrap_or(0);
    if ready != replicas {
        return Some(format!("{ready} of {replicas} replicas ready"));
    }
    if status.update_revision.is_some() && status.update_revision != status.current_revision {
        return Some(format!(
            "rolling update to revision {} in progress",
            status.update_revision.as_deref().unwrap_or_default()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::kube::mock::{MockServer, json_response};
    use serde_json::{Value, json};

    const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/oob/deployments";
    const STATEFUL_SETS: &str = "/apis/apps/v1/namespaces/oob/statefulsets";

    fn list(kind: &str, items: Vec<Value>) -> Value {
        json!({ "apiVersion": "apps/v1", "kind": kind, "metadata": { "resourceVersion": "1" }, "items": items })
    }

    fn deployment(name: &str, replicas: i32, available: i32) -> Value {
        json!({
            "metadata": { "name": name, "namespace": "oob", "generation": 2 },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": name } },
                "template": { "metadata": {}, "spec": { "containers": [] } },
            },
            "status": {
                "observedGeneration": 2,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "availableReplicas": available,
            },
        })
    }

    fn stateful_set(name: &str, ready: i32, current: &str, update: &str) -> Value {
        json!({
            "metadata": { "name": name, "namespace": "oob", "generation": 1 },
            "spec": {
                "replicas": 1,
                "serviceName": name,
                "selector": { "matchLabels": { "app": name } },
                "template": { "metadata": {}, "spec": { "containers": [] } },
            },
            "status": {
                "observedGeneration": 1,
                "replicas": 1,
                "readyReplicas": ready,
                "currentRevision": current,
                "updateRevision": update,
            },
        })
    }

    fn fast() -> ReadinessOptions {
        ReadinessOptions {
            timeout: Duration::from_secs(5),
            first_poll_interval: Duration::from_millis(5),
            max_poll_interval: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn available_deployment_is_ready_after_one_look() {
        let (client, mut server) = MockServer::start();
        let wait = tokio::spawn(async move {
            wait_for_workloads(&client, "oob", "app.kubernetes.io/instance=oob-consent", &fast()).await
        });

        let request = server.expect("GET", DEPLOYMENTS).await;
        assert_eq!(request.query("labelSelector").as_deref(), Some("app.kubernetes.io/instance=oob-consent"));
        request.respond(json_response(200, list("DeploymentList", vec![deployment("oob-consent", 2, 2)])));
        server
            .expect("GET", STATEFUL_SETS)
            .await
            .respond(json_response(200, list("StatefulSetList", vec![])));

        server.finish(wait).await.unwrap();
    }

    #[tokio::test]
    async fn unavailable_deployment_becomes_ready_on_the_second_look() {
        let (client, mut server) = MockServer::start();
        let wait = tokio::spawn(async move {
            wait_for_workloads(&client, "oob", "app.kubernetes.io/instance=oob-consent", &fast()).await
        });

        for available in [0, 2] {
            server.expect("GET", DEPLOYMENTS).await.respond(json_response(
                200,
                list("DeploymentList", vec![deployment("oob-consent", 2, available)]),
            ));
            server.expect("GET", STATEFUL_SETS).await.respond(json_response(
                200,
                list("StatefulSetList", vec![stateful_set("oob-cache", 1, "r1", "r1")]),
            ));
        }

        server.finish(wait).await.unwrap();
    }

    #[tokio::test]
    async fn selector_matching_nothing_is_ready() {
        let (client, mut server) = MockServer::start();
        let wait = tokio::spawn(async move {
            wait_for_workloads(&client, "oob", "app.kubernetes.io/instance=none", &fast()).await
        });
        server.expect("GET", DEPLOYMENTS).await.respond(json_response(200, list("DeploymentList", vec![])));
        server
            .expect("GET", STATEFUL_SETS)
            .await
            .respond(json_response(200, list("StatefulSetList", vec![])));
        server.finish(wait).await.unwrap();
    }

    #[tokio::test]
    async fn timeout_lists_every_workload_that_is_not_ready_and_why() {
        let (client, mut server) = MockServer::start();
        let options = ReadinessOptions { timeout: Duration::from_millis(30), ..fast() };
        let wait = tokio::spawn(async move {
            wait_for_workloads(&client, "oob", "app.kubernetes.io/instance=oob-consent", &options).await
        });
        // Answer every look the same way until the wait gives up and drops the client.
        let answer = tokio::spawn(async move {
            let mut looks = 0;
            loop {
                let Ok(Some((request, send))) =
                    tokio::time::timeout(Duration::from_secs(5), server.handle_mut().next_request()).await
                else {
                    return looks;
                };
                let body = if request.uri().path() == DEPLOYMENTS {
                    looks += 1;
                    list("DeploymentList", vec![deployment("oob-consent", 2, 0)])
                } else {
                    list("StatefulSetList", vec![stateful_set("oob-cache", 1, "r1", "r2")])
                };
                send.send_response(json_response(200, body));
            }
        });

        let error = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("the wait ends at its deadline")
            .unwrap()
            .unwrap_err();
        let looks = answer.await.unwrap();
        assert!(looks >= 2, "looked {looks} times");
        let message = error.to_string();
        assert!(
            message.starts_with(
                "timed out after 30ms waiting for workloads matching `oob/app.kubernetes.io/instance=oob-consent`: "
            ),
            "{message}"
        );
        assert!(
            message.ends_with(
                "deployment oob/oob-consent: 0 of 2 replicas available; \
                 statefulset oob/oob-cache: rolling update to revision r2 in progress"
            ),
            "{message}"
        );
    }

    #[test]
    fn deployment_past_its_progress_deadline_says_the_rollout_is_stuck() {
        let mut value = deployment("api", 2, 1);
        value["status"]["conditions"] = json!([{
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        }]);
        let deployment: Deployment = serde_json::from_value(value).unwrap();
        assert_eq!(
            deployment_not_ready(&deployment).as_deref(),
            Some("1 of 2 replicas available (rollout stuck: progress deadline exceeded)")
        );
    }

    #[test]
    fn deployment_with_unobserved_generation_is_not_ready() {
        let mut value = deployment("api", 1, 1);
        value["metadata"]["generation"] = json!(3);
        let deployment: Deployment = serde_json::from_value(value).unwrap();
        assert_eq!(
            deployment_not_ready(&deployment).as_deref(),
            Some("generation 3 not yet observed by the controller (at 2)")
        );
    }
}
