//! The key store: the environment's age key pair kept in a Secret in the cluster (by default
//! `opus-system/opus-age-keys`). The Secret holds `current.agekey` (the private key),
//! `current.recipient` (the public key) and `current.created` (RFC 3339); during a rotation it
//! also holds `previous.agekey` and `previous.recipient`, so files not yet re-encrypted stay
//! readable until the rotation is verified and the previous key retired.
//!
//! Updates are read-modify-write with optimistic concurrency: the write carries the
//! `resourceVersion` that was read, so the API server rejects it (409) when anyone else wrote in
//! between, and two rotations can never interleave. The Secret is handled as raw JSON and
//! decoded only into [`SecretString`]s; it is never formatted.

use base64::Engine as _;
use kube::Client;
use kube::core::{
    params::{GetParams, PostParams},
    request::Request,
};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{ApplyOutcome, KubeError, ObjectRef, client_error, send_raw, status_error};
use crate::sensitive::{Redactor, SecretString};

const CURRENT_KEY: &str = "current.agekey";
const CURRENT_RECIPIENT: &str = "current.recipient";
const CURRENT_CREATED: &str = "current.created";
const PREVIOUS_KEY: &str = "previous.agekey";
const PREVIOUS_RECIPIENT: &str = "previous.recipient";

/// Where the key store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStoreLocation {
    pub namespace: String,
    pub name: String,
}

impl Default for KeyStoreLocation {
    fn default() -> KeyStoreLocation {
        KeyStoreLocation { namespace: "opus-system".to_owned(), name: "opus-age-keys".to_owned() }
    }
}

impl KeyStoreLocation {
    fn object(&self) -> ObjectRef {
        ObjectRef::new("Secret", Some(&self.namespace), &self.name)
    }
}

/// One age key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The `AGE-SECRET-KEY-1...` identity.
    pub private_key: SecretString,
    /// The `age1...` recipient.
    pub recipient: String,
}

/// The content of the key store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKeys {
    pub current: StoredKey,
    /// When the current key was stored; `None` when the Secret lacks `current.created`.
    pub created: Option<OffsetDateTime>,
    /// The key being rotated away from, until it is retired.
    pub previous: Option<StoredKey>,
}

/// A key to store as the new current key.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key: StoredKey,
    pub created: OffsetDateTime,
}

/// Reads the keys; `None` when the key store Secret does not exist.
pub async fn read_keys(
    client: &Client,
    location: &KeyStoreLocation,
) -> Result<Option<StoredKeys>, KubeError> {
    Ok(read_secret(client, location).await?.map(|read| read.keys))
}

/// Stores `new` as the current key. The former current key becomes the previous one; when the
/// Secret does not exist it is created with the current key only. Storing the key that is
/// already current changes nothing, so a resumed rotation can call this again. Refuses with
/// [`KubeError::RotationInProgress`] while a previous key is still stored, because replacing it
/// could lose the only key that opens files not yet re-encrypted.
pub async fn store_current_key(
    client: &Client,
    location: &KeyStoreLocation,
    new: &NewKey,
) -> Result<ApplyOutcome, KubeError> {
    let object = location.object();
    let mut redactor = Redactor::new();
    redactor.add(&new.key.private_key);
    let created = new.created.format(&Rfc3339).map_err(|error| KubeError::MalformedKeyStore {
        object: object.clone(),
        problem: format!("the creation time of the new key cannot be written: {error}"),
    })?;

    let Some(read) = read_secret(client, location).await? else {
        let mut data = Map::new();
        insert_encoded(&mut data, CURRENT_KEY, new.key.private_key.expose(), &mut redactor);
        insert_encoded(&mut data, CURRENT_RECIPIENT, &new.key.recipient, &mut redactor);
        insert_encoded(&mut data, CURRENT_CREATED, &created, &mut redactor);
        let body = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": location.name,
                "namespace": location.namespace,
                "labels": { "app.kubernetes.io/managed-by": "opus-deploy" },
            },
            "type": "Opaque",
            "data": data,
        });
        let request = secrets_request(location)
            .create(&PostParams::default(), to_body(&body))
            .map_err(|error| build_error("create", &object, error))?;
        write(client, &object, request, "create", &redactor).await?;
        return Ok(ApplyOutcome::Created);
    };

    redactor.add(&read.keys.current.private_key);
    if read.keys.current == new.key {
        return Ok(ApplyOutcome::Unchanged);
    }
    if let Some(previous) = &read.keys.previous {
        redactor.add(&previous.private_key);
        return Err(KubeError::RotationInProgress { object });
    }
    let mut data = read.data;
    insert_encoded(&mut data, PREVIOUS_KEY, read.keys.current.private_key.expose(), &mut redactor);
    insert_encoded(&mut data, PREVIOUS_RECIPIENT, &read.keys.current.recipient, &mut redactor);
    insert_encoded(&mut data, CURRENT_KEY, new.key.private_key.expose(), &mut redactor);
    insert_encoded(&mut data, CURRENT_RECIPIENT, &new.key.recipient, &mut redactor);
    insert_encoded(&mut data, CURRENT_CREATED, &created, &mut redactor);
    replace(client, location, read.secret, data, &redactor).await?;
    Ok(ApplyOutcome::Changed)
}

