//! `edit`: decrypt a secrets file into a private temporary file, run the editor on it, and
//! re-encrypt what comes back under the same data key. Edited text that is refused (invalid
//! YAML, not a mapping, a secret left in clear) can be handed back to the editor, as sops does.
//! The plaintext file is the only plaintext ever written to disk: it lives in memory-backed
//! storage when there is some, an [`EditLock`] names it for the next command should this
//! process be killed, and it is removed on every other path, Ctrl-C while the editor runs
//! included.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use super::SecretsError;
use super::edit_lock::{EditLock, KilledEdit, PLAINTEXT_DIR_PREFIX, zero_file};
use super::format::SOPS_METADATA_KEY;
use super::identity::Identities;
use super::ops::{
    KeepEncrypted, Opened, in_clear_error, open_document, read_file, refuse_other_key_groups, write_reopened,
};
use super::tree::SecretTree;
use crate::sensitive::SecretString;

/// Options for [`edit_file`].
#[derive(Clone, Default)]
pub struct EditOptions<'a> {
    /// The editor command, as in `$EDITOR` (`vim`, `code --wait`); split like a shell would for
    /// simple quoting. The temporary file's path is appended as the last argument.
    pub editor: String,
    /// Where to create the private temporary directory and the edit lock; `None` uses
    /// [`default_temp_parent`].
    pub temp_parent: Option<PathBuf>,
    /// Called when the edited text is refused (it is not valid YAML or not a mapping, or it
    /// stores a secret in clear), with the refusal, whose message never holds a value: `true`
    /// runs the editor again on the same temporary file, as the person left it; `false` (or no
    /// callback) ends the edit with that error, the file unchanged.
    pub reopen_on_invalid: Option<&'a dyn Fn(&SecretsError) -> bool>,
    /// Called when the plaintext a killed edit of the same file left was found and removed.
    pub on_killed_edit: Option<&'a dyn Fn(&KilledEdit)>,
}

impl std::fmt::Debug for EditOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EditOptions")
            .field("editor", &self.editor)
            .field("temp_parent", &self.temp_parent)
            .field("reopen_on_invalid", &self.reopen_on_invalid.is_some())
            .field("on_killed_edit", &self.on_killed_edit.is_some())
            .finish()
    }
}

/// What [`edit_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOutcome {
    /// The content is the same: the file was not touched (byte-identical).
    Unchanged,
    /// The file was re-encrypted with the edited content.
    Updated,
}

/// Decrypts a file into a private temporary file (mode 0600 in a 0700 directory), runs the
/// editor on it, and re-encrypts under the same data key when the content changed and is a
/// valid YAML mapping (values left as they were keep their ciphertext). On any failure,
/// including SIGINT/SIGTERM/SIGHUP while the editor runs, the original file is kept. The
/// temporary file is removed on every path; refuses while another edit of the file runs.
pub fn edit_file(
    path: &Path,
    identities: &Identities,
    options: &EditOptions,
) -> Result<EditOutcome, SecretsError> {
    edit_file_keeping(path, identities, options, &KeepEncrypted::default())
}

