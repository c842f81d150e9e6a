//! Tests of the `kube` target's driver ([`ClusterDriver`]): each plan action that talks to
//! Kubernetes is run against kube-rs's mock service (the requests asserted one by one: method,
//! path, body), releases against the recording stand-in for helm, and the database actions
//! against a throwaway PostgreSQL server. Secrets are canary values that must reach request
//! bodies, helm's stdin and SQL parameters only, never an error or a command line.

#[allow(dead_code)]
#[path = "../src/drivers/kube/mock.rs"]
mod mock;
#[path = "support/pg.rs"]
mod pg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use mock::{MockServer, json_response, status_response};
use platform::drivers::cluster::ClusterDriver;
use platform::drivers::helm::HelmContext;
use platform::exec::{Driver, Found, PhaseReporter, StepError, StepOutput};
use platform::plan::{Action, ChartSpec, Step};
use platform::postgres::AdminOptions;
use platform::secrets::Identities;
use platform::secrets::identity::generate_identity;
use platform::sensitive::SecretString;
use platform::values::{SecretEntry, SecretTable, Values};

const CANARY: &str = "canary-secret-5e1b93d0";

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn step(id: &str, action: Action) -> Step {
    Step { id: id.to_owned(), component: None, action, depends_on: Vec::new(), fingerprint: String::new() }
}

/// Values whose leaves listed in `secrets` are decrypted secrets, as the compiler makes them.
fn values_with_secrets(tree: Value, secrets: &[(&str, &str)]) -> Values {
    let mut table = SecretTable::default();
    let mut tree = tree;
    for (pointer, value) in secrets {
        let placeholder = table.placeholder(SecretEntry {
            digest: format!("hmac:{pointer}"),
            value: Some(SecretString::new(*value)),
        });
        *tree.pointer_mut(pointer).expect("the secret's place exists") = Value::String(placeholder);
    }
    Values::from_marked(&tree, &table)
}

/// The driver under test, with whatever the test needs besides the cluster.
struct Setup {
    helm: HelmContext,
    database: Option<AdminOptions>,
    identities: Identities,
    root: PathBuf,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            helm: HelmContext::new("/nonexistent/helm"),
            database: None,
            identities: Identities::new(),
            root: PathBuf::from("/nonexistent/root"),
        }
    }
}

fn driver(client: kube::Client, setup: Setup) -> Arc<ClusterDriver> {
    Arc::new(ClusterDriver {
        client,
        helm: setup.helm,
        database: setup.database,
        identities: Arc::new(setup.identities),
        root: setup.root,
        run: Default::default(),
        prune_databases: false,
    })
}

/// The phases a step reported, in order.
#[derive(Clone, Default)]
struct Phases(Arc<Mutex<Vec<String>>>);

impl Phases {
    fn reporter(&self) -> PhaseReporter {
        let phases = self.0.clone();
        Arc::new(move |phase: &str| phases.lock().unwrap().push(phase.to_owned()))
    }
}

fn run(driver: Arc<ClusterDriver>, step: Step) -> tokio::task::JoinHandle<Result<StepOutput, StepError>> {
    tokio::spawn(async move { driver.run(&step, Phases::default().reporter()).await })
}

fn version_info(major: &str, minor: &str, git_version: &str) -> Value {
    json!({
        "major": major, "minor": minor, "gitVersion": git_version,
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "2024-08-01T00:00:00Z",
        "goVersion": "go1.22", "compiler": "gc", "platform": "linux/amd64",
    })
}

fn storage_classes(names_and_defaults: &[(&str, bool)]) -> Value {
    let items: Vec<Value> = names_and_defaults
        .iter()
        .map(|(name, is_default)| {
            json!({
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {
                    "name": name,
                    "annotations": {
                        "storageclass.kubernetes.io/is-default-class": if *is_default { "true" } else { "false" }
                    },
                },
                "provisioner": "kubernetes.io/no-provisioner",
            })
        })
        .collect();
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClassList",
        "metadata": { "resourceVersion": "1" }, "items": items,
    })
}

fn crd_metadata(name: &str) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": { "name": name, "resourceVersion": "7" },
    })
}

fn preflight(storage_class: Option<&str>, crds: &[&str]) -> Step {
    step(
        "environment/e2e/preflight",
        Action::Preflight {
            max_kubernetes_version: Some("1.30".to_owned()),
            storage_class: storage_class.map(str::to_owned),
            crds: crds.iter().map(|c| (*c).to_owned()).collect(),
            provided: Default::default(),
            outside_run: Default::default(),
        },
    )
}

