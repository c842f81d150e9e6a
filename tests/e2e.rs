//! The end-to-end suite: the real `xtask` binary deploys the `e2e` environment (tests/e2e/)
//! to a real cluster and a real PostgreSQL server, redeploys it unchanged, then changes one
//! value and expects exactly one Helm release upgraded. It runs when `OPUS_E2E_KUBECONFIG`
//! names a kubeconfig whose current context is a cluster with a control plane and nothing else
//! (see tests/e2e/README.md), and skips with a notice otherwise. The only object applied by hand
//! is the StorageClass (tests/e2e/cluster); every CustomResourceDefinition comes with the
//! releases that ship it. `helm` and `kubectl` are found on PATH (scripts/test.sh puts
//! `.tools/bin` first); `OPUS_HELM` reaches the binary only when the caller set it. The database is
//! `OPUS_E2E_DATABASE_URL` (`postgres://user:password@host:port/db`, an admin), or else a
//! throwaway server started here. Everything that needs no cluster (generating the
//! environment, its key and secrets, `check`, `plan`) also runs without them, in
//! `e2e_environment_checks_and_plans`.

#[path = "../platform/tests/support/pg.rs"]
mod pg;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// How long one run of the binary may take: a whole deploy against a real cluster.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

fn e2e_dir() -> PathBuf {
    repo_root().join("tests/e2e")
}

/// `$OPUS_HELM` as the caller set it (unset or empty: none).
fn opus_helm() -> Option<OsString> {
    std::env::var_os("OPUS_HELM").filter(|v| !v.is_empty())
}

/// A tool, as the program to run: helm from `$OPUS_HELM` when the caller set it, else the bare
/// name, which `Command` looks up on PATH (scripts/test.sh puts `.tools/bin` first). Never a
/// path made from the bare name: a spawner such as duct runs `Path::new("helm")` as `./helm`.
fn tool(name: &str) -> OsString {
    match opus_helm().filter(|_| name == "helm") {
        Some(helm) => helm,
        None => OsString::from(name),
    }
}

/// The admin connection to the database the run provisions in.
#[derive(Debug, Clone)]
struct Database {
    host: String,
    port: u16,
    user: String,
    password: String,
    database: String,
}

impl Database {
    /// Parses `postgres://user:password@host:port/db` (user and password percent-encoded).
    fn parse(url: &str) -> Database {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .unwrap_or_else(|| panic!("OPUS_E2E_DATABASE_URL must start with postgres://"));
        let (credentials, location) =
            rest.rsplit_once('@').expect("OPUS_E2E_DATABASE_URL needs user:password@");
        let (user, password) = credentials.split_once(':').expect("OPUS_E2E_DATABASE_URL needs a password");
        let (address, database) = location.split_once('/').unwrap_or((location, "postgres"));
        let database = database.split('?').next().unwrap_or("postgres");
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().expect("OPUS_E2E_DATABASE_URL has a numeric port")),
            None => (address, 5432),
        };
        Database {
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port,
            user: percent_decode(user),
            password: percent_decode(password),
            database: if database.is_empty() { "postgres".to_owned() } else { database.to_owned() },
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let decoded = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8(out).expect("a UTF-8 credential")
}

/// What the environment is generated for.
struct Settings {
    context: String,
    kubeconfig: PathBuf,
    database: Database,
}

/// A temporary repository root holding the run's `e2e` environment, its key and the charts.
struct E2eRepo {
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
    /// The run's name, in namespaces, releases' namespaces, the database and its role.
    run: String,
    key_file: PathBuf,
}

impl E2eRepo {
    /// Copies tests/e2e/environments and charts/, writes env.toml, generates the age key and
    /// creates the secrets files with `secrets new` and `secrets set`.
    fn create(settings: &Settings) -> E2eRepo {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let home = tempfile::tempdir().expect("create a temp home");
        let run = run_name();
        copy_dir(&e2e_dir().join("environments"), &dir.path().join("environments"), &run);
        copy_dir(&repo_root().join("charts"), &dir.path().join("charts"), &run);

        let identity = platform::secrets::identity::generate_identity();
        let key_file = home.path().join("keys.txt");
        std::fs::write(&key_file, identity.key_file_entry().expose()).expect("write the key file");
        let env_toml = std::fs::read_to_string(e2e_dir().join("env.toml.template"))
            .expect("read env.toml.template")
            .replace("@CONTEXT@", &settings.context)
            .replace("@KUBECONFIG@", settings.kubeconfig.to_str().expect("a UTF-8 kubeconfig path"))
            .replace("@DATABASE_HOST@", &settings.database.host)
            .replace("@DATABASE_PORT@", &settings.database.port.to_string())
            .replace("@DATABASE_ADMIN@", &settings.database.user)
            .replace("@RECIPIENT@", &identity.recipient.to_string());
        std::fs::write(dir.path().join("environments/e2e/env.toml"), env_toml).expect("write env.toml");

        let repo = E2eRepo { dir, home, run, key_file };
        let env_secrets = repo.path("environments/e2e/secrets.enc.yaml");
        repo.xtask(&["secrets", "new", &env_secrets], None).assert_success();
        repo.xtask(
            &["secrets", "set", &env_secrets, "database.admin_password", "-"],
            Some(&settings.database.password),
        )
        .assert_success();
        let service_secrets = repo
            .path(&format!("environments/e2e/{}-opus/oob-authorization-server/secrets.enc.yaml", repo.run));
        repo.xtask(&["secrets", "new", &service_secrets], None).assert_success();
        if pods_become_ready() {
            // The cluster marks pods Ready (tests/e2e/README.md): the service gets its Deployment.
            let component =
                format!("environments/e2e/{}-opus/oob-authorization-server/component.toml", repo.run);
            repo.replace(
                &component,
                "[values_custom.deployment]\nenabled = false",
                "[values_custom.deployment]\nenabled = true",
            );
        }
        repo
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The absolute path of a file of the repository, as an argument.
    fn path(&self, relative: &str) -> String {
        self.root().join(relative).to_str().expect("a UTF-8 temp path").to_owned()
    }

    fn namespace(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.run)
    }

