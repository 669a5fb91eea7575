//! Objects the operator did not write: refused as an ownership conflict until adopted, and after
//! adoption.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_object_is_refused_as_an_ownership_conflict_until_adopted() {
    let ns = "cp-own-a";
    scenario!("cp-own", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
    intent.add_instance(ns, "nextcloud", "one");
    intent.add_instance(ns, "wiki", "two");
    intent.release(&[]);
    intent.commit("release 1");
    // Someone else's `nextcloud`, there first (break glass: the only way past the admission
    // policy besides the operator), with a value the release does not declare.
    let break_glass = break_glass_client(&env.admin, &env.cp.kubeconfig).await;
    scope.also_delete(AI, "ApplicationInstance", Some(ns), "nextcloud");
    let foreign = apply(
        &break_glass,
        &json!({"apiVersion": AI, "kind": "ApplicationInstance",
                "metadata": {"name": "nextcloud", "namespace": ns},
                "spec": {"chart": {"repository": "https://charts.example.org/", "name": "nextcloud", "version": "1.0.0"},
                         "values": {"host": "by-hand.example.org"}}}),
    )
    .await
    .expect("break glass");
    let foreign_spec = foreign.data["spec"].clone();
    let foreign_version = foreign.metadata.resource_version.clone();

    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, _) = scope.once(env);
    assert!(!ok, "a pass with a conflict is not Ready: {out}");
    let (status, reason, message) = scope.condition(&env.admin, "Applied").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "OwnershipConflict"),
        "{message}"
    );
    assert!(
        message.contains(&format!("ApplicationInstance {ns}/nextcloud held by"))
            && message.contains(TEST_MANAGER)
            && message.contains("gitops.vworkspace.io/adopt=cp-own"),
        "names the object, its holder (field manager {TEST_MANAGER}) and the adoption: {message}"
    );
    assert_eq!(
        scope.condition(&env.admin, "Ready").await.1,
        "OwnershipConflict"
    );
    // The rest applied; the foreign object untouched.
    let wiki = get(&env.admin, AI, "ApplicationInstance", Some(ns), "wiki")
        .await
        .expect("wiki applied");
    assert_eq!(
        wiki.metadata
            .labels
            .unwrap_or_default()
            .get("gitops.vworkspace.io/cluster")
            .map(String::as_str),
        Some("cp-own")
    );
    assert_eq!(
        operator_writes_to(&audit, "/applicationinstances/nextcloud"),
        Vec::<String>::new()
    );
    let live = get(&env.admin, AI, "ApplicationInstance", Some(ns), "nextcloud")
        .await
        .expect("still there");
    assert_eq!(live.metadata.resource_version, foreign_version);
    assert_eq!(live.data["spec"], foreign_spec);
    let inventory = inventory_names(&scope.cluster(&env.admin).await);
    assert!(
        !inventory.iter().any(|n| n == "nextcloud"),
        "not in the inventory: {inventory:?}"
    );

    // The release stops declaring it: it is not pruned (never ours).
    intent.remove_instance(ns, "nextcloud");
    intent.release(&[]);
    intent.commit("release 2: nextcloud no longer declared");
    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, err) = scope.once(env);
    assert!(ok, "without the conflicting declaration: {out}\n{err}");
    assert_eq!(
        operator_writes_to(&audit, "/applicationinstances/nextcloud"),
        Vec::<String>::new()
    );
    let live = get(&env.admin, AI, "ApplicationInstance", Some(ns), "nextcloud")
        .await
        .expect("never pruned");
    assert_eq!(live.metadata.resource_version, foreign_version);

    // Declared again, and the owner adopts it for this source: the next pass takes it over.
    intent.add_instance(ns, "nextcloud", "one");
    intent.release(&[]);
    intent.commit("release 3: nextcloud declared again");
    merge_patch(
        &break_glass,
        AI,
        "ApplicationInstance",
        Some(ns),
        "nextcloud",
        &json!({"metadata": {"annotations": {"gitops.vworkspace.io/adopt": "cp-own"}}}),
    )
    .await
    .expect("the adoption annotation");
    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, err) = scope.once(env);
    assert!(ok, "adopted: {out}\n{err}");
    assert!(
        !operator_writes_to(&audit, "/applicationinstances/nextcloud").is_empty(),
        "the adopting pass writes it"
    );
    let adopted = get(&env.admin, AI, "ApplicationInstance", Some(ns), "nextcloud")
        .await
        .expect("adopted");
    let labels = adopted.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("gitops.vworkspace.io/cluster")
            .map(String::as_str),
        Some("cp-own")
    );
    assert_eq!(adopted.data["spec"]["chart"]["version"], "6.6.4");
    assert_eq!(
        adopted.data["spec"]["values"]["host"],
        "nextcloud.example.org"
    );
    assert_eq!(scope.condition(&env.admin, "Ready").await.0, "True");
    let inventory = inventory_names(&scope.cluster(&env.admin).await);
    assert!(
        inventory.iter().any(|n| n == "nextcloud"),
        "in the inventory now: {inventory:?}"
    );
    // Taken over for good: the next pass sends nothing.
    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, err) = scope.once(env);
    assert!(ok, "after adoption: {out}\n{err}");
    assert_eq!(
        audit.writes_by(OPERATOR_USER),
        Vec::<String>::new(),
        "an adopted object is not rewritten on every pass"
    );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_object_with_a_field_the_release_does_not_declare_is_not_rewritten_on_every_pass()
 {
    let ns = "cp-adopt-a";
    scenario!("cp-adopt", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
    intent.add_instance(ns, "nextcloud", "one");
    intent.release(&[]);
    intent.commit("release 1");
    let break_glass = break_glass_client(&env.admin, &env.cp.kubeconfig).await;
    scope.also_delete(AI, "ApplicationInstance", Some(ns), "nextcloud");
    apply(
        &break_glass,
        &json!({"apiVersion": AI, "kind": "ApplicationInstance",
                "metadata": {"name": "nextcloud", "namespace": ns,
                             "annotations": {"gitops.vworkspace.io/adopt": "cp-adopt"}},
                "spec": {"chart": {"repository": "https://charts.example.org/", "name": "nextcloud", "version": "1.0.0"},
                         "values": {"host": "by-hand.example.org", "legacy": {"tier": "gold"}}}}),
    )
    .await
    .expect("break glass");
    let (ok, out, err) = scope.once(env);
    assert!(ok, "adopted: {out}\n{err}");
    let adopted = get(&env.admin, AI, "ApplicationInstance", Some(ns), "nextcloud")
        .await
        .expect("adopted");
    assert_eq!(adopted.data["spec"]["chart"]["version"], "6.6.4");
    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, err) = scope.once(env);
    assert!(ok, "after adoption: {out}\n{err}");
    let after = get(&env.admin, AI, "ApplicationInstance", Some(ns), "nextcloud")
        .await
        .expect("adopted");
    assert_eq!(
        audit.writes_by(OPERATOR_USER),
        Vec::<String>::new(),
        "the pass after adoption writes nothing; the live spec: {}",
        after.data["spec"]
    );
        })
        .await;
}
