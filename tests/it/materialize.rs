//! The children controllers against the fake API server at the HTTP boundary: the exact requests for
//! an ApplicationInstance (values Secret, Flux source, HelmRelease, mirrored status) and for
//! Operations (Velero Backup, Job from a template, a refused template), no write when nothing
//! changed, no plaintext anywhere but the values Secret, and every request allowed by deploy/.
//! Values are encrypted by the real `age` CLI and by our bound `encrypt`. The controllers act only on
//! what a verified release declares: every object a test puts is also declared in a signed release
//! of the shared fixture's repository (tests/support/declare.rs); tests/trust_closure.rs covers what
//! is not declared.

use std::sync::Arc;

use base64::Engine;
use http::Method;
use serde_json::{Value, json};

use crate::support::fake_api::*;
use crate::support::rbac_check::assert_allowed_by_deploy;
use vworkspace_controller::children::{self, ChildContext};
use vworkspace_core::crd::{Operation, OperationPhase, WatchedInstance};

const PLAINTEXT_SMTP: &str = "smtp-PLAINTEXT-MARKER-1";
const PLAINTEXT_TOKEN: &str = "token-PLAINTEXT-MARKER-2";
const NEXTCLOUD: &str =
    "/apis/apps.vworkspace.io/v1alpha1/namespaces/org-myteam/applicationinstances/nextcloud";
const MYTEAM_OPERATIONS: &str = "/apis/ops.vworkspace.io/v1alpha1/namespaces/org-myteam/operations";
const SECRET: &str = "/api/v1/namespaces/org-myteam/secrets/nextcloud-values";
const HELM_RELEASE: &str =
    "/apis/helm.toolkit.fluxcd.io/v2/namespaces/org-myteam/helmreleases/nextcloud";
const HELM_REPOSITORY: &str =
    "/apis/source.toolkit.fluxcd.io/v1/namespaces/org-myteam/helmrepositories/nextcloud";

struct Keys {
    fixture: crate::common::Fixture,
    identity: String,
    recipient: String,
}

/// The shared fixture's cluster key (its repository is where the tests' objects are declared).
fn keys() -> Keys {
    let fixture = crate::common::fixture();
    let identity = std::fs::read_to_string(fixture.path("cluster.agekey")).expect("identity");
    let recipient = fixture.recipient.clone();
    Keys {
        fixture,
        identity,
        recipient,
    }
}

/// Declares every ApplicationInstance and Operation the fake API holds in a new verified release,
/// and publishes it to the controllers, as a `Cluster` pass does after applying them.
fn declare_live(keys: &Keys, api: &FakeApi, ctx: &ChildContext) {
    let objects: Vec<Value> = api
        .objects
        .lock()
        .expect("lock")
        .iter()
        .filter(|(path, _)| {
            path.contains("/applicationinstances/") || path.contains("/operations/")
        })
        .map(|(_, object)| object.clone())
        .collect();
    let cluster: vworkspace_core::crd::Cluster = serde_json::from_value(
        api.get("/apis/ops.vworkspace.io/v1alpha1/clusters/demo")
            .expect("cluster"),
    )
    .expect("Cluster");
    crate::support::declare::declare(&keys.fixture, &objects, &cluster.spec, &ctx.declared);
}

/// `age -a -r <recipient>`: the real CLI.
fn age(keys: &Keys, plaintext: &str) -> String {
    crate::common::age_encrypt(&keys.recipient, plaintext)
}

/// Our `encrypt`, bound to where the value is used.
fn bound(keys: &Keys, plaintext: &str, path: &str) -> String {
    let binding = vworkspace_core::secrets::Binding {
        cluster: "demo".into(),
        namespace: "org-myteam".into(),
        instance: "nextcloud".into(),
        path: path.into(),
    };
    vworkspace_core::secrets::encrypt(plaintext.as_bytes(), &keys.recipient, Some(&binding))
        .expect("encrypt")
}

