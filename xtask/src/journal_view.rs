//! What the journal of the last deploy says, for `plan` and `status`.

use std::collections::BTreeMap;

use platform::plan::diff::Snapshot;

use crate::repo::Repo;

/// The last successful snapshot of each step, or nothing when there is no journal yet.
pub fn previous_snapshots(_repo: &Repo, _environment: &str) -> BTreeMap<String, Snapshot> {
    BTreeMap::new()
}
