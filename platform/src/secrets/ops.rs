//! The operations on secrets files that the CLI exposes: show, set, new, re-encrypt for new
//! recipients (key rotation), plus in-memory encrypt/decrypt for callers that hold the text
//! themselves (`edit` is in [`super::edit`]). Every read verifies the MAC before returning
//! anything; every write is atomic.

use std::path::Path;

use super::SecretsError;
use super::atomic::{AtomicWriteOptions, write_atomic};
use super::crypto::{
    DataKey, decrypt_mac, decrypt_tree, encrypt_mac, encrypt_tree, unwrap_data_key, wrap_data_key,
};
use super::format::{
    AgeStanza, Document, EncryptionRule, Metadata, SOPS_FORMAT_VERSION, SOPS_METADATA_KEY, emit_document,
    parse_document,
};
use super::identity::{Identities, Recipient};
pub use super::keep::{KeepEncrypted, in_clear_error};
use super::tree::{SecretTree, SecretValue};
use crate::sensitive::SecretString;

/// A decrypted file with what is needed to re-encrypt it under the same data key.
pub(super) struct Opened {
    pub(super) tree: SecretTree,
    /// The encrypted data as read, whose unchanged values a rewrite keeps.
    pub(super) data: serde_yaml_ng::Mapping,
    pub(super) key: DataKey,
    pub(super) metadata: Metadata,
}

pub(super) fn read_file(path: &Path) -> Result<String, SecretsError> {
    std::fs::read_to_string(path).map_err(|source| SecretsError::Read { path: path.to_owned(), source })
}

pub(super) fn open_document(
    path: &Path,
    text: &str,
    identities: &Identities,
) -> Result<Opened, SecretsError> {
    let document = parse_document(path, text)?;
    let metadata = document.metadata;
    let matcher = metadata.rule.matcher(path)?;
    let key = unwrap_data_key(path, &metadata.age, identities)?;
    let stored_mac = decrypt_mac(&key, &metadata.mac, &metadata.last_modified)
        .ok_or_else(|| SecretsError::MacAuthentication { path: path.to_owned() })?;
    let (tree, computed_mac) =
        decrypt_tree(path, &document.data, &key, &matcher, metadata.mac_only_encrypted)?;
    if !computed_mac.eq_ignore_ascii_case(&stored_mac) {
        return Err(SecretsError::MacMismatch { path: path.to_owned() });
    }
    Ok(Opened { tree, data: document.data, key, metadata })
}

/// Decrypts sops text (already read from `path`, which names it in errors) and verifies its
/// MAC.
pub fn decrypt_document(
    path: &Path,
    text: &str,
    identities: &Identities,
) -> Result<SecretTree, SecretsError> {
    Ok(open_document(path, text, identities)?.tree)
}

/// The engine core decrypts secrets files with the age identities through this.
impl super::SecretsSource for Identities {
    fn recipients(&self) -> Vec<String> {
        Identities::recipients(self)
    }

    fn decrypt_document(&self, path: &Path, text: &str) -> Result<SecretTree, SecretsError> {
        decrypt_document(path, text, self)
    }
}

/// Reads, decrypts and verifies a secrets file.
pub fn decrypt_file(path: &Path, identities: &Identities) -> Result<SecretTree, SecretsError> {
    decrypt_document(path, &read_file(path)?, identities)
}

/// The decrypted file as plaintext YAML, for the caller to print.
pub fn show_file(path: &Path, identities: &Identities) -> Result<SecretString, SecretsError> {
    Ok(decrypt_file(path, identities)?.to_yaml())
}

/// Encrypts a tree under a fresh data key for `recipients`; returns the sops YAML text.
pub fn encrypt_document(
    path: &Path,
    tree: &SecretTree,
    recipients: &[Recipient],
    rule: &EncryptionRule,
) -> Result<String, SecretsError> {
    if recipients.is_empty() {
        return Err(SecretsError::NoRecipients { path: path.to_owned() });
    }
    let key = DataKey::generate();
    let stanzas = wrap_data_key(&key, recipients);
    seal(path, tree, &key, stanzas, rule, false, None)
}

