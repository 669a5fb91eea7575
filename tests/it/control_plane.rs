//! The operator against a real Kubernetes control plane: kube-apiserver 1.36 + etcd +
//! kube-controller-manager built from Go modules and started by scripts/control-plane.sh (which
//! scripts/test.sh runs; it passes the admin kubeconfig as VWS_TEST_KUBECONFIG and the audit log as
//! VWS_TEST_AUDIT_LOG). Without it every test here prints one line saying why, and returns.
//!
//! Installed once per test binary, as the cluster admin, with server-side apply: crds/, every file
//! of deploy/kustomization.yaml (the webhook pointed by URL at a `run` replica of the test, with the
//! test's CA as caBundle), and the third-party CRDs of ../shared/thirdparty-crds where present. The
//! operator then runs as its own ServiceAccount (a TokenRequest token, so exactly deploy/'s rights)
//! against a real repository over file://. Write requests are counted in the API server's audit log.
//!
//! The tests share one API server and the cluster-scoped Cluster kind (`run --once` reconciles every
//! Cluster), so they run one at a time (a lock); each uses its own cluster id and namespaces and
//! deletes what it created, also when it fails.

mod fixture;
mod scale;
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};

use fixture::{BIN, Intent};
use server::*;

const SYSTEM: &str = "vworkspace-system";
const STANDBY: &str = "vws-webhook-standby";
const AI: &str = "apps.vworkspace.io/v1alpha1";
const OPS: &str = "ops.vworkspace.io/v1alpha1";

/// The Operation templates every test namespace allows.
const TEMPLATES: &str = "velero-namespace-backup,pg-dump,nightly-snapshot,maintenance";

static LOCK: tokio::sync::Mutex<Option<Shared>> = tokio::sync::Mutex::const_new(None);

/// What the one-time install leaves for every test.
#[derive(Clone)]
struct Shared {
    scratch: PathBuf,
    operator_kubeconfig: PathBuf,
    webhook_dir: PathBuf,
    webhook_port: u16,
    thirdparty: Option<PathBuf>,
}

struct Env {
    cp: ControlPlane,
    admin: Client,
    shared: Shared,
    _lock: tokio::sync::MutexGuard<'static, Option<Shared>>,
}

/// The repository's root: the nearest directory above this crate holding deploy/kustomization.yaml
/// (the crate may sit in a workspace folder).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("deploy/kustomization.yaml").is_file())
        .expect("deploy/kustomization.yaml above the crate")
        .to_owned()
}

fn thirdparty_dir() -> Option<PathBuf> {
    let dir = root().join("../shared/thirdparty-crds");
    dir.join("helm.toolkit.fluxcd.io_helmreleases.yaml")
        .is_file()
        .then_some(dir)
}

/// The control plane, serialized, with everything installed; `None` (one line printed) without it.
async fn env(test: &str) -> Option<Env> {
    let cp = control_plane(test)?;
    let mut lock = LOCK.lock().await;
    let admin = client_from(&cp.kubeconfig).await;
    if lock.is_none() {
        *lock = Some(install(&cp, &admin).await);
    }
    let shared = lock.clone().expect("installed");
    Some(Env {
        cp,
        admin,
        shared,
        _lock: lock,
    })
}

