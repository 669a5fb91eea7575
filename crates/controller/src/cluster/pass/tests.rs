//! One test (table-driven where it fits) per step of the pass, against the scripted API of
//! [`crate::testing`]. The steps that need a verified release (`CheckSerialFloor`, `ReuseUnchanged`,
//! `ReadLive`, `Publish`) are tested here through their pure parts and their refusal to run out of
//! order; with a real signed repository they run in tests/it/reconcile.rs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};

use super::write::{UnchangedPass, Written, partial, unchanged_since};
use super::*;
use crate::cluster::{RBAC_RECHECK, Settings, conditions::StepOutcome};
use crate::metrics::Metrics;
use crate::testing::{FakeApi, status_body};
use vworkspace_core::crd::{InventoryEntry, ManagedNamespace};
use vworkspace_core::plan::diff::{Changes, Conflict, Skip};
use vworkspace_core::reasons as reason;

const NS: &str = "vworkspace-system";
const SIGNERS: &str = "alice@example.org namespaces=\"git,vworkspace-release\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA3PTvblIWKOyDZYa+9HDbQgKY4Vu0sPlxw1bGFjcS2i\n";
const CONFIG_MAPS: &str = "/api/v1/namespaces/vworkspace-system/configmaps";
const SECRETS: &str = "/api/v1/namespaces/vworkspace-system/secrets";
const STATUS: &str = "/apis/ops.vworkspace.io/v1alpha1/clusters/prod/status";

fn cluster(status: Value) -> Cluster {
    serde_json::from_value(json!({
        "apiVersion": "ops.vworkspace.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "prod", "generation": 1},
        "spec": {
            "clusterId": "prod",
            "source": {"url": "file:///nonexistent/intent.git", "ref": {"branch": "main"}, "interval": "5m"},
            "commitSigners": {"configMapRef": {"name": "commit-signers"}},
            "release": {"signersConfigMapRef": {"name": "release-signers"}, "threshold": 1},
            "decryption": {"identitySecretRef": {"name": "age", "key": "identity.agekey"}}
        },
        "status": status,
    }))
    .expect("a Cluster")
}

fn context(api: &Arc<FakeApi>) -> Context {
    let settings = Settings {
        namespace: NS.into(),
        cache_dir: std::env::temp_dir().join(format!("vws-pass-test-{}", std::process::id())),
        fetch: crate::source::FetchOptions::default(),
        limits: vworkspace_core::limits::Limits::default(),
        pass_timeout: Duration::from_secs(30),
    };
    Context::new(api.client(), settings, Arc::new(Metrics::default()))
}

fn managed(names: &[&str]) -> Vec<ManagedNamespace> {
    names
        .iter()
        .map(|n| ManagedNamespace {
            name: (*n).into(),
            allowed_operation_templates: vec![],
        })
        .collect()
}

fn entry(namespace: &str, name: &str) -> InventoryEntry {
    InventoryEntry {
        api_version: "apps.vworkspace.io/v1alpha1".into(),
        kind: "ApplicationInstance".into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn reason_of(result: &StepResult) -> Option<&'static str> {
    match result {
        StepResult::Refused(e) => Some(e.reason()),
        StepResult::Failed(StepOutcome::Failed { reason, .. }) => Some(reason),
        _ => None,
    }
}

/// The trust inputs of [`cluster`], each one replaceable.
fn trust_inputs(api: &Arc<FakeApi>, commit_signers: Value, identity: Value) {
    let (secret_key, _recipient) = vworkspace_core::secrets::generate();
    let identity = if identity.is_null() {
        use base64::Engine;
        json!({"identity.agekey": base64::engine::general_purpose::STANDARD.encode(secret_key.expose())})
    } else {
        identity
    };
    api.get(
        &format!("{CONFIG_MAPS}/commit-signers"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "commit-signers"},
               "data": commit_signers}),
    );
    api.get(
        &format!("{CONFIG_MAPS}/release-signers"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "release-signers"},
               "data": {"allowed_signers": SIGNERS}}),
    );
    api.get(
        &format!("{SECRETS}/age"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "age"}, "data": identity}),
    );
}

