//! A small fake Kubernetes API server for the CLI tests: plain HTTP/1.1 on 127.0.0.1, one thread
//! per connection, every answer with `Content-Length` and `Connection: close`. It keeps objects
//! in memory by their REST path and speaks the shapes of the real API for what a deploy sends:
//!
//! - `GET /version`: Kubernetes 1.30.
//! - `GET` of an object: the stored object (or its `PartialObjectMetadata` when the `Accept`
//!   header asks for it, as kube-rs's metadata-only reads do), else a 404 `Status`.
//! - `GET` of a collection: a `<Kind>List` of the stored objects matching `labelSelector`
//!   (equality terms only), with `metadata.resourceVersion`; with the metadata-only `Accept`
//!   header, a `PartialObjectMetadataList` of their metadata (no data, as the real server).
//! - `PATCH` with `application/apply-patch+yaml` (server-side apply; kube-rs sends JSON, which
//!   is YAML): `fieldManager` is required, the body's name must be the URL's; the applied object
//!   replaces the stored one (the tests have one field manager) and `metadata.managedFields`
//!   holds that manager's `Apply` entry with the applied fields as `FieldsV1` (maps as
//!   `f:<key>`; a list is one leaf here, where the real server also lists its items). An apply
//!   that changes nothing keeps the object and its `resourceVersion`, as the real API server
//!   does; otherwise the object gets the next `resourceVersion` (201 when created, 200
//!   otherwise).
//! - `POST` to a collection: creates (201), or 409 `AlreadyExists`.
//! - `PUT` of an object: replaces at the same `resourceVersion` (409 `Conflict` otherwise).
//! - `DELETE` of an object: removes it.
//!
//! Objects can be seeded with [`FakeKube::insert`] (a default StorageClass is there from the
//! start). Every request is recorded (method, path, query, content type) for the test to assert
//! on. Dropping the server stops it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

/// How long a connection may stay silent before the server gives up on it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// The status code answered.
    pub status: u16,
}

impl Recorded {
    /// `POST`, `PUT`, `PATCH` or `DELETE`.
    pub fn is_mutating(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.method, self.path, self.status)
    }
}

#[derive(Debug, Default)]
struct State {
    /// Objects by their REST path (`/api/v1/namespaces/ns`).
    objects: BTreeMap<String, Value>,
    /// The last resourceVersion given out (the server's one counter, like etcd's revision).
    revision: u64,
    requests: Vec<Recorded>,
}

/// The running server.
pub struct FakeKube {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeKube {
    /// Starts the server on a free port of 127.0.0.1, with one default StorageClass.
    pub fn start() -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake API server");
        // Non-blocking accepts, so the thread can notice `stop` and end.
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let address = listener.local_addr().expect("the fake API server's address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(&listener, &state, &stop))
        };
        let server = FakeKube { address, state, stop, acceptor: Some(acceptor) };
        server.insert(
            "/apis/storage.k8s.io/v1/storageclasses/standard",
            json!({
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": "standard",
                    "annotations": { "storageclass.kubernetes.io/is-default-class": "true" },
                },
                "provisioner": "kubernetes.io/no-provisioner",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "WaitForFirstConsumer",
            }),
        );
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Writes a kubeconfig whose `context` reaches this server as an anonymous user.
    pub fn write_kubeconfig(&self, path: &std::path::Path, context: &str) {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: {context}\nclusters:\n- name: fake\n  cluster: {{ server: \"{}\" }}\ncontexts:\n- name: {context}\n  context: {{ cluster: fake, user: anonymous }}\nusers:\n- name: anonymous\n  user: {{}}\n",
                self.url()
            ),
        )
        .expect("write the kubeconfig");
    }

    /// Stores an object at its REST path, with the next resourceVersion.
    pub fn insert(&self, path: &str, mut object: Value) {
        let mut state = self.lock();
        state.revision += 1;
        let revision = state.revision;
        set_server_fields(&mut object, revision, None);
        state.objects.insert(path.to_owned(), object);
    }

    /// Removes the object at a REST path (what `kubectl delete` or `helm uninstall` would do
    /// behind the tool's back); returns whether there was one.
    pub fn remove(&self, path: &str) -> bool {
        self.lock().objects.remove(path).is_some()
    }

