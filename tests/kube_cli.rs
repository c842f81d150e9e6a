//! `cargo xtask deploy` to a `kube` target, end to end through the real binary, with helm
//! reachable only through `PATH` (issue #11). The cluster is a fake API server in this process
//! (tests/util/fake_kube.rs, plain HTTP on 127.0.0.1), helm the recording stand-in
//! (platform/tests/support/fake-helm.sh) behind a `helm` symlink in a directory of `PATH`. No
//! `OPUS_HELM`, no `.tools/bin/helm` in the repository, and a working directory without a
//! `helm`: the binary must find helm the way a shell does. Once `find_helm` answered
//! `PathBuf::from("helm")`, which duct runs as `./helm`, and every release failed with ENOENT.
//!
//! The environment is the end-to-end suite's (tests/e2e/, generated as tests/e2e.rs does), and
//! the deploy is `--only dapr`: a local stand-in chart and no database step, so no PostgreSQL is
//! needed.

mod util;

#[path = "util/fake_kube.rs"]
mod fake_kube;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fake_kube::{FakeKube, Recorded};
use serde_json::{Value, json};
use util::{Run, RunOptions, repo_root};

/// The run's name, in place of `@RUN@` in the e2e templates (namespaces `kubecli-system`, ...).
const RUN: &str = "kubecli";

/// The kubeconfig context the environment targets.
const CONTEXT: &str = "fake-cluster";

/// The SHA-256 of nothing: what the fake helm records when its stdin was empty.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What helm prints when asked for a release it does not know (exit 1, on stderr); the driver
/// reads it as "no release yet".
const STATUS_NOT_FOUND: &str = "Error: release: not found\n";

/// The tools the fake helm script runs, besides itself (`/bin/sh` is its shebang).
const SCRIPT_TOOLS: [&str; 6] = ["sh", "dirname", "tr", "sha256sum", "cut", "cat"];

/// A temporary repository root with the generated `e2e` environment, its age key, and the
/// kubeconfig of the fake cluster.
struct KubeRepo {
    dir: tempfile::TempDir,
    /// Holds the key file (outside the repository) and the kubeconfig.
    _home: tempfile::TempDir,
    key_file: PathBuf,
    kubeconfig: PathBuf,
}

impl KubeRepo {
    /// Copies tests/e2e/environments and charts/, writes env.toml for the fake cluster and
    /// creates the secrets files (as tests/e2e.rs does; the database settings are never used:
    /// `--only dapr` has no database step).
    fn create(server: &FakeKube) -> KubeRepo {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let home = tempfile::tempdir().expect("create a temp home");
        let e2e = repo_root().join("tests/e2e");
        copy_dir(&e2e.join("environments"), &dir.path().join("environments"));
        copy_dir(&repo_root().join("charts"), &dir.path().join("charts"));

        let kubeconfig = home.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig, CONTEXT);

        let identity = platform::secrets::identity::generate_identity();
        let key_file = home.path().join("keys.txt");
        std::fs::write(&key_file, identity.key_file_entry().expose()).expect("write the key file");
        let env_toml = std::fs::read_to_string(e2e.join("env.toml.template"))
            .expect("read env.toml.template")
            .replace("@CONTEXT@", CONTEXT)
            .replace("@KUBECONFIG@", kubeconfig.to_str().expect("a UTF-8 kubeconfig path"))
            // Nothing listens on port 1: a database step, if one ran, would fail at once.
            .replace("@DATABASE_HOST@", "127.0.0.1")
            .replace("@DATABASE_PORT@", "1")
            .replace("@DATABASE_ADMIN@", "opus_admin")
            .replace("@RECIPIENT@", &identity.recipient.to_string());
        std::fs::write(dir.path().join("environments/e2e/env.toml"), env_toml).expect("write env.toml");

