//! `cargo xtask keys save|get` on a copy of the `example` environment, whose key store is the
//! local file `demo.agekey`: the local key file is created 0600, other keys in it are left
//! byte for byte, a key is never added twice; the backup is JSON whose private key the `age`
//! CLI accepts as an identity, and it is never printed to a terminal without `--force`.

mod keys_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use keys_support::{DEMO_KEY, KeysRepo};
use platform::secrets::generate_identity;

#[test]
fn save_creates_the_key_file_0600_and_is_idempotent() {
    let repo = KeysRepo::new();
    let key_file = repo.home().join("sops/nested/keys.txt");
    let vars = [("SOPS_AGE_KEY_FILE", key_file.to_str().unwrap())];
    repo.xtask(&vars, &["keys", "save", "example"]).assert_code(Some(0)).assert_no_private_key(false);
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let demo = repo.identities(&repo.root().join(DEMO_KEY));
    assert_eq!(repo.identities(&key_file).recipients(), demo.recipients());
    let after_first = std::fs::read_to_string(&key_file).unwrap();

    let run = repo.xtask(&vars, &["keys", "save", "example"]);
    run.assert_code(Some(0)).assert_no_private_key(false);
    assert!(run.stderr.contains("Unchanged"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), after_first, "the key was added twice");
}

#[test]
fn save_appends_to_the_default_key_file_without_touching_other_keys() {
    let repo = KeysRepo::new();
    let key_file = repo.home().join(".config/sops/age/keys.txt");
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    let other = generate_identity();
    // No final newline, a comment, odd spacing: all must stay byte for byte.
    let existing = format!("# my own key\n{}", other.secret_key.expose());
    std::fs::write(&key_file, &existing).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    repo.xtask(&[], &["keys", "save", "example"]).assert_code(Some(0)).assert_no_private_key(false);
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert!(text.starts_with(&existing), "the existing keys were rewritten:\n{text}");
    let identities = repo.identities(&key_file);
    let demo = repo.identities(&repo.root().join(DEMO_KEY));
    assert_eq!(identities.recipients(), [other.recipient.to_string(), demo.recipients()[0].clone()]);
}

#[test]
fn get_prints_a_json_backup_whose_key_the_age_cli_accepts() {
    let repo = KeysRepo::new();
    let run = repo.xtask(&[], &["keys", "get", "example"]);
    run.assert_code(Some(0)).assert_no_private_key(true);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    let backup: serde_json::Value = serde_json::from_str(&run.stdout).expect("the backup is JSON");
    let demo = repo.identities(&repo.root().join(DEMO_KEY));
    assert_eq!(backup["environment"], "example");
    assert_eq!(backup["public_key"], demo.recipients()[0].as_str());
    assert!(backup["cluster"].as_str().unwrap().contains("demo.agekey"));
    assert!(backup["created"].as_str().unwrap().starts_with("20"), "{backup}");
    let private_key = backup["private_key"].as_str().unwrap();
    assert_eq!(
        Some(private_key.to_owned()),
        demo.secret_key_for(&demo.recipients()[0]).map(|k| k.expose().to_owned())
    );

    // The real `age` CLI decrypts with it.
    let work = tempfile::tempdir().unwrap();
    let identity = work.path().join("identity.txt");
    std::fs::write(&identity, format!("{private_key}\n")).unwrap();
    let plain = work.path().join("plain.txt");
    std::fs::write(&plain, "restored from backup\n").unwrap();
    let encrypted = work.path().join("plain.age");
    let status = Command::new("age")
        .args(["-r", backup["public_key"].as_str().unwrap(), "-o"])
        .arg(&encrypted)
        .arg(&plain)
        .status()
        .expect("the age CLI is installed");
    assert!(status.success());
    let output = Command::new("age").arg("-d").arg("-i").arg(&identity).arg(&encrypted).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "restored from backup\n");
}

/// Runs the command under `script`, which gives it a pseudo-terminal as stdout.
fn on_a_terminal(repo: &KeysRepo, args: &str) -> String {
    let command = format!("{} --root {} {args}", env!("CARGO_BIN_EXE_xtask"), repo.root().display());
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("HOME", repo.home())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the script command is installed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn get_refuses_a_terminal_without_force() {
    let repo = KeysRepo::new();
    let shown = on_a_terminal(&repo, "keys get example");
    assert!(shown.contains("refusing to print the private key"), "{shown}");
    assert!(!shown.contains("AGE-SECRET-KEY-"), "{shown}");
    let forced = on_a_terminal(&repo, "keys get example --force");
    assert!(forced.contains("AGE-SECRET-KEY-"), "{forced}");
}