const CRD_PATH: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

#[tokio::test]
async fn preflight_passes_on_a_supported_cluster_and_reports_version_and_storage_class() {
    let (client, mut server) = MockServer::start();
    let task = run(driver(client, Setup::default()), preflight(None, &["components.dapr.io"]));
    server.expect("GET", "/version").await.respond(json_response(200, version_info("1", "30", "v1.30.2")));
    server
        .expect("GET", "/apis/storage.k8s.io/v1/storageclasses")
        .await
        .respond(json_response(200, storage_classes(&[("slow", false), ("standard", true)])));
    server
        .expect("GET", &format!("{CRD_PATH}/components.dapr.io"))
        .await
        .respond(json_response(200, crd_metadata("components.dapr.io")));
    let output = server.finish(task).await.unwrap();
    assert_eq!(
        output,
        json!({"kubernetes": "1.30", "storage_class": "standard", "crds_installed_by_the_plan": []})
    );
}

#[tokio::test]
async fn preflight_refuses_a_cluster_newer_than_the_maximum_before_any_other_check() {
    let (client, mut server) = MockServer::start();
    let task = run(driver(client, Setup::default()), preflight(None, &["components.dapr.io"]));
    server.expect("GET", "/version").await.respond(json_response(200, version_info("1", "31", "v1.31.0")));
    let error = server.finish(task).await.unwrap_err();
    assert_eq!(
        error.message,
        "the cluster runs Kubernetes 1.31 (v1.31.0), newer than the supported maximum 1.30"
    );
}

#[tokio::test]
async fn preflight_names_the_missing_storage_class_and_the_available_ones() {
    let (client, mut server) = MockServer::start();
    let task = run(driver(client, Setup::default()), preflight(Some("fast-ssd"), &[]));
    server.expect("GET", "/version").await.respond(json_response(200, version_info("1", "29", "v1.29.5")));
    server
        .expect("GET", "/apis/storage.k8s.io/v1/storageclasses")
        .await
        .respond(json_response(200, storage_classes(&[("standard", true)])));
    let error = server.finish(task).await.unwrap_err();
    assert_eq!(error.message, "storage class `fast-ssd` does not exist (available: standard)");
}

#[tokio::test]
async fn preflight_lists_every_missing_crd() {
    let (client, mut server) = MockServer::start();
    let crds = ["certificates.cert-manager.io", "components.dapr.io", "subscriptions.dapr.io"];
    let task = run(driver(client, Setup::default()), preflight(None, &crds));
    server.expect("GET", "/version").await.respond(json_response(200, version_info("1", "30", "v1.30.2")));
    server
        .expect("GET", "/apis/storage.k8s.io/v1/storageclasses")
        .await
        .respond(json_response(200, storage_classes(&[("standard", true)])));
    server.expect("GET", &format!("{CRD_PATH}/certificates.cert-manager.io")).await.respond(status_response(
        404,
        "NotFound",
        "not found",
    ));
    server
        .expect("GET", &format!("{CRD_PATH}/components.dapr.io"))
        .await
        .respond(json_response(200, crd_metadata("components.dapr.io")));
    server.expect("GET", &format!("{CRD_PATH}/subscriptions.dapr.io")).await.respond(status_response(
        404,
        "NotFound",
        "not found",
    ));
    let error = server.finish(task).await.unwrap_err();
    assert_eq!(
        error.message,
        "the cluster lacks custom resource definitions the plan uses: certificates.cert-manager.io, subscriptions.dapr.io"
    );
}

#[tokio::test]
async fn preflight_names_the_provider_a_partial_run_leaves_out() {
    let (client, mut server) = MockServer::start();
    let mut step = preflight(None, &["components.dapr.io"]);
    let Action::Preflight { outside_run, .. } = &mut step.action else { unreachable!() };
    outside_run.insert("components.dapr.io".to_owned(), "opus-system/dapr".to_owned());
    let task = run(driver(client, Setup::default()), step);
    server.expect("GET", "/version").await.respond(json_response(200, version_info("1", "30", "v1.30.2")));
    server
        .expect("GET", "/apis/storage.k8s.io/v1/storageclasses")
        .await
        .respond(json_response(200, storage_classes(&[("standard", true)])));
    server.expect("GET", &format!("{CRD_PATH}/components.dapr.io")).await.respond(status_response(
        404,
        "NotFound",
        "not found",
    ));
    let error = server.finish(task).await.unwrap_err();
    assert_eq!(
        error.message,
        "the cluster lacks custom resource definitions the plan uses: components.dapr.io; components.dapr.io is installed by opus-system/dapr, which this run leaves out (--only): deploy it first, or include it in --only"
    );
}

