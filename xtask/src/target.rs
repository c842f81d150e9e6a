//! The environment's target for a command: the directory and flux drivers, and what observes the live
//! state for `plan` and `status` (which hold no lock and run no step).

use std::collections::BTreeMap;

use platform::compile::Inputs;
use platform::drivers::directory::DirectoryDriver;
use platform::drivers::flux::FluxDriver;
use platform::exec::Observer;
use platform::exec::observe::observe;
use platform::journal::StepRecord;
use platform::plan::diff::ChangeKind;
use platform::plan::observed::{Observation, Refresh};
use platform::plan::{Action, Plan, TargetSpec};

use crate::repo::Repo;

/// The directory target's driver: the bundle folder, encrypting for env.toml's recipients.
pub fn directory_driver(
    repo: &Repo,
    plan: &Plan,
    inputs: &Inputs,
) -> Result<Option<DirectoryDriver>, platform::secrets::SecretsError> {
    let TargetSpec::Directory { path, .. } = &plan.target else { return Ok(None) };
    let recipients = platform::secrets::parse_recipients(&inputs.environment.env.secrets.age_recipients)?;
    Ok(Some(DirectoryDriver::new(repo.root.join(path), recipients)))
}

/// The flux target's driver: the tree folder, encrypting for env.toml's recipients; with
/// `databases = "external"` and database steps in the plan, the admin connection (from the
/// environment's secrets file as the compile decrypted it) for the deploy to provision with.
pub fn flux_driver(
    repo: &Repo,
    plan: &Plan,
    inputs: &Inputs,
    with_database: bool,
) -> Result<Option<FluxDriver>, String> {
    let TargetSpec::Flux { path, databases, .. } = &plan.target else { return Ok(None) };
    let recipients = platform::secrets::parse_recipients(&inputs.environment.env.secrets.age_recipients)
        .map_err(|e| e.to_string())?;
    let needs_database = with_database
        && databases == "external"
        && plan
            .steps()
            .any(|s| matches!(s.action, Action::ProvisionDatabase { .. } | Action::DatabasePreflight { .. }));
    let database = if needs_database {
        let password = platform::session::admin_password_of(&repo.root, &plan.environment, &inputs.secrets)
            .map_err(|e| e.to_string())?;
        Some(platform::session::admin_options(&inputs.environment.env, password, "postgres"))
    } else {
        None
    };
    Ok(FluxDriver::new(repo.root.join(path), plan, recipients, database))
}

/// What `plan` and `status` show of the live state: observed unless `--no-refresh`; a target
/// that cannot be reached (a pull request's CI has no cluster) is a note, not an error.
pub async fn observation(
    repo: &Repo,
    plan: &Plan,
    inputs: &Inputs,
    latest: &BTreeMap<String, StepRecord>,
    no_refresh: bool,
) -> Observation {
    if no_refresh {
        return Observation::skipped();
    }
    // A cluster is compared only with what the journal records: nothing recorded, nothing to
    // look at (and no connection to make from a machine that has no access).
    if matches!(plan.target, TargetSpec::Kube { .. })
        && platform::exec::observe::recorded_as_done(plan, latest).is_empty()
    {
        return Observation { refresh: Refresh::Observed { steps: 0 }, ..Observation::skipped() };
    }
    let observer: Box<dyn Observer> = match observer(repo, plan, inputs).await {
        Ok(observer) => observer,
        Err(reason) => return Observation::not_observed(reason),
    };
    match observe(plan, latest, observer.as_ref()).await {
        Ok(observation) => observation,
        Err(error) => Observation::not_observed(error.rendered()),
    }
}

async fn observer(repo: &Repo, plan: &Plan, inputs: &Inputs) -> Result<Box<dyn Observer>, String> {
    if let Some(driver) = directory_driver(repo, plan, inputs).map_err(|e| e.to_string())? {
        return Ok(Box::new(driver));
    }
    if let Some(driver) = flux_driver(repo, plan, inputs, false)? {
        return Ok(Box::new(driver));
    }
    crate::kube_target::observer(repo, inputs).await
}

/// For a flux target, the files the deploy would write (the text of `plan` ends with them):
/// those of the steps to create, update or repair, and the Kustomizations and kustomize files
/// the plan changes; empty for other targets and when nothing would be written.
pub fn flux_file_changes(
    repo: &Repo,
    plan: &Plan,
    previous: &BTreeMap<String, platform::plan::diff::Snapshot>,
    observation: &Observation,
) -> String {
    let TargetSpec::Flux { path, .. } = &plan.target else { return String::new() };
    let running: std::collections::BTreeSet<String> =
        platform::plan::diff::classify(plan, previous, observation)
            .into_iter()
            .filter(|(_, (kind, _))| {
                matches!(kind, ChangeKind::Create | ChangeKind::Update | ChangeKind::Drifted)
            })
            .map(|(id, _)| id)
            .collect();
    match platform::drivers::flux::file_changes(&repo.root.join(path), plan, &running) {
        Ok(changes) if changes.is_empty() => String::new(),
        Ok(changes) => {
            let mut out = format!("files {path}/ would get:\n");
            for change in changes {
                out.push_str(&format!("  {} {}\n", if change.created { "+" } else { "~" }, change.path));
            }
            out
        }
        Err(error) => format!("note: the files of {path}/ cannot be listed: {}\n", error.message),
    }
}
