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
    /// Secrets were decrypted: HMAC-SHA256 under the environment's fingerprint key, over the
    /// secret's place (its file and key path) and its value, so nobody without the key can test
    /// guesses and equal values in two places do not show as equal digests (a reviewer would
    /// learn that two services share a password).
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
    /// The digest of a decrypted secret at its place: `file` (the secrets file, relative to the
    /// repository) and `key_path` (dotted, within the file).
    pub fn digest_at(&self, file: &str, key_path: &str, value: &SecretString) -> String {
        match self {
            DigestKey::Keyed(key) => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).expect("any key length");
                mac.update(b"opus-deploy secret digest 3\0");
                for part in [file, key_path] {
                    mac.update(&(part.len() as u64).to_be_bytes());
                    mac.update(part.as_bytes());
                }
                mac.update(value.expose().as_bytes());
                format!("hmac:{}", &hex::encode(mac.finalize().into_bytes())[..32])
            }
            DigestKey::Locked => unreachable!("locked secrets are digested from their ciphertext"),
        }
    }

    /// The digest fingerprint formats 1 and 2 used: of the value alone, equal for equal values
    /// anywhere in the environment. Computed beside [`DigestKey::digest_at`] only so that a
    /// step recorded under those formats can be recognised as unchanged
    /// ([`crate::plan::fingerprint`]).
    pub fn legacy_digest(&self, value: &SecretString) -> String {
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
    /// Beside each entry, the digest it had in fingerprint formats 1 and 2, when that differs.
    legacy: Vec<Option<String>>,
}

impl SecretTable {
    /// Registers a secret and returns the placeholder that stands for it in a value tree.
    pub fn placeholder(&mut self, entry: SecretEntry) -> String {
        self.placeholder_with_legacy(entry, None)
    }

    /// [`SecretTable::placeholder`] of a secret whose digest was `legacy` in fingerprint
    /// formats 1 and 2.
    pub fn placeholder_with_legacy(&mut self, entry: SecretEntry, legacy: Option<String>) -> String {
        self.entries.push(entry);
        self.legacy.push(legacy);
        format!("{PLACEHOLDER_PREFIX}{}\u{1}", self.entries.len() - 1)
    }

    fn legacy_of(&self, text: &str) -> Option<&String> {
        let index = text.strip_prefix(PLACEHOLDER_PREFIX)?.strip_suffix('\u{1}')?;
        self.legacy.get(index.parse::<usize>().ok()?)?.as_ref()
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
        if decrypted && let DigestKey::Keyed(hmac_key) = key {
            // Of the parts' digests, which carry their places: the same URL around the same
            // password in two components digests differently.
            let value = SecretString::new(clear);
            let mut mac =
                Hmac::<Sha256>::new_from_slice(hmac_key.expose().as_bytes()).expect("any key length");
            mac.update(b"opus-deploy embedded secret digest 3\0");
            for part in &digests {
                mac.update(&(part.len() as u64).to_be_bytes());
                mac.update(part.as_bytes());
            }
            let digest = format!("hmac:{}", &hex::encode(mac.finalize().into_bytes())[..32]);
            let legacy = Some(key.legacy_digest(&value));
            Some(self.placeholder_with_legacy(SecretEntry { digest, value: Some(value) }, legacy))
        } else {
            let entry =
                SecretEntry { digest: DigestKey::ciphertext_digest(&digests.join("\u{0}")), value: None };
            Some(self.placeholder(entry))
        }
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
    /// Each digest of `sensitive` that fingerprint formats 1 and 2 computed differently, with
    /// the digest they computed (never serialized: only [`crate::plan::fingerprint`] uses it).
    legacy_digests: BTreeMap<String, String>,
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
                    if let Some(legacy) = table.legacy_of(text) {
                        self.legacy_digests.insert(entry.digest.clone(), legacy.clone());
                    }
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

    /// Digests that fingerprint formats 1 and 2 computed differently: current -> legacy.
    pub fn legacy_digests(&self) -> &BTreeMap<String, String> {
        &self.legacy_digests
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
            table.placeholder(SecretEntry {
                digest: k.digest_at("s.enc.yaml", "p", &secret),
                value: Some(secret),
            })
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
        let p = table.placeholder(SecretEntry {
            digest: k.digest_at("s.enc.yaml", "p", &secret),
            value: Some(secret),
        });
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
        let p = table.placeholder(SecretEntry {
            digest: k.digest_at("s.enc.yaml", "p", &secret),
            value: Some(secret),
        });
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
    fn keyed_digests_hide_the_value_and_differ_between_places() {
        let k = key();
        let same = SecretString::new("same");
        let a = k.digest_at("environments/x/a/secrets.enc.yaml", "db.password", &same);
        assert_eq!(a, k.digest_at("environments/x/a/secrets.enc.yaml", "db.password", &same));
        assert_ne!(
            a,
            k.digest_at("environments/x/a/secrets.enc.yaml", "db.password", &SecretString::new("other"))
        );
        // The same password in two components, or under two keys, digests differently.
        assert_ne!(a, k.digest_at("environments/x/b/secrets.enc.yaml", "db.password", &same));
        assert_ne!(a, k.digest_at("environments/x/a/secrets.enc.yaml", "db.admin_password", &same));
        // Places cannot run into each other (`a` + `b.c` is not `a.b` + `c`).
        assert_ne!(k.digest_at("a", "b.c", &same), k.digest_at("a.b", "c", &same));
        assert_ne!(
            a,
            DigestKey::Keyed(SecretString::new("k2")).digest_at(
                "environments/x/a/secrets.enc.yaml",
                "db.password",
                &same
            )
        );
        assert!(!a.contains("same"));
    }

    #[test]
    fn an_embedded_secret_digests_by_its_parts_places() {
        let k = key();
        let value = SecretString::new("canary-3");
        let url = |table: &mut SecretTable, file: &str| {
            let p = table.placeholder(SecretEntry {
                digest: k.digest_at(file, "db.password", &value),
                value: Some(value.clone()),
            });
            let mut tree = json!({"url": format!("postgres://u:{p}@host/db")});
            finish_tree(&mut tree, table, &k);
            Values::from_marked(&tree, table)
        };
        let mut table = SecretTable::default();
        let a = url(&mut table, "a/secrets.enc.yaml");
        let b = url(&mut table, "b/secrets.enc.yaml");
        assert_ne!(a.sensitive()["url"], b.sensitive()["url"], "the same URL in two components");
        // Formats 1 and 2 digested the whole text alone: equal in both places.
        assert_eq!(a.legacy_digests()[&a.sensitive()["url"]], b.legacy_digests()[&b.sensitive()["url"]]);
    }
}
