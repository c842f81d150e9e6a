//! Where an environment's journal and deploy lock live, and opening them: a local file under
//! `environments/<env>/.opus/` by default, or PostgreSQL (with the environment's database
//! settings and admin credentials) when env.toml says `[journal] backend = "postgres"`.

// Errors name where the journal lives; they are cold paths, so their size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::exec::JournalSink;
use crate::journal::{
    DeployLock, Journal, JournalError, LockError, StepOutcome, StepRecord, lock_file, lock_postgres,
};
use crate::load::environment::ENVIRONMENTS_DIR;
use crate::load::secret_inputs::SecretInputs;
use crate::model::{EnvFile, JournalSettings, SslMode};
use crate::plan::diff::Snapshot;
use crate::postgres::{AdminOptions, SslMode as PgSslMode};
use crate::secrets::{Identities, SecretTree, decrypt_file};
use crate::sensitive::SecretString;

/// Where a journal and its lock live.
#[derive(Debug, Clone)]
pub enum JournalPlace {
    File { journal: PathBuf, lock: PathBuf },
    Postgres(Box<AdminOptions>),
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    NoAdminPassword(#[from] NoAdminPassword),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The database admin password is not available.
#[derive(Debug, thiserror::Error)]
#[error("the PostgreSQL journal needs `database.admin_password` from {path}, which could not be decrypted")]
pub struct NoAdminPassword {
    pub path: PathBuf,
    #[source]
    pub source: Option<Box<crate::secrets::SecretsError>>,
}

/// The journal's place for an environment. The PostgreSQL backend needs the admin password,
/// which `admin_password` gives (asked only then).
pub fn journal_place(
    root: &Path,
    environment: &str,
    env: &EnvFile,
    admin_password: impl FnOnce() -> Result<SecretString, NoAdminPassword>,
) -> Result<JournalPlace, SessionError> {
    let dir = root.join(ENVIRONMENTS_DIR).join(environment);
    match &env.journal {
        JournalSettings::File => {
            let state = dir.join(".opus");
            Ok(JournalPlace::File { journal: state.join("journal.log"), lock: state.join("deploy.lock") })
        }
        JournalSettings::Postgres { database } => {
            Ok(JournalPlace::Postgres(Box::new(admin_options(env, admin_password()?, database))))
        }
    }
}

/// The warning every deploy of a protected cluster environment prints when env.toml keeps
/// the journal and the lock in the operator's working tree (`[journal] backend = "file"`,
/// written explicitly: without `[journal]` such an environment does not pass `check`).
pub fn unshared_journal_warning(environment: &str, env: &EnvFile) -> Option<String> {
    let cluster = matches!(env.target, crate::model::Target::Kube { .. });
    (env.protected && cluster && env.journal == JournalSettings::File).then(|| {
        format!(
            "warning: `{environment}` is protected but its journal and deploy lock are files in this working tree (`[journal] backend = \"file\"`): another operator deploying from another checkout is not locked out; use `backend = \"postgres\"` to share them"
        )
    })
}

/// The path of an environment's own secrets file (which holds the database admin password).
pub fn environment_secrets_path(root: &Path, environment: &str) -> PathBuf {
    root.join(ENVIRONMENTS_DIR).join(environment).join("secrets.enc.yaml")
}

/// The database admin password from the secrets a compile already decrypted.
pub fn admin_password_of(
    root: &Path,
    environment: &str,
    secrets: &SecretInputs,
) -> Result<SecretString, NoAdminPassword> {
    let path = environment_secrets_path(root, environment);
    let tree = secrets.environment.as_ref().and_then(|file| file.decrypted.as_ref());
    let tree = tree.ok_or(NoAdminPassword { path: path.clone(), source: None })?;
    admin_password_in(tree, path)
}

/// The database admin password, decrypting the environment's secrets file (for the commands
/// that do not compile the environment).
pub fn decrypt_admin_password(
    root: &Path,
    environment: &str,
    identities: Option<&Identities>,
) -> Result<SecretString, NoAdminPassword> {
    let path = environment_secrets_path(root, environment);
    let Some(identities) = identities else {
        return Err(NoAdminPassword { path, source: None });
    };
    let tree = decrypt_file(&path, identities)
        .map_err(|e| NoAdminPassword { path: path.clone(), source: Some(Box::new(e)) })?;
    admin_password_in(&tree, path)
}

fn admin_password_in(tree: &SecretTree, path: PathBuf) -> Result<SecretString, NoAdminPassword> {
    tree.get("database.admin_password")
        .map(|v| v.text().clone())
        .ok_or(NoAdminPassword { path, source: None })
}

/// How to reach the environment's PostgreSQL server as its admin, on `database`: host, port
/// and sslmode from env.toml, and the admin password.
pub fn admin_options(env: &EnvFile, password: SecretString, database: &str) -> AdminOptions {
    let mut options = AdminOptions::new(env.database.host.clone(), env.database.admin_user.clone(), password);
    options.port = env.database.port;
    options.database = database.to_owned();
    options.sslmode = match env.database.sslmode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require => PgSslMode::Require,
        SslMode::VerifyCa => PgSslMode::VerifyCa,
        SslMode::VerifyFull => PgSslMode::VerifyFull,
    };
    options
}

/// Takes the environment's deploy lock; fails at once when another deploy holds it.
pub async fn lock(place: &JournalPlace, environment: &str) -> Result<DeployLock, SessionError> {
    Ok(match place {
        JournalPlace::File { lock, .. } => DeployLock::File(lock_file(lock, environment)?),
        JournalPlace::Postgres(options) => DeployLock::Postgres(lock_postgres(options, environment).await?),
    })
}

/// Opens the environment's journal (creating it on the first deploy).
pub async fn open_journal(place: &JournalPlace, environment: &str) -> Result<Journal, SessionError> {
    Ok(match place {
        JournalPlace::File { journal, .. } => Journal::open_file(journal, environment).await?,
        JournalPlace::Postgres(options) => Journal::open_postgres(options, environment).await?,
    })
}

/// Opens the journal only if it exists (for `plan` and `status`, which never create one).
pub async fn open_existing_journal(
    place: &JournalPlace,
    environment: &str,
) -> Result<Option<Journal>, SessionError> {
    match place {
        JournalPlace::File { journal, .. } if !journal.exists() => Ok(None),
        // Opening creates or migrates the schema: a read-only command must not, so look first.
        JournalPlace::Postgres(options) if !postgres_journal_exists(options, environment).await? => Ok(None),
        _ => open_journal(place, environment).await.map(Some),
    }
}

/// Whether the PostgreSQL journal has a header for `environment`, without changing anything.
async fn postgres_journal_exists(options: &AdminOptions, environment: &str) -> Result<bool, SessionError> {
    let location = crate::journal::JournalLocation::Postgres {
        host: options.host.clone(),
        port: options.port,
        database: options.database.clone(),
    };
    let wrap = |source: crate::postgres::PostgresError| {
        SessionError::Journal(JournalError::Postgres { location: location.clone(), source })
    };
    // A journal database nobody created yet holds no journal; the first deploy creates it.
    let mut connection = match crate::postgres::connect(options).await {
        Ok(connection) => connection,
        Err(error) if crate::journal::postgres::is_missing_database(&error) => return Ok(false),
        Err(error) => return Err(wrap(error)),
    };
    let query_error = |e: sqlx::Error| {
        wrap(crate::postgres::PostgresError::Query {
            host: options.host.clone(),
            step: "look for the journal".to_owned(),
            source: e,
        })
    };
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('public.opus_journal_header') IS NOT NULL")
        .fetch_one(&mut connection)
        .await
        .map_err(query_error)?;
    if !has_table {
        return Ok(false);
    }
    let has_header: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM opus_journal_header WHERE environment = $1)")
            .bind(environment)
            .fetch_one(&mut connection)
            .await
            .map_err(query_error)?;
    Ok(has_header)
}

/// The last successful snapshot of each step, from the journal's latest records
/// ([`Journal::latest`], read once by the caller).
pub fn successful_snapshots(latest: &BTreeMap<String, StepRecord>) -> BTreeMap<String, Snapshot> {
    latest
        .values()
        .filter(|r| r.outcome == StepOutcome::Succeeded)
        .filter_map(|r| {
            serde_json::from_value::<Snapshot>(r.snapshot.clone()).ok().map(|s| (r.step_id.clone(), s))
        })
        .collect()
}

/// The fingerprint of each step's last success: what the executor skips.
pub fn success_fingerprints(latest: &BTreeMap<String, StepRecord>) -> BTreeMap<String, String> {
    latest
        .values()
        .filter(|r| r.outcome == StepOutcome::Succeeded)
        .map(|r| (r.step_id.clone(), r.fingerprint.clone()))
        .collect()
}

impl JournalSink for Journal {
    type Error = JournalError;
    async fn append(&mut self, record: &StepRecord) -> Result<(), JournalError> {
        Journal::append(self, record).await
    }
}
