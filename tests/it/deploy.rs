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

/// The Secret holding the webhook's own CA and serving certificate.
const WEBHOOK_SECRET: &str = "vworkspace-app-operator-webhook-tls";

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
                } else if role["kind"] == "Role"
                    && role["metadata"]["namespace"] == "vworkspace-system"
                    && verbs != ["get"]
                {
                    // The webhook certificate Secret: update by name, create (limited to that name
                    // by the admission policy, admission_policy_scopes_the_operators_rbac_writes).
                    assert_eq!(resources, ["secrets"], "{context}");
                    match verbs.as_slice() {
                        [v] if v == "update" => assert_eq!(
                            strings(&rule["resourceNames"]),
                            [WEBHOOK_SECRET],
                            "{context}"
                        ),
                        [v] if v == "create" => {}
                        _ => panic!("only create and update by name: {context}"),
                    }
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
fn the_deployment_sets_the_allocator_settings_the_tests_run_with() {
    let docs = documents();
    let deployment = named(&docs, "Deployment", "vworkspace-app-operator");
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let allocator: Vec<(String, String)> = env
        .as_array()
        .expect("env")
        .iter()
        .filter(|e| {
            e["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("MIMALLOC_"))
        })
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = crate::common::ALLOCATOR_ENV
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(allocator, expected);
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
    // No extra parts: the operator makes its certificate into the Secret it may write, and sets the
    // caBundle of this configuration, which is the one it may update.
    assert!(hook["clientConfig"]["caBundle"].is_null());
    assert!(
        config["metadata"]["annotations"].is_null(),
        "no cert-manager annotation"
    );
    let deployment = named(&docs, "Deployment", "vworkspace-app-operator");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    assert_eq!(
        arg("--webhook-cert-secret").as_deref(),
        Some(WEBHOOK_SECRET)
    );
    assert_eq!(arg("--webhook-cert-dir"), None);
    // No volume the install does not create.
    assert!(
        !deployment["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| !v["secret"].is_null())
    );
    let gitops = named(&docs, "ClusterRole", "vworkspace-app-operator-gitops");
    let rule = gitops["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| strings(&r["resources"]) == ["validatingwebhookconfigurations"])
        .expect("a rule for the webhook configuration");
    assert_eq!(strings(&rule["resourceNames"]), ["vworkspace-app-operator"]);
    assert_eq!(strings(&rule["verbs"]), ["get", "update"]);
    // The service name the certificate is made for is the Service's (run's default).
    use clap::Parser;
    let parsed = vworkspace_operator::cli::Cli::try_parse_from(
        ["vworkspace-operator".to_owned()]
            .into_iter()
            .chain(args.clone()),
    )
    .expect("run accepts the Deployment's arguments");
    let text = format!("{parsed:?}");
    assert!(
        text.contains(&format!(
            "webhook_service: {:?}",
            service["metadata"]["name"].as_str().expect("name")
        )),
        "{text}"
    );
    assert!(
        text.contains("webhook_configuration: \"vworkspace-app-operator\""),
        "{text}"
    );
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
        "system:kube-controller-manager",
        "vworkspace:break-glass",
    ] {
        assert!(conditions.contains(exempt), "{exempt} not exempt");
    }
    // Nothing in deploy/ puts anyone in the break-glass group (the policies only name it).
    for (file, doc) in &docs {
        if doc["kind"] != "ValidatingAdmissionPolicy" {
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

/// The documents of one file under deploy/.
fn file_documents(relative: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(relative);
    serde_saphyr::from_str_multiple(&std::fs::read_to_string(&path).expect("file")).expect("yaml")
}

#[test]
fn deploy_needs_no_velero_namespace_and_the_velero_component_is_the_seeds_role() {
    let docs = documents();
    for (file, doc) in &docs {
        let namespace = doc["metadata"]["namespace"].as_str();
        assert!(
            namespace.is_none() || namespace == Some("vworkspace-system"),
            "{file}: deploy/ writes only into vworkspace-system: {doc}"
        );
    }
    // The component: the seed's Velero Role and its binding, unchanged.
    let component = file_documents("components/velero/kustomization.yaml");
    assert_eq!(component[0]["kind"], "Component");
    assert_eq!(strings(&component[0]["resources"]), ["velero-role.yaml"]);
    let velero = file_documents("components/velero/velero-role.yaml");
    let role = velero.iter().find(|d| d["kind"] == "Role").expect("Role");
    assert_eq!(role["metadata"]["namespace"], "velero");
    let rules = role["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(strings(&rules[0]["apiGroups"]), ["velero.io"]);
    assert_eq!(
        strings(&rules[0]["resources"]),
        [
            "backups",
            "restores",
            "backupstoragelocations",
            "volumesnapshotlocations"
        ]
    );
    assert_eq!(
        strings(&rules[0]["verbs"]),
        [
            "get", "list", "watch", "create", "update", "patch", "delete"
        ]
    );
    let binding = velero
        .iter()
        .find(|d| d["kind"] == "RoleBinding")
        .expect("RoleBinding");
    assert_eq!(binding["roleRef"]["name"], "vworkspace-app-operator-velero");
    assert_eq!(binding["subjects"][0]["name"], "vworkspace-app-operator");
    assert_eq!(binding["subjects"][0]["namespace"], "vworkspace-system");
}

#[test]
fn the_admission_policy_limits_the_operators_secret_writes_in_its_namespace_to_the_webhook_certificate()
 {
    let docs = documents();
    let policy = named(
        &docs,
        "ValidatingAdmissionPolicy",
        "vworkspace-app-operator-rbac-scope",
    );
    let validations = policy["spec"]["validations"]
        .as_array()
        .expect("validations");
    // The namespace rule lets exactly that Secret through in vworkspace-system.
    let namespace_rule = validations[0]["expression"].as_str().expect("expression");
    assert!(namespace_rule.contains("request.namespace == 'vworkspace-system'"));
    assert!(namespace_rule.contains(&format!("object.metadata.name == '{WEBHOOK_SECRET}'")));
    assert!(namespace_rule.contains("request.kind.kind == 'Secret'"));
    let secret_rule = validations
        .iter()
        .filter_map(|v| v["expression"].as_str())
        .find(|e| e.starts_with("request.kind.kind != 'Secret'"))
        .expect("the Secret rule");
    assert!(secret_rule.contains(&format!("object.metadata.name == '{WEBHOOK_SECRET}'")));
}

/// `kubectl kustomize` (kustomize built into kubectl), when it is on PATH.
fn kustomize(dir: &str) -> Option<Vec<Value>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join(dir))
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            println!("kubectl not found ({e}): the rendering by kustomize is not checked");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_saphyr::from_str_multiple(&String::from_utf8_lossy(&output.stdout)).expect("yaml"))
}

fn ids(docs: &[Value]) -> std::collections::BTreeSet<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}/{}",
                d["kind"].as_str().unwrap_or_default(),
                d["metadata"]["namespace"].as_str().unwrap_or_default(),
                d["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn kustomize_renders_deploy_and_the_optional_overlays() {
    let Some(base) = kustomize("deploy") else {
        return;
    };
    let listed: Vec<Value> = documents().into_iter().map(|(_, d)| d).collect();
    assert_eq!(ids(&base), ids(&listed));
    // Velero: the base plus exactly the Role and RoleBinding in `velero`.
    let velero = kustomize("overlays/velero").expect("kubectl ran once");
    let added: Vec<String> = ids(&velero).difference(&ids(&base)).cloned().collect();
    assert_eq!(
        added,
        [
            "Role/velero/vworkspace-app-operator-velero",
            "RoleBinding/velero/vworkspace-app-operator-velero"
        ]
    );
    // cert-manager: an Issuer and a Certificate, the CA injected by annotation, the Deployment reading
    // the Certificate's Secret from files.
    let cm = kustomize("overlays/cert-manager").expect("kubectl ran once");
    let added: Vec<String> = ids(&cm).difference(&ids(&base)).cloned().collect();
    assert_eq!(
        added,
        [
            "Certificate/vworkspace-system/vworkspace-app-operator-webhook",
            "Issuer/vworkspace-system/vworkspace-app-operator-webhook"
        ]
    );
    let certificate = cm
        .iter()
        .find(|d| d["kind"] == "Certificate")
        .expect("Certificate");
    let secret = certificate["spec"]["secretName"]
        .as_str()
        .expect("secretName");
    let config = cm
        .iter()
        .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
        .expect("configuration");
    assert_eq!(
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "vworkspace-system/vworkspace-app-operator-webhook"
    );
    let deployment = cm
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let args = strings(&pod["containers"][0]["args"]);
    let dir = args
        .iter()
        .position(|a| a == "--webhook-cert-dir")
        .and_then(|i| args.get(i + 1))
        .expect("--webhook-cert-dir");
    assert!(!args.iter().any(|a| a == "--webhook-cert-secret"));
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == dir.as_str())
        .expect("the certificate is mounted");
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("volume");
    assert_eq!(volume["secret"]["secretName"], secret);
    use clap::Parser;
    assert!(
        vworkspace_operator::cli::Cli::try_parse_from(
            ["vworkspace-operator".to_owned()].into_iter().chain(args)
        )
        .is_ok()
    );
}

#[test]
fn the_image_is_static_and_runs_as_the_deployments_user() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    let last = froms.last().expect("a final stage");
    assert!(
        last.starts_with("FROM gcr.io/distroless/static-debian12:nonroot"),
        "{last}"
    );
    // Linked against musl, and the build refuses a binary that needs a shared library.
    assert!(dockerfile.contains("x86_64-unknown-linux-musl"));
    assert!(dockerfile.contains("! readelf -d /vworkspace-operator | grep -q NEEDED"));
    let docs = documents();
    let pod = &named(&docs, "Deployment", "vworkspace-app-operator")["spec"]["template"]["spec"];
    let user = format!(
        "USER {}:{}",
        pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    );
    let final_stage = &dockerfile[dockerfile.rfind("FROM ").expect("FROM")..];
    assert!(final_stage.contains(&user), "{user} in the final stage");
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l == "target/"),
        "the build context leaves target/ out"
    );
}

