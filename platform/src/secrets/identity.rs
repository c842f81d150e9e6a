//! Age identities and recipients: finding identities the way sops does (`SOPS_AGE_KEY_FILE`,
//! `SOPS_AGE_KEY`, then `$XDG_CONFIG_HOME/sops/age/keys.txt` or `~/.config/sops/age/keys.txt`,
//! all of them combined), parsing recipients with clear errors, generating identities and
//! appending them to key files in `age-keygen`'s format without rewriting the keys already
//! there.

use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;

use super::SecretsError;
use crate::sensitive::SecretString;

pub const SOPS_AGE_KEY_FILE_ENV: &str = "SOPS_AGE_KEY_FILE";
pub const SOPS_AGE_KEY_ENV: &str = "SOPS_AGE_KEY";
/// Where sops looks for keys under the user's configuration directory.
pub const SOPS_AGE_KEY_USER_CONFIG_PATH: &str = "sops/age/keys.txt";

/// An age X25519 recipient (`age1...`), the public half of an identity.
#[derive(Clone)]
pub struct Recipient {
    text: String,
    parsed: age::x25519::Recipient,
}

impl Recipient {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn age_recipient(&self) -> &age::x25519::Recipient {
        &self.parsed
    }
}

impl PartialEq for Recipient {
    fn eq(&self, other: &Recipient) -> bool {
        self.text == other.text
    }
}

impl Eq for Recipient {}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.text)
    }
}

impl FromStr for Recipient {
    type Err = SecretsError;

    fn from_str(text: &str) -> Result<Recipient, SecretsError> {
        parse_recipient(text)
    }
}

/// Parses one age recipient, with an error that says what is wrong with it.
pub fn parse_recipient(text: &str) -> Result<Recipient, SecretsError> {
    let trimmed = text.trim();
    let invalid = |reason: &str| SecretsError::InvalidRecipient {
        recipient: trimmed.to_owned(),
        reason: reason.to_owned(),
    };
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    if trimmed.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
        // Never echo a secret key back.
        return Err(SecretsError::InvalidRecipient {
            recipient: "AGE-SECRET-KEY-...".to_owned(),
            reason: "this is a secret key (identity); give its public key (age1...) instead".to_owned(),
        });
    }
    if !trimmed.starts_with("age1") {
        return Err(invalid(
            "an age recipient starts with `age1` (ssh and plugin recipients are not supported)",
        ));
    }
    let parsed = age::x25519::Recipient::from_str(trimmed)
        .map_err(|_| invalid("not a valid Bech32-encoded X25519 public key"))?;
    Ok(Recipient { text: parsed.to_string(), parsed })
}

/// Parses a list of recipients, dropping duplicates and keeping the first order.
pub fn parse_recipients<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Recipient>, SecretsError> {
    let mut out: Vec<Recipient> = Vec::with_capacity(texts.len());
    for text in texts {
        let recipient = parse_recipient(text.as_ref())?;
        if !out.contains(&recipient) {
            out.push(recipient);
        }
    }
    Ok(out)
}

/// The age identities available to decrypt, with the places they were looked for (for error
/// messages). Its `Debug` shows only public keys.
#[derive(Clone, Default)]
pub struct Identities {
    /// Each identity with its public key, computed once (a scalar multiplication each time).
    keys: Vec<(age::x25519::Identity, String)>,
    locations: Vec<String>,
}

impl Identities {
    pub fn new() -> Identities {
        Identities::default()
    }

    /// Identities from key-file text (as written by `age-keygen`: one `AGE-SECRET-KEY-1...`
    /// per line, `#` comments and blank lines ignored). `location` names the source in errors.
    pub fn from_key_text(location: &str, text: &SecretString) -> Result<Identities, SecretsError> {
        let mut identities = Identities::new();
        identities.add_key_text(location, text)?;
        Ok(identities)
    }

    pub fn add_key_text(&mut self, location: &str, text: &SecretString) -> Result<(), SecretsError> {
        let parsed = parse_key_text(location, text)?;
        self.keys.extend(parsed.into_iter().map(|key| {
            let recipient = key.to_public().to_string();
            (key, recipient)
        }));
        self.note_location(location);
        Ok(())
    }

    fn note_location(&mut self, location: &str) {
        if !self.locations.iter().any(|known| known == location) {
            self.locations.push(location.to_owned());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The private key (`AGE-SECRET-KEY-1...`) of the identity whose public key is
    /// `recipient`: for storing it in the cluster's key store.
    pub fn secret_key_for(&self, recipient: &str) -> Option<SecretString> {
        use age::secrecy::ExposeSecret;
        self.keys
            .iter()
            .find(|(_, public)| public == recipient)
            .map(|(key, _)| SecretString::new(key.to_string().expose_secret().to_owned()))
    }

    /// The public keys of the identities, in load order.
    pub fn recipients(&self) -> Vec<String> {
        self.keys.iter().map(|(_, public)| public.clone()).collect()
    }

    /// The identity whose public key is `recipient`, if held.
    pub(crate) fn identity_for(&self, recipient: &str) -> Option<&dyn age::Identity> {
        self.keys.iter().find(|(_, public)| public == recipient).map(|(key, _)| key as &dyn age::Identity)
    }

    /// The places identities were looked for.
    pub fn locations(&self) -> &[String] {
        &self.locations
    }

    pub(crate) fn age_identities(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|(key, _)| key as &dyn age::Identity)
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("recipients", &self.recipients())
            .field("locations", &self.locations)
            .finish()
    }
}

fn parse_key_text(location: &str, text: &SecretString) -> Result<Vec<age::x25519::Identity>, SecretsError> {
    let mut keys = Vec::new();
    for (index, line) in text.expose().lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = age::x25519::Identity::from_str(line)
            .map_err(|_| SecretsError::InvalidIdentity { location: location.to_owned(), line: index + 1 })?;
        keys.push(key);
    }
    Ok(keys)
}

