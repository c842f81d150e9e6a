//! `cargo xtask check`.

use platform::access::identities_for;
use platform::check::Failure;
use platform::compile::compile_finding_keys;
use platform::load::environment::{LoadError, survey_environments};
use platform::load::secret_inputs::identities_for_recipients;
use platform::model::EnvFile;
use platform::source::SourceMap;

use crate::flags::CheckCmd;
use crate::repo::Repo;
use crate::{Outcome, ui};

pub fn run(repo: &Repo, cmd: &CheckCmd) -> Outcome {
    let tree = repo.tree();
    let catalog = components::catalog();
    let mut outcome = Outcome::Success;
    let names = if cmd.environments.is_empty() {
        match survey_environments(&tree) {
            Ok((names, _)) if names.is_empty() => {
                ui::error(&format!("no environments in {}/environments", repo.root.display()));
                return Outcome::CouldNotStart;
            }
            Ok((names, problems)) => {
                // What environments/ holds besides client.toml, notes and environments.
                if !problems.is_empty() {
                    ui::diagnostics(&problems, &SourceMap::new());
                    let n = problems.len();
                    eprintln!(
                        "error: could not check environments/ due to {n} previous error{}",
                        if n == 1 { "" } else { "s" }
                    );
                    outcome = Outcome::Failed;
                }
                names
            }
            Err(e) => {
                ui::error_chain(&e);
                return Outcome::CouldNotStart;
            }
        }
    } else {
        cmd.environments.clone()
    };
    for name in &names {
        // A rotation cut short leaves files for the old and the new key: say that, not only
        // what it causes.
        if let Some(message) = crate::deploy::rotation_in_progress(repo, name) {
            ui::error(&message);
            outcome = worst(outcome, Outcome::Failed);
        }
        // Compiling (with or without keys) also renders every template in strict mode. With a
        // key of the environment, the secrets files are decrypted too: their MACs are verified.
        let keys = |env: &EnvFile| {
            Ok::<_, std::convert::Infallible>(
                identities_for(&repo.root, env)
                    .ok()
                    .and_then(|ids| identities_for_recipients(ids, &env.secrets.age_recipients)),
            )
        };
        let compiled = compile_finding_keys(&tree, &catalog, name, keys).map_err(|failure| match failure {
            Failure::Load(e) => e,
            Failure::Keys(never) => match never {},
        });
        match compiled {
            Ok(report) if report.diagnostics.is_empty() => {
                let decrypted = report.inputs.as_ref().is_some_and(|inputs| inputs.identities.is_some());
                let n_steps = report.plan.as_ref().map_or(0, |p| p.len());
                let n_components = report.plan.as_ref().map_or(0, |p| p.components().len());
                ui::status("Checked", &format!("`{name}` ({n_components} components, {n_steps} steps)"));
                if !decrypted {
                    eprintln!(
                        "note: the MACs of `{name}`'s secrets files were not verified (no age identity of its recipients here)"
                    );
                }
                // The process ends after the last environment: freeing a compiled environment
                // (every step, value tree and source) is about 6% of `check`'s time, for nothing.
                std::mem::forget(report);
            }
            Ok(report) => {
                ui::diagnostics(&report.diagnostics, &report.sources);
                let n = report.diagnostics.len();
                eprintln!(
                    "error: could not check `{name}` due to {n} previous error{}",
                    if n == 1 { "" } else { "s" }
                );
                outcome = worst(outcome, Outcome::Failed);
            }
            Err(e @ LoadError::UnknownEnvironment { .. }) => {
                ui::error(&e);
                outcome = worst(outcome, Outcome::CouldNotStart);
            }
            Err(e) => {
                ui::error_chain(&e);
                outcome = worst(outcome, Outcome::CouldNotStart);
            }
        }
    }
    outcome
}

fn worst(a: Outcome, b: Outcome) -> Outcome {
    use Outcome::*;
    match (a, b) {
        (CouldNotStart, _) | (_, CouldNotStart) => CouldNotStart,
        (Failed, _) | (_, Failed) => Failed,
        _ => Success,
    }
}
