//! A TOML value tree in which every value and every key keeps its [`Span`], and the merge of
//! the client hierarchy's levels (tables deep-merge, everything else is replaced) keeps the span
//! of wherever each value came from.

use indexmap::IndexMap;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::Diagnostic;
use crate::source::{FileId, Span};

/// A value with the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

/// A table entry: its key's span and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key_span: Span,
    pub node: Node,
}

pub type Table = IndexMap<String, Entry>;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Table),
}

impl Value {
    /// The TOML name of this value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

impl Node {
    pub fn empty_table(span: Span) -> Node {
        Node { value: Value::Table(Table::new()), span }
    }

    pub fn as_table(&self) -> Option<&Table> {
        match &self.value {
            Value::Table(table) => Some(table),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The entry at a dotted path of table keys.
    pub fn entry_at(&self, path: &[&str]) -> Option<&Entry> {
        let (first, rest) = path.split_first()?;
        let entry = self.as_table()?.get(*first)?;
        if rest.is_empty() { Some(entry) } else { entry.node.entry_at(rest) }
    }

    /// The span of the value at a path, or of the nearest table that exists on the way.
    pub fn span_at(&self, path: &[&str]) -> Span {
        let mut node = self;
        for key in path {
            match node.as_table().and_then(|t| t.get(*key)) {
                Some(entry) => node = &entry.node,
                None => return node.span,
            }
        }
        node.span
    }

    /// The span of the key of the entry at a path (falls back like [`Node::span_at`]).
    pub fn key_span_at(&self, path: &[&str]) -> Span {
        self.entry_at(path).map_or_else(|| self.span_at(path), |e| e.key_span)
    }

    /// Removes the value at a path of table keys and array indices (as the schema check
    /// names them); nothing when there is none.
    pub fn remove_at(&mut self, path: &[String]) {
        let Some((last, parents)) = path.split_last() else { return };
        let mut node = self;
        for key in parents {
            node = match &mut node.value {
                Value::Table(table) => match table.get_mut(key) {
                    Some(entry) => &mut entry.node,
                    None => return,
                },
                Value::Array(items) => match key.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    Some(item) => item,
                    None => return,
                },
                _ => return,
            };
        }
        if let Value::Table(table) = &mut node.value {
            table.shift_remove(last);
        }
    }

    /// This tree as JSON, for typed deserialization and template contexts.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::String(s) | Value::Datetime(s) => serde_json::Value::String(s.clone()),
            Value::Integer(i) => serde_json::Value::from(*i),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::Boolean(b) => serde_json::Value::Bool(*b),
            Value::Array(items) => serde_json::Value::Array(items.iter().map(Node::to_json).collect()),
            Value::Table(table) => {
                serde_json::Value::Object(table.iter().map(|(k, e)| (k.clone(), e.node.to_json())).collect())
            }
        }
    }

    /// Deep-merges `upper` over `self`: tables merge key by key, anything else is replaced.
    pub fn merge(&mut self, upper: &Node) {
        match (&mut self.value, &upper.value) {
            (Value::Table(lower), Value::Table(upper_table)) => {
                for (key, upper_entry) in upper_table {
                    match lower.get_mut(key) {
                        Some(lower_entry) => {
                            lower_entry.node.merge(&upper_entry.node);
                            lower_entry.key_span = upper_entry.key_span;
                        }
                        None => {
                            lower.insert(key.clone(), upper_entry.clone());
                        }
                    }
                }
            }
            _ => *self = upper.clone(),
        }
    }
}

