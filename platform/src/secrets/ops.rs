//! The operations on secrets files that the CLI exposes: show, set, new, edit, re-encrypt for
//! new recipients (key rotation), plus in-memory encrypt/decrypt for callers that hold the
//! text themselves. Every read verifies the MAC before returning anything; every write is
//! atomic; the only plaintext ever written to disk is `edit`'s private temporary file, which
//! is removed on every path, including Ctrl-C while the editor runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use super::SecretsError;
use super::atomic::{AtomicWriteOptions, write_atomic};
use super::crypto::{
    DataKey, decrypt_mac, decrypt_tree, encrypt_mac, encrypt_tree, unwrap_data_key, wrap_data_key,
};
use super::format::{
    AgeStanza, Document, EncryptionRule, Metadata, SOPS_FORMAT_VERSION, SOPS_METADATA_KEY, emit_document,
    parse_document,
};
use super::identity::{Identities, Recipient};
use super::tree::{SecretTree, SecretValue};
use crate::sensitive::SecretString;

/// A decrypted file with what is needed to re-encrypt it under the same data key.
struct Opened {
    tree: SecretTree,
    key: DataKey,
    metadata: Metadata,
}

fn read_file(path: &Path) -> Result<String, SecretsError> {
    std::fs::read_to_string(path).map_err(|source| SecretsError::Read { path: path.to_owned(), source })
}

fn open_document(path: &Path, text: &str, identities: &Identities) -> Result<Opened, SecretsError> {
    let document = parse_document(path, text)?;
    let metadata = document.metadata;
    let matcher = metadata.rule.matcher(path)?;
    let key = unwrap_data_key(path, &metadata.age, identities)?;
    let stored_mac = decrypt_mac(&key, &metadata.mac, &metadata.last_modified)
        .ok_or_else(|| SecretsError::MacAuthentication { path: path.to_owned() })?;
    let (tree, computed_mac) =
        decrypt_tree(path, &document.data, &key, &matcher, metadata.mac_only_encrypted)?;
    if !computed_mac.eq_ignore_ascii_case(&stored_mac) {
        return Err(SecretsError::MacMismatch { path: path.to_owned() });
    }
    Ok(Opened { tree, key, metadata })
}

/// Decrypts sops text (already read from `path`, which names it in errors) and verifies its
/// MAC.
pub fn decrypt_document(
    path: &Path,
    text: &str,
    identities: &Identities,
) -> Result<SecretTree, SecretsError> {
    Ok(open_document(path, text, identities)?.tree)
}

/// Reads, decrypts and verifies a secrets file.
pub fn decrypt_file(path: &Path, identities: &Identities) -> Result<SecretTree, SecretsError> {
    decrypt_document(path, &read_file(path)?, identities)
}

/// The decrypted file as plaintext YAML, for the caller to print.
pub fn show_file(path: &Path, identities: &Identities) -> Result<SecretString, SecretsError> {
    Ok(decrypt_file(path, identities)?.to_yaml())
}

/// Encrypts a tree under a fresh data key for `recipients`; returns the sops YAML text.
pub fn encrypt_document(
    path: &Path,
    tree: &SecretTree,
    recipients: &[Recipient],
    rule: &EncryptionRule,
) -> Result<String, SecretsError> {
    if recipients.is_empty() {
        return Err(SecretsError::NoRecipients { path: path.to_owned() });
    }
    let key = DataKey::generate();
    let stanzas = wrap_data_key(&key, recipients);
    seal(path, tree, &key, stanzas, rule, false)
}

fn seal(
    path: &Path,
    tree: &SecretTree,
    key: &DataKey,
    age: Vec<AgeStanza>,
    rule: &EncryptionRule,
    mac_only_encrypted: bool,
) -> Result<String, SecretsError> {
    if let SecretTree::Map(entries) = tree
        && entries.iter().any(|(name, _)| name == SOPS_METADATA_KEY)
    {
        return Err(SecretsError::InvalidKeyPath {
            path: path.to_owned(),
            key_path: SOPS_METADATA_KEY.to_owned(),
            reason: "the top-level key `sops` is reserved for sops metadata".to_owned(),
        });
    }
    let matcher = rule.matcher(path)?;
    let (data, mac) = encrypt_tree(path, tree, key, &matcher, mac_only_encrypted)?;
    let last_modified = now_rfc3339_seconds();
    let mac = encrypt_mac(key, &mac, &last_modified);
    Ok(emit_document(&Document {
        data,
        metadata: Metadata {
            age,
            last_modified,
            mac,
            version: SOPS_FORMAT_VERSION.to_owned(),
            rule: rule.clone(),
            mac_only_encrypted,
            other_key_groups: Vec::new(),
        },
    }))
}

