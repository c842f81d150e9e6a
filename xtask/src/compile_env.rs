//! Compiling an environment for a command: finds the identities once its env.toml is loaded
//! (decrypting when any are available, else compiling without keys, unless the command needs
//! them), prints diagnostics, and maps failures to outcomes.

use platform::access::identities_for;
use platform::check::Failure;
use platform::compile::{Compiled, Inputs, compile_environment, compile_finding_keys};
use platform::load::environment::LoadError;
use platform::load::tree::SourceTree;
use platform::model::EnvFile;
use platform::plan::Plan;
use platform::secrets::Identities;

use crate::repo::Repo;
use crate::{Outcome, ui};

/// Whether a command needs the secrets in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Decrypt when keys are available, otherwise compile without them.
    IfAvailable,
    /// Decrypt, or fail (deploy).
    Required,
}

/// The identities for an environment whose env.toml is loaded.
fn identities_of(
    repo: &Repo,
    environment: &str,
    env_file: &EnvFile,
    keys: Keys,
) -> Result<Option<Identities>, Outcome> {
    match identities_for(&repo.root, env_file) {
        Ok(ids) if ids.is_empty() && keys == Keys::IfAvailable => Ok(None),
        Ok(ids) if ids.is_empty() => {
            let looked: Vec<String> = ids.locations().to_vec();
            ui::error(&format!(
                "no age identity for `{environment}` (its files are encrypted for {}); looked in {}",
                env_file.secrets.age_recipients.join(", "),
                if looked.is_empty() { "nothing".to_owned() } else { looked.join(", ") }
            ));
            eprintln!(
                "help: `cargo xtask keys save {environment}` copies the key from the cluster into your key file"
            );
            Err(Outcome::CouldNotStart)
        }
        Ok(ids) => Ok(Some(ids)),
        Err(e) => {
            ui::error_chain(&e);
            Err(Outcome::CouldNotStart)
        }
    }
}

/// Compiles `environment` from the working tree with the keys `keys` asks for, found once its
/// env.toml is loaded, printing diagnostics: the plan and what it was compiled from, each
/// input read once. `Err` carries the outcome.
pub fn compile_with_keys(repo: &Repo, environment: &str, keys: Keys) -> Result<(Plan, Inputs), Outcome> {
    compile_with_keys_in(repo, &repo.tree(), environment, keys)
}

/// [`compile_with_keys`] reading through `tree` (the working tree, or one recording what is
/// read for a plan file).
pub fn compile_with_keys_in(
    repo: &Repo,
    tree: &dyn SourceTree,
    environment: &str,
    keys: Keys,
) -> Result<(Plan, Inputs), Outcome> {
    let catalog = components::catalog();
    let compiled = compile_finding_keys(tree, &catalog, environment, |env_file| {
        identities_of(repo, environment, env_file, keys)
    });
    match compiled {
        Ok(compiled) => {
            let (plan, inputs) = compiled_or_report(compiled, environment)?;
            Ok((plan, inputs.expect("a compiled plan comes with its inputs")))
        }
        Err(Failure::Keys(outcome)) => Err(outcome),
        Err(Failure::Load(e)) => Err(load_failed(&e)),
    }
}

/// Compiles `environment` from `tree`, printing diagnostics. `Err` carries the outcome.
pub fn compile(
    tree: &dyn SourceTree,
    environment: &str,
    identities: Option<&Identities>,
) -> Result<Plan, Outcome> {
    let catalog = components::catalog();
    match compile_environment(tree, &catalog, environment, identities) {
        Ok(compiled) => compiled_or_report(compiled, environment).map(|(plan, _)| plan),
        Err(e) => Err(load_failed(&e)),
    }
}

/// The plan, or its diagnostics printed.
fn compiled_or_report(compiled: Compiled, environment: &str) -> Result<(Plan, Option<Inputs>), Outcome> {
    match compiled.plan {
        Some(plan) if compiled.diagnostics.is_empty() => Ok((plan, compiled.inputs)),
        _ => {
            ui::diagnostics(&compiled.diagnostics, &compiled.sources);
            let n = compiled.diagnostics.len();
            eprintln!(
                "error: could not compile `{environment}` due to {n} previous error{}",
                if n == 1 { "" } else { "s" }
            );
            Err(Outcome::Failed)
        }
    }
}

fn load_failed(error: &LoadError) -> Outcome {
    if matches!(error, LoadError::UnknownEnvironment { .. }) {
        ui::error(error);
    } else {
        ui::error_chain(error);
    }
    Outcome::CouldNotStart
}
