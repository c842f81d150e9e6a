//! The whole key rotation of the shipped `example` environment (a copy in a temporary git
//! repository) against a file key store and an in-memory key store: every file re-encrypted for
//! the new key only, content unchanged, the old key retired (or kept, for a flux target's
//! decryption Secret), refusals before anything changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use futures::future::BoxFuture;
use platform::drivers::kube::{ApplyOutcome, NewKey, StoredKey, StoredKeys};
use platform::keys::{
    FileKeyStore, KeyStore, KeysError, RotationOptions, rotate_keys, rotation_journal_path, secrets_files,
};
use platform::secrets::{Identities, decrypt_file, generate_identity};
use platform::sensitive::SecretString;

const DEMO_KEY: &str = "environments/example/demo.agekey";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == ".opus" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn git(root: &Path, args: &[&str]) {
    let status = Command::new("git").arg("-C").arg(root).args(args).status().unwrap();
    assert!(status.success(), "git {args:?}");
}

/// A git repository holding a copy of `environments/example`, committed.
fn example_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("environments/example");
    copy_dir(&shipped, &dir.path().join("environments/example"));
    std::fs::write(dir.path().join(".gitignore"), "/environments/*/.opus\n").unwrap();
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "add", "."]);
    git(dir.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start"]);
    dir
}

fn key_text(path: &Path) -> SecretString {
    SecretString::new(std::fs::read_to_string(path).unwrap())
}

fn decrypted_tree(root: &Path, identities: &Identities) -> BTreeMap<PathBuf, String> {
    secrets_files(root, "example")
        .unwrap()
        .into_iter()
        .map(|path| {
            let yaml = decrypt_file(&root.join(&path), identities).unwrap().to_yaml();
            (path, yaml.expose().to_owned())
        })
        .collect()
}

fn options(root: &Path, local_key_file: PathBuf) -> RotationOptions {
    RotationOptions {
        root: root.to_owned(),
        environment: "example".to_owned(),
        local_key_file,
        batch_size: platform::keys::rotation::BATCH_SIZE,
        keep_previous_key: false,
    }
}

#[tokio::test]
async fn rotation_with_the_file_store_reencrypts_everything_and_keeps_only_the_new_key() {
    let repo = example_repo();
    let root = repo.path();
    let old = Identities::from_key_text("demo", &key_text(&root.join(DEMO_KEY))).unwrap();
    let before = decrypted_tree(root, &old);
    assert_eq!(before.len(), 5);
    let env_before = std::fs::read_to_string(root.join("environments/example/env.toml")).unwrap();
    let local_key_file = root.join("home/keys.txt");
    let store = FileKeyStore::new(root.join(DEMO_KEY));

    let mut events = Vec::new();
    let report =
        rotate_keys(&store, &old, &options(root, local_key_file.clone()), &mut |e| events.push(e.clone()))
            .await
            .unwrap();

    let new = Identities::from_key_text("local", &key_text(&local_key_file)).unwrap();
    assert_eq!(new.recipients(), std::slice::from_ref(&report.new_recipient));
    assert_eq!(decrypted_tree(root, &new), before);
    for path in before.keys() {
        assert!(
            decrypt_file(&root.join(path), &old).is_err(),
            "{} still opens with the old key",
            path.display()
        );
    }
    let env_after = std::fs::read_to_string(root.join("environments/example/env.toml")).unwrap();
    assert_eq!(env_after, env_before.replace(&report.old_recipients[0], &report.new_recipient));
    let demo = std::fs::read_to_string(root.join(DEMO_KEY)).unwrap();
    assert!(demo.starts_with("# DEMO KEY FOR THE `example` ENVIRONMENT ONLY."), "{demo}");
    let demo_keys = Identities::from_key_text("demo", &SecretString::new(demo)).unwrap();
    assert_eq!(demo_keys.recipients(), std::slice::from_ref(&report.new_recipient));
    assert!(!rotation_journal_path(root, "example").exists());
    assert_eq!(report.changed_paths.len(), 7, "{:?}", report.changed_paths);
    assert!(!report.resumed);
    // The five files fit one batch: one event, after the batch is journaled.
    let batches: Vec<_> =
        events.iter().filter(|e| matches!(e, platform::keys::RotationEvent::Reencrypted { .. })).collect();
    assert_eq!(batches, [&platform::keys::RotationEvent::Reencrypted { done: 5, total: 5 }]);
}

