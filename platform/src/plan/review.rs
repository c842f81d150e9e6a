//! The review of a change (`plan --base REV --format markdown`): Markdown a change board can
//! trust. A summary table comes first (per namespace: create, update, delete, unchanged), then
//! every changed component in execution order with its steps. Every value is typed, escaped
//! inline code (`"1"` and `1` differ, `""` is visible, a newline shows as `\n`), so nothing in
//! a value is rendered: `**x**` or `<b>` in a value stays text. Secrets show as
//! `(sensitive, changed)` only. Added steps list all their non-secret values.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value as Json;

use super::diff::{KeyChange, PlanDiff, diff_step};
use super::render::describe;
use super::{Plan, Step};

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

/// The namespace a step id belongs to (`environment` for environment-wide steps).
fn namespace_of(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

fn component_of(step: &Step) -> String {
    step.component.clone().unwrap_or_else(|| step.id.clone())
}

#[derive(Default)]
struct Counts {
    create: usize,
    update: usize,
    delete: usize,
    unchanged: usize,
}

/// What a reviewer sees of one step.
enum Entry<'a> {
    Create(&'a Step),
    Update(&'a Step, &'a [KeyChange]),
    /// Not changed itself, but moved in the execution order or waits for other steps.
    Reordered(&'a Step, Vec<String>),
    Delete(&'a Step),
}

/// The Markdown review of `diff` (from `base` to `head`, both of `environment`).
pub fn diff_markdown(
    environment: &str,
    base_label: &str,
    base: &Plan,
    head: &Plan,
    diff: &PlanDiff,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Changes to {} since {}\n", inline_code(environment), inline_code(base_label));
    if base.is_empty() {
        let _ = writeln!(
            out,
            "{} does not exist in {}: every step is new.\n",
            inline_code(environment),
            inline_code(base_label)
        );
    }
    if diff.is_empty() {
        let _ = writeln!(out, "No changes.");
        return out;
    }

    // Per namespace counts, and the entries by component in execution order.
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut components: Vec<String> = Vec::new();
    let mut entries: BTreeMap<String, Vec<Entry<'_>>> = BTreeMap::new();
    fn add<'a>(
        components: &mut Vec<String>,
        entries: &mut BTreeMap<String, Vec<Entry<'a>>>,
        component: String,
        entry: Entry<'a>,
    ) {
        if !entries.contains_key(&component) {
            components.push(component.clone());
        }
        entries.entry(component).or_default().push(entry);
    }
    let mut notes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for id in &diff.reordered {
        notes.entry(id.as_str()).or_default().push("moved in the execution order".to_owned());
    }
    for change in &diff.dependencies_changed {
        let note = notes.entry(change.step.as_str()).or_default();
        note.extend(change.added.iter().map(|d| format!("now waits for {}", inline_code(d))));
        note.extend(change.removed.iter().map(|d| format!("no longer waits for {}", inline_code(d))));
    }
    for step in head.steps() {
        let count = counts.entry(namespace_of(&step.id).to_owned()).or_default();
        if diff.added.contains(&step.id) {
            count.create += 1;
            add(&mut components, &mut entries, component_of(step), Entry::Create(step));
        } else if let Some(keys) = diff.changed.get(&step.id) {
            count.update += 1;
            add(&mut components, &mut entries, component_of(step), Entry::Update(step, keys));
        } else {
            count.unchanged += 1;
            if let Some(note) = notes.get(step.id.as_str()) {
                add(&mut components, &mut entries, component_of(step), Entry::Reordered(step, note.clone()));
            }
        }
    }
    for step in base.steps().filter(|s| diff.removed.contains(&s.id)) {
        counts.entry(namespace_of(&step.id).to_owned()).or_default().delete += 1;
        add(&mut components, &mut entries, component_of(step), Entry::Delete(step));
    }

    let _ = writeln!(out, "| namespace | create | update | delete | unchanged |\n|---|---:|---:|---:|---:|");
    for (namespace, c) in &counts {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            inline_code(namespace),
            c.create,
            c.update,
            c.delete,
            c.unchanged
        );
    }
    for component in &components {
        let _ = writeln!(out, "\n#### {}\n", inline_code(component));
        for entry in &entries[component] {
            match entry {
                Entry::Create(step) => {
                    let _ = writeln!(
                        out,
                        "- **create** {}: {}",
                        inline_code(&step.id),
                        escape_text(&describe(step))
                    );
                    let all = diff_step(&Json::Null, &serde_json::to_value(step).expect("serializable"));
                    for key in all.iter().filter(|key| !key.path.is_empty()) {
                        let value = match (&key.after, key.sensitive) {
                            (_, true) => "(sensitive)".to_owned(),
                            (Some(value), false) => code_value(value),
                            (None, false) => continue,
                        };
                        let _ = writeln!(out, "  - {}: {value}", inline_code(&key.path));
                    }
                }
                Entry::Update(step, keys) => {
                    let _ = writeln!(
                        out,
                        "- **update** {}: {}",
                        inline_code(&step.id),
                        escape_text(&describe(step))
                    );
                    for key in keys.iter() {
                        let _ = writeln!(out, "  - {}", key_line(key));
                    }
                    if let Some(note) = notes.get(step.id.as_str()) {
                        let _ = writeln!(out, "  - {}", note.join(", "));
                    }
                }
                Entry::Reordered(step, note) => {
                    let _ = writeln!(out, "- **order** {}: {}", inline_code(&step.id), note.join(", "));
                }
                Entry::Delete(step) => {
                    let _ = writeln!(
                        out,
                        "- **delete** {}: {} (no longer in the configuration)",
                        inline_code(&step.id),
                        escape_text(&describe(step))
                    );
                }
            }
        }
    }
    out
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