/// Parses a TOML file into a [`Node`]. Syntax errors come back as diagnostics that point at
/// the place the parser stopped.
pub fn parse_toml(file: FileId, text: &str) -> Result<Node, Vec<Diagnostic>> {
    // Everything below recurses once per level of nesting: refuse deep nesting before parsing.
    if let Some(at) = too_deep(text) {
        let end = (at + 1).min(text.len());
        return Err(vec![
            Diagnostic::error(format!("TOML nested deeper than {MAX_DEPTH} levels"))
                .at(Span::new(file, at..end), format!("level {} starts here", MAX_DEPTH + 1))
                .help(format!(
                    "tables, arrays and dotted keys of configuration files nest at most {MAX_DEPTH} levels"
                )),
        ]);
    }
    let (table, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors
            .iter()
            .map(|error| {
                let range = error.span().unwrap_or(0..0);
                let range =
                    if range.is_empty() { range.start..(range.start + 1).min(text.len()) } else { range };
                Diagnostic::error(format!("invalid TOML: {}", first_line(error.message())))
                    .at(Span::new(file, range), "here")
            })
            .collect());
    }
    let span = Span::new(file, 0..text.len());
    Ok(Node { value: Value::Table(convert_table(file, table.get_ref())), span })
}

/// How deep tables, arrays and dotted keys of a TOML file may nest.
pub const MAX_DEPTH: usize = 64;

/// The byte offset where nesting first exceeds [`MAX_DEPTH`], counting arrays, inline tables,
/// table headers and the segments of keys, outside strings and comments.
fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    // Open arrays and inline tables: whether it is an inline table, and the depth inside it.
    let mut open: Vec<(bool, usize)> = Vec::new();
    // Inside a table header, `[a.b]` or `[[a.b]]`.
    let mut header = false;
    // Depth of the current table (its header's segments), and of the key being read.
    let mut table_depth = 0usize;
    let mut key_depth = 0usize;
    // Whether the next bare token is a key (line start, or after `{` or `,` in an inline table).
    let mut in_key = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' | b'\'' => {
                let triple = bytes[i..].starts_with(&[b, b, b]);
                let quote_len = if triple { 3 } else { 1 };
                i += quote_len;
                loop {
                    if i >= bytes.len() {
                        return None; // unterminated: the parser reports it
                    }
                    if b == b'"' && bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if !triple && bytes[i] == b'\n' {
                        break;
                    }
                    if bytes[i] == b && (!triple || bytes[i..].starts_with(&[b, b, b])) {
                        i += quote_len;
                        // A closing `"""` may be followed by up to two more quotes of content.
                        while triple && i < bytes.len() && bytes[i] == b {
                            i += 1;
                        }
                        break;
                    }
                    i += 1;
                }
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            // A newline ends a key/value pair unless an array or inline table is open.
            b'\n' if open.is_empty() => {
                header = false;
                in_key = true;
                key_depth = 0;
            }
            b'[' if in_key && open.is_empty() && !header => {
                header = true;
                table_depth = 1;
                key_depth = 0;
                if bytes.get(i + 1) == Some(&b'[') {
                    i += 1;
                }
            }
            b']' if header => {
                header = false;
                table_depth += key_depth;
                key_depth = 0;
                while bytes.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b'.' if in_key => key_depth += 1,
            b'=' if in_key => {
                in_key = false;
                key_depth += 1;
            }
            b'[' | b'{' => {
                let base = open.last().map_or(table_depth, |o| o.1) + key_depth + 1;
                open.push((b == b'{', base));
                key_depth = 0;
                in_key = b == b'{';
            }
            b']' | b'}' => {
                open.pop();
                key_depth = 0;
                in_key = false;
            }
            b',' if open.last().is_some_and(|o| o.0) => {
                in_key = true;
                key_depth = 0;
            }
            _ => {}
        }
        let depth = open.last().map_or(table_depth, |o| o.1) + key_depth;
        if depth > MAX_DEPTH {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message).trim()
}

fn convert_table(file: FileId, table: &DeTable<'_>) -> Table {
    table
        .iter()
        .map(|(key, value)| {
            let entry = Entry {
                key_span: Span::new(file, key.span()),
                node: convert_value(file, value.get_ref(), Span::new(file, value.span())),
            };
            (key.get_ref().to_string(), entry)
        })
        .collect()
}