#[test]
fn every_step_is_listed_once_after_the_steps_it_needs() {
    let at = |step: Step| STEPS.iter().position(|s| *s == step);
    // Exhaustive: a new step fails to compile here until it is placed.
    let all = |step: Step| match step {
        Step::ReadTrust
        | Step::FetchAndVerify
        | Step::CheckSerialFloor
        | Step::ReleaseNamespaces
        | Step::EnsureNamespaceRbac
        | Step::EnsureNamespaceGuardrails
        | Step::RecordNamespaces
        | Step::ReuseSettled
        | Step::ReuseUnchanged
        | Step::ReadLive
        | Step::Write
        | Step::Publish => at(step),
    };
    for step in STEPS {
        assert!(all(step).is_some());
        assert_eq!(STEPS.iter().filter(|s| **s == step).count(), 1, "{step:?}");
    }
    let needs = [
        (Step::FetchAndVerify, Step::ReadTrust),
        (Step::CheckSerialFloor, Step::FetchAndVerify),
        (Step::EnsureNamespaceRbac, Step::ReleaseNamespaces),
        (Step::RecordNamespaces, Step::ReleaseNamespaces),
        // The namespace's RoleBinding holds the right to write its NetworkPolicies.
        (Step::EnsureNamespaceGuardrails, Step::EnsureNamespaceRbac),
        (Step::EnsureNamespaceGuardrails, Step::ReleaseNamespaces),
        (Step::ReuseUnchanged, Step::RecordNamespaces),
        // The record's key holds the managed namespaces as recorded.
        (Step::ReuseSettled, Step::RecordNamespaces),
        (Step::ReuseSettled, Step::CheckSerialFloor),
        // A pending release is parsed before anything plans from it.
        (Step::ReuseUnchanged, Step::ReuseSettled),
        (Step::ReadLive, Step::ReuseSettled),
        (Step::ReadLive, Step::CheckSerialFloor),
        (Step::Write, Step::ReadLive),
        (Step::Publish, Step::Write),
    ];
    for (step, before) in needs {
        assert!(at(before) < at(step), "{before:?} must run before {step:?}");
    }
    // Nothing is written to the cluster's objects before the source is verified and the floor held.
    assert!(at(Step::CheckSerialFloor) < at(Step::Write));
}

#[tokio::test]
async fn read_trust_refuses_missing_or_unusable_inputs_and_publishes_the_recipients() {
    struct Case {
        name: &'static str,
        commit_signers: Option<Value>,
        identity: Value,
        reason: Option<&'static str>,
        names: &'static str,
    }
    let cases = [
        Case {
            name: "no ConfigMap",
            commit_signers: None,
            identity: Value::Null,
            reason: Some(reason::API_REQUEST_FAILED),
            names: "ConfigMap vworkspace-system/commit-signers",
        },
        Case {
            name: "no key",
            commit_signers: Some(json!({"other": "x"})),
            identity: Value::Null,
            reason: Some(reason::CONFIGURATION_INVALID),
            names: "key allowed_signers",
        },
        Case {
            name: "identity missing its key",
            commit_signers: Some(json!({"allowed_signers": SIGNERS})),
            identity: json!({"other": "eA=="}),
            reason: Some(reason::CONFIGURATION_INVALID),
            names: "Secret vworkspace-system/age key identity.agekey",
        },
        Case {
            name: "all good",
            commit_signers: Some(json!({"allowed_signers": SIGNERS})),
            identity: Value::Null,
            reason: None,
            names: "",
        },
    ];
    for case in cases {
        let api = FakeApi::new();
        if let Some(signers) = case.commit_signers {
            trust_inputs(&api, signers, case.identity);
        }
        let ctx = context(&api);
        let progress = apply::Progress::default();
        let mut state = PassState::new("prod".into(), &progress);
        let result = Step::ReadTrust
            .run(&ctx, &cluster(Value::Null), &mut state)
            .await;
        assert_eq!(reason_of(&result), case.reason, "{}", case.name);
        match result {
            StepResult::Refused(e) => {
                assert!(e.to_string().contains(case.names), "{}: {e}", case.name);
                assert!(state.trust.is_none() && state.recipients.is_none());
            }
            StepResult::Next => {
                assert!(state.trust.is_some(), "{}", case.name);
                let recipients = state.recipients.clone().unwrap_or_default();
                assert_eq!(recipients.len(), 1, "{}", case.name);
                assert!(recipients[0].starts_with("age1"));
            }
            other => panic!("{}: {other:?}", case.name),
        }
        assert!(
            api.writes().is_empty(),
            "{}: reading trust writes nothing",
            case.name
        );
    }
}

