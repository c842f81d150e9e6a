//! `cargo xtask secrets` end to end: `set` without a value reads a piped value and refuses an
//! empty one, and the plaintext a SIGKILLed `edit` left is removed by the next command. Values
//! are canaries that must never reach stdout or stderr.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use platform::secrets::{Identities, decrypt_file};
use platform::sensitive::SecretString;
use util::{Repo, Run, RunOptions};

const KEY_FILE: &str = "environments/example/demo.agekey";
const SECRETS: &str = "environments/example/opus/oob-consent/secrets.enc.yaml";
const CANARY: &str = "canary-cli-set-7a2c";

fn key_options(repo: &Repo) -> RunOptions {
    RunOptions::default().env("SOPS_AGE_KEY_FILE", repo.root().join(KEY_FILE).display().to_string())
}

fn secrets_file(repo: &Repo) -> String {
    repo.root().join(SECRETS).display().to_string()
}

fn password(repo: &Repo) -> String {
    let key = std::fs::read_to_string(repo.root().join(KEY_FILE)).unwrap();
    let identities = Identities::from_key_text("demo", &SecretString::new(key)).unwrap();
    let tree = decrypt_file(&repo.root().join(SECRETS), &identities).unwrap();
    tree.get("db.password").unwrap().text().expose().to_owned()
}

fn assert_no_canary(run: &Run) {
    assert!(!run.stdout.contains(CANARY), "the value reached stdout:\n{}", run.stdout);
    assert!(!run.stderr.contains(CANARY), "the value reached stderr:\n{}", run.stderr);
}

#[test]
fn set_without_a_value_reads_it_from_stdin_when_that_is_not_a_terminal() {
    let repo = Repo::shipped();
    let file = secrets_file(&repo);
    let run = repo.xtask_with(
        &["secrets", "set", &file, "db.password"],
        &key_options(&repo).stdin(format!("{CANARY}\n")),
    );
    run.assert_code(0).assert_stderr_contains("Updated");
    assert_no_canary(&run);
    assert_eq!(password(&repo), CANARY);
    // `-` keeps working.
    let other = format!("{CANARY}-2");
    let run = repo
        .xtask_with(&["secrets", "set", &file, "db.password", "-"], &key_options(&repo).stdin(other.clone()));
    run.assert_code(0);
    assert_no_canary(&run);
    assert_eq!(password(&repo), other);
}

#[test]
fn set_refuses_an_empty_value_in_every_mode() {
    let repo = Repo::shipped();
    let file = secrets_file(&repo);
    let before = repo.read(SECRETS);
    let cases: [(&[&str], Option<&str>); 4] = [
        (&["secrets", "set", &file, "db.password"], Some("")),
        (&["secrets", "set", &file, "db.password"], Some("\n")),
        (&["secrets", "set", &file, "db.password", "-"], Some("")),
        // No stdin at all (closed): not a terminal, read as empty.
        (&["secrets", "set", &file, "db.password"], None),
    ];
    for (args, stdin) in cases {
        let options = match stdin {
            Some(text) => key_options(&repo).stdin(text),
            None => key_options(&repo),
        };
        let run = repo.xtask_with(args, &options);
        run.assert_code(2)
            .assert_stderr_contains("the value for `db.password` is empty; nothing was changed");
        assert_eq!(repo.read(SECRETS), before, "{args:?} {stdin:?}: the file is unchanged");
    }
}

#[test]
fn the_plaintext_of_a_sigkilled_edit_is_removed_by_the_next_command() {
    let repo = Repo::shipped();
    let file = secrets_file(&repo);
    let scratch = tempfile::tempdir().unwrap();
    let runtime_dir = scratch.path().join("runtime");
    std::fs::create_dir(&runtime_dir).unwrap();
    std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The editor leaves a swap file beside the plaintext, as vim does, notes the pid of
    // `xtask` and kills it.
    let pid_file = scratch.path().join("pid");
    let editor = scratch.path().join("killer.sh");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\ncp \"$1\" \"$(dirname \"$1\")/.secrets.yaml.swp\"\necho $PPID > {}\nkill -9 $PPID\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let options = key_options(&repo).env("XDG_RUNTIME_DIR", runtime_dir.display().to_string());
    let run = repo.xtask_with(
        &["secrets", "edit", &file],
        &options.clone().env("EDITOR", editor.display().to_string()),
    );
    assert_eq!(run.code, None, "xtask was killed\n{}", run.stderr);
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    let left = entries(&runtime_dir);
    assert_eq!(left.len(), 2, "a lock and a plaintext directory: {left:?}");
    let directory = left.iter().find(|path| path.is_dir()).expect("a plaintext directory").clone();
    assert!(directory.join("secrets.yaml").exists() && directory.join(".secrets.yaml.swp").exists());

    let run = repo.xtask_with(&["secrets", "show", &file], &options);
    run.assert_code(0).assert_stderr_contains(&format!(
        "notice: removed the plaintext a killed edit (pid {pid}) left in {}",
        directory.display()
    ));
    assert!(entries(&runtime_dir).is_empty(), "left behind: {:?}", entries(&runtime_dir));
}

fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()).collect()
}
