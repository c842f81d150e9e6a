//! The edit lock: while `edit` runs, a file in the temporary parent (the same directory every
//! time, so the next command finds it) records the editing process (pid and start time) and
//! the directory holding the plaintext. The next command on the same secrets file refuses
//! while that process runs, and when it no longer does (a SIGKILLed edit, a power cut with the
//! temporary parent on disk) wipes and removes the plaintext it left. The lock holds no secret.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::SecretsError;

/// The prefix of the plaintext directories `edit` creates; only such a directory directly in
/// the temporary parent is ever removed on a lock's word.
pub(super) const PLAINTEXT_DIR_PREFIX: &str = "opus-secrets-";

/// What a killed edit had left and the next command removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KilledEdit {
    /// The edit's process, which no longer runs.
    pub pid: u32,
    /// The plaintext directory that was wiped and removed.
    pub directory: PathBuf,
}

impl fmt::Display for KilledEdit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "removed the plaintext a killed edit (pid {}) left in {}",
            self.pid,
            self.directory.display()
        )
    }
}

/// The lock file of `secrets_path` in `temp_parent`: named by a digest of the file's absolute
/// path, so a path naming the same file the same way finds the same lock.
pub fn edit_lock_path(secrets_path: &Path, temp_parent: &Path) -> PathBuf {
    let absolute = absolute_path(secrets_path);
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    temp_parent.join(format!("{PLAINTEXT_DIR_PREFIX}{}.edit.lock", hex::encode(&digest[..12])))
}

/// The file's path with symbolic links resolved (its directory's, for a file not created yet).
fn absolute_path(path: &Path) -> PathBuf {
    if let Ok(canonical) = std::fs::canonicalize(path) {
        return canonical;
    }
    let parent = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match (std::fs::canonicalize(parent), path.file_name()) {
        (Ok(parent), Some(name)) => parent.join(name),
        _ => std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
    }
}

/// Checks the edit lock of `secrets_path` before a command uses the file: refuses while the
/// edit that holds it runs ([`SecretsError::EditRunning`]); when that edit is gone, overwrites
/// the plaintext it left with zeros, removes its directory (editor swap files included) and
/// the lock, and says what it removed. `Ok(None)`: no edit of the file was left over.
pub fn recover_killed_edit(
    secrets_path: &Path,
    temp_parent: &Path,
) -> Result<Option<KilledEdit>, SecretsError> {
    let lock = edit_lock_path(secrets_path, temp_parent);
    let Some(record) = read_lock(secrets_path, &lock)? else {
        return Ok(None);
    };
    if process_runs(record.pid, record.started) {
        return Err(SecretsError::EditRunning { path: secrets_path.to_owned(), pid: record.pid });
    }
    let removed = remove_plaintext_dir(&lock, temp_parent, &record.directory)?;
    remove_lock(&lock)?;
    Ok(removed.then_some(KilledEdit { pid: record.pid, directory: record.directory }))
}

/// The lock of a running edit; dropping it removes the lock file.
pub(super) struct EditLock {
    path: PathBuf,
}

impl EditLock {
    /// Takes the lock of `secrets_path` for this process, recording `plaintext_dir` (created,
    /// still empty). A leftover of a killed edit is removed first and returned.
    pub(super) fn acquire(
        secrets_path: &Path,
        temp_parent: &Path,
        plaintext_dir: &Path,
    ) -> Result<(EditLock, Option<KilledEdit>), SecretsError> {
        let recovered = recover_killed_edit(secrets_path, temp_parent)?;
        let path = edit_lock_path(secrets_path, temp_parent);
        let pid = std::process::id();
        let started = process_start_time(pid).unwrap_or(0);
        let text = format!("pid {pid}\nstarted {started}\nplaintext {}\n", plaintext_dir.display());
        let io_error = |source| SecretsError::TempFile { path: secrets_path.to_owned(), source };
        // Written whole under a private name, then linked into place: the lock never exists
        // half-written, and linking fails when another edit took it first.
        let staging = path.with_extension(format!("lock.{pid}.tmp"));
        let _ = std::fs::remove_file(&staging);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staging)
            .map_err(io_error)?;
        let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
        let linked = written.and_then(|()| std::fs::hard_link(&staging, &path));
        let _ = std::fs::remove_file(&staging);
        match linked {
            Ok(()) => Ok((EditLock { path }, recovered)),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                // Another edit started between the check and the link.
                let pid = read_lock(secrets_path, &path)?.map_or(0, |record| record.pid);
                Err(SecretsError::EditRunning { path: secrets_path.to_owned(), pid })
            }
            Err(error) => Err(io_error(error)),
        }
    }
}

impl Drop for EditLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct LockRecord {
    pid: u32,
    started: u64,
    directory: PathBuf,
}