fn convert_value(file: FileId, value: &DeValue<'_>, span: Span) -> Node {
    let value = match value {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => {
            match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
                Ok(n) => Value::Integer(n),
                // Out of range for i64: keep the text, the schema check reports the type.
                Err(_) => Value::String(i.as_str().to_owned()),
            }
        }
        DeValue::Float(f) => Value::Float(f.as_str().replace('_', "").parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Value::Boolean(*b),
        DeValue::Datetime(d) => Value::Datetime(d.to_string()),
        DeValue::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| convert_value(file, item.get_ref(), Span::new(file, item.span())))
                .collect(),
        ),
        DeValue::Table(table) => Value::Table(convert_table(file, table)),
    };
    Node { value, span }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceMap;

    fn parse(text: &str) -> (SourceMap, Node) {
        let mut sources = SourceMap::new();
        let id = sources.add("t.toml", text);
        let node = parse_toml(id, text).expect("valid TOML");
        (sources, node)
    }

    #[test]
    fn values_and_keys_keep_their_spans() {
        let (sources, node) = parse("[a]\nb = 42\n");
        assert_eq!(sources.snippet(node.span_at(&["a", "b"])), "42");
        assert_eq!(sources.snippet(node.key_span_at(&["a", "b"])), "b");
    }

    #[test]
    fn merge_deep_merges_tables_and_replaces_the_rest() {
        let (_, mut lower) = parse("[t]\nx = 1\nlist = [1, 2]\n[t.inner]\nkeep = true\n");
        let (_, upper) = parse("[t]\ny = 2\nlist = [3]\n[t.inner]\nadd = 'z'\n");
        lower.merge(&upper);
        assert_eq!(
            lower.to_json(),
            serde_json::json!({"t": {"x": 1, "list": [3], "inner": {"keep": true, "add": "z"}, "y": 2}})
        );
    }

    #[test]
    fn nesting_is_limited_before_parsing() {
        let deep = |n: usize| format!("a = {}{}\n", "[".repeat(n), "]".repeat(n));
        assert_eq!(too_deep(&deep(MAX_DEPTH - 1)), None);
        assert!(too_deep(&deep(MAX_DEPTH + 1)).is_some());
        assert!(too_deep(&"[".repeat(100_000)).is_some());
        assert!(too_deep(&format!("{} = 1\n", vec!["k"; MAX_DEPTH + 1].join("."))).is_some());
        assert!(too_deep(&format!("a = {}\n", "{ b = ".repeat(MAX_DEPTH + 1))).is_some());
        // Wide is not deep: many keys, items and dots in values and strings.
        let wide = format!(
            "[t.u]\nx = {{ {} }}\nf = [{}]\ns = \"{}\"\n# {}\n",
            (0..200).map(|i| format!("k{i} = 1.5")).collect::<Vec<_>>().join(", "),
            vec!["1.5"; 500].join(", "),
            "[{.".repeat(100),
            "[{.".repeat(100)
        );
        assert_eq!(too_deep(&wide), None, "{wide}");
        let mut sources = SourceMap::new();
        let text = "[".repeat(100_000);
        let id = sources.add("deep.toml", text.as_str());
        let errors = parse_toml(id, &text).expect_err("too deep");
        assert_eq!(errors[0].message, format!("TOML nested deeper than {MAX_DEPTH} levels"));
    }

    #[test]
    fn syntax_errors_point_at_the_parser_position() {
        let mut sources = SourceMap::new();
        let text = "a = \n";
        let id = sources.add("bad.toml", text);
        let errors = parse_toml(id, text).expect_err("invalid TOML");
        assert!(errors[0].message.starts_with("invalid TOML"), "{}", errors[0].message);
        assert_eq!(sources.location(errors[0].primary.as_ref().unwrap().span), "bad.toml:1:5");
    }
}
