//! `cargo xtask status`.

use std::fmt::Write;

use platform::access::read_env_file;
use platform::journal::StepOutcome;
use platform::plan::diff::{ChangeKind, classify};
use platform::session;
use time::format_description::well_known::Rfc3339;

use crate::compile_env::{Keys, compile, identities};
use crate::flags::{StatusCmd, StatusFormat};
use crate::repo::Repo;
use crate::ui::OrExit;
use crate::{Outcome, ui};

pub fn run(repo: &Repo, cmd: &StatusCmd) -> Outcome {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(status(repo, cmd))
}

async fn status(repo: &Repo, cmd: &StatusCmd) -> Outcome {
    status_or_exit(repo, cmd).await.unwrap_or_else(|outcome| outcome)
}

async fn status_or_exit(repo: &Repo, cmd: &StatusCmd) -> Result<Outcome, Outcome> {
    let identities = identities(repo, &cmd.environment, Keys::IfAvailable)?;
    let plan = compile(&repo.tree(), &cmd.environment, identities.as_ref())?;
    let env_file = read_env_file(&repo.root, &cmd.environment).or_exit(Outcome::CouldNotStart)?;
    let place = session::journal_place(&repo.root, &cmd.environment, &env_file, identities.as_ref())
        .or_exit(Outcome::CouldNotStart)?;
    let journal =
        session::open_existing_journal(&place, &cmd.environment).await.or_exit(Outcome::CouldNotStart)?;
    let latest = match &journal {
        Some(journal) => journal.latest().await.or_exit(Outcome::CouldNotStart)?,
        None => Default::default(),
    };
    let snapshots = session::successful_snapshots(&latest);
    let changes = classify(&plan, &snapshots);
    let rows: Vec<serde_json::Value> = plan
        .steps()
        .map(|step| {
            let record = latest.get(&step.id);
            let (kind, keys) = &changes[&step.id];
            serde_json::json!({
                "step": step.id,
                "last": record.map(|r| match &r.outcome {
                    StepOutcome::Succeeded => "succeeded".to_owned(),
                    StepOutcome::Failed { .. } => "failed".to_owned(),
                    StepOutcome::Interrupted => "interrupted".to_owned(),
                }),
                "at": record.and_then(|r| r.finished_at.format(&Rfc3339).ok()),
                "error": record.and_then(|r| match &r.outcome { StepOutcome::Failed { message } => Some(message.clone()), _ => None }),
                "would_change": !matches!(kind, ChangeKind::Unchanged | ChangeKind::Migrate),
                "format_migration": *kind == ChangeKind::Migrate,
                "changed_keys": keys.iter().map(|k| k.path.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let pending = rows.iter().filter(|r| r["would_change"] == serde_json::json!(true)).count();
    match cmd.format {
        StatusFormat::Json => ui::stdout(
            &(serde_json::to_string_pretty(&serde_json::json!({
                "environment": cmd.environment,
                "journal": journal.as_ref().map(|j| j.location().to_string()),
                "lineage": journal.as_ref().map(|j| j.header().lineage.to_string()),
                "steps": rows,
                "pending": pending,
            }))
            .expect("JSON")
                + "\n"),
        ),
        StatusFormat::Text => {
            let mut out = String::new();
            match &journal {
                Some(j) => {
                    let _ = writeln!(out, "journal: {} (lineage {})", j.location(), j.header().lineage);
                }
                None => {
                    let _ = writeln!(
                        out,
                        "journal: none yet (`{}` was never deployed from here)",
                        cmd.environment
                    );
                }
            }
            for row in &rows {
                let last = row["last"].as_str().unwrap_or("never run");
                let at = row["at"].as_str().map(|a| format!(" at {a}")).unwrap_or_default();
                let change = if row["would_change"] == serde_json::json!(true) {
                    "would change"
                } else {
                    "up to date"
                };
                let _ = writeln!(
                    out,
                    "  {:<48} {:<12}{:<26} {change}",
                    row["step"].as_str().unwrap_or_default(),
                    last,
                    at
                );
                if let Some(error) = row["error"].as_str() {
                    let _ = writeln!(out, "      error: {error}");
                }
            }
            let _ = writeln!(out, "{pending} of {} steps would change", rows.len());
            ui::stdout(&out);
        }
    }
    Ok(Outcome::Success)
}