fn setup(keys: &Keys) -> (Arc<FakeApi>, Arc<ChildContext>) {
    let api = Arc::new(FakeApi::default());
    api.put(
        "/api/v1/namespaces/org-myteam",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "org-myteam", "labels": {"app.vworkspace.io/managed-by": "vworkspace"},
               "annotations": {"app.vworkspace.io/allowed-operation-templates": "pg-dump,velero-namespace-backup"}}}),
    );
    api.put(
        "/api/v1/namespaces/kube-system",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}),
    );
    api.put(
        "/apis/ops.vworkspace.io/v1alpha1/clusters/demo",
        json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Cluster",
               "metadata": {"name": "demo", "uid": "c-uid"},
               "spec": {
                 "clusterId": "demo",
                 "source": {"url": "https://git.example.org/intent.git", "ref": {"branch": "main"}},
                 "commitSigners": {"configMapRef": {"name": "trust"}},
                 "release": {"signersConfigMapRef": {"name": "trust"}, "threshold": 1},
                 "decryption": {"identitySecretRef": {"name": "cluster-age"}},
                 "policy": {"requireBoundValues": false}
               },
               "status": {"managedNamespaces": [{"name": "org-myteam", "allowedOperationTemplates": ["pg-dump", "velero-namespace-backup"]}]}}),
    );
    api.put(
        "/api/v1/namespaces/vworkspace-system/secrets/cluster-age",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cluster-age", "namespace": "vworkspace-system"},
               "data": {"identity.agekey": base64::engine::general_purpose::STANDARD.encode(&keys.identity)}}),
    );
    let ctx = Arc::new(ChildContext {
        client: api.client(),
        namespace: "vworkspace-system".into(),
        velero_namespace: "velero".into(),
        limits: Default::default(),
        clock: || jiff::Timestamp::from_second(1_800_000_000).expect("time"),
        declared: Default::default(),
        metrics: Default::default(),
        caches: Default::default(),
        access_lost: Default::default(),
    });
    (api, ctx)
}

fn put_instance(api: &FakeApi, values: Value) {
    api.put(
        NEXTCLOUD,
        json!({"apiVersion": "apps.vworkspace.io/v1alpha1", "kind": "ApplicationInstance",
               "metadata": {"name": "nextcloud", "namespace": "org-myteam", "uid": "ai-uid", "generation": 2,
                            "labels": {"app.vworkspace.io/managed-by": "vworkspace", "gitops.vworkspace.io/cluster": "demo"}},
               "spec": {"chart": {"repository": "https://nextcloud.github.io/helm/", "name": "nextcloud", "version": "6.6.4"},
                        "values": values}}),
    );
}

fn instance(api: &FakeApi) -> Arc<WatchedInstance> {
    Arc::new(serde_json::from_value(api.get(NEXTCLOUD).expect("instance")).expect("typed"))
}

fn writes(api: &FakeApi) -> Vec<String> {
    api.requests()
        .iter()
        .filter(|r| r.is_write())
        .map(Recorded::line)
        .collect()
}

fn assert_no_plaintext_outside_the_values_secret(api: &FakeApi) {
    for r in api.requests() {
        if r.path == SECRET {
            continue;
        }
        let body = r.body.to_string();
        assert!(
            !body.contains("PLAINTEXT-MARKER"),
            "plaintext in {}: {body}",
            r.line()
        );
    }
}

