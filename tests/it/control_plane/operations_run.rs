//! Operations run, as a user sees them. A RunCommand Operation's Job runs on a simulated node: kwok
//! (built from its Go module by scripts/flux.sh) keeps a Node Ready and moves the pods bound to it
//! through kwok's own "fast" stages, the real kube-scheduler (built with the control plane) binds
//! them, and the Job controller of kube-controller-manager finishes the Job; the Operation goes
//! Pending -> Running -> Succeeded, and Failed when a stage fails the pod. For Velero, Argo and
//! snapshots, whose controllers cannot run here, the test writes the status those controllers
//! document and the Operation mirrors it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube::Client;
use serde_json::{Value, json};

use super::delivery::{flux_bin, object};
use super::fixture::Intent;
use super::server::*;
use super::{Env, OPS, SYSTEM, Scope, env, operator_cmd};

/// The image of the RunCommand template whose pods the failing stage fails.
const FAILING_IMAGE: &str = "registry.example.org/tools/fails:1";

/// kube-scheduler, built by scripts/control-plane.sh next to the control plane.
fn scheduler_bin() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("control-plane/bin/kube-scheduler")
}

/// kwok's stages for this test: its fast node stages and pod-ready/pod-delete as shipped, its
/// pod-complete held for a few seconds (so that a user, and the operator's 15 s look, sees the Job
/// running) and limited to other images, and a copy of it that fails pods of [`FAILING_IMAGE`].
fn kwok_config(bin: &Path, out: &Path) -> PathBuf {
    let stages = bin.with_file_name("kwok-stages");
    let read = |name: &str| {
        std::fs::read_to_string(stages.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", stages.join(name).display()))
    };
    let select = |operator: &str| {
        format!(
            "    matchExpressions:\n    - key: '.spec.containers.[0].image'\n      operator: '{operator}'\n      values:\n      - '{FAILING_IMAGE}'\n"
        )
    };
    let held = "  next:\n";
    let delay = "  delay:\n    durationMilliseconds: 20000\n  next:\n";
    let complete = read("pod-complete.yaml")
        .replacen("    matchExpressions:\n", &select("NotIn"), 1)
        .replacen(held, delay, 1);
    let fail = read("pod-complete.yaml")
        .replacen("    matchExpressions:\n", &select("In"), 1)
        .replacen("name: pod-complete", "name: pod-fail", 1)
        .replace("exitCode: 0", "exitCode: 3")
        .replace("reason: Completed", "reason: Error")
        .replace("phase: Succeeded", "phase: Failed");
    let docs = [
        read("node-initialize.yaml"),
        read("pod-ready.yaml"),
        read("pod-delete.yaml"),
        complete,
        fail,
    ];
    let path = out.join("kwok.yaml");
    std::fs::write(&path, docs.join("\n---\n")).expect("write kwok config");
    path
}

/// kube-scheduler and kwok, each in its own process group, and kwok's Node.
struct SimulatedNode {
    _scheduler: Proc,
    kwok: Proc,
}

impl SimulatedNode {
    async fn start(env: &Env, bin: &Path, dir: &Path, node: &str) -> SimulatedNode {
        let mut cmd = Command::new(scheduler_bin());
        cmd.arg(format!("--kubeconfig={}", env.cp.kubeconfig.display()))
            .args(["--leader-elect=false", "--bind-address=127.0.0.1"])
            .arg(format!("--secure-port={}", free_port()));
        let scheduler = Proc::spawn(&mut cmd, dir, "kube-scheduler");
        let mut cmd = Command::new(bin.join("kwok"));
        cmd.arg(format!("--kubeconfig={}", env.cp.kubeconfig.display()))
            .arg(format!("--config={}", kwok_config(bin, dir).display()))
            .arg("--manage-all-nodes=false")
            .arg(format!("--manage-single-node={node}"))
            .arg(format!("--server-address=127.0.0.1:{}", free_port()))
            .arg("--node-ip=127.0.0.1")
            .env("HOME", dir);
        let kwok = Proc::spawn(&mut cmd, dir, "kwok");
        apply(
            &env.admin,
            &json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, "type": "kwok"},
                         "annotations": {"kwok.x-k8s.io/node": "fake"}}}),
        )
        .await
        .expect("the kwok Node");
        SimulatedNode {
            _scheduler: scheduler,
            kwok,
        }
    }
}

