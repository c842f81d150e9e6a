//! What observing the target found: the steps the journal records as done whose effect no
//! longer holds (a release uninstalled, a Secret deleted, a bundle file edited), each with the
//! reason. A pure value: the executor's `Observer` produces it, `plan`, `status` and `deploy`
//! classify and render with it.

use std::collections::BTreeMap;

use serde::Serialize;

/// Whether the live state was looked at, and what drifted from the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observation {
    pub refresh: Refresh,
    /// Step id → why its recorded effect no longer holds. Only steps the journal records as
    /// succeeded with their current fingerprint (or a format migration of it) are observed:
    /// every other step runs anyway.
    pub drifted: BTreeMap<String, String>,
    /// What the target's inventory lists and no step of the plan produces any more (a
    /// component that left the configuration), in the order the deploy removes it.
    pub removed: Vec<Removal>,
    /// The lineage of the journal the target was last deployed from, as the target records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_lineage: Option<String>,
}

/// One thing of the target's inventory that left the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// What it is, for people: `file releases/opus/oob-status/values.yaml`,
    /// `helm release opus/oob-status`.
    pub item: String,
    /// Why the deploy keeps it, when it does (a database, a namespace), and how to remove it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retained: Option<String>,
    /// A database: `deploy --prune-databases` drops it instead of retaining it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub database: bool,
}

/// How the live state was (or was not) observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Refresh {
    /// The target was observed: `steps` recorded steps were compared with it.
    Observed { steps: usize },
    /// `--no-refresh`: the journal is trusted as it is.
    Skipped,
    /// The target could not be observed (no cluster from a pull request's CI, say).
    NotObserved { reason: String },
}

impl Observation {
    /// Nothing observed because the operator said so.
    pub fn skipped() -> Observation {
        Observation {
            refresh: Refresh::Skipped,
            drifted: BTreeMap::new(),
            removed: Vec::new(),
            target_lineage: None,
        }
    }

    pub fn not_observed(reason: impl Into<String>) -> Observation {
        Observation {
            refresh: Refresh::NotObserved { reason: reason.into() },
            drifted: BTreeMap::new(),
            removed: Vec::new(),
            target_lineage: None,
        }
    }

    /// Why `step` drifted, when it did.
    pub fn drift_of(&self, step: &str) -> Option<&str> {
        self.drifted.get(step).map(String::as_str)
    }

    /// The sentence to print when the live state was not compared with the journal.
    pub fn note(&self) -> Option<String> {
        self.refresh.note()
    }
}

impl Refresh {
    /// The sentence to print when the live state was not compared with the journal.
    pub fn note(&self) -> Option<String> {
        match self {
            Refresh::Observed { .. } => None,
            Refresh::Skipped => Some(
                "the target was not observed (--no-refresh): steps are compared with the journal only"
                    .to_owned(),
            ),
            Refresh::NotObserved { reason } => Some(format!(
                "the live state was not observed ({reason}): steps are compared with the journal only"
            )),
        }
    }
}

impl Default for Observation {
    /// Nothing observed and nothing drifted: for callers that never observe (a plan diff
    /// between revisions).
    fn default() -> Observation {
        Observation::skipped()
    }
}