fn assert_discipline(api: &FakeApi) {
    for r in api.requests() {
        if r.path.contains("/secrets") {
            assert!(
                r.path.trim_start_matches('/').split('/').count() == 6,
                "Secrets by name only: {}",
                r.line()
            );
            assert!(r.method != Method::GET || !r.query.contains("watch"));
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
                Some("vworkspace-gitops")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_becomes_a_values_secret_a_source_and_a_helm_release() {
    let keys = keys();
    let (api, ctx) = setup(&keys);
    put_instance(
        &api,
        json!({
            "nextcloud": {"host": "cloud.example.org", "mail": {"smtp": {"password": bound(&keys, PLAINTEXT_SMTP, "nextcloud.mail.smtp.password")}}},
            "api": {"token": age(&keys, PLAINTEXT_TOKEN)},
        }),
    );
    declare_live(&keys, &api, &ctx);
    children::instance::reconcile(instance(&api), ctx.clone())
        .await
        .expect("reconciled");
    assert_discipline(&api);
    assert_no_plaintext_outside_the_values_secret(&api);
    assert_allowed_by_deploy(&api.requests(), &["org-myteam"]);
    assert_eq!(
        api.requests()
            .iter()
            .map(Recorded::line)
            .collect::<Vec<_>>(),
        [
            "GET /api/v1/namespaces/org-myteam".to_owned(),
            "GET /apis/ops.vworkspace.io/v1alpha1/clusters".to_owned(),
            "GET /api/v1/namespaces/vworkspace-system/secrets/cluster-age".to_owned(),
            // Children never written: applied without a read before each.
            format!("PATCH {SECRET}"),
            format!("PATCH {HELM_REPOSITORY}"),
            format!("PATCH {HELM_RELEASE}"),
            format!("PATCH {NEXTCLOUD}/status"),
        ]
    );
    // The Secret holds exactly the decrypted leaves, as a sparse tree.
    let secret = api.get(SECRET).expect("secret");
    let yaml = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["values.yaml"].as_str().expect("values.yaml"))
        .expect("base64");
    let sparse: Value = serde_json::from_slice(&yaml).expect("json");
    assert_eq!(
        sparse,
        json!({"nextcloud": {"mail": {"smtp": {"password": PLAINTEXT_SMTP}}}, "api": {"token": PLAINTEXT_TOKEN}})
    );
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "ai-uid");
    let release = api.get(HELM_RELEASE).expect("helmrelease");
    assert_eq!(
        release["spec"]["values"],
        json!({"nextcloud": {"host": "cloud.example.org", "mail": {"smtp": {}}}, "api": {}})
    );
    assert_eq!(release["spec"]["valuesFrom"][0]["name"], "nextcloud-values");
    let status = api.get(NEXTCLOUD).expect("instance")["status"].clone();
    assert_eq!(status["conditions"][0]["reason"], "WaitingForHelmRelease");
    assert_eq!(status["observedGeneration"], 2);

    // The HelmRelease asks helm-controller to reconcile for this values Secret write; the Secret
    // carries Flux's watch label; the source asks for the declared chart.
    let requested = release["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"].clone();
    assert_eq!(
        requested,
        format!(
            "values/{}",
            secret["metadata"]["resourceVersion"].as_str().expect("rv")
        )
    );
    assert_eq!(
        secret["metadata"]["labels"]["reconcile.fluxcd.io/watch"],
        "Enabled"
    );
    assert_eq!(
        api.get(HELM_REPOSITORY).expect("source")["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"],
        "chart/nextcloud@6.6.4"
    );

    // Flux reports Ready for this generation and request: the instance mirrors it, and nothing else
    // is written.
    let mut ready = api.get(HELM_RELEASE).expect("helmrelease");
    ready["metadata"]["generation"] = json!(1);
    ready["status"] = json!({"observedGeneration": 1, "lastHandledReconcileAt": requested,
        "conditions": [{"type": "Ready", "status": "True", "reason": "InstallSucceeded", "observedGeneration": 1,
                        "message": "Helm install succeeded for release org-myteam/nextcloud.v1"}]});
    api.put(HELM_RELEASE, ready);
    api.clear();
    children::instance::reconcile(instance(&api), ctx.clone())
        .await
        .expect("reconciled");
    assert_eq!(writes(&api), [format!("PATCH {NEXTCLOUD}/status")]);
    let status = api.get(NEXTCLOUD).expect("instance")["status"].clone();
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["conditions"][0]["reason"], "InstallSucceeded");

    // Unchanged: reads only.
    api.clear();
    children::instance::reconcile(instance(&api), ctx.clone())
        .await
        .expect("reconciled");
    assert_eq!(
        writes(&api),
        Vec::<String>::new(),
        "no write when nothing changed"
    );

    // A new encrypted value (same plaintext path, new ciphertext and a new secret): the Secret, and
    // the HelmRelease's reconcile request for the new Secret (its spec is unchanged); the instance
    // is not Ready until helm-controller has handled that request.
    let mut ai = api.get(NEXTCLOUD).expect("instance");
    ai["spec"]["values"]["api"]["token"] = json!(age(&keys, "token-PLAINTEXT-MARKER-3"));
    api.put(NEXTCLOUD, ai);
    declare_live(&keys, &api, &ctx);
    api.clear();
    children::instance::reconcile(instance(&api), ctx.clone())
        .await
        .expect("reconciled");
    assert_eq!(
        writes(&api),
        [
            format!("PATCH {SECRET}"),
            format!("PATCH {HELM_RELEASE}"),
            format!("PATCH {NEXTCLOUD}/status")
        ]
    );
    assert_no_plaintext_outside_the_values_secret(&api);
    let rotated = api.get(SECRET).expect("secret")["metadata"]["resourceVersion"].clone();
    let release = api.get(HELM_RELEASE).expect("helmrelease");
    assert_eq!(
        release["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"],
        format!("values/{}", rotated.as_str().expect("rv"))
    );
    let status = api.get(NEXTCLOUD).expect("instance")["status"].clone();
    assert_eq!(status["conditions"][0]["status"], "Unknown", "{status}");
    assert_eq!(status["conditions"][0]["reason"], "Progressing", "{status}");

    // No encrypted values left: the Secret goes, and the HelmRelease stops reading it.
    let mut ai = api.get(NEXTCLOUD).expect("instance");
    ai["spec"]["values"] = json!({"nextcloud": {"host": "cloud.example.org"}});
    api.put(NEXTCLOUD, ai);
    declare_live(&keys, &api, &ctx);
    api.clear();
    children::instance::reconcile(instance(&api), ctx)
        .await
        .expect("reconciled");
    assert_eq!(
        writes(&api),
        [
            format!("DELETE {SECRET}"),
            format!("PATCH {HELM_RELEASE}"),
            format!("PATCH {NEXTCLOUD}/status")
        ]
    );
    // The HelmRelease's spec changed, so the API server gave it a new generation: the instance
    // waits for helm-controller to handle that one.
    let status = api.get(NEXTCLOUD).expect("instance")["status"].clone();
    assert_eq!(
        status["conditions"][0]["message"],
        "helm-controller has not yet reconciled generation 2 of the HelmRelease (observed 1)"
    );
    assert!(
        api.get(HELM_RELEASE).expect("hr")["spec"]
            .get("valuesFrom")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_for_another_instance_is_refused_and_nothing_is_written() {
    let keys = keys();
    let (api, ctx) = setup(&keys);
    // A release that declares an Operation (and no instance) in org-myteam is verified and applied.
    put_operation(
        &api,
        "nightly",
        json!({"type": "Backup", "template": "velero-namespace-backup"}),
    );
    declare_live(&keys, &api, &ctx);
    // Bound to another instance's path: copying it here must not decrypt into this instance's Secret.
    let stolen = bound(&keys, PLAINTEXT_SMTP, "some.other.path");
    put_instance(
        &api,
        json!({"nextcloud": {"mail": {"smtp": {"password": stolen}}}}),
    );
    // The release that would declare it is refused by the pipeline (naming the path, no plaintext),
    // so nothing is published ...
    let cluster: vworkspace_core::crd::Cluster = serde_json::from_value(
        api.get("/apis/ops.vworkspace.io/v1alpha1/clusters/demo")
            .expect("cluster"),
    )
    .expect("Cluster");
    let objects = [api.get(NEXTCLOUD).expect("instance")];
    let refused =
        crate::support::declare::try_declare(&keys.fixture, &objects, &cluster.spec, &ctx.declared)
            .expect_err("a value bound elsewhere does not verify");
    let findings = refused.findings().join("; ");
    assert!(
        findings.contains("nextcloud.mail.smtp.password"),
        "{findings}"
    );
    assert!(!findings.contains("PLAINTEXT-MARKER"), "{findings}");
    // ... and the live instance, undeclared, is refused by the controller without a decryption.
    children::instance::reconcile(instance(&api), ctx)
        .await
        .expect("reconciled");
    assert_eq!(
        writes(&api),
        [
            format!("PATCH {NEXTCLOUD}/status"),
            "POST /api/v1/namespaces/org-myteam/events".to_owned()
        ]
    );
    assert!(
        !api.requests().iter().any(|r| r.path.contains("/secrets/")),
        "not even the identity is read"
    );
    let status = api.get(NEXTCLOUD).expect("instance")["status"].clone();
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "NotDeclaredInRelease");
    assert_no_plaintext_outside_the_values_secret(&api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_in_an_unmanaged_namespace_is_left_alone() {
    let keys = keys();
    let (api, ctx) = setup(&keys);
    let mut ai: Value = json!({"apiVersion": "apps.vworkspace.io/v1alpha1", "kind": "ApplicationInstance",
        "metadata": {"name": "x", "namespace": "kube-system", "uid": "u"},
        "spec": {"chart": {"repository": "https://example.org/", "name": "x", "version": "1"}}});
    ai["metadata"]["generation"] = json!(1);
    let ai: WatchedInstance = serde_json::from_value(ai).expect("typed");
    children::instance::reconcile(Arc::new(ai), ctx)
        .await
        .expect("reconciled");
    assert_eq!(
        api.requests()
            .iter()
            .map(Recorded::line)
            .collect::<Vec<_>>(),
        ["GET /api/v1/namespaces/kube-system"]
    );
}

fn put_operation(api: &FakeApi, name: &str, spec: Value) -> String {
    let path = format!("{MYTEAM_OPERATIONS}/{name}");
    api.put(
        &path,
        json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Operation",
               "metadata": {"name": name, "namespace": "org-myteam", "uid": format!("{name}-uid"), "generation": 1},
               "spec": spec}),
    );
    path
}

fn operation(api: &FakeApi, path: &str) -> Arc<Operation> {
    Arc::new(serde_json::from_value(api.get(path).expect("operation")).expect("typed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_runs_once_through_velero() {
    let keys = keys();
    let (api, ctx) = setup(&keys);
    let path = put_operation(
        &api,
        "nightly",
        json!({"type": "Backup", "template": "velero-namespace-backup", "target": {"applicationInstance": "nextcloud"}, "parameters": {"ttl": "720h"}}),
    );
    declare_live(&keys, &api, &ctx);
    children::operation::reconcile(operation(&api, &path), ctx.clone())
        .await
        .expect("reconciled");
    assert_discipline(&api);
    assert_allowed_by_deploy(&api.requests(), &["org-myteam"]);
    let lines: Vec<String> = api.requests().iter().map(Recorded::line).collect();
    // The namespace is read twice: managed, then its allowed templates as they are now.
    assert_eq!(
        lines[..3],
        [
            "GET /api/v1/namespaces/org-myteam",
            "GET /apis/ops.vworkspace.io/v1alpha1/clusters",
            "GET /api/v1/namespaces/org-myteam"
        ]
    );
    let backup_path = lines[3].trim_start_matches("GET ").to_owned();
    assert!(
        backup_path.starts_with("/apis/velero.io/v1/namespaces/velero/backups/org-myteam-nightly-")
    );
    assert_eq!(
        lines[4..],
        [
            format!("PATCH {backup_path}"),
            format!("PATCH {path}/status")
        ]
    );
    let backup = api.get(&backup_path).expect("backup");
    assert_eq!(backup["spec"]["includedNamespaces"], json!(["org-myteam"]));
    assert_eq!(backup["spec"]["ttl"], "720h");
    let status = api.get(&path).expect("op")["status"].clone();
    assert_eq!(status["phase"], "Pending");

    // Velero finishes; the Operation follows; then it never runs again.
    let mut done = api.get(&backup_path).expect("backup");
    done["status"] = json!({"phase": "Completed"});
    api.put(&backup_path, done);
    api.clear();
    children::operation::reconcile(operation(&api, &path), ctx.clone())
        .await
        .expect("reconciled");
    let op = operation(&api, &path);
    let status = op.status.clone().expect("status");
    assert_eq!(status.phase, Some(OperationPhase::Succeeded));
    assert!(status.completion_time.is_some());
    assert_eq!(
        status.outputs.and_then(|o| o.backup_name).as_deref(),
        backup_path.rsplit('/').next()
    );
    // Velero's Backup expires and is deleted; re-applying the same spec does not run it again.
    api.objects.lock().expect("lock").remove(&backup_path);
    api.clear();
    children::operation::reconcile(op, ctx)
        .await
        .expect("reconciled");
    assert_eq!(writes(&api), Vec::<String>::new());
    assert_eq!(
        api.requests()
            .iter()
            .map(Recorded::line)
            .collect::<Vec<_>>(),
        ["GET /api/v1/namespaces/org-myteam"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_command_job_runs_as_the_runner_and_points_at_its_pod() {
    let keys = keys();
    let (api, ctx) = setup(&keys);
    api.put(
        "/api/v1/namespaces/vworkspace-system/configmaps/operation-template-pg-dump",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "operation-template-pg-dump", "namespace": "vworkspace-system"},
               "data": {"image": "registry.example.org/tools/pg:16", "command": "[\"/bin/pg-dump\", \"--all\"]"}}),
    );
    let path = put_operation(
        &api,
        "dump",
        json!({"type": "RunCommand", "template": "pg-dump", "parameters": {"database": "app"}}),
    );
    declare_live(&keys, &api, &ctx);
    children::operation::reconcile(operation(&api, &path), ctx.clone())
        .await
        .expect("reconciled");
    assert_allowed_by_deploy(&api.requests(), &["org-myteam"]);
    let job_patch = api
        .requests()
        .into_iter()
        .find(|r| r.method == Method::PATCH && r.path.contains("/jobs/"))
        .expect("job applied");
    assert!(
        job_patch
            .path
            .starts_with("/apis/batch/v1/namespaces/org-myteam/jobs/dump-")
    );
    let pod = &job_patch.body["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "vworkspace-operation-runner");
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.example.org/tools/pg:16"
    );
    assert_eq!(
        pod["containers"][0]["env"][0],
        json!({"name": "PARAM_DATABASE", "value": "app"})
    );
    // The Job's pod appears: logsRef points at it.
    let job_name = job_patch.path.rsplit('/').next().expect("name").to_owned();
    api.put(
        "/api/v1/namespaces/org-myteam/pods/dump-pod-1",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dump-pod-1", "namespace": "org-myteam",
               "creationTimestamp": "2027-01-15T08:00:00Z", "labels": {"job-name": job_name}}}),
    );
    let mut job = api.get(&job_patch.path).expect("job");
    job["status"] = json!({"active": 1});
    api.put(&job_patch.path, job);
    api.clear();
    children::operation::reconcile(operation(&api, &path), ctx)
        .await
        .expect("reconciled");
    assert!(
        api.requests()
            .iter()
            .any(|r| r.line() == "GET /api/v1/namespaces/org-myteam/pods"
                && query_param(&r.query, "labelSelector").as_deref()
                    == Some(&format!("job-name={job_name}")))
    );
    let status = operation(&api, &path).status.clone().expect("status");
    assert_eq!(status.phase, Some(OperationPhase::Running));
    assert_eq!(
        status.outputs.and_then(|o| o.logs_ref).as_deref(),
        Some("org-myteam/dump-pod-1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_the_namespace_may_not_run_is_refused_without_a_child() {
    let keys = keys();
    let (api, ctx) = setup(&keys);
    let path = put_operation(
        &api,
        "wipe",
        json!({"type": "Workflow", "template": "wipe-everything"}),
    );
    declare_live(&keys, &api, &ctx);
    children::operation::reconcile(operation(&api, &path), ctx)
        .await
        .expect("reconciled");
    assert_eq!(writes(&api), [format!("PATCH {path}/status")]);
    let status = operation(&api, &path).status.clone().expect("status");
    assert_eq!(status.phase, Some(OperationPhase::Failed));
    assert_eq!(
        status.reason.as_deref(),
        Some("OperationTemplateNotAllowedInNamespace")
    );
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("pg-dump, velero-namespace-backup"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_in_a_namespace_not_yet_recorded_waits_instead_of_failing() {
    let keys = keys();
    let (api, ctx) = setup(&keys);
    let mut cluster = api
        .get("/apis/ops.vworkspace.io/v1alpha1/clusters/demo")
        .expect("cluster");
    cluster["status"] = json!({});
    api.put("/apis/ops.vworkspace.io/v1alpha1/clusters/demo", cluster);
    let path = put_operation(
        &api,
        "nightly",
        json!({"type": "Backup", "template": "velero-namespace-backup"}),
    );
    declare_live(&keys, &api, &ctx);
    children::operation::reconcile(operation(&api, &path), ctx)
        .await
        .expect("reconciled");
    assert_eq!(writes(&api), [format!("PATCH {path}/status")]);
    let status = operation(&api, &path).status.clone().expect("status");
    assert_eq!(status.phase, Some(OperationPhase::Pending));
    assert_eq!(status.reason.as_deref(), Some("WaitingForManagedNamespace"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_template_runs_once_it_is_allowed() {
    let keys = keys();
    let (api, ctx) = setup(&keys);
    let path = put_operation(
        &api,
        "wf",
        json!({"type": "Workflow", "template": "nightly-wf"}),
    );
    declare_live(&keys, &api, &ctx);
    children::operation::reconcile(operation(&api, &path), ctx.clone())
        .await
        .expect("reconciled");
    assert_eq!(
        operation(&api, &path).status.clone().and_then(|s| s.phase),
        Some(OperationPhase::Failed)
    );
    // The platform team allows the template on the namespace; the next look runs the same spec.
    let namespace_path = "/api/v1/namespaces/org-myteam";
    let mut namespace = api.get(namespace_path).expect("namespace");
    namespace["metadata"]["annotations"]["app.vworkspace.io/allowed-operation-templates"] =
        json!("nightly-wf");
    api.put(namespace_path, namespace);
    api.clear();
    children::operation::reconcile(operation(&api, &path), ctx)
        .await
        .expect("reconciled");
    assert!(
        writes(&api).iter().any(|w| w
            .starts_with("PATCH /apis/argoproj.io/v1alpha1/namespaces/org-myteam/workflows/wf-")),
        "{:?}",
        writes(&api)
    );
    assert_eq!(
        operation(&api, &path).status.clone().and_then(|s| s.phase),
        Some(OperationPhase::Pending)
    );
}

/// Ready is mirrored for the HelmRelease's current generation only: after an upgrade (generation 2)
/// that helm-controller has not reconciled (observed 1, still `InstallSucceeded`), the instance is
/// `Unknown`/`Progressing`, and `Ready` once helm-controller reports generation 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_mirrored_only_for_the_helm_release_generation_installed() {
    let keys = keys();
    let (api, ctx) = setup(&keys);
    put_instance(&api, json!({"nextcloud": {"host": "cloud.example.org"}}));
    declare_live(&keys, &api, &ctx);
    children::instance::reconcile(instance(&api), ctx.clone())
        .await
        .expect("reconciled");
    let mut upgraded = api.get(HELM_RELEASE).expect("helmrelease");
    upgraded["metadata"]["generation"] = json!(2);
    upgraded["status"] = json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True",
        "reason": "InstallSucceeded", "observedGeneration": 1, "message": "Helm install succeeded"}]});
    api.put(HELM_RELEASE, upgraded.clone());
    children::instance::reconcile(instance(&api), ctx.clone())
        .await
        .expect("reconciled");
    let condition = api.get(NEXTCLOUD).expect("instance")["status"]["conditions"][0].clone();
    assert_eq!(condition["status"], "Unknown", "{condition}");
    assert_eq!(condition["reason"], "Progressing", "{condition}");
    assert!(
        condition["message"]
            .as_str()
            .unwrap_or_default()
            .contains("generation 2"),
        "{condition}"
    );
    upgraded["status"] = json!({"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True",
        "reason": "UpgradeSucceeded", "observedGeneration": 2, "message": "Helm upgrade succeeded"}]});
    api.put(HELM_RELEASE, upgraded);
    children::instance::reconcile(instance(&api), ctx)
        .await
        .expect("reconciled");
    let condition = api.get(NEXTCLOUD).expect("instance")["status"]["conditions"][0].clone();
    assert_eq!(condition["status"], "True", "{condition}");
    assert_eq!(condition["reason"], "UpgradeSucceeded", "{condition}");
}

