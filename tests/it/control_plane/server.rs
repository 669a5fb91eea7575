//! The real API server of the tests (scripts/control-plane.sh): clients, server-side apply of YAML
//! files, the operator's ServiceAccount kubeconfig from a TokenRequest, the audit log, and processes
//! that are stopped with their whole process group.

use std::io::{BufRead, Seek};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

pub const OPERATOR_USER: &str = "system:serviceaccount:vworkspace-system:vworkspace-app-operator";
pub const TEST_MANAGER: &str = "vws-control-plane-test";

/// Where the control plane is, from the environment `scripts/test.sh` sets. `None` (after printing
/// one line that says why) when the tests run without it.
pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    pub audit_log: PathBuf,
}

pub fn control_plane(test: &str) -> Option<ControlPlane> {
    match std::env::var_os("VWS_TEST_KUBECONFIG") {
        Some(k) if !k.is_empty() => {
            let kubeconfig = PathBuf::from(k);
            let audit_log = std::env::var_os("VWS_TEST_AUDIT_LOG")
                .map(PathBuf::from)
                .unwrap_or_else(|| kubeconfig.with_file_name("audit.log"));
            Some(ControlPlane {
                kubeconfig,
                audit_log,
            })
        }
        _ => {
            let why = std::env::var("VWS_TEST_CONTROL_PLANE_SKIP").unwrap_or_else(|_| {
                "VWS_TEST_KUBECONFIG is not set (run scripts/test.sh, or scripts/control-plane.sh start and export it)".into()
            });
            skipped(test, &format!("no real API server: {why}"));
            None
        }
    }
}

/// Says that a test did not run, and why, on the real stderr: libtest captures `println!`/`eprintln!`
/// of passing tests, not direct writes, so the line shows in a plain `cargo test` too.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    // One write, so that the line is not torn by another test's output.
    let _ = std::io::stderr().write_all(format!("SKIPPED {test}: {why}\n").as_bytes());
}

pub async fn client_from(kubeconfig: &Path) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// The break-glass group of docs/security.md: the only one besides the operator that the admission
/// policy `vworkspace-managed-from-git` lets write ApplicationInstances and Operations in managed
/// namespaces.
pub const BREAK_GLASS_GROUP: &str = "vworkspace:break-glass";

/// A client acting as a member of [`BREAK_GLASS_GROUP`] (the admin kubeconfig impersonating a user in
/// it), with the rights to write the operator's kinds bound to that group here (an owner who uses
/// break glass binds such rights to it). What it writes passes the admission policy and is judged by
/// the webhook and the controllers alone.
pub async fn break_glass_client(admin: &Client, kubeconfig: &Path) -> Client {
    for object in [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "vws-test-break-glass"},
               "rules": [{"apiGroups": ["apps.vworkspace.io", "ops.vworkspace.io"],
                          "resources": ["applicationinstances", "operations"],
                          "verbs": ["get", "list", "create", "update", "patch", "delete"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "vws-test-break-glass"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "vws-test-break-glass"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BREAK_GLASS_GROUP}]}),
    ] {
        apply(admin, &object).await.expect("break-glass rights");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    config.auth_info.impersonate = Some("break-glass-tester".into());
    config.auth_info.impersonate_groups = Some(vec![BREAK_GLASS_GROUP.into()]);
    Client::try_from(config).expect("client")
}

/// The API resource of `apiVersion`/`kind`, by discovery.
pub async fn resource(client: &Client, api_version: &str, kind: &str) -> (ApiResource, bool) {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discover {api_version} {kind}: {e}"));
    (ar, caps.scope == kube::discovery::Scope::Namespaced)
}

pub async fn dynamic_api(
    client: &Client,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let (ar, namespaced) = resource(client, api_version, kind).await;
    match (namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        (true, None) => panic!("{kind} is namespaced"),
        (false, _) => Api::all_with(client.clone(), &ar),
    }
}

