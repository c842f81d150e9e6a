//! Values with their secrets marked. While values are built (template, `values_custom`,
//! `values_sensitive_custom`, deep-merged), every secret leaf is a placeholder string that
//! points into a [`SecretTable`]; merging is then an ordinary JSON deep merge, and a secret
//! replaced by a later level simply disappears. [`Values`] is the result: a tree in which each
//! secret leaf is shown as `(sensitive)`, the digests of the secrets by path, and the secrets
//! themselves, reachable only through [`Values::expose`].

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::sensitive::{REDACTED, SecretString};

const PLACEHOLDER_PREFIX: &str = "\u{1}opus-sensitive:";

/// The word of [`PLACEHOLDER_PREFIX`], lowercase: templates refuse output that carries it
/// other than as a secret placed whole.
pub(crate) const PLACEHOLDER_WORD: &str = "opus-sensitive:";

/// Whether a string is exactly one placeholder (as [`SecretTable::placeholder`] makes them):
/// the template context turns these into secret handles.
pub fn is_placeholder(text: &str) -> bool {
    text.strip_prefix(PLACEHOLDER_PREFIX)
        .and_then(|rest| rest.strip_suffix('\u{1}'))
        .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
}

/// How secret values are hashed for fingerprints and plan diffs.
#[derive(Clone)]
pub enum DigestKey {
    /// Secrets were decrypted: HMAC-SHA256 under the environment's fingerprint key, so equal
    /// values compare equal and nobody without the key can test guesses.
    Keyed(SecretString),
    /// No keys: only the ciphertexts are known, so a digest changes whenever the encrypted
    /// file's value changes.
    Locked,
}

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DigestKey::Keyed(_) => "DigestKey::Keyed",
            DigestKey::Locked => "DigestKey::Locked",
        })
    }
}

impl DigestKey {
    /// The digest of a decrypted secret.
    pub fn digest(&self, value: &SecretString) -> String {
        match self {
            DigestKey::Keyed(key) => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).expect("any key length");
                mac.update(value.expose().as_bytes());
                format!("hmac:{}", &hex::encode(mac.finalize().into_bytes())[..32])
            }
            DigestKey::Locked => unreachable!("locked secrets are digested from their ciphertext"),
        }
    }

    /// The digest of a secret known only by its ciphertext.
    pub fn ciphertext_digest(ciphertext: &str) -> String {
        format!("enc:{}", &hex::encode(Sha256::digest(ciphertext.as_bytes()))[..32])
    }
}

/// One secret: its digest and, when decrypted, its value.
#[derive(Debug, Clone)]
pub struct SecretEntry {
    pub digest: String,
    pub value: Option<SecretString>,
}

/// The secrets referenced by placeholders while values are built.
#[derive(Debug, Default, Clone)]
pub struct SecretTable {
    entries: Vec<SecretEntry>,
}

impl SecretTable {
    /// Registers a secret and returns the placeholder that stands for it in a value tree.
    pub fn placeholder(&mut self, entry: SecretEntry) -> String {
        self.entries.push(entry);
        format!("{PLACEHOLDER_PREFIX}{}\u{1}", self.entries.len() - 1)
    }

    fn lookup(&self, text: &str) -> Option<&SecretEntry> {
        let index = text.strip_prefix(PLACEHOLDER_PREFIX)?.strip_suffix('\u{1}')?;
        self.entries.get(index.parse::<usize>().ok()?)
    }

    /// Replaces every placeholder *inside* a longer string with the secret (a URL with a
    /// password, say): the whole string becomes one new secret.
    pub fn absorb_embedded(&mut self, text: &str, key: &DigestKey) -> Option<String> {
        if !text.contains(PLACEHOLDER_PREFIX) || self.lookup(text).is_some() {
            return None;
        }
        let mut clear = String::new();
        let mut digests = Vec::new();
        let mut decrypted = true;
        let mut rest = text;
        while let Some(start) = rest.find(PLACEHOLDER_PREFIX) {
            clear.push_str(&rest[..start]);
            digests.push(format!("text:{}", &rest[..start]));
            let after = &rest[start..];
            let end = after[1..].find('\u{1}').map_or(after.len(), |i| i + 2);
            match self.lookup(&after[..end]) {
                Some(entry) => {
                    digests.push(entry.digest.clone());
                    match &entry.value {
                        Some(value) => clear.push_str(value.expose()),
                        None => decrypted = false,
                    }
                }
                None => clear.push_str(&after[..end]),
            }
            rest = &after[end..];
        }
        clear.push_str(rest);
        digests.push(format!("text:{rest}"));
        let entry = if decrypted && matches!(key, DigestKey::Keyed(_)) {
            let value = SecretString::new(clear);
            SecretEntry { digest: key.digest(&value), value: Some(value) }
        } else {
            SecretEntry { digest: DigestKey::ciphertext_digest(&digests.join("\u{0}")), value: None }
        };
        Some(self.placeholder(entry))
    }
}