    /// Runs the binary with `--root` at this repository, the run's key as the only identity,
    /// a fresh HOME and `input` (if any) on stdin.
    fn xtask(&self, args: &[&str], input: Option<&str>) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("NO_COLOR", "1")
            .env("SOPS_AGE_KEY_FILE", &self.key_file)
            .current_dir(self.home.path());
        // The binary finds helm itself (on PATH) unless the caller named one.
        if let Some(helm) = opus_helm() {
            command.env("OPUS_HELM", helm);
        }
        run_command(command, input)
    }

    /// Replaces the one occurrence of `from` in a file of the repository.
    fn replace(&self, path: &str, from: &str, to: &str) {
        let full = self.root().join(path);
        let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {path}: {e}"));
        assert_eq!(text.matches(from).count(), 1, "expected one `{from}` in {path}:\n{text}");
        std::fs::write(&full, text.replacen(from, to, 1)).expect("write the file");
    }
}

/// `OPUS_E2E_PODS_BECOME_READY=1`: the cluster has a stand-in that marks pods Ready, so the
/// service may have a Deployment (the suite then also scales it by hand).
fn pods_become_ready() -> bool {
    std::env::var("OPUS_E2E_PODS_BECOME_READY").is_ok_and(|v| v == "1")
}

/// `e2e` plus 8 hex digits: a valid namespace prefix and PostgreSQL identifier part.
fn run_name() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("a clock").as_nanos();
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    format!("e2e{:08x}", (mixed ^ (mixed >> 29)) as u32)
}

/// Copies a tree, replacing `@RUN@` in file names and contents.
fn copy_dir(from: &Path, to: &Path, run: &str) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_str().expect("a UTF-8 file name").replace("@RUN@", run);
        let target = to.join(name);
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target, run);
        } else {
            let bytes = std::fs::read(entry.path()).expect("read a file");
            let bytes = match String::from_utf8(bytes) {
                Ok(text) => text.replace("@RUN@", run).into_bytes(),
                Err(error) => error.into_bytes(),
            };
            std::fs::write(&target, bytes).expect("write a file");
        }
    }
}

