//! Chart provenance with the real Flux (issue 27, item 1): a chart pinned by digest in the signed
//! release is what source-controller pulls and helm-controller installs, whatever the registry's tag
//! says later; a digest the registry cannot serve is refused by Flux, nothing is installed, and the
//! instance says why (`ChartDigestMismatch`); under `requireChartDigests` an instance from an
//! `https://` Helm repository refuses the whole release at verification. The OCI registry is the
//! test's own on loopback ([`super::chart_server`]); Flux is scripts/flux.sh's build.

use kube::Client;
use serde_json::{Value, json};

use super::chart_server::ChartServer;
use super::delivery::{
    Flux, FluxLeftovers, flux_bin, install_flux_crds, instance_ready, object, ready_of,
    release_and_pass, rendered,
};
use super::*;

const SOURCE: &str = "source.toolkit.fluxcd.io/v1";
/// A well-formed digest no registry here holds.
const ABSENT: &str = "sha256:00000000000000000000000000000000000000000000000000000000000000aa";

/// Declares instance `name` of the OCI chart `demo`@`0.1.0` pinned at `digest` (when given), `host`
/// inline, no encrypted value.
fn declare(
    intent: &Intent,
    ns: &str,
    name: &str,
    repository: &str,
    digest: Option<&str>,
    host: &str,
) {
    let digest = digest.map_or(String::new(), |d| format!("    digest: {d}\n"));
    intent.write(
        &format!("clusters/{}/namespaces/{ns}/applicationinstances/{name}.yaml", intent.cluster),
        &format!(
            "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: {name}\nspec:\n  chart:\n    repository: {repository}\n    name: demo\n    version: 0.1.0\n{digest}  values:\n    host: {host}\n"
        ),
    );
}

