//! The JSON documents of `plan` as typed values (their schema is in ARCHITECTURE.md):
//! [`PlanDocument`] (a plan, with each step's change when the journal was read) and
//! [`PlanDiffDocument`] (`plan --base`). Serializing them is the only way the CLI writes JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use super::diff::{ChangeKind, KeyChange, PlanDiff, Snapshot, classify};
use super::observed::{Observation, Refresh, Removal};
use super::{PLAN_FORMAT, Plan, Step, TargetSpec};

/// A plan (`plan --format json`).
#[derive(Debug, Clone, Serialize)]
pub struct PlanDocument<'a> {
    pub format: u32,
    pub environment: &'a str,
    pub protected: bool,
    pub target: &'a TargetSpec,
    pub secrets: SecretsState,
    /// In execution order.
    pub steps: Vec<PlannedStep<'a>>,
    /// Counts of the steps' changes; only when compared with the journal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<ChangeSummary>,
    /// Whether the live state was observed; only when compared with the journal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<&'a Refresh>,
    /// What the target's inventory lists and the configuration no longer has.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub removed: &'a [Removal],
}

/// Whether the plan's secrets were decrypted (else they are known by ciphertext only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretsState {
    Decrypted,
    Encrypted,
}

/// A step, and what a deploy would do with it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep<'a> {
    #[serde(flatten)]
    pub step: &'a Step,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_keys: Option<Vec<KeyChange>>,
    /// Why the target no longer holds what the step did (`change` is `drifted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<&'a str>,
}

/// How many steps would do what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChangeSummary {
    pub create: usize,
    pub update: usize,
    pub unchanged: usize,
    /// Unchanged steps recorded under an older fingerprint format (shown only when some are).
    #[serde(skip_serializing_if = "is_zero")]
    pub migrate: usize,
    /// Steps recorded as done whose effect the target no longer holds (shown when some are).
    #[serde(skip_serializing_if = "is_zero")]
    pub drifted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ChangeSummary {
    /// The counts of classified changes.
    pub fn of(changes: &BTreeMap<String, (ChangeKind, Vec<KeyChange>)>) -> ChangeSummary {
        let count = |k: ChangeKind| changes.values().filter(|(c, _)| *c == k).count();
        ChangeSummary {
            create: count(ChangeKind::Create),
            update: count(ChangeKind::Update),
            unchanged: count(ChangeKind::Unchanged),
            migrate: count(ChangeKind::Migrate),
            drifted: count(ChangeKind::Drifted),
        }
    }
}

impl<'a> PlanDocument<'a> {
    /// The plan alone.
    pub fn new(plan: &'a Plan) -> PlanDocument<'a> {
        PlanDocument {
            format: PLAN_FORMAT,
            environment: &plan.environment,
            protected: plan.protected,
            target: &plan.target,
            secrets: if plan.secrets_decrypted { SecretsState::Decrypted } else { SecretsState::Encrypted },
            steps: plan
                .steps()
                .map(|step| PlannedStep { step, change: None, changed_keys: None, drift: None })
                .collect(),
            summary: None,
            refresh: None,
            removed: &[],
        }
    }

    /// The plan compared with the journal's last successful snapshots and what observing the
    /// target found.
    pub fn with_changes(
        plan: &'a Plan,
        previous: &BTreeMap<String, Snapshot>,
        observation: &'a Observation,
    ) -> PlanDocument<'a> {
        let mut changes = classify(plan, previous, observation);
        let summary = ChangeSummary::of(&changes);
        let mut document = PlanDocument::new(plan);
        for planned in &mut document.steps {
            if let Some((kind, keys)) = changes.remove(&planned.step.id) {
                planned.change = Some(kind);
                planned.changed_keys = Some(keys);
                planned.drift = observation.drift_of(&planned.step.id);
            }
        }
        document.summary = Some(summary);
        document.refresh = Some(&observation.refresh);
        document.removed = &observation.removed;
        document
    }
}

/// A plan compared with the same environment's plan at a git revision (`plan --base`).
#[derive(Debug, Clone, Serialize)]
pub struct PlanDiffDocument<'a> {
    pub format: u32,
    pub environment: &'a str,
    pub base: &'a str,
    pub diff: &'a PlanDiff,
}

impl<'a> PlanDiffDocument<'a> {
    pub fn new(environment: &'a str, base: &'a str, diff: &'a PlanDiff) -> PlanDiffDocument<'a> {
        PlanDiffDocument { format: PLAN_FORMAT, environment, base, diff }
    }
}
