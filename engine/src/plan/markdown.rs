//! Markdown that nothing in a value can break: values as typed, escaped inline code, and
//! plain text with what Markdown or HTML could act on escaped. Used by every Markdown the
//! tool writes (`plan --format markdown`, the review of `plan --base`).

use serde_json::Value as Json;

use super::diff::KeyChange;

/// `value` as inline code: its JSON text (strings quoted and escaped) in a backtick fence
/// longer than any run of backticks inside it.
pub fn code_value(value: &Json) -> String {
    inline_code(&serde_json::to_string(value).expect("JSON"))
}

/// `text` as an inline code span that nothing inside can end or escape.
pub fn inline_code(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    // A span that starts or ends with a backtick (or is empty of other text) needs a space
    // inside its fence; CommonMark strips one space on each side.
    if text.starts_with('`') || text.ends_with('`') {
        format!("{fence} {text} {fence}")
    } else {
        format!("{fence}{text}{fence}")
    }
}

/// Text outside code (never at the start of a line) with every character Markdown or HTML could
/// act on there escaped: emphasis, code, links, tables, strikethrough, HTML and entities.
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One changed key for a reviewer: `` `path`: `before` → `after` `` or `(sensitive, changed)`.
pub fn key_line(key: &KeyChange) -> String {
    let path = inline_code(&key.path);
    if key.sensitive {
        return format!("{path}: {}", key.describe());
    }
    match (&key.before, &key.after) {
        (Some(before), Some(after)) => format!("{path}: {} → {}", code_value(before), code_value(after)),
        (None, Some(after)) => format!("{path}: {} (added)", code_value(after)),
        (Some(before), None) => format!("{path}: {} (removed)", code_value(before)),
        (None, None) => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_escaped_code() {
        assert_eq!(code_value(&Json::from(1)), "`1`");
        assert_eq!(code_value(&Json::from("1")), "`\"1\"`");
        assert_eq!(code_value(&Json::from("")), "`\"\"`");
        assert_eq!(code_value(&Json::from("a\nb")), "`\"a\\nb\"`");
        assert_eq!(code_value(&Json::from("**x** <b>")), "`\"**x** <b>\"`");
        assert_eq!(code_value(&Json::from("a`b")), "``\"a`b\"``");
        assert_eq!(inline_code("`x"), "`` `x ``");
    }

    #[test]
    fn text_outside_code_cannot_render() {
        assert_eq!(
            escape_text("<b>*x*</b> | [a](b) & oob-consent"),
            r"&lt;b\>\*x\*&lt;/b\> \| \[a\](b) &amp; oob-consent"
        );
    }
}