/// Helm values (or manifests) ready for a plan step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values {
    /// The tree, each secret shown as `(sensitive)`.
    shown: serde_json::Value,
    /// Digest of each secret by its path (`db.password`, `additionalVars[1].value`).
    sensitive: BTreeMap<String, String>,
    /// The secrets by path, when decrypted.
    secrets: BTreeMap<String, SecretString>,
    /// The decrypted secrets by JSON pointer (RFC 6901), for [`Values::expose_tree`]: the dotted
    /// paths above are for people and are ambiguous when a key holds a dot (`db.password` as
    /// one key of a Secret's data, `dapr.io/app-id` as an annotation).
    exposed: Vec<(String, SecretString)>,
}

impl Values {
    /// Turns a tree with placeholders into values. Embedded placeholders must have been
    /// absorbed before (see [`finish_tree`]).
    pub fn from_marked(tree: &serde_json::Value, table: &SecretTable) -> Values {
        Values::from_marked_owned(tree.clone(), table)
    }

    /// [`Values::from_marked`] of a tree it may consume: the placeholders are replaced in
    /// place, without copying the tree.
    pub fn from_marked_owned(mut tree: serde_json::Value, table: &SecretTable) -> Values {
        let mut values = Values::default();
        values.mark(&mut tree, table, &mut String::new(), &mut String::new());
        values.shown = tree;
        values
    }

    fn mark(
        &mut self,
        node: &mut serde_json::Value,
        table: &SecretTable,
        path: &mut String,
        pointer: &mut String,
    ) {
        use std::fmt::Write as _;
        match node {
            serde_json::Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    let (len, pointer_len) = (path.len(), pointer.len());
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    pointer.push('/');
                    if key.contains(['~', '/']) {
                        pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                    } else {
                        pointer.push_str(key);
                    }
                    self.mark(value, table, path, pointer);
                    path.truncate(len);
                    pointer.truncate(pointer_len);
                }
            }
            serde_json::Value::Array(items) => {
                for (idx, item) in items.iter_mut().enumerate() {
                    let (len, pointer_len) = (path.len(), pointer.len());
                    write!(path, "[{idx}]").expect("writing to a String");
                    write!(pointer, "/{idx}").expect("writing to a String");
                    self.mark(item, table, path, pointer);
                    path.truncate(len);
                    pointer.truncate(pointer_len);
                }
            }
            serde_json::Value::String(text) => {
                if let Some(entry) = table.lookup(text) {
                    self.sensitive.insert(path.clone(), entry.digest.clone());
                    if let Some(value) = &entry.value {
                        self.secrets.insert(path.clone(), value.clone());
                        self.exposed.push((pointer.clone(), value.clone()));
                    }
                    *text = REDACTED.to_owned();
                }
            }
            _ => {}
        }
    }

    /// The tree with secrets shown as `(sensitive)`: safe to print, store and diff.
    pub fn shown(&self) -> &serde_json::Value {
        &self.shown
    }

    /// Digests of the secrets by path.
    pub fn sensitive(&self) -> &BTreeMap<String, String> {
        &self.sensitive
    }

    /// Whether every secret is decrypted (a plan made without keys cannot be deployed).
    pub fn is_complete(&self) -> bool {
        self.secrets.len() == self.sensitive.len()
    }

    /// The values with the secrets in clear, as YAML: only for a driver to hand to helm on
    /// stdin or to encrypt. `None` when some secret was not decrypted.
    pub fn expose_yaml(&self) -> Option<SecretString> {
        let tree = self.expose_tree()?;
        Some(SecretString::new(serde_yaml_ng::to_string(&tree).expect("JSON values are YAML")))
    }

    /// The tree with secrets in clear. `None` when some secret was not decrypted.
    pub fn expose_tree(&self) -> Option<serde_json::Value> {
        if !self.is_complete() {
            return None;
        }
        let mut tree = self.shown.clone();
        for (pointer, secret) in &self.exposed {
            if let Some(slot) = tree.pointer_mut(pointer) {
                *slot = serde_json::Value::String(secret.expose().to_owned());
            }
        }
        Some(tree)
    }

    /// The secrets, for a [`crate::sensitive::Redactor`].
    pub fn secrets(&self) -> impl Iterator<Item = &SecretString> {
        self.secrets.values()
    }
}