/// A key store in memory, with an injected failure of `retire_previous`.
#[derive(Default)]
struct MemoryStore {
    keys: Mutex<Option<StoredKeys>>,
    fail_retire_once: Mutex<bool>,
}

impl KeyStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn read(&self) -> BoxFuture<'_, Result<Option<StoredKeys>, KeysError>> {
        Box::pin(async move { Ok(self.keys.lock().unwrap().clone()) })
    }

    fn store<'a>(&'a self, new: &'a NewKey) -> BoxFuture<'a, Result<ApplyOutcome, KeysError>> {
        Box::pin(async move {
            let mut keys = self.keys.lock().unwrap();
            match keys.take() {
                None => {
                    *keys = Some(StoredKeys {
                        current: new.key.clone(),
                        created: Some(new.created),
                        previous: None,
                    });
                    Ok(ApplyOutcome::Created)
                }
                Some(stored) if stored.current == new.key => {
                    *keys = Some(stored);
                    Ok(ApplyOutcome::Unchanged)
                }
                Some(stored) if stored.previous.is_some() => {
                    *keys = Some(stored);
                    Err(KeysError::RotationInProgress { store: "memory".to_owned() })
                }
                Some(stored) => {
                    *keys = Some(StoredKeys {
                        current: new.key.clone(),
                        created: Some(new.created),
                        previous: Some(stored.current),
                    });
                    Ok(ApplyOutcome::Changed)
                }
            }
        })
    }

    fn retire_previous(&self) -> BoxFuture<'_, Result<ApplyOutcome, KeysError>> {
        Box::pin(async move {
            if std::mem::take(&mut *self.fail_retire_once.lock().unwrap()) {
                return Err(KeysError::EmptyStore { store: "memory (injected failure)".to_owned() });
            }
            let mut keys = self.keys.lock().unwrap();
            match keys.as_mut() {
                Some(stored) if stored.previous.is_some() => {
                    stored.previous = None;
                    Ok(ApplyOutcome::Changed)
                }
                _ => Ok(ApplyOutcome::Unchanged),
            }
        })
    }
}

fn memory_store_with(identities: &Identities, fail_retire_once: bool) -> MemoryStore {
    let recipient = identities.recipients()[0].clone();
    let private_key = identities.secret_key_for(&recipient).unwrap();
    MemoryStore {
        keys: Mutex::new(Some(StoredKeys {
            current: StoredKey { private_key, recipient },
            created: None,
            previous: None,
        })),
        fail_retire_once: Mutex::new(fail_retire_once),
    }
}

#[tokio::test]
async fn an_interrupted_rotation_is_completed_by_the_rerun_with_the_same_key() {
    let repo = example_repo();
    let root = repo.path();
    let old = Identities::from_key_text("demo", &key_text(&root.join(DEMO_KEY))).unwrap();
    let before = decrypted_tree(root, &old);
    let local_key_file = root.join("home/keys.txt");
    let store = memory_store_with(&old, true);

    let error =
        rotate_keys(&store, &old, &options(root, local_key_file.clone()), &mut |_| {}).await.unwrap_err();
    assert!(error.to_string().contains("injected failure"), "{error}");
    let journal = rotation_journal_path(root, "example");
    let journal_text = std::fs::read_to_string(&journal).unwrap();
    let stored = store.keys.lock().unwrap().clone().unwrap();
    assert!(stored.previous.is_some(), "the old key is kept until the rotation completes");
    assert!(journal_text.contains(&stored.current.recipient));
    assert!(!journal_text.contains("AGE-SECRET-KEY"), "the journal holds no private key");

    let mut with_local = old.clone();
    with_local.add_key_text("local", &key_text(&local_key_file)).unwrap();
    let report =
        rotate_keys(&store, &with_local, &options(root, local_key_file.clone()), &mut |_| {}).await.unwrap();
    assert!(report.resumed);
    assert_eq!(report.new_recipient, stored.current.recipient);
    let stored = store.keys.lock().unwrap().clone().unwrap();
    assert!(stored.previous.is_none());
    let new = Identities::from_key_text("local", &key_text(&local_key_file)).unwrap();
    assert_eq!(new.len(), 1, "the rerun did not generate another key");
    assert_eq!(decrypted_tree(root, &new), before);
    assert!(!journal.exists());
}

