//! The reconciler against a fake API server at the HTTP boundary: every request the operator sends is
//! recorded (verb, path, query, content type, body) and the tests assert the exact requests. The
//! source is a real repository signed by the real `git commit -S`, with a 2-of-2 release and values
//! encrypted by the real `age`, fetched over file://.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

use common::*;
use vworkspace_operator::crd::{Cluster, ClusterStatus};
use vworkspace_operator::metrics::Metrics;
use vworkspace_operator::reconcile::{self, Context, Settings};

const FIELD_MANAGER: &str = "vworkspace-gitops";

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

impl Recorded {
    fn is_write(&self) -> bool {
        self.method != Method::GET
    }
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// A scripted fault: answer the first request matching (method, path suffix) with this status.
#[derive(Debug, Clone)]
struct Fault {
    method: Method,
    path_contains: String,
    status: u16,
}

#[derive(Default)]
struct FakeApi {
    objects: Mutex<BTreeMap<String, Value>>,
    requests: Mutex<Vec<Recorded>>,
    faults: Mutex<Vec<Fault>>,
    version: Mutex<u64>,
}

fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("fake: {reason}"), "reason": reason, "code": code})
}

fn labels_match(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        object["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn decode(component: &str) -> String {
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

fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| decode(v))
}

impl FakeApi {
    fn put(&self, path: &str, object: Value) {
        self.objects
            .lock()
            .expect("lock")
            .insert(path.to_owned(), object);
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().expect("lock").get(path).cloned()
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    fn clear(&self) {
        self.requests.lock().expect("lock").clear();
    }

    fn fault(&self, method: Method, path_contains: &str, status: u16) {
        self.faults.lock().expect("lock").push(Fault {
            method,
            path_contains: path_contains.to_owned(),
            status,
        });
    }

    fn next_version(&self) -> String {
        let mut v = self.version.lock().expect("lock");
        *v += 1;
        v.to_string()
    }

    /// Objects that a collection path lists: `/api/v1/namespaces` lists namespaces; a cluster-wide
    /// `/apis/g/v/plural` lists `/apis/g/v/namespaces/*/plural/*`.
    fn list(&self, path: &str, selector: &str) -> Vec<Value> {
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
                    ["apis", g, v, plural] => {
                        k.len() == 7
                            && k[0] == "apis"
                            && k[1] == *g
                            && k[2] == *v
                            && k[3] == "namespaces"
                            && k[5] == *plural
                    }
                    _ => false,
                }
            })
            .map(|(_, v)| v.clone())
            .filter(|o| labels_match(o, selector))
            .collect()
    }

    fn respond(&self, method: &Method, path: &str, query: &str, body: &Value) -> (u16, Value) {
        {
            let mut faults = self.faults.lock().expect("lock");
            if let Some(i) = faults
                .iter()
                .position(|f| f.method == *method && path.contains(&f.path_contains))
            {
                let fault = faults.remove(i);
                return (fault.status, status_body(fault.status, "InjectedFault"));
            }
        }
        let is_collection = {
            let s: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            matches!(
                s.as_slice(),
                ["api", "v1", "namespaces"] | ["apis", _, _, _]
            )
        };
        match *method {
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
            Method::PATCH | Method::PUT => {
                let mut object = body.clone();
                object["metadata"]["resourceVersion"] = json!(self.next_version());
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

    fn client(self: &Arc<Self>) -> Client {
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
                    body: parsed.clone(),
                });
                let (status, answer) = api.respond(&parts.method, &path, &query, &parsed);
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

struct Harness {
    fixture: Fixture,
    api: Arc<FakeApi>,
    ctx: Arc<Context>,
    _cache: tempfile::TempDir,
}

const CLUSTER_PATH: &str = "/apis/ops.vworkspace.io/v1alpha1/clusters/demo";

fn namespace(name: &str, managed: bool) -> Value {
    let labels = if managed {
        json!({"app.vworkspace.io/managed-by": "vworkspace"})
    } else {
        json!({})
    };
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn harness() -> Harness {
    let fixture = fixture();
    let api = Arc::new(FakeApi::default());
    let read = |name: &str| std::fs::read_to_string(fixture.path(name)).expect("read");
    api.put(
        "/api/v1/namespaces/vworkspace-system/configmaps/trust",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "trust", "namespace": "vworkspace-system"},
               "data": {"commit_signers": read("commit_signers"), "release_signers": read("release_signers")}}),
    );
    use base64::Engine;
    let identity = base64::engine::general_purpose::STANDARD.encode(read("cluster.agekey"));
    api.put(
        "/api/v1/namespaces/vworkspace-system/secrets/cluster-age",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cluster-age", "namespace": "vworkspace-system"},
               "data": {"identity.agekey": identity}}),
    );
    for (name, managed) in [
        ("org-myteam", true),
        ("org-vault", true),
        ("kube-system", false),
    ] {
        api.put(
            &format!("/api/v1/namespaces/{name}"),
            namespace(name, managed),
        );
    }
    api.put(
        CLUSTER_PATH,
        json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Cluster",
               "metadata": {"name": "demo", "uid": "0f5a-uid", "generation": 1, "resourceVersion": "1"},
               "spec": {
                 "clusterId": "demo",
                 "source": {"url": format!("file://{}", fixture.repo.display()), "ref": {"branch": "main"}, "interval": "5m"},
                 "commitSigners": {"configMapRef": {"name": "trust", "key": "commit_signers"}},
                 "release": {"signersConfigMapRef": {"name": "trust", "key": "release_signers"}, "threshold": 2},
                 "decryption": {"identitySecretRef": {"name": "cluster-age"}}
               }}),
    );
    let cache = tempfile::tempdir().expect("cache");
    let settings = Settings {
        namespace: "vworkspace-system".into(),
        cache_dir: cache.path().to_owned(),
        fetch: Default::default(),
        limits: Default::default(),
    };
    let ctx = Arc::new(Context::new(
        api.client(),
        settings,
        Arc::new(Metrics::default()),
    ));
    Harness {
        fixture,
        api,
        ctx,
        _cache: cache,
    }
}

