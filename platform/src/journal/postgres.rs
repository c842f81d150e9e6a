//! The PostgreSQL journal, for teams that deploy from several machines: one header row and
//! many record rows per environment, in tables the tool creates and migrates itself.
//!
//! The schema version lives in `opus_deploy_schema_version`. Opening a journal reads it and,
//! only when it is behind, applies the missing migrations in one transaction, serialized by a
//! transaction-level advisory lock so two tools starting at once do not migrate twice. A schema
//! newer than this build is refused. Every insert is committed (and so durable) when
//! [`PostgresJournal::append`] returns.
//!
//! The database itself is created when it is missing, by the commands that write the journal
//! (opening it, taking the deploy lock): from the maintenance database (`postgres`, else
//! `template1`), with the same credentials, when the admin role may (`CREATEDB` or superuser).
//! When it may not, [`JournalError::DatabaseNotCreated`] says what to run instead. Read-only
//! commands (`plan`, `status`) look with the driver's plain connection and never create it.

use std::collections::BTreeMap;

use sqlx::postgres::{PgConnection, PgRow};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Connection as _, Row as _};
use time::OffsetDateTime;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::{
    JOURNAL_FORMAT, JournalError, JournalHeader, JournalLocation, NotCreatedReason, OpenJournalOptions,
    StepOutcome, StepRecord,
};
use crate::postgres::{self as driver, AdminOptions, Identifier, PostgresError};

/// How to reach the journal's database: the driver's admin options. The account needs to
/// create tables in the database's `public` schema on the first run, and `CREATEDB` (or
/// superuser) when the database does not exist yet.
pub type PostgresJournalOptions = AdminOptions;

/// The migrations, in order; the schema version is the number applied. Never edit one that
/// shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: journal header and records, deploy lock holders.
    "CREATE TABLE opus_journal_header (
         environment text PRIMARY KEY,
         lineage uuid NOT NULL,
         created_at timestamptz NOT NULL,
         format integer NOT NULL
     );
     CREATE TABLE opus_journal_records (
         id bigserial PRIMARY KEY,
         environment text NOT NULL REFERENCES opus_journal_header (environment),
         step_id text NOT NULL,
         fingerprint text NOT NULL,
         outcome jsonb NOT NULL,
         started_at timestamptz NOT NULL,
         finished_at timestamptz NOT NULL,
         outputs jsonb NOT NULL,
         snapshot jsonb NOT NULL
     );
     CREATE INDEX opus_journal_records_by_step ON opus_journal_records (environment, step_id, id);
     CREATE TABLE opus_deploy_locks (
         environment text PRIMARY KEY,
         holder text NOT NULL,
         host text NOT NULL,
         pid bigint NOT NULL,
         since timestamptz NOT NULL,
         command text NOT NULL,
         backend_pid integer NOT NULL
     );",
];

/// The schema version this build creates and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

pub(crate) fn location_of(options: &AdminOptions) -> JournalLocation {
    JournalLocation::Postgres {
        host: options.host.clone(),
        port: options.port,
        database: options.database.clone(),
    }
}

pub(crate) fn query_error(
    options: &AdminOptions,
    step: &'static str,
) -> impl FnOnce(sqlx::Error) -> JournalError {
    let location = location_of(options);
    let host = options.host.clone();
    move |source| JournalError::Postgres {
        location,
        source: PostgresError::Query { host, step: step.to_owned(), source },
    }
}

pub(crate) async fn connect(options: &AdminOptions) -> Result<PgConnection, JournalError> {
    driver::connect(options)
        .await
        .map_err(|source| JournalError::Postgres { location: location_of(options), source })
}

/// SQLSTATE `invalid_catalog_name`: at connection, the database does not exist.
const INVALID_CATALOG_NAME: &str = "3D000";
/// SQLSTATE `duplicate_database`: another session created the database first.
const DUPLICATE_DATABASE: &str = "42P04";
/// SQLSTATE `unique_violation`: what a creation racing another one can get instead.
const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE `insufficient_privilege`: the role has neither `CREATEDB` nor superuser.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// The databases we connect to in order to create another, as `createdb` does.
const MAINTENANCE_DATABASES: [&str; 2] = ["postgres", "template1"];

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error.as_database_error().and_then(|e| e.code()).map(|code| code.into_owned())
}

