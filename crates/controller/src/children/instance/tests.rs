//! One test per step of an instance's reconcile, against the scripted API of [`crate::testing`].

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::children::Caches;
use crate::metrics::Metrics;
use crate::testing::FakeApi;
use vworkspace_core::plan::declared::DeclaredSet;
use vworkspace_core::reasons as reason;

const INSTANCE: &str =
    "/apis/apps.vworkspace.io/v1alpha1/namespaces/org-a/applicationinstances/web";
const NAMESPACE: &str = "/api/v1/namespaces/org-a";
const CLUSTERS: &str = "/apis/ops.vworkspace.io/v1alpha1/clusters";

fn instance(values: Value) -> ApplicationInstance {
    serde_json::from_value(json!({
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": "web", "namespace": "org-a", "uid": "u-1", "generation": 2,
                     "labels": {"gitops.vworkspace.io/cluster": "prod"}},
        "spec": {"chart": {"repository": "https://charts.example.org/", "name": "web", "version": "1.0.0"},
                 "values": values},
    }))
    .expect("an ApplicationInstance")
}

fn context(api: &Arc<FakeApi>) -> ChildContext {
    ChildContext {
        client: api.client(),
        namespace: "vworkspace-system".into(),
        velero_namespace: "velero".into(),
        limits: vworkspace_core::limits::Limits::default(),
        clock: || jiff::Timestamp::from_second(1_000).expect("time"),
        declared: Arc::new(DeclaredSet::default()),
        metrics: Arc::new(Metrics::default()),
        caches: Caches::default(),
        access_lost: Default::default(),
    }
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_000).expect("time")
}

fn cluster_json() -> Value {
    json!({
        "apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "prod"},
        "spec": {
            "clusterId": "prod",
            "source": {"url": "https://git.example.org/i.git", "ref": {"branch": "main"}, "interval": "5m"},
            "commitSigners": {"configMapRef": {"name": "commit-signers"}},
            "release": {"signersConfigMapRef": {"name": "release-signers"}, "threshold": 1},
            "decryption": {"identitySecretRef": {"name": "age", "key": "identity.agekey"}}
        }
    })
}

/// A release of `prod` that declares nothing (what an empty plan publishes).
fn empty_release(declared: &DeclaredSet) -> Arc<DeclaredRelease> {
    let cluster: vworkspace_core::crd::Cluster =
        serde_json::from_value(cluster_json()).expect("a Cluster");
    declared.publish(
        &cluster.spec,
        3,
        "c0ffee",
        &vworkspace_core::plan::Plan::default(),
        &[],
    );
    declared.release("prod").expect("published")
}

/// The state after `JudgeDeclared` for `instance`, declared by `release` as it is live.
fn judged(
    instance: &ApplicationInstance,
    release: Arc<DeclaredRelease>,
    altered: bool,
) -> InstanceState {
    let mut state = InstanceState::new(now());
    state.judged = Some(Judged {
        release,
        declared: DeclaredObject {
            object: vworkspace_core::compact::Compact::new(instance).expect("compact"),
            digest: "sha256:00".into(),
            spec: vworkspace_core::spec_digest::SpecDigest::of_spec(&instance.spec),
        },
        altered,
        effective: Arc::new(instance.clone()),
    });
    state
}

/// Answers the status write of the instance with the instance.
fn status_route(api: &Arc<FakeApi>, instance: &ApplicationInstance) {
    api.route(
        Method::PATCH,
        &format!("{INSTANCE}/status"),
        200,
        serde_json::to_value(instance).expect("json"),
    );
}

fn ready_of(body: &Value) -> (String, String) {
    let ready = &body["status"]["conditions"][0];
    (
        ready["status"].as_str().unwrap_or_default().to_owned(),
        ready["reason"].as_str().unwrap_or_default().to_owned(),
    )
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
        (Step::JudgeDeclared, Step::CheckManaged),
        (Step::DecryptValues, Step::JudgeDeclared),
        (Step::BuildChildren, Step::DecryptValues),
        // Nothing is written when a child cannot be built; the Secret before the HelmRelease.
        (Step::EnsureValuesSecret, Step::BuildChildren),
        (Step::EnsureHelmRelease, Step::EnsureValuesSecret),
        (Step::EnsureHelmRelease, Step::EnsureSource),
    ] {
        assert!(at(before) < at(step), "{before:?} must run before {step:?}");
    }
}

