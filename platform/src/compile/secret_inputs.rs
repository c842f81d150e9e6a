//! The secrets a plan needs: every `secrets.enc.yaml` of an environment, read as sops files.
//! Without keys (a pull request's CI) only their structure is known: the recipients, the key
//! paths and the ciphertexts, which is enough to check them and to see which secret changed.
//! With keys they are decrypted, and every secret stays marked sensitive from here on.

use std::collections::BTreeMap;
use std::path::Path;

use crate::catalog::Catalog;
use crate::diagnostic::Diagnostic;
use crate::load::environment::start_span;
use crate::load::tree::SourceTree;
use crate::model::Environment;
use crate::secrets::{FileSummary, Identities, SecretTree, inspect_document};
use crate::source::{FileId, SourceMap, Span};
use crate::values::{DigestKey, SecretEntry, SecretTable};

/// Keys every environment's own `secrets.enc.yaml` must hold.
pub const ENV_SECRET_KEYS: &[&str] = &["fingerprint_key", "database.admin_password"];

/// The top-level key of a component's secrets file whose content is merged into its values.
pub const VALUES_SENSITIVE_CUSTOM: &str = "values_sensitive_custom";

/// One secrets file as the plan sees it.
#[derive(Debug, Clone)]
pub struct SecretFile {
    pub path: String,
    /// The file in the [`SourceMap`], for diagnostics.
    pub file: FileId,
    pub summary: FileSummary,
    /// The decrypted content, when keys were available.
    pub decrypted: Option<SecretTree>,
    /// Each leaf's ciphertext by dotted path (lists as `[idx]`).
    pub ciphertexts: BTreeMap<String, String>,
}

impl SecretFile {
    /// The secret at a dotted path, as a table entry (decrypted or known by its ciphertext).
    pub fn entry(&self, path: &str, key: &DigestKey) -> Option<SecretEntry> {
        match (&self.decrypted, key) {
            (Some(tree), DigestKey::Keyed(_)) => {
                let value = tree.get(path)?.text().clone();
                Some(SecretEntry { digest: key.digest(&value), value: Some(value) })
            }
            _ => {
                let ciphertext = self.ciphertexts.get(path)?;
                Some(SecretEntry { digest: DigestKey::ciphertext_digest(ciphertext), value: None })
            }
        }
    }

    /// Leaf paths below a prefix (or all with `""`), in file order.
    pub fn paths_under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.ciphertexts.keys().filter(move |p| prefix.is_empty() || p.starts_with(&format!("{prefix}.")))
    }

    /// Places a secret into a template-ready tree: each leaf below `prefix` as a placeholder.
    pub fn placeholders(&self, prefix: &str, key: &DigestKey, table: &mut SecretTable) -> serde_json::Value {
        let mut tree = serde_json::Value::Object(Default::default());
        for path in self.paths_under(prefix) {
            let Some(entry) = self.entry(path, key) else { continue };
            let relative = if prefix.is_empty() { path.as_str() } else { &path[prefix.len() + 1..] };
            insert_path(&mut tree, relative, serde_json::Value::String(table.placeholder(entry)));
        }
        tree
    }
}

/// Every secrets file of an environment.
#[derive(Debug, Clone)]
pub struct SecretInputs {
    pub environment: Option<SecretFile>,
    /// By component id (`namespace/component`).
    pub components: BTreeMap<String, SecretFile>,
    pub digest_key: DigestKey,
}

impl SecretInputs {
    pub fn is_decrypted(&self) -> bool {
        matches!(self.digest_key, DigestKey::Keyed(_))
    }
}

/// Reads (and with `identities`, decrypts) every secrets file, checking what can be checked
/// without keys: well-formed sops, encrypted for exactly the environment's recipients, every
/// required key present.
pub fn load_secret_inputs(
    env: &Environment,
    catalog: &Catalog,
    tree: &dyn SourceTree,
    identities: Option<&Identities>,
    sources: &mut SourceMap,
) -> (SecretInputs, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let expected: Vec<String> = {
        let mut r = env.env.secrets.age_recipients.clone();
        r.sort();
        r
    };
    let env_path = env.secrets_path();
    let environment = read_secret_file(tree, &env_path, &expected, identities, sources, &mut out);
    match &environment {
        Some(file) => require_keys(file, ENV_SECRET_KEYS, None, &mut out),
        None if !out.iter().any(|d| d.message.contains(&env_path)) => out.push(
            Diagnostic::error(format!("missing {env_path}"))
                .at(start_span(&env.env_node), format!("environment `{}` has no secrets file", env.name))
                .help(format!(
                    "create it with `cargo xtask secrets new {env_path}`; it holds {}",
                    ENV_SECRET_KEYS.join(", ")
                )),
        ),
        None => {}
    }
    let mut components = BTreeMap::new();
    for component in env.components().filter(|c| c.file.enabled) {
        let Some(template) = catalog.get(&component.template) else { continue };
        let required = template.definition.secret_keys();
        match &component.secrets_path {
            Some(path) => {
                if let Some(file) = read_secret_file(tree, path, &expected, identities, sources, &mut out) {
                    require_keys(&file, required, Some(&component.id()), &mut out);
                    components.insert(component.id(), file);
                }
            }
            None if !required.is_empty() => {
                let path = component.path.replace("component.toml", "secrets.enc.yaml");
                out.push(
                    Diagnostic::error(format!("{} has no secrets file", component.id()))
                        .at(
                            start_span(&component.node),
                            format!("`{}` needs {}", component.template, required.join(", ")),
                        )
                        .help(format!("create it with `cargo xtask secrets new {path}`")),
                );
            }
            None => {}
        }
    }
    let digest_key = match environment
        .as_ref()
        .and_then(|f| f.decrypted.as_ref())
        .and_then(|t| t.get("fingerprint_key"))
    {
        Some(value) if identities.is_some() => DigestKey::Keyed(value.text().clone()),
        _ => DigestKey::Locked,
    };
    (SecretInputs { environment, components, digest_key }, out)
}

