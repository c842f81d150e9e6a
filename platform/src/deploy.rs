//! One deploy of one environment, start to end: which part of the plan runs ([`select`]), the
//! lock and the journal ([`Deployment::open`]), what would change ([`Deployment::changes`]),
//! and the run with the target's housekeeping ([`Deployment::run`]). The CLI parses flags,
//! asks for confirmation, picks the driver and the progress display, and renders what this
//! returns.

// Errors name where the journal lives; they are cold paths, so their size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::exec::{Cleanup, Driver, ExecOptions, Failpoint, Observer, Progress, StepError, Summary, execute};
use crate::journal::{DeployLock, Journal, JournalError, LockError, LockHolder, RepairReport, StepRecord};
use crate::plan::diff::{ChangeKind, classify};
use crate::plan::observed::Observation;
use crate::plan::{Plan, PlanError};
use crate::session::{self, JournalPlace, SessionError};

/// Why a deploy did not run.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("--only: {source} of `{environment}` (see `cargo xtask plan {environment}`)")]
    UnknownComponent {
        environment: String,
        #[source]
        source: PlanError,
    },
    #[error("--force-step: `{step}` is not a step of the plan (see `cargo xtask plan {environment}`)")]
    UnknownForceStep { environment: String, step: String },
    #[error("the plan of `{environment}` failed verification: {source}")]
    Unverified {
        environment: String,
        #[source]
        source: PlanError,
    },
    #[error(
        "cannot deploy `{environment}`: its secrets could not be decrypted (no age identity for them; see `cargo xtask keys save {environment}`)"
    )]
    NotDecrypted { environment: String },
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Repair(JournalError),
    #[error("cannot prepare the target: {0}")]
    Prepare(StepError),
    #[error(
        "the target of `{environment}` was last deployed from another journal (lineage {target}); this journal ({journal}) has lineage {ours}"
    )]
    ForeignJournal { environment: String, journal: String, ours: String, target: String },
    #[error("cannot observe the target of `{environment}`: {source}")]
    Observe {
        environment: String,
        #[source]
        source: StepError,
    },
}

impl DeployError {
    /// Whether the deploy could not start (bad flags, keys, a held lock, an unreadable
    /// journal), as opposed to a plan that is wrong.
    pub fn could_not_start(&self) -> bool {
        !matches!(self, DeployError::Unverified { .. } | DeployError::Prepare(_))
    }

    /// What the operator can do about it, when there is something.
    pub fn help(&self) -> Option<&'static str> {
        match self {
            DeployError::Session(SessionError::Journal(JournalError::TornRecord { .. })) => {
                Some("rerun with --repair-journal to drop the torn record (the step it described runs again)")
            }
            DeployError::ForeignJournal { .. } => Some(
                "deploy from the journal that deployed it (a teammate's, or the shared PostgreSQL journal), or rerun with --adopt to take the target over with this journal",
            ),
            DeployError::Observe { .. } => Some(
                "fix access to the target, or rerun with --no-refresh to trust the journal without looking",
            ),
            _ => None,
        }
    }
}

/// The part of an environment's plan a deploy runs: all of it, or the components `--only`
/// names. Verified, with every secret decrypted and every forced step known.
#[derive(Debug)]
pub struct Selection<'a> {
    whole: &'a Plan,
    part: Option<Plan>,
}

impl<'a> Selection<'a> {
    /// The steps that run.
    pub fn plan(&self) -> &Plan {
        self.part.as_ref().unwrap_or(self.whole)
    }

    /// The environment's whole plan (the bundle's index describes all of it).
    pub fn whole(&self) -> &'a Plan {
        self.whole
    }

    /// Whether every step of the environment runs.
    pub fn is_whole(&self) -> bool {
        self.part.is_none()
    }
}

/// Selects what a deploy of `whole` runs: `only` (components, `namespace/component` or
/// `component`; empty for all) and checks `force_steps`. Never returns an unverified plan.
pub fn select<'a>(
    whole: &'a Plan,
    only: &[String],
    force_steps: &[String],
) -> Result<Selection<'a>, DeployError> {
    let environment = || whole.environment.clone();
    let part = if only.is_empty() {
        None
    } else {
        Some(whole.restrict_to(only).map_err(|source| match source {
            PlanError::UnknownComponent(_) => {
                DeployError::UnknownComponent { environment: environment(), source }
            }
            source => DeployError::Unverified { environment: environment(), source },
        })?)
    };
    let selection = Selection { whole, part };
    let plan = selection.plan();
    plan.verify().map_err(|source| DeployError::Unverified { environment: environment(), source })?;
    if !plan.is_executable() {
        return Err(DeployError::NotDecrypted { environment: environment() });
    }
    if let Some(step) = force_steps.iter().find(|step| plan.step(step).is_none()) {
        return Err(DeployError::UnknownForceStep { environment: environment(), step: step.clone() });
    }
    Ok(selection)
}