#[tokio::test]
async fn check_managed_stops_at_a_deleted_instance_and_an_unmanaged_namespace() {
    let mut deleted = instance(json!({}));
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    let labelled = json!({"metadata": {"name": "org-a", "labels": {"app.vworkspace.io/managed-by": "vworkspace"}}});
    let cases = [
        ("being deleted", deleted, None, Some(Action::await_change())),
        (
            "namespace not labelled",
            instance(json!({})),
            Some(json!({"metadata": {"name": "org-a"}})),
            Some(Action::requeue(Duration::from_secs(300))),
        ),
        ("managed", instance(json!({})), Some(labelled), None),
    ];
    for (name, object, namespace, expected) in cases {
        let api = FakeApi::new();
        if let Some(ns) = namespace {
            api.get(NAMESPACE, ns);
        }
        let ctx = context(&api);
        let mut state = InstanceState::new(now());
        let flow = Step::CheckManaged
            .run(&ctx, &WatchedInstance::of(&object), &mut state)
            .await
            .expect(name);
        assert_eq!(done(flow), expected, "{name}");
        assert!(api.writes().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn judge_declared_waits_for_a_release_and_refuses_what_none_declares() {
    // No Cluster: waiting (Unknown, no Event). A Cluster whose release declares nothing: refused
    // (False, counted, one Event).
    for (clusters, publish, status, reason, requeue, events) in [
        (vec![], false, "Unknown", reason::WAITING_FOR_RELEASE, 15, 0),
        (
            vec![cluster_json()],
            true,
            "False",
            reason::NOT_DECLARED,
            60,
            1,
        ),
    ] {
        let api = FakeApi::new();
        let object = instance(json!({}));
        api.get(
            CLUSTERS,
            json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "ClusterList",
                                "metadata": {}, "items": clusters}),
        );
        status_route(&api, &object);
        let ctx = context(&api);
        if publish {
            empty_release(&ctx.declared);
        }
        let mut state = InstanceState::new(now());
        let flow = Step::JudgeDeclared
            .run(&ctx, &WatchedInstance::of(&object), &mut state)
            .await
            .expect("judged");
        assert_eq!(
            done(flow),
            Some(Action::requeue(Duration::from_secs(requeue))),
            "{reason}"
        );
        assert!(state.judged.is_none());
        let seen = api.seen();
        let written = seen
            .iter()
            .find(|s| s.method == Method::PATCH)
            .expect("a status write");
        assert_eq!(
            ready_of(&written.body),
            (status.to_owned(), reason.to_owned())
        );
        let posted = seen.iter().filter(|s| s.method == Method::POST).count();
        assert_eq!(posted, events, "{reason}: Events");
    }
}

#[tokio::test]
async fn decrypt_values_splits_the_declared_values_and_refuses_one_that_does_not_decrypt() {
    let (identity, _) = vworkspace_core::secrets::generate();
    let not_age =
        "-----BEGIN AGE ENCRYPTED FILE-----\nbm90IGFnZQ==\n-----END AGE ENCRYPTED FILE-----\n";
    for (values, refused) in [
        (json!({"replicas": 2}), false),
        (json!({"password": not_age}), true),
    ] {
        let api = FakeApi::new();
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD.encode(identity.expose());
        api.get(
            "/api/v1/namespaces/vworkspace-system/secrets/age",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "age", "resourceVersion": "1"},
                   "data": {"identity.agekey": key}}),
        );
        let object = instance(values.clone());
        status_route(&api, &object);
        let ctx = context(&api);
        let mut state = judged(&object, empty_release(&ctx.declared), false);
        let flow = Step::DecryptValues
            .run(&ctx, &WatchedInstance::of(&object), &mut state)
            .await
            .expect("decrypt");
        if refused {
            assert_eq!(done(flow), Some(Action::requeue(Duration::from_secs(300))));
            let write = api
                .seen()
                .into_iter()
                .find(|s| s.method == Method::PATCH)
                .expect("status");
            assert_eq!(
                ready_of(&write.body),
                ("False".into(), VALUES_NOT_DECRYPTED.into())
            );
            assert!(
                !write.body.to_string().contains("BEGIN AGE"),
                "no value in the status"
            );
            assert!(state.values.is_none());
        } else {
            assert!(done(flow).is_none());
            let split = state.values.as_ref().expect("split");
            assert_eq!(split.inline, values);
            assert!(split.secret.is_none());
            assert!(api.writes().is_empty());
        }
    }
}

#[tokio::test]
async fn the_steps_refuse_to_run_before_the_steps_they_need() {
    let api = FakeApi::new();
    let ctx = context(&api);
    let object = instance(json!({}));
    for step in [
        Step::DecryptValues,
        Step::BuildChildren,
        Step::EnsureValuesSecret,
        Step::EnsureSource,
        Step::EnsureHelmRelease,
    ] {
        let mut state = InstanceState::new(now());
        let error = step
            .run(&ctx, &WatchedInstance::of(&object), &mut state)
            .await
            .expect_err("out of order");
        assert_eq!(error.reason(), reason::CONFIGURATION_INVALID, "{step:?}");
    }
    assert!(summarize(&ctx, &InstanceState::new(now())).await.is_err());
    assert!(api.seen().is_empty());
}

