//! The secrets a plan needs: every `secrets.enc.yaml` of an environment, read as sops files.
//! Without keys (a pull request's CI) only their structure is known: the recipients, the key
//! paths and the ciphertexts, which is enough to check them and to see which secret changed.
//! With keys they are decrypted, and every secret stays marked sensitive from here on.

use std::collections::BTreeMap;
use std::path::Path;

use crate::catalog::{Catalog, Definition};
use crate::diagnostic::Diagnostic;
use crate::load::environment::{ENVIRONMENTS_DIR, start_span};
use crate::load::schema_check::suggest;
use crate::load::tree::SourceTree;
use crate::model::Environment;
use crate::secrets::KeepEncrypted;
use crate::secrets::{
    FileSummary, SecretTree, SecretsError, SecretsSource, check_age_recipient, inspect_document,
};
use crate::source::{FileId, SourceMap, Span};
use crate::values::{DigestKey, SecretEntry, SecretTable};

/// Keys every environment's own `secrets.enc.yaml` must hold.
pub const ENV_SECRET_KEYS: &[&str] = &["fingerprint_key", "database.admin_password"];

/// The top-level key of a component's secrets file whose content is merged into its values.
pub const VALUES_SENSITIVE_CUSTOM: &str = "values_sensitive_custom";

/// The keys a secrets file may hold: the ones its owner reads. Anything else would be
/// accepted silently (a typo such as `db.pasword` becomes an extra key of the component's
/// Secret), so `check` refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSecretKeys {
    /// Exact dotted paths.
    pub keys: Vec<&'static str>,
    /// A top-level key whose content is free-form (`values_sensitive_custom`).
    pub free_form: Option<&'static str>,
}

impl KnownSecretKeys {
    /// The environment's own `secrets.enc.yaml`.
    pub fn environment() -> KnownSecretKeys {
        KnownSecretKeys { keys: ENV_SECRET_KEYS.to_vec(), free_form: None }
    }

    /// A component's `secrets.enc.yaml`: its template's keys, and `values_sensitive_custom`.
    pub fn component(definition: &Definition) -> KnownSecretKeys {
        KnownSecretKeys { keys: definition.secret_keys().to_vec(), free_form: Some(VALUES_SENSITIVE_CUSTOM) }
    }

    /// Whether a leaf at this dotted path is read by the file's owner.
    pub fn is_known(&self, path: &str) -> bool {
        self.keys.contains(&path)
            || self.free_form.is_some_and(|top| path == top || path.starts_with(&format!("{top}.")))
    }

