//! The deploy lock: one deploy per environment at a time. A second deploy fails at once with
//! [`LockError::Held`], naming who holds the lock, on which host, and since when.
//!
//! **File** ([`lock_file`]): a JSON lock file naming the holder. It is written, fsynced and
//! `flock`ed under a temporary name, then linked into place without replacing anything
//! (`O_EXCL` semantics), so it is never seen half-written and its `flock` is held for as long
//! as the holder's process lives. An existing lock file is stale when its `flock` is free, it
//! was written on this host and its process is gone (`kill(pid, 0)` says `ESRCH`); a stale file
//! is replaced while we hold its `flock`, so two deploys cannot both take it over. A lock file
//! of another host is never assumed stale. The guard removes the file on drop, if still ours.
//!
//! **PostgreSQL** ([`lock_postgres`]): a session advisory lock on
//! `hashtext('opus-deploy:' || environment)`, held by a connection the guard owns, so the server
//! releases it when the holder dies. The holder is written to `opus_deploy_locks` for others to
//! read; taking the advisory lock and writing that row (or reading it, for a loser) happen
//! under a second, transaction-level advisory lock, so a loser always sees the winner's row.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Row as _};
use time::OffsetDateTime;

use super::postgres::{
    PostgresJournalOptions, connect_creating_database, ensure_schema, location_of, query_error,
};
use super::{JournalError, JournalLocation};
use crate::secrets::atomic::sync_dir;

/// How often [`lock_file`] starts over when lock files appear and vanish under it.
const MAX_FILE_LOCK_ATTEMPTS: usize = 8;

/// Who holds (or held) a deploy lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub environment: String,
    pub user: String,
    pub host: String,
    pub pid: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The command line of the deploy, without its program path.
    pub command: String,
}

impl LockHolder {
    /// This process, about to deploy `environment`.
    pub fn current(environment: &str) -> LockHolder {
        LockHolder {
            environment: environment.to_owned(),
            user: current_user(),
            host: this_host(),
            pid: std::process::id(),
            started_at: super::truncate_to_micros(OffsetDateTime::now_utc()),
            // Process arguments never carry secrets (house rule), so they can be shown.
            command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        }
    }
}

fn current_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        // SAFETY: getuid has no preconditions.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }))
}

fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Where a lock lives, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockBackend {
    File { path: PathBuf },
    Postgres { location: JournalLocation },
}

impl LockBackend {
    fn advice(&self) -> String {
        match self {
            LockBackend::File { path } => format!(
                "wait for it to finish; if no deploy is running there, remove the lock file {}",
                path.display()
            ),
            LockBackend::Postgres { location } => format!(
                "wait for it to finish; the lock in {location} is released when that deploy's \
                 database session ends"
            ),
        }
    }
}

fn rfc3339(at: &OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// Errors of the deploy lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "environment `{environment}` is being deployed by {holder}@{host} (pid {pid}) since {}; {}",
        rfc3339(since),
        backend.advice()
    )]
    Held {
        environment: String,
        /// The user of the deploy holding the lock.
        holder: String,
        host: String,
        pid: u32,
        since: OffsetDateTime,
        command: String,
        backend: LockBackend,
    },
    #[error(
        "environment `{environment}` is locked in {location} by a session that left no holder \
         record; wait for it to end"
    )]
    HeldByUnknown { environment: String, location: JournalLocation },
    #[error("lock file {path} is unreadable ({reason}); if no deploy is running, remove it")]
    Unreadable { path: PathBuf, reason: String },
    #[error("could not {step} lock file {path}")]
    Io {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "gave up taking lock file {path} after {MAX_FILE_LOCK_ATTEMPTS} attempts: other deploys \
         keep creating and removing it"
    )]
    Contended { path: PathBuf },
    #[error("could not take the deploy lock of environment `{environment}`")]
    Postgres {
        environment: String,
        #[source]
        source: JournalError,
    },
}

impl LockError {
    fn held(holder: LockHolder, backend: LockBackend) -> LockError {
        LockError::Held {
            environment: holder.environment,
            holder: holder.user,
            host: holder.host,
            pid: holder.pid,
            since: holder.started_at,
            command: holder.command,
            backend,
        }
    }
}

fn lock_io(path: &Path, step: &'static str) -> impl FnOnce(std::io::Error) -> LockError {
    let path = path.to_owned();
    move |source| LockError::Io { path, step, source }
}

/// A held deploy lock, in one of the backends.
#[derive(Debug)]
pub enum DeployLock {
    File(FileLockGuard),
    Postgres(PgLockGuard),
}

impl DeployLock {
    /// The holder of a stale lock this one replaced, for a notice to the operator.
    pub fn stale_taken_over(&self) -> Option<&LockHolder> {
        match self {
            DeployLock::File(guard) => guard.stale_taken_over(),
            DeployLock::Postgres(guard) => guard.stale_taken_over(),
        }
    }

