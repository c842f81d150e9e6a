//! The on-disk sops document: `ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]` values, the
//! `sops:` metadata block (age recipients with their wrapped data keys, `lastmodified`, `mac`,
//! the encryption rule, `version`), and a YAML emitter that writes sops' layout (four-space
//! indents, lists indented under their key, armored keys as literal blocks) so our files diff
//! cleanly against files written by sops. Parsing and checking need no key.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_yaml_ng::{Mapping, Value};

use super::SecretsError;
use super::tree::ValueKind;
use super::yaml::{
    MAX_SECRETS_FILE_BYTES, check_yaml_limits, emit_scalar, emit_yaml, too_large, yaml_error_location,
};

/// The key of the metadata block at the top level of a sops document.
pub const SOPS_METADATA_KEY: &str = "sops";

/// The sops release whose file format we write (`version:`); sops 3.x reads it.
pub const SOPS_FORMAT_VERSION: &str = "3.7.3";

/// The suffix sops leaves unencrypted when a file names no rule.
pub const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

/// sops uses 32-byte GCM nonces (`aes/cipher.go`), not the usual 12.
pub const NONCE_LEN: usize = 32;
/// The length of a GCM tag.
pub const TAG_LEN: usize = 16;

/// One encrypted value, decoded from its `ENC[...]` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedValue {
    pub data: Vec<u8>,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
    pub kind: ValueKind,
}

impl EncryptedValue {
    /// Parses `ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]`; the error says what is wrong
    /// without echoing the value.
    pub fn parse(text: &str) -> Result<EncryptedValue, String> {
        let inner = text
            .strip_prefix("ENC[AES256_GCM,")
            .and_then(|rest| rest.strip_suffix(']'))
            .ok_or_else(|| "not an ENC[AES256_GCM,...] value".to_owned())?;
        let mut fields = [None; 4];
        for part in inner.split(',') {
            let (name, content) =
                part.split_once(':').ok_or_else(|| "a field of the ENC[...] value has no name".to_owned())?;
            let slot = match name {
                "data" => 0,
                "iv" => 1,
                "tag" => 2,
                "type" => 3,
                _ => return Err(format!("unknown field `{name}` in ENC[...] value")),
            };
            fields[slot] = Some(content);
        }
        let [Some(data), Some(iv), Some(tag), Some(kind)] = fields else {
            return Err("the ENC[...] value lacks one of data, iv, tag, type".to_owned());
        };
        let decode = |field: &str, content: &str| {
            BASE64.decode(content).map_err(|_| format!("the {field} field is not valid base64"))
        };
        let value = EncryptedValue {
            data: decode("data", data)?,
            iv: decode("iv", iv)?,
            tag: decode("tag", tag)?,
            kind: ValueKind::from_sops_name(kind)
                .ok_or_else(|| format!("unsupported value type `{kind}`"))?,
        };
        if value.iv.len() != NONCE_LEN {
            return Err(format!("the iv has {} bytes, expected {}", value.iv.len(), NONCE_LEN));
        }
        if value.tag.len() != TAG_LEN {
            return Err(format!("the tag has {} bytes, expected {}", value.tag.len(), TAG_LEN));
        }
        Ok(value)
    }

    pub fn to_sops_string(&self) -> String {
        format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{}]",
            BASE64.encode(&self.data),
            BASE64.encode(&self.iv),
            BASE64.encode(&self.tag),
            self.kind.sops_name()
        )
    }
}

/// The data key wrapped for one age recipient (an armored age file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgeStanza {
    pub recipient: String,
    pub enc: String,
}

/// Which values a file leaves in clear. sops allows exactly one rule per file; a file naming
/// none behaves as `unencrypted_suffix: _unencrypted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncryptionRule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(String),
    EncryptedRegex(String),
}

impl Default for EncryptionRule {
    fn default() -> EncryptionRule {
        EncryptionRule::UnencryptedSuffix(DEFAULT_UNENCRYPTED_SUFFIX.to_owned())
    }
}

