//! `cargo xtask check`.

use platform::compile::compile_environment;
use platform::load::environment::{LoadError, survey_environments};
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
        // Compiling without keys also renders every template in strict mode.
        match compile_environment(&tree, &catalog, name, None) {
            Ok(report) if report.diagnostics.is_empty() => {
                let n_steps = report.plan.as_ref().map_or(0, |p| p.len());
                let n_components = report.plan.as_ref().map_or(0, |p| p.components().len());
                ui::status("Checked", &format!("`{name}` ({n_components} components, {n_steps} steps)"));
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