/// Runs the build and write steps on a judged, decrypted instance; the writes, in order.
async fn build_and_write(api: &Arc<FakeApi>, secret: Option<&str>) -> (InstanceState, Vec<String>) {
    build_and_write_to(api, secret, instance(json!({"replicas": 2}))).await
}

/// [`build_and_write`] for `object`.
async fn build_and_write_to(
    api: &Arc<FakeApi>,
    secret: Option<&str>,
    object: ApplicationInstance,
) -> (InstanceState, Vec<String>) {
    let ctx = context(api);
    let mut state = judged(&object, empty_release(&ctx.declared), false);
    state.values = Some(crate::children::flux::SplitValues {
        inline: json!({"replicas": 2}),
        secret: secret.map(|s| zeroize::Zeroizing::new(s.as_bytes().to_vec())),
    });
    for step in [
        Step::BuildChildren,
        Step::EnsureValuesSecret,
        Step::EnsureSource,
        Step::EnsureHelmRelease,
    ] {
        let flow = step
            .run(&ctx, &WatchedInstance::of(&object), &mut state)
            .await
            .expect("step");
        assert!(done(flow).is_none(), "{step:?}");
    }
    (state, api.writes())
}

#[tokio::test]
async fn the_children_are_written_secret_first_and_ready_waits_for_the_helm_release() {
    let api = FakeApi::new();
    let (state, writes) = build_and_write(&api, Some("{\"password\":\"x\"}")).await;
    assert_eq!(
        writes,
        [
            "PATCH /api/v1/namespaces/org-a/secrets/web-values",
            "PATCH /apis/source.toolkit.fluxcd.io/v1/namespaces/org-a/helmrepositories/web",
            "PATCH /apis/helm.toolkit.fluxcd.io/v2/namespaces/org-a/helmreleases/web",
        ]
    );
    assert!(
        state.values.is_none(),
        "the plaintext is dropped once written"
    );
    let children = state.children.as_ref().expect("built");
    assert_eq!(children.source_plural, "helmrepositories");
    assert_eq!(
        state.ready,
        Some((
            "Unknown".into(),
            reason::WAITING_FOR_HELM_RELEASE.into(),
            "the HelmRelease has not reported yet".into()
        ))
    );

    // Nothing secret: no Secret is written (none of ours exists to delete).
    let api = FakeApi::new();
    let (_, writes) = build_and_write(&api, None).await;
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes.iter().all(|w| !w.contains("/secrets/")));
}

#[tokio::test]
async fn children_never_written_are_written_unread_and_checked_from_the_answer() {
    const SOURCE: &str = "/apis/source.toolkit.fluxcd.io/v1/namespaces/org-a/helmrepositories/web";
    let reads = |api: &Arc<FakeApi>| -> Vec<String> {
        api.seen()
            .iter()
            .filter(|s| s.method == Method::GET)
            .map(|s| s.path.clone())
            .collect()
    };
    // Children never written (the status names no HelmRelease): no read before the three applies.
    let api = FakeApi::new();
    let (_, writes) = build_and_write(&api, Some("{\"password\":\"x\"}")).await;
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert_eq!(reads(&api), Vec::<String>::new());

    // A status written before the children were (waiting for the release) changes nothing.
    let mut waited = instance(json!({"replicas": 2}));
    waited.status = Some(serde_json::from_value(json!({"observedGeneration": 2})).expect("status"));
    let api = FakeApi::new();
    build_and_write_to(&api, Some("{\"password\":\"x\"}"), waited).await;
    assert_eq!(reads(&api), Vec::<String>::new());

    // Written before: each child is read first (an unchanged child is not written).
    let mut reconciled = instance(json!({"replicas": 2}));
    reconciled.status = Some(
        serde_json::from_value(json!({"observedGeneration": 2, "helmReleaseRef": "org-a/web"}))
            .expect("status"),
    );
    let api = FakeApi::new();
    build_and_write_to(&api, Some("{\"password\":\"x\"}"), reconciled).await;
    assert_eq!(reads(&api).len(), 3, "{:?}", reads(&api));

    // Believed absent but there, with a field another writer added: the apply's answer shows it
    // and it is removed, as after a read.
    let api = FakeApi::new();
    api.route(
        Method::PATCH,
        SOURCE,
        200,
        json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
               "metadata": {"name": "web", "namespace": "org-a", "managedFields": [
                   {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "source.toolkit.fluxcd.io/v1",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:suspend": {}}}}]},
               "spec": {"url": "https://charts.example.org/", "interval": "10m", "suspend": true}}),
    );
    let (state, writes) = build_and_write(&api, None).await;
    let patches: Vec<_> = api
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::PATCH && s.path == SOURCE)
        .collect();
    assert_eq!(patches.len(), 2, "the apply, then the removal: {writes:?}");
    assert!(
        patches[1].body["spec"]
            .as_object()
            .is_some_and(|spec| spec.get("suspend") == Some(&Value::Null)),
        "a merge patch setting the field to null: {:?}",
        patches[1].body
    );
    assert!(
        state
            .removed
            .iter()
            .any(|r| r.contains("HelmRepository") && r.contains("suspend")),
        "{:?}",
        state.removed
    );
}