/// Reads a lock file; `None` when there is none. A lock that is not a regular file of ours
/// is refused rather than trusted: it names a directory to delete.
fn read_lock(secrets_path: &Path, lock: &Path) -> Result<Option<LockRecord>, SecretsError> {
    let invalid = |reason: &str| SecretsError::EditLock { lock: lock.to_owned(), reason: reason.to_owned() };
    let metadata = match std::fs::symlink_metadata(lock) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SecretsError::TempFile { path: secrets_path.to_owned(), source }),
    };
    if !metadata.is_file() || metadata.uid() != effective_uid() {
        return Err(invalid("it is not a regular file owned by you"));
    }
    let text = std::fs::read_to_string(lock)
        .map_err(|source| SecretsError::TempFile { path: secrets_path.to_owned(), source })?;
    let field = |name: &str| {
        text.lines().find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
    };
    let pid = field("pid").and_then(|pid| pid.parse::<u32>().ok());
    let started = field("started").and_then(|started| started.parse::<u64>().ok());
    match (pid, started, field("plaintext")) {
        (Some(pid), Some(started), Some(directory)) => {
            Ok(Some(LockRecord { pid, started, directory: PathBuf::from(directory) }))
        }
        _ => Err(invalid("it is not an edit lock this tool wrote")),
    }
}

fn remove_lock(lock: &Path) -> Result<(), SecretsError> {
    match std::fs::remove_file(lock) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(SecretsError::EditLock {
            lock: lock.to_owned(),
            reason: format!("it cannot be removed ({error})"),
        }),
        _ => Ok(()),
    }
}

/// Overwrites every regular file in a killed edit's plaintext directory with zeros, then
/// removes the directory. Only a private directory of ours directly in `temp_parent` with
/// our prefix is touched. Returns whether there was one.
fn remove_plaintext_dir(lock: &Path, temp_parent: &Path, directory: &Path) -> Result<bool, SecretsError> {
    let invalid = |reason: String| SecretsError::EditLock { lock: lock.to_owned(), reason };
    let ours = directory.parent() == Some(temp_parent)
        && directory
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(PLAINTEXT_DIR_PREFIX) && !name.ends_with(".lock"));
    if !ours {
        return Err(invalid(format!(
            "it names {}, which is not an edit directory in {}; remove the lock after checking",
            directory.display(),
            temp_parent.display()
        )));
    }
    let metadata = match std::fs::symlink_metadata(directory) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(invalid(format!("{} cannot be read ({error})", directory.display()))),
    };
    if !metadata.is_dir() || metadata.uid() != effective_uid() {
        return Err(invalid(format!("{} is not a directory owned by you", directory.display())));
    }
    if let Ok(entries) = std::fs::read_dir(directory) {
        for entry in entries.flatten() {
            zero_file(&entry.path());
        }
    }
    std::fs::remove_dir_all(directory)
        .map_err(|error| invalid(format!("{} cannot be removed ({error})", directory.display())))?;
    Ok(true)
}

/// Overwrites a regular file (never through a symbolic link) with zeros, best effort.
pub(super) fn zero_file(path: &Path) {
    let Ok(mut handle) = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(path)
    else {
        return;
    };
    if let Ok(metadata) = handle.metadata()
        && metadata.is_file()
    {
        let zeros = vec![0u8; metadata.len() as usize];
        let _ = handle.write_all(&zeros);
        let _ = handle.sync_all();
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether the process that wrote a lock still runs: the pid exists (`kill(pid, 0)` succeeds
/// or is refused for permission), is not a zombie, and started when the lock says (a pid
/// reused by another process after a kill does not count).
fn process_runs(pid: u32, started: u64) -> bool {
    let Ok(signed) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if signed <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let exists = unsafe { libc::kill(signed, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match proc_stat(pid) {
        Some((state, now_started)) => state != 'Z' && (started == 0 || now_started == started),
        // Without /proc, the pid's existence is all we know.
        None => true,
    }
}

/// The start time of a process (clock ticks since boot, `/proc/PID/stat` field 22).
fn process_start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, started)| started)
}

/// State and start time from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses.
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 3 (state) is fields[0], so field 22 (starttime) is fields[19].
    Some((state, fields.get(19)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_reaped_child_does_not() {
        let pid = std::process::id();
        assert!(process_runs(pid, process_start_time(pid).unwrap()));
        // The same pid with another start time is another process.
        assert!(!process_runs(pid, process_start_time(pid).unwrap() + 1));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        assert!(!process_runs(dead, 0));
        assert!(!process_runs(0, 0));
    }

    #[test]
    fn the_lock_path_names_the_file_not_its_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.enc.yaml");
        std::fs::write(&file, "").unwrap();
        let other = dir.path().join("other.enc.yaml");
        let parent = Path::new("/run/user/1");
        let dotted = dir.path().join(".").join("secrets.enc.yaml");
        assert_eq!(edit_lock_path(&file, parent), edit_lock_path(&dotted, parent));
        assert_ne!(edit_lock_path(&file, parent), edit_lock_path(&other, parent));
        assert_eq!(edit_lock_path(&file, parent).parent(), Some(parent));
    }
}