        let repo = KubeRepo { dir, _home: home, key_file, kubeconfig };
        let env_secrets = repo.path("environments/e2e/secrets.enc.yaml");
        repo.xtask(&["secrets", "new", &env_secrets], None).assert_code(0);
        let admin_password = RunOptions::default().stdin("not-used-by-this-test");
        repo.xtask(&["secrets", "set", &env_secrets, "database.admin_password", "-"], Some(admin_password))
            .assert_code(0);
        let service_secrets =
            repo.path(&format!("environments/e2e/{RUN}-opus/oob-authorization-server/secrets.enc.yaml"));
        repo.xtask(&["secrets", "new", &service_secrets], None).assert_code(0);
        repo
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The absolute path of a file of the repository, as an argument.
    fn path(&self, relative: &str) -> String {
        self.root().join(relative).to_str().expect("a UTF-8 temp path").to_owned()
    }

    /// Runs the binary with `--root` at this repository and the run's key as the only identity
    /// (tests/util: a scrubbed environment, a fresh empty working directory, no `OPUS_HELM`).
    fn xtask(&self, args: &[&str], options: Option<RunOptions>) -> Run {
        let root = self.root().to_str().expect("a UTF-8 temp path").to_owned();
        let mut all = vec!["--root", root.as_str()];
        all.extend_from_slice(args);
        let options = options
            .unwrap_or_default()
            .env("SOPS_AGE_KEY_FILE", self.key_file.to_str().expect("a UTF-8 key file path"));
        util::xtask_with(&all, &options)
    }

    /// `deploy e2e --only dapr --yes --output json` with `PATH` set to `path` and nothing else
    /// to find helm by.
    fn deploy(&self, path: &str) -> Deployed {
        assert!(!self.root().join(".tools").exists(), "no .tools/bin/helm in the repository");
        let options = RunOptions::default().env("PATH", path);
        Deployed::parse(
            self.xtask(&["deploy", "e2e", "--only", "dapr", "--yes", "--output", "json"], Some(options)),
        )
    }
}

/// Copies a tree, replacing `@RUN@` in file names and contents (as tests/e2e.rs does).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_str().expect("a UTF-8 file name").replace("@RUN@", RUN);
        let target = to.join(name);
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            let bytes = std::fs::read(entry.path()).expect("read a file");
            let bytes = match String::from_utf8(bytes) {
                Ok(text) => text.replace("@RUN@", RUN).into_bytes(),
                Err(error) => error.into_bytes(),
            };
            std::fs::write(&target, bytes).expect("write a file");
        }
    }
}

/// Directories for `PATH`: one with the tools the fake helm script needs (symlinks to the
/// system's, found in /usr/bin or /bin) and, optionally, one with a `helm` symlink to the
/// recording stand-in. The system directories themselves are not on `PATH`, so a helm
/// installed there cannot be found by accident.
struct PathDirs {
    tools: tempfile::TempDir,
    helm: Option<tempfile::TempDir>,
}

impl PathDirs {
    fn new(with_helm: bool) -> PathDirs {
        let tools = tempfile::tempdir().expect("create the tools dir");
        for tool in SCRIPT_TOOLS {
            let found = ["/usr/bin", "/bin"]
                .iter()
                .map(|dir| Path::new(dir).join(tool))
                .find(|path| path.is_file())
                .unwrap_or_else(|| panic!("`{tool}` (which fake-helm.sh runs) is not in /usr/bin or /bin"));
            std::os::unix::fs::symlink(found, tools.path().join(tool)).expect("link a tool");
        }
        let helm = with_helm.then(|| {
            let dir = tempfile::tempdir().expect("create the helm dir");
            let script = repo_root().join("platform/tests/support/fake-helm.sh");
            std::os::unix::fs::symlink(script, dir.path().join("helm")).expect("link the fake helm");
            dir
        });
        PathDirs { tools, helm }
    }

    /// `PATH`: the helm directory (if any), then the tools.
    fn path(&self) -> String {
        let dirs: Vec<&Path> = self.helm.iter().map(|d| d.path()).chain([self.tools.path()]).collect();
        let path = std::env::join_paths(dirs).expect("a valid PATH");
        path.into_string().expect("a UTF-8 PATH")
    }

    fn helm_dir(&self) -> &Path {
        self.helm.as_ref().expect("a helm dir").path()
    }