/// The instance's `Ready` once its reason is `reason` for its current generation.
async fn instance_refused(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    flux: &Flux,
) -> Value {
    for _ in 0..900 {
        if let Some(ai) = object(client, AI, "ApplicationInstance", ns, name).await
            && let Some((status, got, ..)) = ready_of(&ai)
            && status == "False"
            && got == reason
            && ai["status"]["observedGeneration"] == ai["metadata"]["generation"]
        {
            return ai;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let ai = object(client, AI, "ApplicationInstance", ns, name).await;
    let source = object(client, SOURCE, "OCIRepository", ns, name).await;
    panic!(
        "instance {ns}/{name} never {reason}: {ai:?}\nOCIRepository: {source:?}\n{}",
        flux.logs()
    );
}

/// The Cluster's `Ready` once its last attempted commit is the repository's HEAD.
async fn cluster_judged(
    client: &Client,
    scope: &Scope,
    intent: &Intent,
) -> (String, String, String) {
    let head = intent.git(&["rev-parse", "HEAD"]);
    let name = scope.name.clone();
    wait_for(&format!("Cluster {name} judged {head}"), 180, || {
        let (client, name, head) = (client.clone(), name.clone(), head.clone());
        async move {
            let cluster = get(&client, OPS, "Cluster", None, &name).await?.data;
            (cluster["status"]["lastAttemptedCommit"] == head.as_str()).then_some(())
        }
    })
    .await;
    scope.condition(client, "Ready").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_digest_installs_exactly_that_chart_and_flux_refuses_one_the_registry_lacks() {
    let ns = "cp-provenance-a";
    scenario!("cp-provenance", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
            let test = super::scope::test_name!();
            let Some(bin) = flux_bin(test) else {
                return;
            };
            install_flux_crds(&env.admin, &bin).await;
            let name = "pinned";
            let charts = ChartServer::start(&scope.dir).await;
            charts.publish("demo", "0.1.0");
            let original = charts.manifest_digest("demo", "0.1.0");
            let registry = charts.oci_url();
            declare(
                intent,
                ns,
                name,
                &registry,
                Some(&original),
                "one.example.org",
            );
            intent.release(&[]);
            intent.commit("release 1: pinned at the original digest");
            let _leftovers = FluxLeftovers {
                kubeconfig: env.cp.kubeconfig.clone(),
                ns: ns.to_owned(),
            };
            let flux = Flux::start(env, &bin, &scope.dir, &charts.ca);
            let operator = Proc::spawn(&mut operator_cmd(env, &scope.dir), &scope.dir, "operator");

            // The right digest installs; the source pins it and carries no tag.
            let data = rendered(&env.admin, ns, name, "install by digest", &flux, |d| {
                d["host"] == "one.example.org"
            })
            .await;
            assert_eq!(data["build"], "original", "{data}");
            let source = object(&env.admin, SOURCE, "OCIRepository", ns, name)
                .await
                .expect("OCIRepository");
            assert_eq!(
                source["spec"]["ref"],
                json!({"digest": original}),
                "{source}"
            );
            instance_ready(&env.admin, ns, name, &flux, &operator).await;

            // The tag is re-pushed with other bytes: a release still pinning the original digest
            // (a changed value forces an upgrade) installs the original chart, not the tag's.
            charts.repush("demo", "0.1.0", "repushed");
            let moved = charts.manifest_digest("demo", "0.1.0");
            assert_ne!(moved, original);
            declare(
                intent,
                ns,
                name,
                &registry,
                Some(&original),
                "two.example.org",
            );
            release_and_pass(env, intent, "release 2: still the original digest").await;
            let data = rendered(&env.admin, ns, name, "upgrade by digest", &flux, |d| {
                d["host"] == "two.example.org"
            })
            .await;
            assert_eq!(
                data["build"], "original",
                "the re-pushed tag leaked in: {data}"
            );
            instance_ready(&env.admin, ns, name, &flux, &operator).await;

            // A digest the registry does not have: Flux refuses it, the instance says why,
            // nothing is installed (the ConfigMap is release 2's).
            declare(
                intent,
                ns,
                name,
                &registry,
                Some(ABSENT),
                "three.example.org",
            );
            release_and_pass(env, intent, "release 3: a digest nobody pushed").await;
            let ai = instance_refused(&env.admin, ns, name, "ChartDigestMismatch", &flux).await;
            let (_, _, message, _) = ready_of(&ai).expect("Ready");
            assert!(message.contains(ABSENT), "{message}");
            assert!(message.contains("OCIArtifactPullFailed"), "{message}");
            let source = object(&env.admin, SOURCE, "OCIRepository", ns, name)
                .await
                .expect("OCIRepository");
            let (status, reason, ..) = ready_of(&source).expect("source Ready");
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "OCIArtifactPullFailed")
            );
            let cm = object(
                &env.admin,
                "v1",
                "ConfigMap",
                ns,
                &format!("{name}-rendered"),
            )
            .await
            .expect("ConfigMap");
            assert_eq!(cm["data"]["host"], "two.example.org", "{cm}");
            assert_eq!(cm["data"]["build"], "original", "{cm}");
            assert!(
                !charts
                    .served()
                    .iter()
                    .any(|p| p.contains("/manifests/0.1.0")),
                "Flux asked for the tag, never needed: {:?}",
                charts.served()
            );

            // requireChartDigests: an instance from an https:// Helm repository refuses the whole
            // release at verification, naming its file; nothing of it is applied.
            let patch = json!({"spec": {"policy": {"requireChartDigests": true}}});
            merge_patch(&env.admin, OPS, "Cluster", None, &scope.name, &patch)
                .await
                .expect("set requireChartDigests");
            declare(
                intent,
                ns,
                name,
                &registry,
                Some(&original),
                "four.example.org",
            );
            declare(
                intent,
                ns,
                "from-helm-repo",
                &charts.helm_url(),
                None,
                "five.example.org",
            );
            release_and_pass(env, intent, "release 4: an https chart under the policy").await;
            let (status, reason, message) = cluster_judged(&env.admin, scope, intent).await;
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "IntentInvalid"),
                "{message}"
            );
            assert!(
                message.contains(
                    "namespaces/cp-provenance-a/applicationinstances/from-helm-repo.yaml"
                ),
                "{message}"
            );
            assert!(message.contains("requireChartDigests"), "{message}");
            assert!(
                object(&env.admin, AI, "ApplicationInstance", ns, "from-helm-repo")
                    .await
                    .is_none(),
                "an instance of a refused release was applied"
            );
            let ai = object(&env.admin, AI, "ApplicationInstance", ns, name)
                .await
                .expect("instance");
            assert_eq!(
                ai["spec"]["chart"]["digest"], ABSENT,
                "release 4 was applied: {ai}"
            );
            drop(operator);
            drop(flux);
        })
        .await;
}