/// `time.Now().UTC().Format(time.RFC3339)`: whole seconds, `Z`.
fn now_rfc3339_seconds() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

fn refuse_other_key_groups(path: &Path, metadata: &Metadata) -> Result<(), SecretsError> {
    if metadata.other_key_groups.is_empty() {
        Ok(())
    } else {
        Err(SecretsError::Unsupported {
            path: path.to_owned(),
            feature: format!(
                "rewriting a file whose data key is also wrapped for {} (use sops, or re-encrypt it for age recipients)",
                metadata.other_key_groups.join(", ")
            ),
        })
    }
}

/// Re-encrypts an opened file under its own data key (fresh IVs, new MAC and lastmodified)
/// and writes it atomically.
fn write_reopened(path: &Path, opened: &Opened, tree: &SecretTree) -> Result<(), SecretsError> {
    refuse_other_key_groups(path, &opened.metadata)?;
    let text = seal(
        path,
        tree,
        &opened.key,
        opened.metadata.age.clone(),
        &opened.metadata.rule,
        opened.metadata.mac_only_encrypted,
    )?;
    write_atomic(path, text.as_bytes(), &AtomicWriteOptions::default())?;
    Ok(())
}

/// Creates a new secrets file for `recipients` with `tree` as content (use
/// [`SecretTree::empty`] for an empty file). Refuses to overwrite an existing file.
pub fn create_file(path: &Path, recipients: &[Recipient], tree: &SecretTree) -> Result<(), SecretsError> {
    if path.exists() {
        return Err(SecretsError::AlreadyExists { path: path.to_owned() });
    }
    let text = encrypt_document(path, tree, recipients, &EncryptionRule::default())?;
    write_atomic(path, text.as_bytes(), &AtomicWriteOptions { mode: Some(0o644) })?;
    Ok(())
}

/// Key paths a file must never store in clear, whatever its encryption rule says: the secrets
/// its owner reads (a template's keys, everything under `values_sensitive_custom`). A key is
/// matched without the rule's unencrypted suffix, so `db.password_unencrypted` is still
/// `db.password`. Every other key follows the file's rule, sops' `_unencrypted` suffix included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepEncrypted {
    /// Exact dotted paths.
    pub keys: Vec<String>,
    /// Top-level keys whose whole subtree is secret.
    pub subtrees: Vec<String>,
}

impl KeepEncrypted {
    /// Whether the value at `key_path` must be encrypted (`rule` gives the suffix to ignore).
    pub fn covers(&self, key_path: &[String], rule: &EncryptionRule) -> bool {
        let stripped: Vec<&str> = key_path
            .iter()
            .map(|key| match rule {
                EncryptionRule::UnencryptedSuffix(suffix) if !suffix.is_empty() => {
                    key.strip_suffix(suffix.as_str()).unwrap_or(key)
                }
                _ => key.as_str(),
            })
            .collect();
        let dotted = stripped.join(".");
        self.keys.contains(&dotted)
            || stripped.first().is_some_and(|first| self.subtrees.iter().any(|subtree| subtree == first))
    }

    /// The first leaf of `tree` that the file's rule would store in clear although it must
    /// stay encrypted.
    fn first_in_clear(
        &self,
        path: &Path,
        tree: &SecretTree,
        rule: &EncryptionRule,
    ) -> Result<Option<String>, SecretsError> {
        let matcher = rule.matcher(path)?;
        Ok(tree.leaf_paths().into_iter().find(|dotted| {
            let key_path: Vec<String> = dotted.split('.').map(str::to_owned).collect();
            !matcher.should_encrypt(&key_path) && self.covers(&key_path, rule)
        }))
    }
}

fn in_clear_error(path: &Path, key_path: &str, rule: &EncryptionRule) -> SecretsError {
    SecretsError::InvalidKeyPath {
        path: path.to_owned(),
        key_path: key_path.to_owned(),
        reason: format!(
            "this is a secret its component reads, and the file's rule (`{}`) would store it in clear; name it so that the rule encrypts it (without the suffix)",
            match rule {
                EncryptionRule::UnencryptedSuffix(text) => format!("unencrypted_suffix: {text}"),
                EncryptionRule::EncryptedSuffix(text) => format!("encrypted_suffix: {text}"),
                EncryptionRule::UnencryptedRegex(text) => format!("unencrypted_regex: {text}"),
                EncryptionRule::EncryptedRegex(text) => format!("encrypted_regex: {text}"),
            }
        ),
    }
}

