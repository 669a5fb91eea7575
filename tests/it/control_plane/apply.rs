//! Applying a verified release on the real API server: the first apply and the no-op pass, a refused
//! commit, prune and a refused rollback, numbers the API server re-encodes, and drift.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_apply_then_an_unchanged_pass_sends_no_write() {
    scenario!("cp-first", &["cp-first-a", "cp-first-b"])
        .webhook()
        .run(async |env, intent, scope| {
            intent.add_instance("cp-first-a", "nextcloud", "smtp-secret-1");
            intent.add_instance("cp-first-b", "wiki", "smtp-secret-2");
            intent.release(&[]);
            let head = intent.commit("release 1");

            let audit = Audit::mark(&env.cp.audit_log);
            let (ok, out, err) = scope.once(env);
            assert!(ok, "first pass: {out}\n{err}");
            let writes = audit.writes_by(OPERATOR_USER);
            println!("first pass: {} writes: {writes:#?}", writes.len());
            for (ns, name) in [("cp-first-a", "nextcloud"), ("cp-first-b", "wiki")] {
                let ai = get(&env.admin, AI, "ApplicationInstance", Some(ns), name)
                    .await
                    .unwrap_or_else(|| panic!("{ns}/{name} applied"));
                let labels = &ai.metadata.labels.clone().unwrap_or_default();
                assert_eq!(
                    labels
                        .get("app.vworkspace.io/managed-by")
                        .map(String::as_str),
                    Some("vworkspace")
                );
                assert_eq!(
                    labels
                        .get("gitops.vworkspace.io/cluster")
                        .map(String::as_str),
                    Some("cp-first")
                );
                for binding in [
                    "vworkspace-app-operator",
                    "vworkspace-app-operator-values",
                    "vworkspace-operation-runner",
                ] {
                    assert!(
                        exists(
                            &env.admin,
                            "rbac.authorization.k8s.io/v1",
                            "RoleBinding",
                            ns,
                            binding
                        )
                        .await,
                        "RoleBinding {ns}/{binding}"
                    );
                }
            }
            let cluster = scope.cluster(&env.admin).await;
            assert_eq!(cluster["status"]["lastAppliedSerial"], 1, "{cluster}");
            assert_eq!(cluster["status"]["lastAppliedCommit"], head.as_str());
            assert_eq!(
                scope.condition(&env.admin, "Ready").await.0,
                "True",
                "{cluster}"
            );
            // Secrets only ever read by name, on the real server too.
            for e in audit.since() {
                if e["user"]["username"] == OPERATOR_USER
                    && e["objectRef"]["resource"] == "secrets"
                    && e["objectRef"]["namespace"] == SYSTEM
                {
                    assert_eq!(e["verb"], "get", "{e}");
                }
            }

            let audit = Audit::mark(&env.cp.audit_log);
            let (ok, out, err) = scope.once(env);
            assert!(ok, "second pass: {out}\n{err}");
            assert_eq!(
                audit.writes_by(OPERATOR_USER),
                Vec::<String>::new(),
                "an unchanged pass writes nothing"
            );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_changes_nothing() {
    scenario!("cp-refused", &["cp-refused-a"])
        .webhook()
        .run(async |env, intent, scope| {
            intent.add_instance("cp-refused-a", "nextcloud", "one");
            intent.release(&[]);
            let head = intent.commit("release 1");
            let (ok, out, err) = scope.once(env);
            assert!(ok, "first pass: {out}\n{err}");
            let before = get(
                &env.admin,
                AI,
                "ApplicationInstance",
                Some("cp-refused-a"),
                "nextcloud",
            )
            .await
            .expect("applied");

            // A correctly released change, but the commit is signed by a key nobody trusts.
            intent.add_instance("cp-refused-a", "intruder", "two");
            intent.release(&[]);
            intent.commit_signed_by_rogue("release 2, signed by an untrusted key");
            let audit = Audit::mark(&env.cp.audit_log);
            let (ok, out, _) = scope.once(env);
            assert!(!ok, "the pass must fail: {out}");
            let writes = audit.writes_by(OPERATOR_USER);
            assert_eq!(
                object_writes(&writes),
                Vec::<String>::new(),
                "nothing but status and Event: {writes:?}"
            );
            assert!(
                !exists(
                    &env.admin,
                    AI,
                    "ApplicationInstance",
                    "cp-refused-a",
                    "intruder"
                )
                .await
            );
            let after = get(
                &env.admin,
                AI,
                "ApplicationInstance",
                Some("cp-refused-a"),
                "nextcloud",
            )
            .await
            .expect("still there");
            assert_eq!(
                before.metadata.resource_version,
                after.metadata.resource_version
            );
            let (status, reason, _) = scope.condition(&env.admin, "SourceVerified").await;
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "CommitSignatureInvalid")
            );
            let cluster = scope.cluster(&env.admin).await;
            assert_eq!(cluster["status"]["lastAppliedCommit"], head.as_str());
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_then_a_rollback_is_refused() {
    scenario!("cp-prune", &["cp-prune-a"])
        .webhook()
        .run(async |env, intent, scope| {
            intent.add_instance("cp-prune-a", "nextcloud", "one");
            intent.add_instance("cp-prune-a", "wiki", "two");
            intent.release(&[]);
            let first = intent.commit("release 1");
            let (ok, out, err) = scope.once(env);
            assert!(ok, "first pass: {out}\n{err}");
            assert!(exists(&env.admin, AI, "ApplicationInstance", "cp-prune-a", "wiki").await);

            intent.remove_instance("cp-prune-a", "wiki");
            intent.release(&[]);
            let head2 = intent.commit("release 2: wiki removed");
            let audit = Audit::mark(&env.cp.audit_log);
            let (ok, out, err) = scope.once(env);
            assert!(ok, "prune pass: {out}\n{err}");
            let writes = audit.writes_by(OPERATOR_USER);
            assert!(
                writes
                    .iter()
                    .any(|w| w.starts_with("delete ") && w.contains("/applicationinstances/wiki")),
                "{writes:?}"
            );
            assert!(!exists(&env.admin, AI, "ApplicationInstance", "cp-prune-a", "wiki").await);
            assert!(
                exists(
                    &env.admin,
                    AI,
                    "ApplicationInstance",
                    "cp-prune-a",
                    "nextcloud"
                )
                .await
            );
            assert_eq!(
                scope.cluster(&env.admin).await["status"]["lastAppliedSerial"],
                2
            );

            // The old release again (validly signed, serial 1) in a new trusted commit: a rollback, refused.
            intent.git(&["checkout", &first, "--", "clusters/cp-prune"]);
            intent.commit("release 1 again");
            let audit = Audit::mark(&env.cp.audit_log);
            let (ok, out, _) = scope.once(env);
            assert!(!ok, "a rollback must fail: {out}");
            let writes = audit.writes_by(OPERATOR_USER);
            assert_eq!(object_writes(&writes), Vec::<String>::new(), "{writes:?}");
            assert!(!exists(&env.admin, AI, "ApplicationInstance", "cp-prune-a", "wiki").await);
            let (status, reason, message) = scope.condition(&env.admin, "SourceVerified").await;
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "ReleaseInvalid"),
                "{message}"
            );
            let cluster = scope.cluster(&env.admin).await;
            assert_eq!(cluster["status"]["lastAppliedSerial"], 2);
            assert_eq!(cluster["status"]["lastAppliedCommit"], head2.as_str());

            // Forward again, with every instance removed: an empty cluster directory prunes everything.
            intent.remove_instance("cp-prune-a", "wiki");
            intent.remove_instance("cp-prune-a", "nextcloud");
            intent.release(&["--serial", "3"]);
            intent.commit("release 3: nothing declared");
            let (ok, out, err) = scope.once(env);
            assert!(ok, "empty release: {out}\n{err}");
            assert!(
                !exists(
                    &env.admin,
                    AI,
                    "ApplicationInstance",
                    "cp-prune-a",
                    "nextcloud"
                )
                .await
            );
            assert_eq!(
                scope.cluster(&env.admin).await["status"]["lastAppliedSerial"],
                3
            );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_the_api_server_re_encodes_do_not_cause_a_write_on_every_pass() {
    let ns = "cp-numbers-a";
    scenario!("cp-numbers", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
    // kube-apiserver 1.36 returned these values as
    // {"beyond":12345678901234567000,"big":9007199254740993,"ratio":0.1,"replicas":1,"scale":2500}:
    // `replicas: 1.0` as 1, `scale: 2.5e3` as 2500, `ratio: 0.1` unchanged, 2^53+1 exact (it keeps
    // int64), and an integer beyond int64 as its nearest float64 in plain digits, which reads back as
    // a different integer (this last one made the operator write on every pass; fixed in
    // plan::diff::same_number). An integer beyond u64 (18446744073709551617) made `release` fail here.
    intent.write(
        &format!("clusters/cp-numbers/namespaces/{ns}/applicationinstances/counter.yaml"),
        "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: counter\nspec:\n  chart:\n    repository: https://charts.example.org/\n    name: counter\n    version: 1.0.0\n  values:\n    replicas: 1.0\n    big: 9007199254740993\n    ratio: 0.1\n    scale: 2.5e3\n    beyond: 12345678901234567890\n",
    );
    intent.release(&[]);
    intent.commit("release 1");
    let (ok, out, err) = scope.once(env);
    assert!(ok, "first pass: {out}\n{err}");
    let live = get(&env.admin, AI, "ApplicationInstance", Some(ns), "counter")
        .await
        .expect("applied");
    let values = &live.data["spec"]["values"];
    println!("values as the API server returns them: {values}");
    assert_eq!(values["replicas"], json!(1), "{values}");
    assert_eq!(values["big"].as_u64(), Some(9007199254740993), "{values}");

    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, err) = scope.once(env);
    assert!(ok, "second pass: {out}\n{err}");
    assert_eq!(
        audit.writes_by(OPERATOR_USER),
        Vec::<String>::new(),
        "re-encoded numbers are not a change"
    );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_added_by_another_writer_is_undone_once_not_reapplied_on_every_pass() {
    let ns = "cp-drift-a";
    scenario!("cp-drift", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
            intent.add_instance(ns, "nextcloud", "one");
            intent.release(&[]);
            intent.commit("release 1");
            let (ok, out, err) = scope.once(env);
            assert!(ok, "first pass: {out}\n{err}");
            let break_glass = break_glass_client(&env.admin, &env.cp.kubeconfig).await;
            merge_patch(
                &break_glass,
                AI,
                "ApplicationInstance",
                Some(ns),
                "nextcloud",
                &json!({"spec": {"values": {"extra": "by-hand"}}}),
            )
            .await
            .expect("break glass");
            let (ok, out, err) = scope.once(env);
            assert!(ok, "the pass that repairs it: {out}\n{err}");
            let audit = Audit::mark(&env.cp.audit_log);
            let (ok, out, err) = scope.once(env);
            assert!(ok, "the next pass: {out}\n{err}");
            let live = get(&env.admin, AI, "ApplicationInstance", Some(ns), "nextcloud")
                .await
                .expect("there");
            assert_eq!(
                audit.writes_by(OPERATOR_USER),
                Vec::<String>::new(),
                "repaired once, then left alone; the live spec: {}",
                live.data["spec"]
            );
            assert!(
                live.data["spec"]["values"]["extra"].is_null(),
                "{}",
                live.data["spec"]
            );
        })
        .await;
}