    /// The stored object at a REST path.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(listener: &TcpListener, state: &Arc<Mutex<State>>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let state = state.clone();
                std::thread::spawn(move || serve_connection(stream, &state));
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => {
                eprintln!("fake API server: accept failed: {error}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A parsed request.
struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// A response: status code and JSON body.
struct Response {
    status: u16,
    body: Value,
}

fn respond(status: u16, body: Value) -> Response {
    Response { status, body }
}

/// One request per connection: read it, answer, close.
fn serve_connection(stream: TcpStream, state: &Mutex<State>) {
    // An accepted socket may inherit the listener's non-blocking mode on some platforms.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut reader = BufReader::new(&stream);
    let response = match read_request(&mut reader) {
        Ok(Some(request)) => {
            let mut state = lock(state);
            let response = handle(&request, &mut state);
            state.requests.push(Recorded {
                method: request.method.clone(),
                path: request.path.clone(),
                query: request.query.clone(),
                content_type: request.header("content-type").map(str::to_owned),
                status: response.status,
            });
            response
        }
        // The client connected and closed without a request (a probe): nothing to answer.
        Ok(None) => return,
        Err(problem) => {
            eprintln!("fake API server: bad request: {problem}");
            status(400, "BadRequest", &problem, None)
        }
    };
    let body = serde_json::to_vec(&response.body).expect("serialize a response");
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason_phrase(response.status),
        body.len()
    );
    let mut stream = &stream;
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body))
        .and_then(|()| stream.flush());
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        _ => "Unknown",
    }
}

/// Reads the request line, the headers and the body (`Content-Length` or chunked).
fn read_request(reader: &mut impl BufRead) -> Result<Option<Request>, String> {
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(|e| format!("read the request line: {e}"))? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("malformed request line {line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("unsupported protocol {version}"));
    }
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).map_err(|e| format!("read a header: {e}"))? == 0 {
            return Err("the connection closed inside the headers".to_owned());
        }
        let header = header.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').ok_or_else(|| format!("malformed header {header:?}"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let header = |name: &str| headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(reader)?
    } else {
        let length = match header("content-length") {
            Some(length) => length.parse::<usize>().map_err(|_| format!("bad Content-Length {length:?}"))?,
            None => 0,
        };
        if length > MAX_BODY {
            return Err(format!("a body of {length} bytes is too large"));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).map_err(|e| format!("read the body: {e}"))?;
        body
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), parse_query(query)),
        None => (target, Vec::new()),
    };
    Ok(Some(Request { method, path, query, headers, body }))
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).map_err(|e| format!("read a chunk size: {e}"))?;
        let size = size.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        if body.len() + size > MAX_BODY {
            return Err("a chunked body too large".to_owned());
        }
        let mut chunk = vec![0; size + 2]; // and its CRLF
        reader.read_exact(&mut chunk).map_err(|e| format!("read a chunk: {e}"))?;
        if size == 0 {
            return Ok(body); // no trailers are sent by kube-rs
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding: `%XX` and `+` for a space.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let decoded = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (decoded, bytes[index]) {
            (Some(byte), _) => {
                out.push(byte);
                index += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                index += 1;
            }
            (None, byte) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `Status` object, as the API server answers errors.
fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    respond(code, body)
}

/// Where a REST path points.
struct Location {
    /// `""` for the core group.
    group: String,
    version: String,
    namespace: Option<String>,
    /// The plural (`namespaces`, `deployments`).
    resource: String,
    /// `None` for a collection.
    name: Option<String>,
    /// The collection's path (objects live at `<collection>/<name>`).
    collection: String,
}

fn locate(path: &str) -> Option<Location> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    if rest.iter().any(|segment| segment.is_empty()) {
        return None;
    }
    let prefix = path[..path.len() - rest.join("/").len()].trim_end_matches('/').to_owned();
    let (namespace, resource, name) = match rest {
        // A namespace itself is `namespaces/<name>`; namespaced objects are under it.
        ["namespaces", namespace, resource, tail @ ..] => match tail {
            [] => (Some(*namespace), *resource, None),
            [name] => (Some(*namespace), *resource, Some(*name)),
            _ => return None, // subresources are not served
        },
        [resource] => (None, *resource, None),
        [resource, name] => (None, *resource, Some(*name)),
        _ => return None,
    };
    let collection = match namespace {
        Some(namespace) => format!("{prefix}/namespaces/{namespace}/{resource}"),
        None => format!("{prefix}/{resource}"),
    };
    Some(Location {
        group: group.to_owned(),
        version: version.to_owned(),
        namespace: namespace.map(str::to_owned),
        resource: resource.to_owned(),
        name: name.map(str::to_owned),
        collection,
    })
}

impl Location {
    fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    fn object_path(&self, name: &str) -> String {
        format!("{}/{name}", self.collection)
    }