/// Removes the previous key once a rotation is verified. Nothing to do (no Secret, or no
/// previous key) is [`ApplyOutcome::Unchanged`].
pub async fn retire_previous_key(
    client: &Client,
    location: &KeyStoreLocation,
) -> Result<ApplyOutcome, KubeError> {
    let Some(read) = read_secret(client, location).await? else {
        return Ok(ApplyOutcome::Unchanged);
    };
    let mut redactor = Redactor::new();
    redactor.add(&read.keys.current.private_key);
    let Some(previous) = &read.keys.previous else {
        return Ok(ApplyOutcome::Unchanged);
    };
    redactor.add(&previous.private_key);
    let mut data = read.data;
    data.remove(PREVIOUS_KEY);
    data.remove(PREVIOUS_RECIPIENT);
    replace(client, location, read.secret, data, &redactor).await?;
    Ok(ApplyOutcome::Changed)
}

/// The Secret as read: its JSON (for the write back), its data and the decoded keys.
struct ReadSecret {
    secret: Value,
    data: Map<String, Value>,
    keys: StoredKeys,
}

async fn read_secret(client: &Client, location: &KeyStoreLocation) -> Result<Option<ReadSecret>, KubeError> {
    let object = location.object();
    let request = secrets_request(location)
        .get(&location.name, &GetParams::default())
        .map_err(|error| build_error("read", &object, error))?;
    let response = send_raw(client, request)
        .await
        .map_err(|error| client_error("read", &object, error, &Redactor::new()))?;
    if response.status == http::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status.is_success() {
        return Err(status_error("read", &object, &response, &Redactor::new()));
    }
    // The serde error is not shown: it could quote the Secret's content.
    let mut secret: Value =
        serde_json::from_slice(&response.body).map_err(|_| KubeError::UnexpectedResponse {
            action: "read",
            object: object.to_string(),
            detail: "the body is not JSON".to_owned(),
        })?;
    let data = match secret.get_mut("data").map(Value::take) {
        Some(Value::Object(data)) => data,
        _ => Map::new(),
    };
    let keys = decode_keys(&object, &data)?;
    Ok(Some(ReadSecret { secret, data, keys }))
}

fn decode_keys(object: &ObjectRef, data: &Map<String, Value>) -> Result<StoredKeys, KubeError> {
    let current = decode_pair(object, data, CURRENT_KEY, CURRENT_RECIPIENT)?.ok_or_else(|| {
        KubeError::MalformedKeyStore {
            object: object.clone(),
            problem: format!("`{CURRENT_KEY}` or `{CURRENT_RECIPIENT}` is missing"),
        }
    })?;
    let previous = decode_pair(object, data, PREVIOUS_KEY, PREVIOUS_RECIPIENT)?;
    let created = match decode(object, data, CURRENT_CREATED)? {
        None => None,
        Some(text) => Some(OffsetDateTime::parse(text.expose(), &Rfc3339).map_err(|_| {
            KubeError::MalformedKeyStore {
                object: object.clone(),
                problem: format!("`{CURRENT_CREATED}` is not an RFC 3339 time"),
            }
        })?),
    };
    Ok(StoredKeys { current, created, previous })
}

