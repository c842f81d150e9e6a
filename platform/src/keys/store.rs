//! The key store behind a small trait, so the rotation works the same against a cluster and a
//! local file (and an in-memory store in tests). [`KubeKeyStore`] keeps the key in the
//! environment's Secret (see `drivers::kube` for its layout and optimistic concurrency);
//! [`FileKeyStore`] keeps it in the `directory` target's key store file, an age key file in
//! `age-keygen`'s format whose last key is the current one and whose earlier key, during a
//! rotation, is the previous one. Retiring rewrites that file atomically without the old
//! entries, keeping every other line (the header comment of the demo key, for one).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use futures::future::BoxFuture;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::KeysError;
use crate::drivers::kube::{
    self, ApplyOutcome, KeyStoreLocation, NewKey, StoredKey, StoredKeys, read_keys, retire_previous_key,
    store_current_key,
};
use crate::secrets::{AtomicWriteOptions, append_identity_to_key_file, write_atomic};
use crate::sensitive::SecretString;

/// Where an environment's private key is kept. `store` keeps the former current key as the
/// previous one (and refuses while a previous key is still kept); `retire_previous` drops it.
pub trait KeyStore: Send + Sync {
    /// The store in messages: `secret opus-system/opus-age-keys`, a file path.
    fn describe(&self) -> String;
    /// The keys, or `None` when the store holds none yet.
    fn read(&self) -> BoxFuture<'_, Result<Option<StoredKeys>, KeysError>>;
    fn store<'a>(&'a self, new: &'a NewKey) -> BoxFuture<'a, Result<ApplyOutcome, KeysError>>;
    fn retire_previous(&self) -> BoxFuture<'_, Result<ApplyOutcome, KeysError>>;
    /// The file the store lives in, when it is a local file (for `rotate-keys --commit`).
    fn file(&self) -> Option<&Path> {
        None
    }
}

/// The key store Secret in a cluster.
pub struct KubeKeyStore {
    pub client: ::kube::Client,
    pub location: KeyStoreLocation,
}

impl KubeKeyStore {
    fn error(&self, source: kube::KubeError) -> KeysError {
        KeysError::Kube { store: self.describe(), source: Box::new(source) }
    }
}

impl KeyStore for KubeKeyStore {
    fn describe(&self) -> String {
        format!("secret {}/{}", self.location.namespace, self.location.name)
    }

    fn read(&self) -> BoxFuture<'_, Result<Option<StoredKeys>, KeysError>> {
        Box::pin(async move { read_keys(&self.client, &self.location).await.map_err(|e| self.error(e)) })
    }

    fn store<'a>(&'a self, new: &'a NewKey) -> BoxFuture<'a, Result<ApplyOutcome, KeysError>> {
        Box::pin(async move {
            store_current_key(&self.client, &self.location, new).await.map_err(|e| match e {
                kube::KubeError::RotationInProgress { .. } => {
                    KeysError::RotationInProgress { store: self.describe() }
                }
                other => self.error(other),
            })
        })
    }

    fn retire_previous(&self) -> BoxFuture<'_, Result<ApplyOutcome, KeysError>> {
        Box::pin(
            async move { retire_previous_key(&self.client, &self.location).await.map_err(|e| self.error(e)) },
        )
    }
}

/// A local key store file (the `directory` target's `key_store`).
pub struct FileKeyStore {
    path: PathBuf,
}

/// One key of a key file: its line, the `# created:` / `# public key:` comment lines right
/// above it, and what they say.
struct Entry {
    lines: Vec<usize>,
    key: StoredKey,
    created: Option<OffsetDateTime>,
}

impl FileKeyStore {
    pub fn new(path: impl Into<PathBuf>) -> FileKeyStore {
        FileKeyStore { path: path.into() }
    }

    fn io_error(&self) -> impl Fn(std::io::Error) -> KeysError + '_ {
        move |source| KeysError::StoreFile { path: self.path.clone(), source }
    }

    /// The file's text and its entries; `None` when the file does not exist.
    fn load(&self) -> Result<Option<(SecretString, Vec<Entry>)>, KeysError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => SecretString::new(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.io_error()(error)),
        };
        let mut entries = Vec::new();
        let mut comments: Vec<usize> = Vec::new();
        let mut created = None;
        for (index, line) in text.expose().lines().enumerate() {
            let trimmed = line.trim();
            if let Some(time) = trimmed.strip_prefix("# created:") {
                comments.push(index);
                created = OffsetDateTime::parse(time.trim(), &Rfc3339).ok();
            } else if trimmed.starts_with("# public key:") {
                comments.push(index);
            } else if trimmed.is_empty() || trimmed.starts_with('#') {
                comments.clear();
                created = None;
            } else {
                let identity = age::x25519::Identity::from_str(trimmed).map_err(|_| {
                    KeysError::Secrets(crate::secrets::SecretsError::InvalidIdentity {
                        location: self.path.display().to_string(),
                        line: index + 1,
                    })
                })?;
                let mut lines = std::mem::take(&mut comments);
                lines.push(index);
                entries.push(Entry {
                    lines,
                    key: StoredKey {
                        private_key: SecretString::new(trimmed.to_owned()),
                        recipient: identity.to_public().to_string(),
                    },
                    created: created.take(),
                });
            }
        }
        Ok(Some((text, entries)))
    }
}

