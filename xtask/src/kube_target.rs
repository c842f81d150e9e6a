//! Building the `kube` target's driver for a deploy: the cluster client from the kubeconfig
//! context, helm (`$OPUS_HELM`, `.tools/bin/helm`, or `helm` on PATH), the database admin
//! credentials from the environment's secrets file, and the identities for the key store.

use std::sync::Arc;

use platform::access::identities_for;
use platform::drivers::cluster::{ClusterDriver, ClusterOptions, client};
use platform::drivers::helm::{HelmContext, find_helm};
use platform::exec::Driver;
use platform::model::{EnvFile, Target};
use platform::plan::{Action, Plan};
use platform::secrets::decrypt_file;
use platform::session::{JournalPlace, journal_place};

use crate::repo::Repo;
use crate::{Outcome, ui};

pub async fn driver(repo: &Repo, plan: &Plan, env_file: &EnvFile) -> Result<Arc<dyn Driver>, Outcome> {
    let Target::Kube { context, kubeconfig, .. } = &env_file.target else {
        ui::error(&"internal error: not a kube target");
        return Err(Outcome::Failed);
    };
    let kubeconfig = kubeconfig.as_ref().map(|k| repo.root.join(k));
    let client = client(&ClusterOptions { kubeconfig: kubeconfig.clone(), context: context.clone() })
        .await
        .map_err(|e| {
        ui::error(&e);
        Outcome::CouldNotStart
    })?;
    let identities = identities_for(&repo.root, env_file).map_err(|e| {
        ui::error_chain(&e);
        Outcome::CouldNotStart
    })?;
    // The admin credentials are needed only when the plan touches the database.
    let needs_database = plan
        .steps()
        .any(|s| matches!(s.action, Action::ProvisionDatabase { .. } | Action::DatabasePreflight { .. }));
    let database = if needs_database {
        let path = repo.root.join("environments").join(&plan.environment).join("secrets.enc.yaml");
        let tree = decrypt_file(&path, &identities).map_err(|e| {
            ui::error_chain(&e);
            Outcome::CouldNotStart
        })?;
        if tree.get("database.admin_password").is_none() {
            ui::error(&format!("{} has no `database.admin_password`", path.display()));
            return Err(Outcome::CouldNotStart);
        }
        // The same options the PostgreSQL journal uses, on the `postgres` database.
        let mut file_settings = env_file.clone();
        file_settings.journal =
            platform::model::JournalSettings::Postgres { database: "postgres".to_owned() };
        match journal_place(&repo.root, &plan.environment, &file_settings, Some(&identities)) {
            Ok(JournalPlace::Postgres(options)) => Some(*options),
            Ok(JournalPlace::File { .. }) => None,
            Err(e) => {
                ui::error_chain(&e);
                return Err(Outcome::CouldNotStart);
            }
        }
    } else {
        None
    };
    let helm =
        HelmContext { binary: find_helm(Some(&repo.root)), kube_context: Some(context.clone()), kubeconfig };
    Ok(Arc::new(ClusterDriver {
        client,
        helm,
        database,
        identities: Arc::new(identities),
        root: repo.root.clone(),
    }))
}