    /// What `secrets set` and `secrets edit` must never store in clear.
    pub fn keep_encrypted(&self) -> KeepEncrypted {
        KeepEncrypted {
            keys: self.keys.iter().map(|k| (*k).to_owned()).collect(),
            subtrees: self.free_form.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    fn describe(&self) -> String {
        let mut known: Vec<String> = self.keys.iter().map(|k| format!("`{k}`")).collect();
        if let Some(top) = self.free_form {
            known.push(format!("anything under `{top}`"));
        }
        if known.is_empty() { "nothing".to_owned() } else { known.join(", ") }
    }
}

/// The keys the owner of a secrets file reads, by the file's place in the repository
/// (`relative` to its root): `environments/<env>/secrets.enc.yaml` is the environment's own
/// file, `environments/<env>/<namespace>/<component>/secrets.enc.yaml` a component's (its
/// template named by the `template` key of the `component.toml` beside it, else by the
/// directory). `None` for any other path, or a component of no known template.
pub fn owner_keys(catalog: &Catalog, root: &Path, relative: &Path) -> Option<KnownSecretKeys> {
    let parts: Vec<&str> = relative.iter().map(|p| p.to_str()).collect::<Option<_>>()?;
    match parts.as_slice() {
        [ENVIRONMENTS_DIR, _, SECRETS_FILE] => Some(KnownSecretKeys::environment()),
        [ENVIRONMENTS_DIR, _, _, component, SECRETS_FILE] => {
            let component_toml = root.join(relative).with_file_name("component.toml");
            let text = std::fs::read_to_string(component_toml).ok();
            let template = crate::load::environment::template_name(text.as_deref(), component);
            catalog.get(&template).map(|t| KnownSecretKeys::component(&t.definition))
        }
        _ => None,
    }
}

/// The name of every secrets file.
pub const SECRETS_FILE: &str = "secrets.enc.yaml";

/// The identities when one of them is a key of `recipients` (the environment's): only then
/// can every secrets file of the environment be decrypted and its MAC verified. Keys of other
/// environments (a CI holding staging's key checks prod too) do not count.
pub fn identities_for_recipients<K: SecretsSource>(identities: K, recipients: &[String]) -> Option<K> {
    let mine = identities.recipients();
    recipients.iter().any(|r| mine.contains(r)).then_some(identities)
}

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
    /// The secret at a dotted path, as a table entry (decrypted or known by its ciphertext),
    /// with the digest fingerprint formats 1 and 2 gave it when that differs.
    pub fn entry(&self, path: &str, key: &DigestKey) -> Option<(SecretEntry, Option<String>)> {
        match (&self.decrypted, key) {
            (Some(tree), DigestKey::Keyed(_)) => {
                let value = tree.get(path)?.text().clone();
                let legacy = key.legacy_digest(&value);
                Some((
                    SecretEntry { digest: key.digest_at(&self.path, path, &value), value: Some(value) },
                    Some(legacy),
                ))
            }
            _ => {
                let ciphertext = self.ciphertexts.get(path)?;
                Some((SecretEntry { digest: DigestKey::ciphertext_digest(ciphertext), value: None }, None))
            }
        }
    }

    /// The secret at a dotted path, registered in `table`: its placeholder.
    pub fn placeholder(&self, path: &str, key: &DigestKey, table: &mut SecretTable) -> Option<String> {
        let (entry, legacy) = self.entry(path, key)?;
        Some(table.placeholder_with_legacy(entry, legacy))
    }

    /// Leaf paths below a prefix (or all with `""`), in file order.
    pub fn paths_under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.ciphertexts.keys().filter(move |p| prefix.is_empty() || p.starts_with(&format!("{prefix}.")))
    }

