//! `cargo xtask plan`.

use platform::load::tree::{GitTree, SourceTree};
use platform::plan::Plan;
use platform::plan::diff::{ChangeKind, classify, diff_plans};
use platform::plan::document::{PlanDiffDocument, PlanDocument};
use platform::plan::observed::Observation;
use platform::plan::{render, review};

use crate::compile_env::{Keys, compile};
use crate::flags::{PlanCmd, PlanFormat};
use crate::repo::Repo;
use crate::{Outcome, ui};

pub fn run(repo: &Repo, cmd: &PlanCmd) -> Outcome {
    match plan(repo, cmd) {
        // Terraform's `-detailed-exitcode`: 0 no changes, 2 changes (main makes every error 1).
        Ok(true) if cmd.detailed_exitcode => Outcome::Changes,
        Ok(_) => Outcome::Success,
        Err(outcome) => outcome,
    }
}

/// Prints the plan; `Ok(true)` when it has changes.
fn plan(repo: &Repo, cmd: &PlanCmd) -> Result<bool, Outcome> {
    let (plan, inputs, digests) =
        crate::plan_file::compile_recorded(repo, &cmd.environment, Keys::IfAvailable, cmd.out.is_some())?;
    let identities = inputs.identities.as_ref();
    if let Some(base) = &cmd.base {
        let tree = GitTree::open(&repo.root, base).map_err(|e| {
            ui::error(&format!("cannot read `{base}` from git: {e}"));
            Outcome::CouldNotStart
        })?;
        let base_plan = base_plan(&tree, &cmd.environment, &plan, identities).inspect_err(|_| {
            eprintln!("note: the errors above are in `{base}`");
        })?;
        let diff = diff_plans(&base_plan, &plan);
        let out = match cmd.format {
            PlanFormat::Json => {
                let document = PlanDiffDocument::new(&cmd.environment, base, &diff);
                serde_json::to_string_pretty(&document).expect("serializable") + "\n"
            }
            PlanFormat::Markdown => review::diff_markdown(&cmd.environment, base, &base_plan, &plan, &diff),
            PlanFormat::Text => render::diff_text(&cmd.environment, base, &diff, false),
        };
        ui::stdout(&out);
        return Ok(!diff.is_empty());
    }
    let (latest, journal) = crate::journal_view::journal_state(repo, &inputs);
    if let Some(path) = &cmd.out {
        let file = platform::plan_file::PlanFile::new(
            &cmd.environment,
            digests,
            journal,
            crate::plan_file::document(&plan),
        );
        crate::plan_file::write(path, &file)?;
        eprintln!(
            "note: wrote the plan to {} ({} inputs digested); deploy exactly it with `cargo xtask deploy {} --plan {}`",
            path.display(),
            file.inputs.len(),
            cmd.environment,
            path.display()
        );
    }
    let previous = platform::session::successful_snapshots(&latest);
    let observation =
        crate::runtime::block_on(crate::target::observation(repo, &plan, &inputs, &latest, cmd.no_refresh));
    let out = match cmd.format {
        PlanFormat::Text => {
            render::text(&plan, &previous, &observation)
                + &crate::target::flux_file_changes(repo, &plan, &previous, &observation)
        }
        PlanFormat::Json => {
            let document = PlanDocument::with_changes(&plan, &previous, &observation);
            serde_json::to_string_pretty(&document).expect("serializable") + "\n"
        }
        PlanFormat::Markdown => render::markdown(&plan, &previous, &observation),
    };
    ui::stdout(&out);
    Ok(has_changes(&plan, &previous, &observation))
}

/// The environment's plan at the base revision; an empty plan when the environment does not
/// exist there (a pull request that adds it: every step is new).
fn base_plan(
    tree: &GitTree,
    environment: &str,
    head: &Plan,
    identities: Option<&platform::secrets::Identities>,
) -> Result<Plan, Outcome> {
    let env_toml = format!("environments/{environment}/env.toml");
    match tree.exists(&env_toml) {
        Ok(false) => Ok(Plan::new(
            environment.to_owned(),
            head.protected,
            head.target.clone(),
            head.secrets_decrypted,
            Vec::new(),
        )
        .expect("an empty plan is valid")),
        Ok(true) => compile(tree, environment, identities),
        Err(e) => {
            ui::error(&format!("cannot read {env_toml} from git: {e}"));
            Err(Outcome::CouldNotStart)
        }
    }
}

/// Whether a deploy would do anything: a step to run or re-record, or something to remove.
fn has_changes(
    plan: &Plan,
    previous: &std::collections::BTreeMap<String, platform::plan::diff::Snapshot>,
    observation: &Observation,
) -> bool {
    let removals = observation.removed.iter().any(|r| r.retained.is_none());
    removals || classify(plan, previous, observation).values().any(|(kind, _)| *kind != ChangeKind::Unchanged)
}
