//! Faults on the real control plane, nothing lost (issue 24): kube-apiserver restarted mid-pass, etcd
//! restarted mid-pass, the operator SIGKILLed mid-pass and started again, and the Git server gone for
//! longer than the interval. Each declares an estate of [`TOTAL`] instances (each with an encrypted
//! value) and one RunCommand Operation (a Job), lets the operator (`run`, as its ServiceAccount) start
//! applying it, injects the fault once the first instance is written, and then proves: the next
//! passes converge (the release applied, `Ready`), every declared object is there, the Cluster's
//! inventory names exactly the declared objects (nothing leaked, nothing lost), and the Operation
//! ran once (one Job).

use super::*;

/// Instances of the estate: enough that a pass writing 16 at a time is still mid-way when the fault
/// comes (checked from the audit log, not assumed).
pub(super) const TOTAL: usize = 300;

pub(super) fn instance(i: usize) -> String {
    format!("app-{i:03}")
}

/// The estate, declared and committed as release 1, its Cluster, namespace and trust inputs.
pub(super) async fn estate(env: &Env, cluster: &str, ns: &str) -> (Intent, Scope) {
    let intent = Intent::new(cluster);
    for i in 0..TOTAL {
        intent.add_instance(ns, &instance(i), "x");
    }
    intent.add_operation(
        ns,
        "dump",
        "  type: RunCommand\n  template: pg-dump\n  parameters:\n    database: app\n",
    );
    intent.release(&[]);
    intent.commit("release 1: the estate");
    let mut scope = Scope::new(env, &intent, &[ns]).await;
    scope
        .apply(
            &env.admin,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "operation-template-pg-dump", "namespace": SYSTEM},
                   "data": {"image": "registry.example.org/tools/pg:16", "command": "[\"/bin/pg-dump\",\"--all\"]"}}),
        )
        .await;
    (intent, scope)
}

/// `run` (no leader election: the only replica) as the operator's ServiceAccount, logs under `tag`.
fn operator(env: &Env, scope: &Scope, tag: &str) -> Proc {
    let dir = scope.dir.join(tag);
    std::fs::create_dir_all(&dir).expect("mkdir");
    Proc::spawn(&mut operator_cmd(env, &dir), &dir, tag)
}

/// The operator's successful instance writes of the estate in the audit log since `audit`'s mark.
pub(super) fn instance_writes(audit: &Audit) -> usize {
    audit
        .since()
        .iter()
        .filter(|e| e["user"]["username"] == OPERATOR_USER)
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "patch" | "update")))
        .filter(|e| {
            e["requestURI"]
                .as_str()
                .is_some_and(|u| u.contains("/applicationinstances/app-"))
        })
        .filter(|e| {
            e["responseStatus"]["code"]
                .as_u64()
                .is_some_and(|c| c < 300)
        })
        .count()
}

/// Waits for the first instance of the estate written, and returns how many were written by then
/// (fewer than [`TOTAL`]: the pass is mid-way).
pub(super) async fn until_mid_pass(audit: &Audit) -> usize {
    wait_for("the pass to start writing instances", 180, || async {
        let n = instance_writes(audit);
        (n > 0).then_some(n)
    })
    .await
}

/// The Cluster's inventory entries of `kind` in `ns`, by name (`status.compactInventory`, decoded).
fn inventory(cluster: &Value, kind: &str, ns: &str) -> Vec<String> {
    let status: vworkspace_core::crd::ClusterStatus =
        serde_json::from_value(cluster["status"].clone()).expect("a Cluster status");
    let mut names: Vec<String> = status
        .inventory
        .into_iter()
        .filter(|e| e.kind == kind && e.namespace == ns)
        .map(|e| e.name)
        .collect();
    names.sort();
    names
}