#[tokio::test]
async fn fetch_and_verify_refuses_an_unreachable_source_and_needs_the_trust() {
    let api = FakeApi::new();
    trust_inputs(&api, json!({"allowed_signers": SIGNERS}), Value::Null);
    let ctx = context(&api);
    let progress = apply::Progress::default();
    let cluster = cluster(Value::Null);
    let mut state = PassState::new("prod".into(), &progress);
    let out_of_order = Step::FetchAndVerify.run(&ctx, &cluster, &mut state).await;
    assert_eq!(
        reason_of(&out_of_order),
        Some(reason::CONFIGURATION_INVALID)
    );
    assert!(matches!(
        Step::ReadTrust.run(&ctx, &cluster, &mut state).await,
        StepResult::Next
    ));
    let result = Step::FetchAndVerify.run(&ctx, &cluster, &mut state).await;
    assert_eq!(reason_of(&result), Some(reason::FETCH_FAILED));
    assert!(state.verified.is_none() && state.attempted_commit.is_none());
    assert!(
        !progress.fetching(),
        "the fetch flag is cleared after the fetch"
    );
    assert!(
        state.prefetched_live.is_none(),
        "a failed fetch lists nothing"
    );
}

#[test]
fn the_live_objects_are_listed_during_verification_only_for_the_commit_applied_last_without_stores()
{
    let applied = "0123456789abcdef0123456789abcdef01234567";
    let cases = [
        // (watch stores, status's last applied commit, fetched commit, listed while verifying)
        (false, Some(applied), applied, true),
        (
            false,
            Some(&applied.to_ascii_uppercase()[..]),
            applied,
            true,
        ),
        (
            false,
            Some(applied),
            "ffffffffffffffffffffffffffffffffffffffff",
            false,
        ),
        (false, None, applied, false),
        (true, Some(applied), applied, false),
    ];
    for (stores, last_applied, fetched, listed) in cases {
        assert_eq!(
            super::source::lists_while_verifying(stores, last_applied, fetched),
            listed,
            "stores {stores}, last applied {last_applied:?}, fetched {fetched}"
        );
    }
}

#[tokio::test]
async fn the_steps_after_verification_refuse_to_run_without_it() {
    let api = FakeApi::new();
    let ctx = context(&api);
    let progress = apply::Progress::default();
    let cluster = cluster(Value::Null);
    for step in [
        Step::CheckSerialFloor,
        Step::ReuseUnchanged,
        Step::ReadLive,
        Step::Write,
        Step::Publish,
    ] {
        let mut state = PassState::new("prod".into(), &progress);
        let result = step.run(&ctx, &cluster, &mut state).await;
        assert_eq!(
            reason_of(&result),
            Some(reason::CONFIGURATION_INVALID),
            "{step:?}"
        );
        assert!(api.seen().is_empty(), "{step:?} sent a request");
    }
}

#[tokio::test]
async fn release_namespaces_releases_those_that_lost_the_label() {
    struct Case {
        name: &'static str,
        live: &'static [&'static str],
        fault: Option<(Method, &'static str, u16)>,
        reason: Option<&'static str>,
        deletes: usize,
    }
    let cases = [
        Case {
            name: "unchanged",
            live: &["org-a", "org-b"],
            fault: None,
            reason: None,
            deletes: 0,
        },
        Case {
            name: "org-b lost the label",
            live: &["org-a"],
            fault: None,
            reason: None,
            deletes: 3,
        },
        Case {
            name: "the list fails",
            live: &[],
            fault: Some((Method::GET, "/api/v1/namespaces", 500)),
            reason: Some(reason::API_REQUEST_FAILED),
            deletes: 0,
        },
        Case {
            name: "a delete is forbidden",
            live: &["org-a"],
            fault: Some((
                Method::DELETE,
                "/apis/rbac.authorization.k8s.io/v1/namespaces/org-b/rolebindings/vworkspace-app-operator",
                403,
            )),
            reason: Some(reason::API_REQUEST_FAILED),
            deletes: 1,
        },
    ];
    for case in cases {
        let api = FakeApi::new();
        if let Some((method, path, code)) = &case.fault {
            api.route(method.clone(), path, *code, status_body(*code, "Scripted"));
        }
        let items: Vec<Value> = case
            .live
            .iter()
            .map(|n| json!({"metadata": {"name": n, "labels": {"app.vworkspace.io/managed-by": "vworkspace"}}}))
            .collect();
        api.get(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {}, "items": items}),
        );
        let ctx = context(&api);
        ctx.with_state("prod", |s| {
            s.namespaces_ensured.insert("org-b".into(), Instant::now());
        });
        let progress = apply::Progress::default();
        let recorded = json!({"managedNamespaces": [{"name": "org-a"}, {"name": "org-b"}]});
        let mut state = PassState::new("prod".into(), &progress);
        let result = Step::ReleaseNamespaces
            .run(&ctx, &cluster(recorded), &mut state)
            .await;
        assert_eq!(reason_of(&result), case.reason, "{}", case.name);
        let deletes = api
            .writes()
            .iter()
            .filter(|w| w.starts_with("DELETE"))
            .count();
        assert_eq!(deletes, case.deletes, "{}: {:?}", case.name, api.writes());
        if case.reason.is_none() {
            assert_eq!(state.managed, managed(case.live), "{}", case.name);
            let forgotten = !ctx.with_state("prod", |s| s.namespaces_ensured.contains_key("org-b"));
            assert_eq!(forgotten, case.deletes > 0, "{}", case.name);
        }
    }
}