/// How to open a deploy.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Drop a torn last record of a file journal (the step it described runs again).
    pub repair_journal: bool,
}

/// A deploy in progress: it holds the environment's lock and its journal.
pub struct Deployment {
    lock: DeployLock,
    journal: Journal,
    latest: BTreeMap<String, StepRecord>,
    repaired: Option<RepairReport>,
}

/// How many steps of a plan would do what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChangeCounts {
    pub steps: usize,
    pub create: usize,
    pub update: usize,
    pub unchanged: usize,
    /// Unchanged steps recorded under an older fingerprint format: re-recorded, not run.
    pub migrate: usize,
    /// Steps recorded as done whose effect the target no longer holds: they run again.
    pub drifted: usize,
    /// What left the configuration and the deploy removes from the target.
    pub delete: usize,
    /// What left the configuration and the deploy keeps (databases, namespaces).
    pub retained: usize,
}

pub use crate::change_record::{ChangeRecord, DEPLOY_RECORD_ID, DeployInfo};

/// The last deploy the journal records (its `@deploy` record), with when it finished.
pub fn last_deploy(latest: &BTreeMap<String, StepRecord>) -> Option<(DeployInfo, time::OffsetDateTime)> {
    let record = latest.get(DEPLOY_RECORD_ID)?;
    let info = serde_json::from_value(record.outputs.clone()).ok()?;
    Some((info, record.finished_at))
}

/// How a run is done.
pub struct RunOptions {
    /// Steps run at once.
    pub jobs: usize,
    /// Steps run even when the journal records them as done.
    pub force_steps: BTreeSet<String>,
    /// Run every step (`--force`).
    pub force_all: bool,
    /// Set to `true` to start no new step.
    pub cancel: tokio::sync::watch::Receiver<bool>,
    pub failpoint: Option<Failpoint>,
    /// Who deploys what, journaled after the run.
    pub info: Option<DeployInfo>,
}

/// What a run did.
#[derive(Debug)]
pub struct Report {
    pub summary: Summary,
    /// What the target's housekeeping removed after a complete run.
    pub cleanup: Vec<Cleanup>,
    /// The lock could not be released cleanly (the next deploy takes it over).
    pub lock_error: Option<LockError>,
    /// The record of who deployed could not be journaled (the steps' records were).
    pub journal_error: Option<JournalError>,
}

impl Deployment {
    /// Takes the environment's lock (failing at once when another deploy holds it), repairs
    /// the journal when asked to, opens it (creating it on the first deploy) and reads the
    /// latest record of every step.
    pub async fn open(
        environment: &str,
        place: &JournalPlace,
        options: &OpenOptions,
    ) -> Result<Deployment, DeployError> {
        // The lock first: nothing below may race another deploy.
        let lock = session::lock(place, environment).await?;
        let mut repaired = None;
        if options.repair_journal
            && let JournalPlace::File { journal, .. } = place
        {
            repaired = crate::journal::repair(journal, environment).map_err(DeployError::Repair)?;
        }
        let journal = session::open_journal(place, environment).await?;
        let latest = journal.latest().await.map_err(SessionError::from)?;
        Ok(Deployment { lock, journal, latest, repaired })
    }

    /// The holder of a stale lock this deploy took over (its process is gone).
    pub fn stale_lock_taken_over(&self) -> Option<&LockHolder> {
        self.lock.stale_taken_over()
    }

    /// The torn record `--repair-journal` dropped, if there was one.
    pub fn repaired(&self) -> Option<&RepairReport> {
        self.repaired.as_ref()
    }

    /// Where the journal lives, for messages.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Where the journal stands (what `plan --out` recorded, to compare with).
    pub fn journal_state(&self) -> crate::plan_file::JournalState {
        crate::plan_file::JournalState::of(&self.journal.header().lineage.to_string(), &self.latest)
    }

