//! One test per step of an Operation's reconcile, against the scripted API of [`crate::testing`].

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::children::Caches;
use crate::metrics::Metrics;
use crate::testing::FakeApi;
use vworkspace_core::crd::OperationStatus;
use vworkspace_core::plan::declared::DeclaredSet;
use vworkspace_core::reasons as reason;

const OPERATION: &str = "/apis/ops.vworkspace.io/v1alpha1/namespaces/org-a/operations/nightly";
const CLUSTERS: &str = "/apis/ops.vworkspace.io/v1alpha1/clusters";

fn operation(status: Value) -> Operation {
    serde_json::from_value(json!({
        "apiVersion": "ops.vworkspace.io/v1alpha1",
        "kind": "Operation",
        "metadata": {"name": "nightly", "namespace": "org-a", "uid": "u-2", "generation": 1,
                     "labels": {"gitops.vworkspace.io/cluster": "prod"}},
        "spec": {"type": "Backup", "template": "velero-namespace-backup",
                 "target": {"applicationInstance": "web"}},
        "status": status,
    }))
    .expect("an Operation")
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_000).expect("time")
}

fn context(api: &Arc<FakeApi>) -> ChildContext {
    ChildContext {
        client: api.client(),
        namespace: "vworkspace-system".into(),
        velero_namespace: "velero".into(),
        limits: vworkspace_core::limits::Limits::default(),
        clock: now,
        declared: Arc::new(DeclaredSet::default()),
        metrics: Arc::new(Metrics::default()),
        caches: Caches::default(),
        access_lost: Default::default(),
    }
}

fn cluster(managed: Value) -> Arc<Cluster> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "prod"},
            "spec": {
                "clusterId": "prod",
                "source": {"url": "https://git.example.org/i.git", "ref": {"branch": "main"}, "interval": "5m"},
                "commitSigners": {"configMapRef": {"name": "commit-signers"}},
                "release": {"signersConfigMapRef": {"name": "release-signers"}, "threshold": 1},
                "decryption": {"identitySecretRef": {"name": "age"}}
            },
            "status": {"managedNamespaces": managed},
        }))
        .expect("a Cluster"),
    )
}

/// The state after `JudgeDeclared`, the Operation declared as it is live.
fn judged(op: &Operation, clusters: Vec<Arc<Cluster>>) -> OperationState {
    let mut state = OperationState::new(now());
    state.clusters = clusters;
    state.effective = Some(Arc::new(op.clone()));
    state.declaring = Some("prod".into());
    state
}

/// A namespace `org-a` as the API server holds it: `managed` labelled or not, with `annotation` as
/// its allowed-templates annotation.
fn namespace(managed: bool, annotation: Option<&str>) -> Value {
    let labels = if managed {
        json!({"app.vworkspace.io/managed-by": "vworkspace"})
    } else {
        json!({})
    };
    let annotations = annotation.map_or(
        json!({}),
        |a| json!({"app.vworkspace.io/allowed-operation-templates": a}),
    );
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": "org-a", "labels": labels, "annotations": annotations}})
}

fn status_route(api: &Arc<FakeApi>, op: &Operation) {
    api.route(
        Method::PATCH,
        &format!("{OPERATION}/status"),
        200,
        serde_json::to_value(op).expect("json"),
    );
}

fn written_status(api: &FakeApi) -> OperationStatus {
    let write = api
        .seen()
        .into_iter()
        .find(|s| s.method == Method::PATCH && s.path.ends_with("/status"))
        .expect("a status write");
    serde_json::from_value(write.body["status"].clone()).expect("a status")
}

fn done(flow: Flow) -> Option<Action> {
    match flow {
        Flow::Done(action) => Some(action),
        Flow::Next => None,
    }
}

