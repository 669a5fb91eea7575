//! The install as shipped: deploy/'s pods under PodSecurity `restricted`, `check` on the install,
//! and docs/operating.md's first-hour walk-through run as written.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_installs_and_its_pods_pass_pod_security_restricted() {
    let Some(env) = env(test_name!()).await else {
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

/// `check` as the operator's ServiceAccount (`--as`, from the admin's kubeconfig) on the install:
/// each line passes and it exits 0; then without an identity Secret, and as a ServiceAccount without
/// rights, the lines that fail say what is missing and it exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_the_install_and_names_what_is_missing() {
    scenario!("cp-check", &["cp-check-a"])
        .needs_thirdparty("../shared/thirdparty-crds is absent (check requires the Flux CRDs)")
        .webhook()
        .run(async |env, intent, scope| {
    intent.add_instance("cp-check-a", "wiki", "smtp-secret-1");
    intent.release(&[]);
    let head = intent.commit("release 1");
    let check = |who: &str| {
        let mut cmd = Command::new(BIN);
        cmd.args(["check", "--as", who, "--fetch-timeout", "30"])
            .env("KUBECONFIG", &env.cp.kubeconfig);
        let mut p = Proc::spawn(&mut cmd, &scope.dir, "check");
        let status = p.wait_timeout(120).expect("check ends within 120 s");
        (status.code(), p.stdout())
    };
    let (code, out) = check(OPERATOR_USER);
    let lines: Vec<&str> = out.lines().collect();
    for expected in [
        "ok   Kubernetes version: v1.",
        "ok   CRD clusters.ops.vworkspace.io: present",
        "ok   CRD helmreleases.helm.toolkit.fluxcd.io: present",
        "ok   operator rights: system:serviceaccount:vworkspace-system:vworkspace-app-operator may make all",
        "ok   webhook vworkspace-app-operator: answers through the API server",
        "ok   Cluster cp-check trust inputs: signer ConfigMaps and identity Secret present and parseable",
        "ok   Cluster cp-check Git source: ",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "no line {expected:?} in\n{out}"
        );
    }
    assert!(out.contains(&format!("fetched ({head})")), "{out}");
    // Every line is ok, or a warning about a CRD the shared install does not have.
    for line in &lines {
        assert!(
            line.starts_with("ok   ") || line.starts_with("warn CRD "),
            "{line}\n{out}"
        );
    }
    assert_eq!(code, Some(0), "{out}");

    // The identity Secret gone: that Cluster's line fails, naming it, and the exit is 1.
    delete(
        &env.admin,
        "v1",
        "Secret",
        Some(SYSTEM),
        &format!("age-{}", scope.name),
    )
    .await;
    let (code, out) = check(OPERATOR_USER);
    assert_eq!(code, Some(1), "{out}");
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert!(
        failed[0].starts_with("FAIL Cluster cp-check trust inputs:")
            && failed[0].contains(&format!("age-{}", scope.name)),
        "{out}"
    );

    // A ServiceAccount without deploy/'s rights: the rights line fails and names requests.
    let (code, out) = check("system:serviceaccount:default:nobody");
    assert_eq!(code, Some(1), "{out}");
    let rights = out
        .lines()
        .find(|l| l.starts_with("FAIL operator rights:"))
        .unwrap_or_else(|| panic!("no failing rights line in\n{out}"));
    assert!(
        rights.contains("watch clusters.ops.vworkspace.io"),
        "{rights}"
    );
    assert!(
        rights.contains("update validatingwebhookconfigurations.admissionregistration.k8s.io vworkspace-app-operator"),
        "{rights}"
    );
        })
        .await;
}

