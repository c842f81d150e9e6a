//! Issue #16: the `keys` commands of a `flux` target that names its cluster (`context`), through
//! the real binary against the fake API server (tests/util/fake_kube.rs). The environment's
//! key store is then Flux's decryption Secret (`flux-system/sops-age`): `keys new` and `keys
//! restore` put the key there as `current.agekey` (Flux imports every `.agekey` entry);
//! `rotate-keys` leaves the previous key beside the new one (`previous.agekey`), so Flux decrypts
//! both the committed tree and the re-encrypted one; and `keys retire` removes it only once no
//! file is encrypted for it, the tree is committed, and every Kustomization of the tree is
//! Ready at a revision containing the tree's last commit.

mod util;

#[path = "util/fake_kube.rs"]
#[allow(dead_code)]
mod fake_kube;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use fake_kube::FakeKube;
use serde_json::{Value, json};
use util::{Repo, Run, RunOptions};

const ENV: &str = "flux-example";
const TREE: &str = "clusters/flux-example";
const CONTEXT: &str = "flux-cluster";
const SECRET: &str = "/api/v1/namespaces/flux-system/secrets/sops-age";
const DEMO_KEY: &str = "environments/flux-example/demo.agekey";

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// A copy of the shipped environments in a git repository, with `flux-example` pointed at the
/// fake cluster (and a committed tree folder instead of the git-ignored `bundle/`), its key
/// store file dropped, so the key lives in the decryption Secret only.
struct FluxRepo {
    repo: Repo,
    /// Holds the operator's key file and the kubeconfig.
    home: tempfile::TempDir,
}

impl FluxRepo {
    fn create(server: &FakeKube) -> FluxRepo {
        let repo = Repo::shipped();
        let home = tempfile::tempdir().unwrap();
        let kubeconfig = home.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig, CONTEXT);
        let env_toml = format!("environments/{ENV}/env.toml");
        repo.replace(&env_toml, "path = \"bundle/flux-example\"", &format!("path = \"{TREE}\""));
        repo.replace(
            &env_toml,
            "key_store = \"environments/flux-example/demo.agekey\"",
            &format!("context = \"{CONTEXT}\"\nkubeconfig = \"{}\"", kubeconfig.display()),
        );
        std::fs::write(repo.root().join(".gitignore"), "/environments/*/.opus\n").unwrap();
        git(repo.root(), &["init", "-q", "-b", "main"]);
        git(repo.root(), &["add", "."]);
        git(repo.root(), &["commit", "-qm", "start"]);
        FluxRepo { repo, home }
    }

    fn key_file(&self) -> PathBuf {
        self.home.path().join("keys.txt")
    }

    fn xtask(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut options = RunOptions::default().env("SOPS_AGE_KEY_FILE", self.key_file().to_str().unwrap());
        if let Some(stdin) = stdin {
            options = options.stdin(stdin);
        }
        self.repo.xtask_with(args, &options)
    }

    fn commit(&self, message: &str) -> String {
        git(self.repo.root(), &["add", "-A"]);
        git(self.repo.root(), &["commit", "-qm", message]);
        git(self.repo.root(), &["rev-parse", "HEAD"]).trim().to_owned()
    }
}

/// The decoded entries of the decryption Secret.
fn secret_data(server: &FakeKube) -> serde_json::Map<String, Value> {
    let secret = server.object(SECRET).expect("the decryption Secret exists");
    let data = secret["data"].as_object().expect("the Secret has data");
    data.iter()
        .map(|(key, value)| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap()).unwrap();
            (key.clone(), Value::String(String::from_utf8(bytes).unwrap()))
        })
        .collect()
}

/// The `AGE-SECRET-KEY-1...` line of a key file.
fn private_key_in(text: &str) -> String {
    text.lines().find(|l| l.starts_with("AGE-SECRET-KEY-1")).expect("a private key").to_owned()
}