#[test]
fn every_step_is_listed_once_after_the_steps_it_needs() {
    let at = |step: Step| STEPS.iter().position(|s| *s == step);
    for step in STEPS {
        assert_eq!(STEPS.iter().filter(|s| **s == step).count(), 1, "{step:?}");
    }
    for (step, before) in [
        (Step::SkipFinishedRun, Step::CheckManaged),
        // A finished run is never judged again (its Event is not repeated).
        (Step::JudgeDeclared, Step::SkipFinishedRun),
        (Step::CheckNamespaceRecorded, Step::JudgeDeclared),
        (Step::CheckTemplate, Step::CheckNamespaceRecorded),
        // Nothing is created before the template is allowed.
        (Step::BuildChild, Step::CheckTemplate),
        (Step::EnsureChild, Step::BuildChild),
        (Step::FindLogs, Step::BuildChild),
    ] {
        assert!(at(before) < at(step), "{before:?} must run before {step:?}");
    }
}

#[tokio::test]
async fn a_finished_run_is_skipped_and_a_refusal_is_judged_again() {
    let live = operation(Value::Null);
    let run = engines::run_id(&live);
    let cases = [
        ("never ran", Value::Null, false),
        (
            "this spec succeeded",
            json!({"phase": "Succeeded", "runId": run, "reason": "Completed"}),
            true,
        ),
        (
            "this spec is running",
            json!({"phase": "Running", "runId": run}),
            false,
        ),
        (
            "this spec was refused",
            json!({"phase": "Failed", "runId": run, "reason": reason::TEMPLATE_NOT_ALLOWED}),
            false,
        ),
        (
            "another spec finished",
            json!({"phase": "Failed", "runId": "other", "reason": "Error"}),
            false,
        ),
    ];
    let api = FakeApi::new();
    let ctx = context(&api);
    for (name, status, skipped) in cases {
        let op = operation(status);
        let mut state = OperationState::new(now());
        let flow = Step::SkipFinishedRun
            .run(&ctx, &op, &mut state)
            .await
            .expect(name);
        assert_eq!(done(flow).is_some(), skipped, "{name}");
    }
    assert!(api.seen().is_empty());
}

#[tokio::test]
async fn judge_declared_waits_for_a_release_and_refuses_what_none_declares() {
    for (clusters, publish, phase, reason, requeue, events) in [
        (
            vec![],
            false,
            OperationPhase::Pending,
            reason::WAITING_FOR_RELEASE,
            15,
            0,
        ),
        (
            vec![cluster(json!([]))],
            true,
            OperationPhase::Failed,
            reason::NOT_DECLARED,
            60,
            1,
        ),
    ] {
        let api = FakeApi::new();
        let op = operation(Value::Null);
        let items: Vec<Value> = clusters
            .iter()
            .map(|c| serde_json::to_value(c.as_ref()).expect("json"))
            .collect();
        api.get(
            CLUSTERS,
            json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "ClusterList",
                                "metadata": {}, "items": items}),
        );
        status_route(&api, &op);
        let ctx = context(&api);
        if publish {
            ctx.declared.publish(
                &clusters[0].spec,
                3,
                "c0ffee",
                &vworkspace_core::plan::Plan::default(),
                &[],
            );
        }
        let mut state = OperationState::new(now());
        let flow = Step::JudgeDeclared
            .run(&ctx, &op, &mut state)
            .await
            .expect("judged");
        assert_eq!(
            done(flow),
            Some(Action::requeue(Duration::from_secs(requeue))),
            "{reason}"
        );
        assert!(state.effective.is_none());
        let status = written_status(&api);
        assert_eq!(
            (status.phase, status.reason.as_deref()),
            (Some(phase), Some(reason))
        );
        assert_eq!(status.run_id, Some(engines::run_id(&op)));
        let posted = api
            .seen()
            .iter()
            .filter(|s| s.method == Method::POST)
            .count();
        assert_eq!(posted, events, "{reason}: Events");
    }
}

