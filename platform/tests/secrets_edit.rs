//! `edit` with fake editors (shell scripts), key files, and interop with the `age` CLI.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::cell::RefCell;

use platform::secrets::{
    AppendOutcome, EditOptions, EditOutcome, Identities, IdentitySources, KilledEdit, SecretTree,
    SecretsError, append_identity_to_key_file, create_file, decrypt_file, edit_file, edit_lock_path,
    generate_identity, load_identities, parse_recipients, recover_killed_edit, set_value,
};
use platform::sensitive::SecretString;

const CANARY: &str = "canary-edit-4b7e";

struct Setup {
    dir: tempfile::TempDir,
    path: PathBuf,
    identities: Identities,
    temp_parent: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let generated = generate_identity();
    let identities = Identities::from_key_text("test", &generated.key_file_entry()).unwrap();
    let path = dir.path().join("secrets.enc.yaml");
    let tree =
        SecretTree::from_yaml(Path::new("t"), &format!("db:\n  password: {CANARY}\n  user: app\n")).unwrap();
    let recipients = parse_recipients(&[generated.recipient.to_string()]).unwrap();
    create_file(&path, &recipients, &tree).unwrap();
    let temp_parent = dir.path().join("tmp");
    std::fs::create_dir(&temp_parent).unwrap();
    Setup { dir, path, identities, temp_parent }
}

/// Writes an executable editor script; `$1` is the file to edit.
fn editor(setup: &Setup, name: &str, body: &str) -> String {
    let script = setup.dir.path().join(name);
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

fn run_edit(setup: &Setup, editor: String) -> Result<EditOutcome, SecretsError> {
    edit_file(
        &setup.path,
        &setup.identities,
        &EditOptions { editor, temp_parent: Some(setup.temp_parent.clone()), ..EditOptions::default() },
    )
}

fn assert_temp_parent_empty(setup: &Setup) {
    let left: Vec<_> =
        std::fs::read_dir(&setup.temp_parent).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[test]
fn unchanged_content_leaves_the_file_byte_identical() {
    let setup = setup();
    let before = std::fs::read(&setup.path).unwrap();
    let outcome = run_edit(&setup, editor(&setup, "noop.sh", "exit 0")).unwrap();
    assert_eq!(outcome, EditOutcome::Unchanged);
    assert_eq!(std::fs::read(&setup.path).unwrap(), before);
    assert_temp_parent_empty(&setup);
}

#[test]
fn an_edit_is_re_encrypted_and_the_temp_file_is_gone() {
    let setup = setup();
    let seen = setup.dir.path().join("seen-mode");
    let script = editor(
        &setup,
        "edit.sh",
        &format!(
            "stat -c %a \"$1\" > {seen}\nstat -c %a \"$(dirname \"$1\")\" >> {seen}\n\
             sed -i 's/user: app/user: admin/' \"$1\"",
            seen = seen.display()
        ),
    );
    assert_eq!(run_edit(&setup, script).unwrap(), EditOutcome::Updated);
    let tree = decrypt_file(&setup.path, &setup.identities).unwrap();
    assert_eq!(tree.get("db.user").unwrap().text().expose(), "admin");
    assert_eq!(tree.get("db.password").unwrap().text().expose(), CANARY);
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "600\n700\n");
    assert!(!std::fs::read_to_string(&setup.path).unwrap().contains(CANARY));
    assert_temp_parent_empty(&setup);
}

#[test]
fn invalid_yaml_keeps_the_original() {
    let setup = setup();
    let before = std::fs::read(&setup.path).unwrap();
    let script = editor(&setup, "bad.sh", "printf 'db: [\\n  oops: {\\n' > \"$1\"");
    let error = run_edit(&setup, script).unwrap_err();
    assert!(matches!(error, SecretsError::EditedYamlInvalid { .. }), "{error}");
    assert!(error.to_string().contains("secrets.enc.yaml"));
    assert_eq!(std::fs::read(&setup.path).unwrap(), before);
    assert_temp_parent_empty(&setup);
}

#[test]
fn invalid_yaml_reopens_the_editor_on_the_same_text_until_it_is_valid() {
    let setup = setup();
    let runs = setup.dir.path().join("runs");
    let seen = setup.dir.path().join("seen");
    // First run: a mistake on line 3 (a second `: ` in a plain value). Second run: the person
    // finds their text as they left it, and fixes it.
    let script = editor(
        &setup,
        "twice.sh",
        &format!(
            "echo \"$1\" >> {runs}\n\
             if [ ! -e {seen} ]; then cp \"$1\" {seen}; \
             printf 'db:\\n    password: {CANARY}\\n    user: a: b\\n' > \"$1\"; \
             else cp \"$1\" {seen}; printf 'db:\\n    password: {CANARY}\\n    user: fixed\\n' > \"$1\"; fi",
            runs = runs.display(),
            seen = seen.display()
        ),
    );
    let refusals = RefCell::new(Vec::new());
    let reopen = |refusal: &SecretsError| {
        refusals.borrow_mut().push(refusal.to_string());
        true
    };
    let outcome = edit_file(
        &setup.path,
        &setup.identities,
        &EditOptions {
            editor: script,
            temp_parent: Some(setup.temp_parent.clone()),
            reopen_on_invalid: Some(&reopen),
            ..EditOptions::default()
        },
    )
    .unwrap();
    assert_eq!(outcome, EditOutcome::Updated);
    let refusals = refusals.into_inner();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(refusals[0].contains("not valid YAML (line 3, column 12)"), "{}", refusals[0]);
    assert!(!refusals[0].contains(CANARY));
    // Both runs edited the same file, and the second saw the first's text unchanged.
    let runs = std::fs::read_to_string(&runs).unwrap();
    let paths: Vec<&str> = runs.lines().collect();
    assert_eq!(paths.len(), 2);
    assert_eq!(paths[0], paths[1]);
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("db:\n    password: {CANARY}\n    user: a: b\n")
    );
    let tree = decrypt_file(&setup.path, &setup.identities).unwrap();
    assert_eq!(tree.get("db.user").unwrap().text().expose(), "fixed");
    assert_temp_parent_empty(&setup);
}

