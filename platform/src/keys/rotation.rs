//! `rotate-keys`: a new age identity for an environment, every secrets file re-encrypted for
//! it under a fresh data key, env.toml's recipients updated, the new key stored, everything
//! verified, and only then the old key retired.
//!
//! Crash safety rests on one order and one journal (`environments/ENV/.opus/rotation.json`,
//! written atomically, holding the new PUBLIC key, the phase and per-file progress):
//! 1. the journal is written with the new public key (phase `generated`);
//! 2. the new private key is made durable in the local key file AND the key store, which keeps
//!    the old key as the previous one (phase `key-stored`);
//! 3. files are re-encrypted in batches: each file is decrypted, re-encrypted and verified in
//!    memory (it opens with the new key alone, to the same content, and not with an old one),
//!    the batch is written with two file-system flushes ([`crate::secrets::batch`]: every
//!    file replaced atomically) and journaled once, so after a crash every file opens with the
//!    old or the new key, never neither, and a rerun re-encrypts the unjournaled batch again
//!    (a file already re-encrypted opens with the new key, which the rerun holds);
//! 4. env.toml's `age_recipients` is replaced by the new recipient (a textual edit of that
//!    array only, verified by re-parsing), then every file is checked to decrypt with the new
//!    key alone (MAC included) and to be encrypted for nobody else (a file this run verified
//!    in memory is compared by digest with what was verified);
//! 5. the previous key is retired from the key store and the journal removed.
//!
//! A rerun with a journal present resumes that same rotation from its phase; a journal whose
//! new key never became durable (crash during step 1) is discarded, nothing having been
//! encrypted for it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{KeyStore, KeysError, git, secrets_files};
use crate::drivers::kube::{NewKey, StoredKey};
use crate::load::environment::ENVIRONMENTS_DIR;
use crate::model::EnvFile;
use crate::secrets::batch::{BatchFile, BatchTimings, remove_leftover, write_batch};
use crate::secrets::ops::OpenedDocument;
use crate::secrets::{
    AtomicWriteOptions, Identities, Recipient, SecretsError, append_identity_to_key_file, decrypt_document,
    generate_identity, inspect_document, parse_recipient, write_atomic,
};
use crate::sensitive::SecretString;
use sha2::{Digest, Sha256};

/// A file the pre-check opened: the digest of the text it was opened from, and the result.
type Preopened = (Vec<u8>, OpenedDocument);

/// How many files are re-encrypted per batch.
pub const BATCH_SIZE: usize = 256;

/// Options for [`rotate_keys`].
#[derive(Debug, Clone)]
pub struct RotationOptions {
    /// The repository root.
    pub root: PathBuf,
    pub environment: String,
    /// The operator's local key file, which gets the new key before any file is re-encrypted.
    pub local_key_file: PathBuf,
    /// Files re-encrypted per batch (one journal record and two file-system flushes each).
    pub batch_size: usize,
    /// Keep the previous key in the store at the end (a `flux` target's decryption Secret:
    /// Flux must still decrypt the committed tree until the re-encrypted one is reconciled);
    /// `keys retire` removes it later.
    pub keep_previous_key: bool,
}

/// What happened, for the caller to show as progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationEvent {
    Resuming {
        recipient: String,
        done: usize,
        total: usize,
    },
    Generated {
        recipient: String,
    },
    KeyStored {
        store: String,
    },
    /// A batch is re-encrypted, verified, durable and journaled: `done` of `total` files.
    Reencrypted {
        done: usize,
        total: usize,
    },
    RecipientsUpdated {
        path: PathBuf,
    },
    Verified {
        files: usize,
    },
    Retired {
        store: String,
    },
    /// The previous key stays in the store ([`RotationOptions::keep_previous_key`]).
    PreviousKept {
        store: String,
    },
}

/// The outcome of a completed rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub new_recipient: String,
    pub old_recipients: Vec<String>,
    /// The re-encrypted secrets files, relative to the root.
    pub files: Vec<PathBuf>,
    /// Every changed file under the root that belongs in the commit: the secrets files,
    /// env.toml and a key store file inside the repository.
    pub changed_paths: Vec<PathBuf>,
    pub resumed: bool,
    /// Time spent writing the re-encrypted files, and making them durable (flushes, renames,
    /// journal records), for the benchmark.
    pub timings: BatchTimings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    Generated,
    KeyStored,
    FilesReencrypted,
    RecipientsUpdated,
    Verified,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileProgress {
    path: PathBuf,
    reencrypted: bool,
}

