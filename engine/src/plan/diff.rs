//! What changes between two versions of a step, or two plans: per-key differences of values
//! (YAML paths), secrets compared by digest only (`(sensitive, changed)`), and for whole plans
//! the steps added, removed, reordered or with other dependencies.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as Json;

use super::observed::Observation;
use super::{Plan, Step};
use crate::sensitive::REDACTED;

/// A step as it was recorded or planned before: its fingerprint and its serialized form
/// (secrets already masked).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub fingerprint: String,
    pub step: Json,
}

impl Snapshot {
    pub fn of(step: &Step) -> Snapshot {
        Snapshot {
            fingerprint: step.fingerprint.clone(),
            step: serde_json::to_value(step).expect("serializable"),
        }
    }
}

/// What will happen to a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Create,
    Update,
    Unchanged,
    /// Recorded under an older fingerprint format with the same inputs: the deploy re-records
    /// it in the current format without running it (unless the target no longer matches).
    Migrate,
    /// Recorded as done with the same inputs, but the target no longer holds what the step
    /// did (see [`Observation`]): the deploy runs it again.
    Drifted,
}

/// One changed key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyChange {
    /// Dotted path inside the step's action (`values.db.host`, `chart.version`).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Json>,
    /// The value is a secret: `before`/`after` are never shown, only that it changed.
    pub sensitive: bool,
}

impl KeyChange {
    /// `(sensitive)`, `(sensitive, changed)` or the values, for people: typed (`"1"` is a
    /// string, `1` a number, `""` an empty string) and escaped (a newline shows as `\n`).
    pub fn describe(&self) -> String {
        let show = |v: &Option<Json>| v.as_ref().map_or("(absent)".to_owned(), Json::to_string);
        if self.sensitive {
            match (&self.before, &self.after) {
                (None, Some(_)) => "(sensitive, added)".to_owned(),
                (Some(_), None) => "(sensitive, removed)".to_owned(),
                _ => "(sensitive, changed)".to_owned(),
            }
        } else {
            format!("{} -> {}", show(&self.before), show(&self.after))
        }
    }
}