    /// Releases the lock now. Dropping it releases it too (the PostgreSQL lock then leaves a
    /// holder row behind, which the next deploy overwrites).
    pub async fn release(self) -> Result<(), LockError> {
        match self {
            DeployLock::File(guard) => {
                drop(guard);
                Ok(())
            }
            DeployLock::Postgres(guard) => guard.release().await,
        }
    }
}

/// A held file lock; removes the lock file on drop.
#[derive(Debug)]
pub struct FileLockGuard {
    path: PathBuf,
    /// Open for as long as we hold the lock: its `flock` tells others we are alive.
    file: File,
    holder: LockHolder,
    stale_taken_over: Option<LockHolder>,
}

impl FileLockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }

    pub fn stale_taken_over(&self) -> Option<&LockHolder> {
        self.stale_taken_over.as_ref()
    }
}

impl Drop for FileLockGuard {
    fn drop(&mut self) {
        // Only if the file at the path is still ours; nobody can replace it while we hold its
        // flock, so this check is not racy. Errors are ignored: a leftover file is stale.
        if same_file(&self.file, &self.path).unwrap_or(false) {
            let _ = std::fs::remove_file(&self.path);
            if let Some(parent) = self.path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                let _ = sync_dir(parent);
            }
        }
    }
}

/// True when `path` names the file `file` has open.
fn same_file(file: &File, path: &Path) -> std::io::Result<bool> {
    let open = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(open.dev() == named.dev() && open.ino() == named.ino()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// True unless `kill(pid, 0)` says there is no such process.
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        // Not a single process: we cannot tell, so assume it is alive.
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Our lock file under a temporary name in the lock's directory: written, fsynced and
/// flocked, ready to be linked or renamed into place.
fn candidate(path: &Path, contents: &[u8]) -> Result<tempfile::NamedTempFile, LockError> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(directory).map_err(lock_io(path, "create the directory of"))?;
    let mut file = tempfile::Builder::new()
        .prefix(".opus-deploy-lock.")
        .tempfile_in(directory)
        .map_err(lock_io(path, "create a temporary"))?;
    file.write_all(contents).map_err(lock_io(path, "write"))?;
    // Readable by everyone: other operators on the host must be able to see who holds it.
    file.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(lock_io(path, "chmod"))?;
    file.as_file().sync_all().map_err(lock_io(path, "fsync"))?;
    file.as_file().try_lock().map_err(|error| LockError::Io {
        path: path.to_owned(),
        step: "flock a new",
        source: error.into(),
    })?;
    Ok(file)
}

fn read_holder(file: &mut File, path: &Path) -> Result<LockHolder, LockError> {
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(lock_io(path, "read"))?;
    serde_json::from_str(&text)
        .map_err(|error| LockError::Unreadable { path: path.to_owned(), reason: error.to_string() })
}

/// Takes the file lock of `environment` at `path` (see the module documentation).
pub fn lock_file(path: &Path, environment: &str) -> Result<FileLockGuard, LockError> {
    let holder = LockHolder::current(environment);
    let mut contents = serde_json::to_vec_pretty(&holder).expect("a lock holder always encodes");
    contents.push(b'\n');
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let guard = |file: File, stale_taken_over: Option<LockHolder>| -> Result<FileLockGuard, LockError> {
        sync_dir(&directory).map_err(lock_io(path, "fsync the directory of"))?;
        Ok(FileLockGuard { path: path.to_owned(), file, holder: holder.clone(), stale_taken_over })
    };

    for _attempt in 0..MAX_FILE_LOCK_ATTEMPTS {
        match candidate(path, &contents)?.persist_noclobber(path) {
            Ok(file) => return guard(file, None),
            // The temporary file is removed when the error drops.
            Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(lock_io(path, "create")(error.error)),
        }
        let mut existing = match File::open(path) {
            Ok(file) => file,
            // Released between our attempt and now: try again.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(lock_io(path, "open")(error)),
        };
        match existing.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let current = read_holder(&mut existing, path)?;
                return Err(LockError::held(current, LockBackend::File { path: path.to_owned() }));
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(lock_io(path, "flock")(error)),
        }
        // We hold the flock of what we opened; if the path names another file by now (taken
        // over or released and retaken), start over.
        if !same_file(&existing, path).map_err(lock_io(path, "stat"))? {
            continue;
        }
        let current = read_holder(&mut existing, path)?;
        if current.host != holder.host || process_alive(current.pid) {
            return Err(LockError::held(current, LockBackend::File { path: path.to_owned() }));
        }
        // Stale. Replace it while still holding its flock: nobody else can judge it stale too.
        let file = candidate(path, &contents)?
            .persist(path)
            .map_err(|error| lock_io(path, "replace the stale")(error.error))?;
        drop(existing);
        return guard(file, Some(current));
    }
    Err(LockError::Contended { path: path.to_owned() })
}

