//! The refresh of a cluster target: what is really deployed, read in bulk and metadata only.
//!
//! - Helm releases: helm keeps one Secret per revision (`sh.helm.release.v1.<name>.v<N>`,
//!   labels `owner=helm`, `name`, `version`, `status`). Their **metadata** is listed (the
//!   `PartialObjectMetadataList` form: the server never sends `.data.release`, which holds every
//!   value in clear): a missing release, a latest revision other than the one the journal
//!   recorded, or a status other than `deployed` drifts the release step.
//! - Objects we apply server-side (namespaces, Secrets, manifests, the key store): missing, or
//!   a field we applied no longer owned by our field manager. The API server moves a field's
//!   ownership to whichever manager changes its value ("Whenever a field's value does change,
//!   ownership moves from its current manager to the manager making the change", Server-Side
//!   Apply), so `managedFields` alone tells that someone else changed (or removed) a value we
//!   set, without reading the value: a Secret's data is never read. Fields others own and
//!   status writes are other managers' entries and never count.
//!
//! One metadata list per (namespace, kind), and one for namespaces. Nothing is written.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::BoxFuture;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, ObjectMeta};
use serde_json::{Value, json};

use super::apply::{Target, known_kind};
use super::{FIELD_MANAGER, KubeError, client_error};
use crate::exec::{Found, Observer, StepError, StepRecord};
use crate::plan::{Action, Plan, Step};
use crate::sensitive::Redactor;

/// Observes a cluster through `client` (read-only).
pub struct ClusterObserver {
    pub client: Client,
}

/// Who owns which fields of one live object, by its metadata.
#[derive(Debug, Clone, Default)]
struct Live {
    /// Our manager's `Apply` field sets, merged.
    ours: Value,
    /// Every other manager's field set, by manager name.
    others: Vec<(String, Value)>,
}

impl Live {
    fn of(meta: &ObjectMeta) -> Live {
        let mut live = Live::default();
        let mut ours = json!({});
        for entry in meta.managed_fields.iter().flatten() {
            let Some(fields) = entry.fields_v1.as_ref().map(|f| f.0.clone()) else { continue };
            let manager = entry.manager.clone().unwrap_or_default();
            let is_ours = manager == FIELD_MANAGER
                && entry.operation.as_deref() == Some("Apply")
                && entry.subresource.as_deref().unwrap_or("").is_empty();
            if is_ours {
                merge(&mut ours, &fields);
            } else {
                live.others.push((manager, fields));
            }
        }
        live.ours = ours;
        live
    }
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key.clone()).or_insert_with(|| json!({})), value);
            }
        }
        (into, from) => *into = from.clone(),
    }
}

/// The fields an applied object sets, as paths of map keys (a list or a scalar ends a path):
/// what our field manager must still own. `apiVersion`, `kind`, `metadata.name` and
/// `metadata.namespace` identify the object and are not tracked as fields.
fn applied_paths(manifest: &Value) -> Vec<Vec<String>> {
    fn walk(node: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match node {
            Value::Object(map) if !map.is_empty() => {
                for (key, value) in map {
                    let identity = match path.as_slice() {
                        [] => key == "apiVersion" || key == "kind",
                        [first] => first == "metadata" && (key == "name" || key == "namespace"),
                        _ => false,
                    };
                    if identity {
                        continue;
                    }
                    path.push(key.clone());
                    walk(value, path, out);
                    path.pop();
                }
            }
            _ => out.push(path.clone()),
        }
    }
    let mut out = Vec::new();
    walk(manifest, &mut Vec::new(), &mut out);
    out.retain(|path| !path.is_empty());
    out
}

