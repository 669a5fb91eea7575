//! The application arrives: the real Flux source-controller and helm-controller (built from Go
//! modules by scripts/flux.sh, passed as VWS_TEST_FLUX_BIN by scripts/test.sh) consume what the
//! operator writes, out of cluster against the control plane, from the test's own HTTPS Helm
//! repository and OCI registry on loopback ([`super::chart_server`]). Without the binaries every
//! test here prints SKIPPED and returns.
//!
//! One walk proves, as a user would see it: install (sources Ready, HelmRelease Ready, the chart's
//! ConfigMap with the decrypted value rendered and the value nowhere in the HelmRelease), an upgrade
//! while helm-controller is stopped (the instance is not Ready until helm-controller has installed
//! that generation), a secret rotation and a new chart version rolled out at once, and removal from
//! Git (prune -> helm uninstall, nothing left). The operator's log shows no refusal of a declared
//! spec and no 403 of its namespace's HelmRelease watch.

use std::path::{Path, PathBuf};
use std::process::Command;

use kube::Client;
use serde_json::{Value, json};

use super::chart_server::ChartServer;
use super::fixture::Intent;
use super::server::*;
use super::{AI, Env, OPS, Scope, env, operator_cmd};

const HR: &str = "helm.toolkit.fluxcd.io/v2";
const SOURCE: &str = "source.toolkit.fluxcd.io/v1";

/// The directory of the Flux and kwok binaries (scripts/flux.sh build); `None` (one line printed)
/// without them.
pub fn flux_bin(test: &str) -> Option<PathBuf> {
    match std::env::var_os("VWS_TEST_FLUX_BIN") {
        Some(dir) if Path::new(&dir).join("helm-controller").is_file() => Some(PathBuf::from(dir)),
        _ => {
            let why = std::env::var("VWS_TEST_FLUX_SKIP").unwrap_or_else(|_| {
                "VWS_TEST_FLUX_BIN is not set (run scripts/test.sh, or scripts/flux.sh build and export it)".into()
            });
            skipped(test, &format!("no Flux controllers: {why}"));
            None
        }
    }
}

/// The Flux CRDs of the modules built (target/flux/crds), applied as the admin.
pub async fn install_flux_crds(admin: &Client, bin: &Path) {
    let dir = bin.with_file_name("crds");
    let mut names = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        // source.toolkit.fluxcd.io_helmcharts.yaml -> helmcharts.source.toolkit.fluxcd.io
        let stem = file.file_stem().and_then(|s| s.to_str()).expect("name");
        let (group, plural) = stem.split_once('_').expect("group_plural");
        let name = format!("{plural}.{group}");
        apply_raw_crd(admin, &file, &name).await;
        names.push(name);
    }
    wait_established(admin, &names).await;
}

/// source-controller and helm-controller, out of cluster as the admin, each in its own process
/// group (stopped when dropped).
pub struct Flux {
    bin: PathBuf,
    dir: PathBuf,
    kubeconfig: PathBuf,
    ca: PathBuf,
    pub source: Proc,
    pub helm: Option<Proc>,
}

impl Flux {
    pub fn start(env: &Env, bin: &Path, dir: &Path, ca: &Path) -> Flux {
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).expect("mkdir");
        let port = free_port();
        let mut cmd = Command::new(bin.join("source-controller"));
        cmd.arg(format!("--storage-path={}", storage.display()))
            .arg(format!("--storage-addr=127.0.0.1:{port}"))
            .arg(format!("--storage-adv-addr=127.0.0.1:{port}"))
            .args(["--metrics-addr=127.0.0.1:0", "--health-addr=127.0.0.1:0"])
            .args(["--enable-leader-election=false", "--log-level=debug"]);
        let source = Proc::spawn(
            Self::environment(&mut cmd, &env.cp.kubeconfig, ca),
            dir,
            "source-controller",
        );
        let mut flux = Flux {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            kubeconfig: env.cp.kubeconfig.clone(),
            ca: ca.to_owned(),
            source,
            helm: None,
        };
        flux.start_helm();
        flux
    }

    fn environment<'c>(cmd: &'c mut Command, kubeconfig: &Path, ca: &Path) -> &'c mut Command {
        cmd.env("KUBECONFIG", kubeconfig)
            .env("SSL_CERT_FILE", ca)
            .env("RUNTIME_NAMESPACE", "flux-system")
            .env("HOME", kubeconfig.parent().unwrap_or(Path::new("/tmp")))
    }

    pub fn start_helm(&mut self) {
        let mut cmd = Command::new(self.bin.join("helm-controller"));
        cmd.args(["--metrics-addr=127.0.0.1:0", "--health-addr=127.0.0.1:0"])
            .args(["--enable-leader-election=false", "--log-level=debug"]);
        let n = std::fs::read_dir(&self.dir).map_or(0, |d| d.count());
        self.helm = Some(Proc::spawn(
            Self::environment(&mut cmd, &self.kubeconfig, &self.ca),
            &self.dir,
            &format!("helm-controller-{n}"),
        ));
    }

    pub fn stop_helm(&mut self) {
        if let Some(mut helm) = self.helm.take() {
            helm.stop();
        }
    }

    pub fn logs(&self) -> String {
        let helm = self
            .helm
            .as_ref()
            .map(|p| p.stderr_tail(30))
            .unwrap_or_default();
        format!(
            "source-controller (last lines):\n{}\nhelm-controller:\n{}",
            self.source.stderr_tail(30),
            helm
        )
    }
}