#[tokio::test]
async fn templates_come_from_the_namespaces_current_annotation_never_from_a_clusters_status() {
    let granted =
        json!([{"name": "org-a", "allowedOperationTemplates": ["velero-namespace-backup"]}]);
    let recorded = json!([{"name": "org-a"}]);
    let backup = Some("velero-namespace-backup");
    // (case, the declaring Cluster's status list, the namespace, waits, allowed)
    type Case = (&'static str, Value, Option<Value>, bool, Vec<&'static str>);
    let cases: [Case; 6] = [
        (
            "not recorded by any Cluster",
            json!([]),
            Some(namespace(true, backup)),
            true,
            vec![],
        ),
        (
            "recorded elsewhere only",
            json!([{"name": "org-b"}]),
            Some(namespace(true, backup)),
            true,
            vec![],
        ),
        (
            "granted by the annotation",
            recorded.clone(),
            Some(namespace(true, backup)),
            false,
            vec!["velero-namespace-backup"],
        ),
        // The status still lists it (a pass that stopped early): the annotation revoked it.
        (
            "revoked on the namespace",
            granted.clone(),
            Some(namespace(true, None)),
            false,
            vec![],
        ),
        (
            "namespace no longer managed",
            granted.clone(),
            Some(namespace(false, backup)),
            true,
            vec![],
        ),
        ("namespace gone", granted, None, true, vec![]),
    ];
    for (case, managed, live_namespace, waits, allowed) in cases {
        let api = FakeApi::new();
        let op = operation(Value::Null);
        status_route(&api, &op);
        if let Some(ns) = live_namespace {
            api.get("/api/v1/namespaces/org-a", ns);
        }
        let ctx = context(&api);
        let mut state = judged(&op, vec![cluster(managed)]);
        let flow = Step::CheckNamespaceRecorded
            .run(&ctx, &op, &mut state)
            .await
            .expect("step");
        assert_eq!(done(flow).is_some(), waits, "{case}");
        if waits {
            let status = written_status(&api);
            assert_eq!(
                status.reason.as_deref(),
                Some(WAITING_FOR_NAMESPACE),
                "{case}"
            );
            assert_eq!(status.phase, Some(OperationPhase::Pending), "{case}");
        } else {
            assert_eq!(state.allowed, allowed, "{case}");
            assert!(api.writes().is_empty(), "{case}");
        }
    }
}

#[tokio::test]
async fn a_cluster_that_does_not_declare_the_operation_grants_nothing() {
    // Another Cluster (whose pass may have stopped early) lists the namespace and the template; the
    // declaring Cluster has not recorded the namespace: the run waits, nothing is created.
    let api = FakeApi::new();
    let op = operation(Value::Null);
    status_route(&api, &op);
    api.get(
        "/api/v1/namespaces/org-a",
        namespace(true, Some("velero-namespace-backup")),
    );
    let ctx = context(&api);
    let other: Arc<Cluster> = {
        let mut c = (*cluster(
            json!([{"name": "org-a", "allowedOperationTemplates": ["velero-namespace-backup"]}]),
        ))
        .clone();
        c.spec.cluster_id = "staging".into();
        Arc::new(c)
    };
    let mut state = judged(&op, vec![other, cluster(json!([]))]);
    let flow = Step::CheckNamespaceRecorded
        .run(&ctx, &op, &mut state)
        .await
        .expect("step");
    assert!(done(flow).is_some());
    assert_eq!(
        written_status(&api).reason.as_deref(),
        Some(WAITING_FOR_NAMESPACE)
    );
}

