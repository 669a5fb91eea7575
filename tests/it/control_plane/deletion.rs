//! Deleting a Cluster (Orphan and Delete policies, a foreign finalizer) and re-creating it with a
//! serial floor.

use super::*;

pub const FINALIZER: &str = "gitops.vworkspace.io/cleanup";

/// The finalizers of the Cluster `name`, or `None` once it is gone.
pub async fn cluster_finalizers(client: &Client, name: &str) -> Option<Vec<String>> {
    get(client, OPS, "Cluster", None, name)
        .await
        .map(|c| c.metadata.finalizers.unwrap_or_default())
}

/// Waits until the Cluster `name` is gone.
pub async fn wait_cluster_gone(client: &Client, name: &str) {
    wait_for(&format!("Cluster {name} gone"), 60, || async {
        get(client, OPS, "Cluster", None, name)
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cluster_orphans_what_it_applied_and_keeps_a_foreign_finalizer() {
    let ns = "cp-orphan-a";
    scenario!("cp-orphan", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
            intent.add_instance(ns, "nextcloud", "one");
            intent.add_instance(ns, "wiki", "two");
            intent.release(&[]);
            intent.commit("release 1");
            // Another controller's finalizer, there before the operator adds its own (its own field
            // manager, as a controller would write it).
            let foreign = "example.org/keep-for-audit";
            apply_as(
                &env.admin,
                "vws-test-other-controller",
                &json!({"apiVersion": OPS, "kind": "Cluster",
                "metadata": {"name": scope.name, "finalizers": [foreign]}}),
            )
            .await
            .expect("a foreign finalizer");

            let (ok, out, err) = scope.once(env);
            assert!(ok, "first pass: {out}\n{err}");
            let finalizers = cluster_finalizers(&env.admin, &scope.name)
                .await
                .expect("the Cluster");
            assert!(
                finalizers.iter().any(|f| f == FINALIZER)
                    && finalizers.iter().any(|f| f == foreign),
                "the operator's finalizer is added next to the foreign one (a set): {finalizers:?}"
            );
            let applied: Vec<(String, String)> = {
                let mut v = Vec::new();
                for name in ["nextcloud", "wiki"] {
                    let ai = get(&env.admin, AI, "ApplicationInstance", Some(ns), name)
                        .await
                        .unwrap_or_else(|| panic!("{ns}/{name} applied"));
                    v.push((name.to_owned(), ai.metadata.uid.expect("uid")));
                }
                v
            };

            // Deleted with the default policy (Orphan): the operator removes its finalizer only, and
            // deletes nothing.
            delete(&env.admin, OPS, "Cluster", None, &scope.name).await;
            let audit = Audit::mark(&env.cp.audit_log);
            let (ok, out, err) = scope.once(env);
            assert!(ok, "finalizing pass: {out}\n{err}");
            let writes = audit.writes_by(OPERATOR_USER);
            assert!(
                !writes.iter().any(|w| w.starts_with("delete ")),
                "Orphan deletes nothing: {writes:?}"
            );
            let finalizers = cluster_finalizers(&env.admin, &scope.name)
                .await
                .expect("the foreign finalizer still holds the Cluster");
            assert_eq!(
                finalizers,
                vec![foreign.to_owned()],
                "only the operator's finalizer is removed"
            );
            // The foreign controller lets go: the Cluster goes.
            apply_as(
                &env.admin,
                "vws-test-other-controller",
                &json!({"apiVersion": OPS, "kind": "Cluster", "metadata": {"name": scope.name}}),
            )
            .await
            .expect("the foreign finalizer removed by its own manager");
            wait_cluster_gone(&env.admin, &scope.name).await;
            for (name, uid) in applied {
                let ai = get(&env.admin, AI, "ApplicationInstance", Some(ns), &name)
                    .await
                    .unwrap_or_else(|| panic!("{ns}/{name} is orphaned, not deleted"));
                assert_eq!(ai.metadata.uid.as_deref(), Some(uid.as_str()), "{name}");
                assert_eq!(
                    ai.metadata
                        .labels
                        .unwrap_or_default()
                        .get("gitops.vworkspace.io/cluster")
                        .map(String::as_str),
                    Some("cp-orphan"),
                    "an orphan keeps its labels (a re-created Cluster takes it back)"
                );
            }
            // A pass with the Cluster gone touches nothing of it.
            let audit = Audit::mark(&env.cp.audit_log);
            let (ok, out, err) = scope.once(env);
            assert!(ok, "a pass without Clusters: {out}\n{err}");
            assert_eq!(
                operator_writes_to(&audit, ns),
                Vec::<String>::new(),
                "nothing written in the orphan's namespace"
            );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cluster_with_deletion_policy_delete_prunes_its_inventory() {
    let ns = "cp-delpol-a";
    scenario!("cp-delpol", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
    intent.add_instance(ns, "nextcloud", "one");
    intent.add_instance(ns, "wiki", "two");
    intent.release(&[]);
    intent.commit("release 1");
    merge_patch(
        &env.admin,
        OPS,
        "Cluster",
        None,
        &scope.name,
        &json!({"spec": {"deletionPolicy": "Delete"}}),
    )
    .await
    .expect("deletionPolicy: Delete");
    let (ok, out, err) = scope.once(env);
    assert!(ok, "first pass: {out}\n{err}");
    let cluster = scope.cluster(&env.admin).await;
    let inventory = inventory_names(&cluster);
    for name in ["nextcloud", "wiki"] {
        assert!(
            exists(&env.admin, AI, "ApplicationInstance", ns, name).await,
            "{name} applied"
        );
        assert!(
            inventory.iter().any(|n| n == name),
            "{name} in the inventory: {inventory:?}"
        );
    }
    // Someone else's instance in the same namespace (break glass): not in the inventory, kept.
    let break_glass = break_glass_client(&env.admin, &env.cp.kubeconfig).await;
    scope.also_delete(AI, "ApplicationInstance", Some(ns), "bystander");
    apply(
        &break_glass,
        &json!({"apiVersion": AI, "kind": "ApplicationInstance",
                "metadata": {"name": "bystander", "namespace": ns},
                "spec": {"chart": {"repository": "https://charts.example.org/", "name": "app", "version": "1.0.0"},
                         "values": {"host": "bystander.example.org"}}}),
    )
    .await
    .expect("break glass");

    delete(&env.admin, OPS, "Cluster", None, &scope.name).await;
    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, err) = scope.once(env);
    assert!(ok, "finalizing pass: {out}\n{err}");
    wait_cluster_gone(&env.admin, &scope.name).await;
    let writes = audit.writes_by(OPERATOR_USER);
    for name in ["nextcloud", "wiki"] {
        assert!(
            !exists(&env.admin, AI, "ApplicationInstance", ns, name).await,
            "{name} deleted with its Cluster"
        );
        assert!(
            writes.iter().any(|w| w.starts_with("delete ")
                && w.contains(&format!("/applicationinstances/{name}"))),
            "deleted by the operator: {writes:?}"
        );
    }
    // The inventory first, then the finalizer: the Cluster's last write is its finalizer's removal.
    let last_delete = writes
        .iter()
        .rposition(|w| w.starts_with("delete "))
        .expect("deletes");
    let finalizer_write = writes
        .iter()
        .rposition(|w| w.contains(&format!("/clusters/{}", scope.name)))
        .unwrap_or_else(|| panic!("the finalizer removed by the operator: {writes:?}"));
    assert!(last_delete < finalizer_write, "{writes:#?}");
    assert!(
        exists(&env.admin, AI, "ApplicationInstance", ns, "bystander").await,
        "an object that is not the Cluster's is left"
    );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_recreated_with_min_serial_above_the_release_is_refused() {
    let ns = "cp-floor-a";
    scenario!("cp-floor", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
    intent.add_instance(ns, "nextcloud", "one");
    intent.release(&[]);
    intent.commit("release 1");
    let (ok, out, err) = scope.once(env);
    assert!(ok, "first pass: {out}\n{err}");
    assert_eq!(
        scope.cluster(&env.admin).await["status"]["lastAppliedSerial"],
        1
    );

    // A new release (serial 2), and the Cluster deleted and re-created (its status, the floor it
    // kept, lost) with the floor pinned in its spec above the repository's serial.
    intent.add_instance(ns, "wiki", "two");
    intent.release(&[]);
    intent.commit("release 2: wiki");
    let mut spec = scope.cluster(&env.admin).await["spec"].clone();
    delete(&env.admin, OPS, "Cluster", None, &scope.name).await;
    let (ok, out, err) = scope.once(env);
    assert!(ok, "finalizing pass: {out}\n{err}");
    wait_cluster_gone(&env.admin, &scope.name).await;
    spec["release"]["minSerial"] = json!(5);
    apply(
        &env.admin,
        &json!({"apiVersion": OPS, "kind": "Cluster", "metadata": {"name": scope.name}, "spec": spec}),
    )
    .await
    .expect("the Cluster re-created with spec.release.minSerial 5");

    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, _) = scope.once(env);
    assert!(!ok, "a release below the floor is refused: {out}");
    let writes = audit.writes_by(OPERATOR_USER);
    let cluster_path = format!("/clusters/{}", scope.name);
    assert_eq!(
        object_writes(&writes)
            .into_iter()
            .filter(|w| !w.contains(&cluster_path))
            .collect::<Vec<_>>(),
        Vec::<String>::new(),
        "nothing applied (the Cluster's own finalizer and status aside): {writes:?}"
    );
    let (status, reason, message) = scope.condition(&env.admin, "SourceVerified").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ReleaseInvalid"),
        "{message}"
    );
    assert!(
        message.contains("serial 2 is below spec.release.minSerial 5"),
        "{message}"
    );
    assert_eq!(
        scope.condition(&env.admin, "Ready").await.1,
        "ReleaseInvalid"
    );
    assert!(
        !exists(&env.admin, AI, "ApplicationInstance", ns, "wiki").await,
        "nothing of the refused release applied"
    );
    let cluster = scope.cluster(&env.admin).await;
    assert!(
        cluster["status"]["lastAppliedSerial"].is_null(),
        "nothing applied since the re-creation: {cluster}"
    );

    // A release at the floor applies: the floor, not something else, was the refusal.
    intent.release(&["--serial", "5"]);
    intent.commit("release 5");
    let (ok, out, err) = scope.once(env);
    assert!(ok, "a release at the floor: {out}\n{err}");
    assert!(exists(&env.admin, AI, "ApplicationInstance", ns, "wiki").await);
    assert_eq!(
        scope.cluster(&env.admin).await["status"]["lastAppliedSerial"],
        5
    );
        })
        .await;
}