/// A Cluster pass applies, then publishes: an instance applied by a release newer than the one
/// published is not refused (no status, no Event) but looked at again shortly; the same altered
/// spec without a newer serial is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_applied_by_a_release_not_yet_published_is_not_refused() {
    let keys = keys();
    let (api, ctx) = setup(&keys);
    put_instance(&api, json!({"nextcloud": {"host": "cloud.example.org"}}));
    declare_live(&keys, &api, &ctx);
    // The pass applied release N+1's spec; the set still holds release N.
    let mut ai = api.get(NEXTCLOUD).expect("instance");
    ai["spec"]["values"]["nextcloud"]["host"] = json!("new.example.org");
    ai["metadata"]["annotations"] = json!({"gitops.vworkspace.io/release-serial": "999999"});
    api.put(NEXTCLOUD, ai.clone());
    api.clear();
    let action = children::instance::reconcile(instance(&api), ctx.clone())
        .await
        .expect("reconciled");
    assert_eq!(writes(&api), Vec::<String>::new(), "no refusal, no Event");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(2))
    );
    // Not newer than the published release: a spec the release does not declare is refused.
    ai["metadata"]["annotations"] = json!({"gitops.vworkspace.io/release-serial": "1"});
    api.put(NEXTCLOUD, ai);
    api.clear();
    children::instance::reconcile(instance(&api), ctx)
        .await
        .expect("reconciled");
    let status = api.get(NEXTCLOUD).expect("instance")["status"].clone();
    assert_eq!(
        status["conditions"][0]["reason"], "SpecDiffersFromRelease",
        "{status}"
    );
}

/// A newly managed namespace answers 403 until the pass has made its RoleBinding: the HelmRelease
/// watch probes and waits (quietly) instead of starting a watcher that warns on every 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_release_watch_starts_only_once_its_namespace_may_be_read() {
    let api = Arc::new(FakeApi::default());
    api.fault(Method::GET, "/helmreleases", 403);
    api.fault(Method::GET, "/helmreleases", 403);
    let resource =
        children::api_resource("helm.toolkit.fluxcd.io/v2", "HelmRelease", "helmreleases");
    let releases: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(api.client(), "org-myteam", &resource);
    let forbidden =
        children::watches::wait_for_access(&releases, "app.vworkspace.io/managed-by=vworkspace")
            .await;
    assert_eq!(forbidden, 2);
    let probes: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/helmreleases"))
        .map(|r| format!("{} {}", r.line(), r.query))
        .collect();
    assert_eq!(probes.len(), 3, "{probes:?}");
    assert!(
        probes
            .iter()
            .all(|p| p.contains("limit=1") && !p.contains("watch")),
        "{probes:?}"
    );
}
