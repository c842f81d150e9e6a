//! What the journal of the last deploy says, for `plan`.

use std::collections::BTreeMap;

use platform::compile::Inputs;
use platform::plan::diff::Snapshot;
use platform::session;

use crate::repo::Repo;

/// The last successful snapshot of each step; empty when there is no journal yet. A journal
/// that cannot be read (a PostgreSQL one without keys, say) is reported as a note.
pub fn previous_snapshots(repo: &Repo, inputs: &Inputs) -> BTreeMap<String, Snapshot> {
    let environment = inputs.environment.name.as_str();
    crate::runtime::block_on(async {
        let password = || session::admin_password_of(&repo.root, environment, &inputs.secrets);
        let place = match session::journal_place(&repo.root, environment, &inputs.environment.env, password) {
            Ok(place) => place,
            Err(e) => {
                eprintln!("note: the journal is not read ({e}); every step shows as to create");
                return BTreeMap::new();
            }
        };
        match session::open_existing_journal(&place, environment).await {
            Ok(Some(journal)) => match journal.latest().await {
                Ok(latest) => session::successful_snapshots(&latest),
                Err(e) => {
                    eprintln!("note: the journal is not read ({e}); every step shows as to create");
                    BTreeMap::new()
                }
            },
            Ok(None) => BTreeMap::new(),
            Err(e) => {
                eprintln!("note: the journal is not read ({e}); every step shows as to create");
                BTreeMap::new()
            }
        }
    })
}