impl Harness {
    fn cluster(&self) -> Cluster {
        serde_json::from_value(self.api.get(CLUSTER_PATH).expect("cluster")).expect("Cluster")
    }

    fn status(&self) -> ClusterStatus {
        self.cluster().status.expect("status written")
    }

    fn condition(&self, type_: &str) -> (String, String, String) {
        let status = self.status();
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    async fn pass(&self) -> Result<(), vworkspace_operator::Error> {
        self.api.clear();
        reconcile::reconcile(Arc::new(self.cluster()), self.ctx.clone())
            .await
            .map(drop)
    }

    fn writes(&self) -> Vec<String> {
        self.api
            .requests()
            .iter()
            .filter(|r| r.is_write())
            .map(Recorded::line)
            .collect()
    }
}

/// The invariants of every pass: Secrets only ever read by name; every write is a server-side apply
/// with our field manager and force, or a delete, a status write or an Event.
fn assert_request_discipline(requests: &[Recorded]) {
    for r in requests {
        if r.path.contains("/secrets") {
            assert_eq!(r.method, Method::GET, "Secrets are only read: {}", r.line());
            let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
            assert_eq!(
                segments.len(),
                6,
                "a Secret is read by name, never listed: {}",
                r.line()
            );
            assert!(!r.query.contains("watch"), "no watch on Secrets");
        }
        if r.method == Method::PATCH {
            assert_eq!(
                r.content_type,
                "application/apply-patch+yaml",
                "{}",
                r.line()
            );
            assert_eq!(
                query_param(&r.query, "fieldManager").as_deref(),
                Some(FIELD_MANAGER),
                "{}",
                r.line()
            );
            assert_eq!(query_param(&r.query, "force").as_deref(), Some("true"));
        }
        assert_ne!(r.method, Method::PUT, "no replace: {}", r.line());
    }
}

const AI: &str = "/apis/apps.vworkspace.io/v1alpha1";
const OPS: &str = "/apis/ops.vworkspace.io/v1alpha1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_pass_applies_everything_and_an_unchanged_pass_writes_nothing() {
    let h = harness();
    h.pass().await.expect("first pass");
    let requests = h.api.requests();
    assert_request_discipline(&requests);
    let reads: Vec<String> = requests
        .iter()
        .filter(|r| !r.is_write())
        .map(|r| {
            format!(
                "{} {}",
                r.line(),
                query_param(&r.query, "labelSelector").unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        reads[..4],
        [
            "GET /api/v1/namespaces/vworkspace-system/configmaps/trust ",
            "GET /api/v1/namespaces/vworkspace-system/secrets/cluster-age ",
            "GET /api/v1/namespaces app.vworkspace.io/managed-by=vworkspace",
            "GET /api/v1/namespaces/org-myteam/serviceaccounts/vworkspace-operation-runner ",
        ]
    );
    assert!(reads.contains(&format!(
        "GET {AI}/applicationinstances gitops.vworkspace.io/cluster=demo"
    )));
    assert!(reads.contains(&format!(
        "GET {OPS}/operations gitops.vworkspace.io/cluster=demo"
    )));
    assert_eq!(
        h.writes(),
        [
            "PATCH /api/v1/namespaces/org-myteam/serviceaccounts/vworkspace-operation-runner",
            "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/org-myteam/rolebindings/vworkspace-app-operator",
            "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/org-myteam/rolebindings/vworkspace-operation-runner",
            "PATCH /api/v1/namespaces/org-vault/serviceaccounts/vworkspace-operation-runner",
            "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/org-vault/rolebindings/vworkspace-app-operator",
            "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/org-vault/rolebindings/vworkspace-operation-runner",
            &format!("PATCH {AI}/namespaces/org-myteam/applicationinstances/nextcloud"),
            &format!("PATCH {OPS}/namespaces/org-myteam/operations/nightly"),
            &format!("PATCH {AI}/namespaces/org-vault/applicationinstances/vaultwarden"),
            &format!("PATCH {CLUSTER_PATH}/status"),
            "POST /api/v1/namespaces/default/events",
        ]
    );
    // What was applied: our labels and annotations, the ciphertext (never plaintext), no status.
    let applied = h
        .api
        .get(&format!(
            "{AI}/namespaces/org-myteam/applicationinstances/nextcloud"
        ))
        .expect("applied");
    assert_eq!(
        applied["metadata"]["labels"]["app.vworkspace.io/managed-by"],
        "vworkspace"
    );
    assert_eq!(
        applied["metadata"]["labels"]["gitops.vworkspace.io/cluster"],
        "demo"
    );
    assert_eq!(
        applied["metadata"]["annotations"]["gitops.vworkspace.io/source-path"],
        "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml"
    );
    let binding = h
        .api
        .get("/apis/rbac.authorization.k8s.io/v1/namespaces/org-myteam/rolebindings/vworkspace-app-operator")
        .expect("binding");
    assert_eq!(
        binding["roleRef"]["name"],
        "vworkspace-app-operator-namespace"
    );
    for r in h.api.requests() {
        assert!(
            !r.body.to_string().contains("hunter2-PLAINTEXT-MARKER"),
            "plaintext sent to the API server: {}",
            r.line()
        );
    }
    let status = h.status();
    assert_eq!(status.last_applied_serial, Some(1));
    assert_eq!(status.inventory.len(), 3);
    assert_eq!(
        status
            .managed_namespaces
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["org-myteam", "org-vault"]
    );
    assert_eq!(h.condition("Ready").0, "True");
    let event = h
        .api
        .requests()
        .into_iter()
        .find(|r| r.method == Method::POST)
        .expect("event");
    assert_eq!(
        event.body["reason"], "Succeeded",
        "the Event reason is the Ready reason"
    );
    assert_eq!(event.body["involvedObject"]["kind"], "Cluster");

    // The same commit again: reads only.
    h.pass().await.expect("second pass");
    assert_request_discipline(&h.api.requests());
    assert_eq!(
        h.writes(),
        Vec::<String>::new(),
        "a no-op pass writes nothing"
    );
    // And reads little: the trust inputs, the managed namespaces, the two kinds (RBAC already checked).
    assert_eq!(
        h.api
            .requests()
            .iter()
            .map(Recorded::line)
            .collect::<Vec<_>>(),
        [
            "GET /api/v1/namespaces/vworkspace-system/configmaps/trust".to_owned(),
            "GET /api/v1/namespaces/vworkspace-system/secrets/cluster-age".to_owned(),
            "GET /api/v1/namespaces".to_owned(),
            format!("GET {AI}/applicationinstances"),
            format!("GET {OPS}/operations"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_commit_writes_nothing_but_its_status() {
    let h = harness();
    h.pass().await.expect("first pass");
    let before = h.status();
    // An unsigned commit that changes an instance.
    h.fixture.write(
        "clusters/demo/namespaces/org-myteam/operations/nightly.yaml",
        &BACKUP.replace("velero-namespace-backup", "other-template"),
    );
    h.fixture.git(&["add", "-A"]);
    h.fixture.git(&[
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "-m",
        "unsigned change",
    ]);
    let refused = h.pass().await;
    assert!(refused.is_err());
    assert_request_discipline(&h.api.requests());
    assert_eq!(
        h.writes(),
        [
            format!("PATCH {CLUSTER_PATH}/status"),
            "POST /api/v1/namespaces/default/events".to_owned()
        ]
    );
    assert!(
        !h.api
            .requests()
            .iter()
            .any(|r| r.path.contains("/applicationinstances")
                || r.path.contains("/operations")
                || r.path.contains("/rolebindings")),
        "a refused pass does not even read the declared kinds"
    );
    let (status, reason, _) = h.condition("Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CommitSignatureInvalid")
    );
    let after = h.status();
    assert_eq!(after.last_applied_commit, before.last_applied_commit);
    assert_eq!(after.inventory, before.inventory);
    // Failing again for the same reason: no new status, no new Event.
    assert!(h.pass().await.is_err());
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_only_labelled_objects_of_the_inventory() {
    let h = harness();
    h.pass().await.expect("first pass");
    // Someone else's Operation with our labels but another cluster's id, and one without labels.
    h.api.put(
        &format!("{OPS}/namespaces/org-myteam/operations/foreign"),
        json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Operation",
               "metadata": {"name": "foreign", "namespace": "org-myteam",
                            "labels": {"app.vworkspace.io/managed-by": "vworkspace", "gitops.vworkspace.io/cluster": "other"}},
               "spec": {"type": "Backup", "template": "t", "target": {"applicationInstance": "x"}}}),
    );
    h.api.put(
        &format!("{OPS}/namespaces/org-myteam/operations/handmade"),
        json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Operation",
               "metadata": {"name": "handmade", "namespace": "org-myteam"},
               "spec": {"type": "Backup", "template": "t", "target": {"applicationInstance": "x"}}}),
    );
    std::fs::remove_file(
        h.fixture
            .repo
            .join("clusters/demo/namespaces/org-myteam/operations/nightly.yaml"),
    )
    .expect("remove");
    h.fixture.release("demo", &[]);
    h.fixture.commit("release 2: nightly backup retired");
    h.pass().await.expect("second pass");
    assert_request_discipline(&h.api.requests());
    assert_eq!(
        h.writes(),
        [
            format!("DELETE {OPS}/namespaces/org-myteam/operations/nightly"),
            format!("PATCH {CLUSTER_PATH}/status"),
            "POST /api/v1/namespaces/default/events".to_owned(),
        ]
    );
    assert!(
        h.api
            .get(&format!("{OPS}/namespaces/org-myteam/operations/foreign"))
            .is_some()
    );
    assert!(
        h.api
            .get(&format!("{OPS}/namespaces/org-myteam/operations/handmade"))
            .is_some()
    );
    let status = h.status();
    assert_eq!(status.last_applied_serial, Some(2));
    assert_eq!(status.inventory.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_namespaces_are_skipped_and_reported_and_lose_their_bindings() {
    let h = harness();
    h.pass().await.expect("first pass");
    // org-vault loses the label.
    h.api.put(
        "/api/v1/namespaces/org-vault",
        namespace("org-vault", false),
    );
    let outcome = h.pass().await;
    assert!(
        outcome.is_err(),
        "a skipped object is reported as a failure"
    );
    let writes = h.writes();
    assert_eq!(
        writes[..2],
        [
            "DELETE /apis/rbac.authorization.k8s.io/v1/namespaces/org-vault/rolebindings/vworkspace-app-operator",
            "DELETE /apis/rbac.authorization.k8s.io/v1/namespaces/org-vault/rolebindings/vworkspace-operation-runner",
        ]
    );
    assert!(
        !writes.iter().any(|w| w.contains("vaultwarden")),
        "nothing is applied to or pruned from an unmanaged namespace: {writes:?}"
    );
    let (status, reason, message) = h.condition("Applied");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NamespaceNotManaged")
    );
    assert!(
        message.contains("ApplicationInstance org-vault/vaultwarden"),
        "{message}"
    );
    assert_eq!(
        h.status()
            .managed_namespaces
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["org-myteam"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_end_the_pass_with_the_reason_and_the_next_pass_recovers() {
    let h = harness();
    // 500 on the second object: the first stays applied, nothing is pruned, status says why.
    h.api.fault(Method::PATCH, "/operations/nightly", 500);
    assert!(h.pass().await.is_err());
    let (status, reason, message) = h.condition("Applied");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ApplyFailed"));
    assert!(
        message.contains("apply Operation org-myteam/nightly"),
        "{message}"
    );
    let st = h.status();
    assert_eq!(
        st.last_applied_serial, None,
        "a partial apply is not an applied release"
    );
    assert_eq!(
        st.inventory.len(),
        1,
        "what was written is owned: {:?}",
        st.inventory
    );
    // 409 and 429 on the next pass's first write: same outcome, then a clean pass converges.
    h.api
        .fault(Method::PATCH, "/applicationinstances/vaultwarden", 429);
    assert!(h.pass().await.is_err());
    assert_eq!(h.condition("Applied").1, "ApplyFailed");
    h.api.fault(Method::GET, "/configmaps/trust", 500);
    assert!(h.pass().await.is_err());
    assert_eq!(h.condition("Ready").1, "ApiRequestFailed");
    assert!(
        !h.writes().iter().any(|w| w.contains("/namespaces/org-")),
        "nothing written when the trust inputs cannot be read"
    );
    h.pass().await.expect("recovered");
    let st = h.status();
    assert_eq!(st.last_applied_serial, Some(1));
    assert_eq!(st.inventory.len(), 3);
    assert_eq!(h.condition("Ready").0, "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_creates_renews_and_yields_over_http() {
    use vworkspace_operator::leader::Elector;
    let api = Arc::new(FakeApi::default());
    let client = api.client();
    let a = Elector::new(client.clone(), "vworkspace-system", "pod-a".into());
    let b = Elector::new(client, "vworkspace-system", "pod-b".into());
    let t = |s: i64| jiff::Timestamp::from_second(1_800_000_000 + s).expect("time");
    assert!(a.try_hold(t(0)).await.expect("a"));
    let lease_path =
        "/apis/coordination.k8s.io/v1/namespaces/vworkspace-system/leases/vworkspace-app-operator";
    assert_eq!(
        api.requests()
            .iter()
            .map(Recorded::line)
            .collect::<Vec<_>>(),
        [
            format!("GET {lease_path}"),
            "POST /apis/coordination.k8s.io/v1/namespaces/vworkspace-system/leases".to_owned()
        ]
    );
    // The POST handler of the fake names objects itself; store the Lease where GET finds it.
    let created = api.requests()[1].body.clone();
    api.put(lease_path, created);
    api.clear();
    assert!(
        !b.try_hold(t(5)).await.expect("b"),
        "b follows while a renews"
    );
    assert!(a.try_hold(t(6)).await.expect("a renews"));
    assert_eq!(
        api.requests().last().map(Recorded::line),
        Some(format!("PUT {lease_path}"))
    );
    assert_eq!(
        api.requests()
            .last()
            .map(|r| r.body["metadata"]["resourceVersion"].is_null()),
        Some(true)
    );
    // a stops renewing; 15 s later b takes over.
    assert!(b.try_hold(t(30)).await.expect("b takes over"));
    let lease = api.get(lease_path).expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "pod-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 2);
    // A lost race (409) is not an error.
    api.put(lease_path, json!({"metadata": {"name": "vworkspace-app-operator", "resourceVersion": "1"}, "spec": {}}));
    api.fault(Method::PUT, "/leases/", 409);
    assert!(!a.try_hold(t(40)).await.expect("conflict"));
}

/// One RBAC rule as `deploy/` writes it.
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

fn list_of(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn rules_of(role: &Value) -> Vec<Rule> {
    role["rules"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| Rule {
                    groups: list_of(&r["apiGroups"]),
                    resources: list_of(&r["resources"]),
                    verbs: list_of(&r["verbs"]),
                    names: list_of(&r["resourceNames"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The rights `deploy/` gives the operator's ServiceAccount: cluster-wide rules, rules per namespace
/// (the vworkspace-system Role) and the rules of the ClusterRole bound in each managed namespace.
struct DeployRbac {
    cluster_wide: Vec<Rule>,
    namespaced: Vec<(String, Vec<Rule>)>,
    per_managed_namespace: Vec<Rule>,
}

fn deploy_rbac() -> DeployRbac {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let kustomization: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(dir.join("kustomization.yaml")).expect("read"),
    )
    .expect("yaml");
    let mut docs: Vec<Value> = Vec::new();
    for file in list_of(&kustomization["resources"]) {
        let text = std::fs::read_to_string(dir.join(file)).expect("read");
        let parsed: Vec<Value> = serde_saphyr::from_str_multiple(&text).expect("yaml");
        docs.extend(parsed);
    }
    let operator = |subjects: &Value| {
        subjects.as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == "vworkspace-app-operator"
                    && s["namespace"] == "vworkspace-system"
            })
        })
    };
    let find = |kind: &str, name: &str, namespace: Option<&str>| {
        docs.iter()
            .find(|d| {
                d["kind"] == kind
                    && d["metadata"]["name"] == name
                    && namespace.is_none_or(|ns| d["metadata"]["namespace"] == ns)
            })
            .map(rules_of)
            .unwrap_or_default()
    };
    let mut rbac = DeployRbac {
        cluster_wide: Vec::new(),
        namespaced: Vec::new(),
        per_managed_namespace: find("ClusterRole", "vworkspace-app-operator-namespace", None),
    };
    for d in &docs {
        if !operator(&d["subjects"]) {
            continue;
        }
        let role = d["roleRef"]["name"].as_str().unwrap_or_default();
        match d["kind"].as_str() {
            Some("ClusterRoleBinding") => rbac.cluster_wide.extend(find("ClusterRole", role, None)),
            Some("RoleBinding") => {
                let ns = d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let rules = if d["roleRef"]["kind"] == "Role" {
                    find("Role", role, Some(&ns))
                } else {
                    find("ClusterRole", role, None)
                };
                rbac.namespaced.push((ns, rules));
            }
            _ => {}
        }
    }
    rbac
}

/// (verb, group, resource[/subresource], namespace, name) of a request, as the authorizer sees it.
fn attributes(r: &Recorded) -> (String, String, String, String, String) {
    let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest.to_vec()),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest.to_vec()),
        _ => panic!("unexpected path {}", r.path),
    };
    let (namespace, rest) = match rest.as_slice() {
        ["namespaces", ns, more @ ..] if !more.is_empty() => ((*ns).to_owned(), more.to_vec()),
        _ => (String::new(), rest),
    };
    let (resource, name) = match rest.as_slice() {
        [resource] => ((*resource).to_owned(), String::new()),
        [resource, name] => ((*resource).to_owned(), (*name).to_owned()),
        [resource, name, sub] => (format!("{resource}/{sub}"), (*name).to_owned()),
        _ => panic!("unexpected path {}", r.path),
    };
    let verb = match r.method {
        Method::GET if name.is_empty() && r.query.contains("watch=true") => "watch",
        Method::GET if name.is_empty() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::DELETE => "delete",
        _ => "unknown",
    };
    (verb.to_owned(), group, resource, namespace, name)
}

fn allowed(rules: &[Rule], verb: &str, group: &str, resource: &str, name: &str) -> bool {
    rules.iter().any(|rule| {
        rule.groups.iter().any(|g| g == group)
            && rule.resources.iter().any(|r| r == resource)
            && rule.verbs.iter().any(|v| v == verb)
            && (rule.names.is_empty() || rule.names.iter().any(|n| n == name))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_allowed_by_deploy_rbac() {
    let rbac = deploy_rbac();
    let h = harness();
    let mut requests = Vec::new();
    h.pass().await.expect("first pass");
    requests.extend(h.api.requests());
    // A prune, then a namespace losing its label (bindings deleted).
    std::fs::remove_file(
        h.fixture
            .repo
            .join("clusters/demo/namespaces/org-myteam/operations/nightly.yaml"),
    )
    .expect("remove");
    h.fixture.release("demo", &[]);
    h.fixture.commit("release 2");
    h.pass().await.expect("second pass");
    requests.extend(h.api.requests());
    h.api.put(
        "/api/v1/namespaces/org-vault",
        namespace("org-vault", false),
    );
    let _ = h.pass().await;
    requests.extend(h.api.requests());
    // Leader election.
    let elector = vworkspace_operator::leader::Elector::new(
        h.api.client(),
        "vworkspace-system",
        "pod-a".into(),
    );
    h.api.clear();
    elector
        .try_hold(jiff::Timestamp::now())
        .await
        .expect("lease");
    requests.extend(h.api.requests());

    let managed = ["org-myteam", "org-vault"];
    assert!(requests.len() > 20);
    for r in &requests {
        let (verb, group, resource, namespace, name) = attributes(r);
        let ok = allowed(&rbac.cluster_wide, &verb, &group, &resource, &name)
            || rbac.namespaced.iter().any(|(ns, rules)| {
                *ns == namespace && allowed(rules, &verb, &group, &resource, &name)
            })
            || (managed.contains(&namespace.as_str())
                && allowed(&rbac.per_managed_namespace, &verb, &group, &resource, &name));
        assert!(
            ok,
            "deploy/ does not allow {verb} {group}/{resource} {namespace}/{name} ({})",
            r.line()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_stopped_between_apply_and_prune_is_finished_by_the_next() {
    let h = harness();
    h.pass().await.expect("first pass");
    std::fs::remove_file(
        h.fixture
            .repo
            .join("clusters/demo/namespaces/org-myteam/operations/nightly.yaml"),
    )
    .expect("remove");
    // A new instance too, so the pass applies before it prunes.
    h.fixture.write(
        "clusters/demo/namespaces/org-myteam/applicationinstances/wiki.yaml",
        &nextcloud("unused").replace("name: nextcloud", "name: wiki"),
    );
    h.fixture.release("demo", &[]);
    h.fixture.commit("release 2: wiki in, nightly out");
    // The prune fails (as if the operator died after applying): the stale object stays owned.
    h.api.fault(Method::DELETE, "/operations/nightly", 500);
    assert!(h.pass().await.is_err());
    assert_eq!(h.condition("Applied").1, "ApplyFailed");
    let st = h.status();
    assert_eq!(
        st.last_applied_serial,
        Some(1),
        "release 2 is not applied yet"
    );
    assert!(
        st.inventory.iter().any(|i| i.name == "nightly"),
        "still ours, still to prune"
    );
    assert!(
        st.inventory.iter().any(|i| i.name == "wiki"),
        "what was applied is ours"
    );
    // The next pass finishes the job.
    h.pass().await.expect("second attempt");
    assert_eq!(
        h.writes(),
        [
            format!("DELETE {OPS}/namespaces/org-myteam/operations/nightly"),
            format!("PATCH {CLUSTER_PATH}/status"),
            "POST /api/v1/namespaces/default/events".to_owned(),
        ]
    );
    let st = h.status();
    assert_eq!(st.last_applied_serial, Some(2));
    assert!(!st.inventory.iter().any(|i| i.name == "nightly"));
}