/// The image reference of a `FROM` line: `FROM [--platform=...] <image> [AS <stage>]`.
fn from_image(line: &str) -> &str {
    line.split_whitespace()
        .skip(1)
        .find(|word| !word.starts_with("--"))
        .unwrap_or_else(|| panic!("no image in {line:?}"))
}

#[test]
fn every_base_image_is_pinned_by_digest_beside_its_tag() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "{froms:?}");
    for line in froms {
        let image = from_image(line);
        let (name, digest) = image.split_once("@sha256:").unwrap_or_else(|| {
            panic!("{line:?}: not pinned by digest (image:tag@sha256:<64 hex>)")
        });
        assert!(
            digest.len() == 64
                && digest
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{line:?}: the digest is not 64 lowercase hex digits"
        );
        // The tag stays beside the digest: the reader and Renovate/Dependabot see what it is.
        let last = name.rsplit('/').next().unwrap_or(name);
        assert!(
            last.contains(':'),
            "{line:?}: keep the tag beside the digest"
        );
    }
    // A line that names a digest of nothing (a placeholder) would not parse above; and the from_image
    // parser itself refuses an unpinned FROM.
    assert!(
        from_image("FROM rust:1 AS build")
            .split_once("@sha256:")
            .is_none()
    );
}

const OPERATOR: &str = "system:serviceaccount:vworkspace-system:vworkspace-app-operator";