    /// Places a secret into a template-ready tree: each leaf below `prefix` as a placeholder.
    pub fn placeholders(&self, prefix: &str, key: &DigestKey, table: &mut SecretTable) -> serde_json::Value {
        let mut tree = serde_json::Value::Object(Default::default());
        for path in self.paths_under(prefix) {
            let Some(placeholder) = self.placeholder(path, key, table) else { continue };
            let relative = if prefix.is_empty() { path.as_str() } else { &path[prefix.len() + 1..] };
            insert_path(&mut tree, relative, serde_json::Value::String(placeholder));
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
/// required key present, no key its owner does not read, no secret its owner reads stored in
/// clear. With `identities`, every value and the MAC are verified too: a tampered file is
/// refused, pointing at the value (or the MAC) that failed.
pub fn load_secret_inputs(
    env: &Environment,
    catalog: &Catalog,
    tree: &dyn SourceTree,
    identities: Option<&dyn SecretsSource>,
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
        Some(file) => {
            require_keys(file, ENV_SECRET_KEYS, None, &mut out);
            refuse_unknown_and_clear_keys(file, &KnownSecretKeys::environment(), None, sources, &mut out);
        }
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
                    let known = KnownSecretKeys::component(&template.definition);
                    let owner = format!("`{}` ({})", component.template, component.id());
                    refuse_unknown_and_clear_keys(&file, &known, Some(&owner), sources, &mut out);
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
    identities: Option<&dyn SecretsSource>,
    sources: &mut SourceMap,
    out: &mut Vec<Diagnostic>,
) -> Option<SecretFile> {
    let text = match tree.read(path) {
        Ok(Some(text)) => text,
        Ok(None) => return None,
        Err(e) => {
            // The tree's error names the path (and why: too large, outside the repository);
            // the file itself is not shown.
            let file_id = sources.add(path, String::new());
            out.push(Diagnostic::error(e.to_string()).at(Span::new(file_id, 0..0), "this file"));
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
    let all_valid = expected_recipients.iter().all(|r| check_age_recipient(r).is_ok());
    let wrong_recipients = all_valid && found != expected_recipients;
    if wrong_recipients {
        let span = find_span(&text, "age:").map_or(whole, |r| Span::new(file_id, r));
        out.push(
            Diagnostic::error(format!("{path} is not encrypted for exactly the environment's recipients"))
                .at(span, format!("encrypted for {}", found.join(", ")))
                .help(format!(
                    "env.toml lists {}; `cargo xtask secrets updatekeys {}` encrypts every file for them",
                    expected_recipients.join(", "),
                    // `environments/<env>/...`
                    path.split('/').nth(1).unwrap_or("ENV")
                )),
        );
    }
    let ciphertexts = leaf_ciphertexts(&text);
    let decrypted = match identities {
        Some(ids) => match ids.decrypt_document(Path::new(path), &text) {
            Ok(tree) => Some(tree),
            // Encrypted for other recipients: reported above, and that is why.
            Err(SecretsError::NoIdentity { .. } | SecretsError::WrongIdentity { .. }) if wrong_recipients => {
                return None;
            }
            Err(e) => {
                out.push(decryption_problem(&e, path, &text, file_id));
                return None;
            }
        },
        None => None,
    };
    Some(SecretFile { path: path.to_owned(), file: file_id, summary, decrypted, ciphertexts })
}

/// A secrets file that does not decrypt or whose MAC does not verify, pointing at the value
/// that failed (a tampered ciphertext) or at the MAC, not at the top of the file.
fn decryption_problem(error: &SecretsError, path: &str, text: &str, file: FileId) -> Diagnostic {
    let whole = Span::new(file, 0..text.len().min(1));
    let (span, label) = match error {
        SecretsError::ValueAuthentication { key_path, .. }
        | SecretsError::MalformedValue { key_path, .. } => {
            let parts: Vec<&str> = key_path.split('.').collect();
            let label = if matches!(error, SecretsError::MalformedValue { .. }) {
                "this value is malformed"
            } else {
                "this value failed authentication"
            };
            match yaml_value_span(text, &parts) {
                Some(range) => (Span::new(file, range), label),
                None => (whole, "cannot be decrypted"),
            }
        }
        SecretsError::MacMismatch { .. } | SecretsError::MacAuthentication { .. } => {
            match yaml_value_span(text, &["sops", "mac"]) {
                Some(range) => (Span::new(file, range), "the MAC does not match the file's values"),
                None => (whole, "cannot be decrypted"),
            }
        }
        _ => (whole, "cannot be decrypted"),
    };
    let mut diagnostic = Diagnostic::error(error.to_string()).at(span, label);
    if matches!(
        error,
        SecretsError::ValueAuthentication { .. }
            | SecretsError::MacMismatch { .. }
            | SecretsError::MacAuthentication { .. }
    ) {
        diagnostic = diagnostic.help(format!(
            "restore it from version control (`git checkout -- {path}`) and find out who changed it; sops and `cargo xtask secrets` refuse to open it as it is"
        ));
    }
    diagnostic
}

/// Refuses keys the file's owner does not read (with the closest known key), and secrets it
/// reads that the file's encryption rule stores in clear (sops' `_unencrypted` suffix).
fn refuse_unknown_and_clear_keys(
    file: &SecretFile,
    known: &KnownSecretKeys,
    owner: Option<&str>,
    sources: &SourceMap,
    out: &mut Vec<Diagnostic>,
) {
    let text = sources.file(file.file).text.clone();
    let whole = Span::new(file.file, 0..text.len().min(1));
    let owner_name = owner.unwrap_or("the environment");
    for key_path in &file.summary.key_paths {
        let parts: Vec<&str> = key_path.split('.').collect();
        let span = yaml_key_span(&text, &parts).map_or(whole, |range| Span::new(file.file, range));
        let in_clear = file.summary.plaintext_key_paths.contains(key_path);
        if !known.is_known(key_path) {
            let mut diagnostic = Diagnostic::error(format!("unknown secret `{key_path}` in {}", file.path))
                .at(span, format!("{owner_name} does not read this key"));
            let stripped = key_path.replace(crate::secrets::format::DEFAULT_UNENCRYPTED_SUFFIX, "");
            let candidates = known.keys.iter().copied();
            let help = if in_clear && stripped != *key_path && known.is_known(&stripped) {
                format!(
                    "`{stripped}` is a secret {owner_name} reads; the `_unencrypted` suffix would store it in clear and under another name: write it as `{stripped}`"
                )
            } else if let Some(best) = suggest(key_path, candidates) {
                format!("did you mean `{best}`? {owner_name} reads {}", known.describe())
            } else {
                format!("{owner_name} reads {}; remove this key", known.describe())
            };
            diagnostic = diagnostic.help(help);
            out.push(diagnostic);
        } else if in_clear {
            out.push(
                Diagnostic::error(format!("secret `{key_path}` is stored in clear in {}", file.path))
                    .at(span, "not encrypted: its key matches the file's unencrypted rule")
                    .help(format!(
                        "{owner_name} reads it as a secret, so it must be encrypted: rename the key without the `_unencrypted` suffix (`cargo xtask secrets edit {}`)",
                        file.path
                    )),
            );
        }
    }
}

/// The span of the key at `path` in a YAML document written in block style (as sops and this
/// tool write them): found line by line, following indentation. List items keep their list's
/// path, as in sops' key paths.
fn yaml_key_span(text: &str, path: &[&str]) -> Option<std::ops::Range<usize>> {
    yaml_find(text, path).map(|found| found.key)
}

/// The span of the value of the key at `path` (the key's when the value is not on its line).
fn yaml_value_span(text: &str, path: &[&str]) -> Option<std::ops::Range<usize>> {
    yaml_find(text, path).map(|found| found.value.unwrap_or(found.key))
}

struct YamlFound {
    key: std::ops::Range<usize>,
    value: Option<std::ops::Range<usize>>,
}

fn yaml_find(text: &str, path: &[&str]) -> Option<YamlFound> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    // Inside a block scalar (`|`, `>`): lines indented more than its key are its content.
    let mut block_scalar_indent: Option<usize> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim_start_matches(' ');
        let mut indent = content.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(block) = block_scalar_indent {
            if indent > block {
                continue;
            }
            block_scalar_indent = None;
        }
        let mut rest = trimmed;
        while let Some(after) = rest.strip_prefix("- ") {
            indent += 2;
            rest = after.trim_start_matches(' ');
            indent += after.len() - rest.len();
        }
        let (key, key_len) = match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let end = rest[1..].find(quote)? + 1;
                (rest[1..end].to_owned(), end + 1)
            }
            _ => match rest.find(": ").or_else(|| rest.ends_with(':').then(|| rest.len() - 1)) {
                Some(end) => (rest[..end].to_owned(), end),
                None => continue,
            },
        };
        if !rest[key_len..].starts_with(':') {
            continue;
        }
        while stack.last().is_some_and(|(level, _)| *level >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        let key_start = line_start + (content.len() - rest.len());
        let value_text = rest[key_len + 1..].trim_start_matches(' ');
        if value_text.starts_with('|') || value_text.starts_with('>') {
            block_scalar_indent = Some(indent);
        }
        if stack.len() == path.len() && stack.iter().zip(path).all(|((_, key), want)| key == want) {
            let value =
                (!value_text.is_empty() && !value_text.starts_with('|') && !value_text.starts_with('>'))
                    .then(|| {
                        let start = line_start + (content.len() - value_text.len());
                        start..line_start + content.len()
                    });
            return Some(YamlFound { key: key_start..key_start + key_len, value });
        }
    }
    None
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