impl KeyStore for FileKeyStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn read(&self) -> BoxFuture<'_, Result<Option<StoredKeys>, KeysError>> {
        Box::pin(async move {
            let Some((_, mut entries)) = self.load()? else {
                return Ok(None);
            };
            let Some(current) = entries.pop() else {
                return Ok(None);
            };
            Ok(Some(StoredKeys {
                current: current.key,
                created: current.created,
                previous: entries.pop().map(|entry| entry.key),
            }))
        })
    }

    fn store<'a>(&'a self, new: &'a NewKey) -> BoxFuture<'a, Result<ApplyOutcome, KeysError>> {
        Box::pin(async move {
            let entries = self.load()?.map(|(_, entries)| entries).unwrap_or_default();
            if entries.iter().any(|entry| entry.key.recipient == new.key.recipient) {
                return Ok(ApplyOutcome::Unchanged);
            }
            if entries.len() > 1 {
                return Err(KeysError::RotationInProgress { store: self.describe() });
            }
            // Appends under a lock, fsyncs, never rewrites the key already there.
            append_identity_to_key_file(&self.path, &new.key.private_key)?;
            Ok(if entries.is_empty() { ApplyOutcome::Created } else { ApplyOutcome::Changed })
        })
    }

    fn retire_previous(&self) -> BoxFuture<'_, Result<ApplyOutcome, KeysError>> {
        Box::pin(async move {
            let Some((text, entries)) = self.load()? else {
                return Ok(ApplyOutcome::Unchanged);
            };
            if entries.len() < 2 {
                return Ok(ApplyOutcome::Unchanged);
            }
            let dropped: Vec<usize> =
                entries[..entries.len() - 1].iter().flat_map(|entry| entry.lines.iter().copied()).collect();
            let kept: Vec<&str> = text
                .expose()
                .lines()
                .enumerate()
                .filter(|(index, _)| !dropped.contains(index))
                .map(|(_, line)| line)
                .collect();
            let kept = SecretString::new(kept.join("\n") + "\n");
            write_atomic(&self.path, kept.expose().as_bytes(), &AtomicWriteOptions::default())
                .map_err(crate::secrets::SecretsError::from)?;
            Ok(ApplyOutcome::Changed)
        })
    }

    fn file(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::kube::mock::{MockServer, json_response, status_response};
    use crate::secrets::generate_identity;
    use base64::Engine as _;
    use serde_json::json;

    const PATH: &str = "/api/v1/namespaces/opus-system/secrets/opus-age-keys";

    fn new_key() -> NewKey {
        let generated = generate_identity();
        NewKey {
            key: StoredKey {
                private_key: generated.secret_key.clone(),
                recipient: generated.recipient.to_string(),
            },
            created: OffsetDateTime::now_utc(),
        }
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn kube_store(client: ::kube::Client) -> KubeKeyStore {
        KubeKeyStore { client, location: KeyStoreLocation::default() }
    }

    #[tokio::test]
    async fn kube_store_reads_the_secret_through_the_trait() {
        let (client, mut server) = MockServer::start();
        let old = new_key();
        let body = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "opus-age-keys", "namespace": "opus-system", "resourceVersion": "3"},
            "data": {
                "current.agekey": b64(old.key.private_key.expose()),
                "current.recipient": b64(&old.key.recipient),
            },
        });
        let read = tokio::spawn(async move { kube_store(client).read().await });
        server.expect("GET", PATH).await.respond(json_response(200, body));
        let keys = server.finish(read).await.unwrap().unwrap();
        assert_eq!(keys.current, old.key);
        assert!(keys.previous.is_none());
    }

    #[tokio::test]
    async fn kube_store_refusal_during_a_rotation_names_the_store() {
        let (client, mut server) = MockServer::start();
        let (old, older) = (new_key(), new_key());
        let body = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "opus-age-keys", "namespace": "opus-system", "resourceVersion": "3"},
            "data": {
                "current.agekey": b64(old.key.private_key.expose()),
                "current.recipient": b64(&old.key.recipient),
                "previous.agekey": b64(older.key.private_key.expose()),
                "previous.recipient": b64(&older.key.recipient),
            },
        });
        let store = tokio::spawn(async move {
            let new = new_key();
            kube_store(client).store(&new).await
        });
        server.expect("GET", PATH).await.respond(json_response(200, body));
        let error = server.finish(store).await.unwrap_err();
        assert!(
            matches!(&error, KeysError::RotationInProgress { store } if store == "secret opus-system/opus-age-keys")
        );
    }

    #[tokio::test]
    async fn kube_store_then_retire_sends_the_expected_writes() {
        let (client, mut server) = MockServer::start();
        let old = new_key();
        let new = new_key();
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "opus-age-keys", "namespace": "opus-system", "resourceVersion": "7"},
            "data": {
                "current.agekey": b64(old.key.private_key.expose()),
                "current.recipient": b64(&old.key.recipient),
            },
        });
        let new_for_task = new.clone();
        let task = tokio::spawn(async move {
            let store = kube_store(client);
            let stored = store.store(&new_for_task).await?;
            let retired = store.retire_previous().await?;
            Ok::<_, KeysError>((stored, retired))
        });
        server.expect("GET", PATH).await.respond(json_response(200, secret));
        let update = server.expect("PUT", PATH).await;
        let mut body = update.json_body();
        assert_eq!(body["data"]["previous.recipient"], json!(b64(&old.key.recipient)));
        assert_eq!(body["data"]["current.recipient"], json!(b64(&new.key.recipient)));
        body["metadata"]["resourceVersion"] = json!("8");
        update.respond(json_response(200, body.clone()));
        server.expect("GET", PATH).await.respond(json_response(200, body));
        let retire = server.expect("PUT", PATH).await;
        let retired_body = retire.json_body();
        assert!(retired_body["data"].get("previous.agekey").is_none());
        assert_eq!(retired_body["data"]["current.agekey"], json!(b64(new.key.private_key.expose())));
        retire.respond(json_response(200, retired_body));
        let (stored, retired) = server.finish(task).await.unwrap();
        assert_eq!((stored, retired), (ApplyOutcome::Changed, ApplyOutcome::Changed));
    }

    #[tokio::test]
    async fn kube_store_errors_never_quote_the_key() {
        let (client, mut server) = MockServer::start();
        let new = new_key();
        let canary = new.key.private_key.expose().to_owned();
        let task = tokio::spawn(async move { kube_store(client).store(&new).await });
        server.expect("GET", PATH).await.respond(status_response(404, "NotFound", "not found"));
        server.expect("POST", "/api/v1/namespaces/opus-system/secrets").await.respond(status_response(
            422,
            "Invalid",
            &format!("bad {canary}"),
        ));
        let error = server.finish(task).await.unwrap_err();
        let shown =
            format!("{error} {error:?} {:?}", std::error::Error::source(&error).map(ToString::to_string));
        assert!(!shown.contains(&canary), "{shown}");
    }

    const HEADER: &str = "# DEMO KEY: header comment\n# second header line\n";

    fn file_with_key(dir: &Path, key: &NewKey) -> PathBuf {
        let path = dir.join("demo.agekey");
        std::fs::write(
            &path,
            format!(
                "{HEADER}# created: 2024-01-01T00:00:00Z\n# public key: {}\n{}\n",
                key.key.recipient,
                key.key.private_key.expose()
            ),
        )
        .unwrap();
        path
    }

    #[tokio::test]
    async fn file_store_keeps_the_old_key_until_retired_and_then_only_the_header_and_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (new_key(), new_key());
        let path = file_with_key(dir.path(), &old);
        let store = FileKeyStore::new(&path);
        let read = store.read().await.unwrap().unwrap();
        assert_eq!(read.current, old.key);
        assert_eq!(read.created, Some(OffsetDateTime::parse("2024-01-01T00:00:00Z", &Rfc3339).unwrap()));

        assert_eq!(store.store(&new).await.unwrap(), ApplyOutcome::Changed);
        assert_eq!(store.store(&new).await.unwrap(), ApplyOutcome::Unchanged);
        let read = store.read().await.unwrap().unwrap();
        assert_eq!(read.current, new.key);
        assert_eq!(read.previous, Some(old.key.clone()));
        let third = new_key();
        assert!(matches!(store.store(&third).await, Err(KeysError::RotationInProgress { .. })));

        assert_eq!(store.retire_previous().await.unwrap(), ApplyOutcome::Changed);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER), "{text}");
        assert!(!text.contains(old.key.private_key.expose()) && !text.contains(&old.key.recipient));
        assert!(text.contains(new.key.private_key.expose()) && text.contains(&new.key.recipient));
        let read = store.read().await.unwrap().unwrap();
        assert_eq!((read.current, read.previous), (new.key, None));
        assert_eq!(store.retire_previous().await.unwrap(), ApplyOutcome::Unchanged);
    }

    #[tokio::test]
    async fn missing_file_store_reads_as_none_and_is_created_on_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(dir.path().join("keys/store.agekey"));
        assert!(store.read().await.unwrap().is_none());
        let key = new_key();
        assert_eq!(store.store(&key).await.unwrap(), ApplyOutcome::Created);
        assert_eq!(store.read().await.unwrap().unwrap().current, key.key);
    }
}
