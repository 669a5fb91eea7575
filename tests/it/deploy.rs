//! The manifests in `deploy/` grant no more than the seed RBAC model and run PSA-restricted.

use serde_json::Value;

/// The documents `kubectl kustomize deploy/` renders: the kustomization's resources, in order.
fn documents() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let kustomization: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(dir.join("kustomization.yaml")).expect("kustomization"),
    )
    .expect("yaml");
    let mut docs = Vec::new();
    for name in strings(&kustomization["resources"]) {
        let text = std::fs::read_to_string(dir.join(&name)).expect("resource file");
        let parsed: Vec<Value> = serde_saphyr::from_str_multiple(&text).expect("yaml");
        docs.extend(parsed.into_iter().map(|d| (name.clone(), d)));
    }
    // Every manifest in deploy/ is part of the install: none is forgotten by the kustomization.
    for entry in std::fs::read_dir(&dir).expect("deploy/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml")
            && path.file_name().is_some_and(|n| n != "kustomization.yaml")
        {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(
                docs.iter().any(|(n, _)| *n == name),
                "{name} is not in deploy/kustomization.yaml"
            );
        }
    }
    docs
}

fn named<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} not in deploy/"))
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
    let values = || docs.iter().map(|(_, d)| d);
    // ClusterRoles bound by a ClusterRoleBinding grant cluster-wide; the others are only bound per
    // namespace by the reconciler's RoleBindings.
    let bound_cluster_wide: Vec<&str> = values()
        .filter(|d| d["kind"] == "ClusterRoleBinding")
        .filter_map(|d| d["roleRef"]["name"].as_str())
        .collect();
    let roles: Vec<&Value> = values()
        .filter(|d| matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")))
        .collect();
    assert!(
        roles.len() >= 5,
        "seed, gitops, two namespace ClusterRoles, system Role"
    );
    for role in roles {
        let name = role["metadata"]["name"].as_str().unwrap_or_default();
        let cluster_wide = role["kind"] == "ClusterRole" && bound_cluster_wide.contains(&name);
        for rule in role["rules"].as_array().expect("rules") {
            let resources = strings(&rule["resources"]);
            let verbs = strings(&rule["verbs"]);
            let context = format!("{name}: {rule}");
            assert!(
                !verbs.iter().any(|v| v == "*"),
                "no wildcard verbs: {context}"
            );
            assert!(
                !resources.iter().any(|r| r == "*"),
                "no wildcard resources: {context}"
            );
            assert!(
                !verbs.iter().any(|v| v == "escalate"),
                "no escalate: {context}"
            );
            if verbs.iter().any(|v| v == "bind") {
                assert!(
                    !strings(&rule["resourceNames"]).is_empty(),
                    "bind only on named roles: {context}"
                );
            }
            if resources.iter().any(|r| r == "secrets") {
                assert!(!cluster_wide, "no verb on secrets cluster-wide: {context}");
                assert!(
                    !verbs.iter().any(|v| v == "list" || v == "watch"),
                    "never list or watch secrets: {context}"
                );
                if name == "vworkspace-app-operator-values" {
                    // The one GitOps addition: writing <instance>-values Secrets in managed namespaces.
                    assert_eq!(verbs, ["create", "patch", "delete"], "{context}");
                } else {
                    assert_eq!(verbs, ["get"], "secrets by get on a name only: {context}");
                }
            }
            if resources
                .iter()
                .any(|r| r == "roles" || r == "clusterroles")
            {
                assert!(
                    !verbs
                        .iter()
                        .any(|v| matches!(v.as_str(), "create" | "update" | "patch")),
                    "the operator never writes a Role: {context}"
                );
            }
            assert!(
                !resources.iter().any(|r| r == "pods/exec"),
                "no pods/exec: {context}"
            );
            if resources.iter().any(|r| r == "clusterrolebindings") {
                assert!(
                    !verbs.iter().any(|v| v == "create"),
                    "no create on clusterrolebindings: {context}"
                );
            }
        }
    }
    for template in [
        "vworkspace-app-operator-namespace",
        "vworkspace-operation-runner",
    ] {
        assert!(
            !bound_cluster_wide.contains(&template),
            "{template} is bound per namespace only"
        );
    }
}

