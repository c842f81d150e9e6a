//! Execution: runs a verified plan's DAG in dependency order with up to `jobs` steps at once,
//! journaling every step before its dependents start. A step whose fingerprint equals a
//! recorded success is not run again, so resuming after a crash and redeploying an unchanged
//! environment are the same mechanism. A failed step stops its dependents only; Ctrl-C stops
//! launching steps, lets running ones finish, and records what happened.

pub mod driver;
pub mod observe;
pub mod progress;
pub mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::task::JoinSet;

pub use driver::{Cleanup, Driver, PhaseReporter, StepError, StepOutput};
pub use observe::{Found, Observer};
pub use progress::{NoProgress, Progress, RecordingProgress, StepEvent, StepStatus};
pub use record::{StepOutcome, StepRecord};

use crate::plan::Plan;
use crate::plan::diff::Snapshot;

/// Where records go. Appending must be durable when the future resolves.
pub trait JournalSink: Send {
    type Error: std::error::Error + Send + 'static;
    fn append(&mut self, record: &StepRecord) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A test-only crash: kill the process right after a step is journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failpoint {
    pub kill_after_step: String,
}

impl Failpoint {
    /// `OPUS_FAILPOINT=kill-after:<step-id>`, in builds with the `failpoints` feature.
    pub fn from_env() -> Option<Failpoint> {
        crate::failpoint::armed("kill-after:").map(|kill_after_step| Failpoint { kill_after_step })
    }
}

/// How to execute.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Steps at most at once.
    pub jobs: usize,
    /// The fingerprint of the last success of each step (from the journal).
    pub previous_successes: BTreeMap<String, String>,
    /// Steps to run even when their fingerprint is unchanged.
    pub force_steps: BTreeSet<String>,
    /// Run every step, whatever the journal says (`deploy --force`).
    pub force_all: bool,
    /// Steps recorded as done whose effect the target no longer holds, with the reason: they
    /// run again.
    pub drifted: BTreeMap<String, String>,
    /// Becomes `true` on Ctrl-C.
    pub cancel: tokio::sync::watch::Receiver<bool>,
    pub failpoint: Option<Failpoint>,
}

/// The outcome of every step of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub succeeded: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub skipped: Vec<(String, String)>,
    pub unchanged: Vec<String>,
    /// Of `unchanged`, the steps re-recorded in the current fingerprint format (not run).
    pub migrated: Vec<String>,
    pub interrupted: bool,
    /// The journal could not be written: the run stopped at once.
    pub journal_error: Option<String>,
}

impl Summary {
    pub fn is_success(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && !self.interrupted && self.journal_error.is_none()
    }
}