/// crds/, deploy/ (webhook by URL), the standby namespace of the webhook replica, the third-party
/// CRDs, and the operator's kubeconfig.
async fn install(cp: &ControlPlane, admin: &Client) -> Shared {
    let scratch = cp
        .kubeconfig
        .with_file_name(format!("control-plane-tests-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");

    let mut crds = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("crds"))
        .expect("crds/")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        for doc in documents(&file) {
            apply(admin, &doc).await.expect("apply a CRD of crds/");
            crds.push(doc["metadata"]["name"].as_str().expect("name").to_owned());
        }
    }
    wait_established(admin, &crds).await;

    // The webhook's serving certificate, for 127.0.0.1, signed by a test CA.
    let webhook_dir = scratch.join("webhook");
    std::fs::create_dir_all(&webhook_dir).expect("mkdir");
    let (ca, cert, key) = crate::support::tls::certificate(&scratch, "webhook");
    std::fs::copy(cert, webhook_dir.join("tls.crt")).expect("copy");
    std::fs::copy(key, webhook_dir.join("tls.key")).expect("copy");
    let ca_bundle =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(ca).expect("ca"));
    let webhook_port = free_port();

    // deploy/ needs the velero namespace (the seed's Velero Role lives there).
    apply(
        admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "velero"}}),
    )
    .await
    .expect("velero namespace");
    let kustomization = documents(&root().join("deploy/kustomization.yaml"));
    let resources = kustomization[0]["resources"]
        .as_array()
        .expect("resources")
        .clone();
    for file in resources {
        let file = file.as_str().expect("file name");
        for mut doc in documents(&root().join("deploy").join(file)) {
            if doc["kind"] == "ValidatingWebhookConfiguration" {
                // The API server calls the test's replica by URL instead of the Service (no pods run here).
                for hook in doc["webhooks"].as_array_mut().expect("webhooks") {
                    hook["clientConfig"] = json!({
                        "url": format!("https://127.0.0.1:{webhook_port}/validate"),
                        "caBundle": ca_bundle,
                    });
                }
            }
            apply(admin, &doc)
                .await
                .unwrap_or_else(|e| panic!("apply deploy/{file}: {e}"));
        }
    }

    // The webhook replica follows a Lease that a test "holder" keeps for a day: it serves the
    // webhook and never reconciles.
    apply(
        admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": STANDBY}}),
    )
    .await
    .expect("standby namespace");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    apply(
        admin,
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "vworkspace-app-operator", "namespace": STANDBY},
                "spec": {"holderIdentity": "control-plane-test", "leaseDurationSeconds": 86400,
                         "acquireTime": now, "renewTime": now}}),
    )
    .await
    .expect("standby Lease");

    let thirdparty = thirdparty_dir();
    if let Some(dir) = &thirdparty {
        let mut names = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("third-party CRDs")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for file in files {
            // helm.toolkit.fluxcd.io_helmreleases.yaml -> helmreleases.helm.toolkit.fluxcd.io
            let stem = file
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            let (group, plural) = stem.split_once('_').expect("group_plural.yaml");
            let name = format!("{plural}.{group}");
            apply_raw_crd(admin, &file, &name).await;
            names.push(name);
        }
        wait_established(admin, &names).await;
    }

    let operator_kubeconfig = scratch.join("operator.kubeconfig");
    server::operator_kubeconfig(admin, &cp.kubeconfig, &operator_kubeconfig).await;

    // The API server loads a new ValidatingAdmissionPolicy a moment after it is written: wait until
    // it denies the operator a (dry-run) RoleBinding in a namespace nobody labelled.
    let operator = client_from(&operator_kubeconfig).await;
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(operator, "default");
    let probe: k8s_openapi::api::rbac::v1::RoleBinding =
        serde_json::from_value(operator_binding("default")).expect("RoleBinding");
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for("the admission policy to be in force", 60, || async {
        match bindings.create(&dry_run, &probe).await {
            Err(e) if e.to_string().contains("vworkspace-app-operator-rbac-scope") => Some(()),
            _ => None,
        }
    })
    .await;
    Shared {
        scratch,
        operator_kubeconfig,
        webhook_dir,
        webhook_port,
        thirdparty,
    }
}

/// One test's cluster id, namespaces, trust inputs and Cluster resource; all deleted on drop.
struct Scope {
    kubeconfig: PathBuf,
    objects: Vec<(String, String, Option<String>, String)>,
    name: String,
    dir: PathBuf,
}

impl Scope {
    async fn new(env: &Env, intent: &Intent, namespaces: &[&str]) -> Scope {
        let name = intent.cluster.clone();
        let dir = env.shared.scratch.join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut scope = Scope {
            kubeconfig: env.cp.kubeconfig.clone(),
            objects: Vec::new(),
            name: name.clone(),
            dir,
        };
        for ns in namespaces {
            scope.apply(&env.admin, json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"app.vworkspace.io/managed-by": "vworkspace"},
                             "annotations": {"app.vworkspace.io/allowed-operation-templates": TEMPLATES}}}))
                .await;
        }
        let trust = format!("trust-{name}");
        let age = format!("age-{name}");
        scope
            .apply(
                &env.admin,
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": trust, "namespace": SYSTEM},
                   "data": {"commit_signers": intent.read("commit_signers"),
                            "release_signers": intent.read("release_signers")}}),
            )
            .await;
        scope
            .apply(
                &env.admin,
                json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": age, "namespace": SYSTEM},
                   "stringData": {"identity.agekey": intent.read("cluster.agekey")}}),
            )
            .await;
        scope
            .apply(
                &env.admin,
                json!({"apiVersion": OPS, "kind": "Cluster", "metadata": {"name": name},
                   "spec": {
                     "clusterId": name,
                     "source": {"url": intent.url(), "ref": {"branch": "main"}, "interval": "5m"},
                     "commitSigners": {"configMapRef": {"name": trust, "key": "commit_signers"}},
                     "release": {"signersConfigMapRef": {"name": trust, "key": "release_signers"}, "threshold": 2},
                     "decryption": {"identitySecretRef": {"name": age}}
                   }}),
            )
            .await;
        scope
    }

    async fn apply(&mut self, client: &Client, object: Value) {
        apply(client, &object)
            .await
            .unwrap_or_else(|e| panic!("apply {object}: {e}"));
        self.objects.push((
            object["apiVersion"]
                .as_str()
                .expect("apiVersion")
                .to_owned(),
            object["kind"].as_str().expect("kind").to_owned(),
            object["metadata"]["namespace"].as_str().map(str::to_owned),
            object["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_owned(),
        ));
    }

    /// Deletes a further object on drop (created by the operator or a controller).
    fn also_delete(&mut self, api_version: &str, kind: &str, ns: Option<&str>, name: &str) {
        self.objects.push((
            api_version.into(),
            kind.into(),
            ns.map(str::to_owned),
            name.into(),
        ));
    }

    /// `run --once` as the operator's ServiceAccount: (exit 0, stdout, stderr).
    fn once(&self, env: &Env) -> (bool, String, String) {
        let mut cmd = operator_cmd(env, &self.dir);
        cmd.arg("--once");
        let mut p = Proc::spawn(&mut cmd, &self.dir, "once");
        let status = p.wait_timeout(180).expect("run --once ends within 180 s");
        (status.success(), p.stdout(), p.stderr())
    }

    async fn cluster(&self, client: &Client) -> Value {
        get(client, OPS, "Cluster", None, &self.name)
            .await
            .expect("Cluster exists")
            .data
    }

    async fn condition(&self, client: &Client, type_: &str) -> (String, String, String) {
        let cluster = self.cluster(client).await;
        let c = cluster["status"]["conditions"]
            .as_array()
            .unwrap_or_else(|| panic!("no conditions: {cluster}"))
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap_or_else(|| panic!("no {type_} condition: {cluster}"))
            .clone();
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        (s("status"), s("reason"), s("message"))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Drop cannot await: a thread with its own runtime deletes everything, Cluster first.
        let kubeconfig = self.kubeconfig.clone();
        let mut objects = std::mem::take(&mut self.objects);
        objects.sort_by_key(|o| match o.1.as_str() {
            "Cluster" => 0,
            "Namespace" => 2,
            _ => 1,
        });
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = client_from(&kubeconfig).await;
                for (api_version, kind, ns, name) in objects {
                    delete(&client, &api_version, &kind, ns.as_deref(), &name).await;
                }
            });
        })
        .join();
    }
}