#[test]
fn namespace_cluster_roles_are_what_the_reconciler_binds() {
    use vworkspace_controller::cluster::rbac;
    let docs = documents();
    for expected in [
        rbac::namespace_cluster_role(),
        rbac::values_cluster_role(),
        rbac::runner_cluster_role(),
    ] {
        let name = expected.metadata.name.clone().expect("name");
        let shipped = named(&docs, "ClusterRole", &name);
        let expected = serde_json::to_value(&expected).expect("json");
        assert_eq!(shipped["rules"], expected["rules"], "{name}");
    }
    let binding = rbac::operator_role_binding("org-a");
    assert_eq!(binding.role_ref.name, rbac::NAMESPACE_CLUSTER_ROLE);
    // The gitops ClusterRole may bind exactly the two shipped ClusterRoles.
    let gitops = named(&docs, "ClusterRole", "vworkspace-app-operator-gitops");
    let bind = gitops["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| strings(&r["verbs"]) == ["bind"])
        .expect("bind rule");
    assert_eq!(
        strings(&bind["resourceNames"]),
        [
            rbac::NAMESPACE_CLUSTER_ROLE,
            rbac::VALUES_CLUSTER_ROLE,
            rbac::RUNNER
        ]
    );
}

#[test]
fn admission_policy_scopes_the_operators_rbac_writes() {
    let docs = documents();
    let policy = named(
        &docs,
        "ValidatingAdmissionPolicy",
        "vworkspace-app-operator-rbac-scope",
    );
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    let condition = policy["spec"]["matchConditions"][0]["expression"]
        .as_str()
        .expect("expression");
    assert!(condition.contains("system:serviceaccount:vworkspace-system:vworkspace-app-operator"));
    let validations = policy["spec"]["validations"].to_string();
    for needle in [
        "app.vworkspace.io/managed-by",
        "vworkspace-app-operator-namespace",
        "vworkspace-operation-runner",
    ] {
        assert!(validations.contains(needle), "{needle}");
    }
    let binding = named(
        &docs,
        "ValidatingAdmissionPolicyBinding",
        "vworkspace-app-operator-rbac-scope",
    );
    assert_eq!(strings(&binding["spec"]["validationActions"]), ["Deny"]);
}

#[test]
fn cluster_role_is_exactly_the_seeds() {
    let docs = documents();
    let role = named(&docs, "ClusterRole", "vworkspace-app-operator");
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
    let binding = named(&docs, "ClusterRoleBinding", "vworkspace-app-operator");
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

#[test]
fn webhook_is_fail_closed_on_managed_namespaces_and_served_by_the_deployment() {
    let docs = documents();
    let config = named(
        &docs,
        "ValidatingWebhookConfiguration",
        "vworkspace-app-operator",
    );
    let hook = &config["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(
        hook["namespaceSelector"]["matchLabels"]["app.vworkspace.io/managed-by"],
        "vworkspace"
    );
    let resources: Vec<String> = hook["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|r| strings(&r["resources"]))
        .collect();
    assert_eq!(resources, ["applicationinstances", "operations"]);
    assert_eq!(hook["clientConfig"]["service"]["path"], "/validate");
    let service = named(&docs, "Service", "vworkspace-app-operator-webhook");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook");
    let deployment = named(&docs, "Deployment", "vworkspace-app-operator");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    let dir = args
        .iter()
        .position(|a| a == "--webhook-cert-dir")
        .and_then(|i| args.get(i + 1))
        .expect("--webhook-cert-dir");
    assert!(
        container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["mountPath"] == dir.as_str() && m["readOnly"] == true)
    );
    // The Deployment's arguments are ones `run` accepts.
    use clap::Parser;
    let mut argv = vec!["vworkspace-operator".to_owned()];
    argv.extend(args);
    assert!(vworkspace_operator::cli::Cli::try_parse_from(argv).is_ok());
}

#[test]
fn admission_policy_keeps_managed_namespaces_from_git() {
    let docs = documents();
    let policy = named(
        &docs,
        "ValidatingAdmissionPolicy",
        "vworkspace-managed-from-git",
    );
    let spec = &policy["spec"];
    assert_eq!(spec["failurePolicy"], "Fail");
    // Only managed namespaces.
    assert_eq!(
        spec["matchConstraints"]["namespaceSelector"]["matchLabels"]["app.vworkspace.io/managed-by"],
        "vworkspace"
    );
    // Both kinds and their status, every write.
    let rules = spec["matchConstraints"]["resourceRules"]
        .as_array()
        .expect("rules");
    for (group, kind) in [
        ("apps.vworkspace.io", "applicationinstances"),
        ("ops.vworkspace.io", "operations"),
    ] {
        let rule = rules
            .iter()
            .find(|r| strings(&r["apiGroups"]) == [group])
            .unwrap_or_else(|| panic!("no rule for {group}"));
        assert_eq!(
            strings(&rule["resources"]),
            [kind.to_owned(), format!("{kind}/status")]
        );
        assert_eq!(strings(&rule["operations"]), ["CREATE", "UPDATE", "DELETE"]);
        assert_eq!(strings(&rule["apiVersions"]), ["*"]);
    }
    // Everyone but the operator's ServiceAccount (as deploy/ names it), the namespace controller and
    // the garbage collector; and the break-glass group.
    let account = named(&docs, "ServiceAccount", "vworkspace-app-operator");
    let operator = format!(
        "system:serviceaccount:{}:{}",
        account["metadata"]["namespace"]
            .as_str()
            .expect("namespace"),
        account["metadata"]["name"].as_str().expect("name")
    );
    let conditions = spec["matchConditions"].to_string();
    for exempt in [
        operator.as_str(),
        "system:serviceaccount:kube-system:namespace-controller",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "vworkspace:break-glass",
    ] {
        assert!(conditions.contains(exempt), "{exempt} not exempt");
    }
    // Nothing in deploy/ puts anyone in the break-glass group.
    for (file, doc) in &docs {
        if file != "admission-policy.yaml" {
            assert!(
                !doc.to_string().contains("vworkspace:break-glass"),
                "{file} grants break-glass"
            );
        }
    }
    // Denies, saying the namespace is managed from Git and which command changes it.
    let validation = &spec["validations"][0];
    assert_eq!(validation["expression"], "false");
    for text in [
        validation["messageExpression"]
            .as_str()
            .expect("messageExpression"),
        validation["message"].as_str().expect("message"),
    ] {
        assert!(text.contains("managed from Git"), "{text}");
        assert!(text.contains("vworkspace-operator release"), "{text}");
    }
    assert!(
        validation["messageExpression"]
            .as_str()
            .is_some_and(|m| m.contains("request.namespace"))
    );
    let binding = named(
        &docs,
        "ValidatingAdmissionPolicyBinding",
        "vworkspace-managed-from-git",
    );
    assert_eq!(binding["spec"]["policyName"], "vworkspace-managed-from-git");
    assert_eq!(strings(&binding["spec"]["validationActions"]), ["Deny"]);
}
