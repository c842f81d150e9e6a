//! Custom resources whose definitions a release of the same plan installs: wait until each
//! CustomResourceDefinition is `Established` (the API server serves its kind only then), and
//! apply through an admission webhook that is not serving yet (cert-manager's webhook answers
//! some seconds after its Deployment is available), retrying until a deadline.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::Api;
use serde_json::Value;
use tokio::time::Instant;

use super::{ApplyOptions, ApplyOutcome, KubeError, apply_manifest, client_error};
use crate::sensitive::Redactor;

/// How long to wait and how often to look.
#[derive(Debug, Clone, Copy)]
pub struct CrdWaitOptions {
    pub timeout: Duration,
    pub interval: Duration,
}

impl Default for CrdWaitOptions {
    fn default() -> CrdWaitOptions {
        CrdWaitOptions { timeout: Duration::from_secs(120), interval: Duration::from_secs(1) }
    }
}

/// Waits until every named CustomResourceDefinition exists with condition `Established=True`.
pub async fn wait_for_crds_established(
    client: &Client,
    names: &[String],
    options: &CrdWaitOptions,
) -> Result<(), KubeError> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let deadline = Instant::now() + options.timeout;
    let mut pending: Vec<&String> = names.iter().collect();
    loop {
        let mut states = Vec::new();
        for name in pending {
            let crd = api.get_opt(name).await.map_err(|error| {
                client_error("read", format!("customresourcedefinition {name}"), error, &Redactor::new())
            })?;
            match crd.as_ref().map(established) {
                Some(Ok(())) => {}
                Some(Err(state)) => states.push((name, state)),
                None => states.push((name, "not installed".to_owned())),
            }
        }
        if states.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(KubeError::CrdsNotEstablished {
                timeout: options.timeout,
                pending: states.into_iter().map(|(name, state)| format!("{name}: {state}")).collect(),
            });
        }
        pending = states.into_iter().map(|(name, _)| name).collect();
        tokio::time::sleep(options.interval).await;
    }
}

/// `Ok` when the definition is established, else what its conditions say.
fn established(crd: &CustomResourceDefinition) -> Result<(), String> {
    let conditions = crd.status.as_ref().and_then(|s| s.conditions.as_ref());
    let condition = conditions.and_then(|c| c.iter().find(|c| c.type_ == "Established"));
    match condition {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(format!(
            "not established ({})",
            c.message
                .as_deref()
                .filter(|m| !m.is_empty())
                .unwrap_or(c.reason.as_deref().unwrap_or("no reason"))
        )),
        None => Err("not established yet".to_owned()),
    }
}

/// Whether an API error comes from an admission webhook the API server could not call (its
/// Service has no ready endpoint yet, or it refused the connection): worth retrying.
pub fn is_webhook_unavailable(error: &KubeError) -> bool {
    match error {
        KubeError::Api { code: 500 | 502 | 503 | 504, message, .. } => {
            message.contains("failed calling webhook")
                || message.contains("no endpoints available for service")
        }
        _ => false,
    }
}

/// Applies a manifest, retrying while an admission webhook is unavailable, until `timeout`.
pub async fn apply_through_webhooks(
    client: &Client,
    manifest: &Value,
    options: &ApplyOptions,
    redactor: &Redactor,
    wait: &CrdWaitOptions,
) -> Result<ApplyOutcome, KubeError> {
    let deadline = Instant::now() + wait.timeout;
    loop {
        match apply_manifest(client, manifest, options, redactor).await {
            Err(error) if is_webhook_unavailable(&error) && Instant::now() < deadline => {
                tokio::time::sleep(wait.interval).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::kube::mock::{MockServer, json_response, status_response};
    use serde_json::json;

    const CRD_PATH: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

    fn crd(name: &str, established: Option<&str>) -> Value {
        let conditions: Vec<Value> = established
            .map(|status| vec![json!({"type": "Established", "status": status, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"})])
            .unwrap_or_default();
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name, "resourceVersion": "7"},
            "spec": {"group": "dapr.io", "names": {"kind": "Component", "plural": "components"}, "scope": "Namespaced", "versions": []},
            "status": {"conditions": conditions},
        })
    }

    fn fast() -> CrdWaitOptions {
        CrdWaitOptions { timeout: Duration::from_secs(5), interval: Duration::from_millis(5) }
    }

    #[tokio::test]
    async fn waits_until_the_definition_is_installed_and_established() {
        let (client, mut server) = MockServer::start();
        let names = vec!["components.dapr.io".to_owned()];
        let wait = tokio::spawn(async move { wait_for_crds_established(&client, &names, &fast()).await });
        let path = format!("{CRD_PATH}/components.dapr.io");
        server.expect("GET", &path).await.respond(status_response(404, "NotFound", "not found"));
        server
            .expect("GET", &path)
            .await
            .respond(json_response(200, crd("components.dapr.io", Some("False"))));
        server
            .expect("GET", &path)
            .await
            .respond(json_response(200, crd("components.dapr.io", Some("True"))));
        server.finish(wait).await.unwrap();
    }

    #[tokio::test]
    async fn a_definition_that_never_becomes_established_times_out_naming_its_state() {
        let (client, mut server) = MockServer::start();
        let names = vec!["clusterissuers.cert-manager.io".to_owned()];
        let options = CrdWaitOptions { timeout: Duration::ZERO, interval: Duration::from_millis(1) };
        let wait = tokio::spawn(async move { wait_for_crds_established(&client, &names, &options).await });
        server
            .expect("GET", &format!("{CRD_PATH}/clusterissuers.cert-manager.io"))
            .await
            .respond(status_response(404, "NotFound", "not found"));
        let error = server.finish(wait).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "timed out after 0s waiting for custom resource definitions to be established: clusterissuers.cert-manager.io: not installed"
        );
    }

    #[tokio::test]
    async fn apply_retries_while_the_webhook_is_not_serving() {
        let (client, mut server) = MockServer::start();
        let manifest = json!({
            "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
            "metadata": {"name": "letsencrypt-staging"},
            "spec": {"acme": {"server": "https://acme-staging-v02.api.letsencrypt.org/directory"}},
        });
        let apply = tokio::spawn(async move {
            apply_through_webhooks(&client, &manifest, &ApplyOptions::default(), &Redactor::new(), &fast())
                .await
        });
        let path = "/apis/cert-manager.io/v1/clusterissuers/letsencrypt-staging";
        // The real API server's answer while the webhook Service has no ready endpoint.
        let refused = "Internal error occurred: failed calling webhook \"webhook.cert-manager.io\": failed to call webhook: Post \"https://cert-manager-webhook.cert-manager.svc:443/validate?timeout=30s\": no endpoints available for service \"cert-manager-webhook\"";
        server.expect("GET", path).await.respond(status_response(404, "NotFound", "not found"));
        server.expect("PATCH", path).await.respond(status_response(500, "InternalError", refused));
        server.expect("GET", path).await.respond(status_response(404, "NotFound", "not found"));
        let applied = json!({"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": "letsencrypt-staging", "resourceVersion": "12"}});
        server.expect("PATCH", path).await.respond(json_response(201, applied));
        assert_eq!(server.finish(apply).await.unwrap(), ApplyOutcome::Created);
    }

    #[test]
    fn other_server_errors_are_not_retried() {
        let invalid = KubeError::Api {
            action: "apply",
            object: "clusterissuer letsencrypt-staging".into(),
            code: 422,
            reason: "Invalid".into(),
            message: "spec.acme.email: Invalid value".into(),
        };
        assert!(!is_webhook_unavailable(&invalid));
    }
}