    /// Observes the target (`refresh`) for the environment's whole plan, comparing it with the
    /// journal's last successes. Without an observer the live state is not observed, and says
    /// so; an observer's error stops the deploy (rerun with `--no-refresh` to go on without).
    ///
    /// A target last deployed from a journal of another lineage (a journal copied from a
    /// teammate, a new one beside a shared target) is refused unless `adopt`.
    pub async fn observe(
        &self,
        whole: &Plan,
        observer: Option<&dyn Observer>,
        refresh: bool,
        adopt: bool,
    ) -> Result<Observation, DeployError> {
        if !refresh {
            return Ok(Observation::skipped());
        }
        let Some(observer) = observer else {
            return Ok(Observation::not_observed("this target cannot be observed"));
        };
        let observation = crate::exec::observe::observe(whole, &self.latest, observer)
            .await
            .map_err(|source| DeployError::Observe { environment: whole.environment.clone(), source })?;
        let ours = self.journal.header().lineage.to_string();
        if let Some(target) = &observation.target_lineage
            && *target != ours
            && !adopt
        {
            return Err(DeployError::ForeignJournal {
                environment: whole.environment.clone(),
                journal: self.journal.location().to_string(),
                ours,
                target: target.clone(),
            });
        }
        Ok(observation)
    }

    /// What running `plan` would do, by the journal's last successes and the observation.
    pub fn changes(&self, plan: &Plan, observation: &Observation) -> ChangeCounts {
        let changes = classify(plan, &session::successful_snapshots(&self.latest), observation);
        let count = |kind: ChangeKind| changes.values().filter(|(k, _)| *k == kind).count();
        let retained = observation.removed.iter().filter(|r| r.retained.is_some()).count();
        ChangeCounts {
            steps: plan.len(),
            create: count(ChangeKind::Create),
            update: count(ChangeKind::Update),
            unchanged: count(ChangeKind::Unchanged),
            migrate: count(ChangeKind::Migrate),
            drifted: count(ChangeKind::Drifted),
            delete: observation.removed.len() - retained,
            retained,
        }
    }

    /// Prepares the target (the bundle's index describes the whole environment), runs the
    /// selected steps, and after a complete, successful run of the whole environment lets the
    /// target remove what no step produces any more. The lock is released at the end, also
    /// when preparing fails (by drop).
    pub async fn run(
        mut self,
        selection: &Selection<'_>,
        driver: Arc<dyn Driver>,
        progress: Arc<dyn Progress>,
        options: RunOptions,
        observation: &Observation,
    ) -> Result<Report, DeployError> {
        let lineage = self.journal.header().lineage.to_string();
        // The target keeps who set out to change it (with what `prepare` writes anyway); a
        // deploy with nothing to do writes nothing.
        let pending = self.changes(selection.plan(), observation);
        let forced = options.force_all || !options.force_steps.is_empty();
        if let Some(info) = options.info.as_ref()
            && (forced || pending.create + pending.update + pending.drifted + pending.delete > 0)
        {
            let mut info = info.clone();
            info.steps = BTreeMap::from([
                ("create".to_owned(), pending.create),
                ("update".to_owned(), pending.update),
                ("drifted".to_owned(), pending.drifted),
                ("delete".to_owned(), pending.delete),
            ]);
            info.steps.retain(|_, count| *count > 0);
            let at = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            driver.note_change(&ChangeRecord { info, at });
        }
        driver.prepare(selection.whole(), &lineage).await.map_err(DeployError::Prepare)?;
        let exec = ExecOptions {
            jobs: options.jobs,
            previous_successes: session::success_fingerprints(&self.latest),
            force_steps: options.force_steps,
            force_all: options.force_all,
            drifted: observation.drifted.clone(),
            cancel: options.cancel,
            failpoint: options.failpoint,
        };
        let plan = selection.plan();
        let started_at = time::OffsetDateTime::now_utc();
        let summary = execute(plan, driver.clone(), &mut self.journal, progress, exec).await;
        let mut journal_error = None;
        if let Some(mut info) = options.info.filter(|_| summary.journal_error.is_none()) {
            info.steps = BTreeMap::from([
                ("succeeded".to_owned(), summary.succeeded.len()),
                ("failed".to_owned(), summary.failed.len()),
                ("skipped".to_owned(), summary.skipped.len()),
                ("unchanged".to_owned(), summary.unchanged.len()),
            ]);
            let record = StepRecord {
                step_id: DEPLOY_RECORD_ID.to_owned(),
                fingerprint: String::new(),
                outcome: if summary.is_success() {
                    crate::journal::StepOutcome::Succeeded
                } else {
                    crate::journal::StepOutcome::Failed { message: "the deploy did not complete".to_owned() }
                },
                started_at,
                finished_at: time::OffsetDateTime::now_utc(),
                outputs: serde_json::to_value(&info).expect("deploy info serializes"),
                snapshot: serde_json::Value::Null,
            };
            journal_error = self.journal.append(&record).await.err();
        }
        let cleanup = if summary.is_success() && selection.is_whole() {
            driver.clean_up(plan).await
        } else {
            Vec::new()
        };
        let lock_error = self.lock.release().await.err();
        Ok(Report { summary, cleanup, lock_error, journal_error })
    }
}