/// `vworkspace-operator run` as the operator's ServiceAccount, its caches and logs under `dir`.
fn operator_cmd(env: &Env, dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .args(["--namespace", SYSTEM, "--cache-dir"])
        .arg(dir.join("cache"))
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
        ])
        .args(["--fetch-timeout", "60"])
        .env("KUBECONFIG", &env.shared.operator_kubeconfig)
        .env("RUST_LOG", "info");
    cmd
}

/// A `run` replica that serves the admission webhook and follows the standby Lease (it never
/// reconciles). It runs as the admin so that its requests are not counted as the operator's.
async fn webhook_replica(env: &Env, dir: &Path) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .args(["--namespace", STANDBY, "--leader-election", "--cache-dir"])
        .arg(dir.join("webhook-cache"))
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
        ])
        .arg("--webhook-cert-dir")
        .arg(&env.shared.webhook_dir)
        .args([
            "--webhook-addr",
            &format!("127.0.0.1:{}", env.shared.webhook_port),
        ])
        .env("KUBECONFIG", &env.cp.kubeconfig)
        .env("POD_NAME", "webhook-standby");
    let proc = Proc::spawn(&mut cmd, dir, "webhook");
    let port = env.shared.webhook_port;
    wait_for("the webhook replica to listen", 30, || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(drop)
    })
    .await;
    proc
}

/// The RoleBinding the operator writes in each managed namespace.
fn operator_binding(ns: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
           "metadata": {"name": "vworkspace-app-operator", "namespace": ns},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                       "name": "vworkspace-app-operator-namespace"},
           "subjects": [{"kind": "ServiceAccount", "name": "vworkspace-app-operator", "namespace": SYSTEM}]})
}

/// Object writes (not the Cluster's status, not Events) among `writes`.
fn object_writes(writes: &[String]) -> Vec<String> {
    writes
        .iter()
        .filter(|w| !w.contains("/status") && !w.contains("/events"))
        .cloned()
        .collect()
}