/// Server-side apply of one object (as the client's user, field manager [`TEST_MANAGER`], force).
///
/// A `Cluster` always carries [`SCOPE_LABEL`] with its own name (added here, so that a re-apply of a
/// partial Cluster keeps it): the test's operator reconciles only its own Cluster
/// ([`super::scope::operator_cmd`]).
pub async fn apply(client: &Client, object: &Value) -> Result<DynamicObject, kube::Error> {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let name = object["metadata"]["name"].as_str().expect("name");
    let ns = object["metadata"]["namespace"].as_str();
    let api = dynamic_api(client, api_version, kind, ns).await;
    let mut object = object.clone();
    if kind == "Cluster" && object["metadata"]["labels"][SCOPE_LABEL].is_null() {
        object["metadata"]["labels"][SCOPE_LABEL] = json!(name);
    }
    api.patch(
        name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
}

/// The label that ties a test's `Cluster` to the test's operator processes (`run
/// --watch-label-selector`): every test shares one API server, and an operator that reconciled every
/// test's Cluster would write into tests that are not its own.
pub const SCOPE_LABEL: &str = "test.vworkspace.io/scope";

/// Every document of a YAML file.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read YAML");
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Server-side apply of a file's raw YAML (one object; for the multi-megabyte third-party CRDs).
pub async fn apply_raw_crd(client: &Client, path: &Path, name: &str) {
    let body = std::fs::read(path).expect("read CRD");
    let req = http::Request::patch(format!(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}?fieldManager={TEST_MANAGER}&force=true"
    ))
    .header("Content-Type", "application/apply-patch+yaml")
    .body(body)
    .expect("request");
    client
        .request_text(req)
        .await
        .unwrap_or_else(|e| panic!("apply {}: {e}", path.display()));
}

/// Waits until every named CRD is Established.
pub async fn wait_established(client: &Client, names: &[String]) {
    let api: Api<DynamicObject> = dynamic_api(
        client,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
    )
    .await;
    for name in names {
        wait_for(&format!("CRD {name} Established"), 60, || async {
            let crd = api.get(name).await.ok()?;
            let conditions = crd.data["status"]["conditions"].as_array()?.clone();
            conditions
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
                .then_some(())
        })
        .await;
    }
}

/// Polls `probe` every 200 ms until it returns `Some`, or panics after `seconds`.
pub async fn wait_for<T, F, Fut>(what: &str, seconds: u64, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn get(
    client: &Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Option<DynamicObject> {
    dynamic_api(client, api_version, kind, ns)
        .await
        .get_opt(name)
        .await
        .expect("get")
}

pub async fn delete(client: &Client, api_version: &str, kind: &str, ns: Option<&str>, name: &str) {
    let api = dynamic_api(client, api_version, kind, ns).await;
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("delete {kind} {name}: {e}"),
    }
}

/// The server and CA of an admin kubeconfig written by scripts/control-plane.sh.
pub fn server_and_ca(kubeconfig: &Path) -> (String, String) {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let cluster = kc.clusters[0].cluster.clone().expect("cluster");
    (
        cluster.server.expect("server"),
        cluster
            .certificate_authority
            .expect("certificate-authority path"),
    )
}

/// A kubeconfig for the operator's ServiceAccount: a token from the TokenRequest API, nothing else.
pub async fn operator_kubeconfig(admin: &Client, admin_kubeconfig: &Path, out: &Path) {
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), "vworkspace-system");
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 7200}
    });
    let response: Value = sa
        .create_subresource(
            "token",
            "vworkspace-app-operator",
            &Default::default(),
            &request,
        )
        .await
        .expect("TokenRequest for the operator's ServiceAccount");
    let token = response["status"]["token"].as_str().expect("token");
    let (server, ca) = server_and_ca(admin_kubeconfig);
    std::fs::write(
        out,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: control-plane\n    cluster:\n      server: {server}\n      certificate-authority: {ca}\nusers:\n  - name: vworkspace-app-operator\n    user:\n      token: {token}\ncontexts:\n  - name: operator\n    context: {{cluster: control-plane, user: vworkspace-app-operator}}\ncurrent-context: operator\n"
        ),
    )
    .expect("write operator kubeconfig");
}

/// The audit log (JSON lines, one event per request at ResponseComplete).
pub struct Audit {
    path: PathBuf,
    offset: u64,
}