#[tokio::test]
async fn summarize_mirrors_ready_or_refuses_an_altered_spec() {
    for (altered, ready, reason, requeue) in [
        (
            false,
            "True",
            "Succeeded",
            Some(crate::children::RESYNC_WITH_WATCH),
        ),
        (
            false,
            "False",
            "InstallFailed",
            Some(crate::children::POLL_WITHOUT_WATCH),
        ),
        (
            true,
            "True",
            reason::SPEC_DIFFERS,
            Some(Duration::from_secs(60)),
        ),
    ] {
        let api = FakeApi::new();
        let object = instance(json!({}));
        status_route(&api, &object);
        let ctx = context(&api);
        let mut state = judged(&object, empty_release(&ctx.declared), altered);
        state.ready = Some((ready.into(), reason.into(), "message".into()));
        let action = summarize(&ctx, &state).await.expect("summarized");
        assert_eq!(Some(action), requeue.map(Action::requeue), "{reason}");
        let seen = api.seen();
        let write = seen
            .iter()
            .find(|s| s.method == Method::PATCH)
            .expect("status");
        let expected = if altered { "False" } else { ready };
        assert_eq!(
            ready_of(&write.body),
            (expected.to_owned(), reason.to_owned())
        );
        let events = seen.iter().filter(|s| s.method == Method::POST).count();
        assert_eq!(events, usize::from(altered), "{reason}");
    }
}

#[test]
fn watched_instances_are_resynced_rarely_unwatched_ones_polled_until_ready() {
    for ready in [true, false] {
        let next = next_look(ready, true);
        assert!(
            next >= crate::children::RESYNC_WITH_WATCH.mul_f64(0.9)
                && next <= crate::children::RESYNC_WITH_WATCH.mul_f64(1.1),
            "{next:?}"
        );
    }
    assert_eq!(next_look(false, false), crate::children::POLL_WITHOUT_WATCH);
    assert_eq!(next_look(true, false), crate::children::RESYNC_WITH_WATCH);
}

/// A HelmRelease write refused by RBAC (the operator's RoleBinding in the namespace deleted) is
/// reported for the `Cluster` pass to check that namespace's RBAC again; an admission denial is not.
#[tokio::test]
async fn a_write_refused_for_lack_of_rights_reports_the_namespace() {
    let path = "/apis/helm.toolkit.fluxcd.io/v2/namespaces/org-a/helmreleases/web";
    for (message, reported) in [
        (
            "helmreleases.helm.toolkit.fluxcd.io \"web\" is forbidden: User \"system:serviceaccount:vworkspace-system:vworkspace-app-operator\" cannot patch resource \"helmreleases\" in API group \"helm.toolkit.fluxcd.io\" in the namespace \"org-a\"",
            true,
        ),
        (
            "helmreleases.helm.toolkit.fluxcd.io \"web\" is forbidden: ValidatingAdmissionPolicy 'x' with binding 'x' denied request: no",
            false,
        ),
    ] {
        let api = FakeApi::new();
        api.route(
            Method::PATCH,
            path,
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
                   "message": message, "code": 403}),
        );
        let ctx = Arc::new(context(&api));
        let object = instance(json!({"replicas": 2}));
        let mut state = judged(&object, empty_release(&ctx.declared), false);
        state.values = Some(crate::children::flux::SplitValues {
            inline: json!({"replicas": 2}),
            secret: None,
        });
        let mut error = None;
        for step in [
            Step::BuildChildren,
            Step::EnsureValuesSecret,
            Step::EnsureSource,
            Step::EnsureHelmRelease,
        ] {
            if let Err(e) = step
                .run(&ctx, &WatchedInstance::of(&object), &mut state)
                .await
            {
                error = Some(e);
                break;
            }
        }
        let error = error.expect("the HelmRelease write fails");
        assert!(error.to_string().contains("helmreleases"), "{error}");
        super::error_policy(Arc::new(WatchedInstance::of(&object)), &error, ctx.clone());
        let taken = ctx.access_lost.take(["org-a", "org-b"]);
        assert_eq!(taken.len(), usize::from(reported), "{message}: {taken:?}");
    }
}
