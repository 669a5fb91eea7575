//! The manifests in `deploy/` grant no more than the seed RBAC model and run PSA-restricted.

use serde_json::Value;

fn documents() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("read");
            let parsed: Vec<Value> = serde_saphyr::from_str_multiple(&text).expect("yaml");
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            docs.extend(parsed.into_iter().map(|d| (name.clone(), d)));
        }
    }
    docs
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rbac_never_grants_what_the_seed_forbids() {
    let docs = documents();
    let roles: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")))
        .collect();
    assert!(
        roles.len() >= 2,
        "a ClusterRole and the vworkspace-system Role"
    );
    for role in roles {
        let cluster_wide = role["kind"] == "ClusterRole";
        for rule in role["rules"].as_array().expect("rules") {
            let resources = strings(&rule["resources"]);
            let verbs = strings(&rule["verbs"]);
            assert!(!verbs.iter().any(|v| v == "*"), "no wildcard verbs: {rule}");
            assert!(
                !resources.iter().any(|r| r == "*"),
                "no wildcard resources: {rule}"
            );
            if resources.iter().any(|r| r == "secrets") {
                assert!(!cluster_wide, "no verb on secrets cluster-wide: {rule}");
                assert_eq!(verbs, ["get"], "secrets by get on a name only: {rule}");
            }
            assert!(
                !resources.iter().any(|r| r == "pods/exec"),
                "no pods/exec: {rule}"
            );
            if resources.iter().any(|r| r == "clusterrolebindings") {
                assert!(
                    !verbs.iter().any(|v| v == "create"),
                    "no create on clusterrolebindings: {rule}"
                );
            }
        }
    }
}

#[test]
fn cluster_role_is_exactly_the_seeds() {
    let docs = documents();
    let role = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "ClusterRole")
        .expect("ClusterRole");
    let all = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    let expected: Vec<(Vec<&str>, Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["apps.vworkspace.io"],
            vec![
                "applicationinstances",
                "applicationinstances/status",
                "applicationinstances/finalizers",
            ],
            all.to_vec(),
        ),
        (
            vec!["ops.vworkspace.io"],
            vec![
                "operations",
                "operations/status",
                "operations/finalizers",
                "clusters",
                "clusters/status",
            ],
            all.to_vec(),
        ),
        (
            vec!["apiextensions.k8s.io"],
            vec!["customresourcedefinitions"],
            vec!["get", "list", "watch"],
        ),
        (vec![""], vec!["namespaces"], vec!["get", "list", "watch"]),
        (vec![""], vec!["events"], vec!["create", "patch"]),
        (vec!["coordination.k8s.io"], vec!["leases"], all.to_vec()),
    ];
    let actual: Vec<(Vec<String>, Vec<String>, Vec<String>)> = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            )
        })
        .collect();
    let expected: Vec<(Vec<String>, Vec<String>, Vec<String>)> = expected
        .into_iter()
        .map(|(g, r, v)| {
            let own = |x: Vec<&str>| x.into_iter().map(str::to_owned).collect::<Vec<_>>();
            (own(g), own(r), own(v))
        })
        .collect();
    assert_eq!(actual, expected);
    let binding = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .expect("binding");
    assert_eq!(binding["subjects"][0]["name"], "vworkspace-app-operator");
    assert_eq!(binding["subjects"][0]["namespace"], "vworkspace-system");
}

#[test]
fn deployment_is_psa_restricted() {
    let docs = documents();
    let deployment = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "vworkspace-app-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for container in pod["containers"].as_array().expect("containers") {
        let sc = &container["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
        assert!(container["resources"]["requests"]["memory"].is_string());
        assert!(container["resources"]["limits"]["memory"].is_string());
    }
    let namespace = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "Namespace")
        .expect("Namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}