fn seal(
    path: &Path,
    tree: &SecretTree,
    key: &DataKey,
    age: Vec<AgeStanza>,
    rule: &EncryptionRule,
    mac_only_encrypted: bool,
    previous: Option<&serde_yaml_ng::Mapping>,
) -> Result<String, SecretsError> {
    if let SecretTree::Map(entries) = tree
        && entries.iter().any(|(name, _)| name == SOPS_METADATA_KEY)
    {
        return Err(SecretsError::InvalidKeyPath {
            path: path.to_owned(),
            key_path: SOPS_METADATA_KEY.to_owned(),
            reason: "the top-level key `sops` is reserved for sops metadata".to_owned(),
        });
    }
    let matcher = rule.matcher(path)?;
    let (data, mac) = encrypt_tree(path, tree, key, &matcher, mac_only_encrypted, previous)?;
    let last_modified = now_rfc3339_seconds();
    let mac = encrypt_mac(key, &mac, &last_modified);
    Ok(emit_document(&Document {
        data,
        metadata: Metadata {
            age,
            last_modified,
            mac,
            version: SOPS_FORMAT_VERSION.to_owned(),
            rule: rule.clone(),
            mac_only_encrypted,
            other_key_groups: Vec::new(),
        },
    }))
}

/// `time.Now().UTC().Format(time.RFC3339)`: whole seconds, `Z`.
fn now_rfc3339_seconds() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

pub(super) fn refuse_other_key_groups(path: &Path, metadata: &Metadata) -> Result<(), SecretsError> {
    if metadata.other_key_groups.is_empty() {
        Ok(())
    } else {
        Err(SecretsError::Unsupported {
            path: path.to_owned(),
            feature: format!(
                "rewriting a file whose data key is also wrapped for {} (use sops, or re-encrypt it for age recipients)",
                metadata.other_key_groups.join(", ")
            ),
        })
    }
}

/// Re-encrypts an opened file under its own data key and writes it atomically: values left as
/// they were keep their ciphertext, changed and new ones get fresh IVs, and the MAC and
/// lastmodified are new.
pub(super) fn write_reopened(path: &Path, opened: &Opened, tree: &SecretTree) -> Result<(), SecretsError> {
    refuse_other_key_groups(path, &opened.metadata)?;
    let text = seal(
        path,
        tree,
        &opened.key,
        opened.metadata.age.clone(),
        &opened.metadata.rule,
        opened.metadata.mac_only_encrypted,
        Some(&opened.data),
    )?;
    write_atomic(path, text.as_bytes(), &AtomicWriteOptions::default())?;
    Ok(())
}

/// Creates a new secrets file for `recipients` with `tree` as content (use
/// [`SecretTree::empty`] for an empty file). Refuses to overwrite an existing file.
pub fn create_file(path: &Path, recipients: &[Recipient], tree: &SecretTree) -> Result<(), SecretsError> {
    if path.exists() {
        return Err(SecretsError::AlreadyExists { path: path.to_owned() });
    }
    let text = encrypt_document(path, tree, recipients, &EncryptionRule::default())?;
    write_atomic(path, text.as_bytes(), &AtomicWriteOptions { mode: Some(0o644) })?;
    Ok(())
}

/// Sets the string at a dotted key path (`db.password`), creating intermediate maps, and
/// re-encrypts the file under its data key.
pub fn set_value(
    path: &Path,
    key_path: &str,
    value: SecretString,
    identities: &Identities,
) -> Result<(), SecretsError> {
    set_value_keeping(path, key_path, value, identities, &KeepEncrypted::default())
}

