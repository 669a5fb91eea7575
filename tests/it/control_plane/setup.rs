//! The one-time install every real-server test shares: crds/, deploy/ (the webhook called by URL),
//! the Velero component, the standby namespace of the webhook replica, the third-party CRDs, and
//! the operator's kubeconfig; and [`env`], which hands it to one test at a time.

use std::path::{Path, PathBuf};

use base64::Engine;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};

use super::server::{self, *};

pub const SYSTEM: &str = "vworkspace-system";
pub const STANDBY: &str = "vws-webhook-standby";

static LOCK: tokio::sync::Mutex<Option<Shared>> = tokio::sync::Mutex::const_new(None);

/// What the one-time install leaves for every test.
#[derive(Clone)]
pub struct Shared {
    pub scratch: PathBuf,
    pub operator_kubeconfig: PathBuf,
    pub webhook_dir: PathBuf,
    pub webhook_port: u16,
    /// The test CA (base64 PEM) the shared webhook configuration trusts.
    pub ca_bundle: String,
    pub thirdparty: Option<PathBuf>,
}

pub struct Env {
    pub cp: ControlPlane,
    pub admin: Client,
    pub shared: Shared,
    _lock: tokio::sync::MutexGuard<'static, Option<Shared>>,
}

/// The repository's root: the nearest directory above this crate holding deploy/kustomization.yaml
/// (the crate may sit in a workspace folder).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("deploy/kustomization.yaml").is_file())
        .expect("deploy/kustomization.yaml above the crate")
        .to_owned()
}

pub fn thirdparty_dir() -> Option<PathBuf> {
    let dir = root().join("../shared/thirdparty-crds");
    dir.join("helm.toolkit.fluxcd.io_helmreleases.yaml")
        .is_file()
        .then_some(dir)
}

/// The control plane, serialized, with everything installed; `None` (one line printed) without it.
pub async fn env(test: &str) -> Option<Env> {
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
    install_crds(admin).await;
    let (webhook_dir, ca_bundle) = webhook_certificate(&scratch);
    let webhook_port = free_port();
    install_deploy(admin, webhook_port, &ca_bundle).await;
    install_standby_lease(admin).await;
    let thirdparty = thirdparty_dir();
    if let Some(dir) = &thirdparty {
        install_thirdparty_crds(admin, dir).await;
    }
    let operator_kubeconfig = scratch.join("operator.kubeconfig");
    server::operator_kubeconfig(admin, &cp.kubeconfig, &operator_kubeconfig).await;
    wait_for_admission_policy(&operator_kubeconfig).await;
    Shared {
        scratch,
        operator_kubeconfig,
        webhook_dir,
        webhook_port,
        ca_bundle,
        thirdparty,
    }
}

/// Every CRD of crds/, established.
async fn install_crds(admin: &Client) {
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
}

/// The webhook's serving certificate, for 127.0.0.1, signed by a test CA: (its directory, the CA as
/// base64 PEM).
fn webhook_certificate(scratch: &Path) -> (PathBuf, String) {
    let webhook_dir = scratch.join("webhook");
    std::fs::create_dir_all(&webhook_dir).expect("mkdir");
    let (ca, cert, key) = crate::support::tls::certificate(scratch, "webhook");
    std::fs::copy(cert, webhook_dir.join("tls.crt")).expect("copy");
    std::fs::copy(key, webhook_dir.join("tls.key")).expect("copy");
    let ca_bundle =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(ca).expect("ca"));
    (webhook_dir, ca_bundle)
}

/// Every file of deploy/kustomization.yaml (the webhook called by URL on `webhook_port`), then the
/// Velero component.
async fn install_deploy(admin: &Client, webhook_port: u16, ca_bundle: &str) {
    // deploy/ needs no velero namespace: it is made after deploy/, for the Velero component.
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
                doc = webhook_configuration(webhook_port, Some(ca_bundle));
            }
            apply(admin, &doc)
                .await
                .unwrap_or_else(|e| panic!("apply deploy/{file}: {e}"));
        }
    }
    // Then the optional Velero component (Backup Operations need it).
    apply(
        admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "velero"}}),
    )
    .await
    .expect("velero namespace");
    for doc in documents(&root().join("deploy/components/velero/velero-role.yaml")) {
        apply(admin, &doc)
            .await
            .unwrap_or_else(|e| panic!("apply the Velero component: {e}"));
    }
}

/// The webhook replica follows a Lease that a test "holder" keeps for a day: it serves the webhook
/// and never reconciles.
async fn install_standby_lease(admin: &Client) {
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
}

/// The CRDs of ../shared/thirdparty-crds, established.
async fn install_thirdparty_crds(admin: &Client, dir: &Path) {
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

/// The API server loads a new ValidatingAdmissionPolicy a moment after it is written: waits until it
/// denies the operator a (dry-run) RoleBinding in a namespace nobody labelled.
async fn wait_for_admission_policy(operator_kubeconfig: &Path) {
    let operator = client_from(operator_kubeconfig).await;
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
}

/// deploy/'s ValidatingWebhookConfiguration, calling `https://127.0.0.1:<port>/validate` (no pods run
/// here), with `ca_bundle` (base64) or, as deploy/ ships it, without.
pub fn webhook_configuration(port: u16, ca_bundle: Option<&str>) -> Value {
    let mut doc = documents(&root().join("deploy/webhook.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
        .expect("deploy/webhook.yaml has the configuration");
    for hook in doc["webhooks"].as_array_mut().expect("webhooks") {
        hook["clientConfig"] = json!({"url": format!("https://127.0.0.1:{port}/validate")});
        if let Some(ca) = ca_bundle {
            hook["clientConfig"]["caBundle"] = json!(ca);
        }
    }
    doc
}

/// The RoleBinding the operator writes in each managed namespace.
pub fn operator_binding(ns: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
           "metadata": {"name": "vworkspace-app-operator", "namespace": ns},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                       "name": "vworkspace-app-operator-namespace"},
           "subjects": [{"kind": "ServiceAccount", "name": "vworkspace-app-operator", "namespace": SYSTEM}]})
}