#[test]
fn a_refused_edit_ends_when_the_caller_declines_to_reopen() {
    let setup = setup();
    let before = std::fs::read(&setup.path).unwrap();
    let runs = setup.dir.path().join("runs");
    let script = editor(
        &setup,
        "list.sh",
        &format!("echo run >> {}; printf -- '- a\\n- b\\n' > \"$1\"", runs.display()),
    );
    let asked = RefCell::new(0);
    let decline = |refusal: &SecretsError| {
        assert!(matches!(refusal, SecretsError::NotAMapping { .. }), "{refusal}");
        *asked.borrow_mut() += 1;
        false
    };
    let error = edit_file(
        &setup.path,
        &setup.identities,
        &EditOptions {
            editor: script,
            temp_parent: Some(setup.temp_parent.clone()),
            reopen_on_invalid: Some(&decline),
            ..EditOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(error, SecretsError::NotAMapping { .. }), "{error}");
    assert_eq!(*asked.borrow(), 1);
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");
    assert_eq!(std::fs::read(&setup.path).unwrap(), before);
    assert_temp_parent_empty(&setup);
}

/// What a SIGKILLed edit leaves: its lock (naming a process that is gone) and its plaintext
/// directory with the plaintext and an editor swap file. Returns the directory and a hard link
/// to the plaintext outside it, to see that it was overwritten before it was removed.
fn killed_edit_leftovers(setup: &Setup, pid: u32) -> (PathBuf, PathBuf) {
    let directory = setup.temp_parent.join("opus-secrets-killed");
    std::fs::create_dir(&directory).unwrap();
    std::fs::write(directory.join("secrets.yaml"), format!("db:\n    password: {CANARY}\n")).unwrap();
    std::fs::write(directory.join(".secrets.yaml.swp"), CANARY).unwrap();
    let witness = setup.dir.path().join("witness");
    std::fs::hard_link(directory.join("secrets.yaml"), &witness).unwrap();
    std::fs::write(
        edit_lock_path(&setup.path, &setup.temp_parent),
        format!("pid {pid}\nstarted 0\nplaintext {}\n", directory.display()),
    )
    .unwrap();
    (directory, witness)
}

fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn an_edit_removes_the_plaintext_a_killed_edit_left_and_says_so() {
    let setup = setup();
    let pid = dead_pid();
    let (directory, witness) = killed_edit_leftovers(&setup, pid);
    let notices = RefCell::new(Vec::new());
    let notice = |killed: &KilledEdit| notices.borrow_mut().push(killed.clone());
    let outcome = edit_file(
        &setup.path,
        &setup.identities,
        &EditOptions {
            editor: editor(&setup, "noop.sh", "exit 0"),
            temp_parent: Some(setup.temp_parent.clone()),
            on_killed_edit: Some(&notice),
            ..EditOptions::default()
        },
    )
    .unwrap();
    assert_eq!(outcome, EditOutcome::Unchanged);
    let notices = notices.into_inner();
    assert_eq!(notices, [KilledEdit { pid, directory: directory.clone() }]);
    assert_eq!(
        notices[0].to_string(),
        format!("removed the plaintext a killed edit (pid {pid}) left in {}", directory.display())
    );
    assert!(!directory.exists());
    let wiped = std::fs::read(&witness).unwrap();
    assert!(!wiped.is_empty() && wiped.iter().all(|&b| b == 0), "the plaintext was not overwritten");
    assert_temp_parent_empty(&setup);
}

#[test]
fn set_after_a_killed_edit_finds_its_plaintext_removed() {
    let setup = setup();
    let pid = dead_pid();
    let (directory, _) = killed_edit_leftovers(&setup, pid);
    // What the CLI does before every command on the file.
    let killed = recover_killed_edit(&setup.path, &setup.temp_parent).unwrap();
    assert_eq!(killed, Some(KilledEdit { pid, directory: directory.clone() }));
    assert!(!directory.exists());
    assert_temp_parent_empty(&setup);
    assert_eq!(recover_killed_edit(&setup.path, &setup.temp_parent).unwrap(), None);
    set_value(&setup.path, "db.user", SecretString::new("admin"), &setup.identities).unwrap();
}

#[test]
fn a_running_edit_is_refused_and_its_plaintext_kept() {
    let setup = setup();
    let pid = std::process::id();
    let (directory, _) = killed_edit_leftovers(&setup, pid);
    let error = recover_killed_edit(&setup.path, &setup.temp_parent).unwrap_err();
    assert!(matches!(error, SecretsError::EditRunning { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        format!("`secrets edit` of {} is running as pid {pid}; finish that edit first", setup.path.display())
    );
    let error = run_edit(&setup, editor(&setup, "noop.sh", "exit 0")).unwrap_err();
    assert!(matches!(error, SecretsError::EditRunning { .. }), "{error}");
    assert!(directory.join("secrets.yaml").exists());
    assert!(edit_lock_path(&setup.path, &setup.temp_parent).exists());
}

/// A file with nested maps, a list, and values of every type.
fn rich_setup() -> Setup {
    let setup = setup();
    let recipients = parse_recipients(&[setup.identities.recipients()[0].clone()]).unwrap();
    let tree = SecretTree::from_yaml(
        Path::new("t"),
        &format!(
            "db:\n    password: {CANARY}\n    user: app\n    port: 5432\n    ratio: 0.5\n    tls: true\n\
             hosts:\n    - a.example\n    - b.example\n    - c.example\nnote_unencrypted: visible\n"
        ),
    )
    .unwrap();
    std::fs::remove_file(&setup.path).unwrap();
    create_file(&setup.path, &recipients, &tree).unwrap();
    setup
}

/// The lines that differ between two texts of the same length in lines (a rewrite keeps the
/// layout), outside the `sops:` block's `lastmodified` and `mac`.
fn changed_lines(before: &str, after: &str) -> Vec<(String, String)> {
    let (before, after): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    assert_eq!(before.len(), after.len(), "the rewrite changed the number of lines");
    let changed: Vec<(String, String)> = before
        .iter()
        .zip(&after)
        .filter(|(old, new)| old != new)
        .map(|(old, new)| ((*old).to_owned(), (*new).to_owned()))
        .collect();
    assert!(changed.iter().any(|(old, _)| old.starts_with("    mac: ENC[")), "the MAC must change");
    changed
        .into_iter()
        .filter(|(old, _)| !old.starts_with("    mac: ENC[") && !old.starts_with("    lastmodified: "))
        .collect()
}

fn run_sed(setup: &Setup, expression: &str) -> EditOutcome {
    let script = editor(setup, "sed.sh", &format!("sed -i '{expression}' \"$1\""));
    run_edit(setup, script).unwrap()
}

#[test]
fn an_edit_of_one_value_changes_only_its_line_and_the_mac() {
    let setup = rich_setup();
    let before = std::fs::read_to_string(&setup.path).unwrap();
    assert_eq!(run_sed(&setup, "s/user: app/user: admin/"), EditOutcome::Updated);
    let after = std::fs::read_to_string(&setup.path).unwrap();
    let changed = changed_lines(&before, &after);
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert!(changed[0].0.starts_with("    user: ENC[") && changed[0].1.starts_with("    user: ENC["));
    let tree = decrypt_file(&setup.path, &setup.identities).unwrap();
    assert_eq!(tree.get("db.user").unwrap().text().expose(), "admin");
    assert_eq!(tree.get("db.password").unwrap().text().expose(), CANARY);
}

#[test]
fn a_list_item_edit_changes_only_that_item() {
    let setup = rich_setup();
    let before = std::fs::read_to_string(&setup.path).unwrap();
    assert_eq!(run_sed(&setup, "s/b.example/z.example/"), EditOutcome::Updated);
    let after = std::fs::read_to_string(&setup.path).unwrap();
    let changed = changed_lines(&before, &after);
    assert_eq!(changed.len(), 1, "{changed:#?}");
    let position = |text: &str, line: &str| text.lines().position(|l| l == line).unwrap();
    // The second item's line, of the three.
    let hosts = position(&before, "hosts:");
    assert_eq!(position(&before, &changed[0].0), hosts + 2);
    let tree = decrypt_file(&setup.path, &setup.identities).unwrap();
    let SecretTree::Map(entries) = &tree else { panic!() };
    let hosts = &entries.iter().find(|(name, _)| name == "hosts").unwrap().1;
    let SecretTree::List(items) = hosts else { panic!() };
    let texts: Vec<&str> = items
        .iter()
        .map(|item| match item {
            SecretTree::Value(value) => value.text().expose(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(texts, ["a.example", "z.example", "c.example"]);
}

#[test]
fn a_value_of_another_type_or_under_another_key_gets_a_fresh_ciphertext() {
    let setup = rich_setup();
    let before = std::fs::read_to_string(&setup.path).unwrap();
    // `user` becomes `login` (same value), `port` becomes the string "5432" (same text).
    assert_eq!(
        run_sed(&setup, "s/user: app/login: app/; s/port: 5432/port: \"5432\"/"),
        EditOutcome::Updated
    );
    let after = std::fs::read_to_string(&setup.path).unwrap();
    let changed = changed_lines(&before, &after);
    assert_eq!(changed.len(), 2, "{changed:#?}");
    let value = |line: &str| line.split_once(": ").unwrap().1.to_owned();
    for (old, new) in &changed {
        assert_ne!(value(old), value(new), "{old} -> {new}");
    }
    assert!(changed[0].1.starts_with("    login: ENC["), "{changed:#?}");
    assert!(changed[1].1.starts_with("    port: ENC[") && changed[1].1.contains("type:str]"), "{changed:#?}");
    let tree = decrypt_file(&setup.path, &setup.identities).unwrap();
    assert_eq!(tree.get("db.login").unwrap().text().expose(), "app");
}

#[test]
fn set_of_one_key_changes_only_its_line_and_the_mac() {
    let setup = rich_setup();
    let before = std::fs::read_to_string(&setup.path).unwrap();
    set_value(&setup.path, "db.password", SecretString::new("canary-new-21d0"), &setup.identities).unwrap();
    let after = std::fs::read_to_string(&setup.path).unwrap();
    let changed = changed_lines(&before, &after);
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert!(changed[0].0.starts_with("    password: ENC["));
    // Setting the value it already has keeps even its ciphertext.
    set_value(&setup.path, "db.password", SecretString::new("canary-new-21d0"), &setup.identities).unwrap();
    assert!(changed_lines(&after, &std::fs::read_to_string(&setup.path).unwrap()).is_empty());
    let tree = decrypt_file(&setup.path, &setup.identities).unwrap();
    assert_eq!(tree.get("db.password").unwrap().text().expose(), "canary-new-21d0");
}

#[test]
fn a_top_level_that_is_not_a_mapping_keeps_the_original() {
    let setup = setup();
    let before = std::fs::read(&setup.path).unwrap();
    let script = editor(&setup, "list.sh", "printf -- '- a\\n- b\\n' > \"$1\"");
    let error = run_edit(&setup, script).unwrap_err();
    assert!(matches!(error, SecretsError::NotAMapping { .. }), "{error}");
    assert_eq!(std::fs::read(&setup.path).unwrap(), before);
}

#[test]
fn editor_failure_keeps_the_original() {
    let setup = setup();
    let before = std::fs::read(&setup.path).unwrap();
    let script = editor(&setup, "fail.sh", "echo 'x: 1' > \"$1\"; exit 3");
    let error = run_edit(&setup, script).unwrap_err();
    assert!(matches!(error, SecretsError::EditorFailed { .. }), "{error}");
    assert!(error.to_string().contains("exit status: 3"), "{error}");
    assert_eq!(std::fs::read(&setup.path).unwrap(), before);
    assert_temp_parent_empty(&setup);
}

#[test]
fn a_missing_editor_is_reported_and_leaves_nothing_behind() {
    let setup = setup();
    let error = run_edit(&setup, "/nonexistent/editor-9f".to_owned()).unwrap_err();
    assert!(matches!(error, SecretsError::EditorSpawn { .. }), "{error}");
    assert_temp_parent_empty(&setup);
}

#[test]
fn sigint_during_the_editor_keeps_the_original_and_removes_the_plaintext() {
    let setup = setup();
    let before = std::fs::read(&setup.path).unwrap();
    // The editor changes the file, then the user presses Ctrl-C: the terminal sends SIGINT to
    // the foreground process group (here: to this process, which must survive it).
    // The editor keeps running a moment after the signal, as a real one does, so the signal is
    // delivered while it runs (a signal racing the editor's exit is SignalGuard::settle's case).
    let script =
        editor(&setup, "interrupt.sh", "sed -i 's/user: app/user: evil/' \"$1\"; kill -INT $PPID; sleep 0.3");
    let error = run_edit(&setup, script).unwrap_err();
    assert!(matches!(error, SecretsError::EditInterrupted { .. }), "{error}");
    assert_eq!(std::fs::read(&setup.path).unwrap(), before);
    assert_temp_parent_empty(&setup);
}

#[test]
fn editor_arguments_are_kept_and_the_canary_never_reaches_the_temp_dir_afterwards() {
    let setup = setup();
    let args = setup.dir.path().join("args");
    let script = editor(&setup, "args.sh", &format!("echo \"$@\" > {}; exit 0", args.display()));
    run_edit(&setup, format!("{script} --wait")).unwrap();
    let recorded = std::fs::read_to_string(&args).unwrap();
    assert!(recorded.starts_with("--wait "), "{recorded}");
    assert!(!recorded.contains(CANARY));
    assert_temp_parent_empty(&setup);
}

fn age_binaries_present() -> bool {
    let present = Command::new("age").arg("--version").output().is_ok()
        && Command::new("age-keygen").arg("--version").output().is_ok();
    if !present {
        eprintln!("notice: skipping: the `age` and `age-keygen` binaries are not installed");
    }
    present
}

#[test]
fn a_key_file_we_write_decrypts_with_the_age_cli() {
    if !age_binaries_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("config/sops/age/keys.txt");
    let generated = generate_identity();
    assert_eq!(append_identity_to_key_file(&key_file, &generated.secret_key).unwrap(), AppendOutcome::Added);
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let message = dir.path().join("msg.txt");
    std::fs::write(&message, "hello from age\n").unwrap();
    let encrypted = dir.path().join("msg.age");
    let status = Command::new("age")
        .args(["-r", generated.recipient.as_str(), "-o"])
        .arg(&encrypted)
        .arg(&message)
        .status()
        .unwrap();
    assert!(status.success());
    let output = Command::new("age").arg("-d").arg("-i").arg(&key_file).arg(&encrypted).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.stdout, b"hello from age\n");
}

#[test]
fn a_key_generated_by_age_keygen_loads_through_sops_key_file_variable() {
    if !age_binaries_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys.txt");
    let output = Command::new("age-keygen").arg("-o").arg(&key_file).output().unwrap();
    assert!(output.status.success());
    let text = std::fs::read_to_string(&key_file).unwrap();
    let public = text.lines().find_map(|line| line.strip_prefix("# public key: ")).unwrap().to_owned();
    let identities =
        load_identities(&IdentitySources { key_file: Some(key_file.clone()), ..Default::default() }).unwrap();
    assert_eq!(identities.recipients(), std::slice::from_ref(&public));
    // And a file encrypted for it opens.
    let path = dir.path().join("s.enc.yaml");
    let recipients = parse_recipients(&[public]).unwrap();
    create_file(&path, &recipients, &SecretTree::empty()).unwrap();
    assert_eq!(decrypt_file(&path, &identities).unwrap(), SecretTree::empty());
}

#[test]
fn appending_never_duplicates_and_never_rewrites_existing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys.txt");
    let first = generate_identity();
    let second = generate_identity();
    // An existing file written by someone else, without a final newline.
    std::fs::write(&key_file, format!("# mine\n{}", first.secret_key.expose())).unwrap();
    let before = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(
        append_identity_to_key_file(&key_file, &first.secret_key).unwrap(),
        AppendOutcome::AlreadyPresent
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), before);
    assert_eq!(append_identity_to_key_file(&key_file, &second.secret_key).unwrap(), AppendOutcome::Added);
    assert_eq!(
        append_identity_to_key_file(&key_file, &second.secret_key).unwrap(),
        AppendOutcome::AlreadyPresent
    );
    let after = std::fs::read_to_string(&key_file).unwrap();
    assert!(after.starts_with(&before), "existing content was rewritten");
    let identities = Identities::from_key_text("k", &SecretString::new(after)).unwrap();
    assert_eq!(identities.recipients(), [first.recipient.to_string(), second.recipient.to_string()]);
    let error = append_identity_to_key_file(&key_file, &SecretString::new("garbage")).unwrap_err();
    assert!(!error.to_string().contains("garbage"), "{error}");
}