/// A policy of deploy/, fail-closed, with its binding denying.
/// The policy's match conditions let through the operator, the namespace controller and the garbage
/// collector (under both of kube-controller-manager's credential modes) and the break-glass group.
fn exempts_the_operator_controllers_and_break_glass(spec: &Value) {
    let conditions = spec["matchConditions"].to_string();
    for exempt in [
        OPERATOR,
        "system:serviceaccount:kube-system:namespace-controller",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:kube-controller-manager",
        "vworkspace:break-glass",
    ] {
        assert!(conditions.contains(exempt), "{exempt} not exempt");
    }
}

fn denying_policy<'a>(docs: &'a [(String, Value)], name: &str) -> &'a Value {
    let policy = named(docs, "ValidatingAdmissionPolicy", name);
    assert_eq!(policy["spec"]["failurePolicy"], "Fail", "{name}");
    let binding = named(docs, "ValidatingAdmissionPolicyBinding", name);
    assert_eq!(binding["spec"]["policyName"], name);
    assert_eq!(strings(&binding["spec"]["validationActions"]), ["Deny"]);
    &policy["spec"]
}

#[test]
fn the_operator_may_change_only_the_ca_bundle_of_its_webhook_configuration() {
    let docs = documents();
    let spec = denying_policy(&docs, "vworkspace-app-operator-webhook-ca-only");
    let rule = &spec["matchConstraints"]["resourceRules"][0];
    assert!(strings(&rule["resources"]).contains(&"validatingwebhookconfigurations".to_owned()));
    assert_eq!(strings(&rule["operations"]), ["CREATE", "UPDATE", "DELETE"]);
    assert!(spec["matchConditions"].to_string().contains(OPERATOR));
    let validations = spec["validations"].to_string();
    for needle in [
        "request.operation == 'UPDATE'",
        "request.name == 'vworkspace-app-operator'",
        "k != 'caBundle'",
        "k != 'clientConfig'",
        "oldObject.webhooks[i]",
        "object.metadata.?labels == oldObject.metadata.?labels",
    ] {
        assert!(validations.contains(needle), "{needle}");
    }
    // RBAC names the object too: get and update of that one configuration, nothing else.
    let gitops = named(&docs, "ClusterRole", "vworkspace-app-operator-gitops");
    let rules: Vec<&Value> = gitops["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| strings(&r["apiGroups"]) == ["admissionregistration.k8s.io"])
        .collect();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        strings(&rules[0]["resourceNames"]),
        ["vworkspace-app-operator"]
    );
    assert_eq!(strings(&rules[0]["verbs"]), ["get", "update"]);
}

