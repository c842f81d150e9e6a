//! An environment's age keys: the key store that keeps its private key ([`store`]: a Secret in
//! the cluster for the `kube` target and for a `flux` target's decryption Secret, a local key
//! store file otherwise, both behind the [`KeyStore`] trait), saving that key into the
//! operator's local key file (`keys save`), a backup document (`keys get`), the crash-safe,
//! resumable key rotation ([`rotation`]) with its git checks and commit ([`git`]), and retiring
//! the previous key a `flux` rotation kept once Flux applied the re-encrypted tree
//! ([`retire`]).

pub mod bootstrap;
pub mod git;
pub mod retire;
pub mod rotation;
pub mod store;
pub mod update;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::drivers::kube::KubeError;
use crate::load::environment::ENVIRONMENTS_DIR;
use crate::secrets::{
    AppendOutcome, IdentitySources, SECRETS_FILE_NAME, SecretsError, append_identity_to_key_file,
};
use crate::sensitive::SecretString;

pub use bootstrap::{NewKeyReport, RestoreReport, new_key, restore_key};
pub use retire::{RetireOptions, RetireReport, retire_kept_key};
pub use rotation::{
    RotationEvent, RotationOptions, RotationReport, rotate_keys, rotation_journal_path,
    update_recipients_text,
};
pub use store::{FileKeyStore, KeyStore, KubeKeyStore};
pub use update::{UpdateEvent, UpdateKind, UpdateOptions, UpdateReport, update_keys};

/// Everything key handling can fail with. Messages name the file, the key store or the git
/// command; they never contain a private key.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("key store {store}")]
    Kube {
        store: String,
        #[source]
        source: Box<KubeError>,
    },
    #[error("could not use the key store file {path}")]
    StoreFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key store {store} already holds a previous key from an unfinished rotation; rerun `cargo xtask rotate-keys` to finish it"
    )]
    RotationInProgress { store: String },
    #[error(
        "key store {store} still holds the previous key {previous} of the last rotation, for Flux to decrypt the tree until the re-encrypted one is applied; deploy `{environment}`, commit and push the tree, then `cargo xtask keys retire {environment}` before rotating again"
    )]
    PreviousKeyKept { environment: String, store: String, previous: String },
    #[error(
        "cannot retire the previous key {previous} of `{environment}` yet, Flux may still need it: {}",
        reasons.join("; ")
    )]
    RetireBlocked { environment: String, previous: String, reasons: Vec<String> },
    #[error("{object}: {detail}")]
    Flux { object: String, detail: String },
    #[error("key store {store} holds no key; deploy the environment first (it stores the key)")]
    EmptyStore { store: String },
    #[error("cannot find the local key file: set SOPS_AGE_KEY_FILE or HOME")]
    NoLocalKeyFile,
    #[error("could not read {path}")]
    ReadEnv {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    EnvToml { path: PathBuf, reason: String },
    #[error("could not walk {path}")]
    Walk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rotation journal {path}: {reason}")]
    Journal { path: PathBuf, reason: String },
    #[error(
        "cannot rotate the keys of `{environment}`: {} secrets file{} cannot be decrypted with the current keys: {}",
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        files.iter().map(|(path, reason)| format!("{} ({reason})", path.display())).collect::<Vec<_>>().join("; ")
    )]
    Undecryptable { environment: String, files: Vec<(PathBuf, String)> },
    #[error(
        "cannot rotate the keys of `{environment}`: secrets files have uncommitted changes (commit them first): {}",
        files.join(", ")
    )]
    UncommittedSecrets { environment: String, files: Vec<String> },
    #[error("`git {command}` failed in {dir}: {detail}")]
    Git { command: String, dir: PathBuf, detail: String },
    #[error(
        "the rotation journal {journal} names the new key {recipient}, but no key store or local key file holds its private key, and files are already encrypted for it"
    )]
    NewKeyLost { journal: PathBuf, recipient: String },
    #[error("verification of {path} after the rotation failed: {reason}")]
    Verification { path: PathBuf, reason: String },
    #[error("the staged files differ from the rotated ones; expected {}, staged {}", expected.join(", "), staged.join(", "))]
    StagedMismatch { expected: Vec<String>, staged: Vec<String> },
    #[error("`--commit` cannot commit exactly the rotated files: {detail}")]
    CommitBlocked { detail: String },
    #[error(
        "environment `{environment}` already has a key ({}); `cargo xtask rotate-keys {environment}` replaces it, and adding a recipient to `age_recipients` then `cargo xtask secrets updatekeys {environment}` adds one",
        recipients.join(", ")
    )]
    HasRecipients { environment: String, recipients: Vec<String> },
    #[error(
        "environment `{environment}` lists no recipient but has secrets files ({}), encrypted for keys env.toml does not name: list their recipients in `age_recipients`, or remove the files",
        files.join(", ")
    )]
    SecretsWithoutRecipients { environment: String, files: Vec<String> },
    #[error(
        "key store {store} already holds a key ({held}) that env.toml of `{environment}` does not list; `cargo xtask keys restore {environment} < backup.json` lists a backed-up key again, or remove the store's key to start over"
    )]
    StoreNotEmpty { environment: String, store: String, held: String },
    #[error("the backup read from stdin is unusable: {reason}")]
    Backup { reason: String },
    #[error(
        "key store {store} holds another key ({held}); refusing to replace it with {restoring} (`cargo xtask rotate-keys` changes an environment's key)"
    )]
    StoreHoldsAnother { store: String, held: String, restoring: String },
}

