//! `cargo xtask deploy`.

use std::io::IsTerminal;
use std::sync::Arc;

use platform::access::read_env_file;
use platform::drivers::directory::DirectoryDriver;
use platform::exec::{Driver, ExecOptions, Failpoint, Progress, execute};
use platform::plan::diff::{ChangeKind, classify};
use platform::plan::{Plan, TargetSpec};
use platform::session::{self, JournalPlace, SessionError};

use crate::compile_env::{Keys, compile, identities};
use crate::flags::{DeployCmd, OutputFormat};
use crate::progress::{JsonProgress, PlainProgress, TerminalProgress};
use crate::repo::Repo;
use crate::ui::OrExit;
use crate::{Outcome, ui};

/// `OPUS_FAILPOINT=kill-after:<step-id>` kills the process right after that step is
/// journaled. For the crash tests only.
const FAILPOINT_ENV: &str = "OPUS_FAILPOINT";

pub fn run(repo: &Repo, cmd: &DeployCmd) -> Outcome {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(deploy(repo, cmd))
}

async fn deploy(repo: &Repo, cmd: &DeployCmd) -> Outcome {
    deploy_or_exit(repo, cmd).await.unwrap_or_else(|outcome| outcome)
}

async fn deploy_or_exit(repo: &Repo, cmd: &DeployCmd) -> Result<Outcome, Outcome> {
    let identities = identities(repo, &cmd.environment, Keys::Required)?;
    let full_plan = compile(&repo.tree(), &cmd.environment, identities.as_ref())?;
    // `--only` runs part of the plan; the bundle's index still describes the whole environment.
    let restricted;
    let plan = if cmd.only.is_empty() {
        &full_plan
    } else {
        restricted = match full_plan.restrict_to(&cmd.only) {
            Ok(plan) => plan,
            Err(e @ platform::plan::PlanError::UnknownComponent(_)) => {
                ui::error(&format!(
                    "--only: {e} of `{}` (see `cargo xtask plan {}`)",
                    cmd.environment, cmd.environment
                ));
                return Err(Outcome::CouldNotStart);
            }
            Err(e) => {
                ui::error(&format!("internal error: {e}"));
                return Err(Outcome::Failed);
            }
        };
        &restricted
    };
    // Never run an unverified plan, nor one whose secrets are not all decrypted.
    if let Err(e) = plan.verify() {
        ui::error(&format!("the plan of `{}` failed verification: {e}", cmd.environment));
        return Err(Outcome::Failed);
    }
    if !plan.is_executable() {
        ui::error(&format!(
            "cannot deploy `{}`: its secrets could not be decrypted (no age identity for them; see `cargo xtask keys save {}`)",
            cmd.environment, cmd.environment
        ));
        return Err(Outcome::CouldNotStart);
    }
    for step in &cmd.force_step {
        if plan.step(step).is_none() {
            ui::error(&format!(
                "--force-step: `{step}` is not a step of the plan (see `cargo xtask plan {}`)",
                cmd.environment
            ));
            return Err(Outcome::CouldNotStart);
        }
    }
    let env_file = read_env_file(&repo.root, &cmd.environment).or_exit(Outcome::CouldNotStart)?;
    session::unshared_journal_warning(&cmd.environment, &env_file).inspect(|w| eprintln!("{w}"));
    let place = session::journal_place(&repo.root, &cmd.environment, &env_file, identities.as_ref())
        .or_exit(Outcome::CouldNotStart)?;
    // The lock first: nothing below may race another deploy.
    let lock = session::lock(&place, &cmd.environment).await.or_exit(Outcome::CouldNotStart)?;
    if let Some(stale) = lock.stale_taken_over() {
        eprintln!(
            "note: took over a stale lock of {}@{} (pid {}, no longer running)",
            stale.user, stale.host, stale.pid
        );
    }
    if cmd.repair_journal
        && let JournalPlace::File { journal, .. } = &place
    {
        match platform::journal::repair(journal, &cmd.environment) {
            Ok(Some(report)) => eprintln!(
                "note: repaired {}: dropped the torn record at line {} ({} bytes, starting `{}`)",
                journal.display(),
                report.line,
                report.dropped_bytes,
                report.dropped_preview
            ),
            Ok(None) => {}
            Err(e) => {
                ui::error_chain(&e);
                return Err(Outcome::CouldNotStart);
            }
        }
    }
    let mut journal = match session::open_journal(&place, &cmd.environment).await {
        Ok(journal) => journal,
        Err(e) => {
            ui::error_chain(&e);
            if matches!(e, SessionError::Journal(platform::journal::JournalError::TornRecord { .. })) {
                eprintln!(
                    "help: rerun with --repair-journal to drop the torn record (the step it described runs again)"
                );
            }
            return Err(Outcome::CouldNotStart);
        }
    };
    let latest = journal.latest().await.or_exit(Outcome::CouldNotStart)?;
    let (snapshots, successes) =
        (session::successful_snapshots(&latest), session::success_fingerprints(&latest));

    // The summary, and confirmation for protected environments.
    let changes = classify(plan, &snapshots);
    let count = |k: ChangeKind| changes.values().filter(|(c, _)| *c == k).count();
    let migrations = match count(ChangeKind::Migrate) {
        0 => String::new(),
        n => format!(", {n} to re-record in the current fingerprint format"),
    };
    ui::status(
        "Planned",
        &format!(
            "`{}`: {} steps ({} to create, {} to update, {} unchanged{migrations})",
            cmd.environment,
            plan.len(),
            count(ChangeKind::Create),
            count(ChangeKind::Update),
            count(ChangeKind::Unchanged)
        ),
    );
    if plan.protected && !cmd.yes {
        eprintln!("review the changes with `cargo xtask plan {}`", cmd.environment);
        ui::confirm_protected(&cmd.environment, "deploy")?;
    }

    // The kube client's requests, by method, for the JSON summary.
    let mut api_requests = None;
    let driver: Arc<dyn Driver> = match &plan.target {
        TargetSpec::Directory { path, .. } => {
            let recipients = platform::secrets::parse_recipients(&env_file.secrets.age_recipients)
                .or_exit(Outcome::CouldNotStart)?;
            let driver = DirectoryDriver::new(repo.root.join(path), recipients);
            if let Err(e) = std::fs::create_dir_all(repo.root.join(path))
                .map_err(|e| e.to_string())
                .and_then(|()| driver.write_index(&full_plan).map_err(|e| e.message))
            {
                ui::error(&format!("cannot write the bundle index: {e}"));
                return Err(Outcome::Failed);
            }
            Arc::new(driver)
        }
        TargetSpec::Kube { .. } => {
            let (driver, requests) = crate::kube_target::driver(repo, plan, &env_file).await?;
            api_requests = Some(requests);
            driver
        }
    };

    let progress: Arc<dyn Progress> = match cmd.output {
        OutputFormat::Json => Arc::new(JsonProgress { api_requests }),
        OutputFormat::Plain => Arc::new(PlainProgress),
        OutputFormat::Auto if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() => {
            Arc::new(TerminalProgress::new())
        }
        OutputFormat::Auto => Arc::new(PlainProgress),
    };
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\ninterrupted: no new steps start; waiting for the running ones (Ctrl-C again to stop now)"
            );
            let _ = cancel_tx.send(true);
            // A second Ctrl-C stops at once; the journal holds every step that finished.
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopped; resume with `cargo xtask deploy` (steps that were running run again)");
                std::process::exit(130);
            }
        }
    });
    let failpoint = std::env::var(FAILPOINT_ENV)
        .ok()
        .and_then(|v| v.strip_prefix("kill-after:").map(|s| Failpoint { kill_after_step: s.to_owned() }));
    let options = ExecOptions {
        jobs: usize::from(cmd.jobs),
        previous_successes: successes,
        force_steps: cmd.force_step.iter().cloned().collect(),
        cancel: cancel_rx,
        failpoint,
    };
    let summary = execute(plan, driver, &mut journal, progress, options).await;
    // A complete deploy of a whole environment to a bundle removes what no step writes any
    // more (files of removed components), so the bundle never deploys a component twice.
    if let TargetSpec::Directory { path, .. } = &plan.target
        && summary.is_success()
        && cmd.only.is_empty()
    {
        let bundle = repo.root.join(path);
        for stale in platform::drivers::directory::stale_files(&bundle, plan) {
            match std::fs::remove_file(&stale) {
                Ok(()) => {
                    eprintln!(
                        "     Removed {} (no step writes it any more)",
                        stale.strip_prefix(&repo.root).unwrap_or(&stale).display()
                    );
                    // Fails, as it should, while the folder still holds other files.
                    if let Some(parent) = stale.parent() {
                        let _ = std::fs::remove_dir(parent);
                    }
                }
                Err(e) => eprintln!("warning: cannot remove {}: {e}", stale.display()),
            }
        }
    }
    if let Err(e) = lock.release().await {
        eprintln!("warning: {e}");
    }
    Ok(report(plan, cmd, &summary))
}

fn report(plan: &Plan, cmd: &DeployCmd, summary: &platform::exec::Summary) -> Outcome {
    let line = format!(
        "`{}`: {} succeeded, {} failed, {} skipped, {} unchanged",
        plan.environment,
        summary.succeeded.len(),
        summary.failed.len(),
        summary.skipped.len(),
        summary.unchanged.len()
    );
    if summary.is_success() {
        ui::status("Deployed", &line);
        return Outcome::Success;
    }
    if let Some(error) = &summary.journal_error {
        ui::error(&format!("stopped: the journal could not be written: {error}"));
    }
    for (id, message) in &summary.failed {
        eprintln!("  failed: {id}: {message}");
    }
    eprintln!("error: {line}");
    eprintln!(
        "resume with: cargo xtask deploy {}{}",
        cmd.environment,
        if cmd.only.is_empty() { String::new() } else { format!(" --only {}", cmd.only.join(" ")) }
    );
    if summary.interrupted { Outcome::Interrupted } else { Outcome::Failed }
}