#[test]
fn only_the_operator_and_break_glass_write_cluster_status() {
    let docs = documents();
    let spec = denying_policy(&docs, "vworkspace-cluster-status-from-operator");
    let rule = &spec["matchConstraints"]["resourceRules"][0];
    assert_eq!(strings(&rule["apiGroups"]), ["ops.vworkspace.io"]);
    assert_eq!(strings(&rule["resources"]), ["clusters/status"]);
    let conditions = spec["matchConditions"].to_string();
    assert!(conditions.contains(OPERATOR));
    assert!(conditions.contains("vworkspace:break-glass"));
    assert_eq!(spec["validations"][0]["expression"], "false");
}

#[test]
fn the_children_the_operator_writes_are_its_alone_in_managed_namespaces() {
    let docs = documents();
    let spec = denying_policy(&docs, "vworkspace-children-from-operator");
    let managed = |selector: &Value| {
        assert_eq!(
            selector["matchLabels"]["app.vworkspace.io/managed-by"], "vworkspace",
            "{selector}"
        );
    };
    managed(&spec["matchConstraints"]["namespaceSelector"]);
    managed(&spec["matchConstraints"]["objectSelector"]);
    let rules = spec["matchConstraints"]["resourceRules"]
        .as_array()
        .expect("rules");
    // Every kind the operator writes in a managed namespace (crates/controller/src/children).
    for (group, resource) in [
        ("helm.toolkit.fluxcd.io", "helmreleases"),
        ("source.toolkit.fluxcd.io", "helmrepositories"),
        ("source.toolkit.fluxcd.io", "ocirepositories"),
        ("", "secrets"),
        ("batch", "jobs"),
        ("argoproj.io", "workflows"),
        ("snapshot.storage.k8s.io", "volumesnapshots"),
    ] {
        let rule = rules
            .iter()
            .find(|r| {
                strings(&r["apiGroups"]) == [group]
                    && strings(&r["resources"]).contains(&resource.to_owned())
            })
            .unwrap_or_else(|| panic!("{group}/{resource} not protected"));
        assert_eq!(strings(&rule["operations"]), ["CREATE", "UPDATE", "DELETE"]);
        // The main resource only: controllers write status through the subresource.
        assert!(!strings(&rule["resources"]).iter().any(|r| r.contains('/')));
    }
    exempts_the_operator_controllers_and_break_glass(spec);
    let owned = spec["variables"][0]["expression"].as_str().expect("owned");
    for needle in [
        "request.operation == 'UPDATE'",
        "object.?spec == oldObject.?spec",
        "object.?data == oldObject.?data",
        "apps.vworkspace.io/spec-digest",
        "ownerReferences",
    ] {
        assert!(owned.contains(needle), "{needle}");
    }
    // Velero's objects, in Velero's namespace: the operator and Velero's own ServiceAccounts.
    let velero = denying_policy(&docs, "vworkspace-velero-children-from-operator");
    managed(&velero["matchConstraints"]["objectSelector"]);
    let rule = &velero["matchConstraints"]["resourceRules"][0];
    assert_eq!(strings(&rule["apiGroups"]), ["velero.io"]);
    assert_eq!(strings(&rule["resources"]), ["backups", "restores"]);
}