/// A flux target's decryption Secret: the rotation ends with both keys in the store (Flux
/// still reads the committed tree), the next rotation is refused naming `keys retire`, and
/// once the previous key is retired it proceeds.
#[tokio::test]
async fn a_rotation_that_keeps_the_previous_key_leaves_both_and_the_next_one_waits_for_retire() {
    let repo = example_repo();
    let root = repo.path();
    let old = Identities::from_key_text("demo", &key_text(&root.join(DEMO_KEY))).unwrap();
    let before = decrypted_tree(root, &old);
    let local_key_file = root.join("home/keys.txt");
    let store = memory_store_with(&old, false);
    let keep = RotationOptions { keep_previous_key: true, ..options(root, local_key_file.clone()) };

    let mut events = Vec::new();
    let report = rotate_keys(&store, &old, &keep, &mut |e| events.push(e.clone())).await.unwrap();
    let stored = store.keys.lock().unwrap().clone().unwrap();
    assert_eq!(stored.current.recipient, report.new_recipient);
    assert_eq!(stored.previous.as_ref().map(|p| p.recipient.clone()), Some(old.recipients()[0].clone()));
    assert!(events.contains(&platform::keys::RotationEvent::PreviousKept { store: "memory".to_owned() }));
    assert!(!events.iter().any(|e| matches!(e, platform::keys::RotationEvent::Retired { .. })));
    assert!(!rotation_journal_path(root, "example").exists(), "the rotation itself is complete");
    let new = Identities::from_key_text("local", &key_text(&local_key_file)).unwrap();
    assert_eq!(decrypted_tree(root, &new), before);

    git(root, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "rotated"]);
    let error = rotate_keys(&store, &new, &keep, &mut |_| {}).await.unwrap_err();
    assert!(matches!(error, KeysError::PreviousKeyKept { .. }), "{error}");
    assert!(error.to_string().contains("cargo xtask keys retire example"), "{error}");
    assert!(error.to_string().contains(&old.recipients()[0]), "{error}");
    assert_eq!(store.keys.lock().unwrap().clone().unwrap(), stored, "the refused rotation changed nothing");

    store.retire_previous().await.unwrap();
    let second = rotate_keys(&store, &new, &keep, &mut |_| {}).await.unwrap();
    let stored = store.keys.lock().unwrap().clone().unwrap();
    assert_eq!(stored.current.recipient, second.new_recipient);
    assert_eq!(stored.previous.map(|p| p.recipient), Some(report.new_recipient));
}

#[tokio::test]
async fn undecryptable_files_are_listed_and_nothing_changes() {
    let repo = example_repo();
    let root = repo.path();
    let old = Identities::from_key_text("demo", &key_text(&root.join(DEMO_KEY))).unwrap();
    let stranger = generate_identity();
    let path = root.join("environments/example/opus/oob-consent/secrets.enc.yaml");
    platform::secrets::reencrypt_file(&path, &old, std::slice::from_ref(&stranger.recipient)).unwrap();
    git(root, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "stranger"]);
    let store = memory_store_with(&old, false);

    let error =
        rotate_keys(&store, &old, &options(root, root.join("home/keys.txt")), &mut |_| {}).await.unwrap_err();
    match &error {
        KeysError::Undecryptable { files, .. } => {
            assert_eq!(files.len(), 1);
            assert_eq!(files[0].0, Path::new("environments/example/opus/oob-consent/secrets.enc.yaml"));
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(!rotation_journal_path(root, "example").exists());
    assert!(!root.join("home/keys.txt").exists());
    assert!(store.keys.lock().unwrap().as_ref().unwrap().previous.is_none());
}

#[tokio::test]
async fn uncommitted_secrets_files_are_listed_and_nothing_changes() {
    let repo = example_repo();
    let root = repo.path();
    let old = Identities::from_key_text("demo", &key_text(&root.join(DEMO_KEY))).unwrap();
    let path = root.join("environments/example/secrets.enc.yaml");
    platform::secrets::set_value(&path, "extra", SecretString::new("value"), &old).unwrap();
    let store = memory_store_with(&old, false);

    let error =
        rotate_keys(&store, &old, &options(root, root.join("home/keys.txt")), &mut |_| {}).await.unwrap_err();
    match &error {
        KeysError::UncommittedSecrets { files, .. } => {
            assert_eq!(files, &["environments/example/secrets.enc.yaml".to_owned()]);
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(!rotation_journal_path(root, "example").exists());
}
