//! A fake Kubernetes API server at the HTTP boundary, shared by the reconciler tests: the kube
//! `Client` runs over a `tower::service_fn` that records every request (verb, path, query, content
//! type, body), keeps objects by path, lists them with label selectors, and can inject faults.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    /// The `Accept` header: a metadata-only list asks for `as=PartialObjectMetadataList`.
    pub accept: String,
    pub body: Value,
    /// When the request arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
    /// Whether the request asked for objects' metadata only.
    pub fn metadata_only(&self) -> bool {
        self.accept.contains("as=PartialObjectMetadata")
    }
}

/// A scripted fault: answer the first request matching (method, path suffix) with this status.
#[derive(Debug, Clone)]
pub struct Fault {
    method: Method,
    path_contains: String,
    status: u16,
    delay: Option<std::time::Duration>,
}

#[derive(Default)]
pub struct FakeApi {
    pub objects: Mutex<BTreeMap<String, Value>>,
    requests: Mutex<Vec<Recorded>>,
    faults: Mutex<Vec<Fault>>,
    version: Mutex<u64>,
}

pub fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("fake: {reason}"), "reason": reason, "code": code})
}

/// `/apis/ops.vworkspace.io/v1alpha1/clusters/<name>`.
pub fn is_cluster_object(path: &str) -> bool {
    let s: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(
        s.as_slice(),
        ["apis", "ops.vworkspace.io", "v1alpha1", "clusters", _]
    )
}

pub fn labels_match(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        object["metadata"]["labels"][k].as_str() == Some(v)
    })
}

pub fn decode(component: &str) -> String {
    let mut out = Vec::new();
    let bytes = component.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&component[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// RFC 7386: `patch` merged into `target`, objects recursively, `null` removing a field.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        if let Some(map) = target.as_object_mut() {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

pub fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| decode(v))
}

impl FakeApi {
    pub fn put(&self, path: &str, object: Value) {
        self.objects
            .lock()
            .expect("lock")
            .insert(path.to_owned(), object);
    }