/// The differences between a step's previous form and its planned form.
pub fn diff_step(before: &Json, after: &Json) -> Vec<KeyChange> {
    let (old_plain, old_secret) = flatten_action(before.get("action").unwrap_or(&Json::Null));
    let (new_plain, new_secret) = flatten_action(after.get("action").unwrap_or(&Json::Null));
    let mut changes = Vec::new();
    let mut paths: Vec<&String> = old_plain.keys().chain(new_plain.keys()).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let (a, b) = (old_plain.get(path), new_plain.get(path));
        let is_mask = |v: Option<&Json>| v.is_some_and(|v| v.as_str() == Some(REDACTED));
        if a != b
            && !(is_mask(a) && new_secret.contains_key(path))
            && !(is_mask(b) && old_secret.contains_key(path))
        {
            changes.push(KeyChange {
                path: path.clone(),
                before: a.cloned(),
                after: b.cloned(),
                sensitive: false,
            });
        }
    }
    let mut secret_paths: Vec<&String> = old_secret.keys().chain(new_secret.keys()).collect();
    secret_paths.sort();
    secret_paths.dedup();
    for path in secret_paths {
        let (a, b) = (old_secret.get(path), new_secret.get(path));
        if a != b {
            // Digests are never shown, only whether they differ.
            let mark = |v: Option<&String>| v.map(|_| Json::String(REDACTED.to_owned()));
            changes.push(KeyChange { path: path.clone(), before: mark(a), after: mark(b), sensitive: true });
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

/// Leaves of an action by dotted path, and the secrets' digests by the same paths.
fn flatten_action(action: &Json) -> (BTreeMap<String, Json>, BTreeMap<String, String>) {
    let mut plain = BTreeMap::new();
    let mut secret = BTreeMap::new();
    flatten(action, String::new(), &mut plain, &mut secret);
    plain.remove("kind");
    (plain, secret)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

fn flatten(
    node: &Json,
    prefix: String,
    plain: &mut BTreeMap<String, Json>,
    secret: &mut BTreeMap<String, String>,
) {
    match node {
        Json::Object(map)
            if map.len() == 2 && map.contains_key("values") && map.contains_key("sensitive") =>
        {
            // A `Values`: its tree under the field's name, its digests beside.
            flatten(&map["values"], prefix.clone(), plain, secret);
            if let Some(digests) = map["sensitive"].as_object() {
                for (path, digest) in digests {
                    let full =
                        if path.is_empty() { prefix.clone() } else { join(&prefix, path).replace(".[", "[") };
                    secret.insert(full, digest.as_str().unwrap_or_default().to_owned());
                }
            }
        }
        Json::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                flatten(value, join(&prefix, key), plain, secret);
            }
        }
        Json::Array(items) if !items.is_empty() => {
            for (idx, item) in items.iter().enumerate() {
                flatten(item, format!("{prefix}[{idx}]"), plain, secret);
            }
        }
        leaf => {
            plain.insert(prefix, leaf.clone());
        }
    }
}

/// What will happen to each step of a plan, given what was done before and what observing
/// the target found.
pub fn classify(
    plan: &Plan,
    previous: &BTreeMap<String, Snapshot>,
    observation: &Observation,
) -> BTreeMap<String, (ChangeKind, Vec<KeyChange>)> {
    plan.steps()
        .map(|step| {
            let drifted = observation.drift_of(&step.id).is_some();
            let outcome = match previous.get(&step.id) {
                None => (ChangeKind::Create, Vec::new()),
                Some(before) if before.fingerprint == step.fingerprint => {
                    (if drifted { ChangeKind::Drifted } else { ChangeKind::Unchanged }, Vec::new())
                }
                Some(before)
                    if super::fingerprint::migrates(&plan.target, &step.action, &before.fingerprint) =>
                {
                    (if drifted { ChangeKind::Drifted } else { ChangeKind::Migrate }, Vec::new())
                }
                Some(before) => (
                    ChangeKind::Update,
                    diff_step(&before.step, &serde_json::to_value(step).expect("serializable")),
                ),
            };
            (step.id.clone(), outcome)
        })
        .collect()
}

/// The semantic difference between a plan at a base revision and the current one.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlanDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Steps whose position among the common steps moved.
    pub reordered: Vec<String>,
    /// Steps that wait for other steps than before.
    pub dependencies_changed: Vec<DependencyChange>,
    /// Changed keys by step id.
    pub changed: BTreeMap<String, Vec<KeyChange>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DependencyChange {
    pub step: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl PlanDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.reordered.is_empty()
            && self.dependencies_changed.is_empty()
            && self.changed.is_empty()
    }
}

/// Compares two plans of the same environment.
pub fn diff_plans(base: &Plan, head: &Plan) -> PlanDiff {
    let base_ids: Vec<&str> = base.steps().map(|s| s.id.as_str()).collect();
    let head_ids: Vec<&str> = head.steps().map(|s| s.id.as_str()).collect();
    let mut diff = PlanDiff {
        added: head_ids.iter().filter(|id| !base_ids.contains(id)).map(|s| (*s).to_owned()).collect(),
        removed: base_ids.iter().filter(|id| !head_ids.contains(id)).map(|s| (*s).to_owned()).collect(),
        ..PlanDiff::default()
    };
    let common_base: Vec<&str> = base_ids.iter().copied().filter(|id| head_ids.contains(id)).collect();
    let common_head: Vec<&str> = head_ids.iter().copied().filter(|id| base_ids.contains(id)).collect();
    for (idx, id) in common_head.iter().enumerate() {
        if common_base.get(idx) != Some(id) {
            diff.reordered.push((*id).to_owned());
        }
    }
    for step in head.steps() {
        let Some(before) = base.step(&step.id) else { continue };
        let added: Vec<String> =
            step.depends_on.iter().filter(|d| !before.depends_on.contains(d)).cloned().collect();
        let removed: Vec<String> =
            before.depends_on.iter().filter(|d| !step.depends_on.contains(d)).cloned().collect();
        if !added.is_empty() || !removed.is_empty() {
            diff.dependencies_changed.push(DependencyChange { step: step.id.clone(), added, removed });
        }
        if before.fingerprint != step.fingerprint {
            let changes = diff_step(
                &serde_json::to_value(before).expect("serializable"),
                &serde_json::to_value(step).expect("serializable"),
            );
            if !changes.is_empty() {
                diff.changed.insert(step.id.clone(), changes);
            }
        }
    }
    diff
}