fn applied(body: &Value, resource_version: &str) -> Value {
    let mut object = body.clone();
    object["metadata"]["resourceVersion"] = json!(resource_version);
    object
}

#[tokio::test]
async fn ensure_namespace_creates_it_with_its_labels_and_annotations() {
    let (client, mut server) = MockServer::start();
    let labels = BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "opus-deploy".to_owned())]);
    let annotations = BTreeMap::from([("acme.example/owner".to_owned(), "payments".to_owned())]);
    let task = run(
        driver(client, Setup::default()),
        step(
            "opus/namespace/ensure",
            Action::EnsureNamespace { name: "opus".to_owned(), labels, annotations },
        ),
    );
    server.expect("GET", "/api/v1/namespaces/opus").await.respond(status_response(
        404,
        "NotFound",
        "not found",
    ));
    let patch = server.expect("PATCH", "/api/v1/namespaces/opus").await;
    assert_eq!(patch.query("fieldManager").as_deref(), Some("opus-deploy"));
    assert_eq!(patch.content_type(), "application/apply-patch+yaml");
    let body = patch.json_body();
    assert_eq!(
        body,
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {
                "name": "opus",
                "labels": { "app.kubernetes.io/managed-by": "opus-deploy" },
                "annotations": { "acme.example/owner": "payments" },
            },
        })
    );
    patch.respond(json_response(201, applied(&body, "101")));
    assert_eq!(server.finish(task).await.unwrap(), json!({"namespace": "created"}));
}

fn secret_step() -> Step {
    step(
        "opus/oof-pcm-service/secret",
        Action::ApplySecret {
            namespace: "opus".to_owned(),
            name: "oof-pcm-service-secrets".to_owned(),
            labels: BTreeMap::from([("app.kubernetes.io/part-of".to_owned(), "opus".to_owned())]),
            data: values_with_secrets(
                json!({ "db.password": "", "api.user": "reader" }),
                &[("/db.password", CANARY)],
            ),
        },
    )
}

#[tokio::test]
async fn apply_secret_sends_the_values_base64_encoded_in_the_body() {
    let (client, mut server) = MockServer::start();
    let task = run(driver(client, Setup::default()), secret_step());
    let path = "/api/v1/namespaces/opus/secrets/oof-pcm-service-secrets";
    let get = server.expect("GET", path).await;
    // The existence check asks for metadata only: it never fetches the Secret's data.
    let accept = get.headers.get(http::header::ACCEPT).unwrap().to_str().unwrap().to_owned();
    assert!(accept.contains("as=PartialObjectMetadata"), "accept: {accept}");
    get.respond(json_response(
        200,
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
               "metadata": {"name": "oof-pcm-service-secrets", "namespace": "opus", "resourceVersion": "5"}}),
    ));
    let patch = server.expect("PATCH", path).await;
    let body = patch.json_body();
    assert_eq!(body["data"], json!({ "db.password": base64(CANARY), "api.user": base64("reader") }));
    assert_eq!(body["metadata"]["labels"], json!({"app.kubernetes.io/part-of": "opus"}));
    assert!(!String::from_utf8_lossy(&patch.body).contains(CANARY), "the clear value travels only encoded");
    patch.respond(json_response(200, applied(&body, "6")));
    assert_eq!(server.finish(task).await.unwrap(), json!({"secret": "changed"}));
}

#[tokio::test]
async fn rejected_secret_error_never_carries_the_value() {
    let (client, mut server) = MockServer::start();
    let task = run(driver(client, Setup::default()), secret_step());
    let path = "/api/v1/namespaces/opus/secrets/oof-pcm-service-secrets";
    server.expect("GET", path).await.respond(status_response(404, "NotFound", "not found"));
    // API servers quote offending values in validation messages, clear and encoded.
    server.expect("PATCH", path).await.respond(status_response(
        422,
        "Invalid",
        &format!(
            "Secret \"oof-pcm-service-secrets\" is invalid: data[db.password]: Invalid value: \"{CANARY}\" ({}): too long",
            base64(CANARY)
        ),
    ));
    let error = server.finish(task).await.unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(CANARY), "the value leaked: {shown}");
    assert!(!shown.contains(&base64(CANARY)), "the encoded value leaked: {shown}");
    assert!(
        error.message.starts_with(
            "could not apply secret opus/oof-pcm-service-secrets: Secret \"oof-pcm-service-secrets\" is invalid"
        ),
        "{}",
        error.message
    );
    assert!(error.message.ends_with("(reason Invalid, HTTP 422)"), "{}", error.message);
}

