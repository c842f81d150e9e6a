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

pub mod batch;
pub mod crypto;
pub mod edit;
pub mod edit_lock;
pub mod identity;
pub mod ops;
pub mod rekey;

pub use edit::{EditOptions, EditOutcome, default_temp_parent, edit_file, edit_file_keeping};
pub use edit_lock::{KilledEdit, edit_lock_path, recover_killed_edit};
pub use engine::secrets::{
    AtomicWriteError, AtomicWriteOptions, EncryptionRule, FileSummary, SECRETS_FILE_NAME, SecretTree,
    SecretValue, SecretsError, SecretsSource, ValueKind, atomic, check_age_recipient, format,
    inspect_document, inspect_file, keep, tree, write_atomic, yaml,
};
pub use identity::{
    AppendOutcome, GeneratedIdentity, Identities, IdentitySources, Recipient, append_identity_to_key_file,
    generate_identity, load_identities, parse_recipient, parse_recipients,
};
pub use ops::{
    KeepEncrypted, create_file, decrypt_document, decrypt_file, encrypt_document, reencrypt_file, set_value,
    set_value_keeping, show_file,
};