/// Sets the string at a dotted key path (`db.password`), creating intermediate maps, and
/// re-encrypts the file under its data key.
pub fn set_value(
    path: &Path,
    key_path: &str,
    value: SecretString,
    identities: &Identities,
) -> Result<(), SecretsError> {
    set_value_keeping(path, key_path, value, identities, &KeepEncrypted::default())
}

/// [`set_value`], refusing a key of `keep` that the file's rule would store in clear.
pub fn set_value_keeping(
    path: &Path,
    key_path: &str,
    value: SecretString,
    identities: &Identities,
    keep: &KeepEncrypted,
) -> Result<(), SecretsError> {
    let invalid = |reason: &str| SecretsError::InvalidKeyPath {
        path: path.to_owned(),
        key_path: key_path.to_owned(),
        reason: reason.to_owned(),
    };
    let components: Vec<&str> = key_path.split('.').collect();
    if components.iter().any(|component| component.is_empty()) {
        return Err(invalid("a component of the dotted path is empty"));
    }
    if components[0] == SOPS_METADATA_KEY {
        return Err(invalid("the top-level key `sops` is reserved for sops metadata"));
    }
    let opened = open_document(path, &read_file(path)?, identities)?;
    // A file written by sops with `encrypted_regex` (say) leaves other keys in clear: never
    // store a secret in clear by accident. The `_unencrypted` suffix of the default rule is a
    // deliberate choice and stays allowed.
    let owned: Vec<String> = components.iter().map(|c| (*c).to_owned()).collect();
    let matcher = opened.metadata.rule.matcher(path)?;
    if !matcher.should_encrypt(&owned) && keep.covers(&owned, &opened.metadata.rule) {
        return Err(in_clear_error(path, key_path, &opened.metadata.rule));
    }
    if !matcher.should_encrypt(&owned)
        && !matches!(opened.metadata.rule, crate::secrets::EncryptionRule::UnencryptedSuffix(_))
    {
        return Err(invalid(
            "the file's encryption rule would store this value in clear; use a key the rule encrypts",
        ));
    }
    let mut tree = opened.tree.clone();
    tree.set(&components, SecretValue::string(value)).map_err(|reason| invalid(&reason))?;
    write_reopened(path, &opened, &tree)
}

/// Re-encrypts a file for a new set of recipients under a fresh data key (key rotation). The
/// file must decrypt with `identities` and its MAC verify first.
pub fn reencrypt_file(
    path: &Path,
    identities: &Identities,
    recipients: &[Recipient],
) -> Result<(), SecretsError> {
    let (text, _) = reencrypt_document(path, &read_file(path)?, identities, recipients)?;
    write_atomic(path, text.as_bytes(), &AtomicWriteOptions::default())?;
    Ok(())
}

/// A file decrypted and verified (MAC included), kept to be re-encrypted later without
/// decrypting it again (a rotation decrypts every file before it starts, then re-encrypts them
/// in batches).
pub struct OpenedDocument(Opened);

impl OpenedDocument {
    /// Decrypts and verifies sops text read from `path`.
    pub fn open(path: &Path, text: &str, identities: &Identities) -> Result<OpenedDocument, SecretsError> {
        open_document(path, text, identities).map(OpenedDocument)
    }

    /// The decrypted content.
    pub fn tree(&self) -> &SecretTree {
        &self.0.tree
    }

    /// The recipients its data key is wrapped for, in file order.
    pub fn recipients(&self) -> Vec<String> {
        self.0.metadata.age.iter().map(|stanza| stanza.recipient.clone()).collect()
    }

    /// The same content under a fresh data key for `recipients` (fresh IVs, new MAC).
    pub fn reencrypt(&self, path: &Path, recipients: &[Recipient]) -> Result<String, SecretsError> {
        if recipients.is_empty() {
            return Err(SecretsError::NoRecipients { path: path.to_owned() });
        }
        let key = DataKey::generate();
        let stanzas = wrap_data_key(&key, recipients);
        let metadata = &self.0.metadata;
        seal(path, &self.0.tree, &key, stanzas, &metadata.rule, metadata.mac_only_encrypted)
    }
}

/// [`reencrypt_file`] on text already read (`path` names it in errors): the new text and the
/// decrypted content, for a caller that writes many files in one batch and verifies them.
pub fn reencrypt_document(
    path: &Path,
    text: &str,
    identities: &Identities,
    recipients: &[Recipient],
) -> Result<(String, SecretTree), SecretsError> {
    let opened = OpenedDocument::open(path, text, identities)?;
    let text = opened.reencrypt(path, recipients)?;
    Ok((text, opened.0.tree))
}

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