#[tokio::test]
async fn apply_objects_applies_a_dapr_component_server_side() {
    let (client, mut server) = MockServer::start();
    let component = json!({
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": { "name": "opus-pubsub", "namespace": "opus" },
        "spec": {
            "type": "pubsub.kafka",
            "version": "v1",
            "metadata": [{ "name": "brokers", "value": "kafka-0:9092" }, { "name": "authType", "value": "none" }],
        },
    });
    let objects = values_with_secrets(json!([component.clone()]), &[]);
    let task = run(
        driver(client, Setup::default()),
        step(
            "opus/pubsub/apply",
            Action::ApplyObjects {
                namespace: "opus".to_owned(),
                objects,
                wait_for_crds: vec!["components.dapr.io".to_owned()],
            },
        ),
    );
    // First the definition the dapr release installs must be established.
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "components.dapr.io", "resourceVersion": "3"},
        "spec": {"group": "dapr.io", "names": {"kind": "Component", "plural": "components"}, "scope": "Namespaced", "versions": []},
        "status": {"conditions": [{"type": "Established", "status": "True"}]},
    });
    server.expect("GET", &format!("{CRD_PATH}/components.dapr.io")).await.respond(json_response(200, crd));
    let path = "/apis/dapr.io/v1alpha1/namespaces/opus/components/opus-pubsub";
    server.expect("GET", path).await.respond(status_response(404, "NotFound", "not found"));
    let patch = server.expect("PATCH", path).await;
    assert_eq!(patch.query("fieldManager").as_deref(), Some("opus-deploy"));
    assert_eq!(patch.json_body(), component);
    patch.respond(json_response(201, applied(&component, "12")));
    assert_eq!(server.finish(task).await.unwrap(), json!({"objects": ["created"]}));
}

fn empty_list(kind: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": []})
}

fn wait_ready(timeout_seconds: u32) -> Step {
    step(
        "opus/oof-pcm-service/ready",
        Action::WaitReady {
            namespace: "opus".to_owned(),
            selector: "app.kubernetes.io/instance=oof-pcm-service".to_owned(),
            timeout_seconds,
        },
    )
}

#[tokio::test]
async fn wait_ready_succeeds_when_the_selector_matches_no_workload() {
    let (client, mut server) = MockServer::start();
    let task = run(driver(client, Setup::default()), wait_ready(60));
    let deployments = server.expect("GET", "/apis/apps/v1/namespaces/opus/deployments").await;
    assert_eq!(
        deployments.query("labelSelector").as_deref(),
        Some("app.kubernetes.io/instance=oof-pcm-service")
    );
    deployments.respond(json_response(200, empty_list("DeploymentList")));
    server
        .expect("GET", "/apis/apps/v1/namespaces/opus/statefulsets")
        .await
        .respond(json_response(200, empty_list("StatefulSetList")));
    // Then what the refresh compares the release's workloads with: the namespace's workloads
    // and autoscalers, one list each, unselected.
    for (path, kind) in [
        ("/apis/apps/v1/namespaces/opus/deployments", "DeploymentList"),
        ("/apis/apps/v1/namespaces/opus/statefulsets", "StatefulSetList"),
        ("/apis/apps/v1/namespaces/opus/daemonsets", "DaemonSetList"),
        ("/apis/autoscaling/v2/namespaces/opus/horizontalpodautoscalers", "HorizontalPodAutoscalerList"),
    ] {
        let list = server.expect("GET", path).await;
        assert_eq!(list.query("labelSelector"), None);
        list.respond(json_response(200, empty_list(kind)));
    }
    assert_eq!(server.finish(task).await.unwrap(), json!({"ready": true, "workloads": {}}));
}

