//! The end-to-end suite: the real `xtask` binary deploys the `e2e` environment (tests/e2e/)
//! to a real cluster and a real PostgreSQL server, redeploys it unchanged, then changes one
//! value and expects exactly one Helm release upgraded. It runs when `OPUS_E2E_KUBECONFIG`
//! names a kubeconfig whose current context is a cluster with a control plane and nothing else
//! (see tests/e2e/README.md), and skips with a notice otherwise. The database is
//! `OPUS_E2E_DATABASE_URL` (`postgres://user:password@host:port/db`, an admin), or else a
//! throwaway server started here. Everything that needs no cluster (generating the
//! environment, its key and secrets, `check`, `plan`) also runs without them, in
//! `e2e_environment_checks_and_plans`.

#[allow(dead_code)]
#[path = "../platform/tests/support/pg.rs"]
mod pg;

use std::collections::BTreeMap;
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

/// A tool: helm from `$OPUS_HELM` if set, else from `.tools/bin` (scripts/install-tools.sh),
/// else from PATH.
fn tool(name: &str) -> PathBuf {
    if let Some(helm) = std::env::var_os("OPUS_HELM").filter(|v| name == "helm" && !v.is_empty()) {
        return PathBuf::from(helm);
    }
    let installed = repo_root().join(".tools/bin").join(name);
    if installed.is_file() { installed } else { PathBuf::from(name) }
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
            .env("OPUS_HELM", tool("helm"))
            .current_dir(self.home.path());
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

/// Runs a command with `input` on stdin, failing the test after [`RUN_TIMEOUT`].
fn run_command(mut command: Command, input: Option<&str>) -> Run {
    let program = format!("{:?}", command);
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("start {program}: {e}"));
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

    // The cluster prerequisites cover what the preflight checks.
    let preflight = steps.iter().find(|s| s["action"]["kind"] == "preflight").unwrap();
    let crds = std::fs::read_to_string(e2e_dir().join("cluster/crds.yaml")).unwrap();
    for crd in preflight["action"]["crds"].as_array().unwrap() {
        assert!(crds.contains(&format!("name: {}", crd.as_str().unwrap())), "no CRD manifest for {crd}");
    }
    let storage = std::fs::read_to_string(e2e_dir().join("cluster/storage-class.yaml")).unwrap();
    assert!(storage.contains("storageclass.kubernetes.io/is-default-class: \"true\""));
    assert!(preflight["action"].get("storage_class").is_none(), "the preflight uses the default class");

    // Secrets stay out of the plan's JSON.
    assert!(!serde_json::to_string(&plan).unwrap().contains(&settings.database.password));
}

/// The step events of `deploy --output json`: the last status of each step.
fn final_statuses(stdout: &str) -> BTreeMap<String, String> {
    let mut statuses = BTreeMap::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if event["event"] == "step" {
            statuses.insert(
                event["step"].as_str().expect("a step id").to_owned(),
                event["status"].as_str().expect("a status").to_owned(),
            );
        }
    }
    statuses
}

fn deploy(repo: &E2eRepo) -> BTreeMap<String, String> {
    let run = repo.xtask(&["deploy", "e2e", "--yes", "--output", "json"], None);
    run.assert_success();
    final_statuses(&run.stdout)
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
        .expect("run kubectl");
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

    // What a control plane without anything installed lacks.
    let cluster = e2e_dir().join("cluster");
    let cluster = cluster.to_str().unwrap();
    cluster_tool(
        "kubectl",
        &settings,
        &["apply", "--server-side", "--field-manager", "opus-e2e", "-f", cluster],
    )
    .assert_success();
    cluster_tool(
        "kubectl",
        &settings,
        &["wait", "--for", "condition=Established", "--timeout", "60s", "crd/components.dapr.io"],
    )
    .assert_success();

    let repo = E2eRepo::create(&settings);
    let system = repo.namespace("system");
    let services = repo.namespace("opus");

    // 1. Everything is created.
    let first = deploy(&repo);
    let not_succeeded: Vec<_> = first.iter().filter(|(_, status)| *status != "succeeded").collect();
    assert!(not_succeeded.is_empty(), "steps that did not succeed: {not_succeeded:?}");
    let mut kinds_run = std::collections::BTreeSet::new();
    let plan = repo.xtask(&["plan", "e2e", "--format", "json"], None);
    let plan: Value = serde_json::from_str(&plan.assert_success().stdout).expect("plan JSON");
    for (id, kind) in plan_step_kinds(&plan) {
        assert_eq!(first.get(&id).map(String::as_str), Some("succeeded"), "{id}");
        kinds_run.insert(kind);
    }
    assert_eq!(kinds_run.len(), EVERY_ACTION_KIND.len());

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
    let managers: Vec<&str> = component["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"opus-deploy"), "field managers: {managers:?}");
    for (release, namespace) in [("dapr", &system), ("oob-authorization-server", &services)] {
        assert_eq!(helm_revisions(&settings, release, namespace), [1], "{release}");
    }
    assert_database_role(
        &settings.database,
        &format!("auth_{}_user", repo.run),
        &format!("auth_{}", repo.run),
    );

    // 2. Nothing changed: every step is skipped on its journaled fingerprint.
    let second = deploy(&repo);
    let changed: Vec<_> = second.iter().filter(|(_, status)| *status != "unchanged").collect();
    assert!(changed.is_empty(), "steps that ran again: {changed:?}");
    assert_eq!(second.len(), first.len());

    // 3. One value changes: one release is upgraded, nothing else runs.
    repo.replace(
        &format!("environments/e2e/{system}/dapr/component.toml"),
        "revision = \"first\"",
        "revision = \"second\"",
    );
    let third = deploy(&repo);
    let ran: Vec<(&String, &String)> = third.iter().filter(|(_, status)| *status != "unchanged").collect();
    let dapr_release = format!("{system}/dapr/release");
    assert_eq!(ran, [(&dapr_release, &"succeeded".to_owned())], "all: {third:#?}");
    assert_eq!(helm_revisions(&settings, "dapr", &system), [1, 2]);
    assert_eq!(helm_revisions(&settings, "oob-authorization-server", &services), [1]);
    let config_map = cluster_tool(
        "kubectl",
        &settings,
        &["get", "configmap", "dapr", "-n", &system, "-o", "jsonpath={.data.values\\.yaml}"],
    );
    assert!(config_map.assert_success().stdout.contains("revision: second"), "{}", config_map.stdout);
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