/// What one run of a program did.
#[derive(Debug)]
struct Run {
    program: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_success(&self) -> &Run {
        assert_eq!(
            self.code,
            Some(0),
            "{} failed\n--- stdout\n{}\n--- stderr\n{}",
            self.program,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs a command with `input` on stdin, failing the test after [`RUN_TIMEOUT`]. A program that
/// cannot start (not on PATH) is a run without an exit code.
fn run_command(mut command: Command, input: Option<&str>) -> Run {
    let program = format!("{:?}", command);
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        // Not found on PATH, say: a failed run, which callers report or tolerate.
        Err(error) => {
            return Run {
                program,
                code: None,
                stdout: String::new(),
                stderr: format!("could not start: {error}"),
            };
        }
    };
    let mut stdin = child.stdin.take().expect("a stdin pipe");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    drop(stdin);
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match finished.recv_timeout(RUN_TIMEOUT) {
        Ok(output) => output.expect("wait for the program"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{program} did not finish within {RUN_TIMEOUT:?}");
        }
    };
    Run {
        program,
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// kubectl or helm against the e2e cluster.
fn cluster_tool(name: &str, settings: &Settings, args: &[&str]) -> Run {
    let mut command = Command::new(tool(name));
    let (kubeconfig_flag, context_flag) =
        if name == "helm" { ("--kubeconfig", "--kube-context") } else { ("--kubeconfig", "--context") };
    command
        .args(args)
        .arg(kubeconfig_flag)
        .arg(&settings.kubeconfig)
        .arg(context_flag)
        .arg(&settings.context);
    run_command(command, None)
}

/// The kinds of every step of the plan, from `plan --format json`.
fn plan_step_kinds(plan: &Value) -> BTreeMap<String, String> {
    plan["steps"]
        .as_array()
        .expect("the plan has steps")
        .iter()
        .map(|step| {
            (
                step["id"].as_str().expect("a step id").to_owned(),
                step["action"]["kind"].as_str().expect("an action kind").to_owned(),
            )
        })
        .collect()
}

/// The one object the suite applies by hand, in tests/e2e/cluster.
const STORAGE_CLASS_FILE: &str = "storage-class.yaml";

const EVERY_ACTION_KIND: [&str; 9] = [
    "apply-objects",
    "apply-secret",
    "database-preflight",
    "ensure-namespace",
    "helm-release",
    "preflight",
    "provision-database",
    "store-key",
    "wait-ready",
];

#[test]
fn e2e_environment_checks_and_plans() {
    let kubeconfig = tempfile::NamedTempFile::new().expect("a temp kubeconfig");
    std::fs::write(
        kubeconfig.path(),
        "apiVersion: v1\nkind: Config\ncurrent-context: e2e-offline\nclusters:\n- name: offline\n  cluster: { server: \"https://127.0.0.1:1\" }\ncontexts:\n- name: e2e-offline\n  context: { cluster: offline, user: nobody }\nusers:\n- name: nobody\n  user: { token: not-a-token }\n",
    )
    .expect("write the kubeconfig");
    let settings = Settings {
        context: "e2e-offline".to_owned(),
        kubeconfig: kubeconfig.path().to_owned(),
        database: Database::parse("postgres://opus_admin:e2e%2Fpass@127.0.0.1:5432/postgres"),
    };
    assert_eq!(settings.database.password, "e2e/pass");
    let repo = E2eRepo::create(&settings);

    repo.xtask(&["check", "e2e"], None).assert_success();
    let plan = repo.xtask(&["plan", "e2e", "--format", "json"], None);
    plan.assert_success();
    let plan: Value = serde_json::from_str(&plan.stdout).expect("the plan is JSON");
    assert_eq!(plan["secrets"], "decrypted", "the run's key opens every secrets file");
    assert_eq!(
        plan["target"],
        serde_json::json!({
            "kind": "kube",
            "context": "e2e-offline",
            "kubeconfig": kubeconfig.path().to_str().unwrap(),
        })
    );

    let kinds = plan_step_kinds(&plan);
    let distinct: std::collections::BTreeSet<&str> = kinds.values().map(String::as_str).collect();
    assert_eq!(distinct.into_iter().collect::<Vec<_>>(), EVERY_ACTION_KIND, "steps: {kinds:#?}");

    // Local charts only, and no Deployment: the cluster has no nodes.
    let steps = plan["steps"].as_array().unwrap();
    for step in steps.iter().filter(|s| s["action"]["kind"] == "helm-release") {
        let chart = step["action"]["chart"]["reference"].as_str().unwrap();
        assert!(chart.starts_with("charts/"), "{} uses {chart}", step["id"]);
        assert!(step["action"]["chart"].get("repository").is_none(), "{}", step["id"]);
    }
    let service = format!("{}/oob-authorization-server/release", repo.namespace("opus"));
    let service = steps.iter().find(|s| s["id"] == service.as_str()).expect("the service's release");
    assert_eq!(service["action"]["values"]["values"]["deployment"], serde_json::json!({"enabled": false}));
    let rendered = {
        let mut command = Command::new(tool("helm"));
        command.args(["template", "oob-authorization-server"]).arg(repo.root().join("charts/opus-service"));
        command.args(["--set", "deployment.enabled=false"]);
        run_command(command, None)
    };
    if rendered.code.is_some_and(|code| code == 0) {
        assert!(!rendered.stdout.contains("kind: Deployment"), "{}", rendered.stdout);
    } else {
        eprintln!("notice: helm not available, the chart rendering was not checked: {}", rendered.stderr);
    }

    // What the suite applies by hand is the StorageClass and nothing else: no CRD (the
    // releases ship theirs), so the preflight runs against a cluster without Opus CRDs.
    let preflight = steps.iter().find(|s| s["action"]["kind"] == "preflight").unwrap();
    let by_hand: Vec<String> = std::fs::read_dir(e2e_dir().join("cluster"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(by_hand, [STORAGE_CLASS_FILE], "tests/e2e/cluster holds only the StorageClass");
    let storage = std::fs::read_to_string(e2e_dir().join("cluster").join(STORAGE_CLASS_FILE)).unwrap();
    assert!(!storage.contains("CustomResourceDefinition"), "{storage}");
    assert!(storage.contains("storageclass.kubernetes.io/is-default-class: \"true\""));
    assert!(preflight["action"].get("storage_class").is_none(), "the preflight uses the default class");

    // Secrets stay out of the plan's JSON.
    assert!(!serde_json::to_string(&plan).unwrap().contains(&settings.database.password));
}

/// What one `deploy --output json` printed: the last status of each step, the messages of the
/// steps that failed or were skipped, and the summary object.
#[derive(Debug)]
struct Deployed {
    statuses: BTreeMap<String, String>,
    messages: BTreeMap<String, String>,
    summary: Value,
    run: Run,
}

impl Deployed {
    fn parse(run: Run) -> Deployed {
        let (mut statuses, mut messages, mut summary) = (BTreeMap::new(), BTreeMap::new(), Value::Null);
        for line in run.stdout.lines().filter(|l| !l.trim().is_empty()) {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n--- stderr\n{}", run.stderr));
            if event["event"] == "step" {
                let step = event["step"].as_str().expect("a step id").to_owned();
                if let Some(message) = event["message"].as_str() {
                    messages.insert(step.clone(), message.to_owned());
                }
                statuses.insert(step, event["status"].as_str().expect("a status").to_owned());
            } else if event["event"] == "summary" {
                summary = event;
            }
        }
        Deployed { statuses, messages, summary, run }
    }

    fn assert_success(&self) -> &Deployed {
        self.run.assert_success();
        self
    }

    /// `api_requests` of the summary: the mutating requests Opus Deploy's own client sent.
    fn mutating_requests(&self) -> u64 {
        self.summary["api_requests"]["mutating"].as_u64().unwrap_or_else(|| {
            panic!("the summary of a kube deploy has no api_requests.mutating: {}", self.summary)
        })
    }
}

fn deploy(repo: &E2eRepo) -> Deployed {
    Deployed::parse(repo.xtask(&["deploy", "e2e", "--yes", "--output", "json"], None))
}

/// The CustomResourceDefinition the dapr release ships (the stand-in chart carries it): the
/// suite never applies it, and the cluster lacks it until the first deploy.
const DAPR_COMPONENTS_CRD: &str = "components.dapr.io";

/// The verbs of `apiserver_request_total` that write. The API server reports a server-side
/// apply as `APPLY` (not `PATCH`) and a DELETE of a collection as `DELETECOLLECTION`; `CREATE`
/// and `UPDATE` are in its set of valid verbs too, so they are counted if they ever appear.
const MUTATING_VERBS: [&str; 8] =
    ["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION", "CREATE", "UPDATE"];

/// The resources (`group`, `resource` labels) the cross-check counts writes to. The metric has
/// no label naming the client or user (kube-apiserver 1.30: `verb`, `dry_run`, `group`,
/// `version`, `resource`, `subresource`, `scope`, `component`, `code`), so it counts every
/// writer of the cluster: only resources that Opus Deploy's own steps write and that nothing
/// else writes while the suite runs on a cluster without nodes are compared.
/// - `namespaces` (ensure-namespace): kube-controller-manager's namespace controller writes a
///   namespace only while it is being deleted; the API server creates its system namespaces
///   once, at start.
/// - `secrets` (apply-secret, store-key; helm keeps its releases in Secrets, but helm runs only
///   when a release changes): since 1.24 the token controller creates no Secret for a service
///   account, and the legacy token cleaner only touches such auto-generated tokens.
/// - `components` of `dapr.io` (apply-objects): no controller watches them without Dapr.
///
/// Left out on purpose: `configmaps` (the root CA publisher writes `kube-root-ca.crt` into
/// every namespace), `serviceaccounts` (the service account controller creates `default` in
/// every namespace), `events`, `leases` (leader election and API server identity, every few
/// seconds), `endpoints`/`endpointslices`, `pods` (the stand-in that marks pods Ready) and
/// `customresourcedefinitions` (the API server writes their status). The scrape is of one API
/// server: the suite's clusters have one (with several, each counts only what it served).
const CROSS_CHECKED_RESOURCES: [(&str, &str); 3] =
    [("", "namespaces"), ("", "secrets"), ("dapr.io", "components")];

/// One sample of a metric in the Prometheus text format: its labels and its value.
type Sample = (BTreeMap<String, String>, f64);

/// The samples of `metric` in a Prometheus text exposition (`# HELP`/`# TYPE` lines skipped;
/// label values unescaped; an optional timestamp after the value ignored).
fn metric_samples(text: &str, metric: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else { continue };
        let mut labels = BTreeMap::new();
        let rest = if let Some(mut rest) = rest.strip_prefix('{') {
            loop {
                rest = rest.trim_start_matches([',', ' ']);
                if let Some(after) = rest.strip_prefix('}') {
                    break after;
                }
                let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad labels: {line}"));
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((at, '"')) => break at,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, escaped)) => value.push(escaped),
                            None => panic!("bad label value: {line}"),
                        },
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value: {line}"),
                    }
                };
                labels.insert(name.trim().to_owned(), value);
                rest = &after[end + 1..];
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue; // another metric whose name starts with this one
        };
        let value = rest.split_whitespace().next().unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("bad value `{value}` ({e}): {line}"));
        samples.push((labels, value));
    }
    samples
}