    /// The kind of the collection's objects, for list kinds (`DeploymentList`).
    fn kind(&self) -> String {
        match self.resource.as_str() {
            "storageclasses" => "StorageClass".to_owned(),
            "statefulsets" => "StatefulSet".to_owned(),
            "daemonsets" => "DaemonSet".to_owned(),
            "customresourcedefinitions" => "CustomResourceDefinition".to_owned(),
            "configmaps" => "ConfigMap".to_owned(),
            "serviceaccounts" => "ServiceAccount".to_owned(),
            plural => {
                let singular = plural
                    .strip_suffix("es")
                    .filter(|s| s.ends_with("ss"))
                    .unwrap_or_else(|| plural.strip_suffix('s').unwrap_or(plural));
                let mut chars = singular.chars();
                chars
                    .next()
                    .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            }
        }
    }

    fn not_found(&self, name: &str) -> Response {
        let resource = self.resource.clone();
        let qualified =
            if self.group.is_empty() { resource.clone() } else { format!("{resource}.{}", self.group) };
        status(
            404,
            "NotFound",
            &format!("{qualified} \"{name}\" not found"),
            Some(json!({ "name": name, "group": self.group, "kind": resource })),
        )
    }
}

/// The fields the server owns: resourceVersion, uid, creationTimestamp, and the namespace of a
/// namespaced object.
fn set_server_fields(object: &mut Value, revision: u64, previous: Option<&Value>) {
    let metadata = object
        .as_object_mut()
        .expect("an object")
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("metadata is an object");
    metadata.insert("resourceVersion".to_owned(), json!(revision.to_string()));
    let kept = |field: &str| previous.and_then(|p| p["metadata"].get(field)).cloned();
    metadata.insert(
        "uid".to_owned(),
        kept("uid").unwrap_or_else(|| json!(format!("00000000-0000-4000-8000-{revision:012}"))),
    );
    metadata.insert(
        "creationTimestamp".to_owned(),
        kept("creationTimestamp").unwrap_or_else(|| json!("2024-06-01T12:00:00Z")),
    );
}

/// An object without the fields the server sets, to compare what a client sent.
fn without_server_fields(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"] {
            metadata.remove(field);
        }
    }
    object
}

fn handle(request: &Request, state: &mut State) -> Response {
    if request.path == "/version" {
        return match request.method.as_str() {
            "GET" => respond(
                200,
                json!({
                    "major": "1",
                    "minor": "30",
                    "gitVersion": "v1.30.0",
                    "gitCommit": "7c48c2bd72b9bf5c44d21d7338cc7bea77d0ad2a",
                    "gitTreeState": "clean",
                    "buildDate": "2024-04-17T17:27:03Z",
                    "goVersion": "go1.22.2",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }),
            ),
            _ => method_not_allowed(request),
        };
    }
    let Some(location) = locate(&request.path) else {
        return status(404, "NotFound", "the server could not find the requested resource", Some(json!({})));
    };
    match (request.method.as_str(), &location.name) {
        ("GET", Some(name)) => match state.objects.get(&location.object_path(name)) {
            Some(object) if wants_metadata_only(request) => respond(
                200,
                json!({
                    "apiVersion": "meta.k8s.io/v1",
                    "kind": "PartialObjectMetadata",
                    "metadata": object["metadata"],
                }),
            ),
            Some(object) => respond(200, object.clone()),
            None => location.not_found(name),
        },
        ("GET", None) => list(request, &location, state),
        ("PATCH", Some(name)) => apply(request, &location, name, state),
        ("POST", None) => create(request, &location, state),
        ("PUT", Some(name)) => replace(request, &location, name, state),
        ("DELETE", Some(name)) => match state.objects.remove(&location.object_path(name)) {
            Some(_) => respond(
                200,
                json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" }),
            ),
            None => location.not_found(name),
        },
        _ => method_not_allowed(request),
    }
}

fn method_not_allowed(request: &Request) -> Response {
    status(
        405,
        "MethodNotAllowed",
        &format!(
            "the server does not allow this method on the requested resource ({} {})",
            request.method, request.path
        ),
        None,
    )
}

/// kube-rs's metadata-only reads ask for `as=PartialObjectMetadata` in `Accept`.
fn wants_metadata_only(request: &Request) -> bool {
    request.header("accept").is_some_and(|accept| accept.contains("as=PartialObjectMetadata"))
}