    /// Tells the fake helm what to answer to `helm <command>`.
    fn answer(&self, command: &str, stdout: &str, stderr: &str, exit: i32) {
        let path = |ext: &str| self.helm_dir().join(format!("{command}.{ext}"));
        std::fs::write(path("stdout"), stdout).expect("write an answer");
        std::fs::write(path("stderr"), stderr).expect("write an answer");
        std::fs::write(path("exit"), exit.to_string()).expect("write an answer");
    }

    /// The command line of the last `helm <command>` (one argument a line), if helm ran it.
    fn recorded(&self, command: &str, ext: &str) -> Option<String> {
        std::fs::read_to_string(self.helm_dir().join(format!("{command}.{ext}"))).ok()
    }

    /// Forgets what the fake helm recorded.
    fn clear_records(&self) {
        for entry in std::fs::read_dir(self.helm_dir()).expect("read the helm dir") {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".cmdline") || name.ends_with(".stdin-sha256") {
                std::fs::remove_file(&path).expect("remove a record");
            }
        }
    }
}

/// What one `deploy --output json` printed: the last status of each step, the messages of the
/// steps that failed or were skipped, and the summary object (as in tests/e2e.rs).
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

    /// `api_requests` of the summary, by method (and `mutating`).
    fn api_requests(&self) -> BTreeMap<String, u64> {
        let requests = self.summary["api_requests"].as_object().unwrap_or_else(|| {
            panic!("the summary of a kube deploy has no api_requests: {}\n{}", self.summary, self.streams())
        });
        requests
            .iter()
            .map(|(key, count)| (key.clone(), count.as_u64().unwrap_or_else(|| panic!("{key}: {count}"))))
            .collect()
    }

    fn streams(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.run.stdout, self.run.stderr)
    }
}

/// The steps `--only dapr` runs, worked out from the full plan independently of the binary's
/// `restrict_to`: the dapr component's steps and everything they depend on, transitively.
fn steps_of_dapr_and_dependencies(plan: &Value) -> BTreeMap<String, String> {
    let steps = plan["steps"].as_array().expect("the plan has steps");
    let by_id: BTreeMap<&str, &Value> = steps.iter().map(|s| (s["id"].as_str().expect("an id"), s)).collect();
    let mut keep: BTreeSet<&str> = steps
        .iter()
        .filter(|s| s["component"].as_str().is_some_and(|c| c == "dapr" || c.ends_with("/dapr")))
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(!keep.is_empty(), "the e2e plan has no dapr steps: {plan:#}");
    let mut frontier: Vec<&str> = keep.iter().copied().collect();
    while let Some(id) = frontier.pop() {
        for dependency in by_id[id]["depends_on"].as_array().expect("depends_on") {
            let dependency = dependency.as_str().expect("a step id");
            if keep.insert(dependency) {
                frontier.push(dependency);
            }
        }
    }
    keep.into_iter()
        .map(|id| (id.to_owned(), by_id[id]["action"]["kind"].as_str().expect("a kind").to_owned()))
        .collect()
}

/// The requests of each method among `requests`, and `mutating`: the shape of the summary's
/// `api_requests`.
fn counts_by_method(requests: &[Recorded]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for request in requests {
        *counts.entry(request.method.clone()).or_default() += 1;
    }
    counts.insert("mutating".to_owned(), requests.iter().filter(|r| r.is_mutating()).count() as u64);
    counts
}

fn list(requests: &[Recorded]) -> String {
    requests.iter().map(|r| format!("  {r}\n")).collect()
}