#[tokio::test]
async fn wait_ready_names_the_workload_that_is_not_available_when_time_is_up() {
    let (client, mut server) = MockServer::start();
    // A zero timeout: one look, then the verdict.
    let task = run(driver(client, Setup::default()), wait_ready(0));
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "oof-pcm-service", "namespace": "opus", "generation": 2 },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "pcm" } },
            "template": { "metadata": { "labels": { "app": "pcm" } }, "spec": { "containers": [] } },
        },
        "status": { "observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 1 },
    });
    let mut list = empty_list("DeploymentList");
    list["items"] = json!([deployment]);
    server.expect("GET", "/apis/apps/v1/namespaces/opus/deployments").await.respond(json_response(200, list));
    server
        .expect("GET", "/apis/apps/v1/namespaces/opus/statefulsets")
        .await
        .respond(json_response(200, empty_list("StatefulSetList")));
    let error = server.finish(task).await.unwrap_err();
    assert_eq!(
        error.message,
        "timed out after 0s waiting for workloads matching `opus/app.kubernetes.io/instance=oof-pcm-service`: deployment opus/oof-pcm-service: 1 of 2 replicas available"
    );
}

const KEY_STORE_PATH: &str = "/api/v1/namespaces/opus-system/secrets/opus-age-keys";

fn store_key(recipients: &[&str]) -> Step {
    step(
        "opus-system/secret-keys/store-key",
        Action::StoreKey {
            namespace: "opus-system".to_owned(),
            secret_name: "opus-age-keys".to_owned(),
            recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        },
    )
}

fn key_store_secret(private_key: &str, recipient: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "opus-age-keys", "namespace": "opus-system", "resourceVersion": "40" },
        "type": "Opaque",
        "data": {
            "current.agekey": base64(private_key),
            "current.recipient": base64(recipient),
            "current.created": base64("2025-01-02T03:04:05Z"),
        },
    })
}

#[tokio::test]
async fn store_key_stores_the_local_identity_of_an_env_recipient_when_the_store_is_missing() {
    let identity = generate_identity();
    let recipient = identity.recipient.to_string();
    let identities = Identities::from_key_text("test key file", &identity.key_file_entry()).unwrap();
    let (client, mut server) = MockServer::start();
    let other = generate_identity().recipient.to_string();
    let task =
        run(driver(client, Setup { identities, ..Setup::default() }), store_key(&[&other, &recipient]));
    server.expect("GET", KEY_STORE_PATH).await.respond(status_response(404, "NotFound", "not found"));
    server.expect("GET", KEY_STORE_PATH).await.respond(status_response(404, "NotFound", "not found"));
    let create = server.expect("POST", "/api/v1/namespaces/opus-system/secrets").await;
    let body = create.json_body();
    assert_eq!(body["data"]["current.agekey"], json!(base64(identity.secret_key.expose())));
    assert_eq!(body["data"]["current.recipient"], json!(base64(&recipient)));
    create.respond(json_response(201, applied(&body, "41")));
    assert_eq!(server.finish(task).await.unwrap(), json!({"key_store": "created", "recipient": recipient}));
}

#[tokio::test]
async fn store_key_leaves_a_stored_key_of_an_env_recipient_unchanged() {
    let identity = generate_identity();
    let recipient = identity.recipient.to_string();
    let (client, mut server) = MockServer::start();
    // No local identity is needed: nothing is written.
    let task = run(driver(client, Setup::default()), store_key(&[&recipient]));
    server
        .expect("GET", KEY_STORE_PATH)
        .await
        .respond(json_response(200, key_store_secret(identity.secret_key.expose(), &recipient)));
    assert_eq!(server.finish(task).await.unwrap(), json!({"key_store": "unchanged", "recipient": recipient}));
}

#[tokio::test]
async fn store_key_refuses_a_stored_key_of_another_recipient_naming_both() {
    let stored = generate_identity();
    let listed = generate_identity();
    let (stored_recipient, listed_recipient) = (stored.recipient.to_string(), listed.recipient.to_string());
    let identities = Identities::from_key_text("test key file", &listed.key_file_entry()).unwrap();
    let (client, mut server) = MockServer::start();
    let task = run(driver(client, Setup { identities, ..Setup::default() }), store_key(&[&listed_recipient]));
    server
        .expect("GET", KEY_STORE_PATH)
        .await
        .respond(json_response(200, key_store_secret(stored.secret_key.expose(), &stored_recipient)));
    let error = server.finish(task).await.unwrap_err();
    assert_eq!(
        error.message,
        format!(
            "the key store opus-system/opus-age-keys holds the key of {stored_recipient}, but env.toml lists {listed_recipient}; finish or start the rotation with `cargo xtask rotate-keys`"
        )
    );
    let shown = format!("{error:?}");
    assert!(!shown.contains(stored.secret_key.expose()) && !shown.contains(listed.secret_key.expose()));
}

/// A temp dir holding a `helm` symlink to the recording stand-in (see helm_driver.rs).
struct FakeHelm {
    dir: tempfile::TempDir,
}