/// Whether a connection failed because its database does not exist.
pub(crate) fn is_missing_database(error: &PostgresError) -> bool {
    matches!(error, PostgresError::Connect { source, .. }
        if sqlstate(source).as_deref() == Some(INVALID_CATALOG_NAME))
}

/// Connects to the journal's database, creating it first when it does not exist. Only for
/// commands that write the journal (opening it, taking the deploy lock); read-only commands
/// connect with [`driver::connect`], which never creates anything.
pub(crate) async fn connect_creating_database(options: &AdminOptions) -> Result<PgConnection, JournalError> {
    match driver::connect(options).await {
        Ok(connection) => return Ok(connection),
        Err(source) if is_missing_database(&source) => {}
        Err(source) => return Err(JournalError::Postgres { location: location_of(options), source }),
    }
    create_database(options).await?;
    connect(options).await
}

/// `CREATE DATABASE` of the journal's database, from a maintenance database. A database that
/// another operator created meanwhile is a success.
async fn create_database(options: &AdminOptions) -> Result<(), JournalError> {
    let not_created = |reason| JournalError::DatabaseNotCreated {
        host: options.host.clone(),
        port: options.port,
        database: options.database.clone(),
        role: options.user.clone(),
        reason,
    };
    // The name goes into SQL text: only names that need no escaping are created.
    let database = Identifier::new("database", &options.database).map_err(|error| match error {
        PostgresError::InvalidIdentifier { reason, .. } => not_created(NotCreatedReason::InvalidName(reason)),
        _ => not_created(NotCreatedReason::InvalidName("it is not a valid identifier")),
    })?;
    let mut connection = connect_to_maintenance(options).await?;
    let step = format!("create database `{}`", database.name());
    let created =
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&mut connection).await;
    let _ = connection.close().await;
    match created {
        Ok(_) => Ok(()),
        Err(error) => match sqlstate(&error).as_deref() {
            Some(DUPLICATE_DATABASE | UNIQUE_VIOLATION) => Ok(()),
            Some(INSUFFICIENT_PRIVILEGE) => Err(not_created(NotCreatedReason::NoPrivilege)),
            _ => Err(JournalError::Postgres {
                location: location_of(options),
                source: PostgresError::Query { host: options.host.clone(), step, source: error },
            }),
        },
    }
}

/// A connection to `postgres`, else `template1`, with the journal's credentials.
async fn connect_to_maintenance(options: &AdminOptions) -> Result<PgConnection, JournalError> {
    let mut errors = Vec::new();
    for name in MAINTENANCE_DATABASES.into_iter().filter(|name| *name != options.database) {
        let maintenance = AdminOptions { database: name.to_owned(), ..options.clone() };
        match driver::connect(&maintenance).await {
            Ok(connection) => return Ok(connection),
            Err(error) => errors.push(error),
        }
    }
    // A missing `postgres` says less than why `template1` failed.
    let position = errors.iter().position(|error| !is_missing_database(error)).unwrap_or(0);
    let source = errors.swap_remove(position);
    Err(JournalError::Postgres { location: location_of(options), source })
}