fn list(request: &Request, location: &Location, state: &State) -> Response {
    let selector = match request.query("labelSelector").map(parse_selector).transpose() {
        Ok(selector) => selector.unwrap_or_default(),
        Err(problem) => return status(400, "BadRequest", &problem, None),
    };
    let prefix = format!("{}/", location.collection);
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|(path, _)| path.strip_prefix(&prefix).is_some_and(|name| !name.contains('/')))
        .map(|(_, object)| object)
        .filter(|object| {
            selector.iter().all(|(key, value)| {
                let label = object["metadata"]["labels"].get(key).and_then(Value::as_str);
                match value {
                    Some(value) => label == Some(value.as_str()),
                    None => label.is_some(),
                }
            })
        })
        .cloned()
        .collect();
    if wants_metadata_only(request) {
        let items: Vec<Value> = items
            .into_iter()
            .map(|object| {
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
            })
            .collect();
        return respond(
            200,
            json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadataList",
                "metadata": { "resourceVersion": state.revision.to_string() },
                "items": items,
            }),
        );
    }
    respond(
        200,
        json!({
            "apiVersion": location.api_version(),
            "kind": format!("{}List", location.kind()),
            "metadata": { "resourceVersion": state.revision.to_string() },
            "items": items,
        }),
    )
}

/// Equality terms (`k=v`, `k==v`) and existence (`k`); anything else is refused.
fn parse_selector(selector: &str) -> Result<Vec<(String, Option<String>)>, String> {
    selector
        .split(',')
        .filter(|term| !term.trim().is_empty())
        .map(|term| {
            let term = term.trim();
            if term.contains("!=")
                || term.contains(" in ")
                || term.contains(" notin ")
                || term.starts_with('!')
            {
                return Err(format!("the fake API server supports only equality selectors, not {term:?}"));
            }
            Ok(match term.split_once("==").or_else(|| term.split_once('=')) {
                Some((key, value)) => (key.trim().to_owned(), Some(value.trim().to_owned())),
                None => (term.to_owned(), None),
            })
        })
        .collect()
}

/// The body of a write as a JSON object whose `metadata.name` is `name` (when given) and whose
/// kind is the collection's.
fn body_object(request: &Request, location: &Location, name: Option<&str>) -> Result<Value, Response> {
    let object: Value = serde_json::from_slice(&request.body)
        .map_err(|e| status(400, "BadRequest", &format!("the body is not JSON: {e}"), None))?;
    if !object.is_object() {
        return Err(status(400, "BadRequest", "the body is not an object", None));
    }
    let body_name = object["metadata"]["name"].as_str().unwrap_or_default();
    match name {
        Some(name) if body_name != name => {
            return Err(status(
                400,
                "BadRequest",
                &format!("the name of the object ({body_name}) does not match the name on the URL ({name})"),
                None,
            ));
        }
        None if body_name.is_empty() => {
            return Err(status(422, "Invalid", "metadata.name: Required value: name is required", None));
        }
        _ => {}
    }
    // Kinds are compared without case: the plural-to-kind table here is approximate.
    let kind = object["kind"].as_str().unwrap_or_default();
    if object["apiVersion"].as_str() != Some(location.api_version().as_str())
        || !kind.eq_ignore_ascii_case(&location.kind())
    {
        return Err(status(
            400,
            "BadRequest",
            &format!(
                "the object's apiVersion {} and kind {} are not those of {}",
                object["apiVersion"], object["kind"], location.collection
            ),
            None,
        ));
    }
    if let (Some(namespace), Some(body_namespace)) =
        (&location.namespace, object["metadata"]["namespace"].as_str())
        && namespace != body_namespace
    {
        return Err(status(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
            None,
        ));
    }
    Ok(object)
}

fn with_namespace(mut object: Value, location: &Location) -> Value {
    if let Some(namespace) = &location.namespace {
        object["metadata"]["namespace"] = json!(namespace);
    }
    object
}

/// Server-side apply.
fn apply(request: &Request, location: &Location, name: &str, state: &mut State) -> Response {
    let content_type = request.header("content-type").unwrap_or_default();
    if !content_type.starts_with("application/apply-patch+yaml") {
        return status(
            415,
            "UnsupportedMediaType",
            &format!("the fake API server serves only server-side apply patches, not {content_type:?}"),
            None,
        );
    }
    if request.query("fieldManager").is_none_or(str::is_empty) {
        return status(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            None,
        );
    }
    let object = match body_object(request, location, Some(name)) {
        Ok(object) => with_namespace(object, location),
        Err(response) => return response,
    };
    let path = location.object_path(name);
    let previous = state.objects.get(&path);
    if let Some(previous) = previous
        && without_server_fields(previous) == without_server_fields(&object)
    {
        return respond(200, previous.clone());
    }
    let created = previous.is_none();
    let previous = previous.cloned();
    state.revision += 1;
    let mut object = object;
    set_server_fields(&mut object, state.revision, previous.as_ref());
    let manager = request.query("fieldManager").unwrap_or_default().to_owned();
    object["metadata"]["managedFields"] = json!([{
        "manager": manager,
        "operation": "Apply",
        "apiVersion": object["apiVersion"],
        "time": "2024-06-01T12:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(&object),
    }]);
    state.objects.insert(path, object.clone());
    respond(if created { 201 } else { 200 }, object)
}

