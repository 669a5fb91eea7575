//! The API server answering 429 and 500 under a burst (issue 24), on the real control plane: the
//! operator (`run`, as its ServiceAccount) talks to kube-apiserver through the test's fault proxy
//! (`support::fault_proxy`), which, once the first pass is writing the estate of
//! [`faults::TOTAL`] instances, answers 3 of every 4 requests itself for [`BURST`], alternately 429
//! (`Retry-After: 1`) and 500. Proves: the operator backs off (the requests it sends in the burst
//! stay far below what a client retrying at once would send), the status never claims `Ready` for
//! an estate that is not all there, and afterwards the estate converges exactly as the other fault
//! tests require (release applied and Ready, every instance there and no other, the inventory
//! exact, one Job), with no object of the estate deleted on the way.

use super::faults::{TOTAL, assert_converged, estate, until_mid_pass};
use super::*;
use crate::support::fault_proxy::{Counts, FaultProxy};
use std::sync::atomic::{AtomicBool, Ordering};

/// How long the proxy refuses.
const BURST: Duration = Duration::from_secs(30);

/// The most requests the operator may send in the burst: about 33 a second. A client that retried
/// at once would send thousands a second (a refusal takes well under a millisecond on loopback);
/// the operator's own work in that time (16 writes in flight per pass attempt, passes retried after
/// 5, 10, 20 s, instance reconciles retried after 30 s, watches re-established with back-off) is a
/// few hundred requests.
const MOST_REQUESTS_IN_BURST: u64 = 1000;

/// Samples the Cluster every half second until `done`: each time it says `Ready=True`, release 1
/// must be applied and every declared instance exist. Returns how many samples said Ready.
async fn status_stays_truthful(env: &Env, scope: &Scope, ns: &str, done: &AtomicBool) -> usize {
    let mut ready_samples = 0;
    while !done.load(Ordering::SeqCst) {
        let cluster = scope.cluster(&env.admin).await;
        let ready = cluster["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready {
            ready_samples += 1;
            let live = dynamic_api(&env.admin, AI, "ApplicationInstance", Some(ns))
                .await
                .list(&ListParams::default())
                .await
                .map(|l| l.items.len())
                .unwrap_or_default();
            assert_eq!(
                cluster["status"]["lastAppliedSerial"], 1,
                "Ready only once release 1 is applied: {}",
                cluster["status"]
            );
            assert_eq!(live, TOTAL, "Ready only with every declared instance there");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ready_samples
}

/// Deletes of the estate's objects (instances, Operations) the operator sent since `audit`'s mark.
fn estate_deletes(audit: &Audit) -> Vec<String> {
    object_writes(&audit.writes_by(OPERATOR_USER))
        .into_iter()
        .filter(|w| w.starts_with("delete "))
        .filter(|w| w.contains("/applicationinstances/") || w.contains("/operations/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_answering_429_and_500_in_a_burst_is_backed_off_then_converges() {
    let test = "the_api_server_answering_429_and_500_in_a_burst_is_backed_off_then_converges";
    let Some(env) = env(test).await else {
        return;
    };
    let ns = "cp-fault-burst-a";
    let (_intent, scope) = estate(&env, "cp-fault-burst", ns).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let (server, ca) = server_and_ca(&env.cp.kubeconfig);
    let proxy = FaultProxy::start(&scope.dir, &server, Path::new(&ca)).await;
    let kubeconfig = scope.dir.join("through-the-proxy.kubeconfig");
    proxy.kubeconfig(&env.shared.operator_kubeconfig, &kubeconfig);
    let audit = Audit::mark(&env.cp.audit_log);
    let dir = scope.dir.join("run");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = operator_cmd(&env, &dir);
    cmd.env("KUBECONFIG", &kubeconfig);
    let mut run = Proc::spawn(&mut cmd, &dir, "run");

    let before = until_mid_pass(&audit).await;
    assert!(
        proxy.counts().forwarded > 0,
        "the operator talks through the proxy"
    );
    let done = AtomicBool::new(false);
    let (counts, ready_samples): (Counts, usize) = tokio::join!(
        async {
            let counts = proxy.burst_for(3, 4, BURST).await;
            done.store(true, Ordering::SeqCst);
            counts
        },
        status_stays_truthful(&env, &scope, ns, &done)
    );
    let written = super::faults::instance_writes(&audit);
    println!(
        "burst of {}s from {before} of {TOTAL} instances written: {} requests ({:.1}/s), {} answered 429, {} answered 500, {} forwarded; {written} instances written by its end; Ready in {ready_samples} samples",
        BURST.as_secs(),
        counts.total(),
        counts.total() as f64 / BURST.as_secs_f64(),
        counts.refused_429,
        counts.refused_500,
        counts.forwarded,
    );
    assert!(
        before < TOTAL,
        "the burst came mid-pass ({before} of {TOTAL})"
    );
    assert!(
        counts.refused_429 > 0 && counts.refused_500 > 0,
        "the operator met both refusals: {counts:?}"
    );
    assert!(
        counts.total() < MOST_REQUESTS_IN_BURST,
        "the operator backs off: {counts:?} in {BURST:?}\n{}",
        run.stderr()
    );

    // The pass in flight met the refusals and said so (its status then says why it is not Ready).
    let log = run.stderr();
    assert!(
        log.lines().any(|l| l.contains("pass failed")),
        "a pass failed on the refusals: {log}"
    );
    let ended = std::time::Instant::now();
    assert_converged(&env, &scope, ns, 1, &run.stderr()).await;
    println!(
        "converged {:.1}s after the burst",
        ended.elapsed().as_secs_f64()
    );
    assert_eq!(
        estate_deletes(&audit),
        Vec::<String>::new(),
        "nothing of the estate deleted"
    );
    let after = proxy.counts();
    println!("through the proxy in all: {after:?}");
    run.stop();
}
