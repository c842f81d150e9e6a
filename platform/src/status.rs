//! `status`: for each step of an environment's plan, what the journal last recorded and
//! whether a deploy would run it, as a typed document with a text rendering.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use crate::journal::{Journal, StepOutcome, StepRecord};
use crate::plan::Plan;
use crate::plan::diff::{ChangeKind, classify};
use crate::plan::observed::{Observation, Refresh, Removal};
use crate::session::successful_snapshots;

/// Where an environment stands (the JSON of `status --format json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub environment: String,
    /// Where the journal lives; `None` before the first deploy.
    pub journal: Option<String>,
    pub lineage: Option<String>,
    /// In the plan's execution order.
    pub steps: Vec<StepState>,
    /// How many steps a deploy would run.
    pub pending: usize,
    /// Whether the live state was observed.
    pub refresh: Refresh,
    /// What the target's inventory lists and the configuration no longer has.
    pub removed: Vec<Removal>,
    /// The last deploy the journal records: who, which commit, which plan file, which ticket.
    pub last_deploy: Option<LastDeploy>,
    /// The last deploys the journal records, newest first (at most [`DEPLOYS_SHOWN`]).
    pub deploys: Vec<LastDeploy>,
}

/// How many of the last deploys `status` shows.
pub const DEPLOYS_SHOWN: usize = 5;

/// The last deploy, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastDeploy {
    #[serde(flatten)]
    pub info: crate::deploy::DeployInfo,
    /// When it finished (RFC 3339).
    pub at: Option<String>,
}

/// One step's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepState {
    pub step: String,
    /// The outcome of its last run; `None` when it never ran.
    pub last: Option<LastOutcome>,
    /// When that run finished (RFC 3339).
    pub at: Option<String>,
    /// The last run's error, when it failed.
    pub error: Option<String>,
    pub would_change: bool,
    /// Unchanged, but recorded under an older fingerprint format (re-recorded, not run).
    pub format_migration: bool,
    /// The value paths that changed since the last success.
    pub changed_keys: Vec<String>,
    /// Why the target no longer holds what the step did, when it does not.
    pub drift: Option<String>,
}

/// How a step's last run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LastOutcome {
    Succeeded,
    Failed,
    Interrupted,
}

impl LastOutcome {
    fn as_str(self) -> &'static str {
        match self {
            LastOutcome::Succeeded => "succeeded",
            LastOutcome::Failed => "failed",
            LastOutcome::Interrupted => "interrupted",
        }
    }
}

/// The report of `plan` against the journal's latest records (none when `journal` is `None`)
/// and what observing the target found.
pub fn report(
    plan: &Plan,
    journal: Option<&Journal>,
    latest: &BTreeMap<String, StepRecord>,
    deploys: &[StepRecord],
    observation: &Observation,
) -> StatusReport {
    let changes = classify(plan, &successful_snapshots(latest), observation);
    let steps: Vec<StepState> = plan
        .steps()
        .map(|step| {
            let record = latest.get(&step.id);
            let (kind, keys) = &changes[&step.id];
            StepState {
                step: step.id.clone(),
                last: record.map(|r| match &r.outcome {
                    StepOutcome::Succeeded => LastOutcome::Succeeded,
                    StepOutcome::Failed { .. } => LastOutcome::Failed,
                    StepOutcome::Interrupted => LastOutcome::Interrupted,
                }),
                at: record.and_then(|r| r.finished_at.format(&Rfc3339).ok()),
                error: record.and_then(|r| match &r.outcome {
                    StepOutcome::Failed { message } => Some(message.clone()),
                    _ => None,
                }),
                would_change: !matches!(kind, ChangeKind::Unchanged | ChangeKind::Migrate),
                format_migration: *kind == ChangeKind::Migrate,
                changed_keys: keys.iter().map(|k| k.path.clone()).collect(),
                drift: observation.drift_of(&step.id).map(str::to_owned),
            }
        })
        .collect();
    StatusReport {
        environment: plan.environment.clone(),
        journal: journal.map(|j| j.location().to_string()),
        lineage: journal.map(|j| j.header().lineage.to_string()),
        pending: steps.iter().filter(|s| s.would_change).count()
            + observation.removed.iter().filter(|r| r.retained.is_none()).count(),
        steps,
        refresh: observation.refresh.clone(),
        removed: observation.removed.clone(),
        last_deploy: crate::deploy::last_deploy(latest)
            .map(|(info, at)| LastDeploy { info, at: at.format(&Rfc3339).ok() }),
        deploys: deploys
            .iter()
            .take(DEPLOYS_SHOWN)
            .filter_map(|record| {
                let info = serde_json::from_value(record.outputs.clone()).ok()?;
                Some(LastDeploy { info, at: record.finished_at.format(&Rfc3339).ok() })
            })
            .collect(),
    }
}

impl StatusReport {
    /// The text of `status`: the journal, one line per step, and the count of pending steps.
    pub fn text(&self) -> String {
        let mut out = String::new();
        match (&self.journal, &self.lineage) {
            (Some(journal), Some(lineage)) => {
                let _ = writeln!(out, "journal: {journal} (lineage {lineage})");
            }
            _ => {
                let _ =
                    writeln!(out, "journal: none yet (`{}` was never deployed from here)", self.environment);
            }
        }
        let deploys: Vec<&LastDeploy> = if self.deploys.is_empty() {
            self.last_deploy.iter().collect()
        } else {
            self.deploys.iter().collect()
        };
        for (index, last) in deploys.iter().enumerate() {
            let info = &last.info;
            let mut line = if index == 0 {
                format!("last deploy: by {}", info.operator)
            } else {
                format!("     before: by {}", info.operator)
            };
            if let Some(at) = &last.at {
                line.push_str(&format!(" at {at}"));
            }
            line.push_str(&format!(", commit {}", info.commit.as_deref().unwrap_or("(not in git)")));
            if let Some(change) = &info.change_ref {
                line.push_str(&format!(", change {change}"));
            }
            if let Some(plan) = &info.plan_file {
                line.push_str(&format!(", plan file {plan}"));
            }
            if let Some(ran) = info.steps.get("succeeded") {
                line.push_str(&format!(", {ran} step(s) ran"));
            }
            let _ = writeln!(out, "{line}");
        }
        for step in &self.steps {
            let last = step.last.map_or("never run", LastOutcome::as_str);
            let at = step.at.as_ref().map(|a| format!(" at {a}")).unwrap_or_default();
            let change = if step.would_change { "would change" } else { "up to date" };
            let change = if step.drift.is_some() { "drifted" } else { change };
            let _ = writeln!(out, "  {:<48} {:<12}{:<26} {change}", step.step, last, at);
            if let Some(error) = &step.error {
                let _ = writeln!(out, "      error: {error}");
            }
            if let Some(drift) = &step.drift {
                let _ = writeln!(out, "      drifted: {drift}");
            }
        }
        for removal in &self.removed {
            match &removal.retained {
                None => {
                    let _ = writeln!(out, "  {:<48} left the configuration: would be deleted", removal.item);
                }
                Some(why) => {
                    let _ = writeln!(out, "  {:<48} left the configuration: retained ({why})", removal.item);
                }
            }
        }
        let deletions = self.removed.iter().filter(|r| r.retained.is_none()).count();
        let steps_pending = self.pending - deletions;
        let deletions = match deletions {
            0 => String::new(),
            n => format!(", {n} to delete"),
        };
        let _ = writeln!(out, "{steps_pending} of {} steps would change{deletions}", self.steps.len());
        if let Some(note) = self.refresh.note() {
            let _ = writeln!(out, "{note}");
        }
        out
    }
}
