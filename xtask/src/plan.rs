//! `cargo xtask plan`.

use platform::load::tree::GitTree;
use platform::plan::diff::diff_plans;
use platform::plan::document::{PlanDiffDocument, PlanDocument};
use platform::plan::render;

use crate::compile_env::{Keys, compile, compile_with_keys};
use crate::flags::{PlanCmd, PlanFormat};
use crate::repo::Repo;
use crate::{Outcome, ui};

pub fn run(repo: &Repo, cmd: &PlanCmd) -> Outcome {
    let (plan, inputs) = match compile_with_keys(repo, &cmd.environment, Keys::IfAvailable) {
        Ok(compiled) => compiled,
        Err(outcome) => return outcome,
    };
    let identities = inputs.identities.as_ref();
    if let Some(base) = &cmd.base {
        let tree = match GitTree::open(&repo.root, base) {
            Ok(tree) => tree,
            Err(e) => {
                ui::error(&format!("cannot read `{base}` from git: {e}"));
                return Outcome::CouldNotStart;
            }
        };
        let base_plan = match compile(&tree, &cmd.environment, identities) {
            Ok(plan) => plan,
            Err(outcome) => {
                eprintln!("note: the errors above are in `{base}`");
                return outcome;
            }
        };
        let diff = diff_plans(&base_plan, &plan);
        let out = match cmd.format {
            PlanFormat::Json => {
                let document = PlanDiffDocument::new(&cmd.environment, base, &diff);
                serde_json::to_string_pretty(&document).expect("serializable") + "\n"
            }
            PlanFormat::Markdown => render::diff_text(&cmd.environment, base, &diff, true),
            PlanFormat::Text => render::diff_text(&cmd.environment, base, &diff, false),
        };
        crate::ui::stdout(&out);
        return Outcome::Success;
    }
    let latest = crate::journal_view::latest_records(repo, &inputs);
    let previous = platform::session::successful_snapshots(&latest);
    let observation =
        crate::runtime::block_on(crate::target::observation(repo, &plan, &inputs, &latest, cmd.no_refresh));
    let out = match cmd.format {
        PlanFormat::Text => render::text(&plan, &previous, &observation),
        PlanFormat::Json => {
            let document = PlanDocument::with_changes(&plan, &previous, &observation);
            serde_json::to_string_pretty(&document).expect("serializable") + "\n"
        }
        PlanFormat::Markdown => render::markdown(&plan, &previous, &observation),
    };
    crate::ui::stdout(&out);
    Outcome::Success
}
