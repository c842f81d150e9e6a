//! What the engine core knows of secrets files, with no cryptography: the value tree
//! ([`tree`]), the sops document and its metadata ([`format`], parsed and checked without a
//! key), sops' YAML layout ([`yaml`]), the keys that must stay encrypted ([`keep`]), crash-safe
//! writes ([`atomic`]) and the errors. Decrypting goes through [`SecretsSource`], which the
//! `platform` crate implements with age; the core never links a cipher.

pub mod atomic;
pub mod format;
pub mod keep;
pub mod tree;
pub mod yaml;

use std::path::{Path, PathBuf};

pub use atomic::{AtomicWriteError, AtomicWriteOptions, write_atomic};
pub use format::{EncryptionRule, FileSummary, inspect_document, inspect_file};
pub use keep::KeepEncrypted;
pub use tree::{SecretTree, SecretValue, ValueKind};

/// The keys the core decrypts secrets files with, as the core sees them: which recipients they
/// belong to, and a document decrypted with its MAC verified. `platform`'s age identities
/// implement it.
pub trait SecretsSource {
    /// The age recipients (public keys) this source holds a private key of.
    fn recipients(&self) -> Vec<String>;

    /// Decrypts the sops document `text` (read from `path`), verifying every value and the MAC.
    fn decrypt_document(&self, path: &Path, text: &str) -> Result<SecretTree, SecretsError>;
}

/// Whether `recipient` is an age X25519 recipient (`age1…`): Bech32 without its length limit,
/// human-readable part `age`, 32 bytes, exactly as the age crate parses one. The core checks
/// env.toml's recipients with it, without linking age.
pub fn check_age_recipient(recipient: &str) -> Result<(), &'static str> {
    use bech32::primitives::decode::CheckedHrpstring;

    /// age's Bech32: BIP-173's checksum without its 90-character limit.
    #[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
    enum Bech32Long {}
    impl bech32::Checksum for Bech32Long {
        type MidstateRepr = u32;
        const CODE_LENGTH: usize = usize::MAX;
        const CHECKSUM_LENGTH: usize = bech32::Bech32::CHECKSUM_LENGTH;
        const GENERATOR_SH: [u32; 5] = bech32::Bech32::GENERATOR_SH;
        const TARGET_RESIDUE: u32 = bech32::Bech32::TARGET_RESIDUE;
    }

    let parsed = CheckedHrpstring::new::<Bech32Long>(recipient).map_err(|_| "invalid Bech32 encoding")?;
    if parsed.hrp() != bech32::Hrp::parse_unchecked("age") {
        return Err("incorrect HRP");
    }
    if parsed.byte_iter().count() != 32 {
        return Err("incorrect pubkey length");
    }
    Ok(())
}

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