/// [`edit_file`], refusing an edit that leaves a key of `keep` in clear under the file's rule
/// (the file is then left unchanged).
pub fn edit_file_keeping(
    path: &Path,
    identities: &Identities,
    options: &EditOptions,
    keep: &KeepEncrypted,
) -> Result<EditOutcome, SecretsError> {
    let argv = split_editor_command(&options.editor)?;
    let opened = open_document(path, &read_file(path)?, identities)?;
    refuse_other_key_groups(path, &opened.metadata)?;
    let plaintext = opened.tree.to_yaml();

    let temp_parent = options.temp_parent.clone().unwrap_or_else(default_temp_parent);
    let (temp, killed) = PlaintextFile::create(path, &temp_parent, &plaintext)?;
    if let (Some(killed), Some(report)) = (killed, options.on_killed_edit) {
        report(&killed);
    }

    let tree = {
        // Signal handlers are process-wide: one edit session at a time. They stay installed
        // while the caller decides whether to reopen the editor, so Ctrl-C then is handled too.
        let _session = EDIT_SESSION.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let signals = SignalGuard::install();
        loop {
            let edited = run_editor(path, &argv, &temp, &signals)?;
            if edited.expose() == plaintext.expose() {
                return Ok(EditOutcome::Unchanged);
            }
            match check_edited(path, &edited, &opened, keep) {
                Ok(None) => return Ok(EditOutcome::Unchanged),
                Ok(Some(tree)) => break tree,
                Err(refusal) => {
                    let reopen = options.reopen_on_invalid.is_some_and(|reopen| reopen(&refusal));
                    if signals.interrupted() {
                        return Err(SecretsError::EditInterrupted { path: path.to_owned() });
                    }
                    if !reopen {
                        return Err(refusal);
                    }
                }
            }
        }
    };
    // The plaintext goes before the write; the lock stays until the file is written, so no
    // other command slips in between.
    let _lock = temp.remove();
    write_reopened(path, &opened, &tree)?;
    Ok(EditOutcome::Updated)
}

/// Runs the editor once on the plaintext file and reads back what it left.
fn run_editor(
    path: &Path,
    argv: &[String],
    temp: &PlaintextFile,
    signals: &SignalGuard,
) -> Result<SecretString, SecretsError> {
    let status = std::process::Command::new(&argv[0]).args(&argv[1..]).arg(temp.path()).status().map_err(
        |source| SecretsError::EditorSpawn { program: argv[0].clone(), path: path.to_owned(), source },
    )?;
    // A signal sent while the editor ran is delivered by now, or counted as pending.
    signals.settle();
    if signals.interrupted() || signals.pending() {
        return Err(SecretsError::EditInterrupted { path: path.to_owned() });
    }
    if !status.success() {
        return Err(SecretsError::EditorFailed {
            program: argv[0].clone(),
            status: status.to_string(),
            path: path.to_owned(),
        });
    }
    temp.read(path)
}

/// The edited text as a tree (`None`: the same tree as before, only the layout changed), or
/// why it is refused (every such error can be fixed by editing again). Locations are those of
/// the text as the editor left it.
fn check_edited(
    path: &Path,
    edited: &SecretString,
    opened: &Opened,
    keep: &KeepEncrypted,
) -> Result<Option<SecretTree>, SecretsError> {
    let tree = SecretTree::from_yaml(path, edited.expose()).map_err(|error| match error {
        SecretsError::InvalidYaml { path, line, column } => {
            SecretsError::EditedYamlInvalid { path, line, column }
        }
        other => other,
    })?;
    if tree == opened.tree {
        return Ok(None);
    }
    if let SecretTree::Map(entries) = &tree
        && entries.iter().any(|(name, _)| name == SOPS_METADATA_KEY)
    {
        return Err(SecretsError::InvalidKeyPath {
            path: path.to_owned(),
            key_path: SOPS_METADATA_KEY.to_owned(),
            reason: "the top-level key `sops` is reserved for sops metadata".to_owned(),
        });
    }
    if let Some(key_path) = keep.first_in_clear(path, &tree, &opened.metadata.rule)? {
        return Err(in_clear_error(path, &key_path, &opened.metadata.rule));
    }
    Ok(Some(tree))
}

/// Where `edit` puts its plaintext unless told otherwise: `$XDG_RUNTIME_DIR` (a per-user
/// tmpfs) when it is set and a directory, else `/dev/shm` (memory too) when it is a writable
/// directory, and only then the system temporary directory, which is usually on disk. The
/// same directory every time, so the next command finds a killed edit's lock there.
pub fn default_temp_parent() -> PathBuf {
    choose_temp_parent(
        std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
        Path::new("/dev/shm"),
        std::env::temp_dir(),
    )
}

