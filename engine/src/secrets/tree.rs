//! The decrypted content of a secrets file: an ordered tree of maps and lists whose leaves are
//! [`SecretValue`]s (a sops type plus the value's text as a [`SecretString`]), so a decrypted
//! tree redacts itself in `Debug` output. Also the plaintext YAML the `edit` and `show`
//! operations hand to people, in sops' layout.

use std::path::Path;

use serde_yaml_ng::Value;

use super::SecretsError;
use super::yaml::{check_yaml_limits, emit_yaml, yaml_error_location};
use crate::sensitive::SecretString;

/// The sops type of a leaf value (`type:` in `ENC[...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    Str,
    Int,
    Float,
    Bool,
}

impl ValueKind {
    /// The name sops writes in `type:`.
    pub fn sops_name(self) -> &'static str {
        match self {
            ValueKind::Str => "str",
            ValueKind::Int => "int",
            ValueKind::Float => "float",
            ValueKind::Bool => "bool",
        }
    }

    pub fn from_sops_name(name: &str) -> Option<ValueKind> {
        match name {
            "str" => Some(ValueKind::Str),
            // sops 3.8+ may write int64 for large integers; both decode to an integer.
            "int" | "int64" => Some(ValueKind::Int),
            "float" => Some(ValueKind::Float),
            "bool" => Some(ValueKind::Bool),
            _ => None,
        }
    }
}

/// A leaf: its type and its text. For `Int` the text is the decimal integer, for `Float` the
/// shortest decimal form (as Go's `FormatFloat(v, 'f', -1, 64)`), for `Bool` `true`/`false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretValue {
    pub kind: ValueKind,
    text: SecretString,
}

impl SecretValue {
    pub fn string(text: SecretString) -> SecretValue {
        SecretValue { kind: ValueKind::Str, text }
    }

    pub fn int(value: i64) -> SecretValue {
        SecretValue { kind: ValueKind::Int, text: SecretString::new(value.to_string()) }
    }

    pub fn bool(value: bool) -> SecretValue {
        SecretValue { kind: ValueKind::Bool, text: SecretString::new(value.to_string()) }
    }

    pub fn float(value: f64) -> SecretValue {
        SecretValue { kind: ValueKind::Float, text: SecretString::new(format_go_float(value)) }
    }

    /// The value as text (for strings, the string itself).
    pub fn text(&self) -> &SecretString {
        &self.text
    }

    /// The bytes sops feeds to the MAC for this value (`sops.ToBytes`): booleans are
    /// `True`/`False`, the Python version's spelling.
    pub fn mac_bytes(&self) -> &[u8] {
        match (self.kind, self.text.expose()) {
            (ValueKind::Bool, "true") => b"True",
            (ValueKind::Bool, _) => b"False",
            (_, text) => text.as_bytes(),
        }
    }

    /// Builds a value from decrypted bytes and the sops type, normalizing the text.
    pub fn from_decrypted(kind: ValueKind, text: String) -> Result<SecretValue, String> {
        let secret = SecretString::new(text);
        match kind {
            ValueKind::Str => Ok(SecretValue::string(secret)),
            ValueKind::Int => secret
                .expose()
                .parse::<i64>()
                .map(SecretValue::int)
                .map_err(|_| "an int value does not decode as an integer".to_owned()),
            ValueKind::Float => parse_go_float(secret.expose())
                .map(SecretValue::float)
                .ok_or_else(|| "a float value does not decode as a number".to_owned()),
            // strconv.ParseBool
            ValueKind::Bool => match secret.expose() {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(SecretValue::bool(true)),
                "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(SecretValue::bool(false)),
                _ => Err("a bool value does not decode as a boolean".to_owned()),
            },
        }
    }

    pub fn to_yaml(&self) -> Value {
        match self.kind {
            ValueKind::Str => Value::String(self.text.expose().to_owned()),
            ValueKind::Int => Value::Number(self.text.expose().parse::<i64>().unwrap_or(0).into()),
            ValueKind::Float => Value::Number(parse_go_float(self.text.expose()).unwrap_or(0.0).into()),
            ValueKind::Bool => Value::Bool(self.text.expose() == "true"),
        }
    }
}