#[test]
fn the_operators_rolebindings_and_runner_account_are_its_alone_in_managed_namespaces() {
    use vworkspace_controller::cluster::rbac;
    let docs = documents();
    let spec = denying_policy(&docs, "vworkspace-namespace-rbac-from-operator");
    assert_eq!(
        spec["matchConstraints"]["namespaceSelector"]["matchLabels"]["app.vworkspace.io/managed-by"],
        "vworkspace"
    );
    // Matched by name, never by label: a planted look-alike carries whatever labels it likes.
    assert!(spec["matchConstraints"].get("objectSelector").is_none());
    let rules = spec["matchConstraints"]["resourceRules"]
        .as_array()
        .expect("rules");
    for (group, resource) in [
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("", "serviceaccounts"),
    ] {
        let rule = rules
            .iter()
            .find(|r| strings(&r["apiGroups"]) == [group])
            .unwrap_or_else(|| panic!("{group} not matched"));
        // The main resource only: the kubelet asks for a Job's token through serviceaccounts/token.
        assert_eq!(strings(&rule["resources"]), [resource]);
        assert_eq!(strings(&rule["operations"]), ["CREATE", "UPDATE", "DELETE"]);
    }
    // Every binding and the ServiceAccount the pass writes in a managed namespace, by the names the
    // code writes them under.
    let names = spec["matchConditions"][0]["expression"]
        .as_str()
        .expect("the name condition");
    let written = rbac::for_namespace("any");
    let mut bindings: Vec<String> = written
        .bindings
        .iter()
        .map(|b| b.metadata.name.clone().expect("a name"))
        .collect();
    bindings.sort();
    assert_eq!(bindings.len(), 3, "{bindings:?}");
    let runner = written.runner.metadata.name.clone().expect("a name");
    for name in bindings.iter().chain([runner].iter()) {
        assert!(
            names.contains(&format!("'{name}'")),
            "{name} not protected: {names}"
        );
    }
    exempts_the_operator_controllers_and_break_glass(spec);
    assert_eq!(spec["validations"][0]["expression"], "false");
}