#[test]
fn deploy_finds_helm_on_path_and_an_unchanged_redeploy_writes_nothing() {
    let server = FakeKube::start();
    let repo = KubeRepo::create(&server);
    let dirs = PathDirs::new(true);
    // Real helm's answers: no release yet (exit 1), then a successful install.
    dirs.answer("status", "", STATUS_NOT_FOUND, 1);
    dirs.answer(
        "upgrade",
        &format!(
            "Release \"dapr\" does not exist. Installing it now.\nNAME: dapr\nLAST DEPLOYED: Sat Jun  1 12:00:00 2024\nNAMESPACE: {RUN}-system\nSTATUS: deployed\nREVISION: 1\nTEST SUITE: None\n"
        ),
        "",
        0,
    );

    // What `--only dapr` keeps: no step needs PostgreSQL.
    let plan = repo.xtask(&["plan", "e2e", "--format", "json"], None);
    let plan: Value = serde_json::from_str(&plan.assert_code(0).stdout).expect("plan JSON");
    let expected = steps_of_dapr_and_dependencies(&plan);
    let release_step = format!("{RUN}-system/dapr/release");
    assert_eq!(expected.get(&release_step).map(String::as_str), Some("helm-release"), "{expected:#?}");
    for (id, kind) in &expected {
        assert!(
            !["database-preflight", "provision-database"].contains(&kind.as_str()),
            "--only dapr keeps a database step {id}"
        );
    }
    let release =
        plan["steps"].as_array().unwrap().iter().find(|s| s["id"] == release_step.as_str()).unwrap();
    let chart =
        repo.root().join(release["action"]["chart"]["reference"].as_str().expect("a chart reference"));
    assert!(chart.join("Chart.yaml").is_file(), "the dapr chart is local: {}", chart.display());

    // 1. The first deploy runs every step; helm is found on PATH.
    let first = repo.deploy(&dirs.path());
    let first_requests = server.requests();
    first.run.assert_code(0);
    let ran: BTreeSet<&String> = first.statuses.keys().collect();
    assert_eq!(
        ran,
        expected.keys().collect::<BTreeSet<_>>(),
        "the steps of --only dapr\n{}",
        first.streams()
    );
    let not_succeeded: Vec<_> = first.statuses.iter().filter(|(_, status)| *status != "succeeded").collect();
    assert!(not_succeeded.is_empty(), "steps that did not succeed: {not_succeeded:?}\n{}", first.streams());

    // helm ran through PATH: the shell got the script as `<dir on PATH>/helm`.
    let status = dirs.recorded("status", "cmdline").expect("helm status was run");
    let upgrade = dirs.recorded("upgrade", "cmdline").expect("helm upgrade was run");
    let script = dirs.helm_dir().join("helm");
    for cmdline in [&status, &upgrade] {
        let args: Vec<&str> = cmdline.lines().collect();
        assert_eq!(args.get(1).copied(), script.to_str(), "the program spawned: {args:?}");
    }
    let args: Vec<&str> = upgrade.lines().skip_while(|arg| *arg != "upgrade").collect();
    let namespace = format!("{RUN}-system");
    let kubeconfig = repo.kubeconfig.to_str().unwrap();
    assert_eq!(&args[..4], ["upgrade", "--install", "dapr", chart.to_str().unwrap()], "{args:?}");
    for pair in [
        ["--namespace", namespace.as_str()],
        ["--values", "-"],
        ["--kube-context", CONTEXT],
        ["--kubeconfig", kubeconfig],
    ] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} not in {args:?}");
    }
    assert!(args.contains(&"--atomic"), "{args:?}");
    let values_sha = dirs.recorded("upgrade", "stdin-sha256").expect("helm upgrade's stdin");
    assert_ne!(values_sha.trim(), EMPTY_SHA256, "the values reach helm on its stdin");
    let status_args: Vec<&str> = status.lines().skip_while(|arg| *arg != "status").collect();
    assert_eq!(&status_args[..4], ["status", "dapr", "--namespace", namespace.as_str()]);

    // The cluster saw the preflight, the namespace applied server-side, the readiness lists.
    let namespace_path = format!("/api/v1/namespaces/{namespace}");
    let seen = |method: &str, path: &str| first_requests.iter().any(|r| r.method == method && r.path == path);
    assert!(seen("GET", "/version"), "requests:\n{}", list(&first_requests));
    assert!(seen("GET", "/apis/storage.k8s.io/v1/storageclasses"), "requests:\n{}", list(&first_requests));
    let applies: Vec<&Recorded> = first_requests.iter().filter(|r| r.method == "PATCH").collect();
    assert!(!applies.is_empty(), "no server-side apply:\n{}", list(&first_requests));
    for apply in &applies {
        assert_eq!(apply.content_type.as_deref(), Some("application/apply-patch+yaml"), "{apply}");
        assert_eq!(apply.query("fieldManager"), Some("opus-deploy"), "{apply}");
        assert_eq!(apply.query("fieldValidation"), Some("Strict"), "unknown fields are refused: {apply}");
        assert!(apply.status == 200 || apply.status == 201, "{apply}");
    }
    assert!(applies.iter().any(|r| r.path == namespace_path), "requests:\n{}", list(&first_requests));
    let stored = server.object(&namespace_path).expect("the namespace was created");
    assert_eq!(stored["metadata"]["labels"]["opus.example/run"], RUN, "{stored:#}");
    assert!(
        seen("GET", &format!("/apis/apps/v1/namespaces/{namespace}/deployments")),
        "the ready step lists the release's Deployments:\n{}",
        list(&first_requests)
    );
    // The environment's inventory keeps who changed it (the only record of it in the cluster).
    let inventory_path = first_requests
        .iter()
        .find(|r| r.method == "PATCH" && r.path.ends_with("/secrets/opus-inventory"))
        .map(|r| r.path.clone())
        .expect("the inventory was written");
    let inventory = server.object(&inventory_path).expect("the inventory is stored");
    let text = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        inventory["data"]["inventory.json"].as_str().expect("inventory.json"),
    )
    .unwrap();
    let inventory: Value = serde_json::from_slice(&text).unwrap();
    let change = &inventory["last_change"];
    assert!(change["operator"].as_str().is_some_and(|o| o.contains('@')), "{inventory:#}");
    assert!(change["steps"]["create"].as_u64().is_some_and(|n| n > 0), "{inventory:#}");

    // The binary's own count of what its client sent is what the server received.
    let counted = first.api_requests();
    let count = |method: &str| counted.get(method).copied().unwrap_or(0);
    assert!(count("PATCH") > 0 && count("mutating") > 0, "summary: {}", first.summary);
    assert_eq!(counted, counts_by_method(&first_requests), "requests:\n{}", list(&first_requests));

    // What real helm stores for revision 1 (the fake helm only records its arguments): the
    // release Secret with helm's labels. Its data is never read by the refresh.
    let helm_secret = format!("/api/v1/namespaces/{namespace}/secrets/sh.helm.release.v1.dapr.v1");
    server.insert(
        &helm_secret,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "sh.helm.release.v1.dapr.v1",
                "namespace": namespace,
                "labels": {"owner": "helm", "name": "dapr", "status": "deployed", "version": "1"},
            },
            "type": "helm.sh/release.v1",
            "data": {"release": "SDRzSUFBQUFBQUFBLzZ0V0tzbFBUZ0VBQUFELy93RUFBUC8vL3dBQUFBQT0="},
        }),
    );

    // 2. Nothing changed: every step is unchanged, no helm, no write.
    dirs.clear_records();
    let second = repo.deploy(&dirs.path());
    let second_requests: Vec<Recorded> = server.requests().split_off(first_requests.len());
    second.run.assert_code(0);
    assert_eq!(second.statuses.keys().collect::<BTreeSet<_>>(), ran, "{}", second.streams());
    let changed: Vec<_> = second.statuses.iter().filter(|(_, status)| *status != "unchanged").collect();
    assert!(changed.is_empty(), "steps that ran again: {changed:?}\n{}", second.streams());
    assert_eq!(second.api_requests()["mutating"], 0, "summary: {}", second.summary);
    let writes: Vec<Recorded> = second_requests.iter().filter(|r| r.is_mutating()).cloned().collect();
    assert!(writes.is_empty(), "the unchanged deploy wrote:\n{}", list(&writes));
    assert_eq!(second.api_requests(), counts_by_method(&second_requests), "{}", list(&second_requests));
    for command in ["status", "upgrade"] {
        assert_eq!(dirs.recorded(command, "cmdline"), None, "helm {command} ran during the unchanged deploy");
    }
    // The refresh read metadata only: one list of Secrets in the release's namespace and one of
    // namespaces, no GET of the release Secret itself.
    let lists: Vec<&Recorded> = second_requests.iter().filter(|r| r.method == "GET").collect();
    let secrets_lists =
        lists.iter().filter(|r| r.path == format!("/api/v1/namespaces/{namespace}/secrets")).count();
    assert_eq!(secrets_lists, 1, "requests:\n{}", list(&second_requests));
    assert_eq!(
        lists.iter().filter(|r| r.path == "/api/v1/namespaces").count(),
        1,
        "{}",
        list(&second_requests)
    );
    assert!(
        !lists.iter().any(|r| r.path == helm_secret),
        "the release data was read:\n{}",
        list(&second_requests)
    );

    // 3. Behind the tool's back: `helm uninstall dapr` (its Secret goes) and a label of the
    // namespace changed by another field manager. `plan` names both, `deploy` repairs both.
    assert!(server.remove(&helm_secret));
    let mut edited = server.object(&namespace_path).expect("the namespace");
    edited["metadata"]["labels"]["opus.example/run"] = json!("edited");
    // As the API server records an update by `kubectl edit`: the changed field moves from our
    // manager's set to kubectl-edit's.
    let mut ours = edited["metadata"]["managedFields"][0].clone();
    assert_eq!(ours["manager"], "opus-deploy", "{edited:#}");
    let labels = ours["fieldsV1"]["f:metadata"]["f:labels"].as_object_mut().expect("our labels");
    assert!(labels.remove("f:opus.example/run").is_some(), "{edited:#}");
    edited["metadata"]["managedFields"] = json!([
        ours,
        {"manager": "kubectl-edit", "operation": "Update", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:labels": {"f:opus.example/run": {}}}}},
    ]);
    server.insert(&namespace_path, edited);
    let plan = repo.xtask(&["plan", "e2e", "--format", "json"], None);
    let plan: Value = serde_json::from_str(&plan.assert_code(0).stdout).expect("plan JSON");
    let drift: BTreeMap<String, String> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["change"] == "drifted")
        .map(|s| (s["id"].as_str().unwrap().to_owned(), s["drift"].as_str().unwrap().to_owned()))
        .collect();
    let namespace_step = format!("{namespace}/namespace/ensure");
    let ready_step = format!("{namespace}/dapr/ready");
    assert_eq!(
        drift,
        BTreeMap::from([
            (release_step.clone(), format!("helm release {namespace}/dapr: release not found")),
            (
                namespace_step.clone(),
                format!(
                    "Namespace {namespace}: `metadata.labels.opus.example/run` was changed by kubectl-edit"
                ),
            ),
        ]),
        "{plan:#}"
    );
    dirs.clear_records();
    let third = repo.deploy(&dirs.path());
    third.run.assert_code(0);
    let ran_again: BTreeSet<&str> =
        third.statuses.iter().filter(|(_, s)| *s == "succeeded").map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ran_again,
        BTreeSet::from([release_step.as_str(), ready_step.as_str(), namespace_step.as_str()]),
        "{}",
        third.streams()
    );
    assert!(dirs.recorded("upgrade", "cmdline").is_some(), "helm upgrade repaired the release");
    let repaired = server.object(&namespace_path).expect("the namespace");
    assert_eq!(repaired["metadata"]["labels"]["opus.example/run"], RUN, "{repaired:#}");
}

