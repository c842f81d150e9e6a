//! Compiling an environment for a command: finds the identities (decrypting when any are
//! available, else compiling without keys), prints diagnostics, and maps failures to outcomes.

use platform::access::{identities_for, read_env_file};
use platform::compile::compile_environment;
use platform::load::environment::LoadError;
use platform::load::tree::SourceTree;
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

/// The identities for an environment; `None` when there are none and they are optional.
pub fn identities(repo: &Repo, environment: &str, keys: Keys) -> Result<Option<Identities>, Outcome> {
    let env_file = match read_env_file(&repo.root, environment) {
        Ok(env_file) => env_file,
        // The loader reports a broken env.toml with its place; let it.
        Err(_) => return Ok(None),
    };
    match identities_for(&repo.root, &env_file) {
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

/// Compiles `environment` from `tree`, printing diagnostics. `Err` carries the outcome.
pub fn compile(
    tree: &dyn SourceTree,
    environment: &str,
    identities: Option<&Identities>,
) -> Result<Plan, Outcome> {
    let catalog = components::catalog();
    match compile_environment(tree, &catalog, environment, identities) {
        Ok(compiled) => match compiled.plan {
            Some(plan) if compiled.diagnostics.is_empty() => Ok(plan),
            _ => {
                ui::diagnostics(&compiled.diagnostics, &compiled.sources);
                let n = compiled.diagnostics.len();
                eprintln!(
                    "error: could not compile `{environment}` due to {n} previous error{}",
                    if n == 1 { "" } else { "s" }
                );
                Err(Outcome::Failed)
            }
        },
        Err(e @ LoadError::UnknownEnvironment { .. }) => {
            ui::error(&e);
            Err(Outcome::CouldNotStart)
        }
        Err(e) => {
            ui::error_chain(&e);
            Err(Outcome::CouldNotStart)
        }
    }
}
