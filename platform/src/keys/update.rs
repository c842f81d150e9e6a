//! `secrets updatekeys`: every secrets file of an environment (and the encrypted files of its
//! directory bundle) encrypted for exactly the recipients env.toml lists, after a recipient
//! was added (a second operator, a break-glass key) or removed.
//!
//! Each file is re-wrapped in memory ([`crate::secrets::rekey`]: the same data key when
//! recipients are only added, a fresh one when one is removed), verified in memory (it
//! decrypts, MAC included, to the same content with every listed recipient whose key is at
//! hand, and lists exactly those recipients), and written in batches
//! ([`crate::secrets::batch`]). env.toml is the target and the files are the progress: a file
//! already encrypted for exactly the listed recipients is left alone, so a rerun after a crash
//! finishes the work, and at every point each file is readable with its old recipients or its
//! new ones. A file that cannot be updated (no key at hand opens it, or it is malformed) is
//! named and the others are still updated.

use std::path::{Path, PathBuf};

use super::{KeysError, secrets_files};
use crate::load::environment::ENVIRONMENTS_DIR;
use crate::model::EnvFile;
use crate::secrets::batch::{BatchFile, BatchTimings, remove_leftover, write_batch};
use crate::secrets::ops::OpenedDocument;
use crate::secrets::rekey::{Rewrap, rewrap_document};
use crate::secrets::{Identities, Recipient, SecretsError, inspect_document, parse_recipients};

/// How many files are written per batch (each batch costs two file-system flushes).
pub const BATCH_SIZE: usize = 256;

/// Options for [`update_keys`].
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    /// The repository root.
    pub root: PathBuf,
    pub environment: String,
    /// Files per batch.
    pub batch_size: usize,
}

/// What happened, for the caller to show as progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateEvent {
    /// Every file was read and re-wrapped in memory; `pending` of them need writing.
    Planned { files: usize, pending: usize },
    /// A batch is written and durable.
    Written { done: usize, pending: usize },
}

/// How one file was updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// Recipients added: the same data key, more stanzas.
    Rewrapped,
    /// A recipient removed: a fresh data key.
    Rekeyed,
}

/// The outcome of [`update_keys`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateReport {
    pub recipients: Vec<String>,
    /// Updated files, relative to the root.
    pub updated: Vec<(PathBuf, UpdateKind)>,
    /// Files already encrypted for exactly the recipients.
    pub unchanged: Vec<PathBuf>,
    /// Files that could not be updated, with the reason (no secret in it).
    pub failed: Vec<(PathBuf, String)>,
    /// The listed recipients whose private key was at hand: every updated file was decrypted
    /// with each of them before it was written.
    pub verified_with: Vec<String>,
    /// The listed recipients whose key was not at hand (nothing to verify with).
    pub not_verified_with: Vec<String>,
    /// Leftover temporary files of a killed run that were removed.
    pub leftovers_removed: usize,
    pub timings: BatchTimings,
}

