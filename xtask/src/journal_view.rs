//! What the journal of the last deploy says, for `plan` (and where it stands, for a plan file).

use std::collections::BTreeMap;

use platform::compile::Inputs;
use platform::journal::StepRecord;
use platform::session;

use crate::repo::Repo;

/// The latest record of each step; empty when there is no journal yet. A journal that cannot
/// be read (a PostgreSQL one without keys, say) is reported as a note.
/// The latest records and, when the journal could be read, where it stands (`None` when it
/// could not: a plan made in CI without keys; a journal not created yet stands at nothing).
pub fn journal_state(
    repo: &Repo,
    inputs: &Inputs,
) -> (BTreeMap<String, StepRecord>, Option<platform::plan_file::JournalState>) {
    let environment = inputs.environment.name.as_str();
    let not_read = |e: &dyn std::fmt::Display| {
        eprintln!("note: the journal is not read ({e}); every step shows as to create");
        (BTreeMap::new(), None)
    };
    crate::runtime::block_on(async {
        let password = || session::admin_password_of(&repo.root, environment, &inputs.secrets);
        let place = match session::journal_place(&repo.root, environment, &inputs.environment.env, password) {
            Ok(place) => place,
            Err(e) => return not_read(&e),
        };
        match session::open_existing_journal(&place, environment).await {
            Ok(Some(journal)) => match journal.latest().await {
                Ok(latest) => {
                    let state =
                        platform::plan_file::JournalState::of(&journal.header().lineage.to_string(), &latest);
                    (latest, Some(state))
                }
                Err(e) => not_read(&e),
            },
            // No journal here: never deployed, or deployed from another checkout (a file
            // journal is not in git). A plan file then does not pin the journal.
            Ok(None) => (BTreeMap::new(), None),
            Err(e) => not_read(&e),
        }
    })
}
