//! The deploy journal and the deploy lock: one journal per environment records, for every step
//! the executor ran, its fingerprint, outcome, timestamps and non-secret outputs, so that a rerun
//! skips each step whose fingerprint equals a recorded success. Resuming after a crash and
//! redeploying an unchanged environment are therefore the same mechanism.
//!
//! Two backends: a local file ([`file`], the default: a checksummed append log, fsynced after
//! every record, a torn last record reported rather than read as empty) and PostgreSQL
//! ([`postgres`], for teams: database and schema created and migrated by the tool). Each
//! journal carries a lineage id, written by the first deploy, so that a journal of another
//! environment (or a stale copy) is refused. [`lock`] makes sure only one deploy per
//! environment runs at a time.
//!
//! **Invariant: nothing secret is ever stored.** A record holds fingerprints (keyed hashes, never
//! the values they were computed from), outcomes, non-secret outputs and step snapshots whose
//! secrets the planner has already masked. Neither backend knows how to hold a
//! [`SecretString`](crate::sensitive::SecretString): the only secret this module handles is the
//! PostgreSQL password, which is sent through the driver's connection and never stored or shown.

// Journal and lock errors carry where the journal lives (paths, hosts) so messages can name it;
// they are cold paths, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod file;
pub mod lock;
pub mod postgres;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub use file::{FileJournal, RepairReport, repair};
pub use lock::{
    DeployLock, FileLockGuard, LockBackend, LockError, LockHolder, PgLockGuard, lock_file, lock_postgres,
};
pub use postgres::{PostgresJournal, PostgresJournalOptions};

pub(crate) use crate::exec::record::truncate_to_micros;
/// The records a journal stores are the executor's.
pub use crate::exec::record::{StepOutcome, StepRecord};

use crate::postgres::PostgresError;

/// The journal format version written by this build, in file headers and PostgreSQL schemas.
pub const JOURNAL_FORMAT: u32 = 1;

/// Identity of a journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalHeader {
    pub environment: String,
    /// Written by the first deploy of the environment; never changes afterwards.
    pub lineage: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub format: u32,
}

impl JournalHeader {
    fn new(environment: &str, lineage: Option<Uuid>) -> JournalHeader {
        JournalHeader {
            environment: environment.to_owned(),
            lineage: lineage.unwrap_or_else(Uuid::new_v4),
            created_at: truncate_to_micros(OffsetDateTime::now_utc()),
            format: JOURNAL_FORMAT,
        }
    }
}

/// Options for opening a journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenJournalOptions {
    /// The lineage the journal must have, when the caller knows it (recorded in the cluster,
    /// or taken from another backend's journal). A journal with another lineage is refused. A
    /// journal that does not exist yet is created with this lineage instead of a new one.
    pub expected_lineage: Option<Uuid>,
}

/// Where a journal lives, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalLocation {
    File(PathBuf),
    Postgres { host: String, port: u16, database: String },
}

impl std::fmt::Display for JournalLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalLocation::File(path) => write!(f, "{}", path.display()),
            JournalLocation::Postgres { host, port, database } => {
                write!(f, "PostgreSQL database `{database}` at {host}:{port}")
            }
        }
    }
}

/// Errors of the journal. None carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("could not {step} journal {path}")]
    Io {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "journal {path} ends with a torn record at line {line} (a deploy was interrupted while \
         writing it); repair the journal to drop it"
    )]
    TornRecord { path: PathBuf, line: usize },
    #[error("journal {path} is corrupt at line {line}: {reason}")]
    Corrupt { path: PathBuf, line: usize, reason: String },
    #[error("journal {path} belongs to environment `{found}` (lineage {lineage}), not to `{expected}`")]
    WrongEnvironment { path: PathBuf, expected: String, found: String, lineage: Uuid },
    #[error(
        "journal of environment `{environment}` in {location} has lineage {found}, expected \
         {expected}: it is not the journal this environment was deployed with"
    )]
    LineageMismatch { location: JournalLocation, environment: String, expected: Uuid, found: Uuid },
    #[error(
        "journal {location} has format {found}, written by a newer opus-deploy; this build reads format {JOURNAL_FORMAT} at most (deploy with the newer core, or raise `core` in env.toml)"
    )]
    UnsupportedFormat { location: JournalLocation, found: u32 },
    #[error(
        "journal {location} records step `{step}` with fingerprint format {found}, written by a newer opus-deploy; this build computes fingerprint format {} at most and would take every such step for changed (deploy with the newer core, or raise `core` in env.toml)",
        crate::plan::FINGERPRINT_FORMAT
    )]
    NewerFingerprint { location: JournalLocation, step: String, found: u32 },
    #[error("could not write journal {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: crate::secrets::AtomicWriteError,
    },
    #[error("could not encode a journal record of step `{step_id}`")]
    Encode {
        step_id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("journal tables in {location}")]
    Postgres {
        location: JournalLocation,
        #[source]
        source: PostgresError,
    },
    #[error(
        "journal schema in {location} is version {found}; this build knows version {known} at most \
         (upgrade opus-deploy)"
    )]
    SchemaTooNew { location: JournalLocation, found: i32, known: i32 },
    #[error("journal record {id} of environment `{environment}` in {location} is unreadable: {reason}")]
    BadRow { location: JournalLocation, environment: String, id: i64, reason: String },
    #[error(
        "journal database `{database}` does not exist on PostgreSQL at {host}:{port}, and {}\n\
         help: have a PostgreSQL administrator run `CREATE DATABASE {} OWNER {};`, or choose an \
         existing database with `database = \"<name>\"` under `[journal]` in env.toml",
        reason.explain(role),
        quote_identifier(database),
        quote_identifier(role)
    )]
    DatabaseNotCreated { host: String, port: u16, database: String, role: String, reason: NotCreatedReason },
}

