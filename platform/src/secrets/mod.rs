//! SOPS-compatible secrets files encrypted with age.
//!
//! A secrets file (`secrets.enc.yaml`) is a YAML document in the format of sops 3.x: keys stay
//! readable, every leaf value is encrypted with AES-256-GCM under a random data key (with the
//! value's key path as additional data, so values cannot be moved between keys), the data key is
//! wrapped for each age recipient, and a MAC over all values detects tampering. Files we write
//! are readable by `sops` with an age key, and files written by `sops` with age recipients are
//! readable here.
//!
//! The submodules follow the work: [`tree`] (the decrypted value tree, whose leaves are
//! [`SecretString`]s), [`format`] (the on-disk document: `ENC[...]` values, the `sops:` block,
//! YAML in sops' layout), [`crypto`] (AES-GCM, data keys, the MAC), [`identity`] (finding age
//! identities as sops does, generating them, key files), [`atomic`] (crash-safe writes, reused
//! by other modules), [`ops`] (show, set, new, re-encrypt, check) and [`edit`].

pub mod atomic;
pub mod batch;
pub mod crypto;
pub mod edit;
pub mod edit_lock;
pub mod format;
pub mod identity;
pub mod ops;
pub mod rekey;
pub mod tree;
pub mod yaml;

use std::path::PathBuf;

pub use atomic::{AtomicWriteError, AtomicWriteOptions, write_atomic};
pub use edit::{EditOptions, EditOutcome, default_temp_parent, edit_file, edit_file_keeping};
pub use edit_lock::{KilledEdit, edit_lock_path, recover_killed_edit};
pub use format::{EncryptionRule, FileSummary, inspect_document, inspect_file};
pub use identity::{
    AppendOutcome, GeneratedIdentity, Identities, IdentitySources, Recipient, append_identity_to_key_file,
    generate_identity, load_identities, parse_recipient, parse_recipients,
};
pub use ops::{
    KeepEncrypted, create_file, decrypt_document, decrypt_file, encrypt_document, reencrypt_file, set_value,
    set_value_keeping, show_file,
};
pub use tree::{SecretTree, SecretValue, ValueKind};

/// Everything that can go wrong with a secrets file. Messages name the file (and the key path
/// or recipients when they help) and never contain a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite it")]
    AlreadyExists { path: PathBuf },
    #[error("{path} is not valid YAML (line {line}, column {column})")]
    InvalidYaml { path: PathBuf, line: usize, column: usize },
    #[error("{path} is not a sops file: {reason}")]
    NotSops { path: PathBuf, reason: String },
    #[error("{path} uses a sops feature this tool does not support: {feature}")]
    Unsupported { path: PathBuf, feature: String },
    #[error(
        "no age identity found to decrypt {path}; it is encrypted for {}; looked in {}",
        recipients.join(", "),
        if locations.is_empty() { "nothing".to_owned() } else { locations.join(", ") }
    )]
    NoIdentity { path: PathBuf, recipients: Vec<String>, locations: Vec<String> },
    #[error(
        "none of the available age identities ({}) can decrypt {path}; it is encrypted for {}",
        if available.is_empty() { "none".to_owned() } else { available.join(", ") },
        recipients.join(", ")
    )]
    WrongIdentity {
        path: PathBuf,
        recipients: Vec<String>,
        /// Public keys (recipients) of the identities that were tried.
        available: Vec<String>,
    },
    #[error("{path}: the data key decrypted for {recipient} is malformed")]
    MalformedDataKey { path: PathBuf, recipient: String },
    #[error(
        "{path}: the value at `{key_path}` failed authentication; the file was tampered with or a value was moved between keys"
    )]
    ValueAuthentication { path: PathBuf, key_path: String },
    #[error("{path}: MAC mismatch; the file was modified outside sops or tampered with, refusing to use it")]
    MacMismatch { path: PathBuf },
    #[error("{path}: the stored MAC failed authentication; the file was tampered with")]
    MacAuthentication { path: PathBuf },
    #[error("{path}: the value at `{key_path}` is malformed: {reason}")]
    MalformedValue { path: PathBuf, key_path: String, reason: String },
    #[error("invalid age recipient `{recipient}`: {reason}")]
    InvalidRecipient { recipient: String, reason: String },
    #[error("no age recipients given for {path}")]
    NoRecipients { path: PathBuf },
    #[error("invalid age identity in {location} (line {line})")]
    InvalidIdentity { location: String, line: usize },
    #[error("could not use key file {path}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid key path `{key_path}` for {path}: {reason}")]
    InvalidKeyPath { path: PathBuf, key_path: String, reason: String },
    #[error("{path}: the plaintext must be a YAML mapping at the top level")]
    NotAMapping { path: PathBuf },
    #[error("{path}: {reason}")]
    UnsupportedValue { path: PathBuf, reason: String },
    #[error("invalid editor command `{command}`: {reason}")]
    EditorCommand { command: String, reason: String },
    #[error("could not start editor `{program}` for {path}")]
    EditorSpawn {
        program: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("editor `{program}` failed ({status}); {path} was left unchanged")]
    EditorFailed { program: String, status: String, path: PathBuf },
    #[error("edit of {path} was interrupted; the file was left unchanged")]
    EditInterrupted { path: PathBuf },
    #[error(
        "the edited content of {path} is not valid YAML (line {line}, column {column}); the file was left unchanged"
    )]
    EditedYamlInvalid { path: PathBuf, line: usize, column: usize },
    #[error("`secrets edit` of {path} is running as pid {pid}; finish that edit first")]
    EditRunning { path: PathBuf, pid: u32 },
    #[error("edit lock {lock}: {reason}")]
    EditLock { lock: PathBuf, reason: String },
    #[error("could not prepare the private temporary file to edit {path}")]
    TempFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    AtomicWrite(#[from] AtomicWriteError),
}

/// The file name of a secrets file in an environment.
pub const SECRETS_FILE_NAME: &str = "secrets.enc.yaml";
