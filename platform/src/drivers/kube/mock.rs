//! A mock API server for the driver's tests: a kube-rs `Client` backed by `tower_test::mock`,
//! and a handle that expects requests one by one (method, path, query, headers, body) and
//! answers them. Every wait is bounded by a timeout so a wrong or missing request fails the
//! test instead of hanging it.

use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tower_test::mock::{Handle, SendResponse};

const WAIT: Duration = Duration::from_secs(5);

pub struct MockServer {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// One request the client sent, waiting for its response.
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    send: SendResponse<Response<Body>>,
}

impl MockServer {
    pub fn start() -> (Client, MockServer) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), MockServer { handle })
    }

    /// The raw handle, for tests that answer a varying number of requests.
    pub fn handle_mut(&mut self) -> &mut Handle<Request<Body>, Response<Body>> {
        &mut self.handle
    }

    /// Waits for the next request and checks its method and path.
    pub async fn expect(&mut self, method: &str, path: &str) -> Exchange {
        let exchange = self.next().await;
        assert_eq!(
            (exchange.method.as_str(), exchange.path.as_str()),
            (method, path),
            "unexpected request {} {}?{:?}",
            exchange.method,
            exchange.path,
            exchange.query
        );
        exchange
    }

    /// Waits for the next request, whatever it is.
    pub async fn next(&mut self) -> Exchange {
        let (request, send) = timeout(WAIT, self.handle.next_request())
            .await
            .expect("timed out waiting for a request")
            .expect("the client was dropped before sending the expected request");
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await.expect("request body").to_vec();
        Exchange {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(parse_query).unwrap_or_default(),
            headers: parts.headers,
            body,
            send,
        }
    }

    /// Waits for the code under test to finish and returns its result.
    pub async fn finish<T>(self, task: JoinHandle<T>) -> T {
        let result = timeout(WAIT, task)
            .await
            .expect("timed out waiting for the call to finish")
            .expect("the call panicked");
        drop(self);
        result
    }

    /// Checks that the (dropped) client sent nothing more.
    pub async fn assert_no_more_requests(mut self) {
        let next = timeout(WAIT, self.handle.next_request())
            .await
            .expect("timed out waiting for the client to go away");
        assert!(next.is_none(), "unexpected request {:?}", next.map(|(request, _)| request.uri().clone()));
    }
}

impl Exchange {
    pub fn query(&self, key: &str) -> Option<String> {
        self.query.iter().find(|(name, _)| name == key).map(|(_, value)| value.clone())
    }

    pub fn content_type(&self) -> String {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn json_body(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }

    pub fn respond(self, response: Response<Body>) {
        self.send.send_response(response);
    }
}

pub fn json_response(code: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
        .expect("response")
}

/// A failure `Status` as the API server sends it.
pub fn status_response(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }),
    )
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

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        index += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).expect("query is UTF-8")
}
