//! The one record of a step's run: what the executor writes after each step it ran (or
//! re-recorded) and what every journal backend stores and gives back.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What happened to a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepOutcome {
    Succeeded,
    Failed {
        message: String,
    },
    /// The deploy was stopped (signal, crash of a sibling step) while the step ran.
    Interrupted,
}

/// One run of one step. The journals keep its timestamps to the microsecond.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// `<namespace>/<component>/<step>`
    pub step_id: String,
    /// Hex of the step's keyed fingerprint.
    pub fingerprint: String,
    pub outcome: StepOutcome,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// Non-secret outputs of the step (a helm revision, a job name).
    pub outputs: serde_json::Value,
    /// The step as planned, secrets already masked (for plan diffs).
    pub snapshot: serde_json::Value,
}

impl StepRecord {
    /// True when this record is a success of a step with `fingerprint`: the executor skips the
    /// step.
    pub fn succeeded_with(&self, fingerprint: &str) -> bool {
        self.outcome == StepOutcome::Succeeded && self.fingerprint == fingerprint
    }

    /// The record with its timestamps cut to microseconds, the precision PostgreSQL keeps; both
    /// backends store this form so that they give back equal records.
    pub(crate) fn normalized(&self) -> StepRecord {
        StepRecord {
            started_at: truncate_to_micros(self.started_at),
            finished_at: truncate_to_micros(self.finished_at),
            ..self.clone()
        }
    }
}

pub(crate) fn truncate_to_micros(at: OffsetDateTime) -> OffsetDateTime {
    let nanos = at.nanosecond();
    at.replace_nanosecond(nanos - nanos % 1_000).expect("a smaller nanosecond is valid")
}
