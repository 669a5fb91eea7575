//! deploy/components/monitoring: the PrometheusRule's alerts pass `promtool check rules` and their unit
//! tests (tests/monitoring/alerts.test.yaml, one or more per alert) under `promtool test rules`, with
//! promtool built from Go modules by `scripts/go-tools.sh build promtool` (scripts/test.sh builds it);
//! the Grafana dashboard is well-formed; and every metric the rules and the dashboard name is one the
//! operator registers. tests/it/control_plane/monitoring.rs checks the same names against the
//! `/metrics` of a running operator on the real control plane.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::support::go_tools;

const COMPONENT: &str = "deploy/components/monitoring";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The PrometheusRule's `spec`: a Prometheus rules file (`groups`).
pub fn rules() -> Value {
    let rule: Value = serde_saphyr::from_str(&read(&format!("{COMPONENT}/prometheusrule.yaml")))
        .expect("prometheusrule.yaml");
    assert_eq!(rule["kind"], "PrometheusRule");
    rule["spec"].clone()
}

fn alerts() -> Vec<Value> {
    rules()["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

pub fn dashboard() -> Value {
    serde_json::from_str(&read(&format!("{COMPONENT}/vworkspace-dashboard.json")))
        .expect("the dashboard is JSON")
}

fn panels() -> Vec<Value> {
    dashboard()["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .cloned()
        .collect()
}

/// The `vworkspace_*` series names in a PromQL expression.
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("vworkspace_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// Every series name the alert rules and the dashboard's queries use.
pub fn metric_names() -> BTreeSet<String> {
    let mut exprs: Vec<String> = alerts()
        .iter()
        .map(|r| r["expr"].as_str().expect("expr").to_owned())
        .collect();
    for panel in panels() {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    exprs.iter().flat_map(|e| names_in(e)).collect()
}

/// The names of `names` that the exposition `text` does not declare: a counter's `_total`, a
/// histogram's `_bucket`/`_count`/`_sum`, a gauge by its name (a family without series yet still
/// has its `# TYPE` line).
pub fn missing_from(text: &str, names: &BTreeSet<String>) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            let declared =
                |base: &str, kind: &str| text.contains(&format!("# TYPE {base} {kind}\n"));
            let as_counter = name
                .strip_suffix("_total")
                .is_some_and(|b| declared(b, "counter"));
            let as_histogram = ["_bucket", "_count", "_sum"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|b| declared(b, "histogram"))
            });
            !(as_counter || as_histogram || declared(name, "gauge"))
        })
        .cloned()
        .collect()
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_registered() {
    let names = metric_names();
    assert!(names.len() >= 12, "{names:?}");
    let metrics = vworkspace_controller::metrics::Metrics::default();
    // A family keyed by Cluster has series once a pass ran; the others are exported from the start.
    metrics
        .release_expiry
        .get_or_create(&vworkspace_controller::metrics::ClusterLabel {
            cluster: "demo".into(),
        })
        .set(1.0);
    let text = metrics.encode();
    assert_eq!(missing_from(&text, &names), Vec::<String>::new(), "{text}");
    // The check itself can fail.
    let unknown: BTreeSet<String> = ["vworkspace_no_such_metric".to_owned()].into();
    assert_eq!(missing_from(&text, &unknown).len(), 1);
}

#[test]
fn the_alerts_pass_promtool_check_and_their_unit_tests() {
    let test = "the_alerts_pass_promtool_check_and_their_unit_tests";
    let promtool = match go_tools::tool("promtool") {
        Ok(path) => path,
        Err(why) => {
            go_tools::skipped(test, &why);
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_json::to_string_pretty(&rules()).expect("json"),
    )
    .expect("write");
    let tests = read("tests/monitoring/alerts.test.yaml");
    std::fs::write(dir.path().join("alerts.test.yaml"), &tests).expect("write");
    for args in [
        ["check", "rules", "rules.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Each alert has a unit test in which it fires.
    let tests: Value = serde_saphyr::from_str(&tests).expect("alerts.test.yaml");
    let fired: BTreeSet<&str> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().expect("alert_rule_test"))
        .filter(|a| a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()))
        .filter_map(|a| a["alertname"].as_str())
        .collect();
    let alerts = alerts();
    let named: BTreeSet<&str> = alerts.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(fired, named, "every alert fires in a unit test");
}

#[test]
fn the_dashboard_is_grafana_json_on_a_chosen_prometheus() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "vworkspace-operator");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a data source variable"
    );
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "unique panel ids"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_u64().expect("x"),
            grid["w"].as_u64().expect("w"),
        );
        assert!(x + w <= 24, "{} fits the grid", panel["title"]);
    }
    let titles: Vec<String> = panels()
        .iter()
        .map(|p| p["title"].as_str().unwrap_or_default().to_owned())
        .collect();
    for panel in panels() {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} queries something", panel["title"]);
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
            assert!(!names_in(target["expr"].as_str().expect("expr")).is_empty());
        }
    }
    // What issue 24 asks the dashboard to show.
    let names = metric_names();
    for wanted in [
        "vworkspace_pass_duration_seconds_count",
        "vworkspace_pass_failures_total",
        "vworkspace_children_refused_total",
        "vworkspace_objects_applied_total",
        "vworkspace_objects_pruned_total",
        "vworkspace_cluster_release_serial",
        "vworkspace_release_expiry_timestamp_seconds",
        "vworkspace_application_instances",
        "vworkspace_fetch_duration_seconds_bucket",
        "vworkspace_pass_duration_seconds_bucket",
        "vworkspace_watch_errors_total",
    ] {
        assert!(
            names.contains(wanted),
            "{wanted} not on the dashboard ({titles:?})"
        );
    }
}