impl Serialize for Values {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Values", 2)?;
        s.serialize_field("values", &self.shown)?;
        s.serialize_field("sensitive", &self.sensitive)?;
        s.end()
    }
}

/// Walks a tree and absorbs embedded placeholders, so every secret leaf is one placeholder.
pub fn finish_tree(node: &mut serde_json::Value, table: &mut SecretTable, key: &DigestKey) {
    match node {
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| finish_tree(v, table, key)),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| finish_tree(v, table, key)),
        serde_json::Value::String(text) => {
            if let Some(placeholder) = table.absorb_embedded(text, key) {
                *text = placeholder;
            }
        }
        _ => {}
    }
}

/// Deep-merges `upper` into `lower`: maps merge key by key, lists and scalars replace.
pub fn deep_merge(lower: &mut serde_json::Value, upper: &serde_json::Value) {
    match (lower, upper) {
        (serde_json::Value::Object(lower), serde_json::Value::Object(upper)) => {
            for (key, value) in upper {
                match lower.get_mut(key) {
                    Some(slot) => deep_merge(slot, value),
                    None => {
                        lower.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (lower, upper) => *lower = upper.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> DigestKey {
        DigestKey::Keyed(SecretString::new("k"))
    }

    #[test]
    fn secrets_under_keys_with_dots_and_slashes_are_exposed_in_place() {
        let mut table = SecretTable::default();
        let k = key();
        let mut placeholder = |text: &str| {
            let secret = SecretString::new(text);
            table.placeholder(SecretEntry { digest: k.digest(&secret), value: Some(secret) })
        };
        let tree = json!({
            "db.password": placeholder("canary-dotted"),
            "annotations": {"vault.example/token": placeholder("canary-slashed")},
            "env": [{"value": placeholder("canary-listed")}],
        });
        let values = Values::from_marked(&tree, &table);
        assert_eq!(
            values.expose_tree().unwrap(),
            json!({
                "db.password": "canary-dotted",
                "annotations": {"vault.example/token": "canary-slashed"},
                "env": [{"value": "canary-listed"}],
            })
        );
    }

    #[test]
    fn a_secret_replaced_by_a_later_level_is_no_longer_sensitive() {
        let mut table = SecretTable::default();
        let k = key();
        let secret = SecretString::new("canary-1");
        let p = table.placeholder(SecretEntry { digest: k.digest(&secret), value: Some(secret) });
        let mut tree = json!({"db": {"password": p, "host": "h"}, "list": [1, 2]});
        deep_merge(&mut tree, &json!({"db": {"host": "h2"}, "list": [3]}));
        let values = Values::from_marked(&tree, &table);
        assert_eq!(values.shown(), &json!({"db": {"password": "(sensitive)", "host": "h2"}, "list": [3]}));
        assert_eq!(values.sensitive().keys().collect::<Vec<_>>(), ["db.password"]);
        let exposed = values.expose_yaml().unwrap();
        assert!(exposed.expose().contains("canary-1"));
        assert!(!serde_json::to_string(&values).unwrap().contains("canary-1"));

        deep_merge(&mut tree, &json!({"db": {"password": "plain"}}));
        let values = Values::from_marked(&tree, &table);
        assert!(values.sensitive().is_empty());
    }

    #[test]
    fn embedded_secrets_make_the_whole_string_sensitive() {
        let mut table = SecretTable::default();
        let k = key();
        let secret = SecretString::new("canary-2");
        let p = table.placeholder(SecretEntry { digest: k.digest(&secret), value: Some(secret) });
        let mut tree = json!({"url": format!("postgres://u:{p}@host/db"), "items": [{"v": p}]});
        finish_tree(&mut tree, &mut table, &k);
        let values = Values::from_marked(&tree, &table);
        assert_eq!(values.shown()["url"], json!("(sensitive)"));
        assert_eq!(values.sensitive().keys().collect::<Vec<_>>(), ["items[0].v", "url"]);
        let exposed = values.expose_tree().unwrap();
        assert_eq!(exposed["url"], json!("postgres://u:canary-2@host/db"));
        assert_eq!(exposed["items"][0]["v"], json!("canary-2"));
    }

    #[test]
    fn keyed_digests_hide_the_value_and_compare_equal_values_equal() {
        let k = key();
        let a = k.digest(&SecretString::new("same"));
        assert_eq!(a, k.digest(&SecretString::new("same")));
        assert_ne!(a, k.digest(&SecretString::new("other")));
        assert_ne!(a, DigestKey::Keyed(SecretString::new("k2")).digest(&SecretString::new("same")));
        assert!(!a.contains("same"));
    }
}