/// A held PostgreSQL deploy lock: the connection holding the advisory lock.
#[derive(Debug)]
pub struct PgLockGuard {
    /// `None` only while releasing.
    connection: Option<PgConnection>,
    options: PostgresJournalOptions,
    holder: LockHolder,
    stale_taken_over: Option<LockHolder>,
}

impl PgLockGuard {
    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }

    pub fn stale_taken_over(&self) -> Option<&LockHolder> {
        self.stale_taken_over.as_ref()
    }

    /// Clears the holder row, releases the advisory lock and closes the connection. Dropping
    /// the guard instead closes the connection, which releases the lock on the server; the row
    /// then stays until the next deploy overwrites it.
    pub async fn release(mut self) -> Result<(), LockError> {
        let mut connection = self.connection.take().expect("the connection is held until release");
        let environment = self.holder.environment.clone();
        let wrap = |source| LockError::Postgres { environment: environment.clone(), source };
        sqlx::query(
            "DELETE FROM opus_deploy_locks WHERE environment = $1 AND backend_pid = pg_backend_pid()",
        )
        .bind(&environment)
        .execute(&mut connection)
        .await
        .map_err(query_error(&self.options, "clear the deploy lock holder"))
        .map_err(wrap)?;
        sqlx::query("SELECT pg_advisory_unlock(hashtext('opus-deploy:' || $1))")
            .bind(&environment)
            .execute(&mut connection)
            .await
            .map_err(query_error(&self.options, "release the deploy lock"))
            .map_err(wrap)?;
        // The lock is released; a failed goodbye changes nothing.
        let _ = connection.close().await;
        Ok(())
    }
}

fn holder_from_row(environment: &str, row: &sqlx::postgres::PgRow) -> Result<LockHolder, sqlx::Error> {
    Ok(LockHolder {
        environment: environment.to_owned(),
        user: row.try_get("holder")?,
        host: row.try_get("host")?,
        pid: u32::try_from(row.try_get::<i64, _>("pid")?).unwrap_or(0),
        started_at: row.try_get("since")?,
        command: row.try_get("command")?,
    })
}

/// Takes the PostgreSQL deploy lock of `environment` (see the module documentation).
pub async fn lock_postgres(
    options: &PostgresJournalOptions,
    environment: &str,
) -> Result<PgLockGuard, LockError> {
    let wrap = |source| LockError::Postgres { environment: environment.to_owned(), source };
    let mut connection = connect_creating_database(options).await.map_err(wrap)?;
    ensure_schema(&mut connection, options).await.map_err(wrap)?;
    let holder = LockHolder::current(environment);

    let mut transaction = connection
        .begin()
        .await
        .map_err(query_error(options, "begin taking the deploy lock"))
        .map_err(wrap)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('opus-deploy-holder:' || $1))")
        .bind(environment)
        .execute(&mut *transaction)
        .await
        .map_err(query_error(options, "lock the deploy lock holder row"))
        .map_err(wrap)?;
    // Session level: survives the commit below and lives as long as the connection.
    let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('opus-deploy:' || $1))")
        .bind(environment)
        .fetch_one(&mut *transaction)
        .await
        .map_err(query_error(options, "take the deploy lock"))
        .map_err(wrap)?;
    let row =
        sqlx::query("SELECT holder, host, pid, since, command FROM opus_deploy_locks WHERE environment = $1")
            .bind(environment)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(query_error(options, "read the deploy lock holder"))
            .map_err(wrap)?;
    let recorded = row
        .map(|row| holder_from_row(environment, &row))
        .transpose()
        .map_err(query_error(options, "decode the deploy lock holder"))
        .map_err(wrap)?;
    if !acquired {
        // Dropping the transaction rolls it back and frees the holder-row lock.
        return Err(match recorded {
            Some(current) => {
                LockError::held(current, LockBackend::Postgres { location: location_of(options) })
            }
            None => LockError::HeldByUnknown {
                environment: environment.to_owned(),
                location: location_of(options),
            },
        });
    }
    // We hold the advisory lock, so a recorded holder is stale: its session ended.
    sqlx::query(
        "INSERT INTO opus_deploy_locks (environment, holder, host, pid, since, command, backend_pid)
         VALUES ($1, $2, $3, $4, $5, $6, pg_backend_pid())
         ON CONFLICT (environment) DO UPDATE SET holder = excluded.holder, host = excluded.host,
             pid = excluded.pid, since = excluded.since, command = excluded.command,
             backend_pid = excluded.backend_pid",
    )
    .bind(environment)
    .bind(&holder.user)
    .bind(&holder.host)
    .bind(i64::from(holder.pid))
    .bind(holder.started_at)
    .bind(&holder.command)
    .execute(&mut *transaction)
    .await
    .map_err(query_error(options, "record the deploy lock holder"))
    .map_err(wrap)?;
    transaction
        .commit()
        .await
        .map_err(query_error(options, "commit the deploy lock holder"))
        .map_err(wrap)?;
    Ok(PgLockGuard {
        connection: Some(connection),
        options: options.clone(),
        holder,
        stale_taken_over: recorded,
    })
}
