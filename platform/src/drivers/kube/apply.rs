//! Server-side apply of the objects a plan creates: namespaces, Secrets, and every other object
//! (the Dapr Component, cert-manager's issuer) as a manifest. Every apply uses the `opus-deploy` field manager, so a
//! second run with the same content is a no-op on the server and reports
//! [`ApplyOutcome::Unchanged`]. Whether an object changed is decided by comparing its
//! `metadata.resourceVersion` before (a metadata-only GET, which never fetches Secret data) and
//! after the apply: the API server bumps it on every write and leaves it alone on a no-op.

use std::collections::BTreeMap;

use base64::Engine as _;
use kube::Client;
use kube::core::{
    ApiResource, DynamicObject, GroupVersionKind, Resource as _, Status,
    params::{GetParams, Patch, PatchParams},
    request::Request,
};
use serde_json::{Value, json};

use super::{FIELD_MANAGER, FieldConflict, KubeError, ObjectRef, client_error, send_raw};
use crate::sensitive::{Redactor, SecretString};

/// How to apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Take ownership of fields another field manager owns instead of failing with
    /// [`KubeError::Conflict`].
    pub force: bool,
}

/// What an apply did to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Changed,
    Unchanged,
}

/// A namespace with the labels and annotations Opus Deploy owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A Secret. Its values are [`SecretString`]s; they are encoded into the request body only.
#[derive(Debug, Clone, Default)]
pub struct SecretSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The Secret's `type`; `None` means `Opaque`.
    pub secret_type: Option<String>,
    pub data: BTreeMap<String, SecretString>,
}

/// Applies a namespace.
pub async fn apply_namespace(
    client: &Client,
    namespace: &NamespaceSpec,
    options: &ApplyOptions,
) -> Result<ApplyOutcome, KubeError> {
    let mut metadata = json!({ "name": namespace.name });
    if !namespace.labels.is_empty() {
        metadata["labels"] = json!(namespace.labels);
    }
    if !namespace.annotations.is_empty() {
        metadata["annotations"] = json!(namespace.annotations);
    }
    let body = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": metadata });
    let target = known_kind("v1", "Namespace").expect("Namespace is in the table of known kinds");
    apply_object(client, &target, &body, options, &Redactor::new()).await
}

/// Applies a Secret. The values go base64-encoded into the request body and nowhere else; a
/// server message that quotes one is scrubbed before it reaches an error.
pub async fn apply_secret(
    client: &Client,
    secret: &SecretSpec,
    options: &ApplyOptions,
) -> Result<ApplyOutcome, KubeError> {
    let mut redactor = Redactor::new();
    let mut data = serde_json::Map::new();
    for (key, value) in &secret.data {
        redactor.add(value);
        let encoded = base64::engine::general_purpose::STANDARD.encode(value.expose());
        redactor.add(&SecretString::new(encoded.clone()));
        data.insert(key.clone(), Value::String(encoded));
    }
    let mut metadata = json!({ "name": secret.name, "namespace": secret.namespace });
    if !secret.labels.is_empty() {
        metadata["labels"] = json!(secret.labels);
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": secret.secret_type.as_deref().unwrap_or("Opaque"),
        "data": data,
    });
    let target = known_kind("v1", "Secret").expect("Secret is in the table of known kinds");
    apply_object(client, &target, &body, options, &redactor).await
}

/// Applies any object given as a manifest (`apiVersion`, `kind`, `metadata.name`, and
/// `metadata.namespace` for namespaced kinds). Known kinds need no discovery call; others are
/// resolved through the API server's discovery documents.
pub async fn apply_manifest(
    client: &Client,
    manifest: &Value,
    options: &ApplyOptions,
    redactor: &Redactor,
) -> Result<ApplyOutcome, KubeError> {
    let api_version = manifest_str(manifest, "/apiVersion", "apiVersion")?;
    let kind = manifest_str(manifest, "/kind", "kind")?;
    let target = match known_kind(api_version, kind) {
        Some(target) => target,
        None => discover_kind(client, api_version, kind).await?,
    };
    apply_object(client, &target, manifest, options, redactor).await
}

