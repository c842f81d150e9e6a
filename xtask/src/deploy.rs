//! `cargo xtask deploy`.

use std::io::IsTerminal;
use std::sync::Arc;

use platform::deploy::{self, DeployError, Deployment, OpenOptions, RunOptions};
use platform::drivers::kube::RequestCounter;
use platform::exec::{Cleanup, Driver, Failpoint, Progress};
use platform::plan::{Plan, TargetSpec};
use platform::session::{self, JournalPlace};

use crate::compile_env::Keys;
use crate::flags::{DeployCmd, OutputFormat};
use crate::progress::{JsonProgress, PlainProgress, TerminalProgress};
use crate::repo::Repo;
use crate::ui::OrExit;
use crate::{Outcome, ui};

pub fn run(repo: &Repo, cmd: &DeployCmd) -> Outcome {
    crate::runtime::block_on(deploy(repo, cmd))
}

async fn deploy(repo: &Repo, cmd: &DeployCmd) -> Outcome {
    deploy_or_exit(repo, cmd).await.unwrap_or_else(|outcome| outcome)
}

async fn deploy_or_exit(repo: &Repo, cmd: &DeployCmd) -> Result<Outcome, Outcome> {
    if let Some(message) = rotation_in_progress(repo, &cmd.environment) {
        ui::error(&message);
        return Err(Outcome::CouldNotStart);
    }
    let reviewed = cmd.plan.as_deref().map(crate::plan_file::read).transpose()?;
    let (whole, inputs, digests) =
        crate::plan_file::compile_recorded(repo, &cmd.environment, Keys::Required, reviewed.is_some())?;
    let selection = deploy::select(&whole, &cmd.only, &cmd.force_step).map_err(fail)?;
    let plan = selection.plan();
    let env_file = &inputs.environment.env;
    session::unshared_journal_warning(&cmd.environment, env_file).inspect(|w| eprintln!("{w}"));
    let place = session::journal_place(&repo.root, &cmd.environment, env_file, || {
        session::admin_password_of(&repo.root, &cmd.environment, &inputs.secrets)
    })
    .or_exit(Outcome::CouldNotStart)?;
    let options = OpenOptions { repair_journal: cmd.repair_journal };
    let deployment = Deployment::open(&cmd.environment, &place, &options).await.map_err(fail)?;
    // A reviewed plan: the same inputs, the same plan, the journal where the plan saw it.
    if let (Some((reviewed, _)), Some(path)) = (&reviewed, &cmd.plan) {
        crate::plan_file::verify(repo, path, reviewed, &whole, digests, &deployment.journal_state())?;
        ui::status("Verified", &format!("`{}` is the plan in {}", cmd.environment, path.display()));
    }
    if let Some(stale) = deployment.stale_lock_taken_over() {
        eprintln!(
            "note: took over a stale lock of {}@{} (pid {}, no longer running)",
            stale.user, stale.host, stale.pid
        );
    }
    if let (Some(report), JournalPlace::File { journal, .. }) = (deployment.repaired(), &place) {
        eprintln!(
            "note: repaired {}: dropped the torn record at line {} ({} bytes, starting `{}`)",
            journal.display(),
            report.line,
            report.dropped_bytes,
            report.dropped_preview
        );
    }

    // The driver, and what it observes of the target (the whole environment's plan).
    let (driver, api_requests) = driver_for(repo, plan, &inputs, cmd.prune_databases).await?;
    let observation = deployment
        .observe(selection.whole(), driver.observer(), !cmd.no_refresh, cmd.adopt)
        .await
        .map_err(fail)?;
    if let Some(note) = observation.note() {
        eprintln!("note: {note}");
    }
    if let Some(target) = observation.target_lineage.as_deref()
        && cmd.adopt
        && target != deployment.journal().header().lineage.to_string()
    {
        eprintln!(
            "note: --adopt: the target, last deployed from journal lineage {target}, is taken over by this journal"
        );
    }

    // The summary, and confirmation for protected environments.
    let changes = deployment.changes(plan, &observation);
    let mut extra = String::new();
    if changes.migrate > 0 {
        extra.push_str(&format!(", {} to re-record in the current fingerprint format", changes.migrate));
    }
    if changes.drifted > 0 {
        extra.push_str(&format!(", {} drifted", changes.drifted));
    }
    let pruned = observation.removed.iter().filter(|r| cmd.prune_databases && r.database).count();
    let removals = if selection.is_whole() { changes.delete + pruned } else { 0 };
    if removals > 0 {
        extra.push_str(&format!(", {removals} to delete"));
    }
    ui::status(
        "Planned",
        &format!(
            "`{}`: {} steps ({} to create, {} to update, {} unchanged{extra})",
            cmd.environment, changes.steps, changes.create, changes.update, changes.unchanged
        ),
    );
    for (step, reason) in &observation.drifted {
        if plan.step(step).is_some() {
            eprintln!("     Drifted {step}: {reason}");
        }
    }
    if selection.is_whole() {
        for removal in &observation.removed {
            let pruned = cmd.prune_databases && removal.database;
            match removal.retained.as_ref().filter(|_| !pruned) {
                None => eprintln!("    Removing {} (left the configuration)", removal.item),
                Some(why) => eprintln!("   Retaining {} (left the configuration; {why})", removal.item),
            }
        }
    } else if !observation.removed.is_empty() {
        eprintln!(
            "note: {} item(s) left the configuration; a deploy of the whole environment removes them (--only runs part of it)",
            observation.removed.len()
        );
    }
    if plan.protected && !cmd.yes {
        eprintln!("review the changes with `cargo xtask plan {}`", cmd.environment);
        ui::confirm_protected(&cmd.environment, "deploy")?;
    }

    let progress: Arc<dyn Progress> = match cmd.output {
        OutputFormat::Json => Arc::new(JsonProgress::new(api_requests)),
        OutputFormat::Plain => Arc::new(PlainProgress),
        OutputFormat::Auto if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() => {
            Arc::new(TerminalProgress::new())
        }
        OutputFormat::Auto => Arc::new(PlainProgress),
    };
    let options = RunOptions {
        jobs: usize::from(cmd.jobs),
        force_steps: cmd.force_step.iter().cloned().collect(),
        force_all: cmd.force,
        info: Some(deploy_info(repo, cmd, reviewed.as_ref().map(|(_, digest)| digest.clone()))),
        cancel: cancel_on_ctrl_c(),
        failpoint: Failpoint::from_env(),
    };
    let report = deployment.run(&selection, driver, progress, options, &observation).await.map_err(fail)?;
    // A directory target's files are named in the bundle; a cluster's items are named as they are.
    let place = match &plan.target {
        TargetSpec::Directory { path, .. } | TargetSpec::Flux { path, .. } => format!("{path}/"),
        TargetSpec::Kube { .. } => String::new(),
    };
    for cleanup in &report.cleanup {
        match cleanup {
            Cleanup::Removed { path } => eprintln!("     Removed {place}{path} (left the configuration)"),
            Cleanup::NotRemoved { path, error } => eprintln!("warning: cannot remove {place}{path}: {error}"),
            Cleanup::Retained { path, reason } => {
                eprintln!("    Retained {place}{path}, no longer managed: {reason}")
            }
        }
    }
    if let Some(e) = &report.journal_error {
        eprintln!("warning: the record of this deploy (who, which commit) could not be journaled: {e}");
    }
    if let Some(e) = &report.lock_error {
        eprintln!("warning: {e}");
    }
    Ok(summarize(plan, cmd, &report.summary))
}