/// The rotation journal. It never holds a private key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    environment: String,
    new_recipient: String,
    old_recipients: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    phase: Phase,
    files: Vec<FileProgress>,
}

/// Where an environment's rotation journal lives.
pub fn rotation_journal_path(root: &Path, environment: &str) -> PathBuf {
    root.join(ENVIRONMENTS_DIR).join(environment).join(".opus").join("rotation.json")
}

fn read_journal(path: &Path) -> Result<Option<Journal>, KeysError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(KeysError::Journal { path: path.to_owned(), reason: error.to_string() }),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| KeysError::Journal {
        path: path.to_owned(),
        reason: format!("not a rotation journal: {e}"),
    })
}

fn write_journal(path: &Path, journal: &Journal) -> Result<(), KeysError> {
    let fail = |reason: String| KeysError::Journal { path: path.to_owned(), reason };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail(format!("could not create its folder: {e}")))?;
    }
    let text = serde_json::to_vec_pretty(journal).expect("a journal always serializes");
    write_atomic(path, &text, &AtomicWriteOptions { mode: Some(0o644) }).map_err(|e| fail(e.to_string()))
}

fn env_toml_path(root: &Path, environment: &str) -> PathBuf {
    root.join(ENVIRONMENTS_DIR).join(environment).join("env.toml")
}

fn read_env_text(path: &Path) -> Result<String, KeysError> {
    std::fs::read_to_string(path).map_err(|source| KeysError::ReadEnv { path: path.to_owned(), source })
}

fn parse_env(path: &Path, text: &str) -> Result<EnvFile, KeysError> {
    toml::from_str(text)
        .map_err(|e| KeysError::EnvToml { path: path.to_owned(), reason: e.message().to_owned() })
}

/// env.toml's text with the `age_recipients` array replaced by `recipients`, everything else
/// (comments, layout, other keys) untouched. The result is re-parsed and must equal the
/// original with only `secrets.age_recipients` changed.
pub fn update_recipients_text(path: &Path, text: &str, recipients: &[String]) -> Result<String, KeysError> {
    let fail = |reason: &str| KeysError::EnvToml { path: path.to_owned(), reason: reason.to_owned() };
    // A recipient is bech32 (no `]`), so the array ends at the first `]` after its `[`.
    let pattern = regex::Regex::new(r"(?m)^([ \t]*age_recipients[ \t]*=[ \t]*)\[[^\]]*\]")
        .expect("a valid regular expression");
    let matches = pattern.find_iter(text).count();
    if matches != 1 {
        return Err(fail(&format!("expected one `age_recipients = [...]` array, found {matches}")));
    }
    let array = format!("[{}]", recipients.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", "));
    let updated = pattern.replace(text, |captures: &regex::Captures<'_>| format!("{}{array}", &captures[1]));
    let updated = updated.into_owned();
    let mut expected: toml::Table =
        toml::from_str(text).map_err(|e| fail(&format!("not valid TOML: {}", e.message())))?;
    let found: toml::Table =
        toml::from_str(&updated).map_err(|_| fail("the edited recipients would not be valid TOML"))?;
    let new_value = toml::Value::Array(recipients.iter().map(|r| toml::Value::String(r.clone())).collect());
    match expected.get_mut("secrets").and_then(toml::Value::as_table_mut) {
        Some(secrets) if secrets.contains_key("age_recipients") => {
            secrets.insert("age_recipients".to_owned(), new_value);
        }
        _ => return Err(fail("`age_recipients` is not in the [secrets] table")),
    }
    if expected != found {
        return Err(fail("editing `age_recipients` would change other settings; edit it by hand"));
    }
    Ok(updated)
}

fn identity_entry(recipient: &str, private_key: &SecretString) -> SecretString {
    SecretString::new(format!("# public key: {recipient}\n{}\n", private_key.expose()))
}

