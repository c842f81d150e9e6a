//! Which keys of a secrets file must stay encrypted whatever the file's rule says.

use std::path::Path;

use super::SecretsError;
use super::format::EncryptionRule;
use super::tree::SecretTree;

/// Key paths a file must never store in clear, whatever its encryption rule says: the secrets
/// its owner reads (a template's keys, everything under `values_sensitive_custom`). A key is
/// matched without the rule's unencrypted suffix, so `db.password_unencrypted` is still
/// `db.password`. Every other key follows the file's rule, sops' `_unencrypted` suffix included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepEncrypted {
    /// Exact dotted paths.
    pub keys: Vec<String>,
    /// Top-level keys whose whole subtree is secret.
    pub subtrees: Vec<String>,
}

impl KeepEncrypted {
    /// Whether the value at `key_path` must be encrypted (`rule` gives the suffix to ignore).
    pub fn covers(&self, key_path: &[String], rule: &EncryptionRule) -> bool {
        let stripped: Vec<&str> = key_path
            .iter()
            .map(|key| match rule {
                EncryptionRule::UnencryptedSuffix(suffix) if !suffix.is_empty() => {
                    key.strip_suffix(suffix.as_str()).unwrap_or(key)
                }
                _ => key.as_str(),
            })
            .collect();
        let dotted = stripped.join(".");
        self.keys.contains(&dotted)
            || stripped.first().is_some_and(|first| self.subtrees.iter().any(|subtree| subtree == first))
    }

    /// The first leaf of `tree` that the file's rule would store in clear although it must
    /// stay encrypted.
    pub fn first_in_clear(
        &self,
        path: &Path,
        tree: &SecretTree,
        rule: &EncryptionRule,
    ) -> Result<Option<String>, SecretsError> {
        let matcher = rule.matcher(path)?;
        Ok(tree.leaf_paths().into_iter().find(|dotted| {
            let key_path: Vec<String> = dotted.split('.').map(str::to_owned).collect();
            !matcher.should_encrypt(&key_path) && self.covers(&key_path, rule)
        }))
    }
}

pub fn in_clear_error(path: &Path, key_path: &str, rule: &EncryptionRule) -> SecretsError {
    SecretsError::InvalidKeyPath {
        path: path.to_owned(),
        key_path: key_path.to_owned(),
        reason: format!(
            "this is a secret its component reads, and the file's rule (`{}`) would store it in clear; name it so that the rule encrypts it (without the suffix)",
            match rule {
                EncryptionRule::UnencryptedSuffix(text) => format!("unencrypted_suffix: {text}"),
                EncryptionRule::EncryptedSuffix(text) => format!("encrypted_suffix: {text}"),
                EncryptionRule::UnencryptedRegex(text) => format!("unencrypted_regex: {text}"),
                EncryptionRule::EncryptedRegex(text) => format!("encrypted_regex: {text}"),
            }
        ),
    }
}
