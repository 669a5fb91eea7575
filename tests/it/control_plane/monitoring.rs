//! The `/metrics` of a running operator on the real control plane: every metric that
//! deploy/components/monitoring's alert rules and dashboard name is there, and the per-Cluster
//! series carry what the Cluster's status says (Ready, the applied serial, the release expiry), the
//! webhook certificate's expiry is the served certificate's, and this process leads; `kubectl events`
//! shows the pass's apply summary on the Cluster.

use super::*;

async fn scrape(port: u16) -> Option<String> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?;
    response.status().is_success().then_some(())?;
    response.text().await.ok()
}

/// The value of the one series `series` (name and labels, exactly as exposed) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_operator_exports_every_metric_the_alerts_and_the_dashboard_name() {
    let test = "a_running_operator_exports_every_metric_the_alerts_and_the_dashboard_name";
    let Some(env) = env(test).await else {
        return;
    };
    let ns = "cp-metrics-a";
    let intent = Intent::new("cp-metrics");
    intent.add_instance(ns, "wiki", "declared");
    intent.release(&[]);
    intent.commit("release 1");
    let scope = Scope::new(&env, &intent, &[ns]).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let (metrics_port, webhook_port) = (free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .args(["--watch-label-selector", &scope_selector(&env, &scope.dir)])
        .args(["--namespace", SYSTEM, "--cache-dir"])
        .arg(scope.dir.join("cache"))
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--health-addr", "127.0.0.1:0"])
        // Its own webhook listener (the API server calls the shared one): the certificate's expiry
        // is exported from what it serves.
        .arg("--webhook-cert-dir")
        .arg(&env.shared.webhook_dir)
        .args(["--webhook-addr", &format!("127.0.0.1:{webhook_port}")])
        .env("KUBECONFIG", &env.shared.operator_kubeconfig)
        .env("RUST_LOG", "info");
    let mut operator = Proc::spawn(&mut cmd, &scope.dir, "run");
    let ready = format!("vworkspace_cluster_ready{{cluster=\"{}\"}}", scope.name);
    // The expiry is set once the pass's status and Event are written: wait for both, or a scrape
    // could fall between them.
    let expiry = format!(
        "vworkspace_release_expiry_timestamp_seconds{{cluster=\"{}\"}}",
        scope.name
    );
    let text = wait_for("the Cluster Ready in /metrics", 120, || {
        let (ready, expiry) = (ready.clone(), expiry.clone());
        async move {
            scrape(metrics_port)
                .await
                .filter(|t| value(t, &ready) == Some(1.0) && value(t, &expiry).is_some())
        }
    })
    .await;
    operator.stop();

    let missing = crate::monitoring::missing_from(&text, &crate::monitoring::metric_names());
    assert_eq!(missing, Vec::<String>::new(), "{text}");
    let cluster = scope.cluster(&env.admin).await;
    let label = format!("{{cluster=\"{}\"}}", scope.name);
    assert_eq!(
        value(&text, &format!("vworkspace_cluster_release_serial{label}")),
        cluster["status"]["lastAppliedSerial"].as_f64(),
        "{text}"
    );
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(value(&text, &expiry).is_some_and(|e| e > now), "{text}");
    let certificate = value(
        &text,
        "vworkspace_webhook_certificate_expiry_timestamp_seconds",
    );
    assert!(certificate.is_some_and(|e| e > now), "{text}");
    assert_eq!(value(&text, "vworkspace_leader"), Some(1.0), "{text}");
    assert!(
        value(&text, "vworkspace_fetch_duration_seconds_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        value(&text, "vworkspace_objects_applied_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let instances: f64 = ["true", "false", "unknown"]
        .iter()
        .filter_map(|r| {
            value(
                &text,
                &format!("vworkspace_application_instances{{ready=\"{r}\"}}"),
            )
        })
        .sum();
    assert!(instances >= 1.0, "the declared instance is counted: {text}");

    // The pass's apply summary, as `kubectl events` shows it (an Event on the Cluster, in default).
    let events = Command::new("kubectl")
        .args(["events", "-n", "default", "--for"])
        .arg(format!("cluster.ops.vworkspace.io/{}", scope.name))
        .env("KUBECONFIG", &env.cp.kubeconfig)
        .output()
        .expect("kubectl events");
    let shown = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.status.success(),
        "{}",
        String::from_utf8_lossy(&events.stderr)
    );
    assert!(
        shown
            .lines()
            .any(|l| l.contains("Normal") && l.contains(" applied, 0 pruned")),
        "kubectl events shows the apply summary: {shown}"
    );
}
