//! Plans and plan diffs as text for a terminal, JSON for machines (schema in ARCHITECTURE.md)
//! and Markdown for a pull-request comment. Secrets only ever appear as `(sensitive)`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::json;

use super::diff::{ChangeKind, KeyChange, PlanDiff, Snapshot, classify};
use super::observed::Observation;
use super::{Action, Plan, Step};

/// One line summary of what a step does.
pub fn describe(step: &Step) -> String {
    match &step.action {
        Action::Preflight { max_kubernetes_version, crds, provided, .. } => match max_kubernetes_version {
            Some(max) if provided.is_empty() => {
                format!("check the cluster (Kubernetes <= {max}, StorageClass, {} CRDs)", crds.len())
            }
            Some(max) => format!(
                "check the cluster (Kubernetes <= {max}, StorageClass, {} CRDs required, {} installed by the plan)",
                crds.len(),
                provided.len()
            ),
            None => "check the bundle folder".to_owned(),
        },
        Action::DatabasePreflight { host, port, min_server_version, .. } => {
            format!("check PostgreSQL {host}:{port} (version >= {min_server_version})")
        }
        Action::EnsureNamespace { name, .. } => format!("namespace {name}"),
        Action::ApplySecret { namespace, name, data, .. } => {
            format!("secret {namespace}/{name} ({} keys)", data.sensitive().len())
        }
        Action::ProvisionDatabase { role, database, .. } => format!("role {role} and database {database}"),
        Action::ApplyObjects { objects, .. } => {
            format!("{} Kubernetes object(s)", objects.shown().as_array().map_or(1, Vec::len))
        }
        Action::HelmRelease { release, namespace, chart, .. } => {
            format!("helm release {namespace}/{release} ({} {})", chart.reference, chart.version)
        }
        Action::WaitReady { namespace, selector, timeout_seconds } => {
            format!("wait for {namespace} {selector} ({timeout_seconds}s)")
        }
        Action::StoreKey { namespace, secret_name, .. } => format!("age key in {namespace}/{secret_name}"),
    }
}

/// Counts by change kind: create, update, unchanged, migrate, drifted.
fn summary(changes: &BTreeMap<String, (ChangeKind, Vec<KeyChange>)>) -> (usize, usize, usize, usize, usize) {
    let count = |k: ChangeKind| changes.values().filter(|(c, _)| *c == k).count();
    (
        count(ChangeKind::Create),
        count(ChangeKind::Update),
        count(ChangeKind::Unchanged),
        count(ChangeKind::Migrate),
        count(ChangeKind::Drifted),
    )
}

/// `, 2 drifted, 3 to delete` (empty when there are none).
fn drift_and_removals(drifted: usize, observation: &Observation) -> String {
    let mut out = String::new();
    if drifted > 0 {
        let _ = write!(out, ", {drifted} drifted");
    }
    let deleted = observation.removed.iter().filter(|r| r.retained.is_none()).count();
    if deleted > 0 {
        let _ = write!(out, ", {deleted} to delete");
    }
    let retained = observation.removed.len() - deleted;
    if retained > 0 {
        let _ = write!(out, ", {retained} retained");
    }
    out
}

/// The sentence about a fingerprint format migration, when there is one.
fn migration_note(migrate: usize) -> Option<String> {
    (migrate > 0).then(|| {
        format!(
            "{migrate} step(s) were recorded under an older fingerprint format with the same inputs: the deploy re-records them in format {} without running them (a format migration, not an update)",
            super::FINGERPRINT_FORMAT
        )
    })
}

fn symbol(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Create => "+",
        ChangeKind::Update => "~",
        ChangeKind::Unchanged => "=",
        ChangeKind::Migrate => "»",
        ChangeKind::Drifted => "!",
    }
}

/// The plan for a terminal: every step in execution order with what will happen.
pub fn text(plan: &Plan, previous: &BTreeMap<String, Snapshot>, observation: &Observation) -> String {
    let changes = classify(plan, previous, observation);
    let mut out = String::new();
    let _ = writeln!(out, "plan for `{}` ({} steps):", plan.environment, plan.len());
    for step in plan.steps() {
        let (kind, keys) = &changes[&step.id];
        let _ = writeln!(out, "  {} {:<48} {}", symbol(*kind), step.id, describe(step));
        if let Some(reason) = observation.drift_of(&step.id) {
            let _ = writeln!(out, "      drifted: {reason}");
        }
        for key in keys {
            let _ = writeln!(out, "      {}: {}", key.path, key.describe());
        }
    }
    for removal in &observation.removed {
        match &removal.retained {
            None => {
                let _ = writeln!(out, "  - {} (left the configuration: deleted)", removal.item);
            }
            Some(why) => {
                let _ = writeln!(out, "  - {} (left the configuration: retained, {why})", removal.item);
            }
        }
    }
    let (create, update, unchanged, migrate, drifted) = summary(&changes);
    let _ = writeln!(
        out,
        "{create} to create, {update} to update, {unchanged} unchanged{}",
        drift_and_removals(drifted, observation)
    );
    if let Some(note) = migration_note(migrate) {
        let _ = writeln!(out, "{note}");
    }
    if let Some(note) = observation.note() {
        let _ = writeln!(out, "{note}");
    }
    if !plan.secrets_decrypted {
        let _ =
            writeln!(out, "secrets were not decrypted: sensitive values are compared by their ciphertexts");
    }
    out
}

