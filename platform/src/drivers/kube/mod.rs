//! The Kubernetes driver: talks to a cluster's API server through kube-rs. It connects from a
//! kubeconfig and context, applies objects server-side under the `opus-deploy` field manager
//! ([`apply`]), waits for workloads to become available ([`readiness`]), checks that a cluster
//! can host the platform ([`preflight`]) and keeps the environment's age key in a Secret
//! ([`keystore`]). Every request it sends is counted by HTTP method ([`requests`]). Secret data only ever travels in request bodies: it never reaches an error
//! message, a log line or a process argument.

mod apply;
mod crds;
mod inventory;
mod keystore;
mod observe;
mod preflight;
mod readiness;
mod requests;
mod workloads;

#[cfg(test)]
pub(crate) mod mock;

use std::fmt;
use std::path::PathBuf;

use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::core::Status;
use kube::{Client, Config};

use crate::sensitive::Redactor;

pub use apply::{
    ApplyOptions, ApplyOutcome, NamespaceSpec, SecretSpec, apply_manifest, apply_namespace, apply_secret,
};
pub use crds::{CrdWaitOptions, apply_through_webhooks, is_webhook_unavailable, wait_for_crds_established};
pub use inventory::{
    INVENTORY_SECRET, Inventory, Owned, delete_object, inventory_namespace, owned_by, read_inventory,
    write_inventory,
};
pub use keystore::{
    KeyStoreLocation, NewKey, StoredKey, StoredKeys, read_keys, retire_previous_key, store_current_key,
};
pub(crate) use observe::revision_in_helm_output;
pub use observe::{ClusterObserver, observe_cluster, read_environment_inventory};
pub use preflight::{
    ClusterVersion, StorageClassFound, check_cluster_version, check_crds_installed, check_storage_class,
};
pub use readiness::{ReadinessOptions, wait_for_workloads};
pub use requests::{CountRequests, CountRequestsLayer, RequestCounter, RequestCounts};
pub use workloads::{WorkloadState, Workloads, workload_drift};

/// The field manager every server-side apply of Opus Deploy uses, so that ownership of fields
/// is stable across runs and visible to operators (`kubectl get -o yaml --show-managed-fields`).
pub const FIELD_MANAGER: &str = "opus-deploy";

/// How long to wait for the API server's answer to one request (kube 2's default).
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(295);

/// Where to find the cluster: a kubeconfig file and one of its contexts.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// The kubeconfig file. `None` follows kubectl's rules: `$KUBECONFIG`, else `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The context to use. `None` uses the kubeconfig's `current-context`.
    pub context: Option<String>,
}

/// Builds a client for the cluster named by `options`. It reads files but does not contact the
/// API server: the first request does.
pub async fn connect(options: &ClientOptions) -> Result<Client, KubeError> {
    connect_counted(options).await.map(|(client, _)| client)
}

/// [`connect`], plus the count of every request the client (and each of its clones) sends, by
/// HTTP method.
pub async fn connect_counted(options: &ClientOptions) -> Result<(Client, RequestCounter), KubeError> {
    let (kubeconfig, location) = match &options.kubeconfig {
        Some(path) => {
            let location = path.display().to_string();
            let kubeconfig = Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig {
                location: location.clone(),
                source: Box::new(source),
            })?;
            (kubeconfig, location)
        }
        None => {
            let location = "$KUBECONFIG or ~/.kube/config".to_owned();
            let kubeconfig = Kubeconfig::read().map_err(|source| KubeError::Kubeconfig {
                location: location.clone(),
                source: Box::new(source),
            })?;
            (kubeconfig, location)
        }
    };
    let context = options.context.clone().unwrap_or_else(|| "(current-context)".to_owned());
    let kube_options = KubeConfigOptions { context: options.context.clone(), ..KubeConfigOptions::default() };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &kube_options).await.map_err(|source| {
        KubeError::Context { context: context.clone(), location, source: Box::new(source) }
    })?;
    // kube 4 made the client retry 429, 503 and 504 answers by itself and dropped the read
    // timeout. Keep one request per call, as sent and as counted (the counting layer sits above
    // kube's stack and would not see its retries; `apply_through_webhooks` does its own waiting),
    // and the 295 s read timeout kube 2 had.
    config.default_retry = false;
    config.read_timeout = Some(READ_TIMEOUT);
    let builder = ClientBuilder::try_from(config)
        .map_err(|source| KubeError::Client { context, source: Box::new(source) })?;
    let counter = RequestCounter::new();
    Ok((builder.with_layer(&counter.layer()).build(), counter))
}

/// The identity of one Kubernetes object, as it appears in messages: `secret oob/db`,
/// `namespace oob`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef { kind: kind.to_owned(), namespace: namespace.map(str::to_owned), name: name.to_owned() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.to_lowercase();
        match &self.namespace {
            Some(namespace) => write!(f, "{kind} {namespace}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

/// One field that another field manager owns, from a `FieldManagerConflict` cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConflict {
    /// The path of the field, as the API server names it (`.data.foo`).
    pub field: String,
    /// The field manager that owns it (`kubectl-client-side-apply`).
    pub manager: String,
}

impl fmt::Display for FieldConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (owned by \"{}\")", self.field, self.manager)
    }
}