#[test]
fn deploy_without_helm_on_path_names_path_and_the_cause() {
    let server = FakeKube::start();
    let repo = KubeRepo::create(&server);
    let dirs = PathDirs::new(false);
    let deployed = repo.deploy(&dirs.path());
    deployed.run.assert_code(1);

    let release_step = format!("{RUN}-system/dapr/release");
    assert_eq!(
        deployed.statuses.get(&release_step).map(String::as_str),
        Some("failed"),
        "{}",
        deployed.streams()
    );
    let message = deployed.messages.get(&release_step).expect("the failed step's message");
    let output = format!("{}\n{}", deployed.run.stdout, deployed.run.stderr);
    for expected in [
        "could not run helm (`helm` on PATH) for status of release `dapr`",
        "no helm on PATH (install helm v3, run scripts/install-tools.sh, or set OPUS_HELM to its path)",
        "caused by: No such file or directory (os error 2)",
    ] {
        assert!(output.contains(expected), "the output lacks `{expected}`:\n{}", deployed.streams());
    }
    assert!(message.contains("no helm on PATH"), "the step's message: {message}");
    assert!(!output.contains("./helm"), "the output mentions ./helm:\n{}", deployed.streams());
    assert!(!output.contains("check OPUS_HELM"), "helm was taken for a file:\n{}", deployed.streams());
    // The steps before the release ran against the cluster; the one after it did not.
    assert!(server.requests().iter().any(|r| r.method == "PATCH"), "{}", list(&server.requests()));
    let after: Vec<_> = deployed
        .statuses
        .iter()
        .filter(|(id, _)| id.starts_with(&format!("{RUN}-system/dapr/")) && **id != release_step)
        .collect();
    assert!(after.iter().all(|(_, status)| *status == "skipped"), "{after:?}\n{}", deployed.streams());
}