/// The REST coordinates of a kind and whether its objects live in a namespace.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// Kinds the platform applies, so that applying them needs no discovery round trip:
/// (apiVersion, kind, plural, namespaced).
const KNOWN_KINDS: &[(&str, &str, &str, bool)] = &[
    ("v1", "Namespace", "namespaces", false),
    ("v1", "Secret", "secrets", true),
    ("v1", "ConfigMap", "configmaps", true),
    ("v1", "Service", "services", true),
    ("v1", "ServiceAccount", "serviceaccounts", true),
    ("v1", "PersistentVolumeClaim", "persistentvolumeclaims", true),
    ("apps/v1", "Deployment", "deployments", true),
    ("apps/v1", "StatefulSet", "statefulsets", true),
    ("apps/v1", "DaemonSet", "daemonsets", true),
    ("batch/v1", "Job", "jobs", true),
    ("batch/v1", "CronJob", "cronjobs", true),
    ("networking.k8s.io/v1", "Ingress", "ingresses", true),
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", true),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", true),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", true),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", true),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", false),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", false),
    ("dapr.io/v1alpha1", "Component", "components", true),
    ("dapr.io/v1alpha1", "Configuration", "configurations", true),
    ("dapr.io/v1alpha1", "Subscription", "subscriptions", true),
    ("dapr.io/v2alpha1", "Subscription", "subscriptions", true),
    ("cert-manager.io/v1", "Certificate", "certificates", true),
    ("cert-manager.io/v1", "Issuer", "issuers", true),
    ("cert-manager.io/v1", "ClusterIssuer", "clusterissuers", false),
];

pub(crate) fn known_kind(api_version: &str, kind: &str) -> Option<Target> {
    KNOWN_KINDS
        .iter()
        .find(|(known_version, known_kind, _, _)| *known_version == api_version && *known_kind == kind)
        .map(|(_, _, plural, namespaced)| Target {
            resource: ApiResource::from_gvk_with_plural(&gvk(api_version, kind), plural),
            namespaced: *namespaced,
        })
}

fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    match api_version.split_once('/') {
        Some((group, version)) => GroupVersionKind::gvk(group, version, kind),
        None => GroupVersionKind::gvk("", api_version, kind),
    }
}

pub(crate) async fn discover_kind(
    client: &Client,
    api_version: &str,
    kind: &str,
) -> Result<Target, KubeError> {
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk(api_version, kind))
        .await
        .map_err(|source| KubeError::UnknownKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            source: Box::new(source),
        })?;
    Ok(Target { resource, namespaced: capabilities.scope == kube::discovery::Scope::Namespaced })
}

fn manifest_str<'a>(manifest: &'a Value, pointer: &str, field: &str) -> Result<&'a str, KubeError> {
    manifest.pointer(pointer).and_then(Value::as_str).filter(|value| !value.is_empty()).ok_or_else(|| {
        KubeError::InvalidManifest {
            what: describe_manifest(manifest),
            problem: format!("`{field}` is missing or not a string"),
        }
    })
}

fn describe_manifest(manifest: &Value) -> String {
    let kind = manifest.pointer("/kind").and_then(Value::as_str).unwrap_or("(no kind)");
    let name = manifest.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("(no name)");
    format!("{} {name}", kind.to_lowercase())
}

