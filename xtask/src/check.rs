//! `cargo xtask check`.

use platform::access::{identities_for, read_env_file};
use platform::compile::compile_environment;
use platform::load::environment::{LoadError, survey_environments};
use platform::load::secret_inputs::identities_for_recipients;
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
        // Compiling (with or without keys) also renders every template in strict mode. With a
        // key of the environment, the secrets files are decrypted too: their MACs are verified.
        let identities = read_env_file(&repo.root, name).ok().and_then(|env| {
            identities_for_recipients(identities_for(&repo.root, &env).ok()?, &env.secrets.age_recipients)
        });
        match compile_environment(&tree, &catalog, name, identities.as_ref()) {
            Ok(report) if report.diagnostics.is_empty() => {
                let n_steps = report.plan.as_ref().map_or(0, |p| p.len());
                let n_components = report.plan.as_ref().map_or(0, |p| p.components().len());
                ui::status("Checked", &format!("`{name}` ({n_components} components, {n_steps} steps)"));
                if identities.is_none() {
                    eprintln!(
                        "note: the MACs of `{name}`'s secrets files were not verified (no age identity of its recipients here)"
                    );
                }
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