impl FakeHelm {
    fn new() -> FakeHelm {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake-helm.sh");
        std::os::unix::fs::symlink(script, dir.path().join("helm")).unwrap();
        FakeHelm { dir }
    }

    fn answer(&self, command: &str, stdout: &str, stderr: &str, exit: i32) {
        let path = |ext: &str| self.dir.path().join(format!("{command}.{ext}"));
        std::fs::write(path("stdout"), stdout).unwrap();
        std::fs::write(path("stderr"), stderr).unwrap();
        std::fs::write(path("exit"), exit.to_string()).unwrap();
    }

    fn recorded(&self, command: &str, ext: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{command}.{ext}")))
            .unwrap_or_else(|e| panic!("helm {command} was not called: {e}"))
    }
}

fn release_step(timeout_seconds: u32) -> Step {
    step(
        "opus/oof-pcm-service/release",
        Action::HelmRelease {
            release: "oof-pcm-service".to_owned(),
            namespace: "opus".to_owned(),
            chart: ChartSpec {
                reference: "charts/opus-service".to_owned(),
                repository: None,
                version: "1.8.0".to_owned(),
            },
            values: values_with_secrets(
                json!({ "replicaCount": 1, "db": { "username": "pcm", "password": "" } }),
                &[("/db/password", CANARY)],
            ),
            timeout_seconds,
        },
    )
}

#[tokio::test]
async fn helm_release_sends_the_values_on_stdin_and_never_in_arguments() {
    let fake = FakeHelm::new();
    fake.answer("status", "", "Error: release: not found\n", 1);
    fake.answer(
        "upgrade",
        "Release \"oof-pcm-service\" does not exist. Installing it now.\nNAME: oof-pcm-service\nNAMESPACE: opus\nSTATUS: deployed\nREVISION: 1\nTEST SUITE: None\n",
        "",
        0,
    );
    let setup = Setup {
        helm: HelmContext {
            binary: fake.dir.path().join("helm").into(),
            kube_context: Some("e2e".to_owned()),
            kubeconfig: Some(PathBuf::from("/tmp/e2e-kubeconfig")),
        },
        root: PathBuf::from("/repo"),
        ..Setup::default()
    };
    let (client, _server) = MockServer::start();
    let output = run(driver(client, setup), release_step(90)).await.unwrap().unwrap();
    // The revision helm reports is recorded for the refresh to compare the release with.
    assert_eq!(
        output,
        json!({
            "helm": "Release \"oof-pcm-service\" does not exist. Installing it now.\nNAME: oof-pcm-service\nNAMESPACE: opus\nSTATUS: deployed\nREVISION: 1\nTEST SUITE: None",
            "revision": 1,
        })
    );

    let cmdline = fake.recorded("upgrade", "cmdline");
    // The recorded command line starts with the shell and the script: keep helm's arguments.
    let args: Vec<&str> = cmdline.lines().skip_while(|arg| *arg != "upgrade").collect();
    assert_eq!(
        args,
        [
            "upgrade",
            "--install",
            "oof-pcm-service",
            "/repo/charts/opus-service",
            "--namespace",
            "opus",
            "--values",
            "-",
            "--atomic",
            "--timeout",
            "90s",
            "--kube-context",
            "e2e",
            "--kubeconfig",
            "/tmp/e2e-kubeconfig",
        ]
    );
    assert!(!cmdline.contains(CANARY), "the secret reached helm's arguments: {cmdline}");
    let expected_stdin = "replicaCount: 1\ndb:\n  username: pcm\n  password: canary-secret-5e1b93d0\n";
    assert_eq!(fake.recorded("upgrade", "stdin-sha256").trim(), hex::encode(Sha256::digest(expected_stdin)));
}

#[tokio::test]
async fn failed_helm_release_error_and_output_never_carry_the_values() {
    let fake = FakeHelm::new();
    fake.answer("status", "", "Error: release: not found\n", 1);
    fake.answer(
        "upgrade",
        "",
        &format!("Error: Secret in version \"v1\" cannot be handled: password {CANARY} is invalid\n"),
        1,
    );
    let setup = Setup { helm: HelmContext::new(fake.dir.path().join("helm")), ..Setup::default() };
    let (client, _server) = MockServer::start();
    let error = run(driver(client, setup), release_step(600)).await.unwrap().unwrap_err();
    // The executor names the step; the message does not repeat it.
    assert!(
        error.message.starts_with("helm upgrade --install of release `oof-pcm-service`"),
        "{}",
        error.message
    );
    let output = error.output.clone().expect("helm's output is kept");
    assert!(output.contains("cannot be handled"), "{output}");
    let shown = format!("{error:?}");
    assert!(!shown.contains(CANARY), "the secret leaked: {shown}");
}

