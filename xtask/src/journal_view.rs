//! What the journal of the last deploy says, for `plan`.

use std::collections::BTreeMap;

use platform::access::read_env_file;
use platform::plan::diff::Snapshot;
use platform::secrets::Identities;
use platform::session;

use crate::repo::Repo;

/// The last successful snapshot of each step; empty when there is no journal yet. A journal
/// that cannot be read (a PostgreSQL one without keys, say) is reported as a note.
pub fn previous_snapshots(
    repo: &Repo,
    environment: &str,
    identities: Option<&Identities>,
) -> BTreeMap<String, Snapshot> {
    let Ok(env_file) = read_env_file(&repo.root, environment) else { return BTreeMap::new() };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let place = match session::journal_place(&repo.root, environment, &env_file, identities) {
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