/// Applies one object: metadata GET, apply PATCH, resourceVersion comparison.
pub(crate) async fn apply_object(
    client: &Client,
    target: &Target,
    body: &Value,
    options: &ApplyOptions,
    redactor: &Redactor,
) -> Result<ApplyOutcome, KubeError> {
    let name = manifest_str(body, "/metadata/name", "metadata.name")?;
    let namespace = body.pointer("/metadata/namespace").and_then(Value::as_str);
    let namespace = match (target.namespaced, namespace) {
        (true, Some(namespace)) if !namespace.is_empty() => Some(namespace),
        (true, _) => {
            return Err(KubeError::InvalidManifest {
                what: describe_manifest(body),
                problem: "`metadata.namespace` is required for a namespaced kind".to_owned(),
            });
        }
        (false, _) => None,
    };
    let object = ObjectRef::new(&target.resource.kind, namespace, name);
    let request = Request::new(DynamicObject::url_path(&target.resource, namespace));

    let before = read_resource_version(client, &request, &object, redactor).await?;

    // Strict: the API server refuses a field its schema does not know (a typo in an objects
    // template, a field a newer Kubernetes added) instead of dropping it in silence; a CRD
    // that preserves unknown fields accepts them as before.
    let mut params = PatchParams::apply(FIELD_MANAGER).validation_strict();
    if options.force {
        params = params.force();
    }
    let patch = request
        .patch(name, &params, &Patch::Apply(body))
        .map_err(|error| invalid_request("apply", &object, error))?;
    let response =
        send_raw(client, patch).await.map_err(|source| client_error("apply", &object, source, redactor))?;
    if response.status == http::StatusCode::CONFLICT {
        return Err(conflict_error(&object, &response.body, redactor)
            .unwrap_or_else(|| super::status_error("apply", &object, &response, redactor)));
    }
    if !response.status.is_success() {
        return Err(super::status_error("apply", &object, &response, redactor));
    }
    let after = resource_version_of(&response.body).ok_or_else(|| KubeError::UnexpectedResponse {
        action: "apply",
        object: object.to_string(),
        detail: "the applied object has no metadata.resourceVersion".to_owned(),
    })?;
    Ok(match before {
        None => ApplyOutcome::Created,
        Some(before) if before == after => ApplyOutcome::Unchanged,
        Some(_) => ApplyOutcome::Changed,
    })
}

/// The object's resourceVersion, `None` when it does not exist. Asks for metadata only.
async fn read_resource_version(
    client: &Client,
    request: &Request,
    object: &ObjectRef,
    redactor: &Redactor,
) -> Result<Option<String>, KubeError> {
    let get = request
        .get_metadata(&object.name, &GetParams::default())
        .map_err(|error| invalid_request("read", object, error))?;
    let response =
        send_raw(client, get).await.map_err(|source| client_error("read", object, source, redactor))?;
    if response.status == http::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status.is_success() {
        return Err(super::status_error("read", object, &response, redactor));
    }
    resource_version_of(&response.body).map(Some).ok_or_else(|| KubeError::UnexpectedResponse {
        action: "read",
        object: object.to_string(),
        detail: "the object has no metadata.resourceVersion".to_owned(),
    })
}

fn resource_version_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(rename = "resourceVersion")]
        resource_version: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Object {
        metadata: Metadata,
    }
    // Only the metadata is deserialized: Secret data in the body is skipped, never copied.
    serde_json::from_slice::<Object>(body)
        .ok()
        .and_then(|object| object.metadata.resource_version)
        .filter(|version| !version.is_empty())
}

fn invalid_request(action: &'static str, object: &ObjectRef, error: kube::core::request::Error) -> KubeError {
    KubeError::UnexpectedResponse {
        action,
        object: object.to_string(),
        detail: format!("could not build the request: {error}"),
    }
}

/// Reads the field conflicts out of a 409 `Status`. `None` when the 409 is not an apply
/// conflict (for example an `AlreadyExists` race).
fn conflict_error(object: &ObjectRef, body: &[u8], redactor: &Redactor) -> Option<KubeError> {
    let status: Status = serde_json::from_slice(body).ok()?;
    let causes = status.details.map(|details| details.causes).unwrap_or_default();
    let conflicts: Vec<FieldConflict> = causes
        .iter()
        .filter(|cause| cause.reason == "FieldManagerConflict")
        .map(|cause| FieldConflict {
            field: redactor.redact(&cause.field),
            manager: conflicting_manager(&cause.message).unwrap_or_else(|| "(unknown)".to_owned()),
        })
        .collect();
    if conflicts.is_empty() {
        return None;
    }
    Some(KubeError::Conflict { object: object.clone(), conflicts })
}