/// The encrypted files of a directory target's bundle (`*.enc.yaml`), relative to `root`,
/// sorted; none for other targets or a bundle not written yet.
pub fn bundle_secrets_files(root: &Path, env: &EnvFile) -> Result<Vec<PathBuf>, KeysError> {
    let Some(path) = env.target.bundle_path() else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::from(path)];
    while let Some(dir) = pending.pop() {
        let absolute = root.join(&dir);
        let entries = match std::fs::read_dir(&absolute) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(KeysError::Walk { path: absolute, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| KeysError::Walk { path: absolute.clone(), source })?;
            let name = entry.file_name();
            let file_type =
                entry.file_type().map_err(|source| KeysError::Walk { path: absolute.clone(), source })?;
            if file_type.is_dir() {
                pending.push(dir.join(&name));
            } else if file_type.is_file() && name.to_string_lossy().ends_with(".enc.yaml") {
                found.push(dir.join(&name));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn read_env(root: &Path, environment: &str) -> Result<EnvFile, KeysError> {
    let path = root.join(ENVIRONMENTS_DIR).join(environment).join("env.toml");
    let text =
        std::fs::read_to_string(&path).map_err(|source| KeysError::ReadEnv { path: path.clone(), source })?;
    toml::from_str(&text).map_err(|e| KeysError::EnvToml { path, reason: e.message().to_owned() })
}

/// Updates every file (see the module documentation).
pub fn update_keys(
    identities: &Identities,
    options: &UpdateOptions,
    progress: &mut dyn FnMut(&UpdateEvent),
) -> Result<UpdateReport, KeysError> {
    let root = &options.root;
    let env = read_env(root, &options.environment)?;
    let recipients: Vec<Recipient> = parse_recipients(&env.secrets.age_recipients)?;
    let mut report = UpdateReport {
        recipients: recipients.iter().map(ToString::to_string).collect(),
        ..UpdateReport::default()
    };
    // One identity per listed recipient whose key is at hand, to verify with.
    let mut verifiers = Vec::new();
    for recipient in &report.recipients {
        match identities.secret_key_for(recipient) {
            Some(key) => {
                verifiers.push(Identities::from_key_text(recipient, &key)?);
                report.verified_with.push(recipient.clone());
            }
            None => report.not_verified_with.push(recipient.clone()),
        }
    }

    let mut files = secrets_files(root, &options.environment)?;
    files.extend(bundle_secrets_files(root, &env)?);
    let mut pending: Vec<(BatchFile, UpdateKind)> = Vec::new();
    // Read, re-wrap and verify in memory on every core.
    let results = crate::parallel::map(&files, |relative| {
        let path = root.join(relative);
        let leftover = remove_leftover(&path);
        (leftover, update_one(&path, identities, &recipients, &report.recipients, &verifiers))
    });
    for (relative, (leftover, result)) in files.iter().zip(results) {
        let path = root.join(relative);
        if leftover {
            report.leftovers_removed += 1;
        }
        match result {
            Ok(None) => report.unchanged.push(relative.clone()),
            Ok(Some((text, kind))) => {
                pending.push((BatchFile { path: path.clone(), contents: text.into_bytes() }, kind))
            }
            Err(reason) => report.failed.push((relative.clone(), reason)),
        }
    }
    progress(&UpdateEvent::Planned { files: files.len(), pending: pending.len() });
    crate::failpoint::kill_if_armed("kill-at:", "planned");

    let total = pending.len();
    let mut done = 0;
    for (index, chunk) in pending.chunks(options.batch_size.max(1)).enumerate() {
        let batch: Vec<BatchFile> = chunk.iter().map(|(file, _)| file.clone()).collect();
        let timings = write_batch(&batch, &|point| crate::failpoint::kill_in_batch(index + 1, point))
            .map_err(SecretsError::from)?;
        report.timings.add(timings);
        for (file, kind) in chunk {
            let relative = file.path.strip_prefix(root).unwrap_or(&file.path).to_owned();
            report.updated.push((relative, *kind));
        }
        done += chunk.len();
        progress(&UpdateEvent::Written { done, pending: total });
    }
    Ok(report)
}

/// The file's new text when it needs one, verified in memory; the reason when it cannot be
/// updated.
fn update_one(
    path: &Path,
    identities: &Identities,
    recipients: &[Recipient],
    names: &[String],
    verifiers: &[Identities],
) -> Result<Option<(String, UpdateKind)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("could not read it: {e}"))?;
    let (text, tree, kind) = match rewrap_document(path, &text, identities, recipients) {
        Ok(Rewrap::Unchanged) => return Ok(None),
        Ok(Rewrap::Rewrapped { text, tree }) => (text, tree, UpdateKind::Rewrapped),
        Ok(Rewrap::Rekeyed { text, tree }) => (text, tree, UpdateKind::Rekeyed),
        Err(error) => return Err(reason(&error)),
    };
    let mut wanted = names.to_vec();
    wanted.sort();
    wanted.dedup();
    let check_recipients = |mut found: Vec<String>| {
        let listed = found.join(", ");
        found.sort();
        if found == wanted { Ok(()) } else { Err(format!("the re-wrapped file lists {listed}")) }
    };
    if verifiers.is_empty() {
        let summary =
            inspect_document(path, &text).map_err(|e| format!("the re-wrapped file is not valid: {e}"))?;
        check_recipients(summary.recipients)?;
    }
    for verifier in verifiers {
        match OpenedDocument::open(path, &text, verifier) {
            Ok(opened) if *opened.tree() == tree => check_recipients(opened.recipients())?,
            Ok(_) => return Err("the re-wrapped file decrypts to other content".to_owned()),
            Err(e) => {
                return Err(format!(
                    "the re-wrapped file does not decrypt with {}: {e}",
                    verifier.recipients().join(", ")
                ));
            }
        }
    }
    Ok(Some((text, kind)))
}

fn reason(error: &SecretsError) -> String {
    match error {
        SecretsError::NoIdentity { recipients, .. } | SecretsError::WrongIdentity { recipients, .. } => {
            format!(
                "no key at hand opens it (it is encrypted for {}); run the command where one of those keys is",
                recipients.join(", ")
            )
        }
        other => other.to_string(),
    }
}