/// [`default_temp_parent`] with the candidates as parameters.
fn choose_temp_parent(runtime_dir: Option<&OsStr>, shared_memory: &Path, system_temp: PathBuf) -> PathBuf {
    if let Some(dir) = runtime_dir.map(Path::new)
        && dir.is_absolute()
        && dir.is_dir()
    {
        return dir.to_owned();
    }
    if shared_memory.is_dir() && writable(shared_memory) {
        return shared_memory.to_owned();
    }
    system_temp
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access reads the NUL-terminated path we own.
    unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The edit's plaintext on disk: a 0600 file in a fresh 0700 directory, named by the edit
/// lock while it exists. Dropping it overwrites the file with zeros (best effort), removes it
/// and its directory, then the lock.
struct PlaintextFile {
    directory: Option<tempfile::TempDir>,
    file: PathBuf,
    lock: Option<EditLock>,
}

impl PlaintextFile {
    /// Creates the directory, takes the edit lock naming it (which removes a killed edit's
    /// leftovers first, returned), and only then writes the plaintext.
    fn create(
        secrets_path: &Path,
        parent: &Path,
        plaintext: &SecretString,
    ) -> Result<(PlaintextFile, Option<KilledEdit>), SecretsError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

        let temp_error = |source| SecretsError::TempFile { path: secrets_path.to_owned(), source };
        let directory =
            tempfile::Builder::new().prefix(PLAINTEXT_DIR_PREFIX).tempdir_in(parent).map_err(temp_error)?;
        std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(temp_error)?;
        let (lock, killed) = EditLock::acquire(secrets_path, parent, directory.path())?;
        // Same extension as the real file so editors highlight YAML.
        let file = directory.path().join("secrets.yaml");
        let guard = PlaintextFile { directory: Some(directory), file, lock: Some(lock) };
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&guard.file)
            .map_err(temp_error)?;
        handle.write_all(plaintext.expose().as_bytes()).map_err(temp_error)?;
        Ok((guard, killed))
    }

    fn path(&self) -> &Path {
        &self.file
    }

    fn read(&self, secrets_path: &Path) -> Result<SecretString, SecretsError> {
        std::fs::read_to_string(&self.file)
            .map(SecretString::new)
            .map_err(|source| SecretsError::TempFile { path: secrets_path.to_owned(), source })
    }
}

impl PlaintextFile {
    /// Removes the plaintext now and hands back the edit lock, to release later.
    fn remove(mut self) -> Option<EditLock> {
        self.wipe();
        self.lock.take()
    }

    fn wipe(&mut self) {
        // Editors may have replaced the file (write to new file + rename), so overwrite what
        // is there now, then remove everything in the directory.
        zero_file(&self.file);
        if let Some(directory) = self.directory.take() {
            // Removes the file and any backup or swap file the editor left beside it.
            let _ = directory.close();
        }
    }
}

impl Drop for PlaintextFile {
    fn drop(&mut self) {
        self.wipe();
        // The lock goes last: while it exists it names what is left to remove.
        self.lock.take();
    }
}

/// Held while an editor runs, so concurrent edits in one process do not share handlers.
static EDIT_SESSION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The last termination signal received while a [`SignalGuard`] was installed (0: none).
static RECEIVED_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn record_signal(signal: libc::c_int) {
    RECEIVED_SIGNAL.store(signal, Ordering::SeqCst);
}

/// While alive, SIGINT, SIGTERM and SIGHUP are recorded instead of killing the process, so
/// the editor can exit and the plaintext be removed; the previous handlers come back on drop.
/// The editor (a new process) starts with default handlers: exec resets caught signals.
struct SignalGuard {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl SignalGuard {
    fn install() -> SignalGuard {
        RECEIVED_SIGNAL.store(0, Ordering::SeqCst);
        let mut previous = Vec::new();
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: sigaction with a handler that only stores to an atomic, which is
            // async-signal-safe; the old action is saved and restored in drop.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = record_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut old) == 0 {
                    previous.push((signal, old));
                }
            }
        }
        SignalGuard { previous }
    }

    fn interrupted(&self) -> bool {
        RECEIVED_SIGNAL.load(Ordering::SeqCst) != 0
    }
}