/// The writes the API server counted to [`CROSS_CHECKED_RESOURCES`], by sample (labels as
/// text), from `apiserver_request_total`.
fn mutating_requests_to_cross_checked_resources(metrics: &str) -> BTreeMap<String, f64> {
    let samples = metric_samples(metrics, "apiserver_request_total");
    assert!(!samples.is_empty(), "the API server's /metrics has no apiserver_request_total");
    let label = |labels: &BTreeMap<String, String>, name: &str| labels.get(name).cloned().unwrap_or_default();
    samples
        .into_iter()
        .filter(|(labels, _)| MUTATING_VERBS.contains(&label(labels, "verb").as_str()))
        .filter(|(labels, _)| {
            let (group, resource) = (label(labels, "group"), label(labels, "resource"));
            CROSS_CHECKED_RESOURCES.iter().any(|(g, r)| *g == group && *r == resource)
        })
        .map(|(labels, value)| (format!("{labels:?}"), value))
        .collect()
}

/// Scrapes the API server's /metrics (the suite's kubeconfig is an admin's).
fn scrape_writes(settings: &Settings) -> BTreeMap<String, f64> {
    let metrics = cluster_tool("kubectl", settings, &["get", "--raw", "/metrics"]);
    mutating_requests_to_cross_checked_resources(&metrics.assert_success().stdout)
}

/// What grew between two scrapes (a sample absent before counts from zero).
fn grown(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(labels, value)| (labels.clone(), value - before.get(labels).copied().unwrap_or(0.0)))
        .filter(|(_, delta)| *delta != 0.0)
        .collect()
}

