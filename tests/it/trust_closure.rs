//! Trust closure in the cluster (issue 12), at the HTTP boundary: the `Cluster` pass runs against the
//! fake API server on a real signed repository (2-of-2 release, real `age` values), publishes what its
//! verified release declares, and the child controllers, sharing that declared set, act only on it.
//! An API writer in a managed namespace gets nothing decrypted, materialized or run; an altered
//! declared instance keeps its declared children and is put back by the next pass; a restarted
//! operator acts on nothing before its first verified pass. Every request is asserted exactly.

use std::sync::Arc;

use base64::Engine;
use http::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::support::fake_api::*;
use crate::support::rbac_check::assert_allowed_by_deploy;
use vworkspace_controller::children::{self, ChildContext};
use vworkspace_controller::cluster::{self, Context, Settings};
use vworkspace_controller::metrics::{Metrics, RefusalLabel};
use vworkspace_core::crd::{Cluster, Operation, OperationPhase, WatchedInstance};

const CLUSTER_PATH: &str = "/apis/ops.vworkspace.io/v1alpha1/clusters/demo";
const MYTEAM_INSTANCES: &str =
    "/apis/apps.vworkspace.io/v1alpha1/namespaces/org-myteam/applicationinstances";
const MYTEAM_OPERATIONS: &str = "/apis/ops.vworkspace.io/v1alpha1/namespaces/org-myteam/operations";
const NEXTCLOUD: &str =
    "/apis/apps.vworkspace.io/v1alpha1/namespaces/org-myteam/applicationinstances/nextcloud";
const VAULTWARDEN: &str =
    "/apis/apps.vworkspace.io/v1alpha1/namespaces/org-vault/applicationinstances/vaultwarden";
const NEXTCLOUD_SECRET: &str = "/api/v1/namespaces/org-myteam/secrets/nextcloud-values";
const EVENTS: &str = "/api/v1/namespaces/org-myteam/events";

struct Harness {
    fixture: Fixture,
    api: Arc<FakeApi>,
    ctx: Arc<Context>,
    _cache: tempfile::TempDir,
}

fn namespace(name: &str, managed: bool) -> Value {
    let labels = if managed {
        json!({"app.vworkspace.io/managed-by": "vworkspace"})
    } else {
        json!({})
    };
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels,
           "annotations": {"app.vworkspace.io/allowed-operation-templates": "velero-namespace-backup"}}})
}

/// The fake API with the fixture's trust inputs, two managed namespaces and a Cluster `demo`;
/// `policy` is the Cluster's `spec.policy` (None: the default).
fn harness(policy: Option<Value>) -> Harness {
    let fixture = fixture();
    let api = Arc::new(FakeApi::default());
    crate::support::seed_trust_inputs(&api, &fixture);
    for name in ["org-myteam", "org-vault"] {
        api.put(&format!("/api/v1/namespaces/{name}"), namespace(name, true));
    }
    let mut spec = json!({
        "clusterId": "demo",
        "source": {"url": format!("file://{}", fixture.repo.display()), "ref": {"branch": "main"}, "interval": "5m"},
        "commitSigners": {"configMapRef": {"name": "trust", "key": "commit_signers"}},
        "release": {"signersConfigMapRef": {"name": "trust", "key": "release_signers"}, "threshold": 2},
        "decryption": {"identitySecretRef": {"name": "cluster-age"}}
    });
    if let Some(policy) = policy {
        spec["policy"] = policy;
    }
    api.put(
        CLUSTER_PATH,
        json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Cluster",
               "metadata": {"name": "demo", "uid": "0f5a-uid", "generation": 1, "resourceVersion": "1"},
               "spec": spec}),
    );
    let cache = tempfile::tempdir().expect("cache");
    let ctx = Arc::new(context(&api, cache.path()));
    Harness {
        fixture,
        api,
        ctx,
        _cache: cache,
    }
}

