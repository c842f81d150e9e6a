//! The YAML of secrets files, apart from what sops adds: the limits checked before any parser
//! runs (size, depth, no anchors or aliases), error positions that never quote the text, and
//! an emitter in sops' layout (yaml.v3 with a four-space indent), so files this tool writes
//! diff cleanly against files sops wrote.

use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use super::SecretsError;

/// The largest secrets file (encrypted or, in `edit`, plaintext) this tool reads: the YAML
/// parser's time and memory grow with its input, and a bank's secrets fit in a few kilobytes.
pub const MAX_SECRETS_FILE_BYTES: usize = 1 << 20;

/// The deepest nesting of mappings, lists and flow collections a secrets file may have; sops
/// files need a handful of levels (`values_sensitive_custom` mirrors a chart's values).
pub const MAX_YAML_DEPTH: usize = 64;

/// Refuses, before any YAML parser runs, what would make parsing slow or expand a small file
/// into a huge tree: a file over [`MAX_SECRETS_FILE_BYTES`], nesting deeper than
/// [`MAX_YAML_DEPTH`] (the parser's cost grows with the square of the depth), and anchors or
/// aliases (`&a`, `*a`: sops never writes them and an alias can repeat a subtree
/// exponentially). One linear pass; errors name the line and column.
pub fn check_yaml_limits(path: &Path, text: &str) -> Result<(), SecretsError> {
    let refuse = |reason: String| SecretsError::UnsupportedValue { path: path.to_owned(), reason };
    if text.len() > MAX_SECRETS_FILE_BYTES {
        return Err(too_large(path, text.len() as u64));
    }
    YamlScan::default()
        .run(text)
        .map_err(|(line, column, reason)| refuse(format!("line {line}, column {column}: {reason}")))
}

pub fn too_large(path: &Path, len: u64) -> SecretsError {
    SecretsError::UnsupportedValue {
        path: path.to_owned(),
        reason: format!(
            "the file has {len} bytes; a secrets file may have at most {MAX_SECRETS_FILE_BYTES} bytes (1 MiB)"
        ),
    }
}

/// The state of [`check_yaml_limits`]'s pass. It does not validate YAML (the parser does); it
/// finds every place a node can start and tracks how deep it is, erring on the side of
/// refusing: a false alarm costs an unusual file, a miss would cost the gate.
#[derive(Default)]
struct YamlScan {
    /// Indentations of the open block collections.
    indents: Vec<usize>,
    /// Open flow collections (`[`, `{`).
    flow: usize,
    /// Block depth where the open flow collections started.
    flow_base: usize,
    /// Inside a quoted scalar (its quote character).
    quote: Option<u8>,
    /// Inside a block scalar whose content is indented more than this.
    block_scalar: Option<usize>,
}

type ScanError = (usize, usize, String);

impl YamlScan {
    fn run(mut self, text: &str) -> Result<(), ScanError> {
        for (index, line) in text.split('\n').enumerate() {
            self.line(index + 1, line.as_bytes())?;
        }
        Ok(())
    }

