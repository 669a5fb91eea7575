//! The reconciler against a fake API server at the HTTP boundary: every request the operator sends is
//! recorded (verb, path, query, content type, body) and the tests assert the exact requests. The
//! source is a real repository signed by the real `git commit -S`, with a 2-of-2 release and values
//! encrypted by the real `age`, fetched over file://.

use std::sync::Arc;

use http::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::support::fake_api::*;
pub(crate) use crate::support::harness::{
    CLUSTER_PATH, CLUSTER_PATH_PATCH, assert_request_discipline, harness, namespace,
};
use crate::support::rbac_check::assert_allowed_by_deploy;
use crate::support::{AI_PATH, OPS_PATH};
use vworkspace_controller::cluster::{self, Context};
use vworkspace_controller::metrics::Metrics;

/// Whether a pass listed the ApplicationInstances whole (not metadata only): it did not find the
/// settled record holding.
fn lists_whole_instances(api: &FakeApi) -> bool {
    api.requests()
        .iter()
        .any(|r| r.path.ends_with("/applicationinstances") && !r.metadata_only())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_pass_applies_everything_and_an_unchanged_pass_writes_nothing() {
    let h = harness();
    h.pass().await.expect("first pass");
    let requests = h.api.requests();
    assert_request_discipline(&requests);
    let reads: Vec<String> = requests
        .iter()
        .filter(|r| !r.is_write())
        .map(|r| {
            format!(
                "{} {}",
                r.line(),
                query_param(&r.query, "labelSelector").unwrap_or_default()
            )
        })
        .collect();
    // A status without a floor (here: none yet) is completed from this source's live objects
    // before verification (plan::floor): two labelled lists, which find nothing on a first pass.
    // The namespace is new to the Cluster (its status records none): its RBAC is applied without
    // being read first, so the next read is the pass's own labelled list.
    assert_eq!(
        reads[..6],
        [
            "GET /api/v1/namespaces/vworkspace-system/configmaps/trust ",
            "GET /api/v1/namespaces/vworkspace-system/secrets/cluster-age ",
            format!("GET {AI_PATH}/applicationinstances gitops.vworkspace.io/cluster=demo")
                .as_str(),
            format!("GET {OPS_PATH}/operations gitops.vworkspace.io/cluster=demo").as_str(),
            "GET /api/v1/namespaces app.vworkspace.io/managed-by=vworkspace",
            format!("GET {AI_PATH}/applicationinstances gitops.vworkspace.io/cluster=demo")
                .as_str(),
        ]
    );
    assert!(
        !reads
            .iter()
            .any(|r| r.contains("/rolebindings/") || r.contains("/serviceaccounts/")),
        "{reads:?}"
    );
    assert!(reads.contains(&format!(
        "GET {AI_PATH}/applicationinstances gitops.vworkspace.io/cluster=demo"
    )));
    assert!(reads.contains(&format!(
        "GET {OPS_PATH}/operations gitops.vworkspace.io/cluster=demo"
    )));
    // Namespaces are made right side by side (apply::WRITE_CONCURRENCY), each one's objects in
    // order (the bindings name the ServiceAccount); so are the applies. Compared per namespace.
    let writes = h.writes();
    let in_namespace = |ns: &str| -> Vec<String> {
        writes
            .iter()
            .filter(|w| w.contains(&format!("/namespaces/{ns}/")))
            .filter(|w| w.contains("serviceaccounts") || w.contains("rolebindings"))
            .cloned()
            .collect()
    };
    for ns in ["org-myteam", "org-vault"] {
        assert_eq!(
            in_namespace(ns),
            [
                format!(
                    "PATCH /api/v1/namespaces/{ns}/serviceaccounts/vworkspace-operation-runner"
                ),
                format!(
                    "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/vworkspace-app-operator"
                ),
                format!(
                    "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/vworkspace-app-operator-values"
                ),
                format!(
                    "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/vworkspace-operation-runner"
                ),
            ]
        );
    }
    assert_eq!(writes.len(), 15, "{writes:?}");
    // The finalizer, before anything else is written.
    assert_eq!(writes[0], CLUSTER_PATH_PATCH);
    assert!(
        writes[1..9]
            .iter()
            .all(|w| w.contains("serviceaccounts") || w.contains("rolebindings")),
        "{writes:?}"
    );
    // The managed namespaces are recorded before anything is applied.
    assert_eq!(writes[9], format!("PATCH {CLUSTER_PATH}/status"));
    let mut applies = writes[10..13].to_vec();
    applies.sort();
    assert_eq!(
        applies,
        [
            format!("PATCH {AI_PATH}/namespaces/org-myteam/applicationinstances/nextcloud"),
            format!("PATCH {AI_PATH}/namespaces/org-vault/applicationinstances/vaultwarden"),
            format!("PATCH {OPS_PATH}/namespaces/org-myteam/operations/nightly"),
        ]
    );
    assert_eq!(
        writes[13..],
        [
            format!("PATCH {CLUSTER_PATH}/status"),
            "POST /api/v1/namespaces/default/events".to_owned(),
        ]
    );
    // What was applied: our labels and annotations, the ciphertext (never plaintext), no status.
    let applied = h
        .api
        .get(&format!(
            "{AI_PATH}/namespaces/org-myteam/applicationinstances/nextcloud"
        ))
        .expect("applied");
    assert_eq!(
        applied["metadata"]["labels"]["app.vworkspace.io/managed-by"],
        "vworkspace"
    );
    assert_eq!(
        applied["metadata"]["labels"]["gitops.vworkspace.io/cluster"],
        "demo"
    );
    assert_eq!(
        applied["metadata"]["annotations"]["gitops.vworkspace.io/source-path"],
        "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml"
    );
    let binding = h
        .api
        .get("/apis/rbac.authorization.k8s.io/v1/namespaces/org-myteam/rolebindings/vworkspace-app-operator")
        .expect("binding");
    assert_eq!(
        binding["roleRef"]["name"],
        "vworkspace-app-operator-namespace"
    );
    for r in h.api.requests() {
        assert!(
            !r.body.to_string().contains("hunter2-PLAINTEXT-MARKER"),
            "plaintext sent to the API server: {}",
            r.line()
        );
    }
    let status = h.status();
    assert_eq!(status.last_applied_serial, Some(1));
    assert_eq!(status.inventory.len(), 3);
    assert_eq!(
        status
            .managed_namespaces
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["org-myteam", "org-vault"]
    );
    assert_eq!(h.condition("Ready").0, "True");
    let event = h
        .api
        .requests()
        .into_iter()
        .find(|r| r.method == Method::POST)
        .expect("event");
    assert_eq!(
        event.body["reason"], "Succeeded",
        "the Event reason is the Ready reason"
    );
    assert_eq!(event.body["involvedObject"]["kind"], "Cluster");

    // The pass vouches for every object it wrote from the apply's answers (the settled record).
    let recorded = status
        .settled
        .clone()
        .expect("a complete pass records the settled record");

    // The same commit again: reads only.
    h.pass().await.expect("second pass");
    assert_request_discipline(&h.api.requests());
    assert_eq!(
        h.writes(),
        Vec::<String>::new(),
        "a no-op pass writes nothing"
    );
    // And reads little: the trust inputs, the two kinds, the managed namespaces (RBAC already
    // checked). The commit is the one applied last and the status holds its settled record, so
    // the two kinds are listed, from their metadata alone, while its release is verified again
    // (this process has no watch stores), once each; nothing is read whole.
    let requests = h.api.requests();
    assert_eq!(
        requests.iter().map(Recorded::line).collect::<Vec<_>>(),
        [
            "GET /api/v1/namespaces/vworkspace-system/configmaps/trust".to_owned(),
            "GET /api/v1/namespaces/vworkspace-system/secrets/cluster-age".to_owned(),
            format!("GET {AI_PATH}/applicationinstances"),
            format!("GET {OPS_PATH}/operations"),
            "GET /api/v1/namespaces".to_owned(),
        ]
    );
    assert!(requests[2].metadata_only() && requests[3].metadata_only());
    assert_eq!(h.status().settled, Some(recorded), "the record holds");
    assert_eq!(h.condition("Ready").0, "True");
}

/// Issue 24: a fresh process on the commit it applied last proves the objects unchanged from their
/// metadata (the settled record); an object edited since (its generation moved) makes the whole
/// pass run: the release parsed, the objects read whole, the edit put back, a new record made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_edited_since_the_settled_record_makes_the_whole_pass_run_and_repair_it() {
    let h = harness();
    h.pass().await.expect("first pass");
    let recorded = h.status().settled.expect("recorded");
    let path = format!("{AI_PATH}/namespaces/org-myteam/applicationinstances/nextcloud");
    let mut edited = h.api.get(&path).expect("applied");
    let generation = edited["metadata"]["generation"]
        .as_i64()
        .expect("generation");
    edited["spec"]["chart"]["version"] = json!("0.0.1-by-hand");
    edited["metadata"]["generation"] = json!(generation + 1);
    h.api.put(&path, edited);

    h.pass().await.expect("repairing pass");
    assert_request_discipline(&h.api.requests());
    let lists: Vec<(String, bool)> = h
        .api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/applicationinstances"))
        .map(|r| (r.line(), r.metadata_only()))
        .collect();
    assert_eq!(
        lists,
        [
            (format!("GET {AI_PATH}/applicationinstances"), true),
            (format!("GET {AI_PATH}/applicationinstances"), false),
        ],
        "the metadata list, then the whole objects"
    );
    assert_eq!(
        h.writes(),
        [
            format!("PATCH {path}"),
            format!("PATCH {CLUSTER_PATH}/status"),
            "POST /api/v1/namespaces/default/events".to_owned(),
        ]
    );
    assert_ne!(
        h.api.get(&path).expect("repaired")["spec"]["chart"]["version"],
        "0.0.1-by-hand"
    );
    let repaired = h.status().settled.expect("a new record");
    assert_ne!(
        repaired, recorded,
        "the repaired object's generation is in it"
    );

    // Settled again: metadata only, nothing written.
    h.pass().await.expect("settled pass");
    assert_eq!(h.writes(), Vec::<String>::new());
    assert!(
        h.api
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/applicationinstances") || r.path.ends_with("/operations"))
            .all(Recorded::metadata_only)
    );

    // A labelled object the record does not hold (made by hand with this source's labels) is
    // seen from its metadata too: the whole pass runs.
    let mut stray = h.api.get(&path).expect("live");
    stray["metadata"]["name"] = json!("stray");
    stray["metadata"]["uid"] = json!("uid-stray");
    h.api.put(
        &format!("{AI_PATH}/namespaces/org-myteam/applicationinstances/stray"),
        stray,
    );
    h.pass().await.expect("pass with a stray object");
    assert!(lists_whole_instances(&h.api), "the whole objects are read");
    assert_eq!(
        h.status().settled,
        None,
        "an object kept and not declared: no record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_commit_writes_nothing_but_its_status() {
    let h = harness();
    h.pass().await.expect("first pass");
    let before = h.status();
    // An unsigned commit that changes an instance.
    h.fixture.write(
        "clusters/demo/namespaces/org-myteam/operations/nightly.yaml",
        &BACKUP.replace("velero-namespace-backup", "other-template"),
    );
    h.fixture.git(&["add", "-A"]);
    h.fixture.git(&[
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "-m",
        "unsigned change",
    ]);
    let refused = h.pass().await;
    assert!(refused.is_err());
    assert_request_discipline(&h.api.requests());
    assert_eq!(
        h.writes(),
        [
            format!("PATCH {CLUSTER_PATH}/status"),
            "POST /api/v1/namespaces/default/events".to_owned()
        ]
    );
    assert!(
        !h.api
            .requests()
            .iter()
            .any(|r| r.path.contains("/applicationinstances")
                || r.path.contains("/operations")
                || r.path.contains("/rolebindings")),
        "a refused pass does not even read the declared kinds"
    );
    let (status, reason, _) = h.condition("Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CommitSignatureInvalid")
    );
    let after = h.status();
    assert_eq!(after.last_applied_commit, before.last_applied_commit);
    assert_eq!(after.inventory, before.inventory);
    // Failing again for the same reason: no new status, no new Event.
    assert!(h.pass().await.is_err());
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_only_labelled_objects_of_the_inventory() {
    let h = harness();
    h.pass().await.expect("first pass");
    // Someone else's Operation with our labels but another cluster's id, and one without labels.
    h.api.put(
        &format!("{OPS_PATH}/namespaces/org-myteam/operations/foreign"),
        json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Operation",
               "metadata": {"name": "foreign", "namespace": "org-myteam",
                            "labels": {"app.vworkspace.io/managed-by": "vworkspace", "gitops.vworkspace.io/cluster": "other"}},
               "spec": {"type": "Backup", "template": "t", "target": {"applicationInstance": "x"}}}),
    );
    h.api.put(
        &format!("{OPS_PATH}/namespaces/org-myteam/operations/handmade"),
        json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Operation",
               "metadata": {"name": "handmade", "namespace": "org-myteam"},
               "spec": {"type": "Backup", "template": "t", "target": {"applicationInstance": "x"}}}),
    );
    std::fs::remove_file(
        h.fixture
            .repo
            .join("clusters/demo/namespaces/org-myteam/operations/nightly.yaml"),
    )
    .expect("remove");
    h.fixture.release(&[]);
    h.fixture.commit("release 2: nightly backup retired");
    h.pass().await.expect("second pass");
    assert_request_discipline(&h.api.requests());
    assert_eq!(
        h.writes(),
        [
            format!("DELETE {OPS_PATH}/namespaces/org-myteam/operations/nightly"),
            format!("PATCH {CLUSTER_PATH}/status"),
            "POST /api/v1/namespaces/default/events".to_owned(),
        ]
    );
    assert!(
        h.api
            .get(&format!(
                "{OPS_PATH}/namespaces/org-myteam/operations/foreign"
            ))
            .is_some()
    );
    assert!(
        h.api
            .get(&format!(
                "{OPS_PATH}/namespaces/org-myteam/operations/handmade"
            ))
            .is_some()
    );
    let status = h.status();
    assert_eq!(status.last_applied_serial, Some(2));
    assert_eq!(status.inventory.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_namespaces_are_skipped_and_reported_and_lose_their_bindings() {
    let h = harness();
    h.pass().await.expect("first pass");
    // org-vault loses the label.
    h.api.put(
        "/api/v1/namespaces/org-vault",
        namespace("org-vault", false),
    );
    let outcome = h.pass().await;
    assert!(
        outcome.is_err(),
        "a skipped object is reported as a failure"
    );
    let writes = h.writes();
    assert_eq!(
        writes[..3],
        [
            "DELETE /apis/rbac.authorization.k8s.io/v1/namespaces/org-vault/rolebindings/vworkspace-app-operator",
            "DELETE /apis/rbac.authorization.k8s.io/v1/namespaces/org-vault/rolebindings/vworkspace-app-operator-values",
            "DELETE /apis/rbac.authorization.k8s.io/v1/namespaces/org-vault/rolebindings/vworkspace-operation-runner",
        ]
    );
    assert!(
        !writes.iter().any(|w| w.contains("vaultwarden")),
        "nothing is applied to or pruned from an unmanaged namespace: {writes:?}"
    );
    let (status, reason, message) = h.condition("Applied");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NamespaceNotManaged")
    );
    assert!(
        message.contains("ApplicationInstance org-vault/vaultwarden"),
        "{message}"
    );
    assert_eq!(
        h.status()
            .managed_namespaces
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["org-myteam"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_end_the_pass_with_the_reason_and_the_next_pass_recovers() {
    let h = harness();
    // 500 on one object: the others, written side by side with it, stay applied; nothing is
    // pruned; the status says why.
    h.api.fault(Method::PATCH, "/operations/nightly", 500);
    assert!(h.pass().await.is_err());
    let (status, reason, message) = h.condition("Applied");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ApplyFailed"));
    assert!(
        message.contains("apply Operation org-myteam/nightly"),
        "{message}"
    );
    let st = h.status();
    assert_eq!(
        st.last_applied_serial, None,
        "a partial apply is not an applied release"
    );
    assert_eq!(
        st.inventory
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["nextcloud", "vaultwarden"],
        "what was written is owned, the refused write is not"
    );
    // 409 and 429 on the next pass's one write left: same outcome, then a clean pass converges.
    h.api.fault(Method::PATCH, "/operations/nightly", 429);
    assert!(h.pass().await.is_err());
    assert_eq!(h.condition("Applied").1, "ApplyFailed");
    h.api.fault(Method::PATCH, "/operations/nightly", 409);
    assert!(h.pass().await.is_err());
    let (_, reason, message) = h.condition("Applied");
    assert_eq!(reason, "ApplyFailed");
    assert!(
        message.contains("apply Operation org-myteam/nightly"),
        "{message}"
    );
    h.api.fault(Method::GET, "/configmaps/trust", 500);
    assert!(h.pass().await.is_err());
    assert_eq!(h.condition("Ready").1, "ApiRequestFailed");
    assert!(
        !h.writes().iter().any(|w| w.contains("/namespaces/org-")),
        "nothing written when the trust inputs cannot be read"
    );
    h.pass().await.expect("recovered");
    let st = h.status();
    assert_eq!(st.last_applied_serial, Some(1));
    assert_eq!(st.inventory.len(), 3);
    assert_eq!(h.condition("Ready").0, "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_creates_renews_and_yields_over_http() {
    use vworkspace_controller::runtime::leader::Elector;
    let api = Arc::new(FakeApi::default());
    let client = api.client();
    let a = Elector::new(client.clone(), "vworkspace-system", "pod-a".into());
    let b = Elector::new(client, "vworkspace-system", "pod-b".into());
    let t = |s: i64| jiff::Timestamp::from_second(1_800_000_000 + s).expect("time");
    assert!(a.try_hold(t(0)).await.expect("a"));
    let lease_path =
        "/apis/coordination.k8s.io/v1/namespaces/vworkspace-system/leases/vworkspace-app-operator";
    assert_eq!(
        api.requests()
            .iter()
            .map(Recorded::line)
            .collect::<Vec<_>>(),
        [
            format!("GET {lease_path}"),
            "POST /apis/coordination.k8s.io/v1/namespaces/vworkspace-system/leases".to_owned()
        ]
    );
    // The POST handler of the fake names objects itself; store the Lease where GET finds it.
    let created = api.requests()[1].body.clone();
    api.put(lease_path, created);
    api.clear();
    assert!(
        !b.try_hold(t(5)).await.expect("b"),
        "b follows while a renews"
    );
    assert!(a.try_hold(t(6)).await.expect("a renews"));
    assert_eq!(
        api.requests().last().map(Recorded::line),
        Some(format!("PUT {lease_path}"))
    );
    assert_eq!(
        api.requests()
            .last()
            .map(|r| r.body["metadata"]["resourceVersion"].is_null()),
        Some(true)
    );
    // a stops renewing. b judges by its own clock from when it saw the record change (a's renewal,
    // first seen at 30): it takes over 15 s later, not at once.
    assert!(!b.try_hold(t(30)).await.expect("b sees a's renewal"));
    assert!(!b.try_hold(t(44)).await.expect("b still follows"));
    assert!(b.try_hold(t(45)).await.expect("b takes over"));
    let lease = api.get(lease_path).expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "pod-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 2);
    // A lost race (409) is not an error.
    api.put(lease_path, json!({"metadata": {"name": "vworkspace-app-operator", "resourceVersion": "1"}, "spec": {}}));
    api.fault(Method::PUT, "/leases/", 409);
    assert!(!a.try_hold(t(40)).await.expect("conflict"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_allowed_by_deploy_rbac() {
    let h = harness();
    let mut requests = Vec::new();
    h.pass().await.expect("first pass");
    requests.extend(h.api.requests());
    // A prune, then a namespace losing its label (bindings deleted).
    std::fs::remove_file(
        h.fixture
            .repo
            .join("clusters/demo/namespaces/org-myteam/operations/nightly.yaml"),
    )
    .expect("remove");
    h.fixture.release(&[]);
    h.fixture.commit("release 2");
    h.pass().await.expect("second pass");
    requests.extend(h.api.requests());
    h.api.put(
        "/api/v1/namespaces/org-vault",
        namespace("org-vault", false),
    );
    let _ = h.pass().await;
    requests.extend(h.api.requests());
    // Leader election.
    let elector = vworkspace_controller::runtime::leader::Elector::new(
        h.api.client(),
        "vworkspace-system",
        "pod-a".into(),
    );
    h.api.clear();
    elector
        .try_hold(jiff::Timestamp::now())
        .await
        .expect("lease");
    requests.extend(h.api.requests());

    assert!(requests.len() > 20);
    assert_allowed_by_deploy(&requests, &["org-myteam", "org-vault"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_stopped_between_apply_and_prune_is_finished_by_the_next() {
    let h = harness();
    h.pass().await.expect("first pass");
    std::fs::remove_file(
        h.fixture
            .repo
            .join("clusters/demo/namespaces/org-myteam/operations/nightly.yaml"),
    )
    .expect("remove");
    // A new instance too, so the pass applies before it prunes.
    h.fixture.write(
        "clusters/demo/namespaces/org-myteam/applicationinstances/wiki.yaml",
        &nextcloud(&h.fixture.age_encrypt("wiki-PLAINTEXT-MARKER"))
            .replace("name: nextcloud", "name: wiki"),
    );
    h.fixture.release(&[]);
    h.fixture.commit("release 2: wiki in, nightly out");
    // The prune fails (as if the operator died after applying): the stale object stays owned.
    h.api.fault(Method::DELETE, "/operations/nightly", 500);
    assert!(h.pass().await.is_err());
    assert_eq!(h.condition("Applied").1, "ApplyFailed");
    let st = h.status();
    assert_eq!(
        st.last_applied_serial,
        Some(1),
        "release 2 is not applied yet"
    );
    assert!(
        st.inventory.iter().any(|i| i.name == "nightly"),
        "still ours, still to prune"
    );
    assert!(
        st.inventory.iter().any(|i| i.name == "wiki"),
        "what was applied is ours"
    );
    // The next pass finishes the job.
    h.pass().await.expect("second attempt");
    assert_eq!(
        h.writes(),
        [
            format!("DELETE {OPS_PATH}/namespaces/org-myteam/operations/nightly"),
            format!("PATCH {CLUSTER_PATH}/status"),
            "POST /api/v1/namespaces/default/events".to_owned(),
        ]
    );
    let st = h.status();
    assert_eq!(st.last_applied_serial, Some(2));
    assert!(!st.inventory.iter().any(|i| i.name == "nightly"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_api_server_ends_the_pass_at_its_deadline_with_the_reason() {
    let h = harness();
    let mut settings = h.ctx.settings.clone();
    settings.pass_timeout = std::time::Duration::from_secs(1);
    let impatient = Arc::new(Context::new(
        h.api.client(),
        settings,
        Arc::new(Metrics::default()),
    ));
    // Listing the live objects hangs for longer than the pass may take.
    h.api.stall(
        Method::GET,
        "/applicationinstances",
        std::time::Duration::from_secs(5),
    );
    h.api.clear();
    let outcome = cluster::reconcile(Arc::new(h.cluster()), impatient).await;
    assert!(outcome.is_err());
    assert!(
        !h.writes()
            .iter()
            .any(|w| w.contains("/applicationinstances/") || w.contains("/operations/")),
        "nothing declared was written: {:?}",
        h.writes()
    );
    let (status, reason, message) = h.condition("Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ApiRequestFailed")
    );
    assert!(message.contains("did not finish within 1 s"), "{message}");
    // The server answers again: the next pass converges.
    h.pass().await.expect("recovered");
    assert_eq!(h.condition("Ready").0, "True");
    assert_eq!(h.status().inventory.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_reconcile_through_dropped_watches_and_stop_when_told() {
    use std::time::{Duration, Instant};
    let h = harness();
    let children = Arc::new(vworkspace_controller::children::ChildContext {
        client: h.api.client(),
        namespace: "vworkspace-system".into(),
        velero_namespace: "velero".into(),
        limits: Default::default(),
        clock: jiff::Timestamp::now,
        declared: h.ctx.declared.clone(),
        metrics: h.ctx.metrics.clone(),
        caches: Default::default(),
        access_lost: Default::default(),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(vworkspace_controller::runtime::controllers(
        h.api.client(),
        vworkspace_controller::watch_clients::WatchClients::shared(h.api.client()),
        h.ctx.clone(),
        children,
        stopped,
    ));
    // The fake drops every watch; the initial lists still deliver the Cluster, and it is reconciled.
    let deadline = Instant::now() + Duration::from_secs(60);
    let watches = |api: &FakeApi| {
        api.requests()
            .iter()
            .filter(|r| r.path.ends_with("/clusters") && r.query.contains("watch=true"))
            .count()
    };
    loop {
        let ready = h.cluster().status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready && watches(&h.api) >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reconciled through dropped watches: {} watch attempts; status {:?}",
            watches(&h.api),
            h.cluster().status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.status().inventory.len(), 3);
    // Shutdown: the controllers finish what they run and return.
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("stopped in time")
        .expect("no panic");
}

/// A log sink for the JSON subscriber.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn logs_are_json_lines_and_credentials_in_a_url_reach_no_log_status_or_event() {
    let h = harness();
    let mut cluster = h.api.get(CLUSTER_PATH).expect("cluster");
    cluster["spec"]["source"]["url"] =
        json!("https://odoo:s3cret-PLAINTEXT-MARKER@127.0.0.1:1/intent.git");
    h.api.put(CLUSTER_PATH, cluster);
    // A process-wide subscriber: a thread-scoped one races with tracing's callsite interest cache
    // when other tests run on other threads (events went missing). Other tests' lines land in the
    // same buffer; the assertions below look for this test's URL.
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        let sink = logs.clone();
        let subscriber = vworkspace_controller::telemetry::json_subscriber(
            move || sink.clone(),
            tracing_subscriber::EnvFilter::new("debug"),
        );
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        logs
    });
    assert!(h.pass().await.is_err());
    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8");
    assert!(
        text.lines()
            .any(|l| l.contains("pass failed") && l.contains("127.0.0.1:1/intent.git")),
        "{text}"
    );
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).expect("every line is JSON");
        assert!(event["level"].is_string(), "{line}");
    }
    let (_, reason, message) = h.condition("Ready");
    assert_eq!(reason, "FetchFailed");
    // The URL is named (so the check below means something), without its credentials.
    assert!(message.contains("127.0.0.1:1/intent.git"), "{message}");
    assert!(text.contains("127.0.0.1:1/intent.git"), "{text}");
    let events: Vec<String> = h
        .api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/events"))
        .map(|r| r.body.to_string())
        .collect();
    assert!(!events.is_empty());
    for place in [text.as_str(), message.as_str()]
        .into_iter()
        .chain(events.iter().map(String::as_str))
    {
        assert!(!place.contains("s3cret"), "credential leaked: {place}");
    }
}

/// The settled record holds only under what the pass judged with: after a change of the Cluster's
/// spec, a fresh process on the same commit, with every object as it was, runs the whole pass (the
/// release parsed, the objects read whole) and makes a new record; nothing is written but the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_cluster_spec_is_not_taken_as_settled() {
    let h = harness();
    h.pass().await.expect("first pass");
    let recorded = h.status().settled.expect("recorded");
    let mut cluster = h.api.get(CLUSTER_PATH).expect("cluster");
    cluster["spec"]["source"]["interval"] = json!("10m");
    h.api.edit(CLUSTER_PATH, cluster);

    h.pass().await.expect("pass under the new spec");
    assert_request_discipline(&h.api.requests());
    assert!(lists_whole_instances(&h.api), "the whole objects are read");
    // The status only (the new record, the observed generation); Ready did not change: no Event.
    assert_eq!(h.writes(), [format!("PATCH {CLUSTER_PATH}/status")]);
    let renewed = h.status().settled.expect("a new record");
    assert_ne!(renewed, recorded, "the spec is in the key");

    h.pass().await.expect("settled pass");
    assert_eq!(h.writes(), Vec::<String>::new());
    assert!(
        h.api
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/applicationinstances"))
            .all(Recorded::metadata_only)
    );
}