/// Where to look for identities. [`IdentitySources::from_env`] reads the process environment
/// as sops does; tests build one by hand.
#[derive(Debug, Clone, Default)]
pub struct IdentitySources {
    /// `SOPS_AGE_KEY_FILE`: a key file that must be readable when named.
    pub key_file: Option<PathBuf>,
    /// `SOPS_AGE_KEY`: key-file text in a variable.
    pub key: Option<SecretString>,
    /// `$XDG_CONFIG_HOME/sops/age/keys.txt` or `~/.config/sops/age/keys.txt`: used when it
    /// exists.
    pub default_key_file: Option<PathBuf>,
}

impl IdentitySources {
    pub fn from_env() -> IdentitySources {
        IdentitySources::from_lookup(|name| std::env::var_os(name))
    }

    /// Like [`IdentitySources::from_env`] with variables from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> IdentitySources {
        let non_empty = |name: &str| lookup(name).filter(|value| !value.is_empty());
        // Go's os.UserConfigDir on Unix: $XDG_CONFIG_HOME if set (and absolute), else
        // $HOME/.config.
        let config_dir = match non_empty("XDG_CONFIG_HOME") {
            Some(dir) => Some(PathBuf::from(dir)).filter(|dir| dir.is_absolute()),
            None => non_empty("HOME").map(|home| PathBuf::from(home).join(".config")),
        };
        IdentitySources {
            key_file: non_empty(SOPS_AGE_KEY_FILE_ENV).map(PathBuf::from),
            key: lookup(SOPS_AGE_KEY_ENV)
                .map(|value| SecretString::new(value.to_string_lossy().into_owned())),
            default_key_file: config_dir.map(|dir| dir.join(SOPS_AGE_KEY_USER_CONFIG_PATH)),
        }
    }
}

/// Loads every identity the sources name (sops combines them all). A named
/// `SOPS_AGE_KEY_FILE` that cannot be read is an error; a missing default file is not.
/// An empty result is not an error here: decrypting then reports the file's recipients.
pub fn load_identities(sources: &IdentitySources) -> Result<Identities, SecretsError> {
    let mut identities = Identities::new();
    if let Some(path) = &sources.key_file {
        let text = read_key_file(path)?;
        identities.add_key_text(&format!("{SOPS_AGE_KEY_FILE_ENV}={}", path.display()), &text)?;
    }
    if let Some(text) = &sources.key {
        identities.add_key_text(SOPS_AGE_KEY_ENV, text)?;
    }
    if let Some(path) = &sources.default_key_file {
        let location = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => identities.add_key_text(&location, &SecretString::new(text))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => identities.note_location(&location),
            Err(source) => {
                return Err(SecretsError::KeyFile { path: path.clone(), source });
            }
        }
    }
    Ok(identities)
}

fn read_key_file(path: &Path) -> Result<SecretString, SecretsError> {
    std::fs::read_to_string(path)
        .map(SecretString::new)
        .map_err(|source| SecretsError::KeyFile { path: path.to_owned(), source })
}

/// A freshly generated identity.
#[derive(Debug, Clone)]
pub struct GeneratedIdentity {
    pub recipient: Recipient,
    /// `AGE-SECRET-KEY-1...`
    pub secret_key: SecretString,
    /// RFC 3339 creation time, as `age-keygen` writes it.
    pub created: String,
}

impl GeneratedIdentity {
    /// The identity as a key-file entry in `age-keygen`'s format.
    pub fn key_file_entry(&self) -> SecretString {
        key_file_entry(&self.created, &self.recipient, &self.secret_key)
    }
}

fn key_file_entry(created: &str, recipient: &Recipient, secret_key: &SecretString) -> SecretString {
    SecretString::new(format!("# created: {created}\n# public key: {recipient}\n{}\n", secret_key.expose()))
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Generates a new X25519 identity.
pub fn generate_identity() -> GeneratedIdentity {
    let key = age::x25519::Identity::generate();
    let public = key.to_public();
    GeneratedIdentity {
        recipient: Recipient { text: public.to_string(), parsed: public },
        secret_key: SecretString::new(key.to_string().expose_secret().to_owned()),
        created: now_rfc3339(),
    }
}

/// What [`append_identity_to_key_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Added,
    AlreadyPresent,
}

