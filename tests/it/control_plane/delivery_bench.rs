//! The delivery bench (not a timed test: ignored, run by scripts/delivery-bench.sh, it asserts the
//! walk works and prints medians, never compares a time with a goal). Against the real Flux: a
//! signed release that changes one inline value, committed, then announced by a signed push
//! webhook to the operator's receiver (`run --receiver-addr`, generic HMAC-SHA256, as a forge sends
//! it); from the moment the push is sent until (p) the pass that applies the new commit started (its
//! `pass succeeded` log line's timestamp less its `duration_ms`), (a) the operator has applied the
//! HelmRelease's new generation, (b) helm-controller says Ready for it, (c) the chart's ConfigMap
//! shows the value, and (d) the instance says Ready; and the lag from helm-controller's Ready to the
//! instance's. Times (a) to (d) are read by polling every 20 ms.

use std::time::{Duration, Instant, SystemTime};

use super::chart_server::ChartServer;
use super::delivery::{Flux, FluxLeftovers, declare_app, flux_bin, object, ready_of};
use super::fixture::Intent;
use super::forge::{TOKEN, generic_signature};
use super::server::*;
use super::{AI, Scope, env, operator_cmd};

const HR: &str = "helm.toolkit.fluxcd.io/v2";

/// How many signed releases are measured.
fn rounds() -> usize {
    std::env::var("VWS_DELIVERY_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(7)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

/// The times of one release, from the push.
#[derive(Default, Debug, Clone, Copy)]
struct Round {
    pass_started: Option<Duration>,
    applied: Option<Duration>,
    helm_ready: Option<Duration>,
    rendered: Option<Duration>,
    instance_ready: Option<Duration>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a bench: scripts/delivery-bench.sh"]
async fn delivery_bench() {
    let test = "delivery_bench";
    let Some(env) = env(test).await else {
        return;
    };
    let Some(bin) = flux_bin(test) else {
        return;
    };
    super::delivery::install_flux_crds(&env.admin, &bin).await;
    let (ns, name) = ("cp-delivery-bench", "bench");
    let intent = Intent::new("cp-delivery-bench");
    let scope = Scope::new(&env, &intent, &[ns]).await;
    let charts = ChartServer::start(&scope.dir).await;
    charts.publish("demo", "0.1.0");
    let repo = charts.helm_url();
    let chart = (repo.as_str(), "demo", "0.1.0");
    declare_app(&intent, ns, name, chart, "h0.example.org", "pw");
    intent.release(&[]);
    intent.commit("release 0");
    let _leftovers = FluxLeftovers {
        kubeconfig: env.cp.kubeconfig.clone(),
        ns: ns.to_owned(),
    };
    let _webhook = super::webhook_replica(&env, &scope.dir).await;
    let flux = Flux::start(&env, &bin, &scope.dir, &charts.ca);
    let token_file = scope.dir.join("receiver-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let port = free_port();
    let mut cmd = operator_cmd(&env, &scope.dir);
    cmd.args(["--receiver-addr", &format!("127.0.0.1:{port}")])
        .arg("--receiver-token-file")
        .arg(&token_file);
    let operator = Proc::spawn(&mut cmd, &scope.dir, "operator");
    let hook = format!(
        "http://127.0.0.1:{port}{}",
        vworkspace_controller::receiver::hook_path(TOKEN.as_bytes())
    );
    wait_for("the first install", 300, || async {
        let ai = object(&env.admin, AI, "ApplicationInstance", ns, name).await?;
        (ready_of(&ai)?.0 == "True").then_some(())
    })
    .await;

    let mut all = Vec::new();
    for round in 1..=rounds() {
        let host = format!("h{round}.example.org");
        declare_app(&intent, ns, name, chart, &host, "pw");
        let before = object(&env.admin, HR, "HelmRelease", ns, name)
            .await
            .and_then(|hr| hr["metadata"]["generation"].as_i64())
            .unwrap_or_default();
        intent.release(&[]);
        intent.commit(&format!("release {round}"));
        let head = intent.git(&["rev-parse", "HEAD"]);
        let (start, pushed) = (Instant::now(), SystemTime::now());
        push(&hook, &intent).await;
        let mut r = Round::default();
        let deadline = start + Duration::from_secs(180);
        while r.instance_ready.is_none() || r.rendered.is_none() {
            assert!(
                Instant::now() < deadline,
                "round {round}: {r:?}\n{}",
                flux.logs()
            );
            let at = start.elapsed();
            if let Some(hr) = object(&env.admin, HR, "HelmRelease", ns, name).await {
                let generation = hr["metadata"]["generation"].as_i64().unwrap_or_default();
                if generation > before {
                    r.applied.get_or_insert(at);
                    if ready_of(&hr).is_some_and(|c| c.0 == "True" && c.3 == Some(generation)) {
                        r.helm_ready.get_or_insert(at);
                    }
                }
            }
            let cm = object(
                &env.admin,
                "v1",
                "ConfigMap",
                ns,
                &format!("{name}-rendered"),
            )
            .await;
            if cm.is_some_and(|cm| cm["data"]["host"] == host.as_str()) {
                r.rendered.get_or_insert(at);
            }
            if r.helm_ready.is_some()
                && let Some(ai) = object(&env.admin, AI, "ApplicationInstance", ns, name).await
                && ready_of(&ai).is_some_and(|c| c.0 == "True")
                && ai["status"]["observedGeneration"] == ai["metadata"]["generation"]
            {
                r.instance_ready.get_or_insert(at);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        r.pass_started =
            pass_started(&operator.stderr(), &head).and_then(|at| at.duration_since(pushed).ok());
        eprintln!("delivery round {round}: {r:?}");
        all.push(r);
    }
    let pick = |f: fn(&Round) -> Option<Duration>| median(all.iter().filter_map(f).collect());
    let lag = median(
        all.iter()
            .filter_map(|r| Some(r.instance_ready?.saturating_sub(r.helm_ready?)))
            .collect(),
    );
    eprintln!(
        "delivery bench ({} releases, medians from the signed push): pass started {:?}, HelmRelease applied {:?}, helm-controller Ready {:?}, chart objects updated {:?}, instance Ready {:?}; instance Ready after helm-controller's {:?}",
        all.len(),
        pick(|r| r.pass_started),
        pick(|r| r.applied),
        pick(|r| r.helm_ready),
        pick(|r| r.rendered),
        pick(|r| r.instance_ready),
        lag,
    );
}

/// Sends the signed push of `intent`'s branch to the receiver at `hook` (accepted: 202).
async fn push(hook: &str, intent: &Intent) {
    let body = serde_json::to_vec(
        &serde_json::json!({"ref": "refs/heads/main", "repository": intent.url()}),
    )
    .expect("json");
    let answer = reqwest::Client::new()
        .post(hook)
        .header("X-Signature", generic_signature(&body))
        .body(body)
        .send()
        .await
        .expect("the receiver answers");
    assert_eq!(answer.status().as_u16(), 202, "the signed push is accepted");
}

/// When the pass that applied `commit` started, from the operator's JSON log: the `pass succeeded`
/// line of that commit, its `timestamp` less its `duration_ms`.
fn pass_started(log: &str, commit: &str) -> Option<SystemTime> {
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["message"] == "pass succeeded" && e["commit"] == commit)?;
    let ended: jiff::Timestamp = line["timestamp"].as_str()?.parse().ok()?;
    let took = Duration::from_millis(line["duration_ms"].as_u64()?);
    SystemTime::from(ended).checked_sub(took)
}