/// Everything the Kubernetes driver can fail with. Messages name the object, the action and
/// the API server's reason; they never contain Secret data.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("could not read the kubeconfig from {location}")]
    Kubeconfig {
        location: String,
        #[source]
        source: Box<KubeconfigError>,
    },
    #[error("could not load context `{context}` from the kubeconfig at {location}")]
    Context {
        context: String,
        location: String,
        #[source]
        source: Box<KubeconfigError>,
    },
    #[error("could not build a Kubernetes client for context `{context}`")]
    Client {
        context: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("could not {action} {object}: {message} (reason {reason}, HTTP {code})")]
    Api { action: &'static str, object: String, code: u16, reason: String, message: String },
    #[error("could not {action} {object}: the API server could not be reached")]
    Transport {
        action: &'static str,
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("could not {action} {object}: unexpected response from the API server: {detail}")]
    UnexpectedResponse { action: &'static str, object: String, detail: String },
    #[error(
        "could not apply {object}: {} owned by other field managers: {}; change them back or apply with force to take ownership",
        if conflicts.len() == 1 { "1 field is" } else { "some fields are" },
        conflicts.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    Conflict { object: ObjectRef, conflicts: Vec<FieldConflict> },
    #[error("invalid manifest {what}: {problem}")]
    InvalidManifest { what: String, problem: String },
    #[error("the cluster does not serve kind {kind} of {api_version}")]
    UnknownKind {
        api_version: String,
        kind: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "timed out after {} waiting for workloads matching `{selector}`: {}",
        display_duration(*timeout),
        not_ready.join("; ")
    )]
    NotReady { selector: String, timeout: std::time::Duration, not_ready: Vec<String> },
    #[error("the cluster runs Kubernetes {found}, newer than the supported maximum {maximum}")]
    ClusterTooNew { found: String, maximum: String },
    #[error("could not understand the cluster's Kubernetes version `{version}`")]
    UnparsableVersion { version: String },
    #[error("{}", storage_class_message(wanted.as_deref(), available))]
    NoStorageClass { wanted: Option<String>, available: Vec<String> },
    #[error("the cluster lacks custom resource definitions the plan uses: {}", missing.join(", "))]
    MissingCrds { missing: Vec<String> },
    #[error(
        "timed out after {} waiting for custom resource definitions to be established: {}",
        display_duration(*timeout),
        pending.join("; ")
    )]
    CrdsNotEstablished { timeout: std::time::Duration, pending: Vec<String> },
    #[error(
        "{object} was changed by someone else while it was being updated (resourceVersion conflict); rerun to retry on the new version"
    )]
    ConcurrentUpdate { object: ObjectRef },
    #[error(
        "{object} still holds a previous key from an unfinished rotation; finish the rotation (retire the previous key) before storing another"
    )]
    RotationInProgress { object: ObjectRef },
    #[error("{object} is malformed: {problem}")]
    MalformedKeyStore { object: ObjectRef, problem: String },
}