/// Creates or migrates the tables to [`SCHEMA_VERSION`]; does nothing when they are current.
pub(crate) async fn ensure_schema(
    connection: &mut PgConnection,
    options: &AdminOptions,
) -> Result<(), JournalError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('opus_deploy_schema_version') IS NOT NULL")
        .fetch_one(&mut *connection)
        .await
        .map_err(query_error(options, "look for the journal schema"))?;
    if exists {
        let version: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM opus_deploy_schema_version")
            .fetch_one(&mut *connection)
            .await
            .map_err(query_error(options, "read the journal schema version"))?;
        if check_version(options, version.unwrap_or(0))? {
            return Ok(());
        }
    }
    let mut transaction =
        connection.begin().await.map_err(query_error(options, "begin the schema migration"))?;
    // Another tool may be migrating right now: wait for it, then look again.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('opus-deploy:schema'))")
        .execute(&mut *transaction)
        .await
        .map_err(query_error(options, "lock the journal schema"))?;
    sqlx::query("CREATE TABLE IF NOT EXISTS opus_deploy_schema_version (version integer NOT NULL)")
        .execute(&mut *transaction)
        .await
        .map_err(query_error(options, "create the schema version table"))?;
    let version: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM opus_deploy_schema_version")
        .fetch_one(&mut *transaction)
        .await
        .map_err(query_error(options, "read the journal schema version"))?;
    let version = version.unwrap_or(0);
    if check_version(options, version)? {
        return Ok(());
    }
    for migration in &MIGRATIONS[version as usize..] {
        sqlx::raw_sql(*migration)
            .execute(&mut *transaction)
            .await
            .map_err(query_error(options, "migrate the journal schema"))?;
    }
    sqlx::query("DELETE FROM opus_deploy_schema_version")
        .execute(&mut *transaction)
        .await
        .map_err(query_error(options, "record the journal schema version"))?;
    sqlx::query("INSERT INTO opus_deploy_schema_version (version) VALUES ($1)")
        .bind(SCHEMA_VERSION)
        .execute(&mut *transaction)
        .await
        .map_err(query_error(options, "record the journal schema version"))?;
    transaction.commit().await.map_err(query_error(options, "commit the schema migration"))
}