    fn line(&mut self, number: usize, line: &[u8]) -> Result<(), ScanError> {
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let blank = line[indent..].iter().all(|b| b.is_ascii_whitespace());
        if let Some(parent) = self.block_scalar {
            if blank || indent > parent {
                return Ok(());
            }
            self.block_scalar = None;
        }
        let mut at = 0;
        // Column (0-based) of the last `-` entry indicator and of the current node's start.
        let mut last_entry: Option<usize> = None;
        let mut key_start: Option<usize> = None;
        let mut depth = self.flow_base;
        let mut node_start = true;
        if self.quote.is_none() && self.flow == 0 {
            if blank || line[indent] == b'#' || (indent == 0 && line[0] == b'%') {
                return Ok(());
            }
            if indent == 0 && line.starts_with(b"---") && line.get(3).is_none_or(|b| b.is_ascii_whitespace())
            {
                self.indents.clear();
                at = 3;
            } else {
                while self.indents.last().is_some_and(|&top| top > indent) {
                    self.indents.pop();
                }
                if self.indents.last() != Some(&indent) {
                    self.indents.push(indent);
                }
                at = indent;
            }
            depth = self.indents.len();
        } else if self.quote.is_some() {
            node_start = false;
        }
        let too_deep = |depth: usize, column: usize| -> Result<(), ScanError> {
            if depth > MAX_YAML_DEPTH {
                Err((
                    number,
                    char_column(line, column),
                    format!("nesting deeper than {MAX_YAML_DEPTH} levels is not allowed in a secrets file"),
                ))
            } else {
                Ok(())
            }
        };
        too_deep(depth, at)?;
        let space_or_end = |i: usize| line.get(i).is_none_or(|b| b.is_ascii_whitespace());
        while at < line.len() {
            let byte = line[at];
            if let Some(quote) = self.quote {
                match byte {
                    b'\\' if quote == b'"' => at += 1,
                    b'\'' if quote == b'\'' && line.get(at + 1) == Some(&b'\'') => at += 1,
                    _ if byte == quote => self.quote = None,
                    _ => {}
                }
                at += 1;
                continue;
            }
            let after_space = at == 0 || line[at - 1].is_ascii_whitespace();
            if byte.is_ascii_whitespace() {
                at += 1;
                continue;
            }
            if byte == b'#' && after_space {
                break;
            }
            if self.flow > 0 {
                match byte {
                    b'[' | b'{' => {
                        self.flow += 1;
                        too_deep(self.flow_base + self.flow, at)?;
                        node_start = true;
                    }
                    b']' | b'}' => {
                        self.flow = self.flow.saturating_sub(1);
                        node_start = false;
                    }
                    b',' => node_start = true,
                    b':' if space_or_end(at + 1)
                        || line.get(at + 1).is_some_and(|b| b",[]{}".contains(b)) =>
                    {
                        node_start = true
                    }
                    b'?' if node_start && space_or_end(at + 1) => {}
                    _ if node_start => self.node(number, line, &mut at, &mut node_start)?,
                    _ => {}
                }
                at += 1;
                continue;
            }
            if node_start {
                match byte {
                    b'-' | b'?' | b':' if space_or_end(at + 1) => {
                        if byte == b'-' {
                            last_entry = Some(at);
                        }
                        depth += 1;
                        too_deep(depth, at)?;
                    }
                    b'[' | b'{' => {
                        self.flow_base = depth;
                        self.flow = 1;
                        too_deep(depth + 1, at)?;
                    }
                    b'|' | b'>' => {
                        // A block scalar: its content is any more indented line. The node it is
                        // the value of starts at the key, or at the `-` of a list entry.
                        let parent = match (key_start, last_entry) {
                            (Some(key), _) => key,
                            (None, Some(entry)) => entry,
                            (None, None) => indent,
                        };
                        self.block_scalar = Some(parent);
                        return Ok(());
                    }
                    _ => {
                        // A scalar (maybe a key: a block scalar after it is indented under it).
                        let start = at;
                        self.node(number, line, &mut at, &mut node_start)?;
                        if !node_start {
                            key_start = Some(start);
                        }
                    }
                }
            } else if byte == b':' && space_or_end(at + 1) {
                node_start = true;
            }
            at += 1;
        }
        Ok(())
    }

    /// A node starts at `line[*at]`: an anchor, alias or tag is refused (tags are also refused
    /// after parsing, with a clearer message), a quote opens a quoted scalar, anything else is a
    /// plain scalar.
    fn node(
        &mut self,
        number: usize,
        line: &[u8],
        at: &mut usize,
        node_start: &mut bool,
    ) -> Result<(), ScanError> {
        match line[*at] {
            b'&' | b'*' => Err((
                number,
                char_column(line, *at),
                "YAML anchors and aliases (`&name`, `*name`) are not allowed in a secrets file".to_owned(),
            )),
            b'"' | b'\'' => {
                self.quote = Some(line[*at]);
                *node_start = false;
                Ok(())
            }
            b'!' => {
                while *at + 1 < line.len() && !line[*at + 1].is_ascii_whitespace() {
                    *at += 1;
                }
                Ok(())
            }
            _ => {
                *node_start = false;
                Ok(())
            }
        }
    }
}

/// The one-based column, in characters, of a byte offset of a line.
fn char_column(line: &[u8], at: usize) -> usize {
    String::from_utf8_lossy(&line[..at.min(line.len())]).chars().count() + 1
}