/// Appends an identity to a key file in `age-keygen`'s format. The file is created with mode
/// 0600 (its directory with 0700) when missing; an existing file is only appended to, under an
/// exclusive lock, so the keys already there are never rewritten; a key already present (same
/// public key) is not added twice.
pub fn append_identity_to_key_file(
    path: &Path,
    secret_key: &SecretString,
) -> Result<AppendOutcome, SecretsError> {
    let key_error = |source| SecretsError::KeyFile { path: path.to_owned(), source };
    let new_keys = parse_key_text("the identity to save", secret_key)?;
    let [new_key] = new_keys.as_slice() else {
        return Err(SecretsError::InvalidIdentity { location: "the identity to save".to_owned(), line: 1 });
    };
    let public = new_key.to_public();
    let recipient = Recipient { text: public.to_string(), parsed: public };

    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(key_error)?;
    }
    let existed = path.exists();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(key_error)?;
    // Serialize concurrent `keys save` runs on the same file (`flock`, released when the file
    // closes).
    file.lock().map_err(key_error)?;
    file.seek(SeekFrom::Start(0)).map_err(key_error)?;
    let mut existing = String::new();
    file.read_to_string(&mut existing).map_err(key_error)?;
    let existing = SecretString::new(existing);
    let already = existing
        .expose()
        .lines()
        .filter_map(|line| age::x25519::Identity::from_str(line.trim()).ok())
        .any(|key| key.to_public().to_string() == recipient.text);
    if already {
        return Ok(AppendOutcome::AlreadyPresent);
    }
    let mut entry = String::new();
    if !existing.expose().is_empty() && !existing.expose().ends_with('\n') {
        entry.push('\n');
    }
    let entry = SecretString::new(entry + key_file_entry(&now_rfc3339(), &recipient, secret_key).expose());
    file.write_all(entry.expose().as_bytes()).map_err(key_error)?;
    file.sync_all().map_err(key_error)?;
    if !existed && let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        super::atomic::sync_dir(parent).map_err(key_error)?;
    }
    Ok(AppendOutcome::Added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_accepts_exactly_the_recipients_age_accepts() {
        use age::secrecy::ExposeSecret;
        let identity = age::x25519::Identity::generate();
        let valid = identity.to_public().to_string();
        let encoded = |hrp: &str, bytes: &[u8]| {
            bech32::encode::<bech32::Bech32>(bech32::Hrp::parse(hrp).unwrap(), bytes).unwrap()
        };
        let mut flipped = valid.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'q' { 'p' } else { 'q' });
        let samples = [
            valid.clone(),
            valid.to_uppercase(),
            format!("{}{}", &valid[..6], valid[6..].to_uppercase()),
            flipped,
            format!(" {valid}"),
            format!("{valid}\n"),
            encoded("age", &[7u8; 32]),
            encoded("age", &[7u8; 31]),
            encoded("age", &[7u8; 33]),
            encoded("agf", &[7u8; 32]),
            encoded("age1yubikey", &[7u8; 32]),
            identity.to_string().expose_secret().to_owned(),
            String::new(),
            "age1".to_owned(),
            "age1se8qy7jt56dxh5scssszwuuk302jn5740pd06m9egdsykt52fa9slgsawg".to_owned(),
        ];
        let mut accepted = 0;
        for sample in &samples {
            let by_age = sample.parse::<age::x25519::Recipient>().map(|_| ());
            assert_eq!(crate::secrets::check_age_recipient(sample), by_age, "{sample:?}");
            accepted += usize::from(by_age.is_ok());
        }
        assert!(accepted >= 3 && accepted < samples.len(), "the samples cover both answers");
    }

    #[test]
    fn sources_follow_sops_lookup_order_and_xdg() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| OsString::from(value))
            }
        };
        let sources =
            IdentitySources::from_lookup(vars(&[("HOME", "/home/op"), ("SOPS_AGE_KEY_FILE", "/keys/a.txt")]));
        assert_eq!(sources.key_file, Some(PathBuf::from("/keys/a.txt")));
        assert_eq!(sources.default_key_file, Some(PathBuf::from("/home/op/.config/sops/age/keys.txt")));
        let sources =
            IdentitySources::from_lookup(vars(&[("HOME", "/home/op"), ("XDG_CONFIG_HOME", "/xdg")]));
        assert_eq!(sources.default_key_file, Some(PathBuf::from("/xdg/sops/age/keys.txt")));
        assert!(sources.key_file.is_none() && sources.key.is_none());
    }

    #[test]
    fn a_secret_key_given_as_recipient_is_refused_without_echoing_it() {
        let generated = generate_identity();
        let error = parse_recipient(generated.secret_key.expose()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("secret key"), "{message}");
        assert!(!message.contains(generated.secret_key.expose()));
    }

    #[test]
    fn invalid_recipients_are_named_with_a_reason() {
        let error = parse_recipient("age1notakey").unwrap_err().to_string();
        assert!(error.contains("age1notakey") && error.contains("Bech32"), "{error}");
        let error = parse_recipient("ssh-ed25519 AAAA").unwrap_err().to_string();
        assert!(error.contains("starts with `age1`"), "{error}");
    }
}