/// A decrypted document: maps keep their order (sops' MAC depends on it).
#[derive(Debug, Clone, PartialEq)]
pub enum SecretTree {
    Map(Vec<(String, SecretTree)>),
    List(Vec<SecretTree>),
    Value(SecretValue),
    Null,
}

impl SecretTree {
    /// An empty top-level map: the content of a new, empty secrets file.
    pub fn empty() -> SecretTree {
        SecretTree::Map(Vec::new())
    }

    /// The value at a dotted key path (`db.password`), if it is a leaf.
    pub fn get(&self, dotted_path: &str) -> Option<&SecretValue> {
        let mut node = self;
        for component in dotted_path.split('.') {
            let SecretTree::Map(entries) = node else {
                return None;
            };
            node = &entries.iter().find(|(key, _)| key == component)?.1;
        }
        match node {
            SecretTree::Value(value) => Some(value),
            _ => None,
        }
    }

    /// Sets the leaf at a dotted key path (`db.password`), creating intermediate maps.
    pub fn set_dotted(
        &mut self,
        file: &Path,
        key_path: &str,
        value: SecretValue,
    ) -> Result<(), SecretsError> {
        let components: Vec<&str> = key_path.split('.').collect();
        self.set(&components, value).map_err(|reason| SecretsError::InvalidKeyPath {
            path: file.to_owned(),
            key_path: key_path.to_owned(),
            reason,
        })
    }

    /// Sets the leaf at a dotted key path, creating intermediate maps. A component that
    /// exists and is not a map (a list or a value) is an error: we never replace structure.
    pub fn set(&mut self, components: &[&str], value: SecretValue) -> Result<(), String> {
        let Some((first, rest)) = components.split_first() else {
            return Err("the key path is empty".to_owned());
        };
        let SecretTree::Map(entries) = self else {
            return Err(format!("`{first}` is below a value that is not a mapping"));
        };
        let position = match entries.iter().position(|(key, _)| key == first) {
            Some(position) => position,
            None => {
                let child = if rest.is_empty() { SecretTree::Null } else { SecretTree::empty() };
                entries.push(((*first).to_owned(), child));
                entries.len() - 1
            }
        };
        let child = &mut entries[position].1;
        if rest.is_empty() {
            match child {
                SecretTree::Map(_) | SecretTree::List(_) => {
                    Err(format!("`{first}` holds a mapping or a list, not a value"))
                }
                _ => {
                    *child = SecretTree::Value(value);
                    Ok(())
                }
            }
        } else {
            child.set(rest, value)
        }
    }

    /// Dotted paths of every leaf, in document order (list items share their list's path,
    /// as in sops).
    pub fn leaf_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_paths(self, &mut Vec::new(), &mut out);
        out
    }

    /// Parses plaintext YAML (as written by a person in `edit`, or a whole new file).
    pub fn from_yaml(path: &Path, text: &str) -> Result<SecretTree, SecretsError> {
        check_yaml_limits(path, text)?;
        let value: Value = serde_yaml_ng::from_str(text).map_err(|error| {
            let (line, column) = yaml_error_location(&error, text);
            SecretsError::InvalidYaml { path: path.to_owned(), line, column }
        })?;
        let tree = if value.is_null() {
            // An empty document is an empty map, as sops treats it.
            SecretTree::empty()
        } else {
            from_plain_yaml(path, value)?
        };
        match tree {
            SecretTree::Map(_) => Ok(tree),
            _ => Err(SecretsError::NotAMapping { path: path.to_owned() }),
        }
    }

    /// The tree as YAML text in sops' layout (four-space indents). The result holds every
    /// secret in clear, so it is itself a [`SecretString`].
    pub fn to_yaml(&self) -> SecretString {
        SecretString::new(emit_yaml(&self.to_yaml_value()))
    }

    pub fn to_yaml_value(&self) -> Value {
        match self {
            SecretTree::Map(entries) => Value::Mapping(
                entries
                    .iter()
                    .map(|(key, value)| (Value::String(key.clone()), value.to_yaml_value()))
                    .collect(),
            ),
            SecretTree::List(items) => Value::Sequence(items.iter().map(SecretTree::to_yaml_value).collect()),
            SecretTree::Value(value) => value.to_yaml(),
            SecretTree::Null => Value::Null,
        }
    }
}