fn owns(fields: &Value, path: &[String]) -> bool {
    let mut node = fields;
    for part in path {
        match node.get(format!("f:{part}")) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

/// Why `live` no longer holds what `manifest` applied, if it does not: the first field (in
/// path order) our manager lost, and who has it now.
fn ownership_drift(what: &str, manifest: &Value, live: &Live) -> Option<String> {
    let lost: Vec<Vec<String>> =
        applied_paths(manifest).into_iter().filter(|path| !owns(&live.ours, path)).collect();
    let first = lost.first()?;
    let field = first.join(".");
    let more = match lost.len() {
        1 => String::new(),
        n => format!(" (and {} more field{})", n - 1, if n == 2 { "" } else { "s" }),
    };
    let by: BTreeSet<&str> = live
        .others
        .iter()
        .filter(|(_, fields)| owns(fields, first))
        .map(|(manager, _)| manager.as_str())
        .collect();
    Some(if by.is_empty() {
        format!("{what}: `{field}` was removed{more}")
    } else {
        let managers: Vec<&str> = by.into_iter().collect();
        format!("{what}: `{field}` was changed by {}{more}", managers.join(", "))
    })
}

/// A release's latest revision as helm's storage records it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Revision {
    version: u64,
    status: String,
}

/// The latest revision of every release among helm's storage Secrets (by their labels).
fn helm_releases(items: &[ObjectMeta]) -> BTreeMap<String, Revision> {
    let mut out: BTreeMap<String, Revision> = BTreeMap::new();
    for meta in items {
        let Some(labels) = &meta.labels else { continue };
        if labels.get("owner").map(String::as_str) != Some("helm") {
            continue;
        }
        let (Some(name), Some(version)) =
            (labels.get("name"), labels.get("version").and_then(|v| v.parse::<u64>().ok()))
        else {
            continue;
        };
        let status = labels.get("status").cloned().unwrap_or_default();
        let newer = out.get(name).is_none_or(|known| known.version < version);
        if newer {
            out.insert(name.clone(), Revision { version, status });
        }
    }
    out
}

/// The revision the journal recorded for a release step: `revision` in its outputs, or (in
/// records older than that field) the `REVISION: N` line of helm's output it kept.
pub(crate) fn recorded_revision(outputs: &Value) -> Option<u64> {
    if let Some(revision) = outputs.get("revision").and_then(Value::as_u64) {
        return Some(revision);
    }
    outputs.get("helm").and_then(Value::as_str).and_then(revision_in_helm_output)
}

/// `REVISION: 3` in `helm upgrade --install`'s output.
pub(crate) fn revision_in_helm_output(output: &str) -> Option<u64> {
    output.lines().find_map(|line| line.strip_prefix("REVISION:")).and_then(|n| n.trim().parse().ok())
}

fn release_drift(name: &str, live: Option<&Revision>, recorded: Option<u64>) -> Option<String> {
    let Some(live) = live else { return Some(format!("helm release {name}: release not found")) };
    if live.status != "deployed" {
        return Some(format!(
            "helm release {name}: status {} at revision {}",
            if live.status.is_empty() { "unknown" } else { &live.status },
            live.version
        ));
    }
    match recorded {
        Some(recorded) if recorded != live.version => {
            Some(format!("helm release {name}: revision {}, recorded {recorded}", live.version))
        }
        _ => None,
    }
}

/// What a step applied, as far as the refresh compares it: the object's kind and place, and
/// the manifest whose fields our manager must own (values masked: only its shape counts).
struct Applied {
    target: Target,
    namespace: Option<String>,
    name: String,
    manifest: Value,
}

fn shape_of_secret(labels: &BTreeMap<String, String>, data: &crate::values::Values) -> Value {
    let keys: serde_json::Map<String, Value> = data
        .shown()
        .as_object()
        .map(|map| map.keys().map(|k| (k.clone(), json!(""))).collect())
        .unwrap_or_default();
    let mut manifest = json!({"type": "Opaque", "data": keys});
    if !labels.is_empty() {
        manifest["metadata"] = json!({ "labels": labels });
    }
    manifest
}

/// The objects a step applied (empty for steps the refresh does not compare this way).
fn applied_by(step: &Step) -> Vec<Applied> {
    let known = |api_version: &str, kind: &str| known_kind(api_version, kind);
    match &step.action {
        Action::EnsureNamespace { name, labels, annotations } => {
            let mut metadata = json!({});
            if !labels.is_empty() {
                metadata["labels"] = json!(labels);
            }
            if !annotations.is_empty() {
                metadata["annotations"] = json!(annotations);
            }
            vec![Applied {
                target: known("v1", "Namespace").expect("a known kind"),
                namespace: None,
                name: name.clone(),
                manifest: json!({ "metadata": metadata }),
            }]
        }
        Action::ApplySecret { namespace, name, labels, data } => vec![Applied {
            target: known("v1", "Secret").expect("a known kind"),
            namespace: Some(namespace.clone()),
            name: name.clone(),
            manifest: shape_of_secret(labels, data),
        }],
        Action::ApplyObjects { objects, .. } => {
            let shown = objects.shown();
            let items = shown.as_array().cloned().unwrap_or_else(|| vec![shown.clone()]);
            items
                .into_iter()
                .filter_map(|item| {
                    let api_version = item.get("apiVersion")?.as_str()?;
                    let kind = item.get("kind")?.as_str()?;
                    let target = known(api_version, kind)?;
                    let name = item.pointer("/metadata/name")?.as_str()?.to_owned();
                    let namespace =
                        item.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned);
                    Some(Applied { target, namespace, name, manifest: item })
                })
                .collect()
        }
        Action::StoreKey { namespace, secret_name, .. } => vec![Applied {
            target: known("v1", "Secret").expect("a known kind"),
            namespace: Some(namespace.clone()),
            name: secret_name.clone(),
            // The key store's own layout changes on every rotation: existence is what counts.
            manifest: json!({}),
        }],
        _ => Vec::new(),
    }
}

