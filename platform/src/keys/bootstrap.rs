//! An environment's first key (`keys new`) and restoring a key from its backup (`keys
//! restore`, reading what `keys get` printed).
//!
//! `keys new` makes the private key durable before the public key is written anywhere: the
//! local key file first (and the key store: a key store file, or a `flux` target's decryption
//! Secret), then env.toml, so a crash in between leaves at most an unused key in the key file
//! (and the store) and a rerun starts over.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::OffsetDateTime;

use super::{KeyStore, KeysError, secrets_files};
use crate::drivers::kube::{NewKey, StoredKey};
use crate::load::environment::ENVIRONMENTS_DIR;
use crate::secrets::{
    AppendOutcome, AtomicWriteOptions, Identities, append_identity_to_key_file, decrypt_file,
    generate_identity, write_atomic,
};
use crate::sensitive::SecretString;

/// What [`new_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKeyReport {
    pub recipient: String,
    pub key_file: PathBuf,
    /// The key store that got the key too: a key store file (relative to the root), or the
    /// decryption Secret of a `flux` target's cluster.
    pub key_store: Option<String>,
    /// env.toml, relative to the root.
    pub env_toml: PathBuf,
}

fn env_toml(root: &Path, environment: &str) -> PathBuf {
    root.join(ENVIRONMENTS_DIR).join(environment).join("env.toml")
}

fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_owned()
}

/// `keys new`: a key pair for an environment that has no recipient yet. env.toml is read as
/// plain TOML (it cannot be a valid environment before it lists a recipient).
pub async fn new_key(
    root: &Path,
    environment: &str,
    local_key_file: &Path,
    key_store: Option<&dyn KeyStore>,
) -> Result<NewKeyReport, KeysError> {
    let path = env_toml(root, environment);
    let text =
        std::fs::read_to_string(&path).map_err(|source| KeysError::ReadEnv { path: path.clone(), source })?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| KeysError::EnvToml { path: path.clone(), reason: e.message().to_owned() })?;
    let listed: Vec<String> = table
        .get("secrets")
        .and_then(|secrets| secrets.get("age_recipients"))
        .and_then(toml::Value::as_array)
        .map(|items| items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if !listed.is_empty() {
        return Err(KeysError::HasRecipients { environment: environment.to_owned(), recipients: listed });
    }
    let existing = secrets_files(root, environment)?;
    if !existing.is_empty() {
        return Err(KeysError::SecretsWithoutRecipients {
            environment: environment.to_owned(),
            files: existing.iter().map(|p| p.display().to_string()).collect(),
        });
    }
    if let Some(store) = key_store
        && let Some(held) = store.read().await?
    {
        return Err(KeysError::StoreNotEmpty {
            environment: environment.to_owned(),
            store: store.describe(),
            held: held.current.recipient,
        });
    }
    let generated = generate_identity();
    let recipient = generated.recipient.to_string();
    append_identity_to_key_file(local_key_file, &generated.key_file_entry())?;
    if let Some(store) = key_store {
        store
            .store(&NewKey {
                key: StoredKey { private_key: generated.secret_key.clone(), recipient: recipient.clone() },
                created: OffsetDateTime::now_utc(),
            })
            .await?;
    }
    let updated = set_recipients_text(&path, &text, std::slice::from_ref(&recipient))?;
    write_atomic(&path, updated.as_bytes(), &AtomicWriteOptions::default())
        .map_err(crate::secrets::SecretsError::from)?;
    Ok(NewKeyReport {
        recipient,
        key_file: local_key_file.to_owned(),
        key_store: key_store.map(|store| match store.file() {
            Some(file) => relative(root, file).display().to_string(),
            None => store.describe(),
        }),
        env_toml: relative(root, &path),
    })
}

/// env.toml's text with `[secrets] age_recipients` set to `recipients`: the array replaced
/// when there is one, else the key added under `[secrets]`, else the table appended. The
/// result must parse to the original with only that key changed.
pub fn set_recipients_text(path: &Path, text: &str, recipients: &[String]) -> Result<String, KeysError> {
    let fail = |reason: &str| KeysError::EnvToml { path: path.to_owned(), reason: reason.to_owned() };
    let array = format!("[{}]", recipients.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", "));
    let has_array = regex::Regex::new(r"(?m)^[ \t]*age_recipients[ \t]*=").expect("valid").is_match(text);
    let updated = if has_array {
        return super::update_recipients_text(path, text, recipients);
    } else if let Some(header) =
        regex::Regex::new(r"(?m)^[ \t]*\[secrets\][ \t]*(#.*)?$").expect("valid").find(text)
    {
        format!("{}\nage_recipients = {array}{}", &text[..header.end()], &text[header.end()..])
    } else {
        let separator = if text.is_empty() || text.ends_with("\n\n") {
            ""
        } else if text.ends_with('\n') {
            "\n"
        } else {
            "\n\n"
        };
        format!("{text}{separator}[secrets]\nage_recipients = {array}\n")
    };
    let mut expected: toml::Table =
        toml::from_str(text).map_err(|e| fail(&format!("not valid TOML: {}", e.message())))?;
    let found: toml::Table = toml::from_str(&updated)
        .map_err(|_| fail("adding `age_recipients` would not be valid TOML; add it by hand"))?;
    let secrets = expected.entry("secrets").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(secrets) = secrets.as_table_mut() else {
        return Err(fail("`secrets` is not a table"));
    };
    secrets.insert(
        "age_recipients".to_owned(),
        toml::Value::Array(recipients.iter().map(|r| toml::Value::String(r.clone())).collect()),
    );
    if expected != found {
        return Err(fail("adding `age_recipients` would change other settings; add it by hand"));
    }
    Ok(updated)
}

