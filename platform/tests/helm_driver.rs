//! Tests of the Helm driver: against the real helm binary (`scripts/install-tools.sh --no-apt`
//! puts it in `.tools/bin`) for rendering, and against a recording stand-in
//! (`support/fake-helm.sh`) for what reaches helm's command line and stdin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use platform::drivers::helm::{
    self, ChartRef, ChartSource, HelmContext, HelmError, HelmValues, Release, UpgradeOptions,
};
use platform::sensitive::{REDACTED, Redactor, SecretString};
use serde::Deserialize as _;
use sha2::{Digest, Sha256};

const CANARY: &str = "canary-pw-8c41f2e7";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The real helm; fails (does not skip) when it is missing, so CI cannot pass without it.
fn real_helm() -> HelmContext {
    let binary = helm::find_helm(Some(&repo_root()));
    let works =
        duct::cmd(binary.executable(), ["version", "--short"]).stdout_null().stderr_null().run().is_ok();
    assert!(works, "helm not found ({binary}): run scripts/install-tools.sh --no-apt");
    HelmContext::new(binary)
}

fn local_chart(name: &str) -> ChartRef {
    ChartRef { source: ChartSource::Local { path: repo_root().join("charts").join(name) }, version: None }
}

fn release(name: &str) -> Release {
    Release { name: name.into(), namespace: "opus-test".into() }
}

fn redactor() -> Redactor {
    let mut redactor = Redactor::new();
    redactor.add(&SecretString::new(CANARY));
    redactor
}

/// A temp dir holding a `helm` symlink to the recording stand-in, and its canned answers.
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

    fn context(&self) -> HelmContext {
        HelmContext::new(self.dir.path().join("helm"))
    }

    fn answer(&self, command: &str, stdout: &str, stderr: &str, exit: i32) {
        let path = |ext: &str| self.dir.path().join(format!("{command}.{ext}"));
        std::fs::write(path("stdout"), stdout).unwrap();
        std::fs::write(path("stderr"), stderr).unwrap();
        std::fs::write(path("exit"), exit.to_string()).unwrap();
    }

    /// The command line of the recorded call, one argument a line, or `None` if never called.
    fn cmdline(&self, command: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(format!("{command}.cmdline"))).ok()
    }

    fn stdin_sha256(&self, command: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{command}.stdin-sha256")))
            .unwrap()
            .trim()
            .to_owned()
    }
}

fn merged_values() -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&format!(
        "component: dapr\n\
         replicas: 3\n\
         nested:\n  list: [a, b, {{c: 1}}]\n  flag: true\n  empty: {{}}\n\
         db:\n  password: {CANARY}\n  host: 'pg.internal:5432'\n"
    ))
    .unwrap()
}

fn values_of(value: &serde_yaml_ng::Value) -> HelmValues {
    HelmValues::from_yaml(SecretString::new(serde_yaml_ng::to_string(value).unwrap()))
}

#[test]
fn template_renders_exactly_the_merged_values() {
    let context = real_helm();
    let values = merged_values();
    let rendered = helm::template(
        &context,
        &release("infra"),
        &local_chart("opus-infra"),
        &values_of(&values),
        &redactor(),
    )
    .unwrap();

    let config_map = serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == "ConfigMap")
        .expect("a ConfigMap in the rendered manifests");
    assert_eq!(config_map["metadata"]["name"], "infra");
    let echoed: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(config_map["data"]["values.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(echoed, values);
}

#[test]
fn opus_service_chart_puts_the_password_in_its_secret_only() {
    let context = real_helm();
    let values: serde_yaml_ng::Value = serde_yaml_ng::from_str(&format!(
        "brandId: bank-x\n\
         db: {{name: api_consent, username: api_consent, password: {CANARY}, host: pg, port: 5432, kind: postgresql}}\n\
         dapr: {{enabled: true, appId: oob-consent, daprPubsubId: pubsub}}\n\
         additionalVars: [{{name: FEATURE_X, value: 'on'}}]\n"
    ))
    .unwrap();
    let rendered = helm::template(
        &context,
        &release("oob-consent"),
        &local_chart("opus-service"),
        &values_of(&values),
        &redactor(),
    )
    .unwrap();
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Secret", "Service", "Deployment"]);
    let deployment = serde_yaml_ng::to_string(&docs[2]).unwrap();
    assert!(!deployment.contains(CANARY));
    assert!(deployment.contains("dapr.io/app-id: oob-consent"));
    assert!(deployment.contains("FEATURE_X"));
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(CANARY);
    assert_eq!(docs[0]["data"]["DB_PASSWORD"], encoded.as_str());
}

#[test]
fn failed_helm_output_is_redacted_in_the_error() {
    let context = real_helm();
    // The gateway chart fails on an unknown feature and quotes it: here, a secret.
    let values: serde_yaml_ng::Value = serde_yaml_ng::from_str(&format!("features: [{CANARY}]\n")).unwrap();
    let error = helm::template(
        &context,
        &release("routes"),
        &local_chart("opus-gateway-routes"),
        &values_of(&values),
        &redactor(),
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, HelmError::Failed { .. }), "{message}");
    assert!(message.contains("unknown feature"), "{message}");
    assert!(message.contains(REDACTED), "{message}");
    assert!(!message.contains(CANARY), "{message}");
    assert!(!format!("{error:?}").contains(CANARY));
}