/// The private key of `recipient`, from the identities given or the key store.
async fn find_private_key(
    store: &dyn KeyStore,
    identities: &Identities,
    recipient: &str,
) -> Result<Option<SecretString>, KeysError> {
    if let Some(key) = identities.secret_key_for(recipient) {
        return Ok(Some(key));
    }
    let stored = store.read().await?;
    Ok(stored.and_then(|keys| {
        [Some(keys.current), keys.previous]
            .into_iter()
            .flatten()
            .find(|key| key.recipient == recipient)
            .map(|key| key.private_key)
    }))
}

/// Rotates the environment's keys, or completes the rotation its journal records. `identities`
/// are the current ones (they must open every secrets file); `progress` sees each step.
pub async fn rotate_keys(
    store: &dyn KeyStore,
    identities: &Identities,
    options: &RotationOptions,
    progress: &mut dyn FnMut(&RotationEvent),
) -> Result<RotationReport, KeysError> {
    let root = &options.root;
    let environment = &options.environment;
    let journal_path = rotation_journal_path(root, environment);
    let env_path = env_toml_path(root, environment);

    let mut resumed = None;
    // Each file opened by the pre-check of a fresh rotation, with the digest of the text it
    // was opened from: re-encrypted later without decrypting it again, if still that text.
    let mut preopened: std::collections::HashMap<PathBuf, Preopened> = std::collections::HashMap::new();
    if let Some(journal) = read_journal(&journal_path)? {
        match find_private_key(store, identities, &journal.new_recipient).await? {
            Some(key) => resumed = Some((journal, key)),
            None if journal.phase == Phase::Generated && journal.files.iter().all(|f| !f.reencrypted) => {
                // The key never became durable and nothing was encrypted for it: start over.
            }
            None => {
                return Err(KeysError::NewKeyLost {
                    journal: journal_path.clone(),
                    recipient: journal.new_recipient.clone(),
                });
            }
        }
    }
    let was_resumed = resumed.is_some();

    let (mut journal, new_key) = match resumed {
        Some((mut journal, key)) => {
            // Files added since the rotation started are rotated too.
            for path in secrets_files(root, environment)? {
                if !journal.files.iter().any(|f| f.path == path) {
                    journal.files.push(FileProgress { path, reencrypted: false });
                }
            }
            progress(&RotationEvent::Resuming {
                recipient: journal.new_recipient.clone(),
                done: journal.files.iter().filter(|f| f.reencrypted).count(),
                total: journal.files.len(),
            });
            (journal, key)
        }
        None => {
            let env = parse_env(&env_path, &read_env_text(&env_path)?)?;
            let files = secrets_files(root, environment)?;
            let environment_dir = Path::new(ENVIRONMENTS_DIR).join(environment);
            // `git status` runs while the files are opened (it mostly waits on its own process);
            // uncommitted files still refuse the rotation before anything is written.
            let (uncommitted, opened) = std::thread::scope(|scope| {
                let status = scope.spawn(|| git::uncommitted_secrets_files(root, &environment_dir));
                let opened = crate::parallel::map(&files, |relative| {
                    let path = root.join(relative);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|source| SecretsError::Read { path: path.clone(), source })?;
                    let opened = OpenedDocument::open(&path, &text, identities)?;
                    Ok::<_, SecretsError>((Sha256::digest(text.as_bytes()).to_vec(), opened))
                });
                (status.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), opened)
            });
            let uncommitted = uncommitted?;
            if !uncommitted.is_empty() {
                return Err(KeysError::UncommittedSecrets {
                    environment: environment.clone(),
                    files: uncommitted,
                });
            }
            preopened.reserve(files.len());
            let mut undecryptable = Vec::new();
            for (relative, result) in files.iter().zip(opened) {
                match result {
                    Ok(opened) => {
                        preopened.insert(relative.clone(), opened);
                    }
                    Err(e) => undecryptable.push((relative.clone(), e.to_string())),
                }
            }
            if !undecryptable.is_empty() {
                return Err(KeysError::Undecryptable {
                    environment: environment.clone(),
                    files: undecryptable,
                });
            }
            if let Some(previous) = store.read().await?.and_then(|keys| keys.previous) {
                // No journal: the rotation finished and kept the previous key on purpose.
                return Err(if options.keep_previous_key {
                    KeysError::PreviousKeyKept {
                        environment: environment.clone(),
                        store: store.describe(),
                        previous: previous.recipient,
                    }
                } else {
                    KeysError::RotationInProgress { store: store.describe() }
                });
            }
            let generated = generate_identity();
            let journal = Journal {
                environment: environment.clone(),
                new_recipient: generated.recipient.to_string(),
                old_recipients: env.secrets.age_recipients.clone(),
                started_at: OffsetDateTime::now_utc(),
                phase: Phase::Generated,
                files: files.into_iter().map(|path| FileProgress { path, reencrypted: false }).collect(),
            };
            write_journal(&journal_path, &journal)?;
            progress(&RotationEvent::Generated { recipient: journal.new_recipient.clone() });
            crate::failpoint::kill_if_armed("kill-at:", "generated");
            (journal, generated.secret_key)
        }
    };
    let new_recipient: Recipient = parse_recipient(&journal.new_recipient)?;

    if journal.phase < Phase::KeyStored {
        // Durable in two places before anything is encrypted for it.
        append_identity_to_key_file(&options.local_key_file, &new_key)?;
        let new = NewKey {
            key: StoredKey { private_key: new_key.clone(), recipient: journal.new_recipient.clone() },
            created: OffsetDateTime::now_utc(),
        };
        store.store(&new).await?;
        journal.phase = Phase::KeyStored;
        write_journal(&journal_path, &journal)?;
        progress(&RotationEvent::KeyStored { store: store.describe() });
        crate::failpoint::kill_if_armed("kill-at:", "key-stored");
    }

    let mut both = identities.clone();
    both.add_key_text("the new key", &identity_entry(&journal.new_recipient, &new_key))?;
    let checks = Checks::new(&journal, &new_key, identities)?;
    let total = journal.files.len();
    let pending: Vec<usize> = (0..total).filter(|index| !journal.files[*index].reencrypted).collect();
    let mut verified_here = std::collections::HashMap::new();
    let mut timings = BatchTimings::default();
    // Decrypt, re-encrypt and verify batch n+1 in memory, on every core, while batch n is made
    // durable (two flushes, mostly waiting for the disk) on a thread of its own; a batch is
    // journaled only once its write returned, so the crash guarantees are a single batch's.
    let paths: Vec<PathBuf> = journal.files.iter().map(|file| file.path.clone()).collect();
    let prepare = |chunk: &[usize], preopened: &mut std::collections::HashMap<PathBuf, Preopened>| {
        let relatives: Vec<(PathBuf, Option<Preopened>)> = chunk
            .iter()
            .map(|index| {
                let relative = paths[*index].clone();
                let opened = preopened.remove(&relative);
                (relative, opened)
            })
            .collect();
        let prepared =
            crate::parallel::map(&relatives, |(relative, opened)| -> Result<BatchFile, KeysError> {
                let path = root.join(relative);
                remove_leftover(&path);
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| SecretsError::Read { path: path.clone(), source })?;
                let reopened;
                let opened = match opened {
                    Some((digest, opened)) if *digest == Sha256::digest(text.as_bytes()).as_slice() => opened,
                    _ => {
                        reopened = OpenedDocument::open(&path, &text, &both)?;
                        &reopened
                    }
                };
                let new_text = opened.reencrypt(&path, std::slice::from_ref(&new_recipient))?;
                checks.verify_new_text(relative, &path, &new_text, opened.tree())?;
                Ok(BatchFile { path, contents: new_text.into_bytes() })
            });
        relatives
            .into_iter()
            .zip(prepared)
            .map(|((relative, _), file)| file.map(|file| (relative, file)))
            .collect::<Result<Vec<(PathBuf, BatchFile)>, KeysError>>()
    };
    let chunks: Vec<&[usize]> = pending.chunks(options.batch_size.max(1)).collect();
    std::thread::scope(|scope| -> Result<(), KeysError> {
        type Writing<'s> =
            std::thread::ScopedJoinHandle<'s, Result<BatchTimings, crate::secrets::AtomicWriteError>>;
        let mut in_flight: Option<(Writing<'_>, &[usize])> = None;
        let mut finish = |writing: Writing<'_>, chunk: &[usize]| -> Result<(), KeysError> {
            let written = writing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            timings.add(written.map_err(SecretsError::from)?);
            for &index in chunk {
                journal.files[index].reencrypted = true;
            }
            let journaled = std::time::Instant::now();
            write_journal(&journal_path, &journal)?;
            timings.durability += journaled.elapsed();
            progress(&RotationEvent::Reencrypted {
                done: journal.files.iter().filter(|f| f.reencrypted).count(),
                total,
            });
            Ok(())
        };
        for (batch_index, chunk) in chunks.iter().enumerate() {
            let prepared = prepare(chunk, &mut preopened);
            // The batch before this one is durable and journaled before this one is written
            // (and before an error here returns).
            if let Some((writing, done)) = in_flight.take() {
                finish(writing, done)?;
            }
            let mut batch = Vec::with_capacity(chunk.len());
            for (relative, file) in prepared? {
                verified_here.insert(relative, Sha256::digest(&file.contents));
                batch.push(file);
            }
            let writing = scope.spawn(move || {
                write_batch(&batch, &|point| crate::failpoint::kill_in_batch(batch_index + 1, point))
            });
            in_flight = Some((writing, chunk));
        }
        if let Some((writing, done)) = in_flight.take() {
            finish(writing, done)?;
        }
        Ok(())
    })?;
    if journal.phase < Phase::FilesReencrypted {
        journal.phase = Phase::FilesReencrypted;
        write_journal(&journal_path, &journal)?;
        crate::failpoint::kill_if_armed("kill-at:", "files-reencrypted");
    }

    if journal.phase < Phase::RecipientsUpdated {
        let text = read_env_text(&env_path)?;
        let env = parse_env(&env_path, &text)?;
        let wanted = vec![journal.new_recipient.clone()];
        if env.secrets.age_recipients != wanted {
            let updated = update_recipients_text(&env_path, &text, &wanted)?;
            write_atomic(&env_path, updated.as_bytes(), &AtomicWriteOptions::default())
                .map_err(crate::secrets::SecretsError::from)?;
        }
        journal.phase = Phase::RecipientsUpdated;
        write_journal(&journal_path, &journal)?;
        progress(&RotationEvent::RecipientsUpdated {
            path: env_path.strip_prefix(root).unwrap_or(&env_path).to_owned(),
        });
        crate::failpoint::kill_if_armed("kill-at:", "recipients-updated");
    }

    if journal.phase < Phase::Verified {
        let results = crate::parallel::map(&journal.files, |file| -> Result<(), KeysError> {
            let path = root.join(&file.path);
            let text = std::fs::read_to_string(&path)
                .map_err(|source| SecretsError::Read { path: path.clone(), source })?;
            // Verified in memory before this run wrote it: the same bytes are still there.
            if verified_here.get(&file.path).is_some_and(|digest| *digest == Sha256::digest(text.as_bytes()))
            {
                return Ok(());
            }
            checks.verify_text(&file.path, &path, &text)
        });
        results.into_iter().collect::<Result<(), KeysError>>()?;
        journal.phase = Phase::Verified;
        write_journal(&journal_path, &journal)?;
        progress(&RotationEvent::Verified { files: total });
        crate::failpoint::kill_if_armed("kill-at:", "verified");
    }

    if options.keep_previous_key {
        progress(&RotationEvent::PreviousKept { store: store.describe() });
    } else {
        store.retire_previous().await?;
        progress(&RotationEvent::Retired { store: store.describe() });
    }
    crate::failpoint::kill_if_armed("kill-at:", "retired");
    std::fs::remove_file(&journal_path).map_err(|e| KeysError::Journal {
        path: journal_path.clone(),
        reason: format!("could not remove it: {e}"),
    })?;

    let files: Vec<PathBuf> = journal.files.iter().map(|f| f.path.clone()).collect();
    let mut changed_paths = files.clone();
    changed_paths.push(env_path.strip_prefix(root).unwrap_or(&env_path).to_owned());
    if let Some(file) = store.file()
        && let Ok(relative) = file.strip_prefix(root)
        && !git::is_ignored(root, relative)
    {
        changed_paths.push(relative.to_owned());
    }
    Ok(RotationReport {
        new_recipient: journal.new_recipient,
        old_recipients: journal.old_recipients,
        files,
        changed_paths,
        resumed: was_resumed,
        timings,
    })
}