/// Runs `plan` on `driver`.
pub async fn execute<J: JournalSink>(
    plan: &Plan,
    driver: Arc<dyn Driver>,
    journal: &mut J,
    progress: Arc<dyn Progress>,
    mut options: ExecOptions,
) -> Summary {
    let order: BTreeMap<&str, usize> =
        plan.steps().enumerate().map(|(idx, s)| (s.id.as_str(), idx)).collect();
    let mut waiting_on: BTreeMap<String, usize> =
        plan.steps().map(|s| (s.id.clone(), s.depends_on.len())).collect();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for step in plan.steps() {
        for dep in &step.depends_on {
            dependents.entry(dep.as_str()).or_default().push(step.id.as_str());
        }
    }
    let mut ready: BTreeSet<(usize, String)> = plan
        .steps()
        .filter(|s| s.depends_on.is_empty())
        .map(|s| (order[s.id.as_str()], s.id.clone()))
        .collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    // The steps that ran (not skipped as unchanged) and succeeded in this run.
    let mut ran: BTreeSet<String> = BTreeSet::new();
    let mut summary = Summary::default();
    let mut running: JoinSet<(String, Instant, OffsetDateTime, Result<StepOutput, StepError>)> =
        JoinSet::new();
    // Which step each task runs, so a step whose driver panicked is still reported and journaled.
    let mut running_ids: BTreeMap<tokio::task::Id, (String, Instant, OffsetDateTime)> = BTreeMap::new();
    let jobs = options.jobs.max(1);
    progress.start(plan.len());

    let release =
        |id: &str, ready: &mut BTreeSet<(usize, String)>, waiting_on: &mut BTreeMap<String, usize>| {
            for next in dependents.get(id).into_iter().flatten() {
                let count = waiting_on.get_mut(*next).expect("every step is counted");
                *count -= 1;
                if *count == 0 {
                    ready.insert((order[next], (*next).to_owned()));
                }
            }
        };

    loop {
        let cancelled = *options.cancel.borrow();
        if cancelled {
            summary.interrupted = true;
        }
        while !summary.interrupted && summary.journal_error.is_none() && running.len() < jobs {
            let Some((_, id)) = ready.pop_first() else { break };
            let step = plan.step(&id).expect("a step of the plan").clone();
            let recorded = options.previous_successes.get(&id);
            let drift = options.drifted.get(&id);
            // A readiness wait follows its release: when the release ran, so does the wait.
            let followed = step
                .action
                .follows_its_dependencies()
                .then(|| step.depends_on.iter().find(|dep| ran.contains(*dep)))
                .flatten();
            let forced = options.force_all
                || options.force_steps.contains(&id)
                || drift.is_some()
                || followed.is_some();
            // A success recorded under an older fingerprint format with the same inputs is
            // re-recorded in the current format, without running, while its effect holds.
            let migrates = !forced
                && recorded
                    .is_some_and(|r| crate::plan::fingerprint::migrates(&plan.target, &step.action, r))
                && driver.still_applied(&step).await;
            if migrates {
                let now = OffsetDateTime::now_utc();
                let from = recorded.map_or(0, |r| crate::plan::fingerprint_format(r));
                let record = StepRecord {
                    step_id: id.clone(),
                    fingerprint: step.fingerprint.clone(),
                    outcome: StepOutcome::Succeeded,
                    started_at: now,
                    finished_at: now,
                    outputs: serde_json::json!({"fingerprint_format_migrated_from": from}),
                    snapshot: snapshot_of(&step),
                };
                if let Err(error) = journal.append(&record).await {
                    summary.journal_error = Some(error.to_string());
                    break;
                }
                progress.step(&StepEvent {
                    step: id.clone(),
                    status: StepStatus::Unchanged,
                    message: Some(format!(
                        "re-recorded in fingerprint format {}",
                        crate::plan::FINGERPRINT_FORMAT
                    )),
                    output: None,
                    duration_ms: None,
                });
                summary.unchanged.push(id.clone());
                summary.migrated.push(id.clone());
                done.insert(id.clone());
                release(&id, &mut ready, &mut waiting_on);
                continue;
            }
            if recorded == Some(&step.fingerprint) && !forced {
                progress.step(&StepEvent {
                    step: id.clone(),
                    status: StepStatus::Unchanged,
                    message: None,
                    output: None,
                    duration_ms: None,
                });
                summary.unchanged.push(id.clone());
                done.insert(id.clone());
                release(&id, &mut ready, &mut waiting_on);
                continue;
            }
            progress.step(&StepEvent {
                step: id.clone(),
                status: StepStatus::Started,
                message: drift
                    .map(|reason| format!("drifted: {reason}"))
                    .or_else(|| followed.map(|dep| format!("{dep} ran"))),
                output: None,
                duration_ms: None,
            });
            let driver = driver.clone();
            let phase_progress = progress.clone();
            let phase_id = id.clone();
            let phase: PhaseReporter = Arc::new(move |phase: &str| phase_progress.phase(&phase_id, phase));
            let handle = running.spawn(async move {
                let started = Instant::now();
                let started_at = OffsetDateTime::now_utc();
                let result = driver.run(&step, phase).await;
                (step.id.clone(), started, started_at, result)
            });
            running_ids.insert(handle.id(), (id.clone(), Instant::now(), OffsetDateTime::now_utc()));
        }
        if running.is_empty() {
            break;
        }
        let joined = tokio::select! {
            joined = running.join_next_with_id() => joined,
            changed = options.cancel.changed(), if !summary.interrupted => {
                if changed.is_err() || *options.cancel.borrow() {
                    summary.interrupted = true;
                }
                continue;
            }
        };
        let Some(joined) = joined else { continue };
        let (id, started, started_at, result) = match joined {
            Ok((task, finished)) => {
                running_ids.remove(&task);
                finished
            }
            Err(panic) => {
                // A driver panicked: a bug, reported as that step's failure and journaled.
                let Some((id, started, started_at)) = running_ids.remove(&panic.id()) else { continue };
                (
                    id,
                    started,
                    started_at,
                    Err(StepError::new(format!("internal error: the step panicked: {panic}"))),
                )
            }
        };
        let step = plan.step(&id).expect("a step of the plan");
        let duration_ms = progress::millis(started.elapsed());
        let (outcome, outputs) = match &result {
            Ok(outputs) => (StepOutcome::Succeeded, outputs.clone()),
            Err(error) => (StepOutcome::Failed { message: error.rendered() }, serde_json::Value::Null),
        };
        let record = StepRecord {
            step_id: id.clone(),
            fingerprint: step.fingerprint.clone(),
            outcome,
            started_at,
            finished_at: OffsetDateTime::now_utc(),
            outputs,
            snapshot: snapshot_of(step),
        };
        // Durable before any dependent starts.
        if let Err(error) = journal.append(&record).await {
            summary.journal_error = Some(error.to_string());
        }
        done.insert(id.clone());
        match result {
            Ok(_) => {
                progress.step(&StepEvent {
                    step: id.clone(),
                    status: StepStatus::Succeeded,
                    message: None,
                    output: None,
                    duration_ms,
                });
                summary.succeeded.push(id.clone());
                ran.insert(id.clone());
                release(&id, &mut ready, &mut waiting_on);
            }
            Err(error) => {
                progress.step(&StepEvent {
                    step: id.clone(),
                    status: StepStatus::Failed,
                    message: Some(error.rendered()),
                    output: error.output.clone(),
                    duration_ms,
                });
                summary.failed.push((id.clone(), error.rendered()));
            }
        }
        if let Some(failpoint) = &options.failpoint
            && failpoint.kill_after_step == id
        {
            // Test-only: die as a power cut would, right after the record is durable.
            // SAFETY: kill(2) with our own pid and a valid signal number has no preconditions.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }

    // Everything that did not run: its reason.
    let failed: BTreeSet<&str> = summary.failed.iter().map(|(id, _)| id.as_str()).collect();
    for step in plan.steps() {
        if done.contains(&step.id) {
            continue;
        }
        let blocker = step.depends_on.iter().find(|d| failed.contains(d.as_str()) || !done.contains(*d));
        let reason = if let Some(error) = &summary.journal_error {
            format!("not run: the journal could not be written ({error})")
        } else if let Some(dep) = blocker.filter(|d| failed.contains(d.as_str())) {
            format!("dependency {dep} failed")
        } else if summary.interrupted {
            "not run: interrupted".to_owned()
        } else {
            format!("dependency {} did not run", blocker.map_or("?", |d| d.as_str()))
        };
        progress.step(&StepEvent {
            step: step.id.clone(),
            status: StepStatus::Skipped,
            message: Some(reason.clone()),
            output: None,
            duration_ms: None,
        });
        summary.skipped.push((step.id.clone(), reason));
    }
    progress.finish(&summary);
    summary
}

/// The step as planned, secrets masked: what `plan` diffs against next time.
fn snapshot_of(step: &crate::plan::Step) -> serde_json::Value {
    serde_json::to_value(Snapshot::of(step)).expect("a snapshot serializes")
}

/// A journal that keeps records in memory, for tests and dry runs.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    pub records: Vec<StepRecord>,
}

impl JournalSink for MemoryJournal {
    type Error = std::convert::Infallible;
    async fn append(&mut self, record: &StepRecord) -> Result<(), Self::Error> {
        self.records.push(record.clone());
        Ok(())
    }
}

impl MemoryJournal {
    /// The fingerprint of each step's last success.
    pub fn successes(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for record in &self.records {
            match record.outcome {
                StepOutcome::Succeeded => {
                    out.insert(record.step_id.clone(), record.fingerprint.clone());
                }
                StepOutcome::Failed { .. } | StepOutcome::Interrupted => {
                    out.remove(&record.step_id);
                }
            }
        }
        out
    }
}
