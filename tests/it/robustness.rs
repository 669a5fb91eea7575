//! The operator under ownership conflicts, deadlines, rollback floors, permanent refusals, deletion,
//! leader changes and restarts (issue 13), against the recording fake API server: each test asserts
//! the exact requests a pass sends (or must not send).

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::support::harness::{CLUSTER_PATH, Harness, assert_request_discipline, harness};
use crate::support::{AI_PATH, OPS_PATH};
use vworkspace_controller::cluster::{self, Context};
use vworkspace_controller::metrics::Metrics;

fn object_writes(writes: &[String]) -> Vec<&String> {
    writes
        .iter()
        .filter(|w| w.contains("/applicationinstances/") || w.contains("/operations/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_named_object_that_is_not_ours_is_refused_the_rest_applies_and_it_is_never_pruned() {
    let h = harness();
    // Made by hand with kubectl: no labels.
    let handmade = json!({"apiVersion": "apps.vworkspace.io/v1alpha1", "kind": "ApplicationInstance",
        "metadata": {"name": "nextcloud", "namespace": "org-myteam",
                     "managedFields": [{"manager": "kubectl-create", "operation": "Update"}]},
        "spec": {"app": "handmade"}});
    let handmade_path = format!("{AI_PATH}/namespaces/org-myteam/applicationinstances/nextcloud");
    h.api.put(&handmade_path, handmade.clone());
    // Another cluster source's object, same name.
    let foreign_path = format!("{OPS_PATH}/namespaces/org-myteam/operations/nightly");
    let foreign = json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Operation",
        "metadata": {"name": "nightly", "namespace": "org-myteam",
                     "labels": {"app.vworkspace.io/managed-by": "vworkspace", "gitops.vworkspace.io/cluster": "prod"},
                     "managedFields": [{"manager": "vworkspace-gitops", "operation": "Apply"}]},
        "spec": {"type": "Backup", "template": "prod-template", "target": {"applicationInstance": "x"}}});
    h.api.put(&foreign_path, foreign.clone());

    assert!(h.pass().await.is_err(), "a conflict is reported");
    assert_request_discipline(&h.api.requests());
    let writes = h.writes();
    assert_eq!(
        object_writes(&writes),
        [&format!(
            "PATCH {AI_PATH}/namespaces/org-vault/applicationinstances/vaultwarden"
        )],
        "only the object that is free is applied"
    );
    // The declared objects missing from the labelled list were looked up by name.
    let lookups: Vec<String> = h
        .api
        .requests()
        .iter()
        .filter(|r| r.method == Method::GET && r.path.matches('/').count() == 7)
        .filter(|r| r.path.contains("/applicationinstances/") || r.path.contains("/operations/"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(lookups.len(), 3, "{lookups:?}");
    assert_eq!(h.api.get(&handmade_path), Some(handmade.clone()));
    assert_eq!(h.api.get(&foreign_path), Some(foreign.clone()));
    let (status, reason, message) = h.condition("Applied");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "OwnershipConflict")
    );
    assert!(
        message.contains(
            "ApplicationInstance org-myteam/nextcloud held by field managers kubectl-create"
        ),
        "{message}"
    );
    assert!(
        message.contains("Operation org-myteam/nightly held by cluster source prod"),
        "{message}"
    );
    assert!(
        message.contains("gitops.vworkspace.io/adopt=demo"),
        "{message}"
    );
    let names: Vec<String> = h
        .status()
        .inventory
        .iter()
        .map(|i| i.name.clone())
        .collect();
    assert_eq!(
        names,
        ["vaultwarden"],
        "what is not ours is not in the inventory"
    );

    // The same again: no write, no flip-flop.
    assert!(h.pass().await.is_err());
    assert_eq!(h.writes(), Vec::<String>::new());

    // The owner adopts the handmade instance: the next pass takes it over, and owns it.
    let mut adopted = handmade.clone();
    adopted["metadata"]["annotations"] = json!({"gitops.vworkspace.io/adopt": "demo"});
    h.api.put(&handmade_path, adopted);
    assert!(h.pass().await.is_err(), "nightly is still in conflict");
    // The apply, then the merge patch that removes what the hand-made spec held and the release
    // does not declare (`spec.app`): server-side apply alone would leave it.
    assert_eq!(
        object_writes(&h.writes()),
        [
            &format!("PATCH {handmade_path}"),
            &format!("PATCH {handmade_path}")
        ]
    );
    let removal = h
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path == handmade_path && r.method == Method::PATCH)
        .nth(1)
        .expect("the removal");
    assert_eq!(removal.content_type, "application/merge-patch+json");
    assert_eq!(removal.body, json!({"spec": {"app": null}}));
    let live = h.api.get(&handmade_path).expect("adopted");
    assert_eq!(
        live["metadata"]["labels"]["gitops.vworkspace.io/cluster"],
        "demo"
    );
    assert!(h.status().inventory.iter().any(|i| i.name == "nextcloud"));

    // The release stops declaring nightly: the other source's object is not pruned.
    std::fs::remove_file(
        h.fixture
            .repo
            .join("clusters/demo/namespaces/org-myteam/operations/nightly.yaml"),
    )
    .expect("remove");
    h.fixture.release(&[]);
    h.fixture.commit("release 2: nightly retired");
    h.pass().await.expect("no conflict left");
    assert!(
        !h.writes().iter().any(|w| w.starts_with("DELETE")),
        "{:?}",
        h.writes()
    );
    assert_eq!(h.api.get(&foreign_path), Some(foreign));
    assert_eq!(h.condition("Ready").0, "True");
}