/// The plan as a pull-request comment: a summary table and one collapsible section per
/// changed component.
pub fn markdown(plan: &Plan, previous: &BTreeMap<String, Snapshot>, observation: &Observation) -> String {
    let changes = classify(plan, previous, observation);
    let (create, update, unchanged, migrate, drifted) = summary(&changes);
    let mut out = String::new();
    let _ = writeln!(out, "### Plan for `{}`\n", plan.environment);
    let _ = writeln!(
        out,
        "**{create}** to create, **{update}** to update, **{unchanged}** unchanged{}.\n",
        drift_and_removals(drifted, observation)
    );
    if let Some(note) = migration_note(migrate) {
        let _ = writeln!(out, "{note}.\n");
    }
    if let Some(note) = observation.note() {
        let _ = writeln!(out, "{note}.\n");
    }
    let _ = writeln!(out, "| step | change | what |\n|---|---|---|");
    for step in plan.steps() {
        let (kind, _) = &changes[&step.id];
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            step.id,
            json!(kind).as_str().unwrap_or_default(),
            super::markdown::escape_text(&describe(step))
        );
    }
    for removal in &observation.removed {
        let change = if removal.retained.is_some() { "retained" } else { "delete" };
        let what = removal.retained.as_deref().unwrap_or("left the configuration");
        let _ = writeln!(
            out,
            "| {} | {change} | {} |",
            super::markdown::escape_text(&removal.item),
            super::markdown::escape_text(what)
        );
    }
    let mut by_component: BTreeMap<String, Vec<(&Step, &Vec<KeyChange>)>> = BTreeMap::new();
    for step in plan.steps() {
        let (kind, keys) = &changes[&step.id];
        if !matches!(kind, ChangeKind::Unchanged | ChangeKind::Migrate) {
            let component = step.component.clone().unwrap_or_else(|| step.id.clone());
            by_component.entry(component).or_default().push((step, keys));
        }
    }
    for (component, steps) in by_component {
        let _ = writeln!(out, "\n<details><summary><code>{component}</code></summary>\n");
        for (step, keys) in steps {
            let _ = writeln!(out, "- `{}`: {}", step.id, super::markdown::escape_text(&describe(step)));
            if let Some(reason) = observation.drift_of(&step.id) {
                let _ = writeln!(out, "  - drifted: {}", super::markdown::escape_text(reason));
            }
            for key in keys {
                let _ = writeln!(out, "  - {}", super::markdown::key_line(key));
            }
        }
        let _ = writeln!(out, "\n</details>");
    }
    out
}

/// A plan diff (`plan --base`) for a terminal or as Markdown.
pub fn diff_text(environment: &str, base: &str, diff: &PlanDiff, markdown: bool) -> String {
    let mut out = String::new();
    let code = |s: &str| if markdown { format!("`{s}`") } else { s.to_owned() };
    if markdown {
        let _ = writeln!(out, "### Changes to `{environment}` since `{base}`\n");
    } else {
        let _ = writeln!(out, "changes to `{environment}` since {base}:");
    }
    if diff.is_empty() {
        let _ = writeln!(out, "{}no changes", if markdown { "" } else { "  " });
        return out;
    }
    let bullet = if markdown { "- " } else { "  " };
    for id in &diff.added {
        let _ = writeln!(out, "{bullet}+ {} (added)", code(id));
    }
    for id in &diff.removed {
        let _ = writeln!(out, "{bullet}- {} (removed)", code(id));
    }
    for id in &diff.reordered {
        let _ = writeln!(out, "{bullet}↕ {} (moved in the execution order)", code(id));
    }
    for change in &diff.dependencies_changed {
        let mut parts = Vec::new();
        parts.extend(change.added.iter().map(|d| format!("now waits for {}", code(d))));
        parts.extend(change.removed.iter().map(|d| format!("no longer waits for {}", code(d))));
        let _ = writeln!(out, "{bullet}~ {}: {}", code(&change.step), parts.join(", "));
    }
    for (id, keys) in &diff.changed {
        let _ = writeln!(out, "{bullet}~ {}", code(id));
        for key in keys {
            let indent = if markdown { "  - " } else { "      " };
            let _ = writeln!(out, "{indent}{}: {}", code(&key.path), key.describe());
        }
    }
    out
}