/// The `FieldsV1` set of an applied object: `f:<key>` for each map key, `{}` at a leaf (a
/// list is a leaf here); identity and server-set fields are not in it.
fn fields_v1(object: &Value) -> Value {
    fn walk(node: &Value, depth: usize, parent: &str) -> Value {
        let mut out = serde_json::Map::new();
        if let Value::Object(map) = node {
            for (key, value) in map {
                let identity = (depth == 0 && (key == "apiVersion" || key == "kind"))
                    || (depth == 1
                        && parent == "metadata"
                        && [
                            "name",
                            "namespace",
                            "resourceVersion",
                            "uid",
                            "creationTimestamp",
                            "managedFields",
                            "generation",
                        ]
                        .contains(&key.as_str()));
                if identity {
                    continue;
                }
                let child = match value {
                    Value::Object(inner) if !inner.is_empty() => walk(value, depth + 1, key),
                    _ => json!({}),
                };
                out.insert(format!("f:{key}"), child);
            }
        }
        Value::Object(out)
    }
    walk(object, 0, "")
}

fn create(request: &Request, location: &Location, state: &mut State) -> Response {
    let object = match body_object(request, location, None) {
        Ok(object) => with_namespace(object, location),
        Err(response) => return response,
    };
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let path = location.object_path(&name);
    if state.objects.contains_key(&path) {
        return status(
            409,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", location.resource),
            Some(json!({ "name": name, "group": location.group, "kind": location.resource })),
        );
    }
    state.revision += 1;
    let mut object = object;
    set_server_fields(&mut object, state.revision, None);
    state.objects.insert(path, object.clone());
    respond(201, object)
}

fn replace(request: &Request, location: &Location, name: &str, state: &mut State) -> Response {
    let object = match body_object(request, location, Some(name)) {
        Ok(object) => with_namespace(object, location),
        Err(response) => return response,
    };
    let path = location.object_path(name);
    let Some(previous) = state.objects.get(&path).cloned() else {
        return location.not_found(name);
    };
    let sent = object["metadata"]["resourceVersion"].as_str().unwrap_or_default();
    if !sent.is_empty() && previous["metadata"]["resourceVersion"].as_str() != Some(sent) {
        return status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                location.resource
            ),
            Some(json!({ "name": name, "group": location.group, "kind": location.resource })),
        );
    }
    state.revision += 1;
    let mut object = object;
    set_server_fields(&mut object, state.revision, Some(&previous));
    state.objects.insert(path, object.clone());
    respond(200, object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_located_like_the_api_server_routes_them() {
        let namespace = locate("/api/v1/namespaces/oob").unwrap();
        assert_eq!((namespace.resource.as_str(), namespace.name.as_deref()), ("namespaces", Some("oob")));
        assert_eq!(namespace.namespace, None);
        assert_eq!(namespace.kind(), "Namespace");
        let secrets = locate("/api/v1/namespaces/oob/secrets").unwrap();
        assert_eq!((secrets.namespace.as_deref(), secrets.name), (Some("oob"), None));
        assert_eq!(secrets.collection, "/api/v1/namespaces/oob/secrets");
        let deployments = locate("/apis/apps/v1/namespaces/oob/deployments").unwrap();
        assert_eq!(
            (deployments.api_version().as_str(), deployments.kind().as_str()),
            ("apps/v1", "Deployment")
        );
        let class = locate("/apis/storage.k8s.io/v1/storageclasses/standard").unwrap();
        assert_eq!(class.object_path("standard"), "/apis/storage.k8s.io/v1/storageclasses/standard");
        assert_eq!(class.kind(), "StorageClass");
        assert!(locate("/apis/apps/v1/namespaces/oob/deployments/web/status").is_none());
        assert!(locate("/healthz").is_none());
        assert_eq!(
            percent_decode("app.kubernetes.io%2Finstance%3Ddapr+x"),
            "app.kubernetes.io/instance=dapr x"
        );
    }
}