impl Audit {
    /// Marks the current end of the log: [`Audit::since`] reads what comes after.
    pub fn mark(path: &Path) -> Audit {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Audit {
            path: path.to_owned(),
            offset,
        }
    }

    pub fn since(&self) -> Vec<Value> {
        let mut file = std::fs::File::open(&self.path).expect("audit log");
        file.seek(std::io::SeekFrom::Start(self.offset))
            .expect("seek");
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    /// Write requests by `user` since the mark: "VERB URI (code)".
    pub fn writes_by(&self, user: &str) -> Vec<String> {
        self.since()
            .iter()
            .filter(|e| e["user"]["username"] == user)
            .filter(|e| {
                matches!(
                    e["verb"].as_str(),
                    Some("create" | "update" | "patch" | "delete" | "deletecollection")
                )
            })
            .map(|e| {
                format!(
                    "{} {} ({})",
                    e["verb"].as_str().unwrap_or_default(),
                    e["requestURI"].as_str().unwrap_or_default(),
                    e["responseStatus"]["code"]
                )
            })
            .collect()
    }
}

/// A process in its own process group, stopped (TERM, then KILL) with the whole group when dropped.
pub struct Proc {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, logs: &Path, tag: &str) -> Proc {
        let stdout = logs.join(format!("{tag}.stdout"));
        let stderr = logs.join(format!("{tag}.stderr"));
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("log"))
            .stderr(std::fs::File::create(&stderr).expect("log"))
            .spawn()
            .expect("spawn");
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last `lines` lines of stderr: what an assertion message can carry whole.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let all = self.stderr();
        let skip = all.lines().count().saturating_sub(lines);
        all.lines().skip(skip).collect::<Vec<_>>().join("\n")
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    /// Waits up to `seconds` for the process to exit; its status if it did.
    pub fn wait_timeout(&mut self, seconds: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// TERM to the group, then KILL after 10 s.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            // Already exited and reaped: its pid may be reused, so signal nothing.
            return;
        }
        self.signal("-TERM");
        if self.wait_timeout(10).is_none() {
            self.signal("-KILL");
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

pub use crate::support::free_port;

/// Server-side apply of one object as the client's user with field manager `manager` (force): a
/// writer other than [`TEST_MANAGER`], whose fields (a finalizer, say) are its own in the set.
pub async fn apply_as(
    client: &Client,
    manager: &str,
    object: &Value,
) -> Result<DynamicObject, kube::Error> {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let name = object["metadata"]["name"].as_str().expect("name");
    let ns = object["metadata"]["namespace"].as_str();
    let api = dynamic_api(client, api_version, kind, ns).await;
    api.patch(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(object),
    )
    .await
}

/// A JSON merge patch (`kubectl patch --type merge`) as the client's user.
pub async fn merge_patch(
    client: &Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    patch: &Value,
) -> Result<DynamicObject, kube::Error> {
    let api = dynamic_api(client, api_version, kind, ns).await;
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
}

/// Removes every finalizer of an object (gone: nothing to do). For the cleanup of a test whose
/// Cluster carries the operator's finalizer and that no `run` will finalize any more.
pub async fn drop_finalizers(
    client: &Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) {
    let patch = json!({"metadata": {"finalizers": null}});
    match merge_patch(client, api_version, kind, ns, name, &patch).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("remove the finalizers of {kind} {name}: {e}"),
    }
}

/// The operator's ServiceAccount's writes since the mark whose request URI contains `fragment`.
pub fn operator_writes_to(audit: &Audit, fragment: &str) -> Vec<String> {
    audit
        .writes_by(OPERATOR_USER)
        .into_iter()
        .filter(|w| w.contains(fragment))
        .collect()
}

/// [`delete`] for a test's cleanup: an object the admission policy keeps the admin from deleting
/// (an ApplicationInstance or Operation in a managed namespace) is left to its namespace's
/// deletion (the namespace controller is exempt), instead of ending the cleanup there.
pub async fn cleanup_delete(
    client: &Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) {
    let api = dynamic_api(client, api_version, kind, ns).await;
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(kube::Error::Api(s)) if s.code == 403 && ns.is_some() => {}
        Err(e) => panic!("delete {kind} {name}: {e}"),
    }
}