#[test]
fn a_namespace_is_stale_when_its_rbac_was_not_checked_within_the_hour() {
    let now = Instant::now();
    let ns = managed(&["never", "recent", "old"]);
    let mut ensured = HashMap::new();
    ensured.insert("recent".to_owned(), now - Duration::from_secs(60));
    if let Some(old) = now.checked_sub(RBAC_RECHECK + Duration::from_secs(1)) {
        ensured.insert("old".to_owned(), old);
    }
    let stale = managed::stale(&ns, &ensured, now);
    assert!(stale.contains(&"never") && !stale.contains(&"recent"));
    // On a machine up for less than an hour `old` cannot be placed an hour back: then never checked.
    assert!(stale.contains(&"old"));
}

#[tokio::test]
async fn ensure_namespace_rbac_writes_each_stale_namespace_once_per_recheck() {
    let api = FakeApi::new();
    let ctx = context(&api);
    let progress = apply::Progress::default();
    let cluster = cluster(Value::Null);
    let mut state = PassState::new("prod".into(), &progress);
    state.managed = managed(&["org-a"]);
    let result = Step::EnsureNamespaceRbac
        .run(&ctx, &cluster, &mut state)
        .await;
    assert!(matches!(result, StepResult::Next), "{result:?}");
    let writes = api.writes();
    assert!(
        writes
            .iter()
            .any(|w| w
                == "PATCH /api/v1/namespaces/org-a/serviceaccounts/vworkspace-operation-runner")
            && writes.iter().all(|w| w.contains("/namespaces/org-a/")),
        "{writes:?}"
    );
    let first = api.seen().len();
    let again = Step::EnsureNamespaceRbac
        .run(&ctx, &cluster, &mut state)
        .await;
    assert!(matches!(again, StepResult::Next));
    assert_eq!(
        api.seen().len(),
        first,
        "checked within the hour: not read again"
    );
    // A child controller refused for lack of rights in org-a (and in org-z, another Cluster's):
    // org-a is checked again now, within the hour; org-z stays for the Cluster that manages it.
    assert!(ctx.access_lost.report("org-a", Instant::now()));
    assert!(ctx.access_lost.report("org-z", Instant::now()));
    let refused = Step::EnsureNamespaceRbac
        .run(&ctx, &cluster, &mut state)
        .await;
    assert!(matches!(refused, StepResult::Next), "{refused:?}");
    let rechecked: Vec<String> = api.writes().into_iter().skip(writes.len()).collect();
    assert_eq!(
        rechecked, writes,
        "org-a's RBAC written again, in the same order"
    );
    assert_eq!(ctx.access_lost.take(["org-a", "org-z"]), ["org-z"]);

    let failing = FakeApi::new();
    failing.route(
        Method::PATCH,
        "/api/v1/namespaces/org-a/serviceaccounts/vworkspace-operation-runner",
        403,
        status_body(403, "Forbidden"),
    );
    let ctx = context(&failing);
    let result = Step::EnsureNamespaceRbac
        .run(&ctx, &cluster, &mut state)
        .await;
    assert_eq!(reason_of(&result), Some(reason::API_REQUEST_FAILED));
    assert!(!ctx.with_state("prod", |s| s.namespaces_ensured.contains_key("org-a")));
}