    /// A write by another client (an edit by hand): stored as the API server stores a write, with a
    /// new resourceVersion and, when more than its metadata or status changed, a new generation.
    pub fn edit(&self, path: &str, mut object: Value) {
        let previous = self.get(path);
        self.stamp_version(&mut object, previous.as_ref());
        self.put(path, object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().expect("lock").get(path).cloned()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    pub fn clear(&self) {
        self.requests.lock().expect("lock").clear();
    }

    pub fn fault(&self, method: Method, path_contains: &str, status: u16) {
        self.faults.lock().expect("lock").push(Fault {
            method,
            path_contains: path_contains.to_owned(),
            status,
            delay: None,
        });
    }

    /// The first matching request is answered only after `delay` (a stalled API server).
    pub fn stall(&self, method: Method, path_contains: &str, delay: std::time::Duration) {
        self.faults.lock().expect("lock").push(Fault {
            method,
            path_contains: path_contains.to_owned(),
            status: 0,
            delay: Some(delay),
        });
    }

    fn take_delay(&self, method: &Method, path: &str) -> Option<std::time::Duration> {
        let mut faults = self.faults.lock().expect("lock");
        let i = faults.iter().position(|f| {
            f.delay.is_some() && f.method == *method && path.contains(&f.path_contains)
        })?;
        faults.remove(i).delay
    }

    pub fn next_version(&self) -> String {
        let mut v = self.version.lock().expect("lock");
        *v += 1;
        v.to_string()
    }

    /// Objects that a collection path lists: `/api/v1/namespaces` lists namespaces; a cluster-wide
    /// `/apis/g/v/plural` lists `/apis/g/v/namespaces/*/plural/*`.
    pub fn list(&self, path: &str, selector: &str) -> Vec<Value> {
        let objects = self.objects.lock().expect("lock");
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        objects
            .iter()
            .filter(|(key, _)| {
                let k: Vec<&str> = key.trim_start_matches('/').split('/').collect();
                match segments.as_slice() {
                    ["api", "v1", "namespaces"] => {
                        k.len() == 4 && k[..3] == ["api", "v1", "namespaces"]
                    }
                    // Cluster-scoped kinds live at /apis/g/v/plural/name.
                    ["apis", g, v, plural]
                        if k.len() == 5
                            && k[0] == "apis"
                            && k[1] == *g
                            && k[2] == *v
                            && k[3] == *plural =>
                    {
                        true
                    }
                    ["apis", g, v, plural] => {
                        k.len() == 7
                            && k[0] == "apis"
                            && k[1] == *g
                            && k[2] == *v
                            && k[3] == "namespaces"
                            && k[5] == *plural
                    }
                    // Namespaced collections: /api/v1/namespaces/ns/plural, /apis/g/v/namespaces/ns/plural.
                    ["api", "v1", "namespaces", ns, plural] => {
                        k.len() == 6 && k[..5] == ["api", "v1", "namespaces", ns, plural]
                    }
                    ["apis", g, v, "namespaces", ns, plural] => {
                        k.len() == 7 && k[..6] == ["apis", g, v, "namespaces", ns, plural]
                    }
                    _ => false,
                }
            })
            .map(|(_, v)| v.clone())
            .filter(|o| labels_match(o, selector))
            .collect()
    }

    /// As the API server stamps a written object: a new resourceVersion; the uid it was made with
    /// (a new one for a new object); its generation, 1 when made and one more on each change of
    /// anything but its metadata and status.
    fn stamp_version(&self, object: &mut Value, previous: Option<&Value>) {
        let version = self.next_version();
        let uid = previous
            .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("uid-{version}"));
        let generation = match previous.and_then(|p| p["metadata"]["generation"].as_i64()) {
            None => 1,
            Some(generation) => {
                let body = |o: &Value| {
                    let mut o = o.clone();
                    if let Some(map) = o.as_object_mut() {
                        map.remove("metadata");
                        map.remove("status");
                    }
                    o
                };
                let changed = previous.is_some_and(|p| body(p) != body(object));
                generation + i64::from(changed)
            }
        };
        object["metadata"]["resourceVersion"] = json!(version);
        object["metadata"]["uid"] = json!(uid);
        object["metadata"]["generation"] = json!(generation);
    }

    pub fn respond(&self, method: &Method, path: &str, query: &str, body: &Value) -> (u16, Value) {
        {
            let mut faults = self.faults.lock().expect("lock");
            if let Some(i) = faults.iter().position(|f| {
                f.delay.is_none() && f.method == *method && path.contains(&f.path_contains)
            }) {
                let fault = faults.remove(i);
                return (fault.status, status_body(fault.status, "InjectedFault"));
            }
        }
        let is_collection = {
            let s: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            matches!(
                s.as_slice(),
                ["api", "v1", "namespaces"]
                    | ["apis", _, _, _]
                    | ["api", "v1", "namespaces", _, _]
                    | ["apis", _, _, "namespaces", _, _]
            )
        };
        match *method {
            // Watches are dropped at once, every time: clients must re-list and carry on.
            Method::GET if is_collection && query.contains("watch=true") => {
                (500, status_body(500, "WatchDropped"))
            }
            Method::GET if is_collection => {
                let selector = query_param(query, "labelSelector").unwrap_or_default();
                let items = self.list(path, &selector);
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            Method::GET => match self.get(path) {
                Some(o) => (200, o),
                None => (404, status_body(404, "NotFound")),
            },
            Method::PATCH if path.ends_with("/status") => {
                let object_path = path.trim_end_matches("/status");
                let Some(mut object) = self.get(object_path) else {
                    return (404, status_body(404, "NotFound"));
                };
                object["status"] = body["status"].clone();
                self.put(object_path, object.clone());
                (200, object)
            }
            // A server-side apply to a Cluster (not its status) holds only its finalizers (the one
            // thing the operator applies there): as the API server merges an apply of one field
            // manager, the rest of the object stays; the finalizers become what the apply says
            // (only the operator sets any in these tests). An object being deleted goes with its
            // last finalizer.
            Method::PATCH if is_cluster_object(path) => {
                let Some(mut object) = self.get(path) else {
                    return (404, status_body(404, "NotFound"));
                };
                let finalizers = body["metadata"]["finalizers"].clone();
                let metadata = object["metadata"].as_object_mut();
                let Some(metadata) = metadata else {
                    return (500, status_body(500, "NoMetadata"));
                };
                let empty = finalizers.as_array().is_none_or(Vec::is_empty);
                if empty {
                    metadata.remove("finalizers");
                } else {
                    metadata.insert("finalizers".into(), finalizers);
                }
                metadata.insert("resourceVersion".into(), json!(self.next_version()));
                if empty && metadata.contains_key("deletionTimestamp") {
                    self.objects.lock().expect("lock").remove(path);
                } else {
                    self.put(path, object.clone());
                }
                (200, object)
            }
            // A JSON merge patch (a body without apiVersion: server-side applies carry one): merged
            // into the stored object, `null` removing a field (RFC 7386).
            Method::PATCH if body.get("apiVersion").is_none() => {
                let Some(mut object) = self.get(path) else {
                    return (404, status_body(404, "NotFound"));
                };
                let previous = object.clone();
                merge_patch(&mut object, body);
                self.stamp_version(&mut object, Some(&previous));
                self.put(path, object.clone());
                (200, object)
            }
            Method::PATCH | Method::PUT => {
                let mut object = body.clone();
                let previous = self.get(path);
                // As the API server does: a write to the object leaves its status subresource alone.
                if let Some(status) = previous
                    .as_ref()
                    .and_then(|live| live.get("status").cloned())
                {
                    object["status"] = status;
                }
                self.stamp_version(&mut object, previous.as_ref());
                self.put(path, object.clone());
                (200, object)
            }
            Method::POST => {
                let mut object = body.clone();
                object["metadata"]["name"] = json!(format!("event-{}", self.next_version()));
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or("x")
                    .to_owned();
                self.put(&format!("{path}/{name}"), object.clone());
                (201, object)
            }
            Method::DELETE => match self.objects.lock().expect("lock").remove(path) {
                Some(_) => (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}),
                ),
                None => (404, status_body(404, "NotFound")),
            },
            _ => (405, status_body(405, "MethodNotAllowed")),
        }
    }

