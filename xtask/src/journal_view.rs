//! What the journal of the last deploy says, for `plan`.

use std::collections::BTreeMap;

use platform::compile::Inputs;
use platform::journal::StepRecord;
use platform::session;

use crate::repo::Repo;

/// The latest record of each step; empty when there is no journal yet. A journal that cannot
/// be read (a PostgreSQL one without keys, say) is reported as a note.
pub fn latest_records(repo: &Repo, inputs: &Inputs) -> BTreeMap<String, StepRecord> {
    let environment = inputs.environment.name.as_str();
    let not_read = |e: &dyn std::fmt::Display| {
        eprintln!("note: the journal is not read ({e}); every step shows as to create");
        BTreeMap::new()
    };
    crate::runtime::block_on(async {
        let password = || session::admin_password_of(&repo.root, environment, &inputs.secrets);
        let place = match session::journal_place(&repo.root, environment, &inputs.environment.env, password) {
            Ok(place) => place,
            Err(e) => return not_read(&e),
        };
        match session::open_existing_journal(&place, environment).await {
            Ok(Some(journal)) => journal.latest().await.unwrap_or_else(|e| not_read(&e)),
            Ok(None) => BTreeMap::new(),
            Err(e) => not_read(&e),
        }
    })
}