/// A fresh ECDSA P-256 public key in PEM (what `cosign generate-key-pair` writes to cosign.pub),
/// made by openssl.
fn cosign_public_key(dir: &std::path::Path) -> String {
    let private = dir.join("cosign.key");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let path = private.to_str().expect("path");
    run(&[
        "ecparam",
        "-genkey",
        "-name",
        "prime256v1",
        "-noout",
        "-out",
        path,
    ]);
    run(&["ec", "-in", path, "-pubout"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_without_a_signature_by_the_clusters_chart_keys_is_refused_and_the_instance_says_why()
 {
    let ns = "cp-chartsig-a";
    scenario!("cp-chartsig", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
            let test = super::scope::test_name!();
            let Some(bin) = flux_bin(test) else {
                return;
            };
            install_flux_crds(&env.admin, &bin).await;
            let name = "signed";
            let key = cosign_public_key(&scope.dir);
            let keys = format!("chart-keys-{}", scope.name);
            scope
                .apply(
                    &env.admin,
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": keys, "namespace": SYSTEM},
                           "data": {"cosign.pub": key}}),
                )
                .await;
            let patch =
                json!({"spec": {"chartVerification": {"cosignKeysConfigMapRef": {"name": keys}}}});
            merge_patch(&env.admin, OPS, "Cluster", None, &scope.name, &patch)
                .await
                .expect("name the chart keys");
            let charts = ChartServer::start(&scope.dir).await;
            charts.publish("demo", "0.1.0");
            let digest = charts.manifest_digest("demo", "0.1.0");
            declare(
                intent,
                ns,
                name,
                &charts.oci_url(),
                Some(&digest),
                "one.example.org",
            );
            intent.release(&[]);
            intent.commit("release 1: a chart nobody signed");
            let _leftovers = FluxLeftovers {
                kubeconfig: env.cp.kubeconfig.clone(),
                ns: ns.to_owned(),
            };
            let flux = Flux::start(env, &bin, &scope.dir, &charts.ca);
            let operator = Proc::spawn(&mut operator_cmd(env, &scope.dir), &scope.dir, "operator");

            // The registry holds no signature (`sha256-<hex>.sig`): source-controller's cosign
            // refuses the artifact, the instance says so, nothing is installed.
            let ai = instance_refused(&env.admin, ns, name, "ChartVerificationFailed", &flux).await;
            let (_, _, message, _) = ready_of(&ai).expect("Ready");
            assert!(message.contains("VerificationError"), "{message}");
            let source = object(&env.admin, SOURCE, "OCIRepository", ns, name)
                .await
                .expect("OCIRepository");
            let secret_name = format!("{name}-values");
            assert_eq!(
                source["spec"]["verify"],
                json!({"provider": "cosign", "secretRef": {"name": secret_name}}),
                "{source}"
            );
            let secret = object(&env.admin, "v1", "Secret", ns, &secret_name)
                .await
                .expect("the keys' Secret");
            let written = secret["data"]["cosign-0.pub"].as_str().unwrap_or_default();
            use base64::Engine as _;
            let written = base64::engine::general_purpose::STANDARD
                .decode(written)
                .expect("base64");
            assert_eq!(String::from_utf8_lossy(&written), key, "{secret}");
            assert!(
                charts.served().iter().any(|p| p.contains(".sig")),
                "source-controller never looked for a signature: {:?}",
                charts.served()
            );
            assert!(
                object(
                    &env.admin,
                    "v1",
                    "ConfigMap",
                    ns,
                    &format!("{name}-rendered")
                )
                .await
                .is_none(),
                "an unverified chart was installed"
            );
            drop(operator);
            drop(flux);
        })
        .await;
}
