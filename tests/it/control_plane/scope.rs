//! One real-server test's scope on the shared API server (its cluster id, namespaces, trust inputs
//! and Cluster, deleted at the end), the scenario that sets it up around a test body, and the
//! operator processes a test runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use kube::Client;
use serde_json::{Value, json};

use super::fixture::{BIN, Intent};
use super::server::*;
use super::setup::{Env, STANDBY, SYSTEM, env};
use crate::support::OPS;

/// The Operation templates every test namespace allows.
pub const TEMPLATES: &str = "velero-namespace-backup,pg-dump,nightly-snapshot,maintenance";

/// One test's cluster id, namespaces, trust inputs and Cluster resource; all deleted on drop.
pub struct Scope {
    pub kubeconfig: PathBuf,
    pub objects: Vec<(String, String, Option<String>, String)>,
    pub name: String,
    pub dir: PathBuf,
}

impl Scope {
    pub async fn new(env: &Env, intent: &Intent, namespaces: &[&str]) -> Scope {
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
        // A run of the same test just before may still be deleting them: applied now, they would be
        // gone a moment later.
        let leftovers = std::iter::once(("Cluster", name.as_str()))
            .chain(namespaces.iter().map(|ns| ("Namespace", *ns)));
        for (kind, object) in leftovers {
            let api_version = if kind == "Cluster" { OPS } else { "v1" };
            wait_for(
                &format!("{kind} {object} left by an earlier run to go"),
                120,
                || async {
                    match get(&env.admin, api_version, kind, None, object).await {
                        Some(o) if o.metadata.deletion_timestamp.is_some() => None,
                        _ => Some(()),
                    }
                },
            )
            .await;
        }
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

    pub async fn apply(&mut self, client: &Client, object: Value) {
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
    pub fn also_delete(&mut self, api_version: &str, kind: &str, ns: Option<&str>, name: &str) {
        self.objects.push((
            api_version.into(),
            kind.into(),
            ns.map(str::to_owned),
            name.into(),
        ));
    }

    /// `run --once` as the operator's ServiceAccount: (exit 0, stdout, stderr).
    pub fn once(&self, env: &Env) -> (bool, String, String) {
        let mut cmd = operator_cmd(env, &self.dir);
        cmd.arg("--once");
        let mut p = Proc::spawn(&mut cmd, &self.dir, "once");
        let status = p.wait_timeout(180).expect("run --once ends within 180 s");
        (status.success(), p.stdout(), p.stderr())
    }

    pub async fn cluster(&self, client: &Client) -> Value {
        get(client, OPS, "Cluster", None, &self.name)
            .await
            .expect("Cluster exists")
            .data
    }

    pub async fn condition(&self, client: &Client, type_: &str) -> (String, String, String) {
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

impl Scope {
    /// Deletes everything the scope holds now (Cluster first, namespaces last); on drop too, for the
    /// tests that hold a scope without [`Scenario`].
    pub async fn clean_up(&mut self) {
        let objects = std::mem::take(&mut self.objects);
        if !objects.is_empty() {
            delete_all(&client_from(&self.kubeconfig).await, objects).await;
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if self.objects.is_empty() {
            return;
        }
        // Drop cannot await: a thread with its own runtime deletes everything.
        let kubeconfig = self.kubeconfig.clone();
        let objects = std::mem::take(&mut self.objects);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async { delete_all(&client_from(&kubeconfig).await, objects).await });
        })
        .join();
    }
}

/// Deletes `objects`, Cluster first and namespaces last.
async fn delete_all(client: &Client, mut objects: Vec<(String, String, Option<String>, String)>) {
    objects.sort_by_key(|o| match o.1.as_str() {
        "Cluster" => 0,
        "Namespace" => 2,
        _ => 1,
    });
    for (api_version, kind, ns, name) in objects {
        cleanup_delete(client, &api_version, &kind, ns.as_deref(), &name).await;
        if kind == "Cluster" {
            // The operator's finalizer would keep it until the next test's `run` finalizes it (or,
            // re-created by a re-run, deletes it under that run).
            drop_finalizers(client, &api_version, &kind, None, &name).await;
        }
    }
}

/// The name of the function this is written in (a test), from the type name of an item nested in it:
/// `it::control_plane::apply::a_test::{{closure}}::here` gives `a_test`.
macro_rules! test_name {
    () => {{
        fn here() {}
        $crate::control_plane::scope::enclosing_function(std::any::type_name_of_val(&here))
    }};
}
pub(crate) use test_name;

/// The function segment of `nested`, the type name of an item `here` nested in it (closures and
/// async blocks between them skipped).
pub fn enclosing_function(nested: &'static str) -> &'static str {
    let segments: Vec<&'static str> = nested
        .split("::")
        .filter(|segment| *segment != "{{closure}}")
        .collect();
    segments.iter().rev().nth(1).copied().unwrap_or(nested)
}

/// A [`Scenario`] of the test this is written in: `scenario!("cp-x", &["cp-x-a"])`.
macro_rules! scenario {
    ($cluster:expr, $namespaces:expr) => {
        $crate::control_plane::scope::Scenario::new(
            $crate::control_plane::scope::test_name!(),
            $cluster,
            $namespaces,
        )
    };
}
pub(crate) use scenario;

/// One real-server test, in the style of linkerd2 policy-controller's `with_temp_ns`: [`Scenario::run`]
/// takes the control plane (one test at a time), makes the test's signed repository ([`Intent`]) and
/// its [`Scope`] (namespaces, trust inputs, Cluster, operator directory), optionally the webhook
/// replica, runs the body, and deletes the scope afterwards, also when the body panics (the panic is
/// then resumed). Without a control plane (or a third-party CRD the test needs) it prints why and
/// returns.
pub struct Scenario<'a> {
    test: &'static str,
    cluster: &'a str,
    namespaces: &'a [&'a str],
    webhook: bool,
    needs_thirdparty: Option<&'static str>,
}

impl<'a> Scenario<'a> {
    /// Test `test` with cluster id `cluster` and managed `namespaces`; see [`scenario!`].
    pub fn new(test: &'static str, cluster: &'a str, namespaces: &'a [&'a str]) -> Scenario<'a> {
        Scenario {
            test,
            cluster,
            namespaces,
            webhook: false,
            needs_thirdparty: None,
        }
    }

    /// Starts the webhook replica before the body (stopped after it).
    pub fn webhook(mut self) -> Scenario<'a> {
        self.webhook = true;
        self
    }

    /// Skips the test, saying `why`, without ../shared/thirdparty-crds.
    pub fn needs_thirdparty(mut self, why: &'static str) -> Scenario<'a> {
        self.needs_thirdparty = Some(why);
        self
    }

    /// Sets up, runs `body` with the control plane, the repository and the scope, and cleans up.
    pub async fn run(self, body: impl AsyncFnOnce(&Env, &Intent, &mut Scope)) {
        let Some(env) = env(self.test).await else {
            return;
        };
        if let (Some(why), None) = (self.needs_thirdparty, &env.shared.thirdparty) {
            skipped(self.test, why);
            return;
        }
        let intent = Intent::new(self.cluster);
        let mut scope = Scope::new(&env, &intent, self.namespaces).await;
        let webhook = if self.webhook {
            Some(webhook_replica(&env, &scope.dir).await)
        } else {
            None
        };
        let outcome = {
            use futures::FutureExt as _;
            std::panic::AssertUnwindSafe(body(&env, &intent, &mut scope))
                .catch_unwind()
                .await
        };
        drop(webhook);
        scope.clean_up().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// `vworkspace-operator run` as the operator's ServiceAccount, its caches and logs under `dir`.
///
/// Its `--watch-label-selector` picks the Cluster of the scope `dir` lies in (the directory under the
/// scratch directory, named for the Cluster); outside a scope, the Clusters no scope created.
pub fn operator_cmd(env: &Env, dir: &Path) -> Command {
    operator_cmd_for(env, dir, &scope_selector(env, dir))
}

/// [`operator_cmd`] reconciling the Clusters `selector` picks.
pub fn operator_cmd_for(env: &Env, dir: &Path, selector: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .args(["--watch-label-selector", selector])
        .args(["--namespace", SYSTEM, "--cache-dir"])
        .arg(dir.join("cache"))
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
        ])
        .args(["--fetch-timeout", "60"])
        .envs(crate::common::ALLOCATOR_ENV)
        .env("KUBECONFIG", &env.shared.operator_kubeconfig)
        // VWS_TEST_OPERATOR_LOG (a RUST_LOG filter) shows more of a failing test's operator.
        .env(
            "RUST_LOG",
            std::env::var("VWS_TEST_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
        );
    cmd
}

/// The label selector of the Clusters an operator started in `dir` reconciles ([`SCOPE_LABEL`]).
pub fn scope_selector(env: &Env, dir: &Path) -> String {
    match dir
        .strip_prefix(&env.shared.scratch)
        .ok()
        .and_then(|rest| rest.components().next())
    {
        Some(scope) => format!("{SCOPE_LABEL}={}", scope.as_os_str().to_string_lossy()),
        None => format!("!{SCOPE_LABEL}"),
    }
}

/// A `run` replica that serves the admission webhook and follows the standby Lease (it never
/// reconciles). It runs as the admin so that its requests are not counted as the operator's.
pub async fn webhook_replica(env: &Env, dir: &Path) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .envs(crate::common::ALLOCATOR_ENV)
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

/// Object writes (not the Cluster's status, not Events) among `writes`.
pub fn object_writes(writes: &[String]) -> Vec<String> {
    writes
        .iter()
        .filter(|w| !w.contains("/status") && !w.contains("/events"))
        .cloned()
        .collect()
}

pub async fn exists(client: &Client, api_version: &str, kind: &str, ns: &str, name: &str) -> bool {
    get(client, api_version, kind, Some(ns), name)
        .await
        .is_some()
}

/// The names of the objects a Cluster's status records as its inventory, decoded as the operator
/// reads them (`status.compactInventory`).
pub fn inventory_names(cluster: &Value) -> Vec<String> {
    let status: vworkspace_core::crd::ClusterStatus =
        serde_json::from_value(cluster["status"].clone()).expect("a Cluster status");
    status.inventory.into_iter().map(|e| e.name).collect()
}

#[test]
fn test_name_is_the_function_it_is_written_in() {
    assert_eq!(test_name!(), "test_name_is_the_function_it_is_written_in");
    let body = async || test_name!();
    let in_async_closure = futures::executor::block_on(body());
    assert_eq!(
        in_async_closure,
        "test_name_is_the_function_it_is_written_in"
    );
    assert_eq!(enclosing_function("it::a::b::{{closure}}::here"), "b");
}
