//! `cargo xtask keys new|save|get|restore|retire`, and opening an environment's key store
//! (shared with `rotate-keys`): the cluster's Secret for a `kube` target, the decryption
//! Secret of a `flux` target that names its cluster's `context`, else the local key store file.

use std::io::IsTerminal;

use platform::drivers::cluster::{ClusterOptions, client};
use platform::drivers::kube::KeyStoreLocation;
use platform::keys::{self, FileKeyStore, KeyStore, KeysError, KubeKeyStore, RetireOptions, local_key_file};
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
        // The decryption Secret Flux reads: it imports every `.agekey` entry, and the key
        // store's `current.agekey` and, during a rotation, `previous.agekey` are two.
        Target::Flux { context: Some(_), key_store: Some(_), .. } => {
            ui::error(&format!(
                "environment `{environment}` names two key stores (`context` and `key_store` in its [target] table); `cargo xtask check {environment}` shows where"
            ));
            Err(Outcome::CouldNotStart)
        }
        Target::Flux { context: Some(context), kubeconfig, namespace, decryption_secret, .. } => {
            let location = KeyStoreLocation { namespace: namespace.clone(), name: decryption_secret.clone() };
            let store = kube_store(repo, context, kubeconfig.as_deref(), location).await?;
            Ok(OpenedStore { store: Box::new(store), cluster: context.clone() })
        }
        Target::Directory { key_store: Some(key_store), .. }
        | Target::Flux { key_store: Some(key_store), .. } => Ok(OpenedStore {
            store: Box::new(FileKeyStore::new(repo.root.join(key_store))),
            cluster: format!("directory ({key_store})"),
        }),
        Target::Directory { key_store: None, .. } => {
            ui::error(&format!(
                "environment `{environment}` has no key store: set `key_store` in the [target] table of environments/{environment}/env.toml"
            ));
            Err(Outcome::CouldNotStart)
        }
        Target::Flux { key_store: None, context: None, .. } => {
            ui::error(&format!(
                "environment `{environment}` has no key store: set `context` in the [target] table of environments/{environment}/env.toml to keep the key in the cluster's decryption Secret, or `key_store` for a local file"
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
            let store = kube_store(repo, context, kubeconfig.as_deref(), location).await?;
            Ok(OpenedStore { store: Box::new(store), cluster: context.clone() })
        }
    }
}

/// The key store Secret at `location` in the cluster of `context`.
async fn kube_store(
    repo: &Repo,
    context: &str,
    kubeconfig: Option<&str>,
    location: KeyStoreLocation,
) -> Result<KubeKeyStore, Outcome> {
    let options =
        ClusterOptions { kubeconfig: kubeconfig.map(|k| repo.root.join(k)), context: context.to_owned() };
    let client = client(&options).await.map_err(|e| {
        ui::error(&e);
        Outcome::CouldNotStart
    })?;
    Ok(KubeKeyStore { client, location })
}

/// Whether the private key may be printed: never to a terminal unless forced.
pub fn may_print_private_key(stdout_is_terminal: bool, force: bool) -> bool {
    force || !stdout_is_terminal
}

pub fn run(repo: &Repo, cmd: &KeysCmd) -> Outcome {
    crate::runtime::block_on(run_async(repo, cmd))
}

async fn run_async(repo: &Repo, cmd: &KeysCmd) -> Outcome {
    let environment = cmd.action.environment();
    if let KeysAction::New { .. } = &cmd.action {
        return new_key(repo, environment).await.unwrap_or_else(|outcome| outcome);
    }
    if let KeysAction::Restore { .. } = &cmd.action
        && std::io::stdin().is_terminal()
    {
        ui::error(&format!(
            "`keys restore` reads the backup from stdin, and a key pasted in a terminal lands in its scrollback: `cargo xtask keys restore {environment} < backup.json`"
        ));
        return Outcome::CouldNotStart;
    }
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
    if let KeysAction::Retire { force, .. } = &cmd.action {
        return retire(repo, environment, &env_file, *force).await.unwrap_or_else(|outcome| outcome);
    }
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
        KeysAction::Restore { .. } => {
            let key_file = match local_key_file(&IdentitySources::from_env()) {
                Ok(path) => path,
                Err(e) => {
                    ui::error(&e);
                    return Outcome::CouldNotStart;
                }
            };
            let mut text = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                ui::error(&format!("cannot read the backup from stdin: {e}"));
                return Outcome::CouldNotStart;
            }
            let backup = platform::sensitive::SecretString::new(text);
            match keys::restore_key(
                &repo.root,
                environment,
                &env_file.secrets.age_recipients,
                &backup,
                &key_file,
                opened.store.as_ref(),
            )
            .await
            {
                Ok(report) => {
                    ui::status(
                        "Restored",
                        &format!(
                            "key {} of `{environment}` (it decrypts all {} secrets files): {} {}, {} {}",
                            report.recipient,
                            report.files,
                            key_file.display(),
                            match report.key_file {
                                AppendOutcome::Added => "has it now",
                                AppendOutcome::AlreadyPresent => "had it already",
                            },
                            opened.store.describe(),
                            if report.store_had_it { "had it already" } else { "has it now" },
                        ),
                    );
                    Outcome::Success
                }
                Err(e) => {
                    ui::error_chain(&e);
                    Outcome::CouldNotStart
                }
            }
        }
        KeysAction::New { .. } | KeysAction::Retire { .. } => unreachable!("handled above"),
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