fn recipients_in(text: &str) -> Vec<String> {
    let table: toml::Table = toml::from_str(text).unwrap();
    table["secrets"]["age_recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

/// A Kustomization as Flux leaves it after a reconciliation.
fn kustomization(name: &str, ready: &str, revision: &str) -> Value {
    json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": "flux-system", "generation": 1},
        "spec": {"interval": "10m", "path": "./x", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}},
        "status": {
            "observedGeneration": 1,
            "lastAppliedRevision": revision,
            "lastAttemptedRevision": revision,
            "conditions": [{
                "type": "Ready", "status": ready, "reason": if ready == "True" { "ReconciliationSucceeded" } else { "HealthCheckFailed" },
                "message": format!("Applied revision: {revision}"),
                "lastTransitionTime": "2026-12-04T05:00:00Z",
            }],
        },
    })
}

/// The names of the tree's Flux Kustomizations, from the files the deploy wrote.
fn tree_kustomizations(root: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut files = vec![root.join(TREE).join("flux-system/entry.yaml")];
    for entry in std::fs::read_dir(root.join(TREE).join("flux-system/kustomizations")).unwrap() {
        files.push(entry.unwrap().path());
    }
    for file in files {
        let value: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(value["apiVersion"], "kustomize.toolkit.fluxcd.io/v1", "{}", file.display());
        names.push(value["metadata"]["name"].as_str().unwrap().to_owned());
    }
    names.sort();
    names
}

#[test]
fn keys_new_puts_the_first_key_into_the_decryption_secret() {
    let server = FakeKube::start();
    let flux = FluxRepo::create(&server);
    // A new environment: the flux-example settings without recipients or secrets files.
    let text = flux.repo.read(&format!("environments/{ENV}/env.toml"));
    let recipients = recipients_in(&text);
    let fresh = text.replace(&format!("\"{}\"", recipients[0]), "");
    flux.repo.write("environments/fresh/env.toml", &fresh);

    let run = flux.xtask(&["keys", "new", "fresh"], None);
    run.assert_code(0);
    assert!(run.stderr.contains("Stored"), "{}", run.stderr);
    assert!(run.stderr.contains("secret flux-system/sops-age"), "{}", run.stderr);
    let data = secret_data(&server);
    let local = std::fs::read_to_string(flux.key_file()).unwrap();
    assert_eq!(data["current.agekey"].as_str().unwrap(), private_key_in(&local));
    let listed = recipients_in(&flux.repo.read("environments/fresh/env.toml"));
    assert_eq!(data["current.recipient"].as_str().unwrap(), listed[0]);
    assert!(data.get("previous.agekey").is_none());
    assert!(!run.stderr.contains("AGE-SECRET-KEY"), "{}", run.stderr);

    // A second environment on the same Secret finds it taken, and nothing changes.
    let before = server.object(SECRET).unwrap();
    flux.repo.write("environments/other/env.toml", &fresh);
    let run = flux.xtask(&["keys", "new", "other"], None);
    run.assert_code(2);
    assert!(run.stderr.contains("already holds a key"), "{}", run.stderr);
    assert_eq!(server.object(SECRET).unwrap(), before);
    assert_eq!(recipients_in(&flux.repo.read("environments/other/env.toml")), Vec::<String>::new());
}