/// What every rotated file must satisfy: it decrypts (MAC included) with the new key alone,
/// is encrypted for the new recipient only, and does not open with any old key at hand.
struct Checks {
    new_recipient: String,
    new_only: Identities,
    old_only: Identities,
}

impl Checks {
    fn new(journal: &Journal, new_key: &SecretString, identities: &Identities) -> Result<Checks, KeysError> {
        let new_only =
            Identities::from_key_text("the new key", &identity_entry(&journal.new_recipient, new_key))?;
        let mut old_only = Identities::new();
        for recipient in journal.old_recipients.iter().filter(|r| **r != journal.new_recipient) {
            if let Some(key) = identities.secret_key_for(recipient) {
                old_only.add_key_text("an old key", &identity_entry(recipient, &key))?;
            }
        }
        Ok(Checks { new_recipient: journal.new_recipient.clone(), new_only, old_only })
    }

    /// Checks text this run re-encrypted: it decrypts with the new key alone to `expected` and
    /// names the new recipient only. That its one stanza was made for the new recipient alone
    /// is what keeps the old keys out, so no old key is tried.
    fn verify_new_text(
        &self,
        relative: &Path,
        path: &Path,
        text: &str,
        expected: &crate::secrets::SecretTree,
    ) -> Result<(), KeysError> {
        let failed = |reason: String| KeysError::Verification { path: relative.to_owned(), reason };
        let opened = OpenedDocument::open(path, text, &self.new_only)
            .map_err(|e| failed(format!("it does not decrypt with the new key: {e}")))?;
        if expected != opened.tree() {
            return Err(failed("it decrypts to other content than before".to_owned()));
        }
        if opened.recipients() != [self.new_recipient.clone()] {
            return Err(failed(format!("it is encrypted for {}", opened.recipients().join(", "))));
        }
        Ok(())
    }

