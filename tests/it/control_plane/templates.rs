//! Issue 23 item 3 on the real server: the templates an Operation may run come from its namespace's
//! annotation as it is now, never from a `Cluster`'s `status.managedNamespaces` list. A template
//! revoked on the namespace stops the next run: the Operation fails with
//! `OperationTemplateNotAllowedInNamespace` and no Job is created. The webhook would refuse the
//! next run at admission once the template is revoked, and this test is about the Operation
//! controller's own decision: so the next run is applied (a `run --once` pass, which runs no child
//! controller) while the template is still allowed, the template is revoked, and only then does a
//! `run` replica (with the Operation controller) see the run.

use serde_json::json;

use super::delivery::object;
use super::server::*;
use super::{OPS, SYSTEM, operator_cmd, scenario};

/// The Jobs in `ns` owned by the Operation whose uid is `uid`.
async fn jobs_of(client: &kube::Client, ns: &str, uid: &str) -> Vec<String> {
    let api = dynamic_api(client, "batch/v1", "Job", Some(ns)).await;
    let list = api.list(&Default::default()).await.expect("list Jobs");
    list.items
        .into_iter()
        .filter(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid)
        })
        .filter_map(|j| j.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_revoked_on_the_namespace_stops_the_next_run_and_creates_no_job() {
    let ns = "cp-tmpl-a";
    scenario!("cp-tmpl", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
            intent.add_operation(
                ns,
                "dump",
                "  type: RunCommand\n  template: pg-dump\n  parameters:\n    database: one\n",
            );
            intent.release(&[]);
            intent.commit("release 1: a pg-dump run");
            scope
                .apply(
                    &env.admin,
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "operation-template-pg-dump", "namespace": SYSTEM},
                    "data": {"image": "registry.example.org/tools/pg:16", "command": "[\"/bin/run\"]"}}),
                )
                .await;
            let mut operator =
                Proc::spawn(&mut operator_cmd(env, &scope.dir), &scope.dir, "operator-1");
            // The first run is allowed: its Job is created.
            let (uid, first_run, first_jobs) = wait_for("the first run's Job", 180, || async {
                let op = object(&env.admin, OPS, "Operation", ns, "dump").await?;
                let uid = op["metadata"]["uid"].as_str()?.to_owned();
                let jobs = jobs_of(&env.admin, ns, &uid).await;
                (!jobs.is_empty()).then_some((uid, op["status"]["runId"].clone(), jobs))
            })
            .await;
            assert_eq!(first_jobs.len(), 1, "{first_jobs:?}");
            operator.stop();

            // The next run (the same Operation, another parameter) is applied while pg-dump is
            // still allowed (the webhook admits it); no child controller runs.
            intent.add_operation(
                ns,
                "dump",
                "  type: RunCommand\n  template: pg-dump\n  parameters:\n    database: two\n",
            );
            intent.release(&[]);
            intent.commit("release 2: the next pg-dump run");
            let (ok, out, err) = scope.once(env);
            assert!(ok, "release 2: {out}\n{err}");
            let applied = object(&env.admin, OPS, "Operation", ns, "dump")
                .await
                .expect("the Operation");
            assert_eq!(applied["spec"]["parameters"]["database"], "two", "{applied}");

            // Revoked on the namespace, then the controller runs.
            merge_patch(
                &env.admin,
                "v1",
                "Namespace",
                None,
                ns,
                &json!({"metadata": {"annotations": {
                    "app.vworkspace.io/allowed-operation-templates": "velero-namespace-backup"}}}),
            )
            .await
            .expect("revoke pg-dump");
            // A suspended Cluster (its passes stop early) whose status still lists pg-dump for the
            // namespace, as a Cluster that stopped before the revocation keeps it: it grants nothing.
            let mut spec = scope.cluster(&env.admin).await["spec"].clone();
            spec["clusterId"] = json!("cp-tmpl-stale");
            spec["suspend"] = json!(true);
            let stale = json!({"apiVersion": OPS, "kind": "Cluster",
                               "metadata": {"name": "cp-tmpl-stale"}, "spec": spec});
            scope.apply(&env.admin, stale).await;
            // Only the operator and break glass write Cluster status (admission); the test's break
            // glass gets the RBAC right for it, as an owner would bind it.
            scope
                .apply(
                    &env.admin,
                    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": "vws-test-templates-status"},
                    "rules": [{"apiGroups": ["ops.vworkspace.io"], "resources": ["clusters/status"],
                               "verbs": ["get", "patch"]}]}),
                )
                .await;
            scope
                .apply(
                    &env.admin,
                    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": "vws-test-templates-status"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                "name": "vws-test-templates-status"},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                  "name": BREAK_GLASS_GROUP}]}),
                )
                .await;
            let break_glass = break_glass_client(&env.admin, &env.cp.kubeconfig).await;
            let clusters = dynamic_api(&break_glass, OPS, "Cluster", None).await;
            let stale_status = kube::api::Patch::Merge(json!({"status": {"managedNamespaces": [
                {"name": ns, "allowedOperationTemplates": ["pg-dump"]}]}}));
            wait_for("the stale Cluster's status (break glass)", 30, || async {
                clusters
                    .patch_status("cp-tmpl-stale", &Default::default(), &stale_status)
                    .await
                    .ok()
            })
            .await;
            let operator =
                Proc::spawn(&mut operator_cmd(env, &scope.dir), &scope.dir, "operator-2");
            let refused = wait_for("the next run refused", 180, || async {
                let op = object(&env.admin, OPS, "Operation", ns, "dump").await?;
                (op["status"]["runId"] != first_run
                    && op["status"]["reason"] == "OperationTemplateNotAllowedInNamespace")
                    .then_some(op)
            })
            .await;
            assert_eq!(refused["status"]["phase"], "Failed", "{refused}");
            let message = refused["status"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("pg-dump") && message.contains("allowed-operation-templates"),
                "{message}"
            );
            // Still only the first run's Job: the refused run created none.
            assert_eq!(
                jobs_of(&env.admin, ns, &uid).await,
                first_jobs,
                "operator: {}",
                operator.stderr()
            );
        })
        .await;
}