/// A restarted process (a fresh context) and the namespace `org-a`: taken as given when the status
/// records it with this version's RBAC digest; read back when the digest is another version's;
/// applied without reading when the status does not record it (new to the Cluster).
#[tokio::test]
async fn ensure_namespace_rbac_trusts_the_recorded_digest_reads_another_and_applies_the_new() {
    let digest = crate::cluster::rbac::digest();
    let recorded = json!({"managedNamespaces": [{"name": "org-a"}], "namespaceRbac": digest});
    let other = json!({"managedNamespaces": [{"name": "org-a"}], "namespaceRbac": "sha256:another-version"});
    for (status, gets, patches) in [(recorded, 0, 0), (other, 4, 4), (Value::Null, 0, 4)] {
        let api = FakeApi::new();
        let ctx = context(&api);
        let progress = apply::Progress::default();
        let mut state = PassState::new("prod".into(), &progress);
        state.managed = managed(&["org-a"]);
        let result = Step::EnsureNamespaceRbac
            .run(&ctx, &cluster(status.clone()), &mut state)
            .await;
        assert!(matches!(result, StepResult::Next), "{result:?}");
        let seen = api.seen();
        let count = |m: &Method| seen.iter().filter(|s| s.method == *m).count();
        assert_eq!(
            (count(&Method::GET), count(&Method::PATCH)),
            (gets, patches),
            "{status}"
        );
    }
}

#[tokio::test]
async fn record_namespaces_writes_the_status_only_when_the_list_changed() {
    let digest = crate::cluster::rbac::digest();
    for (recorded, rbac, now, writes) in [
        (vec!["org-a"], Some(digest), vec!["org-a"], 0),
        (vec!["org-a"], Some(digest), vec!["org-a", "org-b"], 1),
        (vec![], Some(digest), vec!["org-a"], 1),
        // The list holds, but the RBAC digest recorded is another version's (or none yet).
        (
            vec!["org-a"],
            Some("sha256:another-version"),
            vec!["org-a"],
            1,
        ),
        (vec!["org-a"], None, vec!["org-a"], 1),
    ] {
        let api = FakeApi::new();
        let echo = cluster(json!({"managedNamespaces": managed(&now)}));
        api.route(
            Method::PATCH,
            STATUS,
            200,
            serde_json::to_value(&echo).expect("json"),
        );
        let ctx = context(&api);
        let progress = apply::Progress::default();
        let mut state = PassState::new("prod".into(), &progress);
        state.managed = managed(&now);
        let before =
            cluster(json!({"managedNamespaces": managed(&recorded), "namespaceRbac": rbac}));
        let result = Step::RecordNamespaces.run(&ctx, &before, &mut state).await;
        assert!(matches!(result, StepResult::Next), "{result:?}");
        assert_eq!(state.report.managed_namespaces, Some(managed(&now)));
        assert_eq!(state.report.namespace_rbac.as_deref(), Some(digest));
        assert_eq!(
            api.writes().len(),
            writes,
            "{recorded:?} {rbac:?} -> {now:?}"
        );
        if writes > 0 {
            let body = &api.seen()[0].body;
            assert_eq!(body["status"]["managedNamespaces"], json!(managed(&now)));
            assert_eq!(body["status"]["namespaceRbac"], json!(digest));
        }
    }
}

#[test]
fn an_unchanged_pass_is_reused_only_for_the_same_verdict_namespaces_and_live_objects() {
    let verdict = Arc::new(1u8);
    let managed = managed(&["org-a"]);
    let last = UnchangedPass {
        verdict: verdict.clone(),
        managed: managed.clone(),
        live_version: 7,
        inventory: vec![],
        apply: StepOutcome::Succeeded,
        applied: None,
        settled: Some("sha256:s".into()),
    };
    assert_eq!(
        unchanged_since(Some(&last), &verdict, &managed, Some(7)).and_then(|p| p.settled.clone()),
        Some("sha256:s".into()),
        "the remembered pass reports its record again"
    );
    assert!(unchanged_since(Some(&last), &verdict, &managed, Some(7)).is_some());
    assert!(unchanged_since(None, &verdict, &managed, Some(7)).is_none());
    // A new verdict (another commit, other trust inputs), even an equal one.
    assert!(unchanged_since(Some(&last), &Arc::new(1u8), &managed, Some(7)).is_none());
    assert!(unchanged_since(Some(&last), &verdict, &[], Some(7)).is_none());
    // A live object changed (or was edited by hand) since the pass read them.
    assert!(unchanged_since(Some(&last), &verdict, &managed, Some(8)).is_none());
    // No watched stores (`run --once`): always a full pass.
    assert!(unchanged_since(Some(&last), &verdict, &managed, None).is_none());
}

