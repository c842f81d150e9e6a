//! `cargo xtask status`.

use platform::session;

use crate::compile_env::{Keys, compile_with_keys};
use crate::flags::{StatusCmd, StatusFormat};
use crate::repo::Repo;
use crate::ui::OrExit;
use crate::{Outcome, ui};

pub fn run(repo: &Repo, cmd: &StatusCmd) -> Outcome {
    crate::runtime::block_on(status(repo, cmd))
}

async fn status(repo: &Repo, cmd: &StatusCmd) -> Outcome {
    status_or_exit(repo, cmd).await.unwrap_or_else(|outcome| outcome)
}

async fn status_or_exit(repo: &Repo, cmd: &StatusCmd) -> Result<Outcome, Outcome> {
    let (plan, inputs) = compile_with_keys(repo, &cmd.environment, Keys::IfAvailable)?;
    let place = session::journal_place(&repo.root, &cmd.environment, &inputs.environment.env, || {
        session::admin_password_of(&repo.root, &cmd.environment, &inputs.secrets)
    })
    .or_exit(Outcome::CouldNotStart)?;
    let journal =
        session::open_existing_journal(&place, &cmd.environment).await.or_exit(Outcome::CouldNotStart)?;
    let latest = match &journal {
        Some(journal) => journal.latest().await.or_exit(Outcome::CouldNotStart)?,
        None => Default::default(),
    };
    let observation = crate::target::observation(repo, &plan, &inputs, &latest, cmd.no_refresh).await;
    let deploys = match &journal {
        Some(journal) => journal
            .history_of(platform::deploy::DEPLOY_RECORD_ID, platform::status::DEPLOYS_SHOWN)
            .await
            .or_exit(Outcome::CouldNotStart)?,
        None => Vec::new(),
    };
    let report = platform::status::report(&plan, journal.as_ref(), &latest, &deploys, &observation);
    ui::stdout(&match cmd.format {
        StatusFormat::Json => serde_json::to_string_pretty(&report).expect("JSON") + "\n",
        StatusFormat::Text => report.text(),
    });
    Ok(Outcome::Success)
}