impl SignalGuard {
    /// Whether one of the guarded signals is pending for this thread or the process.
    fn pending(&self) -> bool {
        // SAFETY: sigpending writes into the set we own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigpending(&mut set);
            self.previous.iter().any(|(signal, _)| libc::sigismember(&set, *signal) == 1)
        }
    }

    /// Waits until no guarded signal is pending any more. A signal sent just before the editor
    /// exited may still be pending for the process: the kernel delivers it when the thread it
    /// chose next runs, which on a loaded machine can take a while. Bounded in time, so a
    /// signal some thread blocks cannot hang us.
    fn settle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.pending() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // Restoring the default action while a signal is still pending would let it kill us
        // after all, with the plaintext already removed but the outcome unreported: let it land
        // in our handler first.
        self.settle();
        for (signal, old) in &self.previous {
            // SAFETY: restores the action saved in `install`.
            unsafe {
                libc::sigaction(*signal, old, std::ptr::null_mut());
            }
        }
    }
}

/// Splits an `$EDITOR` value into program and arguments: whitespace separates words; single
/// quotes keep text as is; double quotes keep text with `\"` and `\\` escapes; a backslash
/// outside quotes escapes the next character.
pub fn split_editor_command(command: &str) -> Result<Vec<String>, SecretsError> {
    let error =
        |reason: &str| SecretsError::EditorCommand { command: command.to_owned(), reason: reason.to_owned() };
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(error("unterminated single quote")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(error("unterminated double quote")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(error("unterminated double quote")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(error("it ends with a backslash")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err(error("it is empty (set $EDITOR)"));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_commands_split_like_a_shell() {
        assert_eq!(split_editor_command("vim").unwrap(), ["vim"]);
        assert_eq!(split_editor_command("code --wait").unwrap(), ["code", "--wait"]);
        assert_eq!(
            split_editor_command("'/opt/my editor/bin/ed' -x \"a b\" c\\ d").unwrap(),
            ["/opt/my editor/bin/ed", "-x", "a b", "c d"]
        );
        assert!(split_editor_command("  ").is_err());
        assert!(split_editor_command("vim 'x").is_err());
    }
}

#[cfg(test)]
mod temp_parent_tests {
    use super::*;

    #[test]
    fn the_plaintext_goes_to_memory_backed_directories_first() {
        let runtime = tempfile::tempdir().unwrap();
        let shm = tempfile::tempdir().unwrap();
        let disk = PathBuf::from("/var/tmp-disk");
        let not_a_dir = runtime.path().join("file");
        std::fs::write(&not_a_dir, "").unwrap();
        let missing = runtime.path().join("missing");
        // $XDG_RUNTIME_DIR when set and a directory.
        assert_eq!(
            choose_temp_parent(Some(runtime.path().as_os_str()), shm.path(), disk.clone()),
            runtime.path()
        );
        // Else /dev/shm when it is a writable directory.
        assert_eq!(choose_temp_parent(None, shm.path(), disk.clone()), shm.path());
        assert_eq!(choose_temp_parent(Some(not_a_dir.as_os_str()), shm.path(), disk.clone()), shm.path());
        assert_eq!(choose_temp_parent(Some(OsStr::new("relative")), shm.path(), disk.clone()), shm.path());
        // Only then the system temporary directory.
        assert_eq!(choose_temp_parent(None, &missing, disk.clone()), disk);
        assert_eq!(choose_temp_parent(Some(missing.as_os_str()), &not_a_dir, disk.clone()), disk);
    }
}
