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
use super::markdown::{code_value, escape_text, inline_code, key_line};
use super::render::describe;
use super::{Plan, Step};

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
