//! A small RBAC evaluator over `deploy/`'s manifests (what `kubectl kustomize overlays/velero`
//! renders: deploy/ with the optional Velero component, as the Backup and Restore tests need): which
//! requests the operator's ServiceAccount may send. Not the API server's authorizer, but the same
//! rule semantics: groups, resources (with subresources), verbs, resourceNames.
#![allow(dead_code)]

use http::Method;
use serde_json::Value;

use super::fake_api::Recorded;

/// One RBAC rule as `deploy/` writes it.
pub struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

fn list_of(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn rules_of(role: &Value) -> Vec<Rule> {
    role["rules"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| Rule {
                    groups: list_of(&r["apiGroups"]),
                    resources: list_of(&r["resources"]),
                    verbs: list_of(&r["verbs"]),
                    names: list_of(&r["resourceNames"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The rights `deploy/` gives the operator's ServiceAccount: cluster-wide rules, rules per namespace
/// (the vworkspace-system Role) and the rules of the ClusterRole bound in each managed namespace.
pub struct DeployRbac {
    pub cluster_wide: Vec<Rule>,
    pub namespaced: Vec<(String, Vec<Rule>)>,
    pub per_managed_namespace: Vec<Rule>,
}

pub fn deploy_rbac() -> DeployRbac {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let kustomization: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(dir.join("kustomization.yaml")).expect("read"),
    )
    .expect("yaml");
    let mut docs: Vec<Value> = Vec::new();
    let mut files = list_of(&kustomization["resources"]);
    let velero: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(dir.join("components/velero/kustomization.yaml")).expect("read"),
    )
    .expect("yaml");
    files.extend(
        list_of(&velero["resources"])
            .into_iter()
            .map(|f| format!("components/velero/{f}")),
    );
    for file in files {
        let text = std::fs::read_to_string(dir.join(file)).expect("read");
        let parsed: Vec<Value> = serde_saphyr::from_str_multiple(&text).expect("yaml");
        docs.extend(parsed);
    }
    let operator = |subjects: &Value| {
        subjects.as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == "vworkspace-app-operator"
                    && s["namespace"] == "vworkspace-system"
            })
        })
    };
    let find = |kind: &str, name: &str, namespace: Option<&str>| {
        docs.iter()
            .find(|d| {
                d["kind"] == kind
                    && d["metadata"]["name"] == name
                    && namespace.is_none_or(|ns| d["metadata"]["namespace"] == ns)
            })
            .map(rules_of)
            .unwrap_or_default()
    };
    let mut rbac = DeployRbac {
        cluster_wide: Vec::new(),
        namespaced: Vec::new(),
        // What the reconciler binds in every managed namespace (src/rbac.rs: operator bindings).
        per_managed_namespace: find("ClusterRole", "vworkspace-app-operator-namespace", None)
            .into_iter()
            .chain(find("ClusterRole", "vworkspace-app-operator-values", None))
            .collect(),
    };
    for d in &docs {
        if !operator(&d["subjects"]) {
            continue;
        }
        let role = d["roleRef"]["name"].as_str().unwrap_or_default();
        match d["kind"].as_str() {
            Some("ClusterRoleBinding") => rbac.cluster_wide.extend(find("ClusterRole", role, None)),
            Some("RoleBinding") => {
                let ns = d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let rules = if d["roleRef"]["kind"] == "Role" {
                    find("Role", role, Some(&ns))
                } else {
                    find("ClusterRole", role, None)
                };
                rbac.namespaced.push((ns, rules));
            }
            _ => {}
        }
    }
    rbac
}

/// (verb, group, resource[/subresource], namespace, name) of a request, as the authorizer sees it.
pub fn attributes(r: &Recorded) -> (String, String, String, String, String) {
    let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest.to_vec()),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest.to_vec()),
        _ => panic!("unexpected path {}", r.path),
    };
    let (namespace, rest) = match rest.as_slice() {
        ["namespaces", ns, more @ ..] if !more.is_empty() => ((*ns).to_owned(), more.to_vec()),
        _ => (String::new(), rest),
    };
    let (resource, name) = match rest.as_slice() {
        [resource] => ((*resource).to_owned(), String::new()),
        [resource, name] => ((*resource).to_owned(), (*name).to_owned()),
        [resource, name, sub] => (format!("{resource}/{sub}"), (*name).to_owned()),
        _ => panic!("unexpected path {}", r.path),
    };
    let verb = match r.method {
        Method::GET if name.is_empty() && r.query.contains("watch=true") => "watch",
        Method::GET if name.is_empty() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::DELETE => "delete",
        _ => "unknown",
    };
    (verb.to_owned(), group, resource, namespace, name)
}

pub fn allowed(rules: &[Rule], verb: &str, group: &str, resource: &str, name: &str) -> bool {
    rules.iter().any(|rule| {
        rule.groups.iter().any(|g| g == group)
            && rule.resources.iter().any(|r| r == resource)
            && rule.verbs.iter().any(|v| v == verb)
            && (rule.names.is_empty() || rule.names.iter().any(|n| n == name))
    })
}

/// Asserts that deploy/ allows every request, given the managed namespaces at the time.
pub fn assert_allowed_by_deploy(requests: &[Recorded], managed: &[&str]) {
    let rbac = deploy_rbac();
    for r in requests {
        let (verb, group, resource, namespace, name) = attributes(r);
        let ok = allowed(&rbac.cluster_wide, &verb, &group, &resource, &name)
            || rbac.namespaced.iter().any(|(ns, rules)| {
                *ns == namespace && allowed(rules, &verb, &group, &resource, &name)
            })
            || (managed.contains(&namespace.as_str())
                && allowed(&rbac.per_managed_namespace, &verb, &group, &resource, &name));
        assert!(
            ok,
            "deploy/ does not allow {verb} {group}/{resource} {namespace}/{name} ({})",
            r.line()
        );
    }
}