/// The manager in a cause message like `conflict with "kubectl-client-side-apply" using v1`.
fn conflicting_manager(message: &str) -> Option<String> {
    let rest = &message[message.find("conflict with \"")? + "conflict with \"".len()..];
    let end = rest.find('"')?;
    Some(rest[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::kube::mock::{MockServer, json_response, status_response};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
    }

    #[tokio::test]
    async fn namespace_is_created_with_labels_under_the_field_manager() {
        let (client, mut server) = MockServer::start();
        let namespace = NamespaceSpec {
            name: "oob".to_owned(),
            labels: labels(&[("app.kubernetes.io/managed-by", "opus-deploy")]),
            annotations: labels(&[("opus.dev/owner", "payments")]),
        };
        let apply =
            tokio::spawn(async move { apply_namespace(&client, &namespace, &ApplyOptions::default()).await });

        let get = server.expect("GET", "/api/v1/namespaces/oob").await;
        get.respond(status_response(404, "NotFound", "namespaces \"oob\" not found"));
        let patch = server.expect("PATCH", "/api/v1/namespaces/oob").await;
        assert_eq!(patch.query("fieldManager").as_deref(), Some("opus-deploy"));
        assert_eq!(patch.query("force"), None);
        assert_eq!(patch.content_type(), "application/apply-patch+yaml");
        let body = patch.json_body();
        assert_eq!(body["kind"], "Namespace");
        assert_eq!(body["metadata"]["labels"]["app.kubernetes.io/managed-by"], "opus-deploy");
        assert_eq!(body["metadata"]["annotations"]["opus.dev/owner"], "payments");
        patch.respond(json_response(200, with_version(body, "11")));

        assert_eq!(server.finish(apply).await.unwrap(), ApplyOutcome::Created);
    }

    #[tokio::test]
    async fn secret_data_is_base64_in_the_body_and_force_is_sent_when_asked() {
        let (client, mut server) = MockServer::start();
        let secret = SecretSpec {
            namespace: "oob".to_owned(),
            name: "oob-consent-db".to_owned(),
            labels: BTreeMap::new(),
            secret_type: None,
            data: [("password".to_owned(), SecretString::new("canary-db-5e1"))].into(),
        };
        let apply =
            tokio::spawn(async move { apply_secret(&client, &secret, &ApplyOptions { force: true }).await });

        let get = server.expect("GET", "/api/v1/namespaces/oob/secrets/oob-consent-db").await;
        get.respond(json_response(
            200,
            json!({ "metadata": { "name": "oob-consent-db", "resourceVersion": "7" } }),
        ));
        let patch = server.expect("PATCH", "/api/v1/namespaces/oob/secrets/oob-consent-db").await;
        assert_eq!(patch.query("fieldManager").as_deref(), Some("opus-deploy"));
        assert_eq!(patch.query("force").as_deref(), Some("true"));
        let body = patch.json_body();
        assert_eq!(body["type"], "Opaque");
        assert_eq!(
            body["data"]["password"],
            base64::engine::general_purpose::STANDARD.encode("canary-db-5e1")
        );
        patch.respond(json_response(200, with_version(body, "8")));

        assert_eq!(server.finish(apply).await.unwrap(), ApplyOutcome::Changed);
    }

    #[tokio::test]
    async fn generic_manifest_of_a_known_kind_is_applied_without_discovery() {
        let (client, mut server) = MockServer::start();
        let manifest = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": "opus-reader" },
            "rules": [],
        });
        let apply = tokio::spawn(async move {
            apply_manifest(&client, &manifest, &ApplyOptions::default(), &Redactor::new()).await
        });

        let path = "/apis/rbac.authorization.k8s.io/v1/clusterroles/opus-reader";
        server.expect("GET", path).await.respond(status_response(404, "NotFound", "not found"));
        let patch = server.expect("PATCH", path).await;
        assert_eq!(patch.json_body()["rules"], json!([]));
        patch.respond(json_response(201, json!({ "metadata": { "resourceVersion": "1" } })));

        assert_eq!(server.finish(apply).await.unwrap(), ApplyOutcome::Created);
    }

    #[tokio::test]
    async fn generic_manifest_of_an_unknown_kind_is_resolved_through_discovery() {
        let (client, mut server) = MockServer::start();
        let manifest = json!({
            "apiVersion": "gateway.example.com/v1",
            "kind": "Route",
            "metadata": { "name": "payments", "namespace": "kong" },
            "spec": { "path": "/open-banking/payments" },
        });
        let apply = tokio::spawn(async move {
            apply_manifest(&client, &manifest, &ApplyOptions::default(), &Redactor::new()).await
        });

        server.expect("GET", "/apis/gateway.example.com/v1").await.respond(json_response(
            200,
            json!({
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "gateway.example.com/v1",
                "resources": [{
                    "name": "routes", "singularName": "route", "namespaced": true,
                    "kind": "Route", "verbs": ["get", "list", "patch", "create"],
                }],
            }),
        ));
        let path = "/apis/gateway.example.com/v1/namespaces/kong/routes/payments";
        server
            .expect("GET", path)
            .await
            .respond(json_response(200, json!({ "metadata": { "resourceVersion": "4" } })));
        let patch = server.expect("PATCH", path).await;
        assert_eq!(patch.json_body()["spec"]["path"], "/open-banking/payments");
        patch.respond(json_response(200, json!({ "metadata": { "resourceVersion": "6" } })));

        assert_eq!(server.finish(apply).await.unwrap(), ApplyOutcome::Changed);
    }

    #[tokio::test]
    async fn namespaced_manifest_without_namespace_is_rejected_before_any_request() {
        let (client, server) = MockServer::start();
        let manifest = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "api" } });
        let error =
            apply_manifest(&client, &manifest, &ApplyOptions::default(), &Redactor::new()).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid manifest service api: `metadata.namespace` is required for a namespaced kind"
        );
        drop(client);
        server.assert_no_more_requests().await;
    }

    #[tokio::test]
    async fn apply_conflict_names_the_field_and_the_other_manager() {
        let (client, mut server) = MockServer::start();
        let manifest = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "settings", "namespace": "oob" },
            "data": { "foo": "bar" },
        });
        let apply = tokio::spawn(async move {
            apply_manifest(&client, &manifest, &ApplyOptions::default(), &Redactor::new()).await
        });

        let path = "/api/v1/namespaces/oob/configmaps/settings";
        server
            .expect("GET", path)
            .await
            .respond(json_response(200, json!({ "metadata": { "resourceVersion": "5" } })));
        server.expect("PATCH", path).await.respond(json_response(
            409,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .data.foo",
                "reason": "Conflict",
                "details": { "causes": [{
                    "reason": "FieldManagerConflict",
                    "message": "conflict with \"kubectl-client-side-apply\" using v1",
                    "field": ".data.foo",
                }]},
                "code": 409,
            }),
        ));

        let error = server.finish(apply).await.unwrap_err();
        match &error {
            KubeError::Conflict { object, conflicts } => {
                assert_eq!(object.to_string(), "configmap oob/settings");
                assert_eq!(
                    conflicts,
                    &[FieldConflict {
                        field: ".data.foo".to_owned(),
                        manager: "kubectl-client-side-apply".to_owned(),
                    }]
                );
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(
            error.to_string(),
            "could not apply configmap oob/settings: 1 field is owned by other field managers: \
             .data.foo (owned by \"kubectl-client-side-apply\"); change them back or apply with \
             force to take ownership"
        );
    }

    #[tokio::test]
    async fn rejected_secret_apply_never_quotes_the_secret_value() {
        let (client, mut server) = MockServer::start();
        let secret = SecretSpec {
            namespace: "oob".to_owned(),
            name: "tls".to_owned(),
            labels: BTreeMap::new(),
            secret_type: Some("kubernetes.io/tls".to_owned()),
            data: [("tls.key".to_owned(), SecretString::new("canary-key-91c"))].into(),
        };
        let apply =
            tokio::spawn(async move { apply_secret(&client, &secret, &ApplyOptions::default()).await });

        let path = "/api/v1/namespaces/oob/secrets/tls";
        server.expect("GET", path).await.respond(status_response(404, "NotFound", "not found"));
        server.expect("PATCH", path).await.respond(status_response(
            422,
            "Invalid",
            "Secret \"tls\" is invalid: data[tls.crt]: Required value; got tls.key=canary-key-91c",
        ));

        let error = server.finish(apply).await.unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("canary-key-91c"), "{shown}");
        assert!(shown.contains("could not apply secret oob/tls"), "{shown}");
        assert!(shown.contains("Invalid"), "{shown}");
    }

    fn with_version(mut body: Value, version: &str) -> Value {
        body["metadata"]["resourceVersion"] = json!(version);
        body
    }
}
