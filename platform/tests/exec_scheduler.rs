//! Tests of the scheduler ([`platform::exec::execute`]) with a test driver whose steps succeed,
//! fail or hang on command. A hanging step awaits a [`tokio::sync::Notify`] the test controls;
//! nothing sleeps. Plans are built by hand with [`Plan::new`] and [`fingerprint`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use platform::exec::{
    Driver, ExecOptions, MemoryJournal, PhaseReporter, RecordingProgress, StepError, StepOutcome, StepOutput,
    StepStatus, Summary, execute,
};
use platform::plan::{Action, Plan, Step, TargetSpec, fingerprint};
use tokio::sync::{Notify, mpsc, watch};

/// How long a test waits for an event before it fails.
const WAIT: Duration = Duration::from_secs(10);

fn target() -> TargetSpec {
    TargetSpec::Directory { path: "bundle/test".to_owned(), recipients: Vec::new() }
}

/// A step of component `ns/<component>` with id `ns/<component>/<verb>`; `label` changes the
/// action (and so the fingerprint).
fn step(component: &str, verb: &str, label: &str, depends_on: &[&str]) -> Step {
    let action = Action::EnsureNamespace {
        name: format!("{component}-{verb}"),
        labels: BTreeMap::from([("test.example/label".to_owned(), label.to_owned())]),
        annotations: BTreeMap::new(),
    };
    let mut depends_on: Vec<String> = depends_on.iter().map(|d| (*d).to_owned()).collect();
    depends_on.sort();
    Step {
        id: format!("ns/{component}/{verb}"),
        component: Some(format!("ns/{component}")),
        fingerprint: fingerprint(&target(), &action),
        action,
        depends_on,
    }
}

fn plan(steps: Vec<Step>) -> Plan {
    Plan::new("test".to_owned(), false, target(), true, steps).expect("a valid test plan")
}

/// What the test driver does with a step.
#[derive(Default)]
struct Script {
    fail: BTreeSet<String>,
    /// Steps that wait until the test notifies them.
    hang: BTreeMap<String, Arc<Notify>>,
    /// Steps that yield to the runtime a few times, so that concurrent steps overlap.
    yield_times: usize,
}

/// A driver that follows a [`Script`] and records what it ran.
struct TestDriver {
    script: Script,
    ran: Mutex<Vec<String>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    started: mpsc::UnboundedSender<String>,
}

impl TestDriver {
    fn new(script: Script) -> (Arc<TestDriver>, mpsc::UnboundedReceiver<String>) {
        let (started, started_rx) = mpsc::unbounded_channel();
        let driver = TestDriver {
            script,
            ran: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            started,
        };
        (Arc::new(driver), started_rx)
    }

    fn ran(&self) -> BTreeSet<String> {
        self.ran.lock().unwrap().iter().cloned().collect()
    }
}

impl Driver for TestDriver {
    fn run<'a>(
        &'a self,
        step: &'a Step,
        _phase: PhaseReporter,
    ) -> BoxFuture<'a, Result<StepOutput, StepError>> {
        Box::pin(async move {
            self.ran.lock().unwrap().push(step.id.clone());
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            let _ = self.started.send(step.id.clone());
            if let Some(gate) = self.script.hang.get(&step.id) {
                gate.notified().await;
            }
            for _ in 0..self.script.yield_times {
                tokio::task::yield_now().await;
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            if self.script.fail.contains(&step.id) {
                return Err(StepError::new(format!("{} failed on purpose", step.id)));
            }
            Ok(serde_json::json!({ "step": step.id }))
        })
    }
}

fn options(jobs: usize) -> (ExecOptions, watch::Sender<bool>) {
    let (cancel_tx, cancel) = watch::channel(false);
    let options = ExecOptions {
        jobs,
        previous_successes: BTreeMap::new(),
        force_steps: BTreeSet::new(),
        force_all: false,
        drifted: std::collections::BTreeMap::new(),
        cancel,
        failpoint: None,
    };
    (options, cancel_tx)
}

