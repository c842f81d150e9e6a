//! `edit`: decrypt a secrets file into a private temporary file, run the editor on it, and
//! re-encrypt what comes back under the same data key. The plaintext file is the only
//! plaintext ever written to disk; it is removed on every path, including Ctrl-C while the
//! editor runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use super::SecretsError;
use super::identity::Identities;
use super::ops::{
    KeepEncrypted, in_clear_error, open_document, read_file, refuse_other_key_groups, write_reopened,
};
use super::tree::SecretTree;
use crate::sensitive::SecretString;

/// Options for [`edit_file`].
#[derive(Debug, Clone, Default)]
pub struct EditOptions {
    /// The editor command, as in `$EDITOR` (`vim`, `code --wait`); split like a shell would for
    /// simple quoting. The temporary file's path is appended as the last argument.
    pub editor: String,
    /// Where to create the private temporary directory; `None` uses `$XDG_RUNTIME_DIR` (a
    /// per-user tmpfs) when it exists, else the system temporary directory.
    pub temp_parent: Option<PathBuf>,
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
/// valid YAML mapping. On any failure, including SIGINT/SIGTERM/SIGHUP while the editor runs,
/// the original file is kept. The temporary file is removed on every path.
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
    let temp = PlaintextFile::create(path, &temp_parent, &plaintext)?;

    let edited = {
        // Signal handlers are process-wide: one edit session at a time.
        let _session = EDIT_SESSION.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let signals = SignalGuard::install();
        let status =
            std::process::Command::new(&argv[0]).args(&argv[1..]).arg(temp.path()).status().map_err(
                |source| SecretsError::EditorSpawn {
                    program: argv[0].clone(),
                    path: path.to_owned(),
                    source,
                },
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
        temp.read(path)?
    };
    if edited.expose() == plaintext.expose() {
        return Ok(EditOutcome::Unchanged);
    }
    let tree = SecretTree::from_yaml(path, edited.expose()).map_err(|error| match error {
        SecretsError::InvalidYaml { path, line, column } => {
            SecretsError::EditedYamlInvalid { path, line, column }
        }
        other => other,
    })?;
    drop(temp);
    if tree == opened.tree {
        return Ok(EditOutcome::Unchanged);
    }
    if let Some(key_path) = keep.first_in_clear(path, &tree, &opened.metadata.rule)? {
        return Err(in_clear_error(path, &key_path, &opened.metadata.rule));
    }
    write_reopened(path, &opened, &tree)?;
    Ok(EditOutcome::Updated)
}

fn default_temp_parent() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute() && dir.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// The edit's plaintext on disk: a 0600 file in a fresh 0700 directory. Dropping it
/// overwrites the file with zeros (best effort) and removes it and its directory.
struct PlaintextFile {
    directory: Option<tempfile::TempDir>,
    file: PathBuf,
}

impl PlaintextFile {
    fn create(
        secrets_path: &Path,
        parent: &Path,
        plaintext: &SecretString,
    ) -> Result<PlaintextFile, SecretsError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

        let temp_error = |source| SecretsError::TempFile { path: secrets_path.to_owned(), source };
        let directory =
            tempfile::Builder::new().prefix("opus-secrets-").tempdir_in(parent).map_err(temp_error)?;
        std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(temp_error)?;
        // Same extension as the real file so editors highlight YAML.
        let file = directory.path().join("secrets.yaml");
        let guard = PlaintextFile { directory: Some(directory), file };
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&guard.file)
            .map_err(temp_error)?;
        handle.write_all(plaintext.expose().as_bytes()).map_err(temp_error)?;
        Ok(guard)
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

impl Drop for PlaintextFile {
    fn drop(&mut self) {
        use std::io::Write;
        // Editors may have replaced the file (write to new file + rename), so overwrite what
        // is there now, then remove everything in the directory.
        if let Ok(metadata) = std::fs::symlink_metadata(&self.file)
            && metadata.is_file()
            && let Ok(mut handle) = std::fs::OpenOptions::new().write(true).open(&self.file)
        {
            let zeros = vec![0u8; metadata.len() as usize];
            let _ = handle.write_all(&zeros);
            let _ = handle.sync_all();
        }
        if let Some(directory) = self.directory.take() {
            // Removes the file and any backup or swap file the editor left beside it.
            let _ = directory.close();
        }
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
