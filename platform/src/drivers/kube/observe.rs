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
use super::inventory::{Inventory, Owned, inventory_namespace, owned_by, read_inventory};
use super::{FIELD_MANAGER, KubeError, client_error};
use crate::exec::{Found, Observer, StepError, StepRecord};
use crate::plan::observed::Removal;
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
            // Applying null or an empty map or list sets nothing the server tracks as ours.
            Value::Null | Value::Object(_) => {}
            Value::Array(items) if items.is_empty() => {}
            _ => out.push(path.clone()),
        }
    }
    let mut out = Vec::new();
    walk(manifest, &mut Vec::new(), &mut out);
    out.retain(|path| !path.is_empty());
    out.sort();
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

/// Compares `steps` (recorded as done, `recorded` their records) with the cluster, and lists
/// what the environment's `inventory` (as [`read_environment_inventory`] read it) holds that
/// `whole` no longer produces.
pub async fn observe_cluster(
    client: &Client,
    whole: &Plan,
    steps: &[&Step],
    recorded: &BTreeMap<String, StepRecord>,
    inventory: Option<&Inventory>,
) -> Result<Found, KubeError> {
    let observer = ClusterObserver { client: client.clone() };
    let mut found = observer.observe_steps(steps, recorded).await?;
    if let Some(inventory) = inventory {
        let produced = owned_by(whole);
        found.removed = inventory
            .items
            .iter()
            .filter(|item| !produced.contains(*item))
            .map(|owned| Removal {
                item: owned.describe(),
                retained: owned.retained_because(),
                database: matches!(owned, Owned::Database { .. }),
            })
            .collect();
        found.lineage = inventory.lineage.clone();
    }
    Ok(found)
}

/// The inventory of the environment `whole` deploys (`None`: no key store step, or none kept
/// yet).
pub async fn read_environment_inventory(
    client: &Client,
    whole: &Plan,
) -> Result<Option<Inventory>, KubeError> {
    match inventory_namespace(whole) {
        Some(namespace) => read_inventory(client, namespace).await,
        None => Ok(None),
    }
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
        // The workloads of releases, by what their readiness wait recorded: a difference drifts
        // the release (helm restores it), and so its wait.
        let mut workloads: BTreeMap<String, super::Workloads> = BTreeMap::new();
        for step in steps {
            let Action::WaitReady { namespace, selector, .. } = &step.action else { continue };
            let Some(recorded) = recorded
                .get(&step.id)
                .and_then(|r| r.outputs.get("workloads"))
                .and_then(|w| {
                    serde_json::from_value::<BTreeMap<String, super::WorkloadState>>(w.clone()).ok()
                })
                .filter(|w| !w.is_empty())
            else {
                continue;
            };
            if !workloads.contains_key(namespace) {
                workloads.insert(namespace.clone(), super::Workloads::list(&self.client, namespace).await?);
            }
            let live = workloads[namespace].to_compare(selector);
            let Some(reason) = super::workload_drift(&recorded, &live) else { continue };
            let release = steps
                .iter()
                .find(|s| step.depends_on.contains(&s.id) && matches!(s.action, Action::HelmRelease { .. }));
            let drifted = release.map_or(&step.id, |release| &release.id);
            // A release already drifted (uninstalled, say) keeps that reason.
            found
                .drifted
                .entry(drifted.clone())
                .or_insert_with(|| format!("{reason} (in namespace {namespace})"));
        }
        Ok(found)
    }
}