/// A `Context` as `run` builds it at process start: an empty declared set.
fn context(api: &Arc<FakeApi>, cache: &std::path::Path) -> Context {
    let settings = Settings {
        namespace: "vworkspace-system".into(),
        cache_dir: cache.to_owned(),
        fetch: Default::default(),
        limits: Default::default(),
        pass_timeout: std::time::Duration::from_secs(60),
    };
    Context::new(api.client(), settings, Arc::new(Metrics::default()))
}

/// The child controllers' context, sharing the Cluster pass's declared set and metrics (as `run`).
fn children(api: &Arc<FakeApi>, ctx: &Context) -> Arc<ChildContext> {
    Arc::new(ChildContext {
        client: api.client(),
        namespace: "vworkspace-system".into(),
        velero_namespace: "velero".into(),
        limits: Default::default(),
        clock: || jiff::Timestamp::from_second(1_800_000_000).expect("time"),
        declared: ctx.declared.clone(),
        metrics: ctx.metrics.clone(),
        caches: Default::default(),
        access_lost: Default::default(),
    })
}

/// The fixture's `demo` Cluster opts out of bound values: its vaultwarden token is a stock `age -a`
/// value, the kind an API writer can copy anywhere the cluster key decrypts.
fn interop() -> Option<Value> {
    Some(json!({"requireBoundValues": false}))
}

impl Harness {
    fn cluster(&self) -> Cluster {
        serde_json::from_value(self.api.get(CLUSTER_PATH).expect("cluster")).expect("Cluster")
    }

    async fn pass_with(&self, ctx: &Arc<Context>) -> Result<(), vworkspace_controller::Error> {
        self.api.clear();
        let result = cluster::reconcile(Arc::new(self.cluster()), ctx.clone())
            .await
            .map(drop);
        // As the API server does: every object has a uid (children's owner references need it).
        for (path, object) in self.api.objects.lock().expect("lock").iter_mut() {
            if object["metadata"]["uid"].is_null() {
                object["metadata"]["uid"] = json!(format!("uid{}", path.replace('/', "-")));
            }
        }
        result
    }

    async fn pass(&self) {
        self.pass_with(&self.ctx).await.expect("pass");
    }

    fn lines(&self) -> Vec<String> {
        self.api.requests().iter().map(Recorded::line).collect()
    }

    fn writes(&self) -> Vec<String> {
        self.api
            .requests()
            .iter()
            .filter(|r| r.is_write())
            .map(Recorded::line)
            .collect()
    }

    fn instance(&self, path: &str) -> Arc<WatchedInstance> {
        Arc::new(serde_json::from_value(self.api.get(path).expect("instance")).expect("typed"))
    }

    fn operation(&self, path: &str) -> Arc<Operation> {
        Arc::new(serde_json::from_value(self.api.get(path).expect("operation")).expect("typed"))
    }

    /// The armored value the verified release put at `pointer` of a live object.
    fn ciphertext(&self, path: &str, pointer: &str) -> String {
        self.api.get(path).expect("object")["spec"]
            .pointer(pointer)
            .and_then(Value::as_str)
            .expect("armored value")
            .to_owned()
    }

    fn refused(&self, reason: &'static str, kind: &'static str) -> u64 {
        self.ctx
            .metrics
            .refused
            .get_or_create(&RefusalLabel { reason, kind })
            .get()
    }
}

