//! The delivery bench (not a timed test: ignored, run by scripts/delivery-bench.sh, it asserts the
//! walk works and prints medians, never compares a time with a goal). Against the real Flux: a
//! signed release that changes one inline value, from the moment the pass is asked for, until
//! (a) the operator has applied the HelmRelease's new generation, (b) helm-controller says Ready for
//! it, (c) the chart's ConfigMap shows the value, and (d) the instance says Ready; and the lag from
//! helm-controller's Ready to the instance's. Each time is read by polling every 20 ms.

use std::time::{Duration, Instant};

use super::chart_server::ChartServer;
use super::delivery::{
    Flux, FluxLeftovers, declare_app, flux_bin, object, ready_of, release_and_pass,
};
use super::fixture::Intent;
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

/// The times of one release, from the request of the pass.
#[derive(Default, Debug, Clone, Copy)]
struct Round {
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
    let _operator = Proc::spawn(&mut operator_cmd(&env, &scope.dir), &scope.dir, "operator");
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
        let start = Instant::now();
        release_and_pass(&env, &intent, &format!("release {round}")).await;
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
        "delivery bench ({} releases, medians from the pass request): HelmRelease applied {:?}, helm-controller Ready {:?}, chart objects updated {:?}, instance Ready {:?}; instance Ready after helm-controller's {:?}",
        all.len(),
        pick(|r| r.applied),
        pick(|r| r.helm_ready),
        pick(|r| r.rendered),
        pick(|r| r.instance_ready),
        lag,
    );
}
