//! Unit-test support for the steps of the reconcilers: a kube `Client` over a scripted in-memory
//! API (`tower::service_fn`, as tests/it/support/fake_api.rs does for the integration tests, which
//! a library's unit tests cannot import). Every request is recorded; a request is answered by the
//! first route whose method and path match, else a GET is `404 NotFound` and a write echoes its
//! body with `200`.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// A request the fake API received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The verb.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The body (`Null` when empty or not JSON).
    pub body: Value,
}

impl Seen {
    /// `METHOD /path`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

#[derive(Debug, Clone)]
struct Route {
    method: Method,
    path: String,
    status: u16,
    body: Value,
}

/// The scripted API.
#[derive(Debug, Default)]
pub struct FakeApi {
    routes: Mutex<Vec<Route>>,
    seen: Mutex<Vec<Seen>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A Kubernetes `Status` body for a failure.
pub fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
           "message": format!("{reason} (scripted)"), "code": code})
}

impl FakeApi {
    /// An API that knows nothing.
    pub fn new() -> Arc<FakeApi> {
        Arc::new(FakeApi::default())
    }

    /// Answers `method path` with `status` and `body` (earlier routes win).
    pub fn route(
        self: &Arc<Self>,
        method: Method,
        path: &str,
        status: u16,
        body: Value,
    ) -> Arc<Self> {
        lock(&self.routes).push(Route {
            method,
            path: path.to_owned(),
            status,
            body,
        });
        self.clone()
    }

    /// Answers `GET path` with `200` and `body`.
    pub fn get(self: &Arc<Self>, path: &str, body: Value) -> Arc<Self> {
        self.route(Method::GET, path, 200, body)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    /// The write requests so far, as `METHOD /path`.
    pub fn writes(&self) -> Vec<String> {
        self.seen()
            .iter()
            .filter(|s| s.method != Method::GET)
            .map(Seen::line)
            .collect()
    }

    fn answer(&self, method: &Method, path: &str, body: &Value) -> (u16, Value) {
        let routes = lock(&self.routes);
        match routes
            .iter()
            .find(|r| &r.method == method && r.path == path)
        {
            Some(route) => (route.status, route.body.clone()),
            None if method == Method::GET => (404, status_body(404, "NotFound")),
            None => (200, body.clone()),
        }
    }

    /// A client over this API.
    pub fn client(self: &Arc<Self>) -> Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await?.to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_owned();
                let (status, answer) = api.answer(&parts.method, &path, &body);
                lock(&api.seen).push(Seen {
                    method: parts.method,
                    path,
                    body,
                });
                let response = Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
                    .map_err(|e| kube::Error::Service(e.into()))?;
                Ok::<_, kube::Error>(response)
            }
        });
        Client::new(service, "default")
    }
}