async fn run(
    plan: &Plan,
    driver: Arc<TestDriver>,
    journal: &mut MemoryJournal,
    options: ExecOptions,
) -> Summary {
    tokio::time::timeout(
        WAIT,
        execute(plan, driver, journal, Arc::new(RecordingProgress::default()), options),
    )
    .await
    .expect("the run finishes")
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn sorted(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

/// a <- b <- c, a <- d, and e on its own.
fn diamond_free_plan() -> Plan {
    plan(vec![
        step("a", "release", "1", &[]),
        step("b", "release", "1", &["ns/a/release"]),
        step("c", "release", "1", &["ns/b/release"]),
        step("d", "release", "1", &["ns/a/release"]),
        step("e", "release", "1", &[]),
    ])
}

#[tokio::test]
async fn failed_step_stops_its_dependents_only() {
    let plan = diamond_free_plan();
    let (driver, _started) = TestDriver::new(Script { fail: set(&["ns/b/release"]), ..Script::default() });
    let mut journal = MemoryJournal::default();
    let (options, _cancel) = options(4);

    let summary = run(&plan, driver.clone(), &mut journal, options).await;

    assert_eq!(sorted(&summary.succeeded), set(&["ns/a/release", "ns/d/release", "ns/e/release"]));
    assert_eq!(
        summary.failed,
        vec![("ns/b/release".to_owned(), "ns/b/release failed on purpose".to_owned())]
    );
    assert_eq!(
        summary.skipped,
        vec![("ns/c/release".to_owned(), "dependency ns/b/release failed".to_owned())]
    );
    assert!(summary.unchanged.is_empty());
    assert!(!summary.interrupted);
    assert!(!summary.is_success());
    assert!(!driver.ran().contains("ns/c/release"), "a dependent of a failed step ran");
    // Every step that ran is journaled, the failure with its message.
    let journaled: BTreeMap<&str, &StepOutcome> =
        journal.records.iter().map(|r| (r.step_id.as_str(), &r.outcome)).collect();
    assert_eq!(journaled.len(), 4);
    assert_eq!(
        journaled["ns/b/release"],
        &StepOutcome::Failed { message: "ns/b/release failed on purpose".to_owned() }
    );
}

#[tokio::test]
async fn summary_lists_every_step_once() {
    let plan = diamond_free_plan();
    let (driver, _started) = TestDriver::new(Script { fail: set(&["ns/a/release"]), ..Script::default() });
    let mut journal = MemoryJournal::default();
    let (options, _cancel) = options(2);

    let summary = run(&plan, driver, &mut journal, options).await;

    assert_eq!(sorted(&summary.succeeded), set(&["ns/e/release"]));
    assert_eq!(summary.failed.len(), 1);
    let skipped: BTreeMap<&str, &str> =
        summary.skipped.iter().map(|(id, why)| (id.as_str(), why.as_str())).collect();
    assert_eq!(skipped["ns/b/release"], "dependency ns/a/release failed");
    assert_eq!(skipped["ns/d/release"], "dependency ns/a/release failed");
    // c waits on b, which did not fail: it never ran.
    assert_eq!(skipped["ns/c/release"], "dependency ns/b/release did not run");
    let mut all: Vec<&str> = summary.succeeded.iter().map(String::as_str).collect();
    all.extend(summary.failed.iter().map(|(id, _)| id.as_str()));
    all.extend(summary.skipped.iter().map(|(id, _)| id.as_str()));
    all.sort();
    let expected: Vec<&str> =
        plan.steps().map(|s| s.id.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    assert_eq!(all, expected);
}

#[tokio::test]
async fn jobs_bounds_the_steps_running_at_once() {
    let steps: Vec<Step> = (0..8).map(|i| step(&format!("s{i}"), "release", "1", &[])).collect();
    let plan = plan(steps);
    for jobs in [1, 3] {
        let (driver, _started) = TestDriver::new(Script { yield_times: 16, ..Script::default() });
        let mut journal = MemoryJournal::default();
        let (options, _cancel) = options(jobs);

        let summary = run(&plan, driver.clone(), &mut journal, options).await;

        assert_eq!(summary.succeeded.len(), 8);
        // Exactly `jobs`: never more, and the independent steps did overlap.
        assert_eq!(driver.max_running.load(Ordering::SeqCst), jobs, "jobs = {jobs}");
    }
}

#[tokio::test]
async fn only_runs_the_component_and_its_dependencies() {
    let plan = diamond_free_plan().restrict_to(&["c".to_owned()]).expect("restricted plan");
    let (driver, _started) = TestDriver::new(Script::default());
    let mut journal = MemoryJournal::default();
    let (options, _cancel) = options(4);

    let summary = run(&plan, driver.clone(), &mut journal, options).await;

    let expected = set(&["ns/a/release", "ns/b/release", "ns/c/release"]);
    assert_eq!(driver.ran(), expected);
    assert_eq!(sorted(&summary.succeeded), expected);
    assert!(summary.skipped.is_empty());
    assert!(summary.is_success());
}

#[tokio::test]
async fn unchanged_steps_are_skipped_and_changed_ones_run() {
    let first = diamond_free_plan();
    let (driver, _started) = TestDriver::new(Script::default());
    let mut journal = MemoryJournal::default();
    let (options_1, _cancel) = options(4);
    assert!(run(&first, driver, &mut journal, options_1).await.is_success());

    // Same plan, with `d` changed: only `d` runs again.
    let second = plan(vec![
        step("a", "release", "1", &[]),
        step("b", "release", "1", &["ns/a/release"]),
        step("c", "release", "1", &["ns/b/release"]),
        step("d", "release", "2", &["ns/a/release"]),
        step("e", "release", "1", &[]),
    ]);
    let (driver, _started) = TestDriver::new(Script::default());
    let (mut options_2, _cancel) = options(4);
    options_2.previous_successes = journal.successes();

    let summary = run(&second, driver.clone(), &mut journal, options_2).await;

    assert_eq!(driver.ran(), set(&["ns/d/release"]));
    assert_eq!(sorted(&summary.succeeded), set(&["ns/d/release"]));
    assert_eq!(
        sorted(&summary.unchanged),
        set(&["ns/a/release", "ns/b/release", "ns/c/release", "ns/e/release"])
    );
    assert!(summary.is_success());
}

#[tokio::test]
async fn a_failed_step_runs_again_on_the_next_deploy() {
    let plan = diamond_free_plan();
    let (driver, _started) = TestDriver::new(Script { fail: set(&["ns/b/release"]), ..Script::default() });
    let mut journal = MemoryJournal::default();
    let (options_1, _cancel) = options(4);
    assert!(!run(&plan, driver, &mut journal, options_1).await.is_success());

    let (driver, _started) = TestDriver::new(Script::default());
    let (mut options_2, _cancel) = options(4);
    options_2.previous_successes = journal.successes();
    let summary = run(&plan, driver.clone(), &mut journal, options_2).await;

    assert_eq!(driver.ran(), set(&["ns/b/release", "ns/c/release"]));
    assert!(summary.is_success());
}

#[tokio::test]
async fn forced_steps_run_although_unchanged() {
    let plan = diamond_free_plan();
    let (driver, _started) = TestDriver::new(Script::default());
    let mut journal = MemoryJournal::default();
    let (options_1, _cancel) = options(4);
    assert!(run(&plan, driver, &mut journal, options_1).await.is_success());

    let (driver, _started) = TestDriver::new(Script::default());
    let (mut options_2, _cancel) = options(4);
    options_2.previous_successes = journal.successes();
    options_2.force_steps = set(&["ns/b/release"]);
    let summary = run(&plan, driver.clone(), &mut journal, options_2).await;

    assert_eq!(driver.ran(), set(&["ns/b/release"]));
    assert_eq!(summary.succeeded, vec!["ns/b/release".to_owned()]);
    assert_eq!(summary.unchanged.len(), 4);
}

#[tokio::test]
async fn cancellation_lets_the_running_step_finish_and_starts_nothing_new() {
    // One job: `a` runs alone and hangs; `d` depends on it; `e` waits for a free slot.
    let plan = diamond_free_plan();
    let gate = Arc::new(Notify::new());
    let (driver, mut started) = TestDriver::new(Script {
        hang: BTreeMap::from([("ns/a/release".to_owned(), gate.clone())]),
        ..Script::default()
    });
    let (options, cancel) = options(1);
    let progress = Arc::new(RecordingProgress::default());
    let run_driver = driver.clone();
    let run_progress = progress.clone();
    let handle = tokio::spawn(async move {
        let mut journal = MemoryJournal::default();
        let summary = execute(&plan, run_driver, &mut journal, run_progress, options).await;
        (summary, journal)
    });

    let first = tokio::time::timeout(WAIT, started.recv()).await.expect("a step starts").expect("a step id");
    assert_eq!(first, "ns/a/release");
    cancel.send(true).expect("the scheduler listens");
    gate.notify_one();
    let (summary, journal) =
        tokio::time::timeout(WAIT, handle).await.expect("the run ends").expect("no panic");

    assert!(summary.interrupted);
    assert!(!summary.is_success());
    assert_eq!(summary.succeeded, vec!["ns/a/release".to_owned()]);
    assert_eq!(driver.ran(), set(&["ns/a/release"]));
    let skipped: BTreeMap<&str, &str> =
        summary.skipped.iter().map(|(id, why)| (id.as_str(), why.as_str())).collect();
    assert_eq!(skipped.len(), 4);
    assert!(skipped.values().all(|why| *why == "not run: interrupted"), "{skipped:?}");
    // The step that finished is journaled; nothing else is.
    assert_eq!(journal.records.len(), 1);
    assert_eq!(journal.records[0].step_id, "ns/a/release");
    assert_eq!(journal.records[0].outcome, StepOutcome::Succeeded);
    let events = progress.events.lock().unwrap();
    let started_events: Vec<&str> =
        events.iter().filter(|e| e.status == StepStatus::Started).map(|e| e.step.as_str()).collect();
    assert_eq!(started_events, vec!["ns/a/release"]);
}

#[tokio::test]
async fn independent_branch_finishes_while_a_failed_branch_stops() {
    // `a` hangs until `e` has finished, proving `e` is not held back by `a`'s branch; then `a`
    // fails and its dependents are skipped.
    let plan = diamond_free_plan();
    let gate = Arc::new(Notify::new());
    let (driver, mut started) = TestDriver::new(Script {
        fail: set(&["ns/a/release"]),
        hang: BTreeMap::from([("ns/a/release".to_owned(), gate.clone())]),
        ..Script::default()
    });
    let (options, _cancel) = options(2);
    let progress = Arc::new(RecordingProgress::default());
    let run_driver = driver.clone();
    let run_progress = progress.clone();
    let handle = tokio::spawn(async move {
        let mut journal = MemoryJournal::default();
        execute(&plan, run_driver, &mut journal, run_progress, options).await
    });
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        let id = tokio::time::timeout(WAIT, started.recv()).await.expect("steps start").expect("an id");
        seen.insert(id);
    }
    assert_eq!(seen, set(&["ns/a/release", "ns/e/release"]));
    // Wait for `e` to succeed while `a` still hangs.
    tokio::time::timeout(WAIT, async {
        loop {
            let done = progress
                .events
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.step == "ns/e/release" && e.status == StepStatus::Succeeded);
            if done {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("e finishes while a hangs");
    gate.notify_one();
    let summary = tokio::time::timeout(WAIT, handle).await.expect("the run ends").expect("no panic");

    assert_eq!(summary.succeeded, vec!["ns/e/release".to_owned()]);
    assert_eq!(summary.failed.len(), 1);
    assert_eq!(summary.skipped.len(), 3);
}

#[tokio::test]
async fn a_readiness_wait_runs_again_whenever_its_release_ran_and_not_otherwise() {
    let release = step("svc", "release", "v1", &[]);
    let wait_action = Action::WaitReady {
        namespace: "ns".to_owned(),
        selector: "app.kubernetes.io/instance=svc".to_owned(),
        timeout_seconds: 60,
    };
    let wait = Step {
        id: "ns/svc/ready".to_owned(),
        component: Some("ns/svc".to_owned()),
        fingerprint: fingerprint(&target(), &wait_action),
        action: wait_action,
        depends_on: vec!["ns/svc/release".to_owned()],
    };
    let other = step("other", "release", "v1", &[]);
    let plan = plan(vec![release, wait, other]);
    let (driver, _started) = TestDriver::new(Script::default());
    let mut journal = MemoryJournal::default();
    let (first, _cancel) = options(4);
    assert!(run(&plan, driver, &mut journal, first).await.is_success());

    // Nothing ran: the wait does not either.
    let (driver, _started) = TestDriver::new(Script::default());
    let (mut unchanged, _cancel) = options(4);
    unchanged.previous_successes = journal.successes();
    run(&plan, driver.clone(), &mut journal, unchanged).await;
    assert_eq!(driver.ran(), BTreeSet::new());

    // The release runs (forced here; changed or drifted alike): its wait runs after it.
    let (driver, _started) = TestDriver::new(Script::default());
    let (mut forced, _cancel) = options(4);
    forced.previous_successes = journal.successes();
    forced.force_steps = set(&["ns/svc/release"]);
    let summary = run(&plan, driver.clone(), &mut journal, forced).await;
    assert_eq!(driver.ran(), set(&["ns/svc/release", "ns/svc/ready"]));
    assert_eq!(summary.unchanged, vec!["ns/other/release".to_owned()]);
}