/// True when the schema is current; an error when it is newer than this build.
fn check_version(options: &AdminOptions, version: i32) -> Result<bool, JournalError> {
    if version > SCHEMA_VERSION {
        return Err(JournalError::SchemaTooNew {
            location: location_of(options),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    Ok(version == SCHEMA_VERSION)
}

/// An open PostgreSQL journal of one environment, holding one connection.
#[derive(Debug)]
pub struct PostgresJournal {
    options: AdminOptions,
    header: JournalHeader,
    connection: Mutex<PgConnection>,
}

const RECORD_COLUMNS: &str = "id, step_id, fingerprint, outcome, started_at, finished_at, outputs, snapshot";

impl PostgresJournal {
    pub async fn open(
        options: &AdminOptions,
        environment: &str,
        open_options: &OpenJournalOptions,
    ) -> Result<PostgresJournal, JournalError> {
        let mut connection = connect_creating_database(options).await?;
        ensure_schema(&mut connection, options).await?;
        let wanted = JournalHeader::new(environment, open_options.expected_lineage);
        sqlx::query(
            "INSERT INTO opus_journal_header (environment, lineage, created_at, format)
             VALUES ($1, $2, $3, $4) ON CONFLICT (environment) DO NOTHING",
        )
        .bind(&wanted.environment)
        .bind(wanted.lineage)
        .bind(wanted.created_at)
        .bind(wanted.format as i32)
        .execute(&mut connection)
        .await
        .map_err(query_error(options, "create the journal header"))?;
        let row =
            sqlx::query("SELECT lineage, created_at, format FROM opus_journal_header WHERE environment = $1")
                .bind(environment)
                .fetch_one(&mut connection)
                .await
                .map_err(query_error(options, "read the journal header"))?;
        let decode_header = || {
            Ok::<_, sqlx::Error>(JournalHeader {
                environment: environment.to_owned(),
                lineage: row.try_get::<Uuid, _>("lineage")?,
                created_at: row.try_get::<OffsetDateTime, _>("created_at")?,
                format: row.try_get::<i32, _>("format")?.max(0) as u32,
            })
        };
        let header = decode_header().map_err(query_error(options, "decode the journal header"))?;
        if header.format > JOURNAL_FORMAT {
            return Err(JournalError::UnsupportedFormat {
                location: location_of(options),
                found: header.format,
            });
        }
        if let Some(expected) = open_options.expected_lineage
            && expected != header.lineage
        {
            return Err(JournalError::LineageMismatch {
                location: location_of(options),
                environment: environment.to_owned(),
                expected,
                found: header.lineage,
            });
        }
        Ok(PostgresJournal { options: options.clone(), header, connection: Mutex::new(connection) })
    }

    pub fn header(&self) -> &JournalHeader {
        &self.header
    }

    pub fn location(&self) -> JournalLocation {
        location_of(&self.options)
    }

    /// The last record of every step.
    pub async fn latest(&self) -> Result<BTreeMap<String, StepRecord>, JournalError> {
        let mut connection = self.connection.lock().await;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT DISTINCT ON (step_id) {RECORD_COLUMNS} FROM opus_journal_records
             WHERE environment = $1 ORDER BY step_id, id DESC"
        )))
        .bind(&self.header.environment)
        .fetch_all(&mut *connection)
        .await
        .map_err(query_error(&self.options, "read the latest journal records"))?;
        rows.iter().map(|row| self.decode(row).map(|record| (record.step_id.clone(), record))).collect()
    }

    /// The last `limit` records, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<StepRecord>, JournalError> {
        let mut connection = self.connection.lock().await;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM opus_journal_records
             WHERE environment = $1 ORDER BY id DESC LIMIT $2"
        )))
        .bind(&self.header.environment)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *connection)
        .await
        .map_err(query_error(&self.options, "read the journal history"))?;
        rows.iter().map(|row| self.decode(row)).collect()
    }

    /// The last `limit` records of `step_id`, newest first.
    pub async fn history_of(&self, step_id: &str, limit: usize) -> Result<Vec<StepRecord>, JournalError> {
        let mut connection = self.connection.lock().await;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM opus_journal_records
             WHERE environment = $1 AND step_id = $2 ORDER BY id DESC LIMIT $3"
        )))
        .bind(&self.header.environment)
        .bind(step_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *connection)
        .await
        .map_err(query_error(&self.options, "read the journal history"))?;
        rows.iter().map(|row| self.decode(row)).collect()
    }

    /// Inserts `record`; committed when this returns.
    pub async fn append(&mut self, record: &StepRecord) -> Result<(), JournalError> {
        let record = record.normalized();
        let outcome = serde_json::to_value(&record.outcome)
            .map_err(|source| JournalError::Encode { step_id: record.step_id.clone(), source })?;
        let connection = self.connection.get_mut();
        sqlx::query(
            "INSERT INTO opus_journal_records
                 (environment, step_id, fingerprint, outcome, started_at, finished_at, outputs, snapshot)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&self.header.environment)
        .bind(&record.step_id)
        .bind(&record.fingerprint)
        .bind(Json(outcome))
        .bind(record.started_at)
        .bind(record.finished_at)
        .bind(Json(&record.outputs))
        .bind(Json(&record.snapshot))
        .execute(connection)
        .await
        .map_err(query_error(&self.options, "append a journal record"))?;
        Ok(())
    }

    fn decode(&self, row: &PgRow) -> Result<StepRecord, JournalError> {
        let id: i64 = row.try_get("id").unwrap_or(-1);
        let bad_row = |reason: String| JournalError::BadRow {
            location: self.location(),
            environment: self.header.environment.clone(),
            id,
            reason,
        };
        let Json(outcome): Json<serde_json::Value> =
            row.try_get("outcome").map_err(|error| bad_row(error.to_string()))?;
        let outcome: StepOutcome =
            serde_json::from_value(outcome).map_err(|error| bad_row(format!("outcome: {error}")))?;
        let record = (|| {
            Ok::<_, sqlx::Error>(StepRecord {
                step_id: row.try_get("step_id")?,
                fingerprint: row.try_get("fingerprint")?,
                outcome,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                outputs: row.try_get::<Json<serde_json::Value>, _>("outputs")?.0,
                snapshot: row.try_get::<Json<serde_json::Value>, _>("snapshot")?.0,
            })
        })();
        record.map_err(|error| bad_row(error.to_string()))
    }
}