/// The Operation's phase each time it changes, until it is final (or `seconds` pass).
async fn phases(client: &Client, ns: &str, name: &str, seconds: u64) -> (Vec<String>, Value) {
    let mut seen: Vec<String> = Vec::new();
    let mut last = Value::Null;
    for _ in 0..seconds * 5 {
        if let Some(op) = object(client, OPS, "Operation", ns, name).await {
            if let Some(phase) = op["status"]["phase"].as_str()
                && seen.last().map(String::as_str) != Some(phase)
            {
                seen.push(phase.to_owned());
            }
            last = op;
            if matches!(
                seen.last().map(String::as_str),
                Some("Succeeded" | "Failed")
            ) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (seen, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_operation_runs_on_a_kwok_node_and_fails_with_a_failing_stage() {
    let test = "a_job_operation_runs_on_a_kwok_node_and_fails_with_a_failing_stage";
    let Some(env) = env(test).await else {
        return;
    };
    let Some(bin) = flux_bin(test) else {
        return;
    };
    if !scheduler_bin().is_file() {
        skipped(test, "no kube-scheduler (scripts/control-plane.sh build)");
        return;
    }
    let ns = "cp-operations-run";
    let intent = Intent::new("cp-operations-run");
    intent.add_operation(
        ns,
        "dump",
        "  type: RunCommand\n  template: pg-dump\n  parameters:\n    database: app\n",
    );
    intent.add_operation(ns, "broken", "  type: RunCommand\n  template: fail-job\n");
    intent.release(&[]);
    intent.commit("release 1: two jobs");
    let mut scope = Scope::new(&env, &intent, &[ns]).await;
    merge_patch(
        &env.admin,
        "v1",
        "Namespace",
        None,
        ns,
        &json!({"metadata": {"annotations": {
        "app.vworkspace.io/allowed-operation-templates": "pg-dump,fail-job"}}}),
    )
    .await
    .expect("allow the templates");
    for (template, image) in [
        ("pg-dump", "registry.example.org/tools/pg:16"),
        ("fail-job", FAILING_IMAGE),
    ] {
        scope
            .apply(
                &env.admin,
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("operation-template-{template}"), "namespace": SYSTEM},
                "data": {"image": image, "command": "[\"/bin/run\"]"}}),
            )
            .await;
    }
    let node = "kwok-operations-run";
    scope.also_delete("v1", "Node", None, node);
    let simulated = SimulatedNode::start(&env, &bin, &scope.dir, node).await;
    let _webhook = super::webhook_replica(&env, &scope.dir).await;
    let operator = Proc::spawn(&mut operator_cmd(&env, &scope.dir), &scope.dir, "operator");

    let (seen, op) = phases(&env.admin, ns, "dump", 180).await;
    let context = || {
        format!(
            "{op}\nkwok: {}\noperator: {}",
            simulated.kwok.stderr(),
            operator.stderr()
        )
    };
    // Pending lasts only until kwok starts the pod (often less than one poll), while kwok's stage
    // keeps the pod running for seconds: Pending may be missed, Running and the order may not.
    let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
    assert!(
        seen == ["Pending", "Running", "Succeeded"] || seen == ["Running", "Succeeded"],
        "phases {seen:?}\n{}",
        context()
    );
    assert_eq!(op["status"]["reason"], "Complete", "{}", context());
    let (seen, op) = phases(&env.admin, ns, "broken", 180).await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("Failed"),
        "{seen:?} {op}"
    );
    assert_eq!(op["status"]["reason"], "BackoffLimitExceeded", "{op}");
}

/// Writes `status` the way the named controller does (the status subresource where the CRD has
/// one, else the object).
async fn write_child_status(
    client: &Client,
    api_version: &str,
    kind: &str,
    ns: &str,
    name: &str,
    status: Value,
) {
    let api = dynamic_api(client, api_version, kind, Some(ns)).await;
    let patch = kube::api::Patch::Merge(json!({"status": status}));
    let params = kube::api::PatchParams::default();
    if api.patch_status(name, &params, &patch).await.is_err() {
        api.patch(name, &params, &patch)
            .await
            .unwrap_or_else(|e| panic!("status of {kind} {ns}/{name}: {e}"));
    }
}

/// The child of Operation `operation` (found by owner).
async fn child_of(
    client: &Client,
    api_version: &str,
    kind: &str,
    ns: &str,
    operation: &str,
) -> String {
    let op = wait_for(&format!("Operation {operation} applied"), 90, || {
        object(client, OPS, "Operation", ns, operation)
    })
    .await;
    let uid = op["metadata"]["uid"].as_str().expect("uid").to_owned();
    let api = dynamic_api(client, api_version, kind, Some(ns)).await;
    wait_for(&format!("the {kind} of {operation}"), 90, || async {
        let list = api.list(&Default::default()).await.ok()?;
        list.items.into_iter().find_map(|c| {
            let owned = c
                .metadata
                .owner_references
                .as_ref()?
                .iter()
                .any(|o| o.uid == uid);
            owned.then(|| c.metadata.name.clone()).flatten()
        })
    })
    .await
}