/// The local key file that `keys save` and `rotate-keys` add keys to: `SOPS_AGE_KEY_FILE`,
/// else sops' default (`$XDG_CONFIG_HOME/sops/age/keys.txt` or `~/.config/sops/age/keys.txt`).
pub fn local_key_file(sources: &IdentitySources) -> Result<PathBuf, KeysError> {
    sources.key_file.clone().or_else(|| sources.default_key_file.clone()).ok_or(KeysError::NoLocalKeyFile)
}

/// What [`save_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveReport {
    pub recipient: String,
    pub outcome: AppendOutcome,
}

/// `keys save`: adds the key store's current private key to the local key file (created 0600;
/// other keys never rewritten; no duplicate).
pub async fn save_key(store: &dyn KeyStore, key_file: &Path) -> Result<SaveReport, KeysError> {
    let keys = store.read().await?.ok_or_else(|| KeysError::EmptyStore { store: store.describe() })?;
    let outcome = append_identity_to_key_file(key_file, &keys.current.private_key)?;
    Ok(SaveReport { recipient: keys.current.recipient, outcome })
}

/// The `keys get` document: everything needed to restore the key from a backup.
#[derive(Serialize)]
pub struct KeyBackup {
    pub environment: String,
    pub cluster: String,
    pub public_key: String,
    pub private_key: String,
    /// RFC 3339, when the key store knows it.
    pub created: Option<String>,
}

/// `keys get`: the backup document as pretty JSON (with a final newline). It holds the private
/// key, so it is returned as a [`SecretString`] for the caller to write to stdout only.
pub async fn backup_document(
    store: &dyn KeyStore,
    environment: &str,
    cluster: &str,
) -> Result<SecretString, KeysError> {
    let keys = store.read().await?.ok_or_else(|| KeysError::EmptyStore { store: store.describe() })?;
    let created =
        keys.created.and_then(|time| time.format(&time::format_description::well_known::Rfc3339).ok());
    let backup = KeyBackup {
        environment: environment.to_owned(),
        cluster: cluster.to_owned(),
        public_key: keys.current.recipient.clone(),
        private_key: keys.current.private_key.expose().to_owned(),
        created,
    };
    let text = serde_json::to_string_pretty(&backup).expect("a backup document always serializes");
    drop(SecretString::new(backup.private_key));
    Ok(SecretString::new(text + "\n"))
}

/// Every secrets file of an environment: `environments/ENV/secrets.enc.yaml` and every
/// `environments/ENV/**/secrets.enc.yaml`, relative to `root`, sorted. Hidden folders (the
/// `.opus` state) are skipped.
pub fn secrets_files(root: &Path, environment: &str) -> Result<Vec<PathBuf>, KeysError> {
    let relative_dir = Path::new(ENVIRONMENTS_DIR).join(environment);
    let mut found = Vec::new();
    let mut pending = vec![relative_dir];
    while let Some(dir) = pending.pop() {
        let absolute = root.join(&dir);
        let entries = std::fs::read_dir(&absolute)
            .map_err(|source| KeysError::Walk { path: absolute.clone(), source })?;
        for entry in entries {
            let entry = entry.map_err(|source| KeysError::Walk { path: absolute.clone(), source })?;
            let name = entry.file_name();
            let file_type =
                entry.file_type().map_err(|source| KeysError::Walk { path: absolute.clone(), source })?;
            if file_type.is_dir() {
                if !name.to_string_lossy().starts_with('.') {
                    pending.push(dir.join(&name));
                }
            } else if name == SECRETS_FILE_NAME {
                found.push(dir.join(&name));
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_files_are_found_at_every_depth_except_hidden_folders() {
        let dir = tempfile::tempdir().unwrap();
        for path in [
            "environments/dev/secrets.enc.yaml",
            "environments/dev/opus/a/secrets.enc.yaml",
            "environments/dev/opus/b/c/secrets.enc.yaml",
            "environments/dev/.opus/secrets.enc.yaml",
            "environments/dev/opus/a/other.yaml",
            "environments/prod/secrets.enc.yaml",
        ] {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, "x").unwrap();
        }
        let files = secrets_files(dir.path(), "dev").unwrap();
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "environments/dev/opus/a/secrets.enc.yaml",
                "environments/dev/opus/b/c/secrets.enc.yaml",
                "environments/dev/secrets.enc.yaml",
            ]
        );
    }

    #[test]
    fn local_key_file_prefers_sops_age_key_file() {
        let sources = IdentitySources {
            key_file: Some(PathBuf::from("/k/a.txt")),
            key: None,
            default_key_file: Some(PathBuf::from("/home/x/.config/sops/age/keys.txt")),
        };
        assert_eq!(local_key_file(&sources).unwrap(), PathBuf::from("/k/a.txt"));
        let sources = IdentitySources { key_file: None, ..sources };
        assert_eq!(local_key_file(&sources).unwrap(), PathBuf::from("/home/x/.config/sops/age/keys.txt"));
        assert!(matches!(local_key_file(&IdentitySources::default()), Err(KeysError::NoLocalKeyFile)));
    }
}