fn read_secret_file(
    tree: &dyn SourceTree,
    path: &str,
    expected_recipients: &[String],
    identities: Option<&Identities>,
    sources: &mut SourceMap,
    out: &mut Vec<Diagnostic>,
) -> Option<SecretFile> {
    let text = match tree.read(path) {
        Ok(Some(text)) => text,
        Ok(None) => return None,
        Err(e) => {
            out.push(Diagnostic::error(format!("cannot read {path}: {e}")));
            return None;
        }
    };
    let file_id = sources.add(path, text.clone());
    let whole = Span::new(file_id, 0..text.len().min(1));
    let summary = match inspect_document(Path::new(path), &text) {
        Ok(summary) => summary,
        Err(e) => {
            out.push(Diagnostic::error(e.to_string()).at(whole, "not a well-formed sops file"));
            return None;
        }
    };
    let mut found = summary.recipients.clone();
    found.sort();
    // An invalid recipient in env.toml is reported there; comparing against it would only
    // repeat that one mistake for every file.
    let all_valid = expected_recipients.iter().all(|r| r.parse::<age::x25519::Recipient>().is_ok());
    if all_valid && found != expected_recipients {
        let span = find_span(&text, "age:").map_or(whole, |r| Span::new(file_id, r));
        out.push(
            Diagnostic::error(format!("{path} is not encrypted for exactly the environment's recipients"))
                .at(span, format!("encrypted for {}", found.join(", ")))
                .help(format!(
                    "env.toml lists {}; `cargo xtask rotate-keys` or `cargo xtask secrets edit` re-encrypts for them",
                    expected_recipients.join(", ")
                )),
        );
    }
    let ciphertexts = leaf_ciphertexts(&text);
    let decrypted = match identities {
        Some(ids) => match crate::secrets::decrypt_document(Path::new(path), &text, ids) {
            Ok(tree) => Some(tree),
            Err(e) => {
                out.push(Diagnostic::error(e.to_string()).at(whole, "cannot be decrypted"));
                return None;
            }
        },
        None => None,
    };
    Some(SecretFile { path: path.to_owned(), file: file_id, summary, decrypted, ciphertexts })
}

fn require_keys(file: &SecretFile, required: &[&str], owner: Option<&str>, out: &mut Vec<Diagnostic>) {
    let missing: Vec<&&str> =
        required.iter().filter(|k| !file.summary.key_paths.iter().any(|p| p == *k)).collect();
    if missing.is_empty() {
        return;
    }
    let names: Vec<String> = missing.iter().map(|k| format!("`{k}`")).collect();
    out.push(
        Diagnostic::error(format!(
            "{} is missing {} {}",
            file.path,
            if missing.len() == 1 { "secret" } else { "secrets" },
            names.join(", ")
        ))
        .at(
            Span::new(file.file, 0..1),
            owner.map_or("the environment needs it".to_owned(), |o| format!("{o} needs it")),
        )
        .help(format!(
            "add it with `cargo xtask secrets set {} {} -` (the value is read from stdin)",
            file.path, missing[0]
        )),
    );
}

fn find_span(text: &str, needle: &str) -> Option<std::ops::Range<usize>> {
    text.find(needle).map(|start| start..start + needle.len())
}

/// Every leaf's text outside the `sops` block, by dotted path.
fn leaf_ciphertexts(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(serde_yaml_ng::Value::Mapping(map)) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        for (key, value) in map {
            let Some(key) = key.as_str() else { continue };
            if key != "sops" {
                collect_leaves(&value, key.to_owned(), &mut out);
            }
        }
    }
    out
}

fn collect_leaves(value: &serde_yaml_ng::Value, path: String, out: &mut BTreeMap<String, String>) {
    match value {
        serde_yaml_ng::Value::Mapping(map) => {
            for (key, child) in map {
                if let Some(key) = key.as_str() {
                    collect_leaves(child, format!("{path}.{key}"), out);
                }
            }
        }
        serde_yaml_ng::Value::Sequence(items) => {
            for (idx, item) in items.iter().enumerate() {
                collect_leaves(item, format!("{path}[{idx}]"), out);
            }
        }
        serde_yaml_ng::Value::String(s) => {
            out.insert(path, s.clone());
        }
        other => {
            out.insert(path, serde_yaml_ng::to_string(other).unwrap_or_default().trim().to_owned());
        }
    }
}

fn insert_path(tree: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut node = tree;
    let parts: Vec<&str> = path.split('.').collect();
    for (idx, part) in parts.iter().enumerate() {
        let map = match node {
            serde_json::Value::Object(map) => map,
            _ => return,
        };
        if idx == parts.len() - 1 {
            map.insert((*part).to_owned(), value);
            return;
        }
        node = map.entry((*part).to_owned()).or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
}