fn ours(id: &InventoryEntry) -> vworkspace_core::plan::diff::LiveObject {
    vworkspace_core::plan::diff::LiveObject {
        id: id.clone(),
        labels: [
            (vworkspace_core::plan::LABEL_CLUSTER, "prod"),
            (
                vworkspace_core::plan::LABEL_MANAGED_BY,
                vworkspace_core::plan::MANAGED_BY,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        annotations: Default::default(),
        spec: Value::Null.into(),
        managers: vec![],
        version: None,
    }
}

#[tokio::test]
async fn write_prunes_what_is_no_longer_declared_and_keeps_what_a_refused_write_left() {
    let gone = entry("org-a", "old");
    let path = "/apis/apps.vworkspace.io/v1alpha1/namespaces/org-a/applicationinstances/old";
    // (name, fault on the delete, outcome reason, inventory after)
    let cases = [
        ("nothing declared, nothing live", None, None, vec![], false),
        ("an object no longer declared", None, None, vec![], true),
        (
            "its delete is refused",
            Some(500),
            Some(reason::APPLY_FAILED),
            vec![gone.clone()],
            true,
        ),
    ];
    for (name, fault, reason, inventory, live) in cases {
        let api = FakeApi::new();
        if let Some(code) = fault {
            api.route(Method::DELETE, path, code, status_body(code, "Scripted"));
        }
        let ctx = context(&api);
        let progress = apply::Progress::default();
        let status = if live {
            json!({"inventory": [gone.clone()], "managedNamespaces": [{"name": "org-a"}]})
        } else {
            Value::Null
        };
        let mut state = PassState::new("prod".into(), &progress);
        state.plan = Some(Plan::default());
        state.managed = managed(&["org-a"]);
        if live {
            state.live = vec![ours(&gone)];
        }
        let result = Step::Write.run(&ctx, &cluster(status), &mut state).await;
        assert_eq!(reason_of(&result), reason, "{name}");
        let deletes = api.writes();
        assert_eq!(deletes.len(), usize::from(live), "{name}: {deletes:?}");
        match result {
            StepResult::Next => {
                let Some(Written {
                    inventory: after,
                    noop,
                    outcome,
                    ..
                }) = &state.written
                else {
                    panic!("{name}: nothing written");
                };
                assert_eq!(after, &inventory, "{name}");
                assert_eq!(*noop, !live, "{name}");
                assert_eq!(outcome, &StepOutcome::Succeeded, "{name}");
                assert_eq!(state.report.writes, (0, usize::from(live)), "{name}");
            }
            _ => {
                assert_eq!(state.report.inventory.as_ref(), Some(&inventory), "{name}");
                assert!(state.written.is_none(), "{name}");
            }
        }
    }
}

#[test]
fn partial_names_what_was_left_out_and_why() {
    let conflict = Conflict {
        cluster_label: Some("staging".into()),
        managed_by: None,
        managers: vec!["kubectl".into()],
    };
    let held = (entry("org-a", "held"), conflict);
    let skipped = (entry("org-x", "away"), Skip::UnmanagedNamespace);
    let cases: [(&str, Changes<'_>, Option<&str>, &[&str]); 4] = [
        ("nothing left out", Changes::default(), None, &[]),
        (
            "held by another source",
            Changes {
                conflicts: vec![held.clone()],
                ..Changes::default()
            },
            Some(reason::OWNERSHIP_CONFLICT),
            &["org-a/held held by cluster source staging; field managers kubectl"],
        ),
        (
            "in an unmanaged namespace",
            Changes {
                skipped: vec![skipped.clone()],
                ..Changes::default()
            },
            Some(reason::NAMESPACE_NOT_MANAGED),
            &["ApplicationInstance org-x/away"],
        ),
        (
            "both: the conflict is the reason",
            Changes {
                conflicts: vec![held],
                skipped: vec![skipped],
                ..Changes::default()
            },
            Some(reason::OWNERSHIP_CONFLICT),
            &["org-a/held", "org-x/away"],
        ),
    ];
    for (name, changes, reason, mentions) in cases {
        let found = partial(&changes, "prod");
        assert_eq!(found.as_ref().map(|(r, _)| *r), reason, "{name}");
        let message = found.map(|(_, m)| m).unwrap_or_default();
        for mention in mentions {
            assert!(message.contains(mention), "{name}: {message}");
        }
    }
}

#[test]
fn a_cut_pass_says_who_stalled_and_keeps_what_it_sent() {
    let sent = entry("org-a", "sent");
    for (cut, fetching, wrote, reason) in [
        (Cut::Stopping, false, false, reason::INTERRUPTED),
        (Cut::Deadline, true, false, reason::FETCH_FAILED),
        (Cut::Deadline, false, true, reason::API_REQUEST_FAILED),
    ] {
        let progress = apply::Progress::default();
        progress.set_fetching(fetching);
        if wrote {
            progress.sent(sent.clone());
        }
        let report = deadline_report(
            &cluster(Value::Null),
            Duration::from_secs(30),
            &progress,
            cut,
        );
        assert_eq!(report.failure(), Some(reason), "{cut:?}");
        assert_eq!(
            report.inventory,
            wrote.then(|| vec![sent.clone()]),
            "{cut:?}"
        );
    }
}

#[tokio::test]
async fn a_pass_stops_at_the_first_refusal_and_reports_it() {
    let api = FakeApi::new();
    let ctx = context(&api);
    let progress = apply::Progress::default();
    let report = run(&cluster(Value::Null), &ctx, &progress).await;
    assert_eq!(report.failure(), Some(reason::API_REQUEST_FAILED));
    assert_eq!(report.apply, StepOutcome::NotRun);
    assert_eq!(report.recipients, None);
    assert_eq!(api.seen().len(), 1, "nothing read after the refusal");

    // Trust read, the fetch refused: the recipients are published anyway.
    let api = FakeApi::new();
    trust_inputs(&api, json!({"allowed_signers": SIGNERS}), Value::Null);
    let ctx = context(&api);
    let report = run(&cluster(Value::Null), &ctx, &progress).await;
    assert_eq!(report.failure(), Some(reason::FETCH_FAILED));
    assert!(report.recipients.is_some_and(|r| r.len() == 1));
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn ensure_namespace_guardrails_keeps_labels_and_policies_and_reports_a_weakened_level() {
    use crate::cluster::conditions::Guarded;
    use std::collections::BTreeMap;
    const NAMESPACE: &str = "/api/v1/namespaces/org-a";
    const DENY: &str = "/apis/networking.k8s.io/v1/namespaces/org-a/networkpolicies/vworkspace-default-deny-ingress";
    let policy: vworkspace_core::crd::NamespacePolicy =
        serde_json::from_value(json!({})).expect("namespacePolicy: {}");
    let holding = vworkspace_core::guardrails::Guardrails::from_policy(&policy)
        .expect("the default policy")
        .labels();
    let privileged: BTreeMap<String, String> = [(
        "pod-security.kubernetes.io/enforce".to_owned(),
        "privileged".to_owned(),
    )]
    .into();
    // (case, policy on, live labels, kept by us before, namespace patch fault,
    //  reason, namespace patched, weakened reported)
    let cases = [
        (
            "no policy",
            false,
            BTreeMap::new(),
            false,
            None,
            None,
            false,
            false,
        ),
        (
            "a namespace new to the policy",
            true,
            BTreeMap::new(),
            false,
            None,
            None,
            true,
            false,
        ),
        (
            "labels that hold",
            true,
            holding.clone(),
            true,
            None,
            None,
            false,
            false,
        ),
        (
            "our level lowered by someone",
            true,
            privileged.clone(),
            true,
            None,
            None,
            true,
            true,
        ),
        (
            "the namespace patch refused",
            true,
            BTreeMap::new(),
            false,
            Some(500),
            Some(reason::API_REQUEST_FAILED),
            true,
            false,
        ),
    ];
    for (name, on, labels, kept_before, fault, reason, patched, weakened) in cases {
        let api = FakeApi::new();
        if let Some(code) = fault {
            api.route(
                Method::PATCH,
                NAMESPACE,
                code,
                status_body(code, "Scripted"),
            );
        }
        let ctx = context(&api);
        let progress = apply::Progress::default();
        let mut cluster = cluster(Value::Null);
        cluster.spec.namespace_policy = on.then(|| policy.clone());
        let mut state = PassState::new("prod".into(), &progress);
        state.managed = managed(&["org-a"]);
        state
            .namespace_labels
            .insert("org-a".into(), (labels, kept_before));
        let result = Step::EnsureNamespaceGuardrails
            .run(&ctx, &cluster, &mut state)
            .await;
        assert_eq!(reason_of(&result), reason, "{name}");
        let writes = api.writes();
        assert_eq!(
            writes.iter().any(|w| w.ends_with(NAMESPACE)),
            patched,
            "{name}: {writes:?}"
        );
        if !on {
            assert!(api.seen().is_empty(), "{name}: {:?}", api.seen());
            assert_eq!(state.report.guardrails, Some(Guarded::Off), "{name}");
            continue;
        }
        if fault.is_none() {
            assert!(
                writes.iter().any(|w| w.ends_with(DENY)),
                "{name}: the default-deny policy is written where it is missing: {writes:?}"
            );
            let Some(Guarded::Kept {
                level,
                namespaces,
                weakened: found,
            }) = &state.report.guardrails
            else {
                panic!("{name}: {:?}", state.report.guardrails);
            };
            assert_eq!((*level, *namespaces), ("restricted", 1), "{name}");
            assert_eq!(
                found.iter().map(|(ns, _)| ns.as_str()).collect::<Vec<_>>(),
                if weakened { vec!["org-a"] } else { vec![] },
                "{name}"
            );
        }
    }
}

#[test]
fn the_settled_record_covers_every_labelled_object_or_nothing() {
    use vworkspace_core::plan::settled::ObjectVersion;
    let versioned = |id: &InventoryEntry, generation: i64| {
        let mut live = ours(id);
        live.version = Some(ObjectVersion {
            uid: format!("uid-{}", id.name),
            generation,
            deleting: false,
        });
        live
    };
    let (wiki, crm, old) = (
        entry("org-a", "wiki"),
        entry("org-a", "crm"),
        entry("org-a", "old"),
    );
    let mut foreign = versioned(&entry("org-a", "theirs"), 1);
    foreign.labels.clear();
    let unchanged = |ids: &[&InventoryEntry]| Changes {
        unchanged: ids.iter().map(|id| (*id).clone()).collect(),
        ..Changes::default()
    };
    let pruned = apply::Applied {
        pruned: vec![old.clone()],
        ..apply::Applied::default()
    };
    let none = apply::Applied::default();
    // (case, live objects, changes, what the writes did, objects the record covers)
    let cases: Vec<(&str, Vec<_>, Changes<'_>, &apply::Applied, Option<usize>)> = vec![
        (
            "every declared object unchanged, each with its version",
            vec![versioned(&wiki, 1), versioned(&crm, 3)],
            unchanged(&[&wiki, &crm]),
            &none,
            Some(2),
        ),
        (
            "an object read without a version",
            vec![versioned(&wiki, 1), ours(&crm)],
            unchanged(&[&wiki, &crm]),
            &none,
            None,
        ),
        (
            "an unchanged object the read did not return",
            vec![versioned(&wiki, 1)],
            unchanged(&[&wiki, &crm]),
            &none,
            None,
        ),
        (
            "a labelled object neither declared nor pruned",
            vec![versioned(&wiki, 1), versioned(&old, 1)],
            unchanged(&[&wiki]),
            &none,
            None,
        ),
        (
            "a labelled object pruned",
            vec![versioned(&wiki, 1), versioned(&old, 1)],
            unchanged(&[&wiki]),
            &pruned,
            Some(1),
        ),
        (
            "another source's object, which the labelled list does not return",
            vec![versioned(&wiki, 1), foreign.clone()],
            unchanged(&[&wiki]),
            &none,
            Some(1),
        ),
    ];
    for (case, live, changes, done, covered) in cases {
        let objects = super::settled::settled_objects(&live, &changes, done, "prod");
        assert_eq!(objects.map(|o| o.len()), covered, "{case}");
    }
}
