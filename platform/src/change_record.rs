//! Who deployed what: the record a deploy keeps in the journal (every deploy) and in the
//! target's own inventory (every deploy that had something to change, so a no-op deploy still
//! writes nothing there). Below `exec`, `journal`, `deploy`, `status` and the drivers, which
//! all use it; it uses none of them.

use std::collections::BTreeMap;

/// The journal's record of who deployed what: one per deploy, under a step id no plan step
/// can have, so every journal backend keeps it beside the steps' records and `status` shows
/// the last ones.
pub const DEPLOY_RECORD_ID: &str = "@deploy";

/// Who deployed what (no secret: names, a commit, a digest, a ticket).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeployInfo {
    /// `user@host`.
    pub operator: String,
    /// The configuration's git commit (`+dirty` when environments/ has uncommitted changes);
    /// `None` outside git.
    pub commit: Option<String>,
    /// The digest of the plan file deployed with `--plan`.
    pub plan_file: Option<String>,
    /// `--change-ref`: the change ticket.
    pub change_ref: Option<String>,
    /// What the run did: succeeded, failed, skipped, unchanged steps.
    #[serde(default)]
    pub steps: BTreeMap<String, usize>,
}

/// A deploy that set out to change the target, as the target's inventory keeps it: who, and
/// (in `steps`) how many steps it had to create, update or repair and things to delete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeRecord {
    #[serde(flatten)]
    pub info: DeployInfo,
    /// When the deploy started (RFC 3339).
    pub at: String,
}