/// [`set_value`], refusing a key of `keep` that the file's rule would store in clear.
pub fn set_value_keeping(
    path: &Path,
    key_path: &str,
    value: SecretString,
    identities: &Identities,
    keep: &KeepEncrypted,
) -> Result<(), SecretsError> {
    let invalid = |reason: &str| SecretsError::InvalidKeyPath {
        path: path.to_owned(),
        key_path: key_path.to_owned(),
        reason: reason.to_owned(),
    };
    let components: Vec<&str> = key_path.split('.').collect();
    if components.iter().any(|component| component.is_empty()) {
        return Err(invalid("a component of the dotted path is empty"));
    }
    if components[0] == SOPS_METADATA_KEY {
        return Err(invalid("the top-level key `sops` is reserved for sops metadata"));
    }
    let opened = open_document(path, &read_file(path)?, identities)?;
    // A file written by sops with `encrypted_regex` (say) leaves other keys in clear: never
    // store a secret in clear by accident. The `_unencrypted` suffix of the default rule is a
    // deliberate choice and stays allowed.
    let owned: Vec<String> = components.iter().map(|c| (*c).to_owned()).collect();
    let matcher = opened.metadata.rule.matcher(path)?;
    if !matcher.should_encrypt(&owned) && keep.covers(&owned, &opened.metadata.rule) {
        return Err(in_clear_error(path, key_path, &opened.metadata.rule));
    }
    if !matcher.should_encrypt(&owned)
        && !matches!(opened.metadata.rule, crate::secrets::EncryptionRule::UnencryptedSuffix(_))
    {
        return Err(invalid(
            "the file's encryption rule would store this value in clear; use a key the rule encrypts",
        ));
    }
    let mut tree = opened.tree.clone();
    tree.set(&components, SecretValue::string(value)).map_err(|reason| invalid(&reason))?;
    write_reopened(path, &opened, &tree)
}

/// Re-encrypts a file for a new set of recipients under a fresh data key (key rotation). The
/// file must decrypt with `identities` and its MAC verify first.
pub fn reencrypt_file(
    path: &Path,
    identities: &Identities,
    recipients: &[Recipient],
) -> Result<(), SecretsError> {
    let (text, _) = reencrypt_document(path, &read_file(path)?, identities, recipients)?;
    write_atomic(path, text.as_bytes(), &AtomicWriteOptions::default())?;
    Ok(())
}

/// A file decrypted and verified (MAC included), kept to be re-encrypted later without
/// decrypting it again (a rotation decrypts every file before it starts, then re-encrypts them
/// in batches).
pub struct OpenedDocument(Opened);

impl OpenedDocument {
    /// Decrypts and verifies sops text read from `path`.
    pub fn open(path: &Path, text: &str, identities: &Identities) -> Result<OpenedDocument, SecretsError> {
        open_document(path, text, identities).map(OpenedDocument)
    }

    /// The decrypted content.
    pub fn tree(&self) -> &SecretTree {
        &self.0.tree
    }

    /// The recipients its data key is wrapped for, in file order.
    pub fn recipients(&self) -> Vec<String> {
        self.0.metadata.age.iter().map(|stanza| stanza.recipient.clone()).collect()
    }

    /// The same content under a fresh data key for `recipients` (fresh IVs, new MAC).
    pub fn reencrypt(&self, path: &Path, recipients: &[Recipient]) -> Result<String, SecretsError> {
        if recipients.is_empty() {
            return Err(SecretsError::NoRecipients { path: path.to_owned() });
        }
        let key = DataKey::generate();
        let stanzas = wrap_data_key(&key, recipients);
        let metadata = &self.0.metadata;
        seal(path, &self.0.tree, &key, stanzas, &metadata.rule, metadata.mac_only_encrypted, None)
    }
}

/// [`reencrypt_file`] on text already read (`path` names it in errors): the new text and the
/// decrypted content, for a caller that writes many files in one batch and verifies them.
pub fn reencrypt_document(
    path: &Path,
    text: &str,
    identities: &Identities,
    recipients: &[Recipient],
) -> Result<(String, SecretTree), SecretsError> {
    let opened = OpenedDocument::open(path, text, identities)?;
    let text = opened.reencrypt(path, recipients)?;
    Ok((text, opened.0.tree))
}