fn admin_of(server: &pg::PgServer) -> AdminOptions {
    AdminOptions {
        port: server.port(),
        ..AdminOptions::new("127.0.0.1", pg::ADMIN_USER, SecretString::new(pg::ADMIN_PASSWORD))
    }
}

fn database_preflight(port: u16, min_server_version: u32) -> Step {
    step(
        "opus-system/postgresql/preflight",
        Action::DatabasePreflight {
            host: "127.0.0.1".to_owned(),
            port,
            admin_user: pg::ADMIN_USER.to_owned(),
            min_server_version,
            admin_password: values_with_secrets(json!(""), &[("", pg::ADMIN_PASSWORD)]),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_preflight_and_provisioning_run_against_postgresql_and_are_idempotent() {
    let Some(server) = pg::PgServer::try_start() else { return };
    let admin = admin_of(&server);
    let (client, _mock) = MockServer::start();
    let driver = driver(client, Setup { database: Some(admin.clone()), ..Setup::default() });

    let output = run(driver.clone(), database_preflight(admin.port, 14)).await.unwrap().unwrap();
    let version = output["server_version_num"].as_u64().expect("a server version");
    assert!(version >= 140_000, "{output}");
    let error = run(driver.clone(), database_preflight(admin.port, 99)).await.unwrap().unwrap_err();
    assert_eq!(
        error.message,
        format!(
            "PostgreSQL at 127.0.0.1:{} is version {} but the platform needs 99 or newer",
            admin.port,
            version / 10_000
        )
    );

    let provision = step(
        "opus/oof-pcm-service/database",
        Action::ProvisionDatabase {
            host: "127.0.0.1".to_owned(),
            port: admin.port,
            role: "oof_pcm_service_user".to_owned(),
            database: "oof_pcm_service".to_owned(),
            connection_limit: 100,
            password: values_with_secrets(json!(""), &[("", CANARY)]),
        },
    );
    let first = run(driver.clone(), provision.clone()).await.unwrap().unwrap();
    assert_ne!(first["changes"], json!("ProvisionOutcome { changes: [] }"));
    assert_eq!(first["connection_limit_changed"], json!(true), "the limit of 100 is applied");
    assert!(!first.to_string().contains(CANARY));
    let second = run(driver.clone(), provision.clone()).await.unwrap().unwrap();
    assert_eq!(
        second,
        json!({"changes": "ProvisionOutcome { changes: [] }", "connection_limit_changed": false})
    );

    // The deploy's refresh compares the provisioned database with the server (no API request:
    // the plan has no key store and no object).
    let plan = platform::plan::Plan::compiled(
        "e2e".to_owned(),
        false,
        platform::plan::TargetSpec::Kube { context: "e2e".to_owned(), kubeconfig: None },
        true,
        vec![provision],
    )
    .unwrap();
    let observe = |driver: Arc<ClusterDriver>, plan: platform::plan::Plan| async move {
        let steps: Vec<&Step> = plan.steps().collect();
        let observer = driver.observer().expect("the cluster driver observes");
        observer.observe(&plan, &steps, &BTreeMap::new()).await.unwrap()
    };
    assert_eq!(observe(driver.clone(), plan.clone()).await, Found::default());
    let mut connection =
        <sqlx::PgConnection as sqlx::Connection>::connect_with(&admin_connect(&admin)).await.unwrap();
    sqlx::raw_sql("DROP DATABASE oof_pcm_service").execute(&mut connection).await.unwrap();
    let found = observe(driver.clone(), plan).await;
    assert_eq!(
        found.drifted,
        BTreeMap::from([(
            "opus/oof-pcm-service/database".to_owned(),
            "database oof_pcm_service not found".to_owned()
        )])
    );
    assert!(!server.log_contents().contains(CANARY), "the password reached the server's statement log");
}

fn admin_connect(admin: &AdminOptions) -> sqlx::postgres::PgConnectOptions {
    sqlx::postgres::PgConnectOptions::new()
        .host(&admin.host)
        .port(admin.port)
        .username(&admin.user)
        .password(admin.password.expose())
        .database("postgres")
}

/// A plan with the key store and one release: what the environment still has.
fn plan_with_key_store() -> platform::plan::Plan {
    let store = step(
        "opus-system/secret-keys/store-key",
        Action::StoreKey {
            namespace: "opus-system".to_owned(),
            secret_name: "opus-age-keys".to_owned(),
            recipients: vec!["age1example".to_owned()],
        },
    );
    platform::plan::Plan::compiled(
        "e2e".to_owned(),
        false,
        platform::plan::TargetSpec::Kube { context: "e2e".to_owned(), kubeconfig: None },
        true,
        vec![store, release_step(60)],
    )
    .unwrap()
}

fn inventory_secret(items: Value) -> Value {
    let text = serde_json::to_vec(&json!({"format": 1, "environment": "e2e", "items": items})).unwrap();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "opus-inventory", "namespace": "opus-system", "resourceVersion": "5"},
        "data": {"inventory.json": base64::engine::general_purpose::STANDARD.encode(text)},
    })
}