impl EncryptionRule {
    fn field_name(&self) -> &'static str {
        match self {
            EncryptionRule::UnencryptedSuffix(_) => "unencrypted_suffix",
            EncryptionRule::EncryptedSuffix(_) => "encrypted_suffix",
            EncryptionRule::UnencryptedRegex(_) => "unencrypted_regex",
            EncryptionRule::EncryptedRegex(_) => "encrypted_regex",
        }
    }

    fn field_value(&self) -> &str {
        match self {
            EncryptionRule::UnencryptedSuffix(text)
            | EncryptionRule::EncryptedSuffix(text)
            | EncryptionRule::UnencryptedRegex(text)
            | EncryptionRule::EncryptedRegex(text) => text,
        }
    }

    /// Compiles the rule into a matcher (`sops.Tree.shouldBeEncrypted`).
    pub fn matcher(&self, path: &Path) -> Result<RuleMatcher, SecretsError> {
        let regex = |pattern: &str| {
            regex::Regex::new(pattern).map_err(|_| SecretsError::NotSops {
                path: path.to_owned(),
                reason: format!("`{}` is not a valid regular expression", self.field_name()),
            })
        };
        Ok(match self {
            EncryptionRule::UnencryptedSuffix(s) => RuleMatcher::UnencryptedSuffix(s.clone()),
            EncryptionRule::EncryptedSuffix(s) => RuleMatcher::EncryptedSuffix(s.clone()),
            EncryptionRule::UnencryptedRegex(r) => RuleMatcher::UnencryptedRegex(regex(r)?),
            EncryptionRule::EncryptedRegex(r) => RuleMatcher::EncryptedRegex(regex(r)?),
        })
    }
}

/// A compiled [`EncryptionRule`].
#[derive(Debug, Clone)]
pub enum RuleMatcher {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(regex::Regex),
    EncryptedRegex(regex::Regex),
}

impl RuleMatcher {
    /// Whether the value at this key path is encrypted: a rule matches when any component of
    /// the path matches it, as in sops.
    pub fn should_encrypt(&self, key_path: &[String]) -> bool {
        match self {
            RuleMatcher::UnencryptedSuffix(suffix) => {
                !key_path.iter().any(|key| key.ends_with(suffix.as_str()))
            }
            RuleMatcher::EncryptedSuffix(suffix) => key_path.iter().any(|key| key.ends_with(suffix.as_str())),
            RuleMatcher::UnencryptedRegex(regex) => !key_path.iter().any(|key| regex.is_match(key)),
            RuleMatcher::EncryptedRegex(regex) => key_path.iter().any(|key| regex.is_match(key)),
        }
    }
}

/// The `sops:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub age: Vec<AgeStanza>,
    pub last_modified: String,
    pub mac: String,
    pub version: String,
    pub rule: EncryptionRule,
    pub mac_only_encrypted: bool,
    /// Names of non-age key groups that hold keys (kms, pgp, ...): readable with age, but we
    /// cannot re-wrap the data key for them, so rewriting such a file is refused.
    pub other_key_groups: Vec<String>,
}

/// A parsed, still encrypted, document: the data (without the `sops` key) and the metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub data: Mapping,
    pub metadata: Metadata,
}

/// What can be learned from a secrets file without any key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    pub path: PathBuf,
    /// The age recipients the data key is wrapped for, in file order.
    pub recipients: Vec<String>,
    /// Dotted key paths of every leaf, in document order.
    pub key_paths: Vec<String>,
    /// The subset of `key_paths` stored in clear by the encryption rule.
    pub plaintext_key_paths: Vec<String>,
    pub rule: EncryptionRule,
    pub last_modified: String,
    pub version: String,
}

