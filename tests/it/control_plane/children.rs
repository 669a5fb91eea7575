//! The children controllers on the real API server: children valid under the third-party CRDs and
//! collected after prune; an instance written through the API is not materialized.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_valid_under_the_thirdparty_crds_and_collected_after_prune() {
    let ns = "cp-children-a";
    scenario!("cp-children", &[ns])
        .needs_thirdparty("../shared/thirdparty-crds is absent (the Flux, Velero, snapshot and Argo CRDs)")
        .webhook()
        .run(async |env, intent, scope| {
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
    // The RunCommand template, owned by the platform team (vworkspace-system).
    scope
        .apply(
            &env.admin,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "operation-template-pg-dump", "namespace": SYSTEM},
                   "data": {"image": "registry.example.org/tools/pg:16", "command": "[\"/bin/pg-dump\",\"--all\"]"}}),
        )
        .await;
    let (ok, out, err) = scope.once(env);
    assert!(ok, "first pass: {out}\n{err}");
    let ai = get(&env.admin, AI, "ApplicationInstance", Some(ns), "nextcloud")
        .await
        .expect("applied");
    let ai_uid = ai.metadata.uid.clone().expect("uid");

    // The children controllers, briefly (no leader election: only this replica).
    let mut controllers = Proc::spawn(&mut operator_cmd(env, &scope.dir), &scope.dir, "run");
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
    let (ok, out, err) = scope.once(env);
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
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_written_through_the_api_is_not_materialized() {
    let ns = "cp-closure-a";
    scenario!("cp-closure", &[ns])
        .needs_thirdparty("../shared/thirdparty-crds is absent")
        .webhook()
        .run(async |env, intent, scope| {
    intent.add_instance(ns, "nextcloud", "declared");
    intent.release(&[]);
    intent.commit("release 1");
    let (ok, out, err) = scope.once(env);
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
    let mut controllers = Proc::spawn(&mut operator_cmd(env, &scope.dir), &scope.dir, "run");
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
        })
        .await;
}
