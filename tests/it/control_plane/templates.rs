//! Issue 23 item 3 on the real server: the templates an Operation may run come from its namespace's
//! annotation as it is now, never from a `Cluster`'s `status.managedNamespaces` list. A template
//! revoked on the namespace stops the next run: the Operation fails with
//! `OperationTemplateNotAllowedInNamespace` and no Job is created. The webhook replica is left out on
//! purpose: it would refuse the Operation at admission, and this test is about the controller's own
//! decision.

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
            let operator = Proc::spawn(&mut operator_cmd(env, &scope.dir), &scope.dir, "operator");
            // The first run is allowed: its Job is created.
            let first = wait_for("the first run's Job", 120, || async {
                let op = object(&env.admin, OPS, "Operation", ns, "dump").await?;
                let uid = op["metadata"]["uid"].as_str()?.to_owned();
                let jobs = jobs_of(&env.admin, ns, &uid).await;
                (!jobs.is_empty()).then_some((uid, op["status"]["runId"].clone(), jobs))
            })
            .await;
            let (uid, first_run, first_jobs) = first;
            assert_eq!(first_jobs.len(), 1, "{first_jobs:?}");

            // Revoked on the namespace; the Cluster's status may still list it (it is not consulted).
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
            // The next run: the same Operation with another parameter, in a new signed release.
            intent.add_operation(
                ns,
                "dump",
                "  type: RunCommand\n  template: pg-dump\n  parameters:\n    database: two\n",
            );
            intent.release(&[]);
            intent.commit("release 2: the next pg-dump run");
            merge_patch(
                &env.admin,
                OPS,
                "Cluster",
                None,
                "cp-tmpl",
                &json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "release-2"}}}),
            )
            .await
            .expect("request a pass");
            let refused = wait_for("the next run refused", 120, || async {
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