/// `keys retire`: the previous key a rotation kept in a `flux` target's decryption Secret.
async fn retire(repo: &Repo, environment: &str, env_file: &EnvFile, force: bool) -> Result<Outcome, Outcome> {
    let Target::Flux {
        context: Some(context),
        kubeconfig,
        namespace,
        decryption_secret,
        key_store: None,
        ..
    } = &env_file.target
    else {
        ui::error(&format!(
            "`keys retire` removes the previous key that `rotate-keys` keeps in a flux target's decryption Secret; `{environment}` has no such Secret (`rotate-keys` retires its previous key itself)"
        ));
        return Err(Outcome::CouldNotStart);
    };
    let location = KeyStoreLocation { namespace: namespace.clone(), name: decryption_secret.clone() };
    let store = kube_store(repo, context, kubeconfig.as_deref(), location).await?;
    let options = RetireOptions { root: &repo.root, environment, env: env_file, force };
    let report = keys::retire_kept_key(&store, Some(&store.client), &options).await.map_err(|e| {
        ui::error_chain(&e);
        match e {
            // The write of the Secret failed; every other error refused before it.
            KeysError::Kube { .. } => Outcome::Failed,
            _ => Outcome::CouldNotStart,
        }
    })?;
    for applied in &report.applied {
        ui::status(
            "Applied",
            &format!("Kustomization {}/{} at {}", applied.namespace, applied.name, applied.revision),
        );
    }
    match &report.retired {
        Some(recipient) => {
            ui::status("Retired", &format!("the previous key {recipient} from {}", store.describe()))
        }
        None => ui::status("Unchanged", &format!("{} keeps no previous key", store.describe())),
    }
    Ok(Outcome::Success)
}

async fn new_key(repo: &Repo, environment: &str) -> Result<Outcome, Outcome> {
    let path = repo.root.join("environments").join(environment).join("env.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ui::error(&format!("cannot read {}: {e}", path.display()));
        Outcome::CouldNotStart
    })?;
    // The environment is not valid before it lists a recipient: read only its target.
    let target = toml::from_str::<toml::Table>(&text)
        .map_err(|e| e.message().to_owned())
        .and_then(|table| table.get("target").cloned().ok_or_else(|| "it has no [target] table".to_owned()))
        .and_then(|target| target.try_into::<Target>().map_err(|e| e.message().to_owned()))
        .map_err(|reason| {
            ui::error(&format!(
                "{}: {reason} (`cargo xtask check {environment}` shows where)",
                path.display()
            ));
            Outcome::CouldNotStart
        })?;
    let key_file = local_key_file(&IdentitySources::from_env()).map_err(|e| {
        ui::error(&e);
        Outcome::CouldNotStart
    })?;
    // A kube target's first deploy stores the key; a flux target with a cluster has no step
    // that writes to it, so the key goes into the decryption Secret now.
    let store: Option<Box<dyn KeyStore>> = match &target {
        Target::Flux {
            context: Some(context),
            key_store: None,
            kubeconfig,
            namespace,
            decryption_secret,
            ..
        } => {
            let location = KeyStoreLocation { namespace: namespace.clone(), name: decryption_secret.clone() };
            Some(Box::new(kube_store(repo, context, kubeconfig.as_deref(), location).await?))
        }
        Target::Flux { context: Some(_), key_store: Some(_), .. } => {
            ui::error(&format!(
                "environment `{environment}` names two key stores (`context` and `key_store` in its [target] table); keep one"
            ));
            return Err(Outcome::CouldNotStart);
        }
        _ => target
            .key_store()
            .map(|key_store| Box::new(FileKeyStore::new(repo.root.join(key_store))) as Box<dyn KeyStore>),
    };
    let report = keys::new_key(&repo.root, environment, &key_file, store.as_deref()).await.map_err(|e| {
        ui::error_chain(&e);
        Outcome::CouldNotStart
    })?;
    ui::status("Generated", &format!("key {} for `{environment}`", report.recipient));
    ui::status("Saved", &format!("its private key in {} (mode 0600)", report.key_file.display()));
    if let Some(store) = &report.key_store {
        ui::status("Stored", &format!("it in the key store {store}"));
    }
    ui::status("Updated", &format!("age_recipients in {}", report.env_toml.display()));
    if matches!(target, Target::Kube { .. }) {
        eprintln!("note: the first deploy stores the key in the cluster's key store");
    }
    eprintln!(
        "note: back the key up now, outside the repository: (umask 077; cargo xtask keys get {environment} > ~/opus-{environment}-age-key.json) once it is in the key store; next: cargo xtask secrets new environments/{environment}/secrets.enc.yaml"
    );
    Ok(Outcome::Success)
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