#[test]
fn a_rotation_keeps_both_keys_for_flux_until_the_reencrypted_tree_is_applied() {
    let server = FakeKube::start();
    let flux = FluxRepo::create(&server);
    let root = flux.repo.root().to_owned();
    let env_toml = format!("environments/{ENV}/env.toml");
    let old_recipient = recipients_in(&flux.repo.read(&env_toml))[0].clone();
    let old_key = private_key_in(&flux.repo.read(DEMO_KEY));

    // The key goes into the cluster from its backup.
    let backup = json!({"environment": ENV, "cluster": CONTEXT, "public_key": old_recipient, "private_key": old_key, "created": null});
    flux.xtask(&["keys", "restore", ENV], Some(&backup.to_string())).assert_code(0);
    assert_eq!(secret_data(&server)["current.agekey"].as_str().unwrap(), old_key);

    flux.xtask(&["deploy", ENV, "--output", "plain"], None).assert_code(0);
    let deployed = flux.commit("the tree");

    let run = flux.xtask(&["rotate-keys", ENV], None);
    run.assert_code(0);
    assert!(run.stderr.contains("Kept"), "{}", run.stderr);
    assert!(run.stderr.contains("keys retire flux-example"), "{}", run.stderr);
    let data = secret_data(&server);
    let new_recipient = recipients_in(&flux.repo.read(&env_toml))[0].clone();
    assert_ne!(new_recipient, old_recipient);
    assert_eq!(data["current.recipient"].as_str().unwrap(), new_recipient);
    assert_eq!(data["previous.agekey"].as_str().unwrap(), old_key, "Flux still needs the old key");
    flux.commit("rotated");

    // Another rotation waits for the retirement.
    let run = flux.xtask(&["rotate-keys", ENV], None);
    run.assert_code(2);
    assert!(run.stderr.contains("cargo xtask keys retire flux-example"), "{}", run.stderr);

    // The committed tree is still encrypted for the old key.
    let run = flux.xtask(&["keys", "retire", ENV], None);
    run.assert_code(2);
    assert!(run.stderr.contains("still encrypted for it"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("{TREE}/")), "{}", run.stderr);

    flux.xtask(&["deploy", ENV, "--output", "plain"], None).assert_code(0);
    let run = flux.xtask(&["keys", "retire", ENV], None);
    run.assert_code(2);
    assert!(!run.stderr.contains("still encrypted for it"), "{}", run.stderr);
    assert!(run.stderr.contains("uncommitted changes"), "{}", run.stderr);
    let reencrypted = flux.commit("the re-encrypted tree");

    // Flux has not reconciled (no Kustomization in the cluster), then only the old commit.
    let names = tree_kustomizations(&root);
    assert!(names.len() >= 3, "{names:?}");
    let run = flux.xtask(&["keys", "retire", ENV], None);
    run.assert_code(2);
    assert!(run.stderr.contains("not in the cluster"), "{}", run.stderr);
    let path = |name: &str| {
        format!("/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/{name}")
    };
    for name in &names {
        server.insert(&path(name), kustomization(name, "True", &format!("main@sha1:{deployed}")));
    }
    let run = flux.xtask(&["keys", "retire", ENV], None);
    run.assert_code(2);
    assert!(run.stderr.contains(&format!("which does not contain {}", &reencrypted[..12])), "{}", run.stderr);
    for name in &names {
        server.insert(&path(name), kustomization(name, "True", &format!("main@sha1:{reencrypted}")));
    }
    server.insert(&path(&names[0]), kustomization(&names[0], "False", &format!("main@sha1:{reencrypted}")));
    let run = flux.xtask(&["keys", "retire", ENV], None);
    run.assert_code(2);
    assert!(
        run.stderr.contains(&format!("Kustomization flux-system/{} is not Ready", names[0])),
        "{}",
        run.stderr
    );
    assert_eq!(secret_data(&server)["previous.agekey"].as_str().unwrap(), old_key, "refusals change nothing");

    server.insert(&path(&names[0]), kustomization(&names[0], "True", &format!("main@sha1:{reencrypted}")));
    let run = flux.xtask(&["keys", "retire", ENV], None);
    run.assert_code(0);
    assert!(run.stderr.contains("Retired"), "{}", run.stderr);
    assert!(run.stderr.contains(&old_recipient), "{}", run.stderr);
    let data = secret_data(&server);
    assert!(data.get("previous.agekey").is_none(), "{data:?}");
    assert!(data.get("previous.recipient").is_none());
    assert_eq!(data["current.recipient"].as_str().unwrap(), new_recipient);
    assert!(!run.stderr.contains("AGE-SECRET-KEY"), "{}", run.stderr);

    // Nothing left to retire; the next rotation may start.
    let run = flux.xtask(&["keys", "retire", ENV], None);
    run.assert_code(0);
    assert!(run.stderr.contains("keeps no previous key"), "{}", run.stderr);
}

#[test]
fn retire_is_only_for_a_flux_decryption_secret() {
    let repo = Repo::shipped();
    let run = repo.xtask(&["keys", "retire", "example"]);
    run.assert_code(2);
    assert!(run.stderr.contains("has no such Secret"), "{}", run.stderr);
}