/// Line and column (1-based) of a YAML error in `text`, the text that was parsed. The error's
/// message is never shown because it may quote the offending (secret) text; only its numbers
/// (and, for a duplicate key, the key, which is never secret) are read here, because the
/// location alone is `1:1` for two kinds of error: a character the reader refuses (the message
/// gives its byte offset) and a duplicate key (the message names the key, found again here).
/// An unterminated quote or flow collection is reported where it opened, not at the end of the
/// text where the parser noticed it.
pub fn yaml_error_location(error: &serde_yaml_ng::Error, text: &str) -> (usize, usize) {
    let message = error.to_string();
    if let Some(offset) = number_after(&message, " at position ") {
        return offset_location(text, offset);
    }
    // `path.to.map: duplicate entry with key "name" at line 5 column 3` (the map's start).
    if let Some((_, key)) = message.split_once("duplicate entry with key ")
        && let Some(found) = duplicate_key_location(text, key)
    {
        return found;
    }
    let Some(location) = error.location() else {
        return (1, 1);
    };
    if location.index() >= text.trim_end().len()
        && let Some(context) = message.split(", while ").nth(1)
        && let (Some(line), Some(column)) =
            (number_after(context, " at line "), number_after(context, " column "))
    {
        return (line, column);
    }
    (location.line(), location.column())
}

