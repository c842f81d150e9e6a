//! Building the `kube` target's driver for a deploy: the cluster client from the kubeconfig
//! context, helm (`$OPUS_HELM`, `.tools/bin/helm`, or `helm` on PATH), the database admin
//! credentials from the environment's secrets file as the compile decrypted it, and the
//! identities for the key store. The
//! client counts the requests it sends, for the deploy's summary.

use std::sync::Arc;

use platform::compile::Inputs;
use platform::drivers::cluster::ClusterDriver;
use platform::drivers::helm::{HelmContext, find_helm};
use platform::drivers::kube::ClusterObserver;
use platform::drivers::kube::{ClientOptions, RequestCounter, connect_counted};
use platform::exec::{Driver, Observer};
use platform::model::Target;
use platform::plan::{Action, Plan};
use platform::session::{admin_options, admin_password_of};

use crate::repo::Repo;
use crate::{Outcome, ui};

/// The driver, and the count of the API requests its client sends.
pub async fn driver(
    repo: &Repo,
    plan: &Plan,
    inputs: &Inputs,
    prune_databases: bool,
) -> Result<(Arc<dyn Driver>, RequestCounter), Outcome> {
    let env_file = &inputs.environment.env;
    let Target::Kube { context, kubeconfig, .. } = &env_file.target else {
        ui::error(&"internal error: not a kube target");
        return Err(Outcome::Failed);
    };
    let kubeconfig = kubeconfig.as_ref().map(|k| repo.root.join(k));
    let options = ClientOptions { kubeconfig: kubeconfig.clone(), context: Some(context.clone()) };
    let (client, requests) = connect_counted(&options).await.map_err(|e| {
        ui::error(&e);
        Outcome::CouldNotStart
    })?;
    // The identities the secrets were decrypted with also read the key store.
    let identities = inputs.identities.clone().unwrap_or_default();
    // The admin credentials are needed only when the plan touches the database.
    let needs_database = prune_databases
        || plan
            .steps()
            .any(|s| matches!(s.action, Action::ProvisionDatabase { .. } | Action::DatabasePreflight { .. }));
    let database = if needs_database {
        match admin_password_of(&repo.root, &plan.environment, &inputs.secrets) {
            Ok(password) => Some(admin_options(env_file, password, "postgres")),
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
    let driver: Arc<dyn Driver> = Arc::new(ClusterDriver {
        client,
        helm,
        database,
        identities: Arc::new(identities),
        root: repo.root.clone(),
        run: Default::default(),
        prune_databases,
    });
    Ok((driver, requests))
}

/// What observes the cluster for `plan` and `status`: a client for the environment's context
/// (read-only lists; no helm, no database).
pub async fn observer(repo: &Repo, inputs: &Inputs) -> Result<Box<dyn Observer>, String> {
    let Target::Kube { context, kubeconfig, .. } = &inputs.environment.env.target else {
        return Err("the target is not a cluster".to_owned());
    };
    let options = ClientOptions {
        kubeconfig: kubeconfig.as_ref().map(|k| repo.root.join(k)),
        context: Some(context.clone()),
    };
    let client = platform::drivers::kube::connect(&options).await.map_err(|e| e.to_string())?;
    Ok(Box::new(ClusterObserver { client }))
}
