//! The redeploy benchmark: prints numbers, asserts no timing. Ignored by default; run with
//! `cargo test -p xtask --test deploy_bench -- --ignored --nocapture` (add `--release` for
//! representative numbers).
//!
//! A synthetic `example` environment gets 200 extra components (`oob-open-data` instances
//! `svc-001`..`svc-200` in four namespaces). After one deploy to its directory target, it times
//! a no-change redeploy through the whole binary and in process (compile, then execute with the
//! file journal), and the scheduler's overhead per step with a no-op driver on the memory and
//! the file journal.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use platform::access::read_env_file;
use platform::drivers::directory::DirectoryDriver;
use platform::exec::{
    Driver, ExecOptions, JournalSink, MemoryJournal, NoProgress, PhaseReporter, StepError, StepOutput,
    execute,
};
use platform::journal::Journal;
use platform::plan::{Action, Plan, Step, TargetSpec, fingerprint};
use platform::session;
use util::Repo;

const N_COMPONENTS: usize = 200;
const NAMESPACES: [&str; 4] = ["bench-a", "bench-b", "bench-c", "bench-d"];
const N_NOOP_STEPS: usize = 2000;
const REPEATS: usize = 3;

fn synthetic_repo() -> Repo {
    let repo = Repo::shipped();
    let namespace_toml = repo.read("environments/example/opus/namespace.toml");
    for namespace in NAMESPACES {
        repo.write(&format!("environments/example/{namespace}/namespace.toml"), &namespace_toml);
    }
    for idx in 1..=N_COMPONENTS {
        let namespace = NAMESPACES[idx % NAMESPACES.len()];
        repo.write(
            &format!("environments/example/{namespace}/svc-{idx:03}/component.toml"),
            "template = \"oob-open-data\"\n\n[values_custom]\nreplicaCount = 1\n",
        );
    }
    repo
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// The fastest of `REPEATS` runs of `f`.
fn best_of(mut f: impl FnMut() -> Duration) -> Duration {
    (0..REPEATS).map(|_| f()).min().unwrap()
}

fn time(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

fn compile(repo: &Repo) -> Plan {
    util::compile_example(repo)
}

/// Compile and execute in process with the directory driver and the file journal, as
/// `deploy` does; returns the number of unchanged steps.
fn deploy_in_process(repo: &Repo) -> usize {
    let plan = compile(repo);
    let env_file = read_env_file(repo.root(), "example").unwrap();
    runtime().block_on(async {
        let place = session::journal_place(repo.root(), "example", &env_file, || {
            session::decrypt_admin_password(repo.root(), "example", None)
        })
        .unwrap();
        let lock = session::lock(&place, "example").await.unwrap();
        let mut journal = session::open_journal(&place, "example").await.unwrap();
        let successes = session::success_fingerprints(&journal.latest().await.unwrap());
        let recipients = platform::secrets::parse_recipients(&env_file.secrets.age_recipients).unwrap();
        let TargetSpec::Directory { path, .. } = &plan.target else {
            panic!("example deploys to a directory")
        };
        let driver = Arc::new(DirectoryDriver::new(repo.root().join(path), recipients));
        let (_cancel, cancel) = tokio::sync::watch::channel(false);
        let options = ExecOptions {
            jobs: 4,
            previous_successes: successes,
            force_steps: BTreeSet::new(),
            force_all: false,
            drifted: std::collections::BTreeMap::new(),
            cancel,
            failpoint: None,
        };
        let summary = execute(&plan, driver, &mut journal, Arc::new(NoProgress), options).await;
        assert!(summary.is_success(), "{summary:?}");
        lock.release().await.unwrap();
        summary.unchanged.len()
    })
}

struct NoopDriver;

impl Driver for NoopDriver {
    fn run<'a>(
        &'a self,
        _step: &'a Step,
        _phase: PhaseReporter,
    ) -> Pin<Box<dyn Future<Output = Result<StepOutput, StepError>> + Send + 'a>> {
        Box::pin(async { Ok(serde_json::Value::Null) })
    }
}