/// docs/operating.md, "First hour", as a cluster owner runs it: every line of the block between its
/// `first-hour` markers, in bash, with this test's values on the first line (cluster, namespace,
/// repository, keys) and `vworkspace-operator` on PATH. Only the install line is skipped: the shared
/// setup applied the same crds/ and deploy/ (with the webhook called by URL, as no pods run here), and
/// the operator runs as its ServiceAccount in this process's stead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_hour_walk_through_of_operating_md() {
    let test = test_name!();
    let Some(env) = env(test).await else {
        return;
    };
    // `check` needs the Flux CRDs the operator requires; they come with ../shared/thirdparty-crds.
    if env.shared.thirdparty.is_none() {
        skipped(
            test,
            "../shared/thirdparty-crds is absent (check requires the Flux CRDs)",
        );
        return;
    }
    let doc = std::fs::read_to_string(root().join("docs/operating.md")).expect("operating.md");
    let block = doc
        .split("<!-- first-hour:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- first-hour:end -->").next())
        .expect("the first-hour markers in docs/operating.md");
    let lines: Vec<&str> = block
        .lines()
        .filter(|l| !l.starts_with("```") && !l.trim().is_empty())
        .collect();
    assert!(lines[0].starts_with("export CLUSTER="), "{}", lines[0]);
    assert_eq!(
        lines[1],
        "kubectl apply -f crds/ && kubectl apply -k deploy/"
    );
    assert!(lines.iter().any(|l| {
        l.starts_with("kubectl wait clusters.ops.vworkspace.io/$CLUSTER --for=condition=Ready")
    }));

    let cluster = "cp-first-hour";
    let ns = "cp-first-hour-a";
    let intent = Intent::new(cluster);
    intent.add_instance(ns, "wiki", "smtp-secret-1");
    intent.release(&[]);
    let head = intent.commit("release 1");
    let dir = env.shared.scratch.join(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    // What the walk-through creates, deleted at the end (also on failure), Cluster first.
    let mut scope = Scope {
        kubeconfig: env.cp.kubeconfig.clone(),
        objects: Vec::new(),
        name: cluster.to_owned(),
        dir: dir.clone(),
    };
    scope.also_delete(OPS, "Cluster", None, cluster);
    scope.also_delete("v1", "ConfigMap", Some(SYSTEM), &format!("trust-{cluster}"));
    scope.also_delete("v1", "Secret", Some(SYSTEM), &format!("age-{cluster}"));
    scope.also_delete("v1", "Namespace", None, ns);

    let _webhook = webhook_replica(&env, &dir).await;
    // The walk-through's Cluster is made by `kubectl apply` of the documented YAML, with no scope
    // label: this operator reconciles the Clusters without one.
    let mut cmd = operator_cmd_for(&env, &dir, &format!("!{SCOPE_LABEL}"));
    let _operator = Proc::spawn(&mut cmd, &dir, "operator");

    let script = format!(
        "export CLUSTER={cluster} NS={ns} REPO={} KEYS={}\n{}\n",
        intent.url(),
        intent.path("").display(),
        lines[2..].join("\n")
    );
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut shell = Command::new("bash");
    shell
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(root())
        .env("KUBECONFIG", &env.cp.kubeconfig)
        .env("PATH", path);
    let mut walk = Proc::spawn(&mut shell, &dir, "first-hour");
    let status = walk
        .wait_timeout(360)
        .expect("the walk-through ends within 6 minutes");
    let out = walk.stdout();
    assert!(
        status.success(),
        "the walk-through failed:\n{out}\n{}",
        walk.stderr()
    );
    // `check --pre` passed, the Cluster became Ready, and `check` saw it fetched at the release.
    assert!(out.contains("ok   Kubernetes version"), "{out}");
    assert!(
        out.contains(&format!(
            "cluster.ops.vworkspace.io/{cluster} condition met"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("ok   Cluster {cluster} trust inputs")),
        "{out}"
    );
    assert!(out.contains(&format!("fetched ({head})")), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    let applied = scope.cluster(&env.admin).await;
    assert_eq!(applied["status"]["lastAppliedCommit"], head.as_str());
    assert!(exists(&env.admin, AI, "ApplicationInstance", ns, "wiki").await);
}