/// No request body anywhere carries `marker`.
fn assert_nowhere(api: &FakeApi, marker: &str) {
    for r in api.requests() {
        assert!(
            !r.body.to_string().contains(marker),
            "{marker} in {}",
            r.line()
        );
    }
    for (path, object) in api.objects.lock().expect("lock").iter() {
        let text = object.to_string();
        let decoded = object["data"]["values.yaml"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        assert!(
            !text.contains(marker) && !decoded.contains(marker),
            "{marker} stored at {path}"
        );
    }
}

fn values_secret(api: &FakeApi, path: &str) -> String {
    let secret = api.get(path).expect("values Secret");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["values.yaml"].as_str().expect("values.yaml"))
        .expect("base64");
    String::from_utf8(bytes).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_instance_gets_no_secret_source_or_helm_release() {
    let h = harness(interop());
    h.pass().await;
    let children = children(&h.api, &h.ctx);
    // The attack of issue 12: copy the stock-age token Git declared for org-vault into an instance
    // written straight to the API in another managed namespace, with and without the cluster label.
    let token = h.ciphertext(VAULTWARDEN, "/values/adminToken/value");
    for (name, labels) in [
        (
            "intruder",
            json!({"app.vworkspace.io/managed-by": "vworkspace", "gitops.vworkspace.io/cluster": "demo"}),
        ),
        ("unlabelled", json!({})),
    ] {
        let path = format!("{MYTEAM_INSTANCES}/{name}");
        h.api.put(
            &path,
            json!({"apiVersion": "apps.vworkspace.io/v1alpha1", "kind": "ApplicationInstance",
                   "metadata": {"name": name, "namespace": "org-myteam", "uid": format!("{name}-uid"), "generation": 1, "labels": labels},
                   "spec": {"chart": {"repository": "https://charts.example.org/", "name": "exfil", "version": "1.0.0"},
                            "values": {"leak": token}}}),
        );
        h.api.clear();
        children::instance::reconcile(h.instance(&path), children.clone())
            .await
            .expect("reconciled");
        assert_eq!(
            h.lines(),
            [
                "GET /api/v1/namespaces/org-myteam".to_owned(),
                "GET /apis/ops.vworkspace.io/v1alpha1/clusters".to_owned(),
                format!("PATCH {path}/status"),
                format!("POST {EVENTS}"),
            ],
            "{name}: no identity read, no Secret, no source, no HelmRelease"
        );
        assert_allowed_by_deploy(&h.api.requests(), &["org-myteam", "org-vault"]);
        let status = h.api.get(&path).expect("instance")["status"].clone();
        assert_eq!(status["conditions"][0]["status"], "False");
        assert_eq!(status["conditions"][0]["reason"], "NotDeclaredInRelease");
        let message = status["conditions"][0]["message"]
            .as_str()
            .expect("message");
        assert!(message.contains("Cluster demo serial 1"), "{message}");
        assert!(message.contains("vworkspace-operator release"), "{message}");
        let event = h
            .api
            .requests()
            .into_iter()
            .find(|r| r.method == Method::POST)
            .expect("event")
            .body;
        assert_eq!(event["reason"], "NotDeclaredInRelease");
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["involvedObject"]["name"], name);
        assert_eq!(event["involvedObject"]["kind"], "ApplicationInstance");
        // Judged again later: the status does not move and no second Event is recorded.
        h.api.clear();
        children::instance::reconcile(h.instance(&path), children.clone())
            .await
            .expect("reconciled");
        assert_eq!(h.writes(), Vec::<String>::new());
    }
    assert_eq!(h.refused("NotDeclaredInRelease", "ApplicationInstance"), 2);
    assert!(
        h.ctx
            .metrics
            .encode()
            .contains("vworkspace_children_refused_total{reason=\"NotDeclaredInRelease\",kind=\"ApplicationInstance\"} 2")
    );
    assert_nowhere(&h.api, ADMIN_TOKEN);
    // The next Cluster pass leaves them alone (not its to prune) and still declares only Git's.
    h.pass().await;
    assert!(h.api.get(&format!("{MYTEAM_INSTANCES}/intruder")).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_restore_creates_nothing() {
    let h = harness(interop());
    h.pass().await;
    let children = children(&h.api, &h.ctx);
    let path = format!("{MYTEAM_OPERATIONS}/rollback");
    h.api.put(
        &path,
        json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Operation",
               "metadata": {"name": "rollback", "namespace": "org-myteam", "uid": "rb-uid", "generation": 1,
                            "labels": {"app.vworkspace.io/managed-by": "vworkspace", "gitops.vworkspace.io/cluster": "demo"}},
               "spec": {"type": "Restore", "template": "velero-namespace-backup",
                        "parameters": {"backupName": "org-myteam-nightly-0000000000"}}}),
    );
    h.api.clear();
    children::operation::reconcile(h.operation(&path), children.clone())
        .await
        .expect("reconciled");
    assert_eq!(
        h.lines(),
        [
            "GET /api/v1/namespaces/org-myteam".to_owned(),
            "GET /apis/ops.vworkspace.io/v1alpha1/clusters".to_owned(),
            format!("PATCH {path}/status"),
            format!("POST {EVENTS}"),
        ],
        "no Velero Restore, no Job, no Workflow"
    );
    let status = h.operation(&path).status.clone().expect("status");
    assert_eq!(status.phase, Some(OperationPhase::Failed));
    assert_eq!(status.reason.as_deref(), Some("NotDeclaredInRelease"));
    assert_eq!(h.refused("NotDeclaredInRelease", "Operation"), 1);
    // A refusal is not a run: judged again, still nothing.
    h.api.clear();
    children::operation::reconcile(h.operation(&path), children.clone())
        .await
        .expect("reconciled");
    assert_eq!(h.writes(), Vec::<String>::new());
    // The declared Operation runs, from the declared spec.
    let nightly = format!("{MYTEAM_OPERATIONS}/nightly");
    h.api.clear();
    children::operation::reconcile(h.operation(&nightly), children)
        .await
        .expect("reconciled");
    assert!(
        h.writes().iter().any(|w| w
            .starts_with("PATCH /apis/velero.io/v1/namespaces/velero/backups/org-myteam-nightly-")),
        "{:?}",
        h.writes()
    );
    assert!(!h.writes().iter().any(|w| w.contains("/restores/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_declared_instance_is_put_back_and_its_secret_never_carries_the_altered_values()
{
    let h = harness(interop());
    h.pass().await;
    let children = children(&h.api, &h.ctx);
    children::instance::reconcile(h.instance(NEXTCLOUD), children.clone())
        .await
        .expect("reconciled");
    let declared_secret = values_secret(&h.api, NEXTCLOUD_SECRET);
    assert!(declared_secret.contains(SMTP_PASSWORD));
    let declared_spec = h.api.get(NEXTCLOUD).expect("instance")["spec"].clone();

    // An API writer swaps in the org-vault token and points the chart elsewhere.
    let token = h.ciphertext(VAULTWARDEN, "/values/adminToken/value");
    let mut altered = h.api.get(NEXTCLOUD).expect("instance");
    altered["spec"]["values"]["nextcloud"]["mail"]["smtp"]["password"] = json!(token);
    altered["spec"]["values"]["stolen"] = json!(token);
    altered["spec"]["chart"]["repository"] = json!("https://charts.attacker.example/");
    h.api.edit(NEXTCLOUD, altered);
    h.api.clear();
    children::instance::reconcile(h.instance(NEXTCLOUD), children.clone())
        .await
        .expect("reconciled");
    // The children follow the declared spec: nothing of theirs changes; the instance says why.
    assert_eq!(
        h.writes(),
        [
            format!("PATCH {NEXTCLOUD}/status"),
            format!("POST {EVENTS}")
        ]
    );
    assert_eq!(values_secret(&h.api, NEXTCLOUD_SECRET), declared_secret);
    let release = h
        .api
        .get("/apis/helm.toolkit.fluxcd.io/v2/namespaces/org-myteam/helmreleases/nextcloud")
        .expect("HelmRelease");
    assert!(!release.to_string().contains("attacker"));
    let source = h
        .api
        .get("/apis/source.toolkit.fluxcd.io/v1/namespaces/org-myteam/helmrepositories/nextcloud")
        .expect("HelmRepository");
    assert_eq!(source["spec"]["url"], "https://nextcloud.github.io/helm/");
    let status = h.api.get(NEXTCLOUD).expect("instance")["status"].clone();
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "SpecDiffersFromRelease");
    assert_eq!(
        h.refused("SpecDiffersFromRelease", "ApplicationInstance"),
        1
    );

    // The next Cluster pass puts the declared spec back (drift), by server-side apply.
    h.pass().await;
    let restore = h
        .api
        .requests()
        .into_iter()
        .find(|r| r.method == Method::PATCH && r.path == NEXTCLOUD)
        .expect("the declared instance is re-applied");
    assert_eq!(restore.content_type, "application/apply-patch+yaml");
    assert_eq!(restore.body["spec"], declared_spec);
    assert_eq!(
        h.api.get(NEXTCLOUD).expect("instance")["spec"],
        declared_spec
    );
    // And the instance is no longer refused; its children did not move.
    h.api.clear();
    children::instance::reconcile(h.instance(NEXTCLOUD), children)
        .await
        .expect("reconciled");
    assert_eq!(h.writes(), [format!("PATCH {NEXTCLOUD}/status")]);
    let status = h.api.get(NEXTCLOUD).expect("instance")["status"].clone();
    assert_eq!(status["conditions"][0]["reason"], "WaitingForHelmRelease");
    assert_nowhere(&h.api, ADMIN_TOKEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_declared_operation_runs_nothing_of_the_change() {
    let h = harness(interop());
    h.pass().await;
    let children = children(&h.api, &h.ctx);
    let nightly = format!("{MYTEAM_OPERATIONS}/nightly");
    let mut altered = h.api.get(&nightly).expect("operation");
    altered["spec"]["type"] = json!("Restore");
    altered["spec"]["parameters"] = json!({"backupName": "org-myteam-old"});
    h.api.edit(&nightly, altered);
    h.api.clear();
    children::operation::reconcile(h.operation(&nightly), children.clone())
        .await
        .expect("reconciled");
    assert_eq!(
        h.writes(),
        [format!("PATCH {nightly}/status"), format!("POST {EVENTS}")]
    );
    let status = h.operation(&nightly).status.clone().expect("status");
    assert_eq!(status.phase, Some(OperationPhase::Failed));
    assert_eq!(status.reason.as_deref(), Some("SpecDiffersFromRelease"));
    // Put back by the pass, the declared Backup runs (the refusal was not a run).
    h.pass().await;
    h.api.clear();
    children::operation::reconcile(h.operation(&nightly), children)
        .await
        .expect("reconciled");
    let writes = h.writes();
    assert!(
        writes
            .iter()
            .any(|w| w.starts_with("PATCH /apis/velero.io/v1/namespaces/velero/backups/")),
        "{writes:?}"
    );
    assert!(
        !writes.iter().any(|w| w.contains("/restores/")),
        "{writes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_acts_on_nothing_before_the_first_verified_pass() {
    let h = harness(interop());
    h.pass().await;
    let before = children(&h.api, &h.ctx);
    children::instance::reconcile(h.instance(NEXTCLOUD), before)
        .await
        .expect("reconciled");
    let declared_secret = values_secret(&h.api, NEXTCLOUD_SECRET);

    // While the operator is down, an API writer alters the declared instance and adds an Operation.
    let token = h.ciphertext(VAULTWARDEN, "/values/adminToken/value");
    let mut altered = h.api.get(NEXTCLOUD).expect("instance");
    altered["spec"]["values"]["nextcloud"]["mail"]["smtp"]["password"] = json!(token);
    h.api.edit(NEXTCLOUD, altered);
    let restore = format!("{MYTEAM_OPERATIONS}/restore");
    h.api.put(
        &restore,
        json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Operation",
               "metadata": {"name": "restore", "namespace": "org-myteam", "uid": "r-uid", "generation": 1,
                            "labels": {"gitops.vworkspace.io/cluster": "demo"}},
               "spec": {"type": "Restore", "template": "velero-namespace-backup", "parameters": {"backupName": "x"}}}),
    );

    // A new process: an empty declared set.
    let cache = tempfile::tempdir().expect("cache");
    let restarted = Arc::new(context(&h.api, cache.path()));
    let after = children(&h.api, &restarted);
    for path in [NEXTCLOUD, VAULTWARDEN] {
        h.api.clear();
        children::instance::reconcile(h.instance(path), after.clone())
            .await
            .expect("reconciled");
        let namespace = path.split('/').nth(5).expect("namespace");
        assert_eq!(
            h.lines(),
            [
                format!("GET /api/v1/namespaces/{namespace}"),
                "GET /apis/ops.vworkspace.io/v1alpha1/clusters".to_owned(),
                format!("PATCH {path}/status"),
            ]
        );
        let status = h.api.get(path).expect("instance")["status"].clone();
        assert_eq!(
            status["conditions"][0]["reason"],
            "WaitingForVerifiedRelease"
        );
        assert_eq!(status["conditions"][0]["status"], "Unknown");
    }
    for path in [restore.clone(), format!("{MYTEAM_OPERATIONS}/nightly")] {
        h.api.clear();
        children::operation::reconcile(h.operation(&path), after.clone())
            .await
            .expect("reconciled");
        assert_eq!(
            h.lines(),
            [
                "GET /api/v1/namespaces/org-myteam".to_owned(),
                "GET /apis/ops.vworkspace.io/v1alpha1/clusters".to_owned(),
                format!("PATCH {path}/status"),
            ]
        );
        let status = h.operation(&path).status.clone().expect("status");
        assert_eq!(status.phase, Some(OperationPhase::Pending));
        assert_eq!(status.reason.as_deref(), Some("WaitingForVerifiedRelease"));
    }
    assert_eq!(values_secret(&h.api, NEXTCLOUD_SECRET), declared_secret);

    // The first verified pass of the new process: the altered instance is put back, the children
    // act on the declared set, the hand-made Restore is refused.
    h.pass_with(&restarted).await.expect("pass");
    assert!(h.writes().contains(&format!("PATCH {NEXTCLOUD}")));
    h.api.clear();
    children::instance::reconcile(h.instance(NEXTCLOUD), after.clone())
        .await
        .expect("reconciled");
    assert!(
        !h.writes().contains(&format!("PATCH {NEXTCLOUD_SECRET}")),
        "the Secret already holds the declared values"
    );
    assert_eq!(values_secret(&h.api, NEXTCLOUD_SECRET), declared_secret);
    h.api.clear();
    children::operation::reconcile(h.operation(&restore), after)
        .await
        .expect("reconciled");
    assert_eq!(
        h.writes(),
        [format!("PATCH {restore}/status"), format!("POST {EVENTS}")]
    );
    assert_nowhere(&h.api, ADMIN_TOKEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_refuses_unbound_values_by_default() {
    // No `policy`: requireBoundValues defaults to true, and the fixture's stock-age token is refused.
    let h = harness(None);
    assert!(h.cluster().spec.policy.require_bound_values);
    let error = h.pass_with(&h.ctx).await.expect_err("refused");
    assert_eq!(error.reason(), "ValuesInvalid");
    assert!(
        !h.writes()
            .iter()
            .any(|w| w.contains("/applicationinstances/") && !w.ends_with("/status")),
        "nothing applied: {:?}",
        h.writes()
    );
    assert!(h.ctx.declared.release("demo").is_none(), "nothing declared");
    let status = h.cluster().status.expect("status");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert!(ready.message.contains("not bound"), "{}", ready.message);
    assert!(!ready.message.contains("PLAINTEXT-MARKER"));
    drop(h.fixture);
}