/// Both halves of a key pair, or `None` when neither is stored.
fn decode_pair(
    object: &ObjectRef,
    data: &Map<String, Value>,
    key_name: &str,
    recipient_name: &str,
) -> Result<Option<StoredKey>, KubeError> {
    match (decode(object, data, key_name)?, decode(object, data, recipient_name)?) {
        (Some(private_key), Some(recipient)) => {
            Ok(Some(StoredKey { private_key, recipient: recipient.expose().trim().to_owned() }))
        }
        (None, None) => Ok(None),
        _ => Err(KubeError::MalformedKeyStore {
            object: object.clone(),
            problem: format!("`{key_name}` and `{recipient_name}` must be stored together"),
        }),
    }
}

fn decode(
    object: &ObjectRef,
    data: &Map<String, Value>,
    name: &str,
) -> Result<Option<SecretString>, KubeError> {
    let Some(value) = data.get(name) else {
        return Ok(None);
    };
    let malformed = || KubeError::MalformedKeyStore {
        object: object.clone(),
        problem: format!("`{name}` is not base64-encoded UTF-8 text"),
    };
    let encoded = value.as_str().ok_or_else(malformed)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| malformed())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    Ok(Some(SecretString::new(text)))
}

fn insert_encoded(data: &mut Map<String, Value>, name: &str, value: &str, redactor: &mut Redactor) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    redactor.add(&SecretString::new(encoded.clone()));
    data.insert(name.to_owned(), Value::String(encoded));
}

/// Writes the Secret back with new data, guarded by the resourceVersion it was read at.
async fn replace(
    client: &Client,
    location: &KeyStoreLocation,
    mut secret: Value,
    data: Map<String, Value>,
    redactor: &Redactor,
) -> Result<(), KubeError> {
    let object = location.object();
    if secret.pointer("/metadata/resourceVersion").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(KubeError::UnexpectedResponse {
            action: "read",
            object: object.to_string(),
            detail: "the Secret has no metadata.resourceVersion".to_owned(),
        });
    }
    if let Some(metadata) = secret.get_mut("metadata").and_then(Value::as_object_mut) {
        // Left out, managedFields stay as the server has them.
        metadata.remove("managedFields");
        let labels = metadata.entry("labels").or_insert_with(|| Value::Object(Map::new()));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert("app.kubernetes.io/managed-by".to_owned(), Value::String("opus-deploy".to_owned()));
        }
    }
    secret["data"] = Value::Object(data);
    let request = secrets_request(location)
        .replace(&location.name, &PostParams::default(), to_body(&secret))
        .map_err(|error| build_error("update", &object, error))?;
    write(client, &object, request, "update", redactor).await
}

async fn write(
    client: &Client,
    object: &ObjectRef,
    request: http::Request<Vec<u8>>,
    action: &'static str,
    redactor: &Redactor,
) -> Result<(), KubeError> {
    let response =
        send_raw(client, request).await.map_err(|error| client_error(action, object, error, redactor))?;
    if response.status == http::StatusCode::CONFLICT {
        return Err(KubeError::ConcurrentUpdate { object: object.clone() });
    }
    if !response.status.is_success() {
        return Err(status_error(action, object, &response, redactor));
    }
    Ok(())
}

fn secrets_request(location: &KeyStoreLocation) -> Request {
    Request::new(format!("/api/v1/namespaces/{}/secrets", location.namespace))
}

fn to_body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a JSON value always serializes")
}