impl Observer for ClusterObserver {
    fn observe<'a>(
        &'a self,
        whole: &'a Plan,
        steps: &'a [&'a Step],
        recorded: &'a BTreeMap<String, StepRecord>,
    ) -> BoxFuture<'a, Result<Found, StepError>> {
        Box::pin(async move {
            let observe = async {
                let inventory = read_environment_inventory(&self.client, whole).await?;
                observe_cluster(&self.client, whole, steps, recorded, inventory.as_ref()).await
            };
            observe.await.map_err(|error| StepError::from_error(&error))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::kube::mock::{MockServer, json_response, status_response};
    use crate::exec::StepOutcome;
    use crate::sensitive::SecretString;
    use crate::values::{SecretEntry, SecretTable, Values};
    use sha2::Digest as _;

    fn step(id: &str, action: Action) -> Step {
        Step {
            id: id.to_owned(),
            component: None,
            action,
            depends_on: Vec::new(),
            fingerprint: "2:ab".to_owned(),
        }
    }

    fn release(name: &str) -> Step {
        step(
            &format!("opus/{name}/release"),
            Action::HelmRelease {
                release: name.to_owned(),
                namespace: "opus".to_owned(),
                chart: crate::plan::ChartSpec {
                    reference: "charts/opus-service".to_owned(),
                    repository: None,
                    version: "1.0.0".to_owned(),
                },
                values: Values::from_marked(&json!({}), &SecretTable::default()),
                timeout_seconds: 60,
            },
        )
    }

    fn secret_step() -> Step {
        let mut table = SecretTable::default();
        let placeholder = table.placeholder(SecretEntry {
            digest: "hmac:password".to_owned(),
            value: Some(SecretString::new("canary-password-81f")),
        });
        step(
            "opus/oob-consent/secret",
            Action::ApplySecret {
                namespace: "opus".to_owned(),
                name: "oob-consent-secrets".to_owned(),
                labels: BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "opus-deploy".to_owned(),
                )]),
                data: Values::from_marked(&json!({ "password": placeholder }), &table),
            },
        )
    }

    fn namespace_step() -> Step {
        step(
            "opus/namespace/ensure",
            Action::EnsureNamespace {
                name: "opus".to_owned(),
                labels: BTreeMap::from([("team".to_owned(), "payments".to_owned())]),
                annotations: BTreeMap::new(),
            },
        )
    }

    fn record(id: &str, outputs: Value) -> (String, StepRecord) {
        let now = time::OffsetDateTime::now_utc();
        (
            id.to_owned(),
            StepRecord {
                step_id: id.to_owned(),
                fingerprint: "2:ab".to_owned(),
                outcome: StepOutcome::Succeeded,
                started_at: now,
                finished_at: now,
                outputs,
                snapshot: Value::Null,
            },
        )
    }

    fn helm_secret(name: &str, version: u64, status: &str) -> Value {
        json!({"metadata": {
            "name": format!("sh.helm.release.v1.{name}.v{version}"),
            "namespace": "opus",
            "labels": {"owner": "helm", "name": name, "status": status, "version": version.to_string()},
        }})
    }

    /// Our Secret's metadata as the API server keeps it after our apply, plus `extra` entries.
    fn our_secret(extra: Vec<Value>) -> Value {
        let mut managed = vec![json!({
            "manager": "opus-deploy", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:password": {}}, "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}}, "f:type": {}},
        })];
        managed.extend(extra);
        json!({"metadata": {
            "name": "oob-consent-secrets", "namespace": "opus",
            "labels": {"app.kubernetes.io/managed-by": "opus-deploy"},
            "managedFields": managed,
        }})
    }

    fn metadata_list(items: Vec<Value>) -> Value {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "7"}, "items": items})
    }

    /// Observes `steps` against a mock that answers each expected list (path → items) in order.
    async fn observe_with(
        steps: Vec<Step>,
        recorded: BTreeMap<String, StepRecord>,
        answers: Vec<(&'static str, Value)>,
    ) -> Result<Found, KubeError> {
        let (client, mut server) = MockServer::start();
        let task = tokio::spawn(async move {
            let refs: Vec<&Step> = steps.iter().collect();
            ClusterObserver { client }.observe_steps(&refs, &recorded).await
        });
        for (path, items) in answers {
            let exchange = server.expect("GET", path).await;
            // Metadata only: the server never sends a Secret's data (helm's release payload).
            let accept = exchange.headers.get(http::header::ACCEPT).unwrap().to_str().unwrap().to_owned();
            assert!(accept.contains("as=PartialObjectMetadataList"), "{accept}");
            assert_eq!(exchange.query("labelSelector"), None);
            exchange.respond(json_response(200, metadata_list(items.as_array().cloned().unwrap())));
        }
        server.finish(task).await
    }

    const SECRETS: &str = "/api/v1/namespaces/opus/secrets";

    #[tokio::test]
    async fn releases_at_the_recorded_revision_and_deployed_do_not_drift_with_one_list_per_namespace() {
        let recorded = BTreeMap::from([
            record("opus/oob-status/release", json!({"revision": 2})),
            // A record older than the `revision` output: helm's own output line is read.
            record(
                "opus/oob-consent/release",
                json!({"helm": "NAME: oob-consent\nSTATUS: deployed\nREVISION: 1"}),
            ),
        ]);
        let items = json!([
            helm_secret("oob-status", 1, "superseded"),
            helm_secret("oob-status", 2, "deployed"),
            helm_secret("oob-consent", 1, "deployed"),
        ]);
        let found = observe_with(
            vec![release("oob-status"), release("oob-consent")],
            recorded,
            vec![(SECRETS, items)],
        )
        .await
        .unwrap();
        assert_eq!(found, Found::default());
    }

    #[tokio::test]
    async fn a_release_uninstalled_failed_or_at_another_revision_drifts() {
        let recorded = BTreeMap::from([
            record("opus/gone/release", json!({"revision": 1})),
            record("opus/failed/release", json!({"revision": 3})),
            record("opus/rolled/release", json!({"revision": 4})),
        ]);
        let items = json!([
            helm_secret("failed", 3, "failed"),
            helm_secret("rolled", 4, "superseded"),
            helm_secret("rolled", 5, "deployed"),
        ]);
        let found = observe_with(
            vec![release("gone"), release("failed"), release("rolled")],
            recorded,
            vec![(SECRETS, items)],
        )
        .await
        .unwrap();
        assert_eq!(
            found.drifted,
            BTreeMap::from([
                (
                    "opus/failed/release".to_owned(),
                    "helm release opus/failed: status failed at revision 3".to_owned()
                ),
                ("opus/gone/release".to_owned(), "helm release opus/gone: release not found".to_owned()),
                (
                    "opus/rolled/release".to_owned(),
                    "helm release opus/rolled: revision 5, recorded 4".to_owned()
                ),
            ])
        );
    }

    #[tokio::test]
    async fn status_writes_and_labels_added_by_others_are_not_drift() {
        let secret = our_secret(vec![
            // A policy engine adds a label; a controller writes a status subresource.
            json!({"manager": "kyverno", "operation": "Update", "fieldsType": "FieldsV1",
                   "fieldsV1": {"f:metadata": {"f:labels": {"f:policy.example/scanned": {}}}}}),
            json!({"manager": "some-controller", "operation": "Update", "subresource": "status",
                   "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:ready": {}}}}),
        ]);
        let recorded = BTreeMap::from([record("opus/oob-consent/secret", json!({"secret": "created"}))]);
        let found =
            observe_with(vec![secret_step()], recorded, vec![(SECRETS, json!([secret]))]).await.unwrap();
        assert_eq!(found, Found::default());
    }

    #[tokio::test]
    async fn a_value_changed_by_another_manager_or_a_deleted_object_drifts() {
        // `kubectl edit` changed the password: the API server moved the field to its manager.
        let mut secret = our_secret(vec![json!({"manager": "kubectl-edit", "operation": "Update",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:password": {}}}})]);
        secret["metadata"]["managedFields"][0]["fieldsV1"]["f:data"] = json!({});
        let recorded = BTreeMap::from([
            record("opus/oob-consent/secret", json!({"secret": "created"})),
            record("opus/namespace/ensure", json!({"namespace": "created"})),
        ]);
        let found = observe_with(
            vec![namespace_step(), secret_step()],
            recorded,
            vec![("/api/v1/namespaces", json!([])), (SECRETS, json!([secret]))],
        )
        .await
        .unwrap();
        assert_eq!(
            found.drifted,
            BTreeMap::from([
                ("opus/namespace/ensure".to_owned(), "Namespace opus deleted".to_owned()),
                (
                    "opus/oob-consent/secret".to_owned(),
                    "Secret opus/oob-consent-secrets: `data.password` was changed by kubectl-edit".to_owned()
                ),
            ])
        );
        // The reason never holds a value.
        assert!(!format!("{found:?}").contains("canary-password-81f"));
    }

    #[tokio::test]
    async fn a_label_removed_by_hand_drifts_the_namespace() {
        // `kubectl label namespace opus team-`: the field is gone from every manager's set.
        let namespace = json!({"metadata": {"name": "opus", "managedFields": [
            {"manager": "opus-deploy", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}}},
        ]}});
        let recorded = BTreeMap::from([record("opus/namespace/ensure", json!({}))]);
        let found =
            observe_with(vec![namespace_step()], recorded, vec![("/api/v1/namespaces", json!([namespace]))])
                .await
                .unwrap();
        assert_eq!(
            found.drifted["opus/namespace/ensure"],
            "Namespace opus: `metadata.labels.team` was removed"
        );
    }

    #[tokio::test]
    async fn a_forbidden_list_is_an_error_naming_what_could_not_be_listed() {
        let (client, mut server) = MockServer::start();
        let task = tokio::spawn(async move {
            let steps = [release("oob-status")];
            let refs: Vec<&Step> = steps.iter().collect();
            ClusterObserver { client }.observe_steps(&refs, &BTreeMap::new()).await
        });
        server.expect("GET", SECRETS).await.respond(status_response(
            403,
            "Forbidden",
            "secrets is forbidden: User \"ci\" cannot list resource \"secrets\" in API group \"\" in the namespace \"opus\"",
        ));
        let error = server.finish(task).await.unwrap_err().to_string();
        assert!(
            error.starts_with("could not list secrets in namespace opus: secrets is forbidden"),
            "{error}"
        );
    }

    fn deployment(replicas: i32, image: &str, managers: Value) -> Value {
        json!({
            "metadata": {"name": "oob-status", "namespace": "opus",
                "labels": {"app.kubernetes.io/instance": "oob-status"}, "managedFields": managers},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "app", "image": image}]}}},
        })
    }

    fn list_of(kind: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "9"}, "items": items})
    }

    /// The drift the refresh finds for a release whose wait recorded `recorded`, when the
    /// namespace's Deployments are `deployments` and its autoscalers `hpas`.
    async fn workload_drift_of(recorded: Value, deployments: Vec<Value>, hpas: Vec<Value>) -> Found {
        let mut ready = step(
            "opus/oob-status/ready",
            Action::WaitReady {
                namespace: "opus".to_owned(),
                selector: "app.kubernetes.io/instance=oob-status".to_owned(),
                timeout_seconds: 60,
            },
        );
        ready.depends_on = vec!["opus/oob-status/release".to_owned()];
        let records = BTreeMap::from([
            record("opus/oob-status/release", json!({"revision": 1})),
            record("opus/oob-status/ready", json!({"ready": true, "workloads": recorded})),
        ]);
        let (client, mut server) = MockServer::start();
        let task = tokio::spawn(async move {
            let steps = [release("oob-status"), ready];
            let refs: Vec<&Step> = steps.iter().collect();
            ClusterObserver { client }.observe_steps(&refs, &records).await
        });
        server
            .expect("GET", SECRETS)
            .await
            .respond(json_response(200, metadata_list(vec![helm_secret("oob-status", 1, "deployed")])));
        server
            .expect("GET", "/apis/apps/v1/namespaces/opus/deployments")
            .await
            .respond(json_response(200, list_of("Deployment", deployments)));
        server
            .expect("GET", "/apis/apps/v1/namespaces/opus/statefulsets")
            .await
            .respond(json_response(200, list_of("StatefulSet", vec![])));
        server
            .expect("GET", "/apis/apps/v1/namespaces/opus/daemonsets")
            .await
            .respond(json_response(200, list_of("DaemonSet", vec![])));
        server
            .expect("GET", "/apis/autoscaling/v2/namespaces/opus/horizontalpodautoscalers")
            .await
            .respond(json_response(200, list_of("HorizontalPodAutoscaler", hpas)));
        server.finish(task).await.unwrap()
    }

    /// What the wait records for a Deployment, computed the way the wait does.
    fn recorded_of(deployment: &Value) -> Value {
        let parsed: k8s_openapi::api::apps::v1::Deployment =
            serde_json::from_value(deployment.clone()).unwrap();
        let template = serde_json::to_vec(&parsed.spec.unwrap().template).unwrap();
        json!({"Deployment/oob-status": {"template": hex::encode(sha2::Sha256::digest(template)), "replicas": 1}})
    }

    #[tokio::test]
    async fn a_scaled_or_edited_workload_drifts_its_release_and_an_autoscaled_one_does_not() {
        let helm = json!([{"manager": "helm", "operation": "Update", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}}]);
        let original = deployment(1, "opus/oob-status:1.3.0", helm.clone());
        let recorded = recorded_of(&original);

        let same = workload_drift_of(recorded.clone(), vec![original.clone()], vec![]).await;
        assert_eq!(same, Found::default());

        let scaled = workload_drift_of(
            recorded.clone(),
            vec![deployment(3, "opus/oob-status:1.3.0", helm.clone())],
            vec![],
        )
        .await;
        assert_eq!(
            scaled.drifted["opus/oob-status/release"],
            "Deployment/oob-status: 3 replicas, recorded 1 (in namespace opus)"
        );

        let edited = workload_drift_of(
            recorded.clone(),
            vec![deployment(1, "evil/image:latest", helm.clone())],
            vec![],
        )
        .await;
        assert_eq!(
            edited.drifted["opus/oob-status/release"],
            "Deployment/oob-status: the pod template changed (in namespace opus)"
        );

        let hpa = json!({"metadata": {"name": "oob-status"}, "spec": {"maxReplicas": 5,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "oob-status"}}});
        let autoscaled =
            workload_drift_of(recorded, vec![deployment(4, "opus/oob-status:1.3.0", helm)], vec![hpa]).await;
        assert_eq!(autoscaled, Found::default());
    }

    #[test]
    fn applied_paths_stop_at_lists_and_leave_out_the_identity() {
        let manifest = json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "pubsub", "namespace": "opus", "labels": {"a": "1"}, "annotations": {}},
            "scopes": [], "auth": null,
            "spec": {"type": "pubsub.redis", "metadata": [{"name": "redisHost", "value": "redis:6379"}]},
        });
        let paths: Vec<String> = applied_paths(&manifest).iter().map(|p| p.join(".")).collect();
        assert_eq!(paths, ["metadata.labels.a", "spec.metadata", "spec.type"]);
    }
}
