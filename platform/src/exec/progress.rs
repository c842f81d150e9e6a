//! The executor reports to a [`Progress`], never to a terminal: the CLI implements it with
//! indicatif bars on a terminal, plain timestamped lines in CI, or JSON lines.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Started,
    Succeeded,
    Failed,
    /// Not run because a step it depends on failed (or the run was interrupted).
    Skipped,
    /// Not run because the journal records a success with the same fingerprint.
    Unchanged,
}

/// Something that happened to a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepEvent {
    pub step: String,
    pub status: StepStatus,
    /// For failures and skips: why (secrets already redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Output captured from child processes, shown for failed steps (redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// Receives the executor's events. Implementations must be cheap: they are called inline.
pub trait Progress: Send + Sync {
    /// A run of `total` steps starts.
    fn start(&self, total: usize);
    /// A step changed status.
    fn step(&self, event: &StepEvent);
    /// A running step reached a new phase (`helm upgrade`, `waiting for 2 deployments`).
    fn phase(&self, step: &str, phase: &str);
    /// The run ended.
    fn finish(&self, summary: &super::Summary);
}

/// Discards everything.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _total: usize) {}
    fn step(&self, _event: &StepEvent) {}
    fn phase(&self, _step: &str, _phase: &str) {}
    fn finish(&self, _summary: &super::Summary) {}
}

/// Keeps every event, for tests.
#[derive(Debug, Default)]
pub struct RecordingProgress {
    pub events: Mutex<Vec<StepEvent>>,
}

impl Progress for RecordingProgress {
    fn start(&self, _total: usize) {}
    fn step(&self, event: &StepEvent) {
        self.events.lock().expect("not poisoned").push(event.clone());
    }
    fn phase(&self, _step: &str, _phase: &str) {}
    fn finish(&self, _summary: &super::Summary) {}
}

pub(crate) fn millis(duration: Duration) -> Option<u64> {
    Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}