#[test]
fn metric_samples_read_the_api_servers_text_format() {
    // As kube-apiserver 1.30 prints it (labels sorted, no timestamp).
    let metrics = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="namespaces",scope="resource",subresource="",verb="GET",version="v1"} 12
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="namespaces",scope="resource",subresource="",verb="APPLY",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="namespace",subresource="",verb="POST",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="dapr.io",resource="components",scope="resource",subresource="",verb="APPLY",version="v1alpha1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 1.234e+06
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1"} 9
apiserver_request_total_other{verb="POST"} 5
apiserver_request_duration_seconds_count{verb="POST"} 4
"#;
    let samples = metric_samples(metrics, "apiserver_request_total");
    assert_eq!(samples.len(), 6);
    assert_eq!(samples[4].1, 1_234_000.0);
    assert_eq!(samples[3].0["group"], "dapr.io");
    assert_eq!(metric_samples(r#"m{a="x\"y\\z",b="2"} 1 1700000000000"#, "m")[0].0["a"], "x\"y\\z");
    let writes = mutating_requests_to_cross_checked_resources(metrics);
    assert_eq!(writes.values().sum::<f64>(), 6.0, "{writes:#?}");
    let later = metrics.replace("verb=\"APPLY\",version=\"v1\"} 2", "verb=\"APPLY\",version=\"v1\"} 4");
    let delta = grown(&writes, &mutating_requests_to_cross_checked_resources(&later));
    assert_eq!(delta.values().copied().collect::<Vec<_>>(), [2.0]);
}

/// The field managers of an object, from `kubectl get -o json --show-managed-fields` (kubectl
/// leaves `managedFields` out of its output since 1.21 unless asked).
fn field_managers(settings: &Settings, args: &[&str]) -> Vec<String> {
    let mut args = args.to_vec();
    args.extend(["-o", "json", "--show-managed-fields"]);
    let object = cluster_tool("kubectl", settings, &args);
    let object: Value = serde_json::from_str(&object.assert_success().stdout).expect("kubectl JSON");
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str().map(str::to_owned))
        .collect()
}