#[test]
fn upgrade_sends_values_on_stdin_and_never_on_the_command_line() {
    let fake = FakeHelm::new();
    fake.answer("status", "", "Error: release: not found\n", 1);
    fake.answer("upgrade", "Release \"oob-consent\" has been upgraded.\n", "", 0);
    let values = values_of(&merged_values());
    let chart = ChartRef {
        source: ChartSource::Repository {
            url: "https://charts.example.invalid".into(),
            chart: "oob-consent".into(),
        },
        version: Some("1.4.0".into()),
    };
    let options = UpgradeOptions { timeout: Duration::from_secs(60), create_namespace: true };
    let out = helm::upgrade_install(
        &fake.context(),
        &release("oob-consent"),
        &chart,
        &values,
        &options,
        &redactor(),
    )
    .unwrap();
    assert!(out.contains("has been upgraded"));

    let cmdline = fake.cmdline("upgrade").expect("helm upgrade was run");
    assert!(!cmdline.contains(CANARY), "{cmdline}");
    assert!(!cmdline.contains("password"), "{cmdline}");
    assert!(cmdline.contains("\n--values\n-\n"), "{cmdline}");
    assert!(cmdline.contains("\n--atomic\n"), "{cmdline}");
    let expected = hex::encode(Sha256::digest(values.expose_yaml().as_bytes()));
    assert_eq!(fake.stdin_sha256("upgrade"), expected);
    // The status check ran first, with nothing on stdin.
    assert!(fake.cmdline("status").is_some());
    let empty = hex::encode(Sha256::digest(b""));
    assert_eq!(fake.stdin_sha256("status"), empty);
}

const PENDING_UPGRADE_STATUS: &str = r#"{
  "name": "oob-consent",
  "info": {
    "first_deployed": "2025-03-01T10:00:00.000000000Z",
    "last_deployed": "2025-03-04T09:12:44.000000000Z",
    "deleted": "",
    "description": "Preparing upgrade",
    "status": "pending-upgrade",
    "notes": ""
  },
  "config": {"db": {"password": "canary-pw-8c41f2e7"}},
  "version": 5,
  "namespace": "oob"
}"#;

const HISTORY: &str = r#"[
  {"revision":2,"updated":"2025-03-01T10:00:00Z","status":"superseded","chart":"oob-consent-1.3.0","app_version":"1.3.0","description":"Upgrade complete"},
  {"revision":3,"updated":"2025-03-02T10:00:00Z","status":"deployed","chart":"oob-consent-1.3.1","app_version":"1.3.1","description":"Upgrade complete"},
  {"revision":4,"updated":"2025-03-03T10:00:00Z","status":"failed","chart":"oob-consent-1.4.0","app_version":"1.4.0","description":"Upgrade failed"},
  {"revision":5,"updated":"2025-03-04T09:12:44Z","status":"pending-upgrade","chart":"oob-consent-1.4.0","app_version":"1.4.0","description":"Preparing upgrade"}
]"#;

#[test]
fn pending_upgrade_is_reported_with_rollback_to_last_deployed_revision() {
    let status = helm::parse_release_status(PENDING_UPGRADE_STATUS).unwrap();
    assert_eq!(status.revision, 5);
    assert_eq!(status.state, "pending-upgrade");
    assert!(status.is_pending());
    let history = helm::parse_history(HISTORY).unwrap();
    assert_eq!(
        helm::recovery_command(&status, &history).as_deref(),
        Some("helm rollback oob-consent 3 -n oob")
    );
}

#[test]
fn pending_install_is_recovered_by_uninstall_and_deployed_needs_nothing() {
    let mut status =
        helm::parse_release_status(&PENDING_UPGRADE_STATUS.replace("pending-upgrade", "pending-install"))
            .unwrap();
    assert_eq!(helm::recovery_command(&status, &[]).as_deref(), Some("helm uninstall oob-consent -n oob"));
    status.state = "deployed".into();
    assert!(!status.is_pending());
    assert_eq!(helm::recovery_command(&status, &[]), None);
}

#[test]
fn upgrade_of_a_stuck_release_stops_before_running_helm_upgrade() {
    let fake = FakeHelm::new();
    fake.answer("status", PENDING_UPGRADE_STATUS, "", 0);
    fake.answer("history", HISTORY, "", 0);
    let error = helm::upgrade_install(
        &fake.context(),
        &Release { name: "oob-consent".into(), namespace: "oob".into() },
        &local_chart("opus-service"),
        &values_of(&merged_values()),
        &UpgradeOptions::default(),
        &redactor(),
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, HelmError::PendingRelease { recovery, .. } if recovery == "helm rollback oob-consent 3 -n oob"),
        "{message}"
    );
    assert!(message.contains("pending-upgrade"), "{message}");
    assert!(!message.contains(CANARY), "{message}");
    assert_eq!(fake.cmdline("upgrade"), None);
}

#[test]
fn failure_of_status_check_is_redacted() {
    let fake = FakeHelm::new();
    fake.answer(
        "status",
        "",
        &format!("Error: Kubernetes cluster unreachable: token {CANARY} rejected\n"),
        1,
    );
    let error = helm::upgrade_install(
        &fake.context(),
        &release("oob-consent"),
        &local_chart("opus-service"),
        &values_of(&merged_values()),
        &UpgradeOptions::default(),
        &redactor(),
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("helm status of release `oob-consent`"), "{message}");
    assert!(message.contains("cluster unreachable"), "{message}");
    assert!(!message.contains(CANARY), "{message}");
    assert_eq!(fake.cmdline("upgrade"), None);
}

#[test]
fn missing_helm_binary_names_the_binary_and_the_release() {
    let context = HelmContext::new("/nonexistent/helm");
    let error = helm::template(
        &context,
        &release("infra"),
        &local_chart("opus-infra"),
        &values_of(&merged_values()),
        &redactor(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "could not run helm (/nonexistent/helm) for template of release `infra`: that file does not exist (check OPUS_HELM)"
    );
    let cause = std::error::Error::source(&error).expect("the spawn error is kept as the cause");
    assert!(cause.to_string().contains("No such file or directory"), "{cause}");
}