/// One list to make: a kind in a namespace (or cluster-wide).
type ListKey = (String, String, Option<String>);

fn list_key(resource: &ApiResource, namespace: Option<&str>) -> ListKey {
    (resource.api_version.clone(), resource.kind.clone(), namespace.map(str::to_owned))
}

/// Compares `steps` (recorded as done, `recorded` their records) with the cluster.
pub async fn observe_cluster(
    client: &Client,
    steps: &[&Step],
    recorded: &BTreeMap<String, StepRecord>,
) -> Result<Found, KubeError> {
    ClusterObserver { client: client.clone() }.observe_steps(steps, recorded).await
}

impl ClusterObserver {
    async fn list(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
    ) -> Result<BTreeMap<String, ObjectMeta>, KubeError> {
        let api: Api<DynamicObject> = match namespace {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, resource),
            None => Api::all_with(self.client.clone(), resource),
        };
        let what = match namespace {
            Some(namespace) => format!("{} in namespace {namespace}", resource.plural),
            None => resource.plural.clone(),
        };
        let list = api
            .list_metadata(&ListParams::default())
            .await
            .map_err(|error| client_error("list", what, error, &Redactor::new()))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|item| item.metadata.name.clone().map(|name| (name, item.metadata)))
            .collect())
    }

    async fn observe_steps(
        &self,
        steps: &[&Step],
        recorded: &BTreeMap<String, StepRecord>,
    ) -> Result<Found, KubeError> {
        // Every list the steps need, made once.
        let secret = known_kind("v1", "Secret").expect("a known kind");
        let mut needed: BTreeMap<ListKey, (ApiResource, Option<String>)> = BTreeMap::new();
        for step in steps {
            if let Action::HelmRelease { namespace, .. } = &step.action {
                needed.insert(
                    list_key(&secret.resource, Some(namespace)),
                    (secret.resource.clone(), Some(namespace.clone())),
                );
            }
            for applied in applied_by(step) {
                let namespace = applied.namespace.filter(|_| applied.target.namespaced);
                needed.insert(
                    list_key(&applied.target.resource, namespace.as_deref()),
                    (applied.target.resource.clone(), namespace),
                );
            }
        }
        let mut lists: BTreeMap<ListKey, BTreeMap<String, ObjectMeta>> = BTreeMap::new();
        for (key, (resource, namespace)) in needed {
            lists.insert(key, self.list(&resource, namespace.as_deref()).await?);
        }

        let mut found = Found::default();
        for step in steps {
            let reason = match &step.action {
                Action::HelmRelease { release, namespace, .. } => {
                    let metas: Vec<ObjectMeta> = lists
                        .get(&list_key(&secret.resource, Some(namespace)))
                        .map(|items| items.values().cloned().collect())
                        .unwrap_or_default();
                    let releases = helm_releases(&metas);
                    let recorded = recorded.get(&step.id).and_then(|r| recorded_revision(&r.outputs));
                    release_drift(&format!("{namespace}/{release}"), releases.get(release), recorded)
                }
                _ => applied_by(step).iter().find_map(|applied| {
                    let namespace = applied.namespace.as_deref().filter(|_| applied.target.namespaced);
                    let what = match namespace {
                        Some(namespace) => {
                            format!("{} {namespace}/{}", applied.target.resource.kind, applied.name)
                        }
                        None => format!("{} {}", applied.target.resource.kind, applied.name),
                    };
                    let live = lists
                        .get(&list_key(&applied.target.resource, namespace))
                        .and_then(|items| items.get(&applied.name));
                    match live {
                        None => Some(format!("{what} deleted")),
                        Some(meta) => ownership_drift(&what, &applied.manifest, &Live::of(meta)),
                    }
                }),
            };
            if let Some(reason) = reason {
                found.drifted.insert(step.id.clone(), reason);
            }
        }
        Ok(found)
    }
}

impl Observer for ClusterObserver {
    fn observe<'a>(
        &'a self,
        _whole: &'a Plan,
        steps: &'a [&'a Step],
        recorded: &'a BTreeMap<String, StepRecord>,
    ) -> BoxFuture<'a, Result<Found, StepError>> {
        Box::pin(async move {
            self.observe_steps(steps, recorded).await.map_err(|error| StepError::from_error(&error))
        })
    }
}