/// A context like the harness's, with another pass deadline and fetch time limit.
fn impatient(h: &Harness, pass: Duration, fetch: Duration) -> Arc<Context> {
    let mut settings = h.ctx.settings.clone();
    settings.pass_timeout = pass;
    settings.fetch.timeout = fetch;
    Arc::new(Context::new(
        h.api.client(),
        settings,
        Arc::new(Metrics::default()),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_pass_wrote_before_its_deadline_is_in_the_inventory_and_pruned_when_dropped() {
    let h = harness();
    // The third object's apply hangs past the deadline: two were written, one was in flight.
    h.api.stall(
        Method::PATCH,
        "/applicationinstances/vaultwarden",
        Duration::from_secs(60),
    );
    let ctx = impatient(&h, Duration::from_secs(8), Duration::from_secs(60));
    h.api.clear();
    assert!(
        cluster::reconcile(Arc::new(h.cluster()), ctx)
            .await
            .is_err()
    );
    // The applies run side by side (apply::WRITE_CONCURRENCY): in whatever order they arrive, all
    // three were sent.
    let writes = h.writes();
    let mut sent = object_writes(&writes);
    sent.sort();
    assert_eq!(
        sent,
        [
            &format!("PATCH {AI_PATH}/namespaces/org-myteam/applicationinstances/nextcloud"),
            &format!("PATCH {AI_PATH}/namespaces/org-vault/applicationinstances/vaultwarden"),
            &format!("PATCH {OPS_PATH}/namespaces/org-myteam/operations/nightly"),
        ]
    );
    let (_, reason, message) = h.condition("Ready");
    assert_eq!(reason, "ApiRequestFailed");
    assert!(message.contains("did not finish within 8 s"), "{message}");
    let mut names: Vec<String> = h
        .status()
        .inventory
        .iter()
        .map(|i| i.name.clone())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["nextcloud", "nightly", "vaultwarden"],
        "written, and sent (it may have landed), before the deadline"
    );
    assert_eq!(h.status().last_applied_serial, None);

    // The next release drops nightly before any pass completed: it is pruned, not kept forever.
    std::fs::remove_file(
        h.fixture
            .repo
            .join("clusters/demo/namespaces/org-myteam/operations/nightly.yaml"),
    )
    .expect("remove");
    h.fixture.release(&[]);
    h.fixture.commit("release 2: nightly retired");
    h.pass().await.expect("converges");
    assert!(
        h.writes().contains(&format!(
            "DELETE {OPS_PATH}/namespaces/org-myteam/operations/nightly"
        )),
        "{:?}",
        h.writes()
    );
    assert!(
        h.api
            .get(&format!(
                "{OPS_PATH}/namespaces/org-myteam/operations/nightly"
            ))
            .is_none()
    );
    let mut names: Vec<String> = h
        .status()
        .inventory
        .iter()
        .map(|i| i.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["nextcloud", "vaultwarden"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_git_server_is_a_fetch_failure_not_an_api_failure() {
    let h = harness();
    // A Git server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut cluster = h.api.get(CLUSTER_PATH).expect("cluster");
    cluster["spec"]["source"]["url"] = json!(format!("http://127.0.0.1:{port}/intent.git"));
    h.api.put(CLUSTER_PATH, cluster);
    // The pass deadline comes before the fetch's own time limit.
    let ctx = impatient(&h, Duration::from_secs(2), Duration::from_secs(6));
    assert!(
        cluster::reconcile(Arc::new(h.cluster()), ctx)
            .await
            .is_err()
    );
    let (status, reason, message) = h.condition("Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "FetchFailed"));
    assert!(message.contains("Git server stalled"), "{message}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_min_serial_refuses_a_rollback_after_the_cluster_is_re_created() {
    let h = harness();
    let first = h.fixture.git(&["rev-parse", "HEAD"]).trim().to_owned();
    h.pass().await.expect("release 1");
    h.fixture.write(
        "clusters/demo/namespaces/org-myteam/operations/nightly.yaml",
        &crate::common::BACKUP.replace("velero-namespace-backup", "velero-full-backup"),
    );
    h.fixture.release(&[]);
    h.fixture.commit("release 2");
    h.pass().await.expect("release 2");
    assert_eq!(h.status().last_applied_serial, Some(2));

    // The Cluster is deleted and re-created (its status, the floor it held, is gone), the owner pins
    // the floor in the spec, and the Git host serves the old release 1 again.
    h.fixture.git(&["reset", "-q", "--hard", &first]);
    let mut recreated = h.api.get(CLUSTER_PATH).expect("cluster");
    recreated.as_object_mut().expect("object").remove("status");
    recreated["spec"]["release"]["minSerial"] = json!(2);
    // History rewrites allowed, so that the pinned floor alone refuses it (otherwise the ancestry
    // base the live objects record, plan::floor::restore, refuses it first: HistoryInvalid).
    recreated["spec"]["policy"]["allowHistoryRewrite"] = json!(true);
    h.api.put(CLUSTER_PATH, recreated);
    assert!(h.pass().await.is_err());
    assert!(
        object_writes(&h.writes()).is_empty(),
        "nothing applied: {:?}",
        h.writes()
    );
    let (status, reason, message) = h.condition("Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ReleaseInvalid")
    );
    assert!(
        message.contains("serial 1 is below spec.release.minSerial 2"),
        "{message}"
    );
    assert_eq!(h.status().last_applied_serial, None);
    let nightly = h
        .api
        .get(&format!(
            "{OPS_PATH}/namespaces/org-myteam/operations/nightly"
        ))
        .expect("nightly");
    assert_eq!(
        nightly["spec"]["template"], "velero-full-backup",
        "release 2 stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_is_stalled_until_the_interval_and_a_transient_failure_backs_off() {
    let h = harness();
    h.pass().await.expect("first pass");
    // An unsigned commit: refused, and trying again in 5 s cannot change that.
    h.fixture.write(
        "clusters/demo/namespaces/org-myteam/operations/nightly.yaml",
        &crate::common::BACKUP.replace("velero-namespace-backup", "other-template"),
    );
    h.fixture.git(&["add", "-A"]);
    h.fixture.git(&[
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "-m",
        "unsigned",
    ]);
    let refused = h.pass().await.expect_err("refused");
    let (status, reason, _) = h.condition("Stalled");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "CommitSignatureInvalid")
    );
    let cluster = h.cluster();
    for _ in 0..3 {
        let after = cluster::retry_after(&cluster, &refused, &h.ctx);
        assert!(
            after >= Duration::from_secs(270) && after <= Duration::from_secs(330),
            "a stalled Cluster waits for its 5m interval (or a change), not {after:?}"
        );
    }
    // The Git server is back to a signed commit but the API server fails: transient, backs off
    // from 5 s, and the Cluster is no longer Stalled.
    h.fixture.git(&["reset", "-q", "--hard", "HEAD~1"]);
    h.api.fault(Method::GET, "/configmaps/trust", 500);
    let transient = h.pass().await.expect_err("API failure");
    assert_eq!(h.condition("Ready").1, "ApiRequestFailed");
    assert!(
        !h.status().conditions.iter().any(|c| c.type_ == "Stalled"),
        "a transient failure is not Stalled"
    );
    let first = cluster::retry_after(&h.cluster(), &transient, &h.ctx);
    let second = cluster::retry_after(&h.cluster(), &transient, &h.ctx);
    assert!(
        first >= Duration::from_millis(4500) && first < Duration::from_millis(5500),
        "{first:?}"
    );
    assert!(
        second >= Duration::from_secs(9) && second < Duration::from_secs(11),
        "{second:?}"
    );
    h.pass().await.expect("recovered");
    assert!(!h.status().conditions.iter().any(|c| c.type_ == "Stalled"));
}

fn mark_deleted(h: &Harness) {
    let mut cluster = h.api.get(CLUSTER_PATH).expect("cluster");
    cluster["metadata"]["deletionTimestamp"] = json!("2026-11-29T00:00:00Z");
    h.api.put(CLUSTER_PATH, cluster);
}

const FINALIZER: &str = "gitops.vworkspace.io/cleanup";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cluster_orphans_by_default_and_forgets_it() {
    let h = harness();
    h.pass().await.expect("first pass");
    assert_eq!(
        h.writes().first().map(String::as_str),
        Some(format!("PATCH {CLUSTER_PATH}").as_str()),
        "the finalizer comes before any other write"
    );
    let finalizer = h.api.requests()[h
        .api
        .requests()
        .iter()
        .position(|r| r.path == CLUSTER_PATH && r.method == Method::PATCH)
        .expect("finalizer write")]
    .clone();
    assert_eq!(finalizer.body["metadata"]["finalizers"], json!([FINALIZER]));
    assert!(
        finalizer.body.get("spec").is_none(),
        "the apply holds the finalizer only"
    );
    assert_eq!(
        h.api.get(CLUSTER_PATH).expect("cluster")["metadata"]["finalizers"],
        json!([FINALIZER])
    );
    assert!(h.ctx.remembers("demo"));
    assert!(h.ctx.declared.release("demo").is_some());
    // A second pass does not write the finalizer again.
    h.pass().await.expect("second pass");
    assert_eq!(h.writes(), Vec::<String>::new());

    mark_deleted(&h);
    h.pass().await.expect("finalized");
    assert_eq!(
        h.writes(),
        [format!("PATCH {CLUSTER_PATH}")],
        "only the finalizer goes"
    );
    assert!(h.api.get(CLUSTER_PATH).is_none(), "the Cluster is gone");
    assert_eq!(
        h.api
            .list(&format!("{AI_PATH}/applicationinstances"), "")
            .len(),
        2,
        "Orphan leaves what it applied"
    );
    assert!(!h.ctx.remembers("demo"), "its memo is dropped");
    assert!(
        h.ctx.declared.release("demo").is_none(),
        "and its declared set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cluster_with_policy_delete_prunes_its_inventory_and_nothing_else() {
    let h = harness();
    let mut cluster = h.api.get(CLUSTER_PATH).expect("cluster");
    cluster["spec"]["deletionPolicy"] = json!("Delete");
    h.api.put(CLUSTER_PATH, cluster);
    h.pass().await.expect("first pass");
    let handmade = format!("{OPS_PATH}/namespaces/org-myteam/operations/handmade");
    h.api.put(
        &handmade,
        json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Operation",
               "metadata": {"name": "handmade", "namespace": "org-myteam"},
               "spec": {"type": "Backup", "template": "t", "target": {"applicationInstance": "x"}}}),
    );
    mark_deleted(&h);
    // A failed delete keeps the finalizer: nothing is lost, the next attempt finishes.
    h.api.fault(Method::DELETE, "/operations/nightly", 500);
    assert!(h.pass().await.is_err());
    let mut first_attempt = h.writes();
    first_attempt.sort();
    assert_eq!(
        first_attempt,
        [
            format!("DELETE {AI_PATH}/namespaces/org-myteam/applicationinstances/nextcloud"),
            format!("DELETE {AI_PATH}/namespaces/org-vault/applicationinstances/vaultwarden"),
            format!("DELETE {OPS_PATH}/namespaces/org-myteam/operations/nightly"),
        ]
    );
    assert_eq!(
        h.api.get(CLUSTER_PATH).expect("still there")["metadata"]["finalizers"],
        json!([FINALIZER])
    );
    assert!(h.ctx.remembers("demo"));
    h.pass().await.expect("finalized");
    assert_eq!(
        h.writes(),
        [
            format!("DELETE {OPS_PATH}/namespaces/org-myteam/operations/nightly"),
            format!("PATCH {CLUSTER_PATH}"),
        ],
        "what is already gone is not deleted again"
    );
    assert!(
        h.api
            .list(&format!("{AI_PATH}/applicationinstances"), "")
            .is_empty()
    );
    assert!(h.api.get(CLUSTER_PATH).is_none());
    assert!(h.api.get(&handmade).is_some(), "not ours, not deleted");
    assert!(!h.ctx.remembers("demo"));
}

const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/vworkspace-system/leases/vworkspace-app-operator";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_stall_mid_pass_writes_nothing_after_its_fence() {
    use std::time::Instant;
    use vworkspace_controller::fence::Fence;
    use vworkspace_controller::runtime::leader::{self, Elector, Timing};
    let h = harness();
    h.api.put(
        LEASE_PATH,
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "vworkspace-app-operator", "namespace": "vworkspace-system", "resourceVersion": "1"},
               "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15}}),
    );
    let fence = Fence::leased();
    let timing = Timing {
        retry: Duration::from_millis(200),
        renew_deadline: Duration::from_secs(2),
    };
    let elector = Elector::new(h.api.client(), "vworkspace-system", "pod-a".into());
    assert!(leader::acquire(&elector, &fence, &timing, std::future::pending()).await);
    let renewing = {
        let fence = fence.clone();
        tokio::spawn(async move {
            leader::keep(&elector, &fence, &timing).await;
            Instant::now()
        })
    };
    let mut ctx = Context::new(
        h.api.client(),
        h.ctx.settings.clone(),
        Arc::new(Metrics::default()),
    );
    ctx.fence = fence.clone();
    let ctx = Arc::new(ctx);

    // The pass's third apply hangs for 8 s; while it is in flight, the renewals stall.
    h.api.stall(
        Method::PATCH,
        "/applicationinstances/vaultwarden",
        Duration::from_secs(8),
    );
    let pass = tokio::spawn(cluster::reconcile(Arc::new(h.cluster()), ctx));
    let in_flight = |api: &crate::support::fake_api::FakeApi| {
        api.requests().into_iter().find(|r| {
            r.method == Method::PATCH && r.path.ends_with("/applicationinstances/vaultwarden")
        })
    };
    let waited = Instant::now();
    let stalled_apply = loop {
        if let Some(r) = in_flight(&h.api) {
            break r;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the pass never got to its third apply"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    h.api
        .stall(Method::GET, "/leases/", Duration::from_secs(120));
    let blocked = Instant::now();

    let outcome = tokio::time::timeout(Duration::from_secs(30), pass)
        .await
        .expect("the pass ends at the fence, not when the API server answers")
        .expect("no panic");
    assert!(
        matches!(outcome, Err(vworkspace_controller::Error::NotLeader)),
        "{outcome:?}"
    );
    let deadline = fence.deadline().expect("a leased fence");
    assert!(
        deadline <= blocked + timing.renew_deadline,
        "the fence is the last renewal sent before the stall plus the renew deadline"
    );
    assert!(!fence.held());
    let stopped = tokio::time::timeout(Duration::from_secs(10), renewing)
        .await
        .expect("the renewer gives up at the fence")
        .expect("no panic");
    assert!(stopped >= deadline);

    // Past the moment the stalled apply would have been answered: nothing written after the fence.
    tokio::time::sleep_until(tokio::time::Instant::from_std(
        stalled_apply.at + Duration::from_secs(9),
    ))
    .await;
    let late: Vec<String> = h
        .api
        .requests()
        .iter()
        .filter(|r| r.is_write() && !r.path.contains("/leases") && r.at >= deadline)
        .map(|r| r.line())
        .collect();
    assert_eq!(late, Vec::<String>::new(), "writes after the fence");
    assert!(
        h.api
            .get(&format!(
                "{AI_PATH}/namespaces/org-vault/applicationinstances/vaultwarden"
            ))
            .is_none(),
        "the apply in flight was abandoned"
    );
    assert!(
        h.status().last_applied_serial.is_none(),
        "no status written for the abandoned pass"
    );
}

/// Serves one connection of a stalling API server for a `run` process: answers `/version`, lists
/// (one `Cluster`, nothing else), the finalizer apply; never answers a watch nor the pass's first
/// read (the trust ConfigMap), and says when that read arrived.
async fn stalling_connection(
    mut socket: tokio::net::TcpStream,
    cluster: Value,
    stalled: tokio::sync::mpsc::UnboundedSender<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + length);
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let answer = if query.contains("watch=true") {
            None
        } else if path.contains("/configmaps/") {
            let _ = stalled.send(());
            None
        } else if path == "/version" {
            Some(
                json!({"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux/amd64"}),
            )
        } else if path.ends_with("/clusters") {
            Some(
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": [cluster.clone()]}),
            )
        } else if path.ends_with("/clusters/demo") {
            Some(cluster.clone())
        } else {
            Some(
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
            )
        };
        let Some(answer) = answer else {
            // Stalled: hold the connection, answer nothing.
            std::future::pending::<()>().await;
            return;
        };
        let body = answer.to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_pass_against_a_stalled_api_server_exits_within_the_pod_grace() {
    use std::time::Instant;
    let h = harness();
    let mut cluster = h.api.get(CLUSTER_PATH).expect("cluster");
    cluster["metadata"]["finalizers"] = json!(["gitops.vworkspace.io/cleanup"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stalled_tx, mut stalled_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(stalling_connection(
                socket,
                cluster.clone(),
                stalled_tx.clone(),
            ));
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n"),
    )
    .expect("kubeconfig");
    let log = std::fs::File::create(dir.path().join("stderr")).expect("log");
    let mut child = std::process::Command::new(crate::common::BIN)
        .args([
            "run",
            "--namespace",
            "vworkspace-system",
            "--health-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--cache-dir",
        ])
        .arg(dir.path().join("cache"))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run");
    let reached = tokio::time::timeout(Duration::from_secs(60), stalled_rx.recv()).await;
    if reached.is_err() {
        let _ = child.kill();
    }
    assert!(
        matches!(reached, Ok(Some(()))),
        "the pass never reached the API server: {}",
        std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
    );
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let exited = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if signalled.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = signalled.elapsed();
    server.abort();
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    let status = exited.unwrap_or_else(|| panic!("still running 40 s after SIGTERM: {stderr}"));
    assert!(
        took < Duration::from_secs(30),
        "exited {took:?} after SIGTERM, past the Pod's 30 s grace: {stderr}"
    );
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_the_api_server_re_encodes_do_not_cause_an_update_on_every_pass() {
    let h = harness();
    h.fixture.write(
        "clusters/demo/namespaces/org-myteam/applicationinstances/wiki.yaml",
        "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: wiki\nspec:\n  chart:\n    repository: https://charts.example.org\n    name: wiki\n    version: 1.0.0\n  values:\n    replicas: 1.0\n    quota: 18446744073709551615\n    exact: 9007199254740993\n    unsigned: 12345678901234567890\n",
    );
    h.fixture.release(&[]);
    h.fixture.commit("release 2: wiki");
    h.pass().await.expect("applied");
    let path = format!("{AI_PATH}/namespaces/org-myteam/applicationinstances/wiki");
    let sent = h.api.get(&path).expect("wiki");
    assert_eq!(sent["spec"]["values"]["replicas"].to_string(), "1.0");
    // The API server keeps and returns the values as Go re-encodes them.
    let mut stored = sent.clone();
    stored["spec"]["values"]["replicas"] = json!(1);
    stored["spec"]["values"]["quota"] = json!(1.8446744073709552e19);
    // The real kube-apiserver writes a float64 below 1e21 in plain digits: an integer to serde_json
    // (control_plane::numbers_the_api_server_re_encodes_do_not_cause_a_write_on_every_pass).
    stored["spec"]["values"]["unsigned"] =
        serde_json::from_str::<Value>("12345678901234567000").expect("number");
    h.api.put(&path, stored);
    for _ in 0..2 {
        h.pass().await.expect("no-op pass");
        assert_eq!(
            h.writes(),
            Vec::<String>::new(),
            "a no-op pass writes nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_cut_by_a_stop_records_what_it_wrote() {
    let h = harness();
    let ctx = impatient(&h, Duration::from_secs(600), Duration::from_secs(60));
    h.api.stall(
        Method::PATCH,
        "/applicationinstances/vaultwarden",
        Duration::from_secs(60),
    );
    h.api.clear();
    let pass = tokio::spawn(cluster::reconcile(Arc::new(h.cluster()), ctx.clone()));
    let waited = std::time::Instant::now();
    while !h
        .api
        .requests()
        .iter()
        .any(|r| r.method == Method::PATCH && r.path.ends_with("/applicationinstances/vaultwarden"))
    {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "never reached the third apply"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGTERM: the stop closes at once here (the runtime gives running passes 10 s).
    ctx.stopping.close_at(std::time::Instant::now());
    let outcome = tokio::time::timeout(Duration::from_secs(10), pass)
        .await
        .expect("cut at the stop")
        .expect("no panic");
    assert!(outcome.is_err());
    let (_, reason, message) = h.condition("Ready");
    assert_eq!(reason, "Interrupted");
    assert!(
        message.contains("the next process takes it up"),
        "{message}"
    );
    let mut names: Vec<String> = h
        .status()
        .inventory
        .iter()
        .map(|i| i.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["nextcloud", "nightly", "vaultwarden"]);
}