    /// Checks a file found on disk (rotated by an earlier, interrupted run): it decrypts with
    /// the new key alone, names the new recipient only, and no old key at hand opens it.
    fn verify_text(&self, relative: &Path, path: &Path, text: &str) -> Result<(), KeysError> {
        let failed = |reason: String| KeysError::Verification { path: relative.to_owned(), reason };
        decrypt_document(path, text, &self.new_only)
            .map_err(|e| failed(format!("it does not decrypt with the new key: {e}")))?;
        self.check_recipients(relative, path, text)?;
        if !self.old_only.is_empty() && decrypt_document(path, text, &self.old_only).is_ok() {
            return Err(failed("it still decrypts with an old key".to_owned()));
        }
        Ok(())
    }

    fn check_recipients(&self, relative: &Path, path: &Path, text: &str) -> Result<(), KeysError> {
        let summary = inspect_document(path, text)?;
        if summary.recipients != [self.new_recipient.clone()] {
            return Err(KeysError::Verification {
                path: relative.to_owned(),
                reason: format!("it is encrypted for {}", summary.recipients.join(", ")),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV_TOML: &str = "\
# header comment
core = \"example\"

[target]
kind = \"directory\"
path = \"bundle/x\"

[secrets]
# who can read the secrets
age_recipients = [
  \"age1old\", # a comment
]

[labels]
a = \"b\"
";

    #[test]
    fn recipients_edit_keeps_comments_and_layout() {
        let updated =
            update_recipients_text(Path::new("env.toml"), ENV_TOML, &["age1new".to_owned()]).unwrap();
        assert_eq!(updated, ENV_TOML.replace("[\n  \"age1old\", # a comment\n]", "[\"age1new\"]"));
    }

    #[test]
    fn recipients_edit_refuses_an_ambiguous_file() {
        let text = format!("{ENV_TOML}\n[other]\nage_recipients = []\n");
        let error =
            update_recipients_text(Path::new("env.toml"), &text, &["age1new".to_owned()]).unwrap_err();
        assert!(error.to_string().contains("found 2"), "{error}");
    }
}