    pub fn client(self: &Arc<Self>) -> Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await?.to_bytes();
                let parsed: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
                };
                let path = parts.uri.path().to_owned();
                let query = parts.uri.query().unwrap_or_default().to_owned();
                api.requests.lock().expect("lock").push(Recorded {
                    method: parts.method.clone(),
                    path: path.clone(),
                    query: query.clone(),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                    accept: parts
                        .headers
                        .get(http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                    body: parsed.clone(),
                    at: std::time::Instant::now(),
                });
                if let Some(delay) = api.take_delay(&parts.method, &path) {
                    tokio::time::sleep(delay).await;
                }
                let (status, mut answer) = api.respond(&parts.method, &path, &query, &parsed);
                let accept = parts.headers.get(http::header::ACCEPT);
                if accept
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains("as=PartialObjectMetadataList"))
                {
                    metadata_only(&mut answer);
                }
                let response = Response::builder()
                    .status(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    )
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
                    .expect("response");
                Ok::<_, kube::Error>(response)
            }
        });
        Client::new(service, "default")
    }
}

/// A list answered as a metadata-only list: each item's metadata, nothing of its spec or status.
fn metadata_only(answer: &mut Value) {
    answer["kind"] = json!("PartialObjectMetadataList");
    answer["apiVersion"] = json!("meta.k8s.io/v1");
    if let Some(items) = answer["items"].as_array_mut() {
        for item in items {
            *item = json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata",
                "metadata": item["metadata"].clone(),
            });
        }
    }
}