/// Removes the Flux finalizers left in `ns` once the controllers are gone (a failed test), so that
/// the namespace's deletion by [`Scope`] is not held.
pub struct FluxLeftovers {
    pub kubeconfig: PathBuf,
    pub ns: String,
}

impl Drop for FluxLeftovers {
    fn drop(&mut self) {
        let (kubeconfig, ns) = (self.kubeconfig.clone(), self.ns.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = client_from(&kubeconfig).await;
                for (api_version, kind) in [
                    (HR, "HelmRelease"),
                    (SOURCE, "HelmRepository"),
                    (SOURCE, "OCIRepository"),
                    (SOURCE, "HelmChart"),
                ] {
                    let api = dynamic_api(&client, api_version, kind, Some(&ns)).await;
                    let Ok(list) = api.list(&Default::default()).await else {
                        continue;
                    };
                    for object in list.items {
                        let name = object.metadata.name.clone().unwrap_or_default();
                        drop_finalizers(&client, api_version, kind, Some(&ns), &name).await;
                    }
                }
            });
        })
        .join();
    }
}

/// Declares instance `name` of chart `chart`@`version` from `repository`, with `host` inline and
/// `password` encrypted (bound) at `mail.password`.
pub fn declare_app(
    intent: &Intent,
    ns: &str,
    name: &str,
    (repository, chart, version): (&str, &str, &str),
    host: &str,
    password: &str,
) {
    let armored = intent.bound_encrypt(password, ns, name, "mail.password");
    let indented: String = armored.lines().map(|l| format!("        {l}\n")).collect();
    intent.write(
        &format!("clusters/{}/namespaces/{ns}/applicationinstances/{name}.yaml", intent.cluster),
        &format!(
            "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: {name}\nspec:\n  chart:\n    repository: {repository}\n    name: {chart}\n    version: {version}\n  values:\n    host: {host}\n    mail:\n      password: |\n{indented}"
        ),
    );
}

/// A signed release of what the intent holds, and a pass of the running operator (a change of the
/// Cluster triggers one).
pub async fn release_and_pass(env: &Env, intent: &Intent, message: &str) {
    intent.release(&[]);
    intent.commit(message);
    let patch = json!({"metadata": {"annotations": {"test.vworkspace.io/pass": message}}});
    merge_patch(&env.admin, OPS, "Cluster", None, &intent.cluster, &patch)
        .await
        .expect("annotate the Cluster");
}

/// The `Ready` condition of an object: (status, reason, message, observedGeneration).
pub fn ready_of(object: &Value) -> Option<(String, String, String, Option<i64>)> {
    let c = object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Some((
        s("status"),
        s("reason"),
        s("message"),
        c["observedGeneration"].as_i64(),
    ))
}

pub async fn object(
    client: &Client,
    api_version: &str,
    kind: &str,
    ns: &str,
    name: &str,
) -> Option<Value> {
    get(client, api_version, kind, Some(ns), name)
        .await
        .map(|o| serde_json::to_value(o).expect("json"))
}