fn build_error(action: &'static str, object: &ObjectRef, error: kube::core::request::Error) -> KubeError {
    KubeError::UnexpectedResponse {
        action,
        object: object.to_string(),
        detail: format!("could not build the request: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::kube::mock::{MockServer, json_response, status_response};

    const PATH: &str = "/api/v1/namespaces/opus-system/secrets/opus-age-keys";
    const OLD_KEY: &str = "AGE-SECRET-KEY-1CANARYOLD0000000000000000000000000000000000000000000000";
    const NEW_KEY: &str = "AGE-SECRET-KEY-1CANARYNEW0000000000000000000000000000000000000000000000";

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn unb64(value: &Value) -> String {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap()).unwrap())
            .unwrap()
    }

    fn stored_secret(with_previous: bool) -> Value {
        let mut data = json!({
            "current.agekey": b64(OLD_KEY),
            "current.recipient": b64("age1old"),
            "current.created": b64("2024-05-01T10:00:00Z"),
        });
        if with_previous {
            data["previous.agekey"] = json!(b64("AGE-SECRET-KEY-1CANARYOLDER"));
            data["previous.recipient"] = json!(b64("age1older"));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "opus-age-keys",
                "namespace": "opus-system",
                "resourceVersion": "5",
                "labels": { "app.kubernetes.io/managed-by": "opus-deploy" },
                "managedFields": [{ "manager": "opus-deploy" }],
            },
            "type": "Opaque",
            "data": data,
        })
    }

    fn new_key() -> NewKey {
        NewKey {
            key: StoredKey { private_key: SecretString::new(NEW_KEY), recipient: "age1new".to_owned() },
            created: OffsetDateTime::parse("2024-06-01T12:00:00Z", &Rfc3339).unwrap(),
        }
    }

    #[tokio::test]
    async fn missing_key_store_reads_as_none() {
        let (client, mut server) = MockServer::start();
        let read = tokio::spawn(async move { read_keys(&client, &KeyStoreLocation::default()).await });
        server.expect("GET", PATH).await.respond(status_response(
            404,
            "NotFound",
            "secrets \"opus-age-keys\" not found",
        ));
        assert_eq!(server.finish(read).await.unwrap(), None);
    }

    #[tokio::test]
    async fn present_key_store_reads_current_and_previous_keys() {
        let (client, mut server) = MockServer::start();
        let read = tokio::spawn(async move { read_keys(&client, &KeyStoreLocation::default()).await });
        server.expect("GET", PATH).await.respond(json_response(200, stored_secret(true)));
        let keys = server.finish(read).await.unwrap().unwrap();
        assert_eq!(keys.current.private_key.expose(), OLD_KEY);
        assert_eq!(keys.current.recipient, "age1old");
        assert_eq!(keys.created, Some(OffsetDateTime::parse("2024-05-01T10:00:00Z", &Rfc3339).unwrap()));
        let previous = keys.previous.unwrap();
        assert_eq!(previous.private_key.expose(), "AGE-SECRET-KEY-1CANARYOLDER");
        assert_eq!(previous.recipient, "age1older");
    }

    #[tokio::test]
    async fn first_store_creates_the_labelled_secret() {
        let (client, mut server) = MockServer::start();
        let store = tokio::spawn(async move {
            store_current_key(&client, &KeyStoreLocation::default(), &new_key()).await
        });
        server.expect("GET", PATH).await.respond(status_response(404, "NotFound", "not found"));
        let create = server.expect("POST", "/api/v1/namespaces/opus-system/secrets").await;
        let body = create.json_body();
        assert_eq!(body["metadata"]["labels"]["app.kubernetes.io/managed-by"], "opus-deploy");
        assert_eq!(unb64(&body["data"]["current.agekey"]), NEW_KEY);
        assert_eq!(unb64(&body["data"]["current.recipient"]), "age1new");
        assert_eq!(unb64(&body["data"]["current.created"]), "2024-06-01T12:00:00Z");
        assert!(body["data"].get("previous.agekey").is_none());
        create.respond(json_response(201, body));
        assert_eq!(server.finish(store).await.unwrap(), ApplyOutcome::Created);
    }

    #[tokio::test]
    async fn storing_a_new_key_keeps_the_current_one_as_previous_at_the_read_version() {
        let (client, mut server) = MockServer::start();
        let store = tokio::spawn(async move {
            store_current_key(&client, &KeyStoreLocation::default(), &new_key()).await
        });
        server.expect("GET", PATH).await.respond(json_response(200, stored_secret(false)));
        let update = server.expect("PUT", PATH).await;
        let body = update.json_body();
        assert_eq!(body["metadata"]["resourceVersion"], "5");
        assert!(body["metadata"].get("managedFields").is_none());
        assert_eq!(unb64(&body["data"]["previous.agekey"]), OLD_KEY);
        assert_eq!(unb64(&body["data"]["previous.recipient"]), "age1old");
        assert_eq!(unb64(&body["data"]["current.agekey"]), NEW_KEY);
        assert_eq!(unb64(&body["data"]["current.recipient"]), "age1new");
        assert_eq!(unb64(&body["data"]["current.created"]), "2024-06-01T12:00:00Z");
        update.respond(json_response(200, body));
        assert_eq!(server.finish(store).await.unwrap(), ApplyOutcome::Changed);
    }

    #[tokio::test]
    async fn storing_the_current_key_again_writes_nothing() {
        let (client, mut server) = MockServer::start();
        let again = NewKey {
            key: StoredKey { private_key: SecretString::new(OLD_KEY), recipient: "age1old".to_owned() },
            created: OffsetDateTime::now_utc(),
        };
        let store =
            tokio::spawn(
                async move { store_current_key(&client, &KeyStoreLocation::default(), &again).await },
            );
        server.expect("GET", PATH).await.respond(json_response(200, stored_secret(false)));
        assert_eq!(server.finish(store).await.unwrap(), ApplyOutcome::Unchanged);
    }

    #[tokio::test]
    async fn storing_during_an_unfinished_rotation_is_refused() {
        let (client, mut server) = MockServer::start();
        let store = tokio::spawn(async move {
            store_current_key(&client, &KeyStoreLocation::default(), &new_key()).await
        });
        server.expect("GET", PATH).await.respond(json_response(200, stored_secret(true)));
        let error = server.finish(store).await.unwrap_err();
        assert!(matches!(error, KubeError::RotationInProgress { .. }), "{error:?}");
        assert!(error.to_string().starts_with("secret opus-system/opus-age-keys still holds a previous key"));
    }

    #[tokio::test]
    async fn retiring_removes_only_the_previous_key() {
        let (client, mut server) = MockServer::start();
        let retire =
            tokio::spawn(async move { retire_previous_key(&client, &KeyStoreLocation::default()).await });
        server.expect("GET", PATH).await.respond(json_response(200, stored_secret(true)));
        let update = server.expect("PUT", PATH).await;
        let body = update.json_body();
        assert_eq!(body["metadata"]["resourceVersion"], "5");
        let data = body["data"].as_object().unwrap();
        let mut names: Vec<&str> = data.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["current.agekey", "current.created", "current.recipient"]);
        assert_eq!(unb64(&data["current.agekey"]), OLD_KEY);
        update.respond(json_response(200, body));
        assert_eq!(server.finish(retire).await.unwrap(), ApplyOutcome::Changed);
    }

    #[tokio::test]
    async fn concurrent_rotation_is_reported_without_the_keys() {
        let (client, mut server) = MockServer::start();
        let store = tokio::spawn(async move {
            store_current_key(&client, &KeyStoreLocation::default(), &new_key()).await
        });
        server.expect("GET", PATH).await.respond(json_response(200, stored_secret(false)));
        server.expect("PUT", PATH).await.respond(status_response(
            409,
            "Conflict",
            "Operation cannot be fulfilled on secrets \"opus-age-keys\": the object has been modified",
        ));
        let error = server.finish(store).await.unwrap_err();
        assert!(matches!(error, KubeError::ConcurrentUpdate { .. }), "{error:?}");
        assert!(error.to_string().starts_with(
            "secret opus-system/opus-age-keys was changed by someone else while it was being updated"
        ));
        assert_no_canary(&error);
    }

    #[tokio::test]
    async fn server_message_quoting_a_key_is_redacted() {
        let (client, mut server) = MockServer::start();
        let store = tokio::spawn(async move {
            store_current_key(&client, &KeyStoreLocation::default(), &new_key()).await
        });
        server.expect("GET", PATH).await.respond(json_response(200, stored_secret(false)));
        server.expect("PUT", PATH).await.respond(status_response(
            422,
            "Invalid",
            &format!("bad value {NEW_KEY} / {} / {OLD_KEY}", b64(NEW_KEY)),
        ));
        let error = server.finish(store).await.unwrap_err();
        assert!(error.to_string().starts_with(
            "could not update secret opus-system/opus-age-keys: bad value (sensitive) / (sensitive) / (sensitive)"
        ), "{error}");
        assert_no_canary(&error);
    }

    fn assert_no_canary(error: &KubeError) {
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(!shown.contains(&b64(NEW_KEY)[..20]), "{shown}");
    }
}