/// The objects of `kind` in `ns`, by name.
async fn listed(env: &Env, api_version: &str, kind: &str, ns: &str) -> Vec<DynamicObject> {
    dynamic_api(&env.admin, api_version, kind, Some(ns))
        .await
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Release `serial` applied and Ready, every declared instance and the Operation there, the
/// inventory exactly the declared objects, the Operation run once (one Job it owns).
pub(super) async fn assert_converged(env: &Env, scope: &Scope, ns: &str, serial: u64, logs: &str) {
    wait_for(
        "the release applied and Ready after the fault",
        300,
        || async {
            let cluster = scope.cluster(&env.admin).await;
            let ready = cluster["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (cluster["status"]["lastAppliedSerial"] == serial && ready).then_some(())
        },
    )
    .await;
    let cluster = scope.cluster(&env.admin).await;
    let declared: Vec<String> = (0..TOTAL).map(instance).collect();
    assert_eq!(
        inventory(&cluster, "ApplicationInstance", ns),
        declared,
        "the inventory names every declared instance and nothing else\n{logs}"
    );
    assert_eq!(inventory(&cluster, "Operation", ns), ["dump"]);
    let mut live: Vec<String> = listed(env, AI, "ApplicationInstance", ns)
        .await
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    live.sort();
    assert_eq!(live, declared, "every declared instance exists, no other");
    let operation = get(&env.admin, OPS, "Operation", Some(ns), "dump")
        .await
        .expect("the Operation applied");
    let uid = operation.metadata.uid.clone().expect("uid");
    let admin = env.admin.clone();
    let jobs = wait_for("the Operation's Job", 120, || {
        let admin = admin.clone();
        let uid = uid.clone();
        async move {
            let env_jobs = dynamic_api(&admin, "batch/v1", "Job", Some(ns))
                .await
                .list(&ListParams::default())
                .await
                .ok()?
                .items;
            let owned: Vec<String> = env_jobs
                .into_iter()
                .filter(|j| {
                    j.metadata
                        .owner_references
                        .as_ref()
                        .is_some_and(|o| o.iter().any(|o| o.uid == uid))
                })
                .filter_map(|j| j.metadata.name)
                .collect();
            (!owned.is_empty()).then_some(owned)
        }
    })
    .await;
    // Settle: a second run would be created by a reconcile after the first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = listed(env, "batch/v1", "Job", ns).await;
    assert_eq!(jobs.len(), 1, "one run of the Operation: {jobs:?}");
    assert_eq!(again.len(), 1, "one Job in the namespace: {again:?}");
}

/// `scripts/control-plane.sh <command>` on the control plane the tests use, or why not: the script
/// acts on the one this checkout started, so another one (VWS_TEST_KUBECONFIG from elsewhere) is
/// left alone.
fn control_plane_script(env: &Env, command: &str) -> Result<(), String> {
    let script = root().join("scripts/control-plane.sh");
    let ours = Command::new(&script)
        .arg("env")
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let kubeconfig = format!("KUBECONFIG={}", env.cp.kubeconfig.display());
    if !String::from_utf8_lossy(&ours.stdout)
        .lines()
        .any(|l| l == kubeconfig)
    {
        return Err(
            "the control plane was not started by this checkout's scripts/control-plane.sh".into(),
        );
    }
    let out = Command::new(&script)
        .arg(command)
        .output()
        .map_err(|e| e.to_string())?;
    assert!(
        out.status.success(),
        "scripts/control-plane.sh {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A control-plane component restarted mid-pass (by the script, same ports and data): the operator
/// carries on and converges.
async fn restarted_mid_pass(test: &str, command: &str, cluster: &str, ns: &str) {
    let Some(env) = env(test).await else {
        return;
    };
    let (_intent, scope) = estate(&env, cluster, ns).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let audit = Audit::mark(&env.cp.audit_log);
    let mut run = operator(&env, &scope, "run");
    let before = until_mid_pass(&audit).await;
    if let Err(why) = control_plane_script(&env, command) {
        skipped(test, &why);
        return;
    }
    println!("{command} after {before} of {TOTAL} instances written");
    assert!(
        before < TOTAL,
        "the fault came mid-pass ({before} of {TOTAL})"
    );
    assert_converged(&env, &scope, ns, 1, &run.stderr()).await;
    run.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_restarted_mid_pass_then_the_estate_converges() {
    restarted_mid_pass(
        "kube_apiserver_restarted_mid_pass_then_the_estate_converges",
        "restart-apiserver",
        "cp-fault-api",
        "cp-fault-api-a",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarted_mid_pass_then_the_estate_converges() {
    restarted_mid_pass(
        "etcd_restarted_mid_pass_then_the_estate_converges",
        "restart-etcd",
        "cp-fault-etcd",
        "cp-fault-etcd-a",
    )
    .await;
}

/// SIGKILL mid-pass (no shutdown, nothing recorded), then a new process: it converges, the inventory
/// neither leaks nor loses an object, and the Operation is not run a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_killed_mid_pass_then_restarted_converges_without_a_second_run() {
    let test = "the_operator_killed_mid_pass_then_restarted_converges_without_a_second_run";
    let Some(env) = env(test).await else {
        return;
    };
    let ns = "cp-fault-kill-a";
    let (_intent, scope) = estate(&env, "cp-fault-kill", ns).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let audit = Audit::mark(&env.cp.audit_log);
    let mut first = operator(&env, &scope, "first");
    let before = until_mid_pass(&audit).await;
    let killed = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", first.child.id())])
        .status()
        .expect("kill");
    assert!(killed.success(), "SIGKILL to the operator's process group");
    let _ = first.wait_timeout(10).expect("SIGKILL ends it");
    let written = instance_writes(&audit);
    println!("killed after {before} of {TOTAL} instances written ({written} by its end)");
    assert!(written < TOTAL, "killed mid-pass ({written} of {TOTAL})");
    let mut second = operator(&env, &scope, "second");
    assert_converged(&env, &scope, ns, 1, &second.stderr()).await;
    second.stop();
}

/// The Git server gone (the repository moved away) for longer than the interval, with a new release
/// waiting: the status says the fetch fails, nothing is applied or pruned; once it is back the new
/// release is applied and pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_git_server_gone_past_the_interval_changes_nothing_then_converges() {
    let test = "the_git_server_gone_past_the_interval_changes_nothing_then_converges";
    let Some(env) = env(test).await else {
        return;
    };
    let ns = "cp-fault-git-a";
    let intent = Intent::new("cp-fault-git");
    intent.add_instance(ns, "kept", "x");
    intent.add_instance(ns, "dropped", "x");
    intent.release(&[]);
    intent.commit("release 1");
    let scope = Scope::new(&env, &intent, &[ns]).await;
    merge_patch(
        &env.admin,
        OPS,
        "Cluster",
        None,
        &scope.name,
        &json!({"spec": {"source": {"interval": "10s"}}}),
    )
    .await
    .expect("a 10 s interval");
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let mut run = operator(&env, &scope, "run");
    wait_for("release 1 applied", 120, || async {
        (scope.cluster(&env.admin).await["status"]["lastAppliedSerial"] == 1).then_some(())
    })
    .await;

    // Release 2 drops one instance and adds one; the repository is gone before any pass fetches it.
    intent.remove_instance(ns, "dropped");
    intent.add_instance(ns, "added", "x");
    intent.release(&[]);
    let gone = intent.repo.with_extension("gone");
    intent.commit("release 2");
    std::fs::rename(&intent.repo, &gone).expect("the Git server goes away");
    let audit = Audit::mark(&env.cp.audit_log);
    let (status, reason, message) = wait_for("the fetch failure in the status", 60, || async {
        let c = scope.condition(&env.admin, "Ready").await;
        (c.1 == vworkspace_core::reasons::FETCH_FAILED).then_some(c)
    })
    .await;
    assert_eq!(status, "False", "{message}");
    println!("{reason}: {message}");
    // Longer than the interval (three of them), passes retrying meanwhile.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (status, reason, _) = scope.condition(&env.admin, "Ready").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", vworkspace_core::reasons::FETCH_FAILED)
    );
    // What a pass applies or prunes (the child controllers keep materializing release 1's instances
    // meanwhile: their HelmReleases and values Secrets are not the pass's).
    let writes: Vec<String> = object_writes(&audit.writes_by(OPERATOR_USER))
        .into_iter()
        .filter(|w| {
            w.starts_with("delete ")
                || w.contains("/applicationinstances/")
                || w.contains("/operations/")
                || w.contains("/rolebindings/")
        })
        .collect();
    assert_eq!(
        writes,
        Vec::<String>::new(),
        "nothing applied or pruned while the source is gone"
    );
    assert!(exists(&env.admin, AI, "ApplicationInstance", ns, "dropped").await);
    assert!(!exists(&env.admin, AI, "ApplicationInstance", ns, "added").await);
    assert_eq!(
        scope.cluster(&env.admin).await["status"]["lastAppliedSerial"],
        1
    );

    std::fs::rename(&gone, &intent.repo).expect("the Git server is back");
    wait_for("release 2 applied once the source is back", 120, || async {
        (scope.cluster(&env.admin).await["status"]["lastAppliedSerial"] == 2).then_some(())
    })
    .await;
    assert!(exists(&env.admin, AI, "ApplicationInstance", ns, "added").await);
    let admin = env.admin.clone();
    wait_for("the dropped instance pruned", 60, || {
        let admin = admin.clone();
        async move {
            (!exists(&admin, AI, "ApplicationInstance", ns, "dropped").await).then_some(())
        }
    })
    .await;
    run.stop();
}