fn collect_paths(tree: &SecretTree, prefix: &mut Vec<String>, out: &mut Vec<String>) {
    match tree {
        SecretTree::Map(entries) => {
            for (key, value) in entries {
                prefix.push(key.clone());
                collect_paths(value, prefix, out);
                prefix.pop();
            }
        }
        SecretTree::List(items) => {
            for item in items {
                collect_paths(item, prefix, out);
            }
        }
        SecretTree::Value(_) | SecretTree::Null => {
            let path = prefix.join(".");
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
}

/// Converts a parsed plaintext YAML value. Keys must be strings, as in sops.
pub fn from_plain_yaml(path: &Path, value: Value) -> Result<SecretTree, SecretsError> {
    Ok(match value {
        Value::Null => SecretTree::Null,
        Value::Bool(b) => SecretTree::Value(SecretValue::bool(b)),
        Value::Number(number) => SecretTree::Value(number_value(path, &number)?),
        Value::String(text) => SecretTree::Value(SecretValue::string(SecretString::new(text))),
        Value::Sequence(items) => SecretTree::List(
            items.into_iter().map(|item| from_plain_yaml(path, item)).collect::<Result<_, _>>()?,
        ),
        Value::Mapping(mapping) => {
            let mut entries = Vec::with_capacity(mapping.len());
            for (key, value) in mapping {
                let Value::String(key) = key else {
                    return Err(SecretsError::UnsupportedValue {
                        path: path.to_owned(),
                        reason: "only string keys are supported (as in sops)".to_owned(),
                    });
                };
                entries.push((key, from_plain_yaml(path, value)?));
            }
            SecretTree::Map(entries)
        }
        Value::Tagged(_) => {
            return Err(SecretsError::UnsupportedValue {
                path: path.to_owned(),
                reason: "YAML tags (`!tag`) are not supported".to_owned(),
            });
        }
    })
}

pub fn number_value(path: &Path, number: &serde_yaml_ng::Number) -> Result<SecretValue, SecretsError> {
    if let Some(int) = number.as_i64() {
        Ok(SecretValue::int(int))
    } else if number.is_f64() {
        Ok(SecretValue::float(number.as_f64().unwrap_or(0.0)))
    } else {
        Err(SecretsError::UnsupportedValue {
            path: path.to_owned(),
            reason: "an integer does not fit in 64 bits".to_owned(),
        })
    }
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`: the shortest decimal that round-trips, never
/// an exponent. Rust's `Display` for `f64` has the same contract for finite values.
pub fn format_go_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

fn parse_go_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse::<f64>().ok().filter(|value| value.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_format_like_go_without_exponent() {
        assert_eq!(format_go_float(1234.56789), "1234.56789");
        assert_eq!(format_go_float(1.0), "1");
        assert_eq!(format_go_float(1e21), "1000000000000000000000");
        assert_eq!(format_go_float(0.000001), "0.000001");
    }

    #[test]
    fn booleans_feed_the_mac_in_title_case() {
        assert_eq!(SecretValue::bool(true).mac_bytes(), b"True");
        assert_eq!(SecretValue::bool(false).mac_bytes(), b"False");
    }

    #[test]
    fn set_creates_intermediate_maps_and_refuses_to_replace_lists() {
        let mut tree = SecretTree::empty();
        tree.set(&["db", "password"], SecretValue::string("x".to_owned().into())).unwrap();
        assert_eq!(tree.get("db.password").unwrap().text().expose(), "x");
        let mut with_list = SecretTree::from_yaml(Path::new("t"), "a: [1, 2]\n").unwrap();
        assert!(
            with_list.set(&["a"], SecretValue::int(1)).unwrap_err().contains("holds a mapping or a list")
        );
    }

    #[test]
    fn debug_of_a_tree_redacts_values() {
        let tree = SecretTree::from_yaml(Path::new("t"), "db:\n  password: canary-91c2\n").unwrap();
        let debug = format!("{tree:?}");
        assert!(!debug.contains("canary-91c2"));
        assert!(debug.contains("password"));
    }
}