async fn phase_becomes(client: &Client, ns: &str, operation: &str, phase: &str) -> Value {
    wait_for(&format!("Operation {operation} {phase}"), 90, || async {
        let op = object(client, OPS, "Operation", ns, operation).await?;
        (op["status"]["phase"] == phase).then_some(op)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn velero_argo_and_snapshot_operations_mirror_the_status_their_controllers_write() {
    let test = "velero_argo_and_snapshot_operations_mirror_the_status_their_controllers_write";
    let Some(env) = env(test).await else {
        return;
    };
    if env.shared.thirdparty.is_none() {
        skipped(
            test,
            "../shared/thirdparty-crds is absent (the Argo and snapshot CRDs)",
        );
        return;
    }
    let ns = "cp-operations-mirror";
    let intent = Intent::new("cp-operations-mirror");
    intent.add_operation(
        ns,
        "snapshot",
        "  type: Snapshot\n  template: nightly-snapshot\n  target:\n    persistentVolumeClaim: data\n  parameters:\n    volumeSnapshotClassName: csi-snapclass\n",
    );
    intent.add_operation(
        ns,
        "maintenance",
        "  type: Workflow\n  template: maintenance\n  parameters:\n    mode: quick\n",
    );
    intent.add_backup(ns, "nightly", "app");
    intent.release(&[]);
    intent.commit("release 1");
    let mut scope = Scope::new(&env, &intent, &[ns]).await;
    let _webhook = super::webhook_replica(&env, &scope.dir).await;
    let _operator = Proc::spawn(&mut operator_cmd(&env, &scope.dir), &scope.dir, "operator");
    let admin = &env.admin;

    // Argo: Running, then Failed with its message (the Workflow status Argo documents).
    let workflow = child_of(admin, "argoproj.io/v1alpha1", "Workflow", ns, "maintenance").await;
    phase_becomes(admin, ns, "maintenance", "Pending").await;
    write_child_status(
        admin,
        "argoproj.io/v1alpha1",
        "Workflow",
        ns,
        &workflow,
        json!({"phase": "Running", "startedAt": "2026-01-01T00:00:00Z"}),
    )
    .await;
    phase_becomes(admin, ns, "maintenance", "Running").await;
    write_child_status(admin, "argoproj.io/v1alpha1", "Workflow", ns, &workflow,
        json!({"phase": "Failed", "message": "child 'vacuum' failed", "finishedAt": "2026-01-01T00:01:00Z"})).await;
    let op = phase_becomes(admin, ns, "maintenance", "Failed").await;
    assert_eq!(op["status"]["reason"], "Failed", "{op}");
    assert!(
        op["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("vacuum"),
        "{op}"
    );

    // Velero: InProgress, then Completed (the Backup lives in Velero's namespace, found by the
    // operation's labels).
    let backups = dynamic_api(admin, "velero.io/v1", "Backup", Some("velero")).await;
    let selector =
        format!("ops.vworkspace.io/operation-namespace={ns},ops.vworkspace.io/operation=nightly");
    let backup = wait_for("the Velero Backup of nightly", 90, || async {
        let list = backups
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .ok()?;
        list.items.into_iter().find_map(|b| b.metadata.name)
    })
    .await;
    scope.also_delete("velero.io/v1", "Backup", Some("velero"), &backup);
    write_child_status(
        admin,
        "velero.io/v1",
        "Backup",
        "velero",
        &backup,
        json!({"phase": "InProgress", "startTimestamp": "2026-01-01T00:00:00Z"}),
    )
    .await;
    phase_becomes(admin, ns, "nightly", "Running").await;
    write_child_status(
        admin,
        "velero.io/v1",
        "Backup",
        "velero",
        &backup,
        json!({"phase": "Completed", "completionTimestamp": "2026-01-01T00:05:00Z"}),
    )
    .await;
    let op = phase_becomes(admin, ns, "nightly", "Succeeded").await;
    assert_eq!(op["status"]["reason"], "Completed", "{op}");

    // external-snapshotter: readyToUse false (in progress), then true.
    let snapshot = child_of(
        admin,
        "snapshot.storage.k8s.io/v1",
        "VolumeSnapshot",
        ns,
        "snapshot",
    )
    .await;
    write_child_status(
        admin,
        "snapshot.storage.k8s.io/v1",
        "VolumeSnapshot",
        ns,
        &snapshot,
        json!({"readyToUse": false, "boundVolumeSnapshotContentName": "snapcontent-1"}),
    )
    .await;
    phase_becomes(admin, ns, "snapshot", "Running").await;
    write_child_status(
        admin,
        "snapshot.storage.k8s.io/v1",
        "VolumeSnapshot",
        ns,
        &snapshot,
        json!({"readyToUse": true, "restoreSize": "1Gi", "creationTime": "2026-01-01T00:00:00Z"}),
    )
    .await;
    let op = phase_becomes(admin, ns, "snapshot", "Succeeded").await;
    assert_eq!(op["status"]["reason"], "ReadyToUse", "{op}");
}
