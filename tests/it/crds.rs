//! `crds/` is generated from the Rust types; this test fails when the two drift apart.
//! Regenerate with `cargo run -- crdgen --out-dir crds` and commit the result.

use kube::CustomResourceExt;
use serde_json::Value;
use vworkspace_core::crd::{ApplicationInstance, Cluster, Operation};

const REGENERATE: &str = "regenerate with `cargo run -- crdgen --out-dir crds` and commit";

#[test]
fn crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let rendered = vworkspace_core::crd::render_all().expect("render");
    assert_eq!(rendered.len(), 3);
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = rendered.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        on_disk, names,
        "crds/ holds other or missing files; {REGENERATE}"
    );
    for (name, yaml) in rendered {
        let committed = std::fs::read_to_string(dir.join(&name)).expect("read");
        assert!(
            committed == yaml,
            "crds/{name} differs from the Rust types: {REGENERATE}"
        );
    }
}

#[test]
fn rendered_yaml_is_the_crd() {
    // What is written is what kube derives: parse it back with our own loader.
    let limits = vworkspace_core::limits::Limits::default();
    for ((name, yaml), crd) in vworkspace_core::crd::render_all()
        .expect("render")
        .into_iter()
        .zip([ApplicationInstance::crd(), Operation::crd(), Cluster::crd()])
    {
        let parsed =
            vworkspace_core::yaml::parse_document(yaml.as_bytes(), &name, &limits).expect(&name);
        assert_eq!(parsed, serde_json::to_value(&crd).expect("json"), "{name}");
    }
}

fn crd_json(name: &str) -> Value {
    let crd = match name {
        "applicationinstances" => ApplicationInstance::crd(),
        "operations" => Operation::crd(),
        _ => Cluster::crd(),
    };
    serde_json::to_value(crd).expect("json")
}

#[test]
fn names_scopes_and_columns_are_as_designed() {
    let ai = crd_json("applicationinstances");
    assert_eq!(ai["spec"]["group"], "apps.vworkspace.io");
    assert_eq!(ai["spec"]["scope"], "Namespaced");
    assert_eq!(ai["spec"]["names"]["shortNames"], serde_json::json!(["ai"]));
    assert_eq!(ai["spec"]["versions"][0]["name"], "v1alpha1");
    let values = &ai["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["values"];
    assert_eq!(values["type"], "object");
    assert_eq!(values["x-kubernetes-preserve-unknown-fields"], true);

    let op = crd_json("operations");
    assert_eq!(op["spec"]["group"], "ops.vworkspace.io");
    assert_eq!(op["spec"]["scope"], "Namespaced");
    let op_spec = &op["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        op_spec["properties"]["type"]["enum"],
        serde_json::json!(["Backup", "Restore", "Snapshot", "RunCommand", "Workflow"])
    );

    let cluster = crd_json("clusters");
    assert_eq!(cluster["spec"]["group"], "ops.vworkspace.io");
    assert_eq!(cluster["spec"]["scope"], "Cluster");
    let columns: Vec<&str> = cluster["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(columns, ["Ready", "Reason", "Commit", "Serial"]);
    assert_eq!(
        cluster["spec"]["versions"][0]["additionalPrinterColumns"][1]["jsonPath"],
        ".status.conditions[?(@.type==\"Ready\")].reason"
    );
    // Not ambiguous beside Cluster API's and CloudNativePG's `clusters`.
    assert_eq!(
        cluster["spec"]["names"]["shortNames"],
        serde_json::json!(["vwc", "vwcluster"])
    );
    for crd in [&ai, &op, &cluster] {
        assert_eq!(
            crd["spec"]["names"]["categories"],
            serde_json::json!(["vworkspace"])
        );
    }
    let source = &cluster["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["source"]["properties"];
    assert_eq!(source["interval"]["default"], "5m");
    assert_eq!(
        source["ref"]["oneOf"],
        serde_json::json!([
            {"required": ["branch"]},
            {"required": ["tag"]},
            {"required": ["commit"]}
        ])
    );
    let threshold = &cluster["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["release"]["properties"]["threshold"];
    assert_eq!(threshold["minimum"], 1.0);
}

/// Kubernetes' structural-schema rules (what the API server checks on a v1 CRD): every node has a
/// `type` unless it preserves unknown fields; inside `oneOf`/`anyOf`/`allOf`/`not` no `type`,
/// `description`, `default`, `nullable` or properties the parent does not declare.
fn check_structural(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(object) = node.as_object() else {
        return;
    };
    let preserves = object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if !object.contains_key("type") && !preserves {
        problems.push(format!("{path}: no type"));
    }
    let declared: Vec<&String> = object
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().collect())
        .unwrap_or_default();
    for junctor in ["oneOf", "anyOf", "allOf"] {
        for (i, branch) in object
            .get(junctor)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for banned in ["type", "description", "default", "nullable", "items"] {
                if branch.get(banned).is_some() {
                    problems.push(format!("{path}.{junctor}[{i}]: sets {banned}"));
                }
            }
            let mut keys: Vec<String> = branch
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            keys.extend(
                branch
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned),
            );
            for key in keys {
                if !declared.contains(&&key) {
                    problems.push(format!(
                        "{path}.{junctor}[{i}]: {key} not declared by the parent"
                    ));
                }
            }
        }
    }
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            check_structural(child, &format!("{path}.{name}"), problems);
        }
    }
    if let Some(items) = object.get("items") {
        check_structural(items, &format!("{path}[]"), problems);
    }
    if let Some(additional) = object.get("additionalProperties")
        && additional.is_object()
    {
        check_structural(additional, &format!("{path}{{}}"), problems);
    }
}

#[test]
fn schemas_are_structural() {
    for name in ["applicationinstances", "operations", "clusters"] {
        let crd = crd_json(name);
        let mut problems = Vec::new();
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            check_structural(
                &version["schema"]["openAPIV3Schema"],
                &format!("{name}.{}", version["name"]),
                &mut problems,
            );
        }
        assert!(problems.is_empty(), "{name}: {problems:#?}");
    }
}

#[test]
fn the_documented_cluster_example_is_valid() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/crds.md"),
    )
    .expect("docs/crds.md");
    let start = doc.find("```yaml\n").expect("example") + "```yaml\n".len();
    let end = start + doc[start..].find("```").expect("end of example");
    let value = vworkspace_core::yaml::parse_document(
        &doc.as_bytes()[start..end],
        "docs/crds.md",
        &vworkspace_core::limits::Limits::default(),
    )
    .expect("yaml");
    let cluster: Cluster = serde_json::from_value(value).expect("a valid Cluster");
    assert_eq!(cluster.spec.cluster_id, "demo");
    assert_eq!(cluster.spec.release.threshold, 2);
    assert_eq!(
        vworkspace_core::crd::parse_interval(&cluster.spec.source.interval),
        Ok(std::time::Duration::from_secs(300))
    );
}
