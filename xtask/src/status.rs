//! `cargo xtask status`.

use platform::access::read_env_file;
use platform::session;

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
    let report = platform::status::report(&plan, journal.as_ref(), &latest);
    ui::stdout(&match cmd.format {
        StatusFormat::Json => serde_json::to_string_pretty(&report).expect("JSON") + "\n",
        StatusFormat::Text => report.text(),
    });
    Ok(Outcome::Success)
}