/// Reads a file and checks it is well-formed sops without decrypting it.
pub fn inspect_file(path: &Path) -> Result<FileSummary, SecretsError> {
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.len() > MAX_SECRETS_FILE_BYTES as u64
    {
        return Err(too_large(path, metadata.len()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|source| SecretsError::Read { path: path.to_owned(), source })?;
    inspect_document(path, &text)
}

/// [`inspect_file`] on text already read; `path` names it in errors.
pub fn inspect_document(path: &Path, text: &str) -> Result<FileSummary, SecretsError> {
    let document = parse_document(path, text)?;
    let matcher = document.metadata.rule.matcher(path)?;
    EncryptedValue::parse(&document.metadata.mac).map_err(|reason| SecretsError::NotSops {
        path: path.to_owned(),
        reason: format!("the `mac` is malformed: {reason}"),
    })?;
    let mut key_paths = Vec::new();
    let mut plaintext_key_paths = Vec::new();
    walk_leaves(&Value::Mapping(document.data.clone()), &mut Vec::new(), &mut |key_path, leaf| {
        let dotted = key_path.join(".");
        let encrypted = matcher.should_encrypt(key_path);
        if encrypted {
            match leaf {
                Value::String(text) if text.is_empty() => {}
                Value::String(text) => {
                    EncryptedValue::parse(text).map_err(|reason| SecretsError::MalformedValue {
                        path: path.to_owned(),
                        key_path: dotted.clone(),
                        reason,
                    })?;
                }
                _ => {
                    return Err(SecretsError::MalformedValue {
                        path: path.to_owned(),
                        key_path: dotted,
                        reason: "the value should be encrypted but is stored in clear".to_owned(),
                    });
                }
            }
        } else if !plaintext_key_paths.contains(&dotted) {
            plaintext_key_paths.push(dotted.clone());
        }
        if !key_paths.contains(&dotted) {
            key_paths.push(dotted);
        }
        Ok(())
    })?;
    Ok(FileSummary {
        path: path.to_owned(),
        recipients: document.metadata.age.iter().map(|stanza| stanza.recipient.clone()).collect(),
        key_paths,
        plaintext_key_paths,
        rule: document.metadata.rule,
        last_modified: document.metadata.last_modified,
        version: document.metadata.version,
    })
}

/// Visits every non-null leaf in document order with its key path (list items keep their
/// list's path, as in sops). Keys must be strings.
pub fn walk_leaves<F>(value: &Value, key_path: &mut Vec<String>, visit: &mut F) -> Result<(), SecretsError>
where
    F: FnMut(&[String], &Value) -> Result<(), SecretsError>,
{
    match value {
        Value::Mapping(mapping) => {
            for (key, child) in mapping {
                key_path.push(key_string(key));
                walk_leaves(child, key_path, visit)?;
                key_path.pop();
            }
            Ok(())
        }
        Value::Sequence(items) => {
            for item in items {
                walk_leaves(item, key_path, visit)?;
            }
            Ok(())
        }
        Value::Null => Ok(()),
        leaf => visit(key_path, leaf),
    }
}

/// A key as text; non-string keys are rejected when parsing, so this is only a fallback.
pub fn key_string(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        other => emit_scalar(other, 0),
    }
}

/// Parses an encrypted sops YAML document.
pub fn parse_document(path: &Path, text: &str) -> Result<Document, SecretsError> {
    check_yaml_limits(path, text)?;
    let value: Value = serde_yaml_ng::from_str(text).map_err(|error| {
        let (line, column) = yaml_error_location(&error, text);
        SecretsError::InvalidYaml { path: path.to_owned(), line, column }
    })?;
    let not_sops = |reason: &str| SecretsError::NotSops { path: path.to_owned(), reason: reason.to_owned() };
    let Value::Mapping(mut data) = value else {
        return Err(not_sops("the document is not a mapping"));
    };
    let metadata =
        data.shift_remove(SOPS_METADATA_KEY).ok_or_else(|| not_sops("it has no `sops` metadata block"))?;
    let Value::Mapping(metadata) = metadata else {
        return Err(not_sops("the `sops` block is not a mapping"));
    };
    check_string_keys(path, &Value::Mapping(data.clone()))?;
    Ok(Document { data, metadata: parse_metadata(path, &metadata)? })
}

fn check_string_keys(path: &Path, value: &Value) -> Result<(), SecretsError> {
    match value {
        Value::Mapping(mapping) => {
            for (key, child) in mapping {
                if !matches!(key, Value::String(_)) {
                    return Err(SecretsError::UnsupportedValue {
                        path: path.to_owned(),
                        reason: "only string keys are supported (as in sops)".to_owned(),
                    });
                }
                check_string_keys(path, child)?;
            }
            Ok(())
        }
        Value::Sequence(items) => items.iter().try_for_each(|item| check_string_keys(path, item)),
        Value::Tagged(_) => Err(SecretsError::UnsupportedValue {
            path: path.to_owned(),
            reason: "YAML tags (`!tag`) are not supported".to_owned(),
        }),
        _ => Ok(()),
    }
}

fn parse_metadata(path: &Path, block: &Mapping) -> Result<Metadata, SecretsError> {
    let not_sops = |reason: String| SecretsError::NotSops { path: path.to_owned(), reason };
    let unsupported =
        |feature: &str| SecretsError::Unsupported { path: path.to_owned(), feature: feature.to_owned() };
    let string_field = |name: &str| -> Result<Option<String>, SecretsError> {
        match block.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(_) => Err(not_sops(format!("`sops.{name}` is not a string"))),
        }
    };
    let non_empty_list = |name: &str| match block.get(name) {
        Some(Value::Sequence(items)) => !items.is_empty(),
        _ => false,
    };

    if non_empty_list("key_groups") {
        return Err(unsupported("key_groups (Shamir secret sharing)"));
    }
    for name in ["encrypted_comment_regex", "unencrypted_comment_regex"] {
        if string_field(name)?.is_some_and(|value| !value.is_empty()) {
            return Err(unsupported(name));
        }
    }
    let other_key_groups = ["kms", "gcp_kms", "azure_kv", "hc_vault", "pgp"]
        .into_iter()
        .filter(|name| non_empty_list(name))
        .map(str::to_owned)
        .collect::<Vec<_>>();

    let mut age = Vec::new();
    match block.get("age") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            for item in items {
                let field = |name: &str| match item.get(name) {
                    Some(Value::String(text)) => Ok(text.clone()),
                    _ => Err(not_sops(format!("an entry of `sops.age` has no string `{name}`"))),
                };
                age.push(AgeStanza { recipient: field("recipient")?.trim().to_owned(), enc: field("enc")? });
            }
        }
        Some(_) => return Err(not_sops("`sops.age` is not a list".to_owned())),
    }
    if age.is_empty() {
        return Err(if other_key_groups.is_empty() {
            not_sops("no keys found in the `sops` block".to_owned())
        } else {
            unsupported(&format!(
                "data key wrapped only for {} (no age recipient)",
                other_key_groups.join(", ")
            ))
        });
    }

    let mut rules = Vec::new();
    for (name, make) in [
        ("unencrypted_suffix", EncryptionRule::UnencryptedSuffix as fn(String) -> EncryptionRule),
        ("encrypted_suffix", EncryptionRule::EncryptedSuffix),
        ("unencrypted_regex", EncryptionRule::UnencryptedRegex),
        ("encrypted_regex", EncryptionRule::EncryptedRegex),
    ] {
        if let Some(value) = string_field(name)?.filter(|value| !value.is_empty()) {
            rules.push(make(value));
        }
    }
    if rules.len() > 1 {
        return Err(not_sops(
            "it names more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex, unencrypted_regex"
                .to_owned(),
        ));
    }
    let last_modified =
        string_field("lastmodified")?.ok_or_else(|| not_sops("`sops.lastmodified` is missing".to_owned()))?;
    time::OffsetDateTime::parse(&last_modified, &time::format_description::well_known::Rfc3339)
        .map_err(|_| not_sops("`sops.lastmodified` is not an RFC 3339 time".to_owned()))?;
    Ok(Metadata {
        age,
        last_modified,
        mac: string_field("mac")?.ok_or_else(|| not_sops("`sops.mac` is missing".to_owned()))?,
        version: string_field("version")?.unwrap_or_default(),
        rule: rules.pop().unwrap_or_default(),
        mac_only_encrypted: matches!(block.get("mac_only_encrypted"), Some(Value::Bool(true))),
        other_key_groups,
    })
}