/// Why a missing PostgreSQL journal database was not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCreatedReason {
    /// The admin role has neither `CREATEDB` nor superuser.
    NoPrivilege,
    /// The name is not one opus-deploy puts into SQL (lowercase letters, digits, underscores).
    InvalidName(&'static str),
}

impl NotCreatedReason {
    fn explain(&self, role: &str) -> String {
        match self {
            NotCreatedReason::NoPrivilege => {
                format!("role `{role}` may not create it (it has neither CREATEDB nor SUPERUSER)")
            }
            NotCreatedReason::InvalidName(reason) => {
                format!("opus-deploy does not create it: its name is not a plain identifier ({reason})")
            }
        }
    }
}

/// `name` as a double-quoted SQL identifier (for help text: a name we validated needs no
/// escaping, any other has its quotes doubled).
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A journal of one environment, in one of the backends.
#[derive(Debug)]
pub enum Journal {
    File(FileJournal),
    Postgres(PostgresJournal),
}

impl Journal {
    /// Opens the file journal at `path`, creating it with a new lineage when missing.
    pub async fn open_file(path: &Path, environment: &str) -> Result<Journal, JournalError> {
        Journal::open_file_with(path, environment, &OpenJournalOptions::default()).await
    }

    pub async fn open_file_with(
        path: &Path,
        environment: &str,
        options: &OpenJournalOptions,
    ) -> Result<Journal, JournalError> {
        let path = path.to_owned();
        let environment = environment.to_owned();
        let options = options.clone();
        let journal = tokio::task::spawn_blocking(move || FileJournal::open(&path, &environment, &options))
            .await
            .expect("the file journal task does not panic")?;
        Ok(Journal::File(journal))
    }

    /// Opens the PostgreSQL journal of `environment`, creating or migrating the schema and the
    /// environment's header when needed.
    pub async fn open_postgres(
        options: &PostgresJournalOptions,
        environment: &str,
    ) -> Result<Journal, JournalError> {
        Journal::open_postgres_with(options, environment, &OpenJournalOptions::default()).await
    }

    pub async fn open_postgres_with(
        options: &PostgresJournalOptions,
        environment: &str,
        open_options: &OpenJournalOptions,
    ) -> Result<Journal, JournalError> {
        Ok(Journal::Postgres(PostgresJournal::open(options, environment, open_options).await?))
    }

    pub fn header(&self) -> &JournalHeader {
        match self {
            Journal::File(journal) => journal.header(),
            Journal::Postgres(journal) => journal.header(),
        }
    }

    pub fn location(&self) -> JournalLocation {
        match self {
            Journal::File(journal) => JournalLocation::File(journal.path().to_owned()),
            Journal::Postgres(journal) => journal.location(),
        }
    }

    /// The last record of every step, by step id. A record whose fingerprint is of a newer
    /// format than this build computes is refused: this build would take its step for changed
    /// and run it again (a release upgraded for nothing), so it names the newer format instead.
    pub async fn latest(&self) -> Result<BTreeMap<String, StepRecord>, JournalError> {
        let latest = match self {
            Journal::File(journal) => journal.latest().clone(),
            Journal::Postgres(journal) => journal.latest().await?,
        };
        let newer = latest.values().find_map(|record| {
            let found = crate::plan::fingerprint_format(&record.fingerprint);
            (found > crate::plan::FINGERPRINT_FORMAT).then(|| (record.step_id.clone(), found))
        });
        match newer {
            Some((step, found)) => {
                Err(JournalError::NewerFingerprint { location: self.location(), step, found })
            }
            None => Ok(latest),
        }
    }

    /// Appends a record; it is durable when this returns.
    pub async fn append(&mut self, record: &StepRecord) -> Result<(), JournalError> {
        match self {
            Journal::File(journal) => journal.append(record).await,
            Journal::Postgres(journal) => journal.append(record).await,
        }
    }

    /// The last `limit` records, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<StepRecord>, JournalError> {
        match self {
            Journal::File(journal) => journal.history(limit).await,
            Journal::Postgres(journal) => journal.history(limit).await,
        }
    }

    /// The last `limit` records of one step id, newest first (the deploys: `@deploy`).
    pub async fn history_of(&self, step_id: &str, limit: usize) -> Result<Vec<StepRecord>, JournalError> {
        match self {
            Journal::File(journal) => journal.history_of(step_id, limit).await,
            Journal::Postgres(journal) => journal.history_of(step_id, limit).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_database_with_a_name_we_do_not_create_is_explained_with_quoted_sql() {
        let error = JournalError::DatabaseNotCreated {
            host: "db.internal".to_owned(),
            port: 5433,
            database: "Opus\"Deploy".to_owned(),
            role: "admin".to_owned(),
            reason: NotCreatedReason::InvalidName("use only lowercase letters, digits and underscores"),
        };
        assert_eq!(
            error.to_string(),
            "journal database `Opus\"Deploy` does not exist on PostgreSQL at db.internal:5433, and \
             opus-deploy does not create it: its name is not a plain identifier (use only lowercase \
             letters, digits and underscores)\n\
             help: have a PostgreSQL administrator run `CREATE DATABASE \"Opus\"\"Deploy\" OWNER \
             \"admin\";`, or choose an existing database with `database = \"<name>\"` under \
             `[journal]` in env.toml"
        );
    }
}