/// The chart's rendered ConfigMap data, once `want` holds of it.
pub async fn rendered(
    client: &Client,
    ns: &str,
    release: &str,
    what: &str,
    flux: &Flux,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let name = format!("{release}-rendered");
    let mut last = Value::Null;
    for _ in 0..600 {
        if let Some(cm) = object(client, "v1", "ConfigMap", ns, &name).await {
            if want(&cm["data"]) {
                return cm["data"].clone();
            }
            last = cm["data"].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("{what}: ConfigMap {ns}/{name} is {last}\n{}", flux.logs());
}

/// Waits until the instance's `Ready` is `True` for its current generation, and returns it.
pub async fn instance_ready(
    client: &Client,
    ns: &str,
    name: &str,
    flux: &Flux,
    operator: &Proc,
) -> Value {
    for _ in 0..600 {
        if let Some(ai) = object(client, AI, "ApplicationInstance", ns, name).await
            && let Some((status, ..)) = ready_of(&ai)
            && status == "True"
            && ai["status"]["observedGeneration"] == ai["metadata"]["generation"]
        {
            return ai;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let ai = object(client, AI, "ApplicationInstance", ns, name).await;
    let hr = object(client, HR, "HelmRelease", ns, name).await;
    panic!(
        "instance {ns}/{name} not Ready: {ai:?}\nHelmRelease: {hr:?}\n{}\noperator: {}",
        flux.logs(),
        operator.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_flux_installs_upgrades_rotates_and_uninstalls_a_declared_chart() {
    let test = "the_real_flux_installs_upgrades_rotates_and_uninstalls_a_declared_chart";
    let Some(env) = env(test).await else {
        return;
    };
    let Some(bin) = flux_bin(test) else {
        return;
    };
    install_flux_crds(&env.admin, &bin).await;
    let ns = "cp-delivery-a";
    let name = "web";
    let intent = Intent::new("cp-delivery");
    let scope = Scope::new(&env, &intent, &[ns]).await;
    let charts = ChartServer::start(&scope.dir).await;
    charts.publish("demo", "0.1.0");
    let repo = charts.helm_url();
    declare_app(
        &intent,
        ns,
        name,
        (&repo, "demo", "0.1.0"),
        "one.example.org",
        "pw-one",
    );
    intent.release(&[]);
    intent.commit("release 1: web");
    let _leftovers = FluxLeftovers {
        kubeconfig: env.cp.kubeconfig.clone(),
        ns: ns.to_owned(),
    };
    let _webhook = super::webhook_replica(&env, &scope.dir).await;
    let mut flux = Flux::start(&env, &bin, &scope.dir, &charts.ca);
    let operator = Proc::spawn(&mut operator_cmd(&env, &scope.dir), &scope.dir, "operator");

    // Install.
    let data = rendered(&env.admin, ns, name, "install", &flux, |d| {
        d["password"] == "pw-one"
    })
    .await;
    assert_eq!(data["host"], "one.example.org");
    assert_eq!(data["chartVersion"], "0.1.0");
    let source = object(&env.admin, SOURCE, "HelmRepository", ns, name)
        .await
        .expect("HelmRepository");
    assert_eq!(
        ready_of(&source).map(|r| r.0).as_deref(),
        Some("True"),
        "{source}"
    );
    let ai = instance_ready(&env.admin, ns, name, &flux, &operator).await;
    let hr = object(&env.admin, HR, "HelmRelease", ns, name)
        .await
        .expect("HelmRelease");
    assert!(
        !hr.to_string().contains("pw-one"),
        "no plaintext in the HelmRelease: {hr}"
    );
    assert_eq!(ready_of(&hr).map(|r| r.0).as_deref(), Some("True"), "{hr}");
    assert!(!ai.to_string().contains("pw-one"));

    // An upgrade with helm-controller stopped: the HelmRelease moves to a generation nobody
    // installs, and the instance must not say Ready (it said InstallSucceeded before the fix).
    flux.stop_helm();
    let before = hr["metadata"]["generation"].as_i64().expect("generation");
    declare_app(
        &intent,
        ns,
        name,
        (&repo, "demo", "0.1.0"),
        "two.example.org",
        "pw-one",
    );
    release_and_pass(&env, &intent, "release 2: host two").await;
    let moved = wait_for("the HelmRelease's new generation", 120, || async {
        let hr = object(&env.admin, HR, "HelmRelease", ns, name).await?;
        (hr["metadata"]["generation"].as_i64() > Some(before)).then_some(hr)
    })
    .await;
    let generation = moved["metadata"]["generation"].as_i64();
    // The instance has judged the new HelmRelease (its status names Flux's progress) ...
    let judged = wait_for("the instance to judge the new generation", 60, || async {
        let ai = object(&env.admin, AI, "ApplicationInstance", ns, name).await?;
        let (status, reason, message, _) = ready_of(&ai)?;
        (status != "True").then_some((status, reason, message))
    })
    .await;
    assert_eq!(judged.0, "Unknown", "{judged:?}");
    assert!(judged.2.contains("generation"), "{judged:?}");
    // ... and stays so while nobody installs it.
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let ai = object(&env.admin, AI, "ApplicationInstance", ns, name)
            .await
            .expect("instance");
        assert_ne!(ready_of(&ai).map(|r| r.0).as_deref(), Some("True"), "{ai}");
    }
    flux.start_helm();
    let data = rendered(&env.admin, ns, name, "upgrade", &flux, |d| {
        d["host"] == "two.example.org"
    })
    .await;
    assert_eq!(data["password"], "pw-one");
    instance_ready(&env.admin, ns, name, &flux, &operator).await;
    let hr = object(&env.admin, HR, "HelmRelease", ns, name)
        .await
        .expect("HelmRelease");
    assert_eq!(hr["metadata"]["generation"].as_i64(), generation);
    assert_eq!(ready_of(&hr).and_then(|r| r.3), generation, "{hr}");

    // A secret rotation: only the encrypted value changes (the HelmRelease's spec does not).
    declare_app(
        &intent,
        ns,
        name,
        (&repo, "demo", "0.1.0"),
        "two.example.org",
        "pw-two",
    );
    release_and_pass(&env, &intent, "release 3: rotated").await;
    rendered(&env.admin, ns, name, "rotation", &flux, |d| {
        d["password"] == "pw-two"
    })
    .await;
    let ai = instance_ready(&env.admin, ns, name, &flux, &operator).await;
    let hr = object(&env.admin, HR, "HelmRelease", ns, name)
        .await
        .expect("HelmRelease");
    assert_eq!(
        hr["status"]["lastHandledReconcileAt"],
        hr["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"],
        "{hr}"
    );
    assert!(!ai.to_string().contains("pw-two") && !hr.to_string().contains("pw-two"));

    // A new chart version in the same repository.
    charts.publish("demo", "0.2.0");
    declare_app(
        &intent,
        ns,
        name,
        (&repo, "demo", "0.2.0"),
        "two.example.org",
        "pw-two",
    );
    release_and_pass(&env, &intent, "release 4: chart 0.2.0").await;
    let data = rendered(&env.admin, ns, name, "new chart version", &flux, |d| {
        d["chartVersion"] == "0.2.0"
    })
    .await;
    assert_eq!(data["password"], "pw-two");
    instance_ready(&env.admin, ns, name, &flux, &operator).await;

    // Removal from Git: prune, the garbage collector deletes the HelmRelease, helm uninstalls.
    intent.remove(&format!(
        "clusters/{}/namespaces/{ns}/applicationinstances/{name}.yaml",
        intent.cluster
    ));
    release_and_pass(&env, &intent, "release 5: web removed").await;
    for (api_version, kind, object_name) in [
        (AI, "ApplicationInstance", name.to_owned()),
        (HR, "HelmRelease", name.to_owned()),
        ("v1", "ConfigMap", format!("{name}-rendered")),
        ("v1", "Secret", format!("{name}-values")),
    ] {
        let admin = env.admin.clone();
        let object_name = &object_name;
        wait_for(&format!("{kind} {ns}/{object_name} gone"), 120, || {
            let admin = admin.clone();
            async move {
                get(&admin, api_version, kind, Some(ns), object_name)
                    .await
                    .is_none()
                    .then_some(())
            }
        })
        .await;
    }
    // Helm's own release records (Secrets of type helm.sh/release.v1) are gone too.
    let secrets = dynamic_api(&env.admin, "v1", "Secret", Some(ns)).await;
    let left: Vec<String> = secrets
        .list(&kube::api::ListParams::default().labels("owner=helm"))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert!(left.is_empty(), "helm release records left: {left:?}");

    let log = operator.stderr();
    assert!(
        !log.contains("SpecDiffersFromRelease"),
        "a declared spec was refused:\n{log}"
    );
    // Only this test's namespace: on the shared control plane the operator also watches other
    // tests' managed namespaces, and one of them removes the operator's RoleBinding on purpose.
    assert!(
        !log.lines()
            .any(|l| l.contains("403") && l.contains("WARN") && l.contains(ns)),
        "a HelmRelease watch of {ns} logged a 403:\n{log}"
    );
    let events = dynamic_api(&env.admin, "v1", "Event", Some(ns)).await;
    let refusals: Vec<Value> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .map(|e| serde_json::to_value(e).expect("json"))
        .filter(|e| e["reason"] == "SpecDiffersFromRelease")
        .collect();
    assert!(refusals.is_empty(), "{refusals:?}");
    assert!(
        charts
            .served()
            .iter()
            .any(|p| p.contains("/charts/demo-0.2.0.tgz")),
        "{:?}",
        charts.served()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_flux_installs_a_chart_from_an_oci_registry_and_uninstalls_it() {
    let test = "the_real_flux_installs_a_chart_from_an_oci_registry_and_uninstalls_it";
    let Some(env) = env(test).await else {
        return;
    };
    let Some(bin) = flux_bin(test) else {
        return;
    };
    install_flux_crds(&env.admin, &bin).await;
    let ns = "cp-delivery-oci";
    let name = "cache";
    let intent = Intent::new("cp-delivery-oci");
    let scope = Scope::new(&env, &intent, &[ns]).await;
    let charts = ChartServer::start(&scope.dir).await;
    charts.publish("demo", "0.1.0");
    charts.publish("demo", "0.2.0");
    let registry = charts.oci_url();
    declare_app(
        &intent,
        ns,
        name,
        (&registry, "demo", "0.1.0"),
        "oci.example.org",
        "pw-oci",
    );
    intent.release(&[]);
    intent.commit("release 1: cache from OCI");
    let _leftovers = FluxLeftovers {
        kubeconfig: env.cp.kubeconfig.clone(),
        ns: ns.to_owned(),
    };
    let _webhook = super::webhook_replica(&env, &scope.dir).await;
    let flux = Flux::start(&env, &bin, &scope.dir, &charts.ca);
    let operator = Proc::spawn(&mut operator_cmd(&env, &scope.dir), &scope.dir, "operator");

    let data = rendered(&env.admin, ns, name, "install from OCI", &flux, |d| {
        d["password"] == "pw-oci"
    })
    .await;
    assert_eq!(data["host"], "oci.example.org");
    // From an OCIRepository, Flux appends the artifact's digest as build metadata: 0.1.0+<digest>.
    let version = data["chartVersion"].as_str().unwrap_or_default();
    assert!(version.starts_with("0.1.0+"), "{data}");
    let source = object(&env.admin, SOURCE, "OCIRepository", ns, name)
        .await
        .expect("OCIRepository");
    assert_eq!(
        ready_of(&source).map(|r| r.0).as_deref(),
        Some("True"),
        "{source}"
    );
    instance_ready(&env.admin, ns, name, &flux, &operator).await;

    // A new version is a new tag: the OCIRepository's spec moves, the chart follows.
    declare_app(
        &intent,
        ns,
        name,
        (&registry, "demo", "0.2.0"),
        "oci.example.org",
        "pw-oci",
    );
    release_and_pass(&env, &intent, "release 2: 0.2.0").await;
    rendered(&env.admin, ns, name, "OCI upgrade", &flux, |d| {
        d["chartVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("0.2.0+"))
    })
    .await;
    instance_ready(&env.admin, ns, name, &flux, &operator).await;
    assert!(
        charts
            .served()
            .iter()
            .any(|p| p.ends_with(" /v2/charts/demo/manifests/0.2.0")),
        "{:?}",
        charts.served()
    );

    intent.remove(&format!(
        "clusters/{}/namespaces/{ns}/applicationinstances/{name}.yaml",
        intent.cluster
    ));
    release_and_pass(&env, &intent, "release 3: cache removed").await;
    for (api_version, kind, object_name) in [
        (HR, "HelmRelease", name.to_owned()),
        ("v1", "ConfigMap", format!("{name}-rendered")),
    ] {
        let admin = env.admin.clone();
        let object_name = &object_name;
        wait_for(&format!("{kind} {ns}/{object_name} gone"), 120, || {
            let admin = admin.clone();
            async move {
                get(&admin, api_version, kind, Some(ns), object_name)
                    .await
                    .is_none()
                    .then_some(())
            }
        })
        .await;
    }
}
