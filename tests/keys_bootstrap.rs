//! `cargo xtask keys new` (an environment's first key) and `keys restore` (from what `keys get`
//! printed), end to end on copies of the shipped environments.

mod keys_support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use keys_support::{DEMO_KEY, KeysRepo};
use platform::secrets::decrypt_file;

/// A new environment `fresh`: staging's env.toml without its `[secrets]` table, no secrets.
fn fresh_environment(repo: &KeysRepo) -> std::path::PathBuf {
    let root = repo.root();
    let dir = root.join("environments/fresh");
    std::fs::create_dir_all(&dir).unwrap();
    let example = std::fs::read_to_string(root.join("environments/example/env.toml")).unwrap();
    let without: String = example
        .split("\n[")
        .filter(|table| !table.starts_with("secrets]"))
        .collect::<Vec<_>>()
        .join("\n[")
        .replace(
            "key_store = \"environments/example/demo.agekey\"",
            "key_store = \"environments/fresh/keys.agekey\"",
        )
        .replace("bundle/example", "bundle/fresh");
    assert!(!without.contains("age_recipients"));
    std::fs::write(dir.join("env.toml"), &without).unwrap();
    dir
}

#[test]
fn keys_new_creates_the_first_key_and_lists_it_in_env_toml_only() {
    let repo = KeysRepo::new();
    let dir = fresh_environment(&repo);
    let before = std::fs::read_to_string(dir.join("env.toml")).unwrap();
    let key_file = repo.home().join("keys.txt");
    let vars = [("SOPS_AGE_KEY_FILE", key_file.to_str().unwrap())];
    let run = repo.xtask(&vars, &["keys", "new", "fresh"]);
    run.assert_code(Some(0)).assert_no_private_key(false);

    let ids = repo.identities(&key_file);
    assert_eq!(ids.len(), 1);
    let recipient = ids.recipients()[0].clone();
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let store = repo.identities(&dir.join("keys.agekey"));
    assert_eq!(
        store.recipients(),
        std::slice::from_ref(&recipient),
        "the directory target's key store has it"
    );
    let after = std::fs::read_to_string(dir.join("env.toml")).unwrap();
    assert_eq!(after, format!("{before}\n[secrets]\nage_recipients = [\"{recipient}\"]\n"));

    // The next steps the note names work: a secrets file for the new key, then check's
    // secrets rules for the environment file pass.
    let secrets = dir.join("secrets.enc.yaml");
    let new = repo.xtask(&vars, &["secrets", "new", secrets.to_str().unwrap()]);
    new.assert_code(Some(0));
    decrypt_file(&dir.join("secrets.enc.yaml"), &ids).unwrap();

    // A second `keys new` refuses and says what to do instead.
    let again = repo.xtask(&vars, &["keys", "new", "fresh"]);
    again.assert_code(Some(2));
    assert!(
        again.stderr.contains("already has a key") && again.stderr.contains("rotate-keys fresh"),
        "{}",
        again.stderr
    );
    assert_eq!(repo.identities(&key_file).len(), 1, "no second key");
}

fn xtask_with_stdin(
    repo: &KeysRepo,
    vars: &[(&str, &str)],
    args: &[&str],
    stdin: &[u8],
) -> keys_support::Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .arg("--root")
        .arg(repo.root())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", repo.home())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in vars {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    keys_support::Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn keys_restore_puts_a_backup_back_and_refuses_a_key_that_is_not_the_environments() {
    let repo = KeysRepo::new();
    let root = repo.root();
    let key_file = repo.home().join("keys.txt");
    let vars = [("SOPS_AGE_KEY_FILE", key_file.to_str().unwrap())];
    let backup = repo.xtask(&vars, &["keys", "get", "example"]);
    backup.assert_code(Some(0));
    assert!(backup.stdout.contains("AGE-SECRET-KEY-"), "the backup holds the key");

    // The key store is lost: restore fills it and the local key file again.
    let store = root.join(DEMO_KEY);
    let demo_text = std::fs::read_to_string(&store).unwrap();
    std::fs::remove_file(&store).unwrap();
    let run = xtask_with_stdin(&repo, &vars, &["keys", "restore", "example"], backup.stdout.as_bytes());
    run.assert_code(Some(0)).assert_no_private_key(false);
    assert!(run.stderr.contains("Restored"), "{}", run.stderr);
    assert_eq!(repo.identities(&store).recipients(), repo.identities(&key_file).recipients());
    let secrets = root.join("environments/example/secrets.enc.yaml");
    decrypt_file(&secrets, &repo.identities(&key_file)).unwrap();
    // Twice is harmless.
    xtask_with_stdin(&repo, &vars, &["keys", "restore", "example"], backup.stdout.as_bytes())
        .assert_code(Some(0));
    assert_eq!(repo.identities(&key_file).len(), 1);

    // Another key (valid, but not the environment's) is refused, and nothing is written.
    let other = platform::secrets::generate_identity();
    let forged = serde_json::json!({
        "environment": "example",
        "cluster": "directory",
        "public_key": other.recipient.to_string(),
        "private_key": other.secret_key.expose(),
    })
    .to_string();
    let refused = xtask_with_stdin(&repo, &vars, &["keys", "restore", "example"], forged.as_bytes());
    refused.assert_code(Some(2)).assert_no_private_key(false);
    assert!(refused.stderr.contains("is not in `age_recipients`"), "{}", refused.stderr);
    assert_eq!(repo.identities(&key_file).len(), 1, "the refused key was not added");
    // A backup of another environment, and text that is no backup at all.
    let renamed = backup.stdout.replace("\"environment\": \"example\"", "\"environment\": \"staging\"");
    let refused = xtask_with_stdin(&repo, &vars, &["keys", "restore", "example"], renamed.as_bytes());
    assert!(refused.stderr.contains("backup of environment `staging`"), "{}", refused.stderr);
    let garbage = xtask_with_stdin(&repo, &vars, &["keys", "restore", "example"], b"AGE-SECRET-KEY-1NOTJSON");
    garbage.assert_code(Some(2)).assert_no_private_key(false);
    drop(demo_text);
}