/// The target's driver, and for a cluster the count of the API requests its client sends (for
/// the JSON summary).
async fn driver_for(
    repo: &Repo,
    plan: &Plan,
    inputs: &platform::compile::Inputs,
    prune_databases: bool,
) -> Result<(Arc<dyn Driver>, Option<RequestCounter>), Outcome> {
    if let Some(driver) =
        crate::target::directory_driver(repo, plan, inputs).or_exit(Outcome::CouldNotStart)?
    {
        return Ok((Arc::new(driver), None));
    }
    match crate::target::flux_driver(repo, plan, inputs, true) {
        Ok(Some(driver)) => return Ok((Arc::new(driver), None)),
        Ok(None) => {}
        Err(error) => {
            ui::error(&error);
            return Err(Outcome::CouldNotStart);
        }
    }
    let (driver, requests) = crate::kube_target::driver(repo, plan, inputs, prune_databases).await?;
    Ok((driver, Some(requests)))
}

/// The sentence for an environment whose key rotation was interrupted (its journal is still
/// there), if it was.
pub fn rotation_in_progress(repo: &Repo, environment: &str) -> Option<String> {
    platform::keys::rotation::rotation_journal_path(&repo.root, environment).is_file().then(|| {
        format!(
            "a rotation of `{environment}` is in progress: run `cargo xtask rotate-keys {environment}` to finish it"
        )
    })
}

/// Who deploys what: the operator, the configuration's commit, the plan file, the ticket.
fn deploy_info(repo: &Repo, cmd: &DeployCmd, plan_file: Option<String>) -> platform::deploy::DeployInfo {
    let holder = platform::journal::LockHolder::current(&cmd.environment);
    platform::deploy::DeployInfo {
        operator: format!("{}@{}", holder.user, holder.host),
        commit: git_commit(&repo.root),
        plan_file,
        change_ref: cmd.change_ref.clone(),
        steps: Default::default(),
    }
}

/// `git rev-parse HEAD` of the configuration, `+dirty` when environments/ has changes.
fn git_commit(root: &std::path::Path) -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "HEAD"])?;
    // The tool's own state (environments/<env>/.opus/) is not the configuration.
    let dirty = git(&["status", "--porcelain", "--untracked-files=all", "--", "environments"])
        .is_some_and(|s| s.lines().any(|line| !line.contains("/.opus/")));
    Some(if dirty { format!("{commit}+dirty") } else { commit })
}

/// Prints why a deploy did not run, and the outcome to exit with.
fn fail(error: DeployError) -> Outcome {
    ui::error_chain(&error);
    if let Some(help) = error.help() {
        eprintln!("help: {help}");
    }
    if error.could_not_start() { Outcome::CouldNotStart } else { Outcome::Failed }
}

/// A channel set on the first Ctrl-C (no new steps start); a second Ctrl-C exits at once.
fn cancel_on_ctrl_c() -> tokio::sync::watch::Receiver<bool> {
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
    cancel_rx
}

fn summarize(plan: &Plan, cmd: &DeployCmd, summary: &platform::exec::Summary) -> Outcome {
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