#[tokio::test]
async fn clean_up_uninstalls_removed_releases_deletes_removed_objects_and_retains_namespaces_and_databases() {
    let fake = FakeHelm::new();
    fake.answer("uninstall", "release \"oob-status\" uninstalled\n", "", 0);
    let setup = Setup {
        helm: HelmContext {
            binary: fake.dir.path().join("helm").into(),
            kube_context: Some("e2e".to_owned()),
            kubeconfig: None,
        },
        ..Setup::default()
    };
    let (client, mut server) = MockServer::start();
    let driver = driver(client, setup);
    let plan = plan_with_key_store();
    let task = tokio::spawn(async move { driver.clean_up(&plan).await });
    let listed = json!([
        {"kind": "helm-release", "namespace": "opus", "name": "oof-pcm-service", "provides_crds": false},
        {"kind": "helm-release", "namespace": "opus", "name": "oob-status", "provides_crds": false},
        {"kind": "helm-release", "namespace": "opus-system", "name": "cert-manager", "provides_crds": true},
        {"kind": "object", "api_version": "v1", "object_kind": "Secret", "namespace": "opus", "name": "oob-status-secrets"},
        {"kind": "namespace", "name": "old-team"},
        {"kind": "database", "database": "status", "role": "status_user"},
    ]);
    server
        .expect("GET", "/api/v1/namespaces/opus-system/secrets/opus-inventory")
        .await
        .respond(json_response(200, inventory_secret(listed)));
    // The objects go by DELETE (in the background), the release with `helm uninstall`.
    let delete = server.expect("DELETE", "/api/v1/namespaces/opus/secrets/oob-status-secrets").await;
    assert_eq!(delete.json_body()["propagationPolicy"], "Background");
    delete.respond(json_response(200, json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})));
    // Then the inventory of what is left: the release the plan still has (server-side apply,
    // after its read of the resourceVersion).
    server.expect("GET", "/api/v1/namespaces/opus-system/secrets/opus-inventory").await.respond(json_response(
        200,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "opus-inventory", "namespace": "opus-system", "resourceVersion": "5"}}),
    ));
    let apply = server.expect("PATCH", "/api/v1/namespaces/opus-system/secrets/opus-inventory").await;
    let body = apply.json_body();
    let stored: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(body["data"]["inventory.json"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        stored["items"],
        json!([{"kind": "helm-release", "namespace": "opus", "name": "oof-pcm-service", "provides_crds": false}])
    );
    apply.respond(json_response(201, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "opus-inventory", "namespace": "opus-system", "resourceVersion": "6"}})));
    let cleanups = server.finish(task).await;
    let uninstall = fake.recorded("uninstall", "cmdline");
    let args: Vec<&str> = uninstall.lines().skip_while(|arg| *arg != "uninstall").collect();
    assert_eq!(&args[..4], ["uninstall", "oob-status", "--namespace", "opus"], "{args:?}");
    use platform::exec::Cleanup;
    let removed: Vec<&str> = cleanups
        .iter()
        .filter_map(|c| if let Cleanup::Removed { path } = c { Some(path.as_str()) } else { None })
        .collect();
    assert_eq!(removed, ["Secret opus/oob-status-secrets", "helm release opus/oob-status"], "{cleanups:?}");
    let retained: Vec<&str> = cleanups
        .iter()
        .filter_map(|c| if let Cleanup::Retained { path, .. } = c { Some(path.as_str()) } else { None })
        .collect();
    assert_eq!(
        retained,
        ["database status (role status_user)", "namespace old-team", "helm release opus-system/cert-manager"],
        "{cleanups:?}"
    );
}