/// Not a test: prints the no-op redeploy against the fake API server on localhost (the kube
/// mock of the benchmark), with and without refresh, beside the API requests by verb the
/// server received. Run with `cargo test --release -p xtask --test kube_cli -- --ignored
/// --nocapture`; `scripts/bench.sh` runs it.
#[test]
#[ignore = "a benchmark: prints figures, asserts only that the redeploy changed nothing"]
fn bench_noop_redeploy_against_the_fake_api_server() {
    let server = FakeKube::start();
    let repo = KubeRepo::create(&server);
    let dirs = PathDirs::new(true);
    dirs.answer("status", "", STATUS_NOT_FOUND, 1);
    dirs.answer(
        "upgrade",
        &format!("NAME: dapr\nNAMESPACE: {RUN}-system\nSTATUS: deployed\nREVISION: 1\n"),
        "",
        0,
    );
    repo.deploy(&dirs.path()).run.assert_code(0);
    let namespace = format!("{RUN}-system");
    server.insert(
        &format!("/api/v1/namespaces/{namespace}/secrets/sh.helm.release.v1.dapr.v1"),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "sh.helm.release.v1.dapr.v1", "namespace": namespace,
                            "labels": {"owner": "helm", "name": "dapr", "status": "deployed", "version": "1"}},
               "type": "helm.sh/release.v1", "data": {"release": "eA=="}}),
    );
    let runs = 7;
    for (label, extra) in [("with refresh", None), ("--no-refresh", Some("--no-refresh"))] {
        let mut times = Vec::new();
        let mut requests = Vec::new();
        for _ in 0..runs {
            dirs.clear_records();
            let before = server.requests().len();
            let mut args = vec!["deploy", "e2e", "--only", "dapr", "--yes", "--output", "json"];
            args.extend(extra);
            let started = std::time::Instant::now();
            let run = repo.xtask(&args, Some(RunOptions::default().env("PATH", dirs.path())));
            times.push(started.elapsed());
            let deployed = Deployed::parse(run);
            deployed.run.assert_code(0);
            assert!(deployed.statuses.values().all(|s| s == "unchanged"), "{}", deployed.streams());
            assert_eq!(dirs.recorded("upgrade", "cmdline"), None, "helm ran");
            requests = server.requests().split_off(before);
        }
        times.sort();
        let by_verb = counts_by_method(&requests);
        let lists: BTreeMap<&str, usize> =
            requests.iter().filter(|r| r.method == "GET").fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.path.as_str()).or_default() += 1;
                m
            });
        println!(
            "no-op redeploy (e2e --only dapr, fake API server on localhost) {label}: median {:.1} ms of {runs}; requests {by_verb:?}; 0 helm processes; GETs by path {lists:?}",
            times[runs / 2].as_secs_f64() * 1000.0
        );
    }
}