#[test]
fn the_leader_fence_admits_the_operators_pod_writes_only_from_the_lease_holder() {
    let docs = documents();
    let spec = denying_policy(&docs, "vworkspace-app-operator-leader-fence");
    assert_eq!(spec["paramKind"]["apiVersion"], "coordination.k8s.io/v1");
    assert_eq!(spec["paramKind"]["kind"], "Lease");
    let binding = named(
        &docs,
        "ValidatingAdmissionPolicyBinding",
        "vworkspace-app-operator-leader-fence",
    );
    let param = &binding["spec"]["paramRef"];
    // The Lease the elector holds (runtime/leader.rs), in the Deployment's namespace.
    assert_eq!(
        param["name"],
        vworkspace_controller::runtime::leader::LEASE_NAME
    );
    assert_eq!(param["namespace"], "vworkspace-system");
    // Allow: the API server resolves the Lease before the match conditions, so Deny would refuse
    // these kinds to everyone whenever the Lease is missing.
    assert_eq!(param["parameterNotFoundAction"], "Allow");
    // Named kinds (what a trouble with the Lease could hold up), never a wildcard; every kind the
    // operator writes among them.
    let rules = spec["matchConstraints"]["resourceRules"]
        .as_array()
        .expect("rules");
    let fenced: Vec<String> = rules
        .iter()
        .flat_map(|r| strings(&r["resources"]))
        .collect();
    assert!(!fenced.iter().any(|r| r.contains('*')), "{fenced:?}");
    assert!(
        rules
            .iter()
            .all(|r| !strings(&r["apiGroups"]).contains(&"*".to_owned()))
    );
    for kind in [
        "applicationinstances",
        "applicationinstances/status",
        "operations/status",
        "clusters",
        "clusters/status",
        "rolebindings",
        "secrets",
        "serviceaccounts",
        "helmreleases",
        "helmrepositories",
        "jobs",
        "workflows",
        "volumesnapshots",
        "backups",
        "restores",
    ] {
        assert!(fenced.contains(&kind.to_owned()), "{kind} not fenced");
    }
    let conditions = spec["matchConditions"].to_string();
    for needle in [
        OPERATOR,
        "authentication.kubernetes.io/pod-name",
        "coordination.k8s.io",
        "vworkspace-app-operator-webhook-tls",
        "validatingwebhookconfigurations",
    ] {
        assert!(conditions.contains(needle), "{needle}");
    }
    assert!(
        spec["validations"][0]["expression"]
            .as_str()
            .is_some_and(|e| e.contains("params.spec.holderIdentity ==")
                && e.contains("request.userInfo.extra['authentication.kubernetes.io/pod-name']"))
    );
    // The holder identity is the pod name: the Deployment elects with POD_NAME = metadata.name.
    let deployment = named(&docs, "Deployment", "vworkspace-app-operator");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(strings(&container["args"]).contains(&"--leader-election".to_owned()));
    let pod_name = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .expect("POD_NAME");
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
}

#[test]
fn the_guardrails_rights_are_two_and_the_admission_policy_scopes_both() {
    let docs = documents();
    // patch on namespaces: in the gitops ClusterRole, alone (never create, update or delete).
    let gitops = named(&docs, "ClusterRole", "vworkspace-app-operator-gitops");
    let namespace_rules: Vec<&Value> = gitops["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| strings(&r["resources"]).iter().any(|x| x == "namespaces"))
        .collect();
    assert_eq!(namespace_rules.len(), 1, "{namespace_rules:?}");
    assert_eq!(strings(&namespace_rules[0]["verbs"]), ["patch"]);
    // NetworkPolicies: only in the namespace ClusterRole (bound per managed namespace), never listed.
    for (_, doc) in &docs {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        for rule in doc["rules"].as_array().into_iter().flatten() {
            if strings(&rule["resources"])
                .iter()
                .any(|r| r == "networkpolicies")
            {
                assert_eq!(name, "vworkspace-app-operator-namespace", "{rule}");
                assert_eq!(
                    strings(&rule["verbs"]),
                    ["get", "create", "patch", "delete"]
                );
            }
        }
    }
    let policy = named(
        &docs,
        "ValidatingAdmissionPolicy",
        "vworkspace-app-operator-guardrails-scope",
    );
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    let resources: Vec<String> = policy["spec"]["matchConstraints"]["resourceRules"]
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|r| strings(&r["resources"]))
        .collect();
    assert_eq!(resources, ["namespaces", "networkpolicies"]);
    let validations = policy["spec"]["validations"].to_string();
    for needle in [
        "pod-security.kubernetes.io/",
        "'restricted', 'baseline'",
        vworkspace_core::guardrails::DEFAULT_DENY_INGRESS,
        vworkspace_core::guardrails::ALLOW_DECLARED,
        "app.vworkspace.io/managed-by",
    ] {
        assert!(validations.contains(needle), "{needle}");
    }
    let binding = named(
        &docs,
        "ValidatingAdmissionPolicyBinding",
        "vworkspace-app-operator-guardrails-scope",
    );
    assert_eq!(strings(&binding["spec"]["validationActions"]), ["Deny"]);
}
