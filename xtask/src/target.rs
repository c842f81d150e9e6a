//! The environment's target for a command: the directory driver, and what observes the live
//! state for `plan` and `status` (which hold no lock and run no step).

use std::collections::BTreeMap;

use platform::compile::Inputs;
use platform::drivers::directory::DirectoryDriver;
use platform::exec::Observer;
use platform::exec::observe::observe;
use platform::journal::StepRecord;
use platform::plan::observed::{Observation, Refresh};
use platform::plan::{Plan, TargetSpec};

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
    crate::kube_target::observer(repo, inputs).await
}
