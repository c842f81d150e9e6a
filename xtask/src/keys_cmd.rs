//! `cargo xtask keys save|get`, and opening an environment's key store (shared with
//! `rotate-keys`): the cluster's Secret for a `kube` target, the local key store file for a
//! `directory` target.

use std::io::IsTerminal;

use platform::drivers::cluster::{ClusterOptions, client};
use platform::drivers::kube::KeyStoreLocation;
use platform::keys::{self, FileKeyStore, KeyStore, KubeKeyStore, local_key_file};
use platform::model::{EnvFile, Target};
use platform::plan::Action;
use platform::secrets::{AppendOutcome, IdentitySources};

use crate::flags::{KeysAction, KeysCmd};
use crate::repo::Repo;
use crate::{Outcome, compile_env, ui};

/// An environment's key store and the name of its cluster (for messages and backups).
pub struct OpenedStore {
    pub store: Box<dyn KeyStore>,
    pub cluster: String,
}

/// Opens the key store of `environment`.
pub async fn open_store(repo: &Repo, environment: &str, env_file: &EnvFile) -> Result<OpenedStore, Outcome> {
    match &env_file.target {
        Target::Directory { key_store: Some(key_store), .. } => Ok(OpenedStore {
            store: Box::new(FileKeyStore::new(repo.root.join(key_store))),
            cluster: format!("directory ({key_store})"),
        }),
        Target::Directory { key_store: None, .. } => {
            ui::error(&format!(
                "environment `{environment}` has no key store: set `key_store` in the [target] table of environments/{environment}/env.toml"
            ));
            Err(Outcome::CouldNotStart)
        }
        Target::Kube { context, kubeconfig, .. } => {
            // The key store component may name its Secret: read it from the plan (no keys
            // needed to compile).
            let plan = compile_env::compile(&repo.tree(), environment, None)?;
            let location = plan
                .steps()
                .find_map(|step| match &step.action {
                    Action::StoreKey { namespace, secret_name, .. } => {
                        Some(KeyStoreLocation { namespace: namespace.clone(), name: secret_name.clone() })
                    }
                    _ => None,
                })
                .unwrap_or_default();
            let options = ClusterOptions {
                kubeconfig: kubeconfig.as_ref().map(|k| repo.root.join(k)),
                context: context.clone(),
            };
            let client = client(&options).await.map_err(|e| {
                ui::error(&e);
                Outcome::CouldNotStart
            })?;
            Ok(OpenedStore { store: Box::new(KubeKeyStore { client, location }), cluster: context.clone() })
        }
    }
}

/// Whether the private key may be printed: never to a terminal unless forced.
pub fn may_print_private_key(stdout_is_terminal: bool, force: bool) -> bool {
    force || !stdout_is_terminal
}

pub fn run(repo: &Repo, cmd: &KeysCmd) -> Outcome {
    crate::runtime::block_on(run_async(repo, cmd))
}

async fn run_async(repo: &Repo, cmd: &KeysCmd) -> Outcome {
    let environment = match &cmd.action {
        KeysAction::Save { environment } | KeysAction::Get { environment, .. } => environment,
    };
    if let KeysAction::Get { force, .. } = &cmd.action
        && !may_print_private_key(std::io::stdout().is_terminal(), *force)
    {
        ui::error(&format!(
            "refusing to print the private key of `{environment}` to a terminal; redirect stdout to a file (`cargo xtask keys get {environment} > backup.json`) or pass --force"
        ));
        return Outcome::CouldNotStart;
    }
    let env_file = match repo.env_file(environment) {
        Ok(env_file) => env_file,
        Err(e) => {
            ui::error_chain(&e);
            return Outcome::CouldNotStart;
        }
    };
    let opened = match open_store(repo, environment, &env_file).await {
        Ok(opened) => opened,
        Err(outcome) => return outcome,
    };
    match &cmd.action {
        KeysAction::Save { .. } => {
            let key_file = match local_key_file(&IdentitySources::from_env()) {
                Ok(path) => path,
                Err(e) => {
                    ui::error(&e);
                    return Outcome::CouldNotStart;
                }
            };
            match keys::save_key(opened.store.as_ref(), &key_file).await {
                Ok(report) => {
                    let verb = match report.outcome {
                        AppendOutcome::Added => "Saved",
                        AppendOutcome::AlreadyPresent => "Unchanged",
                    };
                    ui::status(
                        verb,
                        &format!("key {} of `{environment}` in {}", report.recipient, key_file.display()),
                    );
                    Outcome::Success
                }
                Err(e) => {
                    ui::error_chain(&e);
                    Outcome::Failed
                }
            }
        }
        KeysAction::Get { .. } => {
            match keys::backup_document(opened.store.as_ref(), environment, &opened.cluster).await {
                Ok(document) => {
                    ui::stdout(document.expose());
                    Outcome::Success
                }
                Err(e) => {
                    ui::error_chain(&e);
                    Outcome::Failed
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::may_print_private_key;

    #[test]
    fn private_key_goes_to_a_terminal_only_when_forced() {
        assert!(!may_print_private_key(true, false));
        assert!(may_print_private_key(true, true));
        assert!(may_print_private_key(false, false));
    }
}