#[tokio::test]
async fn a_template_revoked_on_the_namespace_stops_the_next_run_and_creates_nothing() {
    let api = FakeApi::new();
    let op = operation(Value::Null);
    status_route(&api, &op);
    api.get("/api/v1/namespaces/org-a", namespace(true, Some("pg-dump")));
    let ctx = context(&api);
    let granted =
        json!([{"name": "org-a", "allowedOperationTemplates": ["velero-namespace-backup"]}]);
    let mut state = judged(&op, vec![cluster(granted)]);
    let mut ended = None;
    for step in [
        Step::CheckNamespaceRecorded,
        Step::CheckTemplate,
        Step::BuildChild,
        Step::EnsureChild,
    ] {
        if let Flow::Done(action) = step.run(&ctx, &op, &mut state).await.expect("step") {
            ended = Some((step, action));
            break;
        }
    }
    assert_eq!(
        ended,
        Some((
            Step::CheckTemplate,
            Action::requeue(Duration::from_secs(300))
        ))
    );
    let status = written_status(&api);
    assert_eq!(status.reason.as_deref(), Some(reason::TEMPLATE_NOT_ALLOWED));
    assert_eq!(status.phase, Some(OperationPhase::Failed));
    assert!(
        api.seen()
            .iter()
            .all(|s| s.method != Method::POST && !s.path.contains("velero.io")),
        "no child is created or read: {:?}",
        api.writes()
    );
}

#[tokio::test]
async fn a_template_the_namespace_does_not_allow_fails_the_run_until_it_is_allowed() {
    for (allowed, refused) in [
        (vec![], true),
        (vec!["velero-namespace-backup".to_owned()], false),
    ] {
        let api = FakeApi::new();
        let op = operation(Value::Null);
        status_route(&api, &op);
        let ctx = context(&api);
        let mut state = judged(&op, vec![]);
        state.allowed = allowed;
        let flow = Step::CheckTemplate
            .run(&ctx, &op, &mut state)
            .await
            .expect("step");
        if refused {
            assert_eq!(done(flow), Some(Action::requeue(Duration::from_secs(300))));
            let status = written_status(&api);
            assert_eq!(status.reason.as_deref(), Some(reason::TEMPLATE_NOT_ALLOWED));
            assert!(is_refusal(status.reason.as_deref()), "judged again later");
        } else {
            assert!(done(flow).is_none());
            assert!(api.writes().is_empty());
        }
    }
}

#[tokio::test]
async fn a_backup_is_created_once_followed_and_named_in_the_outputs() {
    let api = FakeApi::new();
    let op = operation(Value::Null);
    status_route(&api, &op);
    let ctx = context(&api);
    let mut state = judged(&op, vec![]);
    for step in [Step::BuildChild, Step::EnsureChild, Step::FindLogs] {
        let flow = step.run(&ctx, &op, &mut state).await.expect("step");
        assert!(done(flow).is_none(), "{step:?}");
    }
    let child = state.child.as_ref().expect("built");
    assert_eq!(child.kind, "Backup");
    assert_eq!(child.namespace, "velero");
    assert_eq!(
        api.writes(),
        [format!(
            "PATCH /apis/velero.io/v1/namespaces/velero/backups/{}",
            child.name
        )]
    );
    assert_eq!(state.logs_ref, None, "a Backup has no pod of ours");
    let action = summarize(&ctx, &state).await.expect("summarized");
    let status = written_status(&api);
    assert_eq!(status.run_id, Some(engines::run_id(&op)));
    let outputs = status.outputs.expect("outputs");
    assert_eq!(outputs.backup_name.as_deref(), Some(child.name.as_str()));
    let final_phase = engines::is_final(status.phase);
    assert_eq!(
        action,
        if final_phase {
            Action::await_change()
        } else {
            Action::requeue(Duration::from_secs(15))
        }
    );
}

#[tokio::test]
async fn the_steps_refuse_to_run_before_the_steps_they_need() {
    let api = FakeApi::new();
    let ctx = context(&api);
    let op = operation(Value::Null);
    for step in [
        Step::CheckNamespaceRecorded,
        Step::CheckTemplate,
        Step::BuildChild,
        Step::EnsureChild,
        Step::FindLogs,
    ] {
        let mut state = OperationState::new(now());
        let error = step
            .run(&ctx, &op, &mut state)
            .await
            .expect_err("out of order");
        assert_eq!(error.reason(), reason::CONFIGURATION_INVALID, "{step:?}");
    }
    assert!(summarize(&ctx, &OperationState::new(now())).await.is_err());
    assert!(api.seen().is_empty());
}