/// The document as YAML text, with the `sops` block last and its fields in sops 3.7's order
/// (including the empty key-group lists sops writes).
pub fn emit_document(document: &Document) -> String {
    let metadata = &document.metadata;
    let mut block = Mapping::new();
    for name in ["kms", "gcp_kms", "azure_kv", "hc_vault"] {
        block.insert(name.into(), Value::Sequence(Vec::new()));
    }
    block.insert(
        "age".into(),
        Value::Sequence(
            metadata
                .age
                .iter()
                .map(|stanza| {
                    let mut entry = Mapping::new();
                    entry.insert("recipient".into(), stanza.recipient.clone().into());
                    entry.insert("enc".into(), stanza.enc.clone().into());
                    Value::Mapping(entry)
                })
                .collect(),
        ),
    );
    block.insert("lastmodified".into(), metadata.last_modified.clone().into());
    block.insert("mac".into(), metadata.mac.clone().into());
    block.insert("pgp".into(), Value::Sequence(Vec::new()));
    block.insert(metadata.rule.field_name().into(), metadata.rule.field_value().into());
    if metadata.mac_only_encrypted {
        block.insert("mac_only_encrypted".into(), true.into());
    }
    block.insert("version".into(), metadata.version.clone().into());

    let mut whole = document.data.clone();
    whole.insert(SOPS_METADATA_KEY.into(), Value::Mapping(block));
    emit_yaml(&Value::Mapping(whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) {
        let mut mapping = Mapping::new();
        mapping.insert("k".into(), text.into());
        let yaml = emit_yaml(&Value::Mapping(mapping.clone()));
        let back: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, Value::Mapping(mapping), "emitted:\n{yaml}");
    }

    #[test]
    fn strings_read_back_as_the_same_strings() {
        for text in [
            "plain",
            "",
            " leading",
            "trailing ",
            "123",
            "1.5",
            "true",
            "yes",
            "null",
            "~",
            "2021-04-06T09:07:05Z",
            "a: b",
            "a #b",
            "- x",
            "[x]",
            "{x}",
            "'q'",
            "\"q\"",
            "line1\nline2",
            "line1\nline2\n",
            "line1\n\n",
            "\n",
            "  indented\nx",
            "tab\there",
            "bell\u{7}",
            "é ünïcode",
            "ENC[AES256_GCM,data:abc=,iv:def+/=,tag:g==,type:str]",
            "x\n \ny",
            "trailing space \nnext",
        ] {
            round_trip(text);
        }
    }

    #[test]
    fn layout_matches_sops_indentation() {
        let value: Value = serde_yaml_ng::from_str(
            "a:\n  b: 1\n  c: [x, {d: 2, e: 3}]\nf: {}\ng: []\nh: 1.0\ni: \"x\\ny\\n\"\n",
        )
        .unwrap();
        assert_eq!(
            emit_yaml(&value),
            "a:\n    b: 1\n    c:\n        - x\n        - d: 2\n          e: 3\nf: {}\ng: []\nh: 1.0\ni: |\n    x\n    y\n"
        );
    }

    fn limits(text: &str) -> Result<(), String> {
        check_yaml_limits(Path::new("s.enc.yaml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn deep_nesting_is_refused_in_linear_time_with_its_line() {
        let started = std::time::Instant::now();
        let flow = format!("a: 1\nb: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let error = limits(&flow).unwrap_err();
        assert!(error.contains("line 2, column 67: nesting deeper than 64 levels"), "{error}");
        let compact = format!("x:\n  {}v\n", "- ".repeat(100));
        assert!(limits(&compact).unwrap_err().contains("line 2, column"), "compact lists");
        let block: String = (0..70).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert!(limits(&block).unwrap_err().contains("line 65, column 65: nesting deeper"));
        let flow_lines = format!("a: {}\n", "{b:\n".repeat(70));
        assert!(limits(&flow_lines).unwrap_err().contains("nesting deeper"), "flow across lines");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "linear");
        let fine: String = (0..60).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        limits(&fine).unwrap();
    }

    #[test]
    fn anchors_and_aliases_are_refused_with_their_place() {
        for (text, place) in [
            ("a: &x 1\nb: *x\n", "line 1, column 4"),
            ("a: 1\nb: [1, *x]\n", "line 2, column 8"),
            ("l:\n  - &anchor\n    k: v\n", "line 2, column 5"),
            ("? *k\n: v\n", "line 1, column 3"),
            ("a: {k: *v}\n", "line 1, column 8"),
            ("a: !!str &x v\n", "line 1, column 10"),
        ] {
            let error = limits(text).unwrap_err();
            assert!(error.contains(&format!("{place}: YAML anchors and aliases")), "{text:?}: {error}");
        }
        for text in [
            "a: \"&x\"\nb: '*y'\n",
            "a: b&c *d\n",
            "a: x # &comment\n# *comment\n",
            "a: |\n  *not an alias\n  &nor an anchor\nb: 1\n",
            "l:\n  - k: >-\n      *text\n    j: 2\n",
            "a: \"multi\n  line *x\"\n",
            "a: ENC[AES256_GCM,data:ab+/=,iv:x,tag:y,type:str]\n",
            "a: 'it''s *fine'\n",
        ] {
            limits(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        }
    }

    #[test]
    fn a_secrets_file_over_one_mebibyte_is_refused_before_parsing() {
        let text = format!("a: {}\n", "x".repeat(MAX_SECRETS_FILE_BYTES));
        assert!(limits(&text).unwrap_err().contains("may have at most 1048576 bytes (1 MiB)"));
        let parsed = parse_document(Path::new("s.enc.yaml"), &text).unwrap_err().to_string();
        assert!(parsed.contains("1 MiB"), "{parsed}");
    }

    #[test]
    fn the_shipped_secrets_files_are_within_the_limits() {
        fn walk(dir: &Path, found: &mut usize) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.file_name().is_some_and(|n| n == "secrets.enc.yaml") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    check_yaml_limits(&path, &text).unwrap_or_else(|e| panic!("{e}"));
                    *found += 1;
                }
            }
        }
        let mut found = 0;
        walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../environments"), &mut found);
        assert!(found >= 3, "found {found} secrets files");
    }

    #[test]
    fn enc_values_parse_and_print_back() {
        let text = "ENC[AES256_GCM,data:RwzrBF8wy16SpfbQoeADeKyz,iv:DuJce2Ebx1Y49DaLCOJ74OOkgiv21roxhz/sZqKCSSs=,tag:Gg9XHapZI5q+rvtgeY6nrg==,type:str]";
        let value = EncryptedValue::parse(text).unwrap();
        assert_eq!(value.kind, ValueKind::Str);
        assert_eq!(value.iv.len(), 32);
        assert_eq!(value.to_sops_string(), text);
        assert!(EncryptedValue::parse("ENC[AES256_GCM,data:a,iv:b,tag:c]").is_err());
        assert!(EncryptedValue::parse("plain").is_err());
    }
}