/// `n` steps in chains of ten, so that the scheduler both waits on and releases dependents.
fn noop_plan(n: usize) -> Plan {
    let target = TargetSpec::Directory { path: "bundle/bench".to_owned(), recipients: Vec::new() };
    let steps = (0..n)
        .map(|idx| {
            let action = Action::EnsureNamespace {
                name: format!("ns-{idx:05}"),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
            };
            Step {
                id: format!("bench/c{idx:05}/step"),
                component: Some(format!("bench/c{idx:05}")),
                fingerprint: fingerprint(&target, &action),
                action,
                depends_on: if idx % 10 == 0 { vec![] } else { vec![format!("bench/c{:05}/step", idx - 1)] },
            }
        })
        .collect();
    Plan::new("bench".to_owned(), false, target, true, steps).unwrap()
}

fn run_noop<J: JournalSink>(plan: &Plan, journal: &mut J) -> Duration {
    runtime().block_on(async {
        let (_cancel, cancel) = tokio::sync::watch::channel(false);
        let options = ExecOptions {
            jobs: 4,
            previous_successes: BTreeMap::new(),
            force_steps: BTreeSet::new(),
            force_all: false,
            drifted: std::collections::BTreeMap::new(),
            cancel,
            failpoint: None,
        };
        let started = Instant::now();
        let summary = execute(plan, Arc::new(NoopDriver), journal, Arc::new(NoProgress), options).await;
        let elapsed = started.elapsed();
        assert_eq!(summary.succeeded.len(), plan.len());
        elapsed
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us_per_step(d: Duration, n: usize) -> String {
    format!("{:.1} us/step", d.as_secs_f64() * 1e6 / n as f64)
}

#[test]
#[ignore = "benchmark: prints numbers; run with --ignored --nocapture"]
fn redeploy_of_a_large_environment() {
    let repo = synthetic_repo();
    let n_steps = compile(&repo).len();

    let first = time(|| {
        repo.xtask(&["deploy", "example", "--output", "plain"]).assert_code(0);
    });
    let binary_redeploy = best_of(|| {
        time(|| {
            let run = repo.xtask(&["deploy", "example", "--output", "json"]);
            run.assert_code(0);
            assert!(run.stdout.contains(&format!("\"unchanged\":{n_steps}")), "{}", run.stdout);
        })
    });
    let binary_plan = best_of(|| {
        time(|| {
            repo.xtask(&["plan", "example"]).assert_code(0);
        })
    });
    let compile_only = best_of(|| time(|| drop(compile(&repo))));
    let in_process = best_of(|| time(|| assert_eq!(deploy_in_process(&repo), n_steps)));

    let plan = noop_plan(N_NOOP_STEPS);
    let memory = best_of(|| run_noop(&plan, &mut MemoryJournal::default()));
    let file = best_of(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut journal =
            runtime().block_on(Journal::open_file(&dir.path().join("journal.log"), "bench")).unwrap();
        run_noop(&plan, &mut journal)
    });

    println!();
    println!("redeploy benchmark ({N_COMPONENTS} extra components, {n_steps} steps; best of {REPEATS})");
    println!("  {:<52} {:>12}", "first deploy, binary", ms(first));
    println!("  {:<52} {:>12}", "no-change redeploy, binary", ms(binary_redeploy));
    println!("  {:<52} {:>12}", "plan, binary", ms(binary_plan));
    println!("  {:<52} {:>12}", "compile, in process", ms(compile_only));
    println!("  {:<52} {:>12}", "no-change redeploy (compile + execute), in process", ms(in_process));
    println!("scheduler overhead ({N_NOOP_STEPS} no-op steps, jobs 4)");
    println!("  {:<52} {:>12}  {}", "memory journal", ms(memory), us_per_step(memory, N_NOOP_STEPS));
    println!(
        "  {:<52} {:>12}  {}",
        "file journal (fsync per record)",
        ms(file),
        us_per_step(file, N_NOOP_STEPS)
    );
}