async fn exists(client: &Client, api_version: &str, kind: &str, ns: &str, name: &str) -> bool {
    get(client, api_version, kind, Some(ns), name)
        .await
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_installs_and_its_pods_pass_pod_security_restricted() {
    let Some(env) = env("deploy_installs_and_its_pods_pass_pod_security_restricted").await else {
        return;
    };
    // The ReplicaSet controller creates the Deployment's pods through admission: PodSecurity
    // `restricted` is enforced on vworkspace-system (no scheduler runs here, so they stay Pending).
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(env.admin.clone(), SYSTEM);
    let lp = ListParams::default().labels("app.kubernetes.io/name=vworkspace-app-operator");
    let n = wait_for("the Deployment's two pods", 60, || async {
        let list = pods.list(&lp).await.ok()?;
        (list.items.len() >= 2).then_some(list.items.len())
    })
    .await;
    assert_eq!(n, 2, "replicas: 2");
    let rs: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(env.admin.clone(), SYSTEM);
    for r in rs.list(&lp).await.expect("ReplicaSets").items {
        let failures: Vec<_> = r
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ == "ReplicaFailure")
            .collect();
        assert!(failures.is_empty(), "{failures:?}");
    }
    // The operator's ServiceAccount: Secrets by name only, nothing cluster-wide it should not have.
    let operator = client_from(&env.shared.operator_kubeconfig).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(operator, SYSTEM);
    let err = secrets
        .list(&ListParams::default())
        .await
        .expect_err("the operator cannot list Secrets");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_apply_then_an_unchanged_pass_sends_no_write() {
    let Some(env) = env("first_apply_then_an_unchanged_pass_sends_no_write").await else {
        return;
    };
    let intent = Intent::new("cp-first");
    intent.add_instance("cp-first-a", "nextcloud", "smtp-secret-1");
    intent.add_instance("cp-first-b", "wiki", "smtp-secret-2");
    intent.release(&[]);
    let head = intent.commit("release 1");
    let scope = Scope::new(&env, &intent, &["cp-first-a", "cp-first-b"]).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;

    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, err) = scope.once(&env);
    assert!(ok, "first pass: {out}\n{err}");
    let writes = audit.writes_by(OPERATOR_USER);
    println!("first pass: {} writes: {writes:#?}", writes.len());
    for (ns, name) in [("cp-first-a", "nextcloud"), ("cp-first-b", "wiki")] {
        let ai = get(&env.admin, AI, "ApplicationInstance", Some(ns), name)
            .await
            .unwrap_or_else(|| panic!("{ns}/{name} applied"));
        let labels = &ai.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("app.vworkspace.io/managed-by")
                .map(String::as_str),
            Some("vworkspace")
        );
        assert_eq!(
            labels
                .get("gitops.vworkspace.io/cluster")
                .map(String::as_str),
            Some("cp-first")
        );
        for binding in [
            "vworkspace-app-operator",
            "vworkspace-app-operator-values",
            "vworkspace-operation-runner",
        ] {
            assert!(
                exists(
                    &env.admin,
                    "rbac.authorization.k8s.io/v1",
                    "RoleBinding",
                    ns,
                    binding
                )
                .await,
                "RoleBinding {ns}/{binding}"
            );
        }
    }
    let cluster = scope.cluster(&env.admin).await;
    assert_eq!(cluster["status"]["lastAppliedSerial"], 1, "{cluster}");
    assert_eq!(cluster["status"]["lastAppliedCommit"], head.as_str());
    assert_eq!(
        scope.condition(&env.admin, "Ready").await.0,
        "True",
        "{cluster}"
    );
    // Secrets only ever read by name, on the real server too.
    for e in audit.since() {
        if e["user"]["username"] == OPERATOR_USER
            && e["objectRef"]["resource"] == "secrets"
            && e["objectRef"]["namespace"] == SYSTEM
        {
            assert_eq!(e["verb"], "get", "{e}");
        }
    }

    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, err) = scope.once(&env);
    assert!(ok, "second pass: {out}\n{err}");
    assert_eq!(
        audit.writes_by(OPERATOR_USER),
        Vec::<String>::new(),
        "an unchanged pass writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_changes_nothing() {
    let Some(env) = env("a_refused_commit_changes_nothing").await else {
        return;
    };
    let intent = Intent::new("cp-refused");
    intent.add_instance("cp-refused-a", "nextcloud", "one");
    intent.release(&[]);
    let head = intent.commit("release 1");
    let scope = Scope::new(&env, &intent, &["cp-refused-a"]).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let (ok, out, err) = scope.once(&env);
    assert!(ok, "first pass: {out}\n{err}");
    let before = get(
        &env.admin,
        AI,
        "ApplicationInstance",
        Some("cp-refused-a"),
        "nextcloud",
    )
    .await
    .expect("applied");

    // A correctly released change, but the commit is signed by a key nobody trusts.
    intent.add_instance("cp-refused-a", "intruder", "two");
    intent.release(&[]);
    intent.commit_signed_by_rogue("release 2, signed by an untrusted key");
    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, _) = scope.once(&env);
    assert!(!ok, "the pass must fail: {out}");
    let writes = audit.writes_by(OPERATOR_USER);
    assert_eq!(
        object_writes(&writes),
        Vec::<String>::new(),
        "nothing but status and Event: {writes:?}"
    );
    assert!(
        !exists(
            &env.admin,
            AI,
            "ApplicationInstance",
            "cp-refused-a",
            "intruder"
        )
        .await
    );
    let after = get(
        &env.admin,
        AI,
        "ApplicationInstance",
        Some("cp-refused-a"),
        "nextcloud",
    )
    .await
    .expect("still there");
    assert_eq!(
        before.metadata.resource_version,
        after.metadata.resource_version
    );
    let (status, reason, _) = scope.condition(&env.admin, "SourceVerified").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CommitSignatureInvalid")
    );
    let cluster = scope.cluster(&env.admin).await;
    assert_eq!(cluster["status"]["lastAppliedCommit"], head.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_then_a_rollback_is_refused() {
    let Some(env) = env("prune_then_a_rollback_is_refused").await else {
        return;
    };
    let intent = Intent::new("cp-prune");
    intent.add_instance("cp-prune-a", "nextcloud", "one");
    intent.add_instance("cp-prune-a", "wiki", "two");
    intent.release(&[]);
    let first = intent.commit("release 1");
    let scope = Scope::new(&env, &intent, &["cp-prune-a"]).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let (ok, out, err) = scope.once(&env);
    assert!(ok, "first pass: {out}\n{err}");
    assert!(exists(&env.admin, AI, "ApplicationInstance", "cp-prune-a", "wiki").await);

    intent.remove_instance("cp-prune-a", "wiki");
    intent.release(&[]);
    let head2 = intent.commit("release 2: wiki removed");
    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, err) = scope.once(&env);
    assert!(ok, "prune pass: {out}\n{err}");
    let writes = audit.writes_by(OPERATOR_USER);
    assert!(
        writes
            .iter()
            .any(|w| w.starts_with("delete ") && w.contains("/applicationinstances/wiki")),
        "{writes:?}"
    );
    assert!(!exists(&env.admin, AI, "ApplicationInstance", "cp-prune-a", "wiki").await);
    assert!(
        exists(
            &env.admin,
            AI,
            "ApplicationInstance",
            "cp-prune-a",
            "nextcloud"
        )
        .await
    );
    assert_eq!(
        scope.cluster(&env.admin).await["status"]["lastAppliedSerial"],
        2
    );

    // The old release again (validly signed, serial 1) in a new trusted commit: a rollback, refused.
    intent.git(&["checkout", &first, "--", "clusters/cp-prune"]);
    intent.commit("release 1 again");
    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, _) = scope.once(&env);
    assert!(!ok, "a rollback must fail: {out}");
    let writes = audit.writes_by(OPERATOR_USER);
    assert_eq!(object_writes(&writes), Vec::<String>::new(), "{writes:?}");
    assert!(!exists(&env.admin, AI, "ApplicationInstance", "cp-prune-a", "wiki").await);
    let (status, reason, message) = scope.condition(&env.admin, "SourceVerified").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ReleaseInvalid"),
        "{message}"
    );
    let cluster = scope.cluster(&env.admin).await;
    assert_eq!(cluster["status"]["lastAppliedSerial"], 2);
    assert_eq!(cluster["status"]["lastAppliedCommit"], head2.as_str());

    // Forward again, with every instance removed: an empty cluster directory prunes everything.
    intent.remove_instance("cp-prune-a", "wiki");
    intent.remove_instance("cp-prune-a", "nextcloud");
    intent.release(&["--serial", "3"]);
    intent.commit("release 3: nothing declared");
    let (ok, out, err) = scope.once(&env);
    assert!(ok, "empty release: {out}\n{err}");
    assert!(
        !exists(
            &env.admin,
            AI,
            "ApplicationInstance",
            "cp-prune-a",
            "nextcloud"
        )
        .await
    );
    assert_eq!(
        scope.cluster(&env.admin).await["status"]["lastAppliedSerial"],
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_called_by_the_api_server_denies_a_literal_credential() {
    let Some(env) = env("the_webhook_called_by_the_api_server_denies_a_literal_credential").await
    else {
        return;
    };
    let intent = Intent::new("cp-webhook");
    let mut scope = Scope::new(&env, &intent, &["cp-webhook-a"]).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let instance = |name: &str, values: Value| {
        json!({"apiVersion": AI, "kind": "ApplicationInstance",
               "metadata": {"name": name, "namespace": "cp-webhook-a"},
               "spec": {"chart": {"repository": "https://charts.example.org/", "name": "app", "version": "1.0.0"},
                        "values": values}})
    };
    // The admission policy keeps everyone but the operator and the break-glass group out of a
    // managed namespace (the admin first: refused by the policy, before the webhook).
    let err = apply(
        &env.admin,
        &instance("leaky", json!({"db": {"host": "db"}})),
    )
    .await
    .expect_err("the admin is not the operator");
    assert!(
        err.to_string().contains("vworkspace-managed-from-git")
            && err.to_string().contains("is managed from Git"),
        "{err}"
    );
    // Break glass passes the policy, and the webhook still judges what it writes.
    let break_glass = break_glass_client(&env.admin, &env.cp.kubeconfig).await;
    let err = apply(
        &break_glass,
        &instance("leaky", json!({"db": {"password": "hunter2"}})),
    )
    .await
    .expect_err("a literal credential is denied");
    let text = err.to_string();
    assert!(
        text.contains("validate.vworkspace.io") && text.contains("db.password"),
        "the webhook's answer names the value: {text}"
    );
    assert!(
        !exists(
            &env.admin,
            AI,
            "ApplicationInstance",
            "cp-webhook-a",
            "leaky"
        )
        .await
    );
    // The same without a credential is admitted: the denial was the webhook's judgement.
    scope.also_delete(AI, "ApplicationInstance", Some("cp-webhook-a"), "clean");
    apply(
        &break_glass,
        &instance("clean", json!({"db": {"host": "db"}})),
    )
    .await
    .expect("admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_policy_denies_the_operator_a_rolebinding_outside_managed_namespaces() {
    let Some(env) =
        env("the_admission_policy_denies_the_operator_a_rolebinding_outside_managed_namespaces")
            .await
    else {
        return;
    };
    let intent = Intent::new("cp-policy");
    let mut scope = Scope::new(&env, &intent, &["cp-policy-managed"]).await;
    scope
        .apply(
            &env.admin,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cp-policy-free"}}),
        )
        .await;
    let operator = client_from(&env.shared.operator_kubeconfig).await;
    let binding = operator_binding;
    let err = apply(&operator, &binding("cp-policy-free"))
        .await
        .expect_err("denied outside managed namespaces");
    let text = err.to_string();
    assert!(
        text.contains("vworkspace-app-operator-rbac-scope")
            && text.contains("only in namespaces labelled"),
        "denied by the ValidatingAdmissionPolicy, not RBAC: {text}"
    );
    assert!(
        !exists(
            &env.admin,
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            "cp-policy-free",
            "vworkspace-app-operator"
        )
        .await
    );
    // RBAC alone would allow it: the same binding in a managed namespace is admitted.
    scope.also_delete(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        Some("cp-policy-managed"),
        "vworkspace-app-operator",
    );
    apply(&operator, &binding("cp-policy-managed"))
        .await
        .expect("admitted in a managed namespace");
    // A Secret that is not an <instance>-values Secret is denied even in a managed namespace (the
    // values binding gives the operator `create` on Secrets there once it reconciled the namespace).
    scope
        .apply(
            &env.admin,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "vworkspace-app-operator-values", "namespace": "cp-policy-managed"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "vworkspace-app-operator-values"},
                   "subjects": [{"kind": "ServiceAccount", "name": "vworkspace-app-operator", "namespace": SYSTEM}]}),
        )
        .await;
    // RBAC sees the new binding a moment later: until then the answer is RBAC's 403.
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "db-admin", "namespace": "cp-policy-managed"},
                        "stringData": {"password": "x"}});
    let denial = wait_for("the Secret judged by the policy", 30, || async {
        match apply(&operator, &secret).await {
            Ok(_) => Some(Ok(())),
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("cannot patch") => None,
            Err(e) => Some(Err(e.to_string())),
        }
    })
    .await;
    scope.also_delete("v1", "Secret", Some("cp-policy-managed"), "db-admin");
    let text = denial.expect_err("only <instance>-values Secrets");
    assert!(text.contains("<instance>-values"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_valid_under_the_thirdparty_crds_and_collected_after_prune() {
    let test = "children_are_valid_under_the_thirdparty_crds_and_collected_after_prune";
    let Some(env) = env(test).await else {
        return;
    };
    if env.shared.thirdparty.is_none() {
        skipped(
            test,
            "../shared/thirdparty-crds is absent (the Flux, Velero, snapshot and Argo CRDs)",
        );
        return;
    }
    let ns = "cp-children-a";
    let intent = Intent::new("cp-children");
    intent.add_instance(ns, "nextcloud", "smtp-secret");
    intent.add_backup(ns, "nightly", "nextcloud");
    intent.add_operation(
        ns,
        "snapshot",
        "  type: Snapshot\n  template: nightly-snapshot\n  target:\n    persistentVolumeClaim: data\n  parameters:\n    volumeSnapshotClassName: csi-snapclass\n",
    );
    intent.add_operation(
        ns,
        "dump",
        "  type: RunCommand\n  template: pg-dump\n  parameters:\n    database: nextcloud\n",
    );
    intent.add_operation(
        ns,
        "maintenance",
        "  type: Workflow\n  template: maintenance\n  parameters:\n    mode: quick\n",
    );
    intent.release(&[]);
    intent.commit("release 1");
    let mut scope = Scope::new(&env, &intent, &[ns]).await;
    // The RunCommand template, owned by the platform team (vworkspace-system).
    scope
        .apply(
            &env.admin,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "operation-template-pg-dump", "namespace": SYSTEM},
                   "data": {"image": "registry.example.org/tools/pg:16", "command": "[\"/bin/pg-dump\",\"--all\"]"}}),
        )
        .await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let (ok, out, err) = scope.once(&env);
    assert!(ok, "first pass: {out}\n{err}");
    let ai = get(&env.admin, AI, "ApplicationInstance", Some(ns), "nextcloud")
        .await
        .expect("applied");
    let ai_uid = ai.metadata.uid.clone().expect("uid");

    // The children controllers, briefly (no leader election: only this replica).
    let mut controllers = Proc::spawn(&mut operator_cmd(&env, &scope.dir), &scope.dir, "run");
    let children = [
        ("helm.toolkit.fluxcd.io/v2", "HelmRelease", "nextcloud"),
        ("source.toolkit.fluxcd.io/v1", "HelmRepository", "nextcloud"),
        ("v1", "Secret", "nextcloud-values"),
    ];
    for (api_version, kind, name) in children {
        let admin = env.admin.clone();
        let found = wait_for(&format!("{kind} {ns}/{name}"), 60, || {
            let admin = admin.clone();
            async move { get(&admin, api_version, kind, Some(ns), name).await }
        })
        .await;
        let owners = found.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owners.iter().any(|o| o.uid == ai_uid),
            "{kind} {name} is owned by the ApplicationInstance: {owners:?}\n{}",
            controllers.stderr()
        );
    }
    let backups: Api<DynamicObject> =
        dynamic_api(&env.admin, "velero.io/v1", "Backup", Some("velero")).await;
    let backup = wait_for("the Velero Backup", 60, || async {
        let list = backups.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|b| b.metadata.name.as_deref().unwrap_or("").starts_with(ns))
    })
    .await;
    let backup_name = backup.metadata.name.clone().expect("name");
    scope.also_delete("velero.io/v1", "Backup", Some("velero"), &backup_name);
    assert_eq!(
        backup.data["spec"]["includedNamespaces"],
        json!([ns]),
        "{backup:?}"
    );
    // The other engines' children, each accepted by its real schema (VolumeSnapshot, Argo Workflow)
    // or admission (Job), owned by its Operation.
    let mut operation_children = Vec::new();
    for (api_version, kind, operation) in [
        ("snapshot.storage.k8s.io/v1", "VolumeSnapshot", "snapshot"),
        ("batch/v1", "Job", "dump"),
        ("argoproj.io/v1alpha1", "Workflow", "maintenance"),
    ] {
        let op = get(&env.admin, OPS, "Operation", Some(ns), operation)
            .await
            .unwrap_or_else(|| panic!("Operation {operation} applied"));
        let uid = op.metadata.uid.clone().expect("uid");
        let api = dynamic_api(&env.admin, api_version, kind, Some(ns)).await;
        let found = wait_for(
            &format!("the {kind} of Operation {operation}"),
            60,
            || async {
                let list = api.list(&ListParams::default()).await.ok()?;
                list.items.into_iter().find(|c| {
                    c.metadata
                        .owner_references
                        .as_ref()
                        .is_some_and(|o| o.iter().any(|o| o.uid == uid))
                })
            },
        )
        .await;
        operation_children.push((
            api_version,
            kind,
            found.metadata.name.clone().expect("name"),
        ));
    }
    let job = get(
        &env.admin,
        "batch/v1",
        "Job",
        Some(ns),
        &operation_children[1].2,
    )
    .await
    .expect("Job");
    assert_eq!(
        job.data["spec"]["template"]["spec"]["serviceAccountName"],
        "vworkspace-operation-runner"
    );
    controllers.stop();
    assert!(
        !controllers.stderr().contains("\"level\":\"ERROR\""),
        "{}",
        controllers.stderr()
    );

    // Prune the instance with the controllers stopped: only the garbage collector can remove the
    // children now, by their ownerReferences.
    intent.remove_instance(ns, "nextcloud");
    for op in ["nightly", "snapshot", "dump", "maintenance"] {
        intent.remove(&format!(
            "clusters/{}/namespaces/{ns}/operations/{op}.yaml",
            intent.cluster
        ));
    }
    intent.release(&[]);
    intent.commit("release 2: nextcloud removed");
    let (ok, out, err) = scope.once(&env);
    assert!(ok, "prune pass: {out}\n{err}");
    assert!(!exists(&env.admin, AI, "ApplicationInstance", ns, "nextcloud").await);
    let owned: Vec<(&str, &str, String)> = children
        .iter()
        .map(|(a, k, n)| (*a, *k, n.to_string()))
        .chain(operation_children)
        .collect();
    for (api_version, kind, name) in owned {
        let admin = env.admin.clone();
        let name = &name;
        wait_for(
            &format!("{kind} {ns}/{name} collected by the garbage collector"),
            120,
            || {
                let admin = admin.clone();
                async move {
                    get(&admin, api_version, kind, Some(ns), name)
                        .await
                        .is_none()
                        .then_some(())
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_leader_election_one_reconciles() {
    let Some(env) = env("two_replicas_with_leader_election_one_reconciles").await else {
        return;
    };
    let intent = Intent::new("cp-leader");
    intent.add_instance("cp-leader-a", "nextcloud", "one");
    intent.release(&[]);
    intent.commit("release 1");
    let mut scope = Scope::new(&env, &intent, &["cp-leader-a"]).await;
    scope.also_delete(
        "coordination.k8s.io/v1",
        "Lease",
        Some(SYSTEM),
        "vworkspace-app-operator",
    );
    delete(
        &env.admin,
        "coordination.k8s.io/v1",
        "Lease",
        Some(SYSTEM),
        "vworkspace-app-operator",
    )
    .await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let mut replicas = Vec::new();
    for name in ["replica-a", "replica-b"] {
        let dir = scope.dir.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut cmd = operator_cmd(&env, &dir);
        cmd.arg("--leader-election").env("POD_NAME", name);
        replicas.push((name, Proc::spawn(&mut cmd, &dir, name)));
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.admin.clone(), SYSTEM);
    let holder = wait_for("a leader", 60, || async {
        leases
            .get_opt("vworkspace-app-operator")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    })
    .await;
    wait_for("the Cluster reconciled by the leader", 60, || async {
        let cluster = scope.cluster(&env.admin).await;
        (cluster["status"]["lastAppliedSerial"] == 1).then_some(())
    })
    .await;
    // Let the follower try a few times (it retries every 2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let leading: Vec<&str> = replicas
        .iter()
        .filter(|(_, p)| p.stderr().contains("\"leading\""))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(leading, vec![holder.as_str()], "exactly one replica leads");

    // The leader stops; the other takes the Lease over once it expires (15 s) and reconciles.
    let (leader_index, _) = replicas
        .iter()
        .enumerate()
        .find(|(_, (n, _))| *n == holder)
        .expect("the holder is a replica");
    let (_, mut leader) = replicas.remove(leader_index);
    leader.stop();
    let (other, follower) = &replicas[0];
    let new_holder = wait_for("the follower to take over", 60, || async {
        let h = leases
            .get_opt("vworkspace-app-operator")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity?;
        (h != holder).then_some(h)
    })
    .await;
    assert_eq!(new_holder, *other);
    wait_for("the new leader to say so", 20, || async {
        follower.stderr().contains("\"leading\"").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_written_through_the_api_is_not_materialized() {
    let test = "an_instance_written_through_the_api_is_not_materialized";
    let Some(env) = env(test).await else {
        return;
    };
    if env.shared.thirdparty.is_none() {
        skipped(test, "../shared/thirdparty-crds is absent");
        return;
    }
    let ns = "cp-closure-a";
    let intent = Intent::new("cp-closure");
    intent.add_instance(ns, "nextcloud", "declared");
    intent.release(&[]);
    intent.commit("release 1");
    let mut scope = Scope::new(&env, &intent, &[ns]).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let (ok, out, err) = scope.once(&env);
    assert!(ok, "first pass: {out}\n{err}");

    // The admission policy refuses an API writer outright (the admin here) ...
    let armored = intent.bound_encrypt("stolen-by-the-api-writer", ns, "intruder", "mail.password");
    scope.also_delete(AI, "ApplicationInstance", Some(ns), "intruder");
    let intruder = json!({"apiVersion": AI, "kind": "ApplicationInstance",
            "metadata": {"name": "intruder", "namespace": ns,
                         "labels": {"app.vworkspace.io/managed-by": "vworkspace",
                                    "gitops.vworkspace.io/cluster": "cp-closure"}},
            "spec": {"chart": {"repository": "https://charts.example.org/", "name": "x", "version": "1.0.0"},
                     "values": {"mail": {"password": armored.clone()}}}});
    let refused = apply(&env.admin, &intruder).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("vworkspace-managed-from-git")),
        "the admission policy refuses the admin: {refused:?}"
    );
    // ... and when it is bypassed (break glass, or a policy not installed), the controllers still
    // act only on what the verified release declares.
    let break_glass = break_glass_client(&env.admin, &env.cp.kubeconfig).await;
    apply(&break_glass, &intruder)
        .await
        .expect("break glass passes the admission policy");
    let mut controllers = Proc::spawn(&mut operator_cmd(&env, &scope.dir), &scope.dir, "run");
    // The declared instance's children prove the controllers ran.
    let admin = env.admin.clone();
    wait_for("the declared instance's HelmRelease", 60, || {
        let admin = admin.clone();
        async move {
            get(
                &admin,
                "helm.toolkit.fluxcd.io/v2",
                "HelmRelease",
                Some(ns),
                "nextcloud",
            )
            .await
        }
    })
    .await;
    // The undeclared instance is refused, visibly.
    let admin = env.admin.clone();
    wait_for("the intruder refused as NotDeclaredInRelease", 60, || {
        let admin = admin.clone();
        async move {
            get(&admin, AI, "ApplicationInstance", Some(ns), "intruder")
                .await
                .filter(|o| {
                    o.data["status"]["conditions"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "NotDeclaredInRelease"))
                })
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    controllers.stop();
    for (api_version, kind, name) in [
        ("v1", "Secret", "intruder-values"),
        ("helm.toolkit.fluxcd.io/v2", "HelmRelease", "intruder"),
    ] {
        scope.also_delete(api_version, kind, Some(ns), name);
        assert!(
            get(&env.admin, api_version, kind, Some(ns), name)
                .await
                .is_none(),
            "{kind} {name} was materialized from an undeclared instance"
        );
    }
}
