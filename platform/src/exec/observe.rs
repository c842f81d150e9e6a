//! The refresh: before `plan`, `status` and `deploy` classify steps, the target is observed in
//! bulk and compared with what the journal recorded after each success. An [`Observer`] reads
//! the live state (never writes) for the steps the journal records as done with their current
//! inputs, and says which of them no longer hold and what the target's inventory lists that
//! the plan no longer produces.

use std::collections::BTreeMap;

use futures::future::BoxFuture;

use super::{StepError, StepRecord};
use crate::plan::observed::{Observation, Refresh, Removal};
use crate::plan::{Plan, Step, fingerprint};

/// What an observer found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Step id → why its recorded effect no longer holds.
    pub drifted: BTreeMap<String, String>,
    /// What the target's inventory lists and no step of the plan produces.
    pub removed: Vec<Removal>,
    /// The lineage of the journal the target was last deployed from, as the target recorded it
    /// (`None` when it records none: never deployed, or by a version before lineages).
    pub lineage: Option<String>,
}

/// Reads a target's live state. Read-only: observing changes nothing.
pub trait Observer: Send + Sync {
    /// Compares `steps` (each recorded as succeeded with its current inputs; `recorded` holds
    /// those records) with the target, and lists what the target's inventory has that no step
    /// of `whole` produces. `whole` is the environment's whole plan, also when only part of it
    /// runs.
    fn observe<'a>(
        &'a self,
        whole: &'a Plan,
        steps: &'a [&'a Step],
        recorded: &'a BTreeMap<String, StepRecord>,
    ) -> BoxFuture<'a, Result<Found, StepError>>;
}

/// The steps of `plan` a deploy would skip by the journal alone: recorded as succeeded with
/// the step's fingerprint, or under an older format with the same inputs.
pub fn recorded_as_done<'a>(plan: &'a Plan, latest: &BTreeMap<String, StepRecord>) -> Vec<&'a Step> {
    plan.steps()
        .filter(|step| {
            latest.get(&step.id).is_some_and(|record| {
                record.outcome == super::StepOutcome::Succeeded
                    && (record.fingerprint == step.fingerprint
                        || fingerprint::migrates(&plan.target, &step.action, &record.fingerprint))
            })
        })
        .collect()
}

/// Observes the target for `plan` (the environment's whole plan) against the journal's
/// latest records.
pub async fn observe(
    plan: &Plan,
    latest: &BTreeMap<String, StepRecord>,
    observer: &dyn Observer,
) -> Result<Observation, StepError> {
    let steps = recorded_as_done(plan, latest);
    let found = observer.observe(plan, &steps, latest).await?;
    // An observer reports only steps it was given.
    let given: std::collections::BTreeSet<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    let drifted: BTreeMap<String, String> =
        found.drifted.into_iter().filter(|(id, _)| given.contains(id.as_str())).collect();
    Ok(Observation {
        refresh: Refresh::Observed { steps: steps.len() },
        drifted,
        removed: found.removed,
        target_lineage: found.lineage,
    })
}