fn display_duration(duration: std::time::Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

fn storage_class_message(wanted: Option<&str>, available: &[String]) -> String {
    let available = if available.is_empty() {
        "the cluster has none".to_owned()
    } else {
        format!("available: {}", available.join(", "))
    };
    match wanted {
        Some(name) => format!("storage class `{name}` does not exist ({available})"),
        None => format!(
            "no storage class is marked as default with storageclass.kubernetes.io/is-default-class=true ({available})"
        ),
    }
}

/// A raw HTTP answer: status and body, kept when the body (a `Status` with causes) matters.
pub(crate) struct RawResponse {
    pub status: http::StatusCode,
    pub body: Vec<u8>,
}

/// Sends a request and returns the status and body without turning errors into
/// `kube::Error::Api`, which would drop the `details.causes` of a `Status`.
pub(crate) async fn send_raw(
    client: &Client,
    request: http::Request<Vec<u8>>,
) -> Result<RawResponse, kube::Error> {
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let status = response.status();
    let body = response.into_body().collect_bytes().await?.to_vec();
    Ok(RawResponse { status, body })
}

/// Turns a failed raw response into an error, scrubbing known secrets out of the server's
/// message (validation errors can quote values).
pub(crate) fn status_error(
    action: &'static str,
    object: &ObjectRef,
    response: &RawResponse,
    redactor: &Redactor,
) -> KubeError {
    match serde_json::from_slice::<Status>(&response.body) {
        Ok(status) => KubeError::Api {
            action,
            object: object.to_string(),
            code: response.status.as_u16(),
            reason: status.reason,
            message: redactor.redact(&status.message),
        },
        Err(_) => KubeError::Api {
            action,
            object: object.to_string(),
            code: response.status.as_u16(),
            reason: response.status.canonical_reason().unwrap_or("Unknown").to_owned(),
            message: "the response was not a Kubernetes Status".to_owned(),
        },
    }
}

/// Maps an error of a typed kube-rs call to a driver error naming the object and action.
pub(crate) fn client_error(
    action: &'static str,
    object: impl ToString,
    error: kube::Error,
    redactor: &Redactor,
) -> KubeError {
    match error {
        kube::Error::Api(response) => KubeError::Api {
            action,
            object: object.to_string(),
            code: response.code,
            reason: response.reason,
            message: redactor.redact(&response.message),
        },
        source => KubeError::Transport { action, object: object.to_string(), source: Box::new(source) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: staging
clusters:
- name: staging
  cluster: { server: "https://staging.example:6443" }
- name: prod
  cluster: { server: "https://prod.example:6443" }
contexts:
- name: staging
  context: { cluster: staging, user: deployer, namespace: oob-staging }
- name: prod
  context: { cluster: prod, user: deployer, namespace: oob }
users:
- name: deployer
  user: { token: canary-token-4d2 }
"#;

    fn kubeconfig_file() -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), KUBECONFIG).unwrap();
        file
    }

    #[tokio::test]
    async fn connect_uses_the_named_context() {
        let file = kubeconfig_file();
        let options =
            ClientOptions { kubeconfig: Some(file.path().to_owned()), context: Some("prod".to_owned()) };
        let client = connect(&options).await.unwrap();
        assert_eq!(client.default_namespace(), "oob");
    }

    #[tokio::test]
    async fn connect_defaults_to_the_current_context() {
        let file = kubeconfig_file();
        let options = ClientOptions { kubeconfig: Some(file.path().to_owned()), context: None };
        let client = connect(&options).await.unwrap();
        assert_eq!(client.default_namespace(), "oob-staging");
    }

    #[tokio::test]
    async fn connect_counted_counts_what_the_client_sends_even_unanswered() {
        let file = tempfile::NamedTempFile::new().unwrap();
        // Nothing listens on port 1: the request is sent to the transport and fails there.
        std::fs::write(file.path(), KUBECONFIG.replace("staging.example:6443", "127.0.0.1:1")).unwrap();
        let options = ClientOptions { kubeconfig: Some(file.path().to_owned()), context: None };
        let (client, requests) = connect_counted(&options).await.unwrap();
        assert_eq!(requests.snapshot().total(), 0, "connecting sends nothing");
        client.apiserver_version().await.unwrap_err();
        let counts = requests.snapshot();
        assert_eq!((counts.get("GET"), counts.total(), counts.mutating()), (1, 1, 0));
    }

    /// An API server that answers every request with 503 and `Retry-After: 0`, and counts them.
    fn unavailable_server() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let counted = counted.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line != "\r\n" {
                            continue;
                        }
                        counted.fetch_add(1, Ordering::SeqCst);
                        let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"busy","reason":"ServiceUnavailable","code":503}"#;
                        let response = format!(
                            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 0\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if writer.write_all(response.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (address, seen)
    }

    #[tokio::test]
    async fn an_unavailable_answer_is_not_retried_by_the_client() {
        let (address, seen) = unavailable_server();
        let file = tempfile::NamedTempFile::new().unwrap();
        let kubeconfig = KUBECONFIG.replace("https://staging.example:6443", &format!("http://{address}"));
        std::fs::write(file.path(), kubeconfig).unwrap();
        let options = ClientOptions { kubeconfig: Some(file.path().to_owned()), context: None };
        let (client, requests) = connect_counted(&options).await.unwrap();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), client.apiserver_version());
        let error = answer.await.expect("the client retried instead of returning").unwrap_err();
        assert!(matches!(&error, kube::Error::Api(status) if status.code == 503), "{error:?}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1, "the server got one request");
        assert_eq!(requests.snapshot().total(), 1);
    }

    #[tokio::test]
    async fn unknown_context_is_named_in_the_error() {
        let file = kubeconfig_file();
        let options =
            ClientOptions { kubeconfig: Some(file.path().to_owned()), context: Some("qa".to_owned()) };
        let Err(error) = connect(&options).await else { panic!("connect succeeded") };
        let message = error.to_string();
        assert_eq!(
            message,
            format!("could not load context `qa` from the kubeconfig at {}", file.path().display())
        );
        assert!(!format!("{error:?}").contains("canary-token-4d2"));
    }

    #[tokio::test]
    async fn missing_kubeconfig_file_is_named_in_the_error() {
        let options =
            ClientOptions { kubeconfig: Some(PathBuf::from("/nonexistent/kubeconfig")), context: None };
        let Err(error) = connect(&options).await else { panic!("connect succeeded") };
        assert_eq!(error.to_string(), "could not read the kubeconfig from /nonexistent/kubeconfig");
    }
}