/// The decimal number right after the first `marker` in `message`.
fn number_after(message: &str, marker: &str) -> Option<usize> {
    let rest = &message[message.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Line and column (1-based, in characters) of a byte offset of `text`.
fn offset_location(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// Where the second occurrence of a block-mapping key (`quoted` as serde_yaml_ng prints it,
/// `"name"`, maybe followed by more of the message) starts: the first line that repeats a key of the mapping it is in, at the same
/// indentation with no less indented line or new list item between them.
fn duplicate_key_location(text: &str, quoted: &str) -> Option<(usize, usize)> {
    let (key, _) = quoted.strip_prefix('"')?.split_once('"')?;
    if key.contains('\\') {
        return None;
    }
    // Open mappings: indentation and the keys seen in them.
    let mut open: Vec<(usize, Vec<String>)> = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let mut indent = line.len() - line.trim_start_matches(' ').len();
        let mut rest = &line[indent..];
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        let mut new_item = false;
        while let Some(after) = rest.strip_prefix("- ") {
            let spaces = after.len() - after.trim_start_matches(' ').len();
            indent += 2 + spaces;
            rest = &after[spaces..];
            new_item = true;
        }
        while open.last().is_some_and(|(at, _)| *at > indent || (new_item && *at == indent)) {
            open.pop();
        }
        let Some(name) = block_key(rest) else {
            continue;
        };
        if open.last().is_none_or(|(at, _)| *at != indent) {
            open.push((indent, Vec::new()));
        }
        let keys = &mut open.last_mut().expect("pushed above").1;
        if name == key && keys.iter().any(|seen| seen == key) {
            return Some((index + 1, line[..indent].chars().count() + 1));
        }
        keys.push(name);
    }
    None
}

/// The key of a block-mapping line (`name: ...`, `"name": ...`, `'name': ...`), if it is one.
fn block_key(rest: &str) -> Option<String> {
    let followed_by_colon = |after: &str| {
        after.strip_prefix(':').is_some_and(|value| value.is_empty() || value.starts_with([' ', '\t']))
    };
    if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"')?;
        return followed_by_colon(quoted[end + 1..].trim_start_matches(' '))
            .then(|| quoted[..end].to_owned());
    }
    if let Some(quoted) = rest.strip_prefix('\'') {
        let end = quoted.find('\'')?;
        return followed_by_colon(quoted[end + 1..].trim_start_matches(' '))
            .then(|| quoted[..end].to_owned());
    }
    let colon = rest.find(": ").or_else(|| rest.ends_with(':').then(|| rest.len() - 1))?;
    Some(rest[..colon].trim_end().to_owned())
}

/// Writes a YAML value in sops' layout (yaml.v3 with a four-space indent).
pub fn emit_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Mapping(mapping) if !mapping.is_empty() => emit_mapping(&mut out, mapping, 0, false),
        Value::Sequence(items) if !items.is_empty() => emit_sequence(&mut out, items, 0, false),
        other => {
            out.push_str(&emit_scalar(other, 0));
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn emit_mapping(out: &mut String, mapping: &Mapping, indent: usize, first_inline: bool) {
    for (position, (key, value)) in mapping.iter().enumerate() {
        if position > 0 || !first_inline {
            push_indent(out, indent);
        }
        let key_text = match key {
            Value::String(text) => emit_string(text, indent, false),
            other => emit_scalar(other, indent),
        };
        out.push_str(&key_text);
        out.push(':');
        match value {
            Value::Mapping(child) if !child.is_empty() => {
                out.push('\n');
                emit_mapping(out, child, indent + 4, false);
            }
            Value::Sequence(items) if !items.is_empty() => {
                out.push('\n');
                emit_sequence(out, items, indent + 4, false);
            }
            leaf => {
                out.push(' ');
                out.push_str(&emit_scalar(leaf, indent + 4));
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
    }
}

fn emit_sequence(out: &mut String, items: &[Value], indent: usize, first_inline: bool) {
    for (position, item) in items.iter().enumerate() {
        if position > 0 || !first_inline {
            push_indent(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Mapping(child) if !child.is_empty() => emit_mapping(out, child, indent + 2, true),
            Value::Sequence(child) if !child.is_empty() => emit_sequence(out, child, indent + 2, true),
            leaf => {
                out.push_str(&emit_scalar(leaf, indent + 2));
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
    }
}

/// A scalar (or empty collection) as YAML; block literals end with a newline, everything
/// else does not. `block_indent` is the indentation of a literal block's lines.
pub fn emit_scalar(value: &Value, block_indent: usize) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(number) => {
            if let Some(int) = number.as_i64() {
                int.to_string()
            } else if let Some(unsigned) = number.as_u64() {
                unsigned.to_string()
            } else {
                let float = number.as_f64().unwrap_or(0.0);
                if float.is_nan() {
                    ".nan".to_owned()
                } else if float.is_infinite() {
                    if float > 0.0 { ".inf" } else { "-.inf" }.to_owned()
                } else {
                    // Keep a float a float when read back.
                    let text = format!("{float}");
                    if text.contains('.') { text } else { format!("{text}.0") }
                }
            }
        }
        Value::String(text) => emit_string(text, block_indent, true),
        Value::Sequence(_) => "[]".to_owned(),
        Value::Mapping(_) => "{}".to_owned(),
        Value::Tagged(tagged) => emit_scalar(&tagged.value, block_indent),
    }
}

fn emit_string(text: &str, block_indent: usize, allow_block: bool) -> String {
    if is_plain_safe(text) {
        text.to_owned()
    } else if allow_block && is_literal_block_safe(text) {
        literal_block(text, block_indent)
    } else {
        double_quoted(text)
    }
}

/// Whether a string can be written as a plain scalar and read back as the same string, by
/// serde_yaml_ng and by Go's yaml.v3 (so anything that could resolve to another type, a
/// number, a date, a YAML 1.1 boolean, is quoted).
fn is_plain_safe(text: &str) -> bool {
    if is_plain_word(text) {
        return true;
    }
    let Some(first) = text.chars().next() else {
        return false;
    };
    if text.trim() != text
        || "-?:,[]{}#&*!|>'\"%@`.+~".contains(first)
        || first.is_ascii_digit()
        || text.contains(": ")
        || text.contains(" #")
        || text.ends_with(':')
        || text.chars().any(|c| c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}'))
    {
        return false;
    }
    if is_keyword(text) {
        return false;
    }
    matches!(serde_yaml_ng::from_str::<Value>(text), Ok(Value::String(back)) if back == text)
}

/// A null, a boolean (YAML 1.1's too) or a special float, in any case.
fn is_keyword(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["null", "true", "false", "yes", "no", "on", "off", "y", "n", "nan", "inf"].contains(&lower.as_str())
}

/// A string of ASCII letters, digits and `_-./,:=+[]` that starts with a letter, has no
/// space, does not end with `:` and is no keyword reads back as itself
/// with every YAML 1.1 and 1.2 resolver: numbers, dates, special floats and `<<`/`=` start
/// with a digit, a sign, a dot or a symbol, and in block context `:` is an indicator only
/// before a space. Keys, recipients and sops' `ENC[...]` values are all of this kind, so
/// they skip the parser's round trip (a fresh libyaml parser per string, the larger part of
/// writing a secrets file). A test checks this against serde_yaml_ng for every such string
/// of up to four characters.
fn is_plain_word(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic())
        && !text.ends_with(':')
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./,:=+[]".contains(&b))
        && !is_keyword(text)
}

fn is_literal_block_safe(text: &str) -> bool {
    let body = text.trim_end_matches('\n');
    text.contains('\n')
        && !body.is_empty()
        && !body.starts_with(' ')
        && !body.starts_with('\t')
        && !text.chars().any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{feff}')
        && body.split('\n').all(|line| line.is_empty() || !line.trim_matches(' ').is_empty())
        && !body.split('\n').any(|line| line.ends_with(' ') || line.ends_with('\t'))
}

fn literal_block(text: &str, indent: usize) -> String {
    let body = text.trim_end_matches('\n');
    let trailing = text.len() - body.len();
    let mut out = String::from(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    out.push('\n');
    for line in body.split('\n') {
        if !line.is_empty() {
            push_indent(&mut out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    out
}

fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}') => {
                let code = c as u32;
                if code <= 0xff {
                    out.push_str(&format!("\\x{code:02X}"));
                } else {
                    out.push_str(&format!("\\u{code:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(text: &str) -> (usize, usize) {
        let error = serde_yaml_ng::from_str::<Value>(text).unwrap_err();
        yaml_error_location(&error, text)
    }

    #[test]
    fn a_plain_word_reads_back_as_the_same_string() {
        // Every string of up to four characters over the fast path's alphabet (and a sample
        // of longer ones): whenever the fast path calls it plain-safe, the parser agrees.
        let alphabet: Vec<char> = "aZeEnNoOyYtTfFx0159_-./,:=+[]".chars().collect();
        let mut words: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
        for _ in 1..4 {
            let longer: Vec<String> =
                words.iter().flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}"))).collect();
            words.extend(longer.into_iter().filter(|w| w.len() <= 4));
            words.sort();
            words.dedup();
        }
        words.extend(
            ["ENC[AES256_GCM,data:x/Y+=,iv:AB==,tag:Q==,type:str]", "age1abc", "e1", "E10", "n0", "inf0"]
                .map(str::to_owned),
        );
        let mut fast = 0;
        for word in &words {
            if super::is_plain_word(word) {
                fast += 1;
                let back = serde_yaml_ng::from_str::<Value>(word);
                assert!(
                    matches!(&back, Ok(Value::String(text)) if text == word),
                    "{word:?} reads back as {back:?}"
                );
                let in_mapping = serde_yaml_ng::from_str::<Value>(&format!("{word}: {word}\n"));
                let expected = Value::Mapping(
                    [(Value::from(word.as_str()), Value::from(word.as_str()))].into_iter().collect(),
                );
                assert_eq!(in_mapping.ok(), Some(expected), "{word:?} as a key and a value");
            }
        }
        assert!(fast > 10_000, "the fast path was taken for {fast} strings");
    }

    #[test]
    fn errors_are_located_where_they_are_in_the_text() {
        // A syntax error on line 3.
        assert_eq!(location("a: 1\nb: 2\n    c: 3\n"), (3, 6));
        assert_eq!(location("db:\n  user: app\n  pass: x: y\n"), (3, 10));
        // A refused character: the reader gives only its byte offset.
        assert_eq!(location("a: 1\nb: 2\nc: x\u{1}\n"), (3, 5));
        // A duplicate key: the parser gives no place at all.
        assert_eq!(location("a: 1\nb: 2\na: 3\n"), (3, 1));
        assert_eq!(location("db:\n  user: a\n  pass: b\nweb:\n  user: c\n  user: d\n"), (6, 3));
        assert_eq!(location("list:\n  - user: a\n  - user: b\n    user: c\n"), (4, 5));
        // Unterminated: where it opened, not the end of the text.
        assert_eq!(location("a: 1\nb: 2\nc: \"x\n"), (3, 4));
        assert_eq!(location("a: 1\nb: 2\nc: {x\n"), (3, 4));
    }
}
