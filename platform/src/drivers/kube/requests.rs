//! Counting the requests our Kubernetes client sends, by HTTP method: a tower layer
//! ([`CountRequestsLayer`]) in the client's service stack and a shared handle
//! ([`RequestCounter`]) to read the counts after a deploy. A GET and a LIST are both `GET` on the
//! wire, and a server-side apply is a `PATCH`: the counts are by method, as sent, plus
//! [`RequestCounts::mutating`] (every `POST`, `PUT`, `PATCH` and `DELETE`). A request is counted
//! when it is handed to the transport, whatever the answer (an error status, or no answer).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Method, Request};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// The methods that change something on the API server.
const MUTATING: [Method; 4] = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// A shared count of the requests a client sent. Clones count into the same totals.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl RequestCounter {
    pub fn new() -> RequestCounter {
        RequestCounter::default()
    }

    /// The layer that counts into this counter.
    pub fn layer(&self) -> CountRequestsLayer {
        CountRequestsLayer { counter: self.clone() }
    }

    fn record(&self, method: &Method) {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *counts.entry(method.as_str().to_owned()).or_default() += 1;
    }

    /// The counts so far.
    pub fn snapshot(&self) -> RequestCounts {
        let counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        RequestCounts { by_method: counts.clone() }
    }
}

/// The requests sent, by HTTP method (`"GET"`, `"PATCH"`, ...; methods never sent are absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub by_method: BTreeMap<String, u64>,
}

impl RequestCounts {
    /// Requests sent with `method` (`"GET"`).
    pub fn get(&self, method: &str) -> u64 {
        self.by_method.get(method).copied().unwrap_or(0)
    }

    /// Every request sent.
    pub fn total(&self) -> u64 {
        self.by_method.values().sum()
    }

    /// The `POST`, `PUT`, `PATCH` and `DELETE` requests: those that may change the cluster.
    pub fn mutating(&self) -> u64 {
        MUTATING.iter().map(|method| self.get(method.as_str())).sum()
    }
}

/// `{"GET": 3, "PATCH": 2, "mutating": 2}`: one key per method sent, then `mutating`, always.
impl Serialize for RequestCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.by_method.len() + 1))?;
        for (method, count) in &self.by_method {
            map.serialize_entry(method, count)?;
        }
        map.serialize_entry("mutating", &self.mutating())?;
        map.end()
    }
}

/// Wraps a client's service so that every request it sends is counted.
#[derive(Debug, Clone)]
pub struct CountRequestsLayer {
    counter: RequestCounter,
}

impl<S> tower::Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> CountRequests<S> {
        CountRequests { inner, counter: self.counter.clone() }
    }
}

/// The service [`CountRequestsLayer`] builds.
#[derive(Debug, Clone)]
pub struct CountRequests<S> {
    inner: S,
    counter: RequestCounter,
}

impl<S, B> tower::Service<Request<B>> for CountRequests<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        self.counter.record(request.method());
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::kube::mock::{json_response, status_response};
    use http::Response;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};
    use kube::client::Body;
    use serde_json::json;
    use std::time::Duration;
    use tower_test::mock::Handle;

    type MockHandle = Handle<Request<Body>, Response<Body>>;

    /// A client whose requests go through the counting layer to a mock server.
    fn counted_client() -> (kube::Client, MockHandle, RequestCounter) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let counter = RequestCounter::new();
        let service = tower::Layer::layer(&counter.layer(), service);
        (kube::Client::new(service, "default"), handle, counter)
    }

    /// Answers the next request, after checking its method and path.
    async fn answer(handle: &mut MockHandle, method: &str, path: &str, response: Response<Body>) {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .expect("timed out waiting for a request")
            .expect("the client went away");
        assert_eq!((request.method().as_str(), request.uri().path()), (method, path));
        send.send_response(response);
    }

    fn config_map() -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}})
    }

    #[tokio::test]
    async fn counts_requests_by_method_and_the_mutating_ones() {
        let (client, mut handle, counter) = counted_client();
        assert_eq!(counter.snapshot(), RequestCounts::default());
        let task = tokio::spawn(async move {
            let api: Api<ConfigMap> = Api::namespaced(client, "ns");
            api.get("c").await.unwrap();
            api.list(&Default::default()).await.unwrap();
            let patch = Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}}));
            api.patch("c", &PatchParams::apply("opus-deploy"), &patch).await.unwrap();
        });
        let path = "/api/v1/namespaces/ns/configmaps";
        answer(&mut handle, "GET", &format!("{path}/c"), json_response(200, config_map())).await;
        let list =
            json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {}, "items": [config_map()]});
        answer(&mut handle, "GET", path, json_response(200, list)).await;
        answer(&mut handle, "PATCH", &format!("{path}/c"), json_response(200, config_map())).await;
        task.await.unwrap();

        let counts = counter.snapshot();
        assert_eq!(counts.by_method, BTreeMap::from([("GET".to_owned(), 2), ("PATCH".to_owned(), 1)]));
        assert_eq!((counts.get("POST"), counts.mutating(), counts.total()), (0, 1, 3));
        assert_eq!(serde_json::to_value(&counts).unwrap(), json!({"GET": 2, "PATCH": 1, "mutating": 1}));
    }

    #[tokio::test]
    async fn a_request_that_fails_is_still_counted_and_clones_share_the_counts() {
        let (client, mut handle, counter) = counted_client();
        let clone = counter.clone();
        let task = tokio::spawn(async move {
            let api: Api<ConfigMap> = Api::namespaced(client, "ns");
            api.delete("c", &Default::default()).await.unwrap_err();
        });
        let not_found = status_response(404, "NotFound", "configmaps \"c\" not found");
        answer(&mut handle, "DELETE", "/api/v1/namespaces/ns/configmaps/c", not_found).await;
        task.await.unwrap();
        assert_eq!(serde_json::to_value(clone.snapshot()).unwrap(), json!({"DELETE": 1, "mutating": 1}));
    }

    #[test]
    fn no_request_serializes_as_zero_mutating() {
        assert_eq!(serde_json::to_value(RequestCounts::default()).unwrap(), json!({"mutating": 0}));
    }
}