/// What `keys get` printed.
#[derive(Deserialize)]
struct Backup {
    environment: String,
    public_key: String,
    private_key: String,
}

/// What [`restore_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub recipient: String,
    pub key_file: AppendOutcome,
    /// Whether the key store already held the key.
    pub store_had_it: bool,
    /// The secrets files the key was checked to decrypt.
    pub files: usize,
}

/// `keys restore`: the backup document (`keys get`'s JSON) into the local key file and the key
/// store, after checking that its key is the environment's: env.toml lists it and it decrypts
/// every secrets file. Errors never contain the key.
pub async fn restore_key(
    root: &Path,
    environment: &str,
    recipients: &[String],
    backup: &SecretString,
    local_key_file: &Path,
    store: &dyn KeyStore,
) -> Result<RestoreReport, KeysError> {
    let invalid = |reason: &str| KeysError::Backup { reason: reason.to_owned() };
    // serde_json's messages quote no input values, only positions and expectations.
    let backup: Backup = serde_json::from_str(backup.expose())
        .map_err(|e| invalid(&format!("not a `keys get` document ({e})")))?;
    let private_key = SecretString::new(backup.private_key);
    if backup.environment != environment {
        return Err(invalid(&format!(
            "it is the backup of environment `{}`, not `{environment}`",
            backup.environment
        )));
    }
    let identities = Identities::from_key_text("the backup", &private_key)
        .map_err(|_| invalid("its private_key is not an age identity"))?;
    if identities.recipients() != [backup.public_key.clone()] {
        return Err(invalid("its private_key does not belong to its public_key"));
    }
    let recipient = backup.public_key;
    if !recipients.contains(&recipient) {
        return Err(invalid(&format!(
            "its key {recipient} is not in `age_recipients` of environments/{environment}/env.toml ({})",
            recipients.join(", ")
        )));
    }
    let files = secrets_files(root, environment)?;
    let undecryptable: Vec<(PathBuf, String)> = files
        .iter()
        .filter_map(|path| {
            decrypt_file(&root.join(path), &identities).err().map(|e| (path.clone(), e.to_string()))
        })
        .collect();
    if !undecryptable.is_empty() {
        return Err(KeysError::Undecryptable { environment: environment.to_owned(), files: undecryptable });
    }
    let stored = store.read().await?;
    let store_had_it = match &stored {
        Some(keys) if keys.current.recipient == recipient => true,
        Some(keys) => {
            return Err(KeysError::StoreHoldsAnother {
                store: store.describe(),
                held: keys.current.recipient.clone(),
                restoring: recipient,
            });
        }
        None => false,
    };
    let entry = SecretString::new(format!("# public key: {recipient}\n{}\n", private_key.expose()));
    let key_file = append_identity_to_key_file(local_key_file, &entry)?;
    if !store_had_it {
        store
            .store(&NewKey {
                key: StoredKey { private_key: private_key.clone(), recipient: recipient.clone() },
                created: OffsetDateTime::now_utc(),
            })
            .await?;
    }
    Ok(RestoreReport { recipient, key_file, store_had_it, files: files.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "age1r4mc8zq2d963s67v43vzzpadce3wgxd8253gke6lm9a3udr87syssxgqkr";

    #[test]
    fn recipients_are_added_under_secrets_or_in_a_new_table() {
        let path = Path::new("env.toml");
        let with_table = "core = \"example\"\n\n[secrets] # keys\n\n[labels]\na = \"b\"\n";
        assert_eq!(
            set_recipients_text(path, with_table, &[KEY.to_owned()]).unwrap(),
            format!(
                "core = \"example\"\n\n[secrets] # keys\nage_recipients = [\"{KEY}\"]\n\n[labels]\na = \"b\"\n"
            )
        );
        let without = "core = \"example\"\n";
        assert_eq!(
            set_recipients_text(path, without, &[KEY.to_owned()]).unwrap(),
            format!("core = \"example\"\n\n[secrets]\nage_recipients = [\"{KEY}\"]\n")
        );
        let empty_array = "[secrets]\nage_recipients = []\n";
        assert_eq!(
            set_recipients_text(path, empty_array, &[KEY.to_owned()]).unwrap(),
            format!("[secrets]\nage_recipients = [\"{KEY}\"]\n")
        );
        // A dotted key elsewhere that would make the edit change other settings is refused.
        let dotted = "secrets.other = 1\n";
        assert!(set_recipients_text(path, dotted, &[KEY.to_owned()]).is_err());
    }
}