/// The CustomResourceDefinitions the cluster has, by name.
fn crd_names(settings: &Settings) -> BTreeSet<String> {
    let crds = cluster_tool("kubectl", settings, &["get", "customresourcedefinitions", "-o", "json"]);
    let crds: Value = serde_json::from_str(&crds.assert_success().stdout).expect("kubectl JSON");
    crds["items"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|crd| crd["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn e2e_deploy_creates_everything_then_changes_nothing_then_upgrades_one_release() {
    let Some(kubeconfig) = std::env::var_os("OPUS_E2E_KUBECONFIG").filter(|v| !v.is_empty()) else {
        eprintln!("notice: skipping the end-to-end deploy: OPUS_E2E_KUBECONFIG is not set");
        return;
    };
    let kubeconfig = PathBuf::from(kubeconfig);
    let context = Command::new(tool("kubectl"))
        .args(["config", "current-context", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .expect("run kubectl (from PATH)");
    assert!(
        context.status.success(),
        "kubectl config current-context: {}",
        String::from_utf8_lossy(&context.stderr)
    );
    let context = String::from_utf8(context.stdout).expect("UTF-8").trim().to_owned();

    let mut _throwaway = None;
    let database = match std::env::var("OPUS_E2E_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Database::parse(&url),
        _ => {
            let server = pg::PgServer::try_start()
                .expect("OPUS_E2E_DATABASE_URL is not set and no PostgreSQL binaries to start a server");
            let database = Database::parse(&server.admin_url());
            _throwaway = Some(server);
            database
        }
    };
    let settings = Settings { context, kubeconfig, database };

    // The one thing applied by hand: the StorageClass the preflight looks for. Every CRD comes
    // with the release that ships it.
    let storage_class = e2e_dir().join("cluster").join(STORAGE_CLASS_FILE);
    cluster_tool(
        "kubectl",
        &settings,
        &["apply", "--server-side", "--field-manager", "opus-e2e", "-f", storage_class.to_str().unwrap()],
    )
    .assert_success();

    let repo = E2eRepo::create(&settings);
    let system = repo.namespace("system");
    let services = repo.namespace("opus");
    let plan = repo.xtask(&["plan", "e2e", "--format", "json"], None);
    let plan: Value = serde_json::from_str(&plan.assert_success().stdout).expect("plan JSON");
    let preflight = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action"]["kind"] == "preflight")
        .expect("a preflight step");
    let preflight_id = preflight["id"].as_str().unwrap().to_owned();
    let mut opus_crds: BTreeSet<String> = preflight["action"]["crds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|crd| crd.as_str().map(str::to_owned))
        .collect();
    opus_crds.insert(DAPR_COMPONENTS_CRD.to_owned());

    // 0. The cluster has no Opus CRD yet, unless a previous run (against the same cluster) left
    // the ones its releases installed: cluster-scoped, they outlive the run's namespaces.
    let present = crd_names(&settings);
    let left: Vec<&String> = opus_crds.iter().filter(|crd| present.contains(*crd)).collect();
    let without_crds = left.is_empty();
    if !without_crds {
        let managers: Vec<String> = left
            .iter()
            .map(|crd| {
                format!("{crd} (managed by {:?})", field_managers(&settings, &["get", "crd", crd.as_str()]))
            })
            .collect();
        eprintln!(
            "notice: the cluster already has {} (left by a previous run?): the preflight is not checked on a cluster without Opus CRDs this time",
            managers.join(", ")
        );
    }

    // 1. Everything is created; the preflight passes on the bare cluster.
    let writes_before_first = scrape_writes(&settings);
    let first = deploy(&repo);
    assert_eq!(
        first.statuses.get(&preflight_id).map(String::as_str),
        Some("succeeded"),
        "the preflight on a cluster {}: {:?}\n--- stderr\n{}",
        if without_crds { "without Opus CRDs" } else { "with the CRDs of a previous run" },
        first.messages.get(&preflight_id),
        first.run.stderr
    );
    first.assert_success();
    let not_succeeded: Vec<_> = first.statuses.iter().filter(|(_, status)| *status != "succeeded").collect();
    assert!(not_succeeded.is_empty(), "steps that did not succeed: {not_succeeded:?}");
    let mut kinds_run = BTreeSet::new();
    for (id, kind) in plan_step_kinds(&plan) {
        assert_eq!(first.statuses.get(&id).map(String::as_str), Some("succeeded"), "{id}");
        kinds_run.insert(kind);
    }
    assert_eq!(kinds_run.len(), EVERY_ACTION_KIND.len());
    assert!(
        crd_names(&settings).contains(DAPR_COMPONENTS_CRD),
        "the dapr release installs {DAPR_COMPONENTS_CRD}"
    );
    // Both counts see the first deploy's writes, so their zeros below mean something.
    assert!(first.mutating_requests() > 0, "summary: {}", first.summary);
    let written = grown(&writes_before_first, &scrape_writes(&settings));
    assert!(
        !written.is_empty(),
        "the API server counted no write of the first deploy to {CROSS_CHECKED_RESOURCES:?}"
    );

    for namespace in [&system, &services] {
        let ns = cluster_tool("kubectl", &settings, &["get", "namespace", namespace, "-o", "json"]);
        let ns: Value = serde_json::from_str(&ns.assert_success().stdout).unwrap();
        assert_eq!(ns["metadata"]["labels"]["app.kubernetes.io/managed-by"], "opus-deploy");
        assert_eq!(ns["metadata"]["labels"]["opus.example/run"], repo.run.as_str());
    }
    let secret = cluster_tool(
        "kubectl",
        &settings,
        &["get", "secret", "oob-authorization-server-secrets", "-n", &services, "-o", "jsonpath={.data}"],
    );
    let data: Value = serde_json::from_str(&secret.assert_success().stdout).unwrap();
    assert!(data.get("db.password").is_some(), "the service's Secret: {data}");
    let key_store =
        cluster_tool("kubectl", &settings, &["get", "secret", "opus-age-keys", "-n", &system, "-o", "json"]);
    let key_store: Value = serde_json::from_str(&key_store.assert_success().stdout).unwrap();
    assert!(key_store["data"]["current.recipient"].is_string());
    let component = cluster_tool(
        "kubectl",
        &settings,
        &["get", "components.dapr.io", "opus-pubsub", "-n", &services, "-o", "json"],
    );
    let component: Value = serde_json::from_str(&component.assert_success().stdout).unwrap();
    assert_eq!(component["spec"]["type"], "pubsub.kafka");
    let managers = field_managers(&settings, &["get", "components.dapr.io", "opus-pubsub", "-n", &services]);
    assert!(managers.iter().any(|m| m == "opus-deploy"), "field managers: {managers:?}");
    let managers = field_managers(&settings, &["get", "namespace", &services]);
    assert!(
        managers.iter().any(|m| m == "opus-deploy"),
        "field managers of namespace {services}: {managers:?}"
    );
    for (release, namespace) in [("dapr", &system), ("oob-authorization-server", &services)] {
        assert_eq!(helm_revisions(&settings, release, namespace), [1], "{release}");
    }
    assert_database_role(
        &settings.database,
        &format!("auth_{}_user", repo.run),
        &format!("auth_{}", repo.run),
    );

    // 2. Nothing changed: every step is skipped on its journaled fingerprint, and nothing is
    // written: Opus Deploy's client sends no mutating request (its own count), and the API
    // server counts no write to what the steps touch (its metrics, before and after).
    let writes_before_second = scrape_writes(&settings);
    let second = deploy(&repo);
    second.assert_success();
    let changed: Vec<_> = second.statuses.iter().filter(|(_, status)| *status != "unchanged").collect();
    assert!(changed.is_empty(), "steps that ran again: {changed:?}");
    assert_eq!(second.statuses.len(), first.statuses.len());
    assert_eq!(second.mutating_requests(), 0, "summary: {}", second.summary);
    let written = grown(&writes_before_second, &scrape_writes(&settings));
    assert!(written.is_empty(), "the API server counted writes during the unchanged deploy: {written:#?}");

    // 3. One value changes: one release is upgraded, nothing else runs, and the releases of the
    // run have exactly one revision more between them.
    let revisions_before = run_revisions(&settings, &[&system, &services]);
    repo.replace(
        &format!("environments/e2e/{system}/dapr/component.toml"),
        "revision = \"first\"",
        "revision = \"second\"",
    );
    let third = deploy(&repo);
    third.assert_success();
    let ran: Vec<(&String, &String)> =
        third.statuses.iter().filter(|(_, status)| *status != "unchanged").collect();
    let dapr_release = format!("{system}/dapr/release");
    // The release, and its readiness wait, which follows it.
    let dapr_ready = format!("{system}/dapr/ready");
    let succeeded = "succeeded".to_owned();
    assert_eq!(ran, [(&dapr_ready, &succeeded), (&dapr_release, &succeeded)], "all: {:#?}", third.statuses);
    assert_eq!(helm_revisions(&settings, "dapr", &system), [1, 2]);
    assert_eq!(helm_revisions(&settings, "oob-authorization-server", &services), [1]);
    let revisions_after = run_revisions(&settings, &[&system, &services]);
    assert_eq!(
        revisions_after.keys().collect::<Vec<_>>(),
        revisions_before.keys().collect::<Vec<_>>(),
        "the releases of the run"
    );
    let total = |revisions: &BTreeMap<String, Vec<u64>>| revisions.values().map(Vec::len).sum::<usize>();
    assert_eq!(
        total(&revisions_after),
        total(&revisions_before) + 1,
        "before: {revisions_before:?}, after: {revisions_after:?}"
    );
    let config_map = cluster_tool(
        "kubectl",
        &settings,
        &["get", "configmap", "dapr", "-n", &system, "-o", "jsonpath={.data.values\\.yaml}"],
    );
    assert!(config_map.assert_success().stdout.contains("revision: second"), "{}", config_map.stdout);

    // 4. Behind the tool's back: `helm uninstall` of a release and `kubectl delete` of a Secret.
    // The refresh finds both (and the wait for the release), `deploy` repairs exactly those, and
    // the deploy after that is unchanged again and writes nothing.
    let service = "oob-authorization-server";
    cluster_tool("helm", &settings, &["uninstall", service, "-n", &services]).assert_success();
    let secret_name = format!("{service}-secrets");
    cluster_tool("kubectl", &settings, &["delete", "secret", &secret_name, "-n", &services]).assert_success();
    let plan = repo.xtask(&["plan", "e2e", "--format", "json"], None);
    let plan: Value = serde_json::from_str(&plan.assert_success().stdout).expect("plan JSON");
    assert_eq!(plan["refresh"]["state"], "observed", "{}", plan["refresh"]);
    let drifted = changed_steps(&plan);
    let release_step = format!("{services}/{service}/release");
    let ready_step = format!("{services}/{service}/ready");
    let expected = BTreeMap::from([
        (release_step.clone(), format!("helm release {services}/{service}: release not found")),
        (format!("{services}/{service}/secret"), format!("Secret {services}/{secret_name} deleted")),
    ]);
    assert_eq!(drifted, expected, "every step that is not unchanged, with its drift");
    let fourth = deploy(&repo);
    fourth.assert_success();
    let ran: BTreeSet<&String> =
        fourth.statuses.iter().filter(|(_, status)| *status != "unchanged").map(|(id, _)| id).collect();
    // The release's readiness wait follows it.
    let mut expected_ran: BTreeSet<&String> = expected.keys().collect();
    expected_ran.insert(&ready_step);
    assert_eq!(ran, expected_ran, "all: {:#?}", fourth.statuses);
    assert!(fourth.statuses.values().all(|s| s == "succeeded" || s == "unchanged"), "{:#?}", fourth.statuses);
    assert_eq!(helm_revisions(&settings, service, &services), [1], "reinstalled after the uninstall");
    cluster_tool("kubectl", &settings, &["get", "secret", &secret_name, "-n", &services]).assert_success();
    let writes_before_fifth = scrape_writes(&settings);
    let fifth = deploy(&repo);
    fifth.assert_success();
    let changed: Vec<_> = fifth.statuses.iter().filter(|(_, status)| *status != "unchanged").collect();
    assert!(changed.is_empty(), "steps that ran after the repair: {changed:?}");
    assert_eq!(fifth.mutating_requests(), 0, "summary: {}", fifth.summary);
    let written = grown(&writes_before_fifth, &scrape_writes(&settings));
    assert!(written.is_empty(), "the API server counted writes after the repair: {written:#?}");

    // 4b. With a Deployment: `kubectl scale` by hand drifts the release (its wait recorded one
    // replica), `deploy` runs helm again, which restores the count, and then all is unchanged.
    if pods_become_ready() {
        cluster_tool(
            "kubectl",
            &settings,
            &["scale", "deployment", service, "-n", &services, "--replicas=3"],
        )
        .assert_success();
        let plan = repo.xtask(&["plan", "e2e", "--format", "json"], None);
        let plan: Value = serde_json::from_str(&plan.assert_success().stdout).expect("plan JSON");
        let drifted = changed_steps(&plan);
        assert_eq!(
            drifted,
            BTreeMap::from([(
                release_step.clone(),
                format!("Deployment/{service}: 3 replicas, recorded 1 (in namespace {services})")
            ),]),
            "every step that is not unchanged after `kubectl scale`"
        );
        deploy(&repo).assert_success();
        let replicas = cluster_tool(
            "kubectl",
            &settings,
            &["get", "deployment", service, "-n", &services, "-o", "jsonpath={.spec.replicas}"],
        );
        assert_eq!(replicas.assert_success().stdout.trim(), "1", "helm restored the replica count");
        let after = deploy(&repo);
        after.assert_success();
        assert_eq!(after.mutating_requests(), 0, "summary: {}", after.summary);
    }

    // 5. The service leaves the configuration: its release is uninstalled and its Secret
    // deleted (the inventory lists both), its database and role are retained.
    let component = format!("environments/e2e/{services}/{service}/component.toml");
    let text = std::fs::read_to_string(repo.root().join(&component)).expect("the component file");
    std::fs::write(repo.root().join(&component), format!("enabled = false\n{text}")).expect("write it");
    let plan = repo.xtask(&["plan", "e2e", "--format", "json"], None);
    let plan: Value = serde_json::from_str(&plan.assert_success().stdout).expect("plan JSON");
    let removed: BTreeMap<String, Option<String>> = plan["removed"]
        .as_array()
        .unwrap_or_else(|| panic!("no removals in the plan: {plan:#}"))
        .iter()
        .map(|r| (r["item"].as_str().unwrap().to_owned(), r["retained"].as_str().map(str::to_owned)))
        .collect();
    let database_item = format!("database auth_{run} (role auth_{run}_user)", run = repo.run);
    assert_eq!(
        removed.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            format!("Secret {services}/{secret_name}"),
            database_item.clone(),
            format!("helm release {services}/{service}"),
        ]),
        "{removed:#?}"
    );
    assert!(removed[&database_item].is_some(), "the database is retained: {removed:#?}");
    assert!(removed[&format!("helm release {services}/{service}")].is_none(), "{removed:#?}");
    let sixth = deploy(&repo);
    sixth.assert_success();
    assert!(
        sixth.run.stderr.contains(&format!("Removed helm release {services}/{service}")),
        "{}",
        sixth.run.stderr
    );
    // The summary counts the clean-up's own requests too: the Secret's DELETE is ours (the
    // release's uninstall is helm's).
    assert!(
        sixth.summary["api_requests"]["DELETE"].as_u64().is_some_and(|n| n >= 1),
        "summary: {}",
        sixth.summary
    );
    let releases = cluster_tool("helm", &settings, &["list", "--all", "-n", &services, "-o", "json"]);
    let releases: Value = serde_json::from_str(&releases.assert_success().stdout).expect("helm list JSON");
    assert!(
        !releases.as_array().unwrap().iter().any(|r| r["name"] == service),
        "the release is still there: {releases:#}"
    );
    let gone = cluster_tool("kubectl", &settings, &["get", "secret", &secret_name, "-n", &services]);
    assert_ne!(gone.code, Some(0), "the Secret is still there: {}", gone.stdout);
    assert_database_role(
        &settings.database,
        &format!("auth_{}_user", repo.run),
        &format!("auth_{}", repo.run),
    );
    let plan = repo.xtask(&["plan", "e2e", "--format", "json"], None);
    let plan: Value = serde_json::from_str(&plan.assert_success().stdout).expect("plan JSON");
    assert!(plan.get("removed").is_none(), "left to remove after the deploy: {}", plan["removed"]);
    let seventh = deploy(&repo);
    seventh.assert_success();
    assert_eq!(seventh.mutating_requests(), 0, "summary: {}", seventh.summary);
}

/// Every step of a plan document that is not unchanged, with its drift (or `(not drifted)`).
fn changed_steps(plan: &Value) -> BTreeMap<String, String> {
    plan["steps"]
        .as_array()
        .expect("the plan's steps")
        .iter()
        .filter(|s| s["change"] != "unchanged")
        .map(|s| {
            (s["id"].as_str().unwrap().to_owned(), s["drift"].as_str().unwrap_or("(not drifted)").to_owned())
        })
        .collect()
}

/// Every release (in any state) of the run's namespaces, as `namespace/release`, with the
/// revisions in its history.
fn run_revisions(settings: &Settings, namespaces: &[&str]) -> BTreeMap<String, Vec<u64>> {
    let mut revisions = BTreeMap::new();
    for namespace in namespaces {
        let list = cluster_tool("helm", settings, &["list", "--all", "-n", namespace, "-o", "json"]);
        let list: Value = serde_json::from_str(&list.assert_success().stdout).expect("helm list JSON");
        for release in list.as_array().expect("a list") {
            let name = release["name"].as_str().expect("a release name");
            revisions.insert(format!("{namespace}/{name}"), helm_revisions(settings, name, namespace));
        }
    }
    assert!(!revisions.is_empty(), "no release in {namespaces:?}");
    revisions
}

/// The revisions in `helm history`.
fn helm_revisions(settings: &Settings, release: &str, namespace: &str) -> Vec<u64> {
    let history = cluster_tool("helm", settings, &["history", release, "-n", namespace, "-o", "json"]);
    let history: Value = serde_json::from_str(&history.assert_success().stdout).expect("helm history JSON");
    history
        .as_array()
        .expect("a list")
        .iter()
        .map(|entry| entry["revision"].as_u64().expect("a revision"))
        .collect()
}

/// The role exists, can log in and owns the database.
fn assert_database_role(database: &Database, role: &str, name: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        use sqlx::Connection as _;
        let options = sqlx::postgres::PgConnectOptions::new()
            .host(&database.host)
            .port(database.port)
            .username(&database.user)
            .password(&database.password)
            .database(&database.database);
        let mut connection = sqlx::PgConnection::connect_with(&options).await.expect("connect as the admin");
        let row: Option<(bool, String)> = sqlx::query_as(
            "SELECT r.rolcanlogin, pg_get_userbyid(d.datdba) FROM pg_roles r JOIN pg_database d ON d.datname = $2 WHERE r.rolname = $1",
        )
        .bind(role)
        .bind(name)
        .fetch_optional(&mut connection)
        .await
        .expect("query the catalog");
        assert_eq!(row, Some((true, role.to_owned())), "role {role} owning database {name}");
    });
}
