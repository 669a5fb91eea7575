//! Namespace guardrails (issue 27, item 2) on the real kube-apiserver: `Cluster.spec.namespacePolicy`
//! puts the Pod Security labels on every managed namespace and keeps the NetworkPolicies there; a
//! weakened level is restored and reported; the API server's own PodSecurity admission then refuses a
//! privileged pod; the admission policy keeps the operator's new rights to its own labels and
//! NetworkPolicies. No CNI runs here: the NetworkPolicies are checked as objects, never as traffic.

use kube::api::{Patch, PatchParams};

use super::*;

const NETPOL: &str = "networking.k8s.io/v1";
const DENY: &str = "vworkspace-default-deny-ingress";
const ALLOW: &str = "vworkspace-allow-declared";
const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
const GUARDRAILS_POLICY: &str = "vworkspace-app-operator-guardrails-scope";

/// Sets the Cluster's namespacePolicy as its owner (the admin).
async fn set_policy(env: &Env, scope: &Scope, policy: Value) {
    merge_patch(
        &env.admin,
        OPS,
        "Cluster",
        None,
        &scope.name,
        &json!({"spec": {"namespacePolicy": policy}}),
    )
    .await
    .expect("set spec.namespacePolicy");
}

async fn labels_of(env: &Env, ns: &str) -> Value {
    get(&env.admin, "v1", "Namespace", None, ns)
        .await
        .expect("namespace")
        .metadata
        .labels
        .map(|l| json!(l))
        .unwrap_or(Value::Null)
}

fn pass(env: &Env, scope: &Scope, what: &str) {
    let (ok, out, err) = scope.once(env);
    assert!(ok, "{what}: {out}\n{err}");
}

async fn condition(env: &Env, scope: &Scope) -> (String, String, String) {
    scope.condition(&env.admin, "NamespaceGuardrails").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_security_is_set_restored_and_reported_and_a_privileged_pod_is_refused() {
    let ns = "cp-guard-psa-a";
    scenario!("cp-guard-psa", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
            intent.add_instance(ns, "app", "one");
            intent.release(&[]);
            intent.commit("release 1");
            // The CRD schema refuses `privileged`, naming the field.
            let refused = merge_patch(
                &env.admin,
                OPS,
                "Cluster",
                None,
                &scope.name,
                &json!({"spec": {"namespacePolicy": {"podSecurity": "privileged"}}}),
            )
            .await
            .expect_err("privileged is refused by the schema");
            assert!(
                refused.to_string().contains("spec.namespacePolicy.podSecurity"),
                "{refused}"
            );
            // (A JSON merge patch of `{}` onto an absent field may set nothing: name the level.)
            set_policy(env, scope, json!({"podSecurity": "restricted"})).await;
            pass(env, scope, "first pass");
            let labels = labels_of(env, ns).await;
            for mode in ["enforce", "warn", "audit"] {
                assert_eq!(labels[format!("pod-security.kubernetes.io/{mode}")], "restricted", "{labels}");
                assert_eq!(labels[format!("pod-security.kubernetes.io/{mode}-version")], "latest", "{labels}");
            }
            let (status, reason, message) = condition(env, scope).await;
            assert_eq!((status.as_str(), reason.as_str()), ("True", "GuardrailsKept"), "{message}");

            // An admin weakens the namespace: the next pass restores it and says so.
            merge_patch(
                &env.admin,
                "v1",
                "Namespace",
                None,
                ns,
                &json!({"metadata": {"labels": {ENFORCE: "privileged"}}}),
            )
            .await
            .expect("the admin weakens the namespace");
            pass(env, scope, "the pass that restores it");
            assert_eq!(labels_of(env, ns).await[ENFORCE], "restricted");
            let (status, reason, message) = condition(env, scope).await;
            assert_eq!((status.as_str(), reason.as_str()), ("True", "PodSecurityWeakened"), "{message}");
            assert!(message.contains(&format!("{ns} ({ENFORCE}=privileged)")), "{message}");
            let events: Api<k8s_openapi::api::core::v1::Event> =
                Api::namespaced(env.admin.clone(), "default");
            let selector = format!("involvedObject.name={},reason=PodSecurityWeakened", scope.name);
            let event = wait_for("the PodSecurityWeakened Event", 60, || async {
                events
                    .list(&ListParams::default().fields(&selector))
                    .await
                    .ok()
                    .and_then(|l| l.items.into_iter().next())
            })
            .await;
            assert_eq!(event.type_.as_deref(), Some("Warning"));
            assert!(event.message.unwrap_or_default().contains(ns));

            // Removing the enforce label is weakening too.
            merge_patch(&env.admin, "v1", "Namespace", None, ns,
                &json!({"metadata": {"labels": {ENFORCE: null}}}))
                .await
                .expect("the admin removes the label");
            pass(env, scope, "the pass after the label was removed");
            assert_eq!(labels_of(env, ns).await[ENFORCE], "restricted");
            let (_, reason, message) = condition(env, scope).await;
            assert_eq!(reason, "PodSecurityWeakened", "{message}");
            assert!(message.contains("removed"), "{message}");

            // The API server's PodSecurity admission now refuses a privileged pod here.
            let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(env.admin.clone(), ns);
            for (what, pod) in [
                ("hostNetwork", json!({"hostNetwork": true,
                    "containers": [{"name": "c", "image": "registry.example/app:1"}]})),
                // (a privileged container is refused here before PodSecurity: the test API server
                // runs with --allow-privileged=false). A pod without a securityContext passes
                // `baseline` but not `restricted`.
                ("no securityContext", json!({"containers": [{"name": "c",
                    "image": "registry.example/app:1"}]})),
            ] {
                let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged"}, "spec": pod}))
                    .expect("pod");
                let error = pods
                    .create(&Default::default(), &pod)
                    .await
                    .expect_err(what);
                match error {
                    kube::Error::Api(status) => {
                        assert_eq!(status.code, 403, "{what}: {status:?}");
                        assert!(status.message.contains("violates PodSecurity \"restricted:latest\""), "{what}: {}", status.message);
                    }
                    other => panic!("{what}: {other}"),
                }
            }

            // The owner chooses baseline: the labels follow (drift, not weakening), and the API
            // server now admits the pod without a securityContext (dry run), still not hostNetwork.
            set_policy(env, scope, json!({"podSecurity": "baseline"})).await;
            pass(env, scope, "the pass after baseline");
            assert_eq!(labels_of(env, ns).await[ENFORCE], "baseline");
            let (_, reason, message) = condition(env, scope).await;
            assert_eq!(reason, "GuardrailsKept", "{message}");
            let dry = kube::api::PostParams { dry_run: true, ..Default::default() };
            let plain: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
                "spec": {"containers": [{"name": "c", "image": "registry.example/app:1"}]}}))
                .expect("pod");
            pods.create(&dry, &plain).await.expect("baseline admits a plain pod");
            let host: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "host"},
                "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "registry.example/app:1"}]}}))
                .expect("pod");
            let error = pods.create(&dry, &host).await.expect_err("baseline refuses hostNetwork");
            assert!(error.to_string().contains("violates PodSecurity \"baseline:latest\""), "{error}");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_policies_hold_the_allow_list_and_are_restored_after_a_delete_and_an_edit() {
    let ns = "cp-guard-net-a";
    scenario!("cp-guard-net", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
            intent.add_instance(ns, "app", "one");
            intent.release(&[]);
            intent.commit("release 1");
            set_policy(env, scope, json!({"networkPolicy": {
                "allowIngressFrom": [{"namespace": "ingress-nginx"},
                                     {"namespaceSelector": {"team": "monitoring"}}],
                "egress": {"toCidrs": ["10.20.0.0/16"]}}}))
            .await;
            pass(env, scope, "first pass");
            let deny = get(&env.admin, NETPOL, "NetworkPolicy", Some(ns), DENY).await.expect("deny policy");
            assert_eq!(
                deny.data["spec"],
                json!({"podSelector": {}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"podSelector": {}}]}]})
            );
            assert_eq!(deny.metadata.labels.as_ref().and_then(|l| l.get("gitops.vworkspace.io/cluster")), Some(&scope.name));
            let allow = get(&env.admin, NETPOL, "NetworkPolicy", Some(ns), ALLOW).await.expect("allow policy");
            assert_eq!(allow.data["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
            assert_eq!(
                allow.data["spec"]["ingress"][0]["from"],
                json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
                       {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}])
            );
            assert_eq!(allow.data["spec"]["egress"][0]["to"][1], json!({"ipBlock": {"cidr": "10.20.0.0/16"}}));
            let managers: Vec<String> = deny.metadata.managed_fields.iter().flatten()
                .filter_map(|f| f.manager.clone()).collect();
            assert!(managers.contains(&"vworkspace-gitops".to_owned()), "{managers:?}");

            // An unchanged pass writes nothing.
            let audit = Audit::mark(&env.cp.audit_log);
            pass(env, scope, "unchanged pass");
            assert_eq!(operator_writes_to(&audit, "networkpolicies"), Vec::<String>::new());
            assert_eq!(operator_writes_to(&audit, &format!("/namespaces/{ns}?")), Vec::<String>::new());

            // Deleted: restored.
            delete(&env.admin, NETPOL, "NetworkPolicy", Some(ns), DENY).await;
            pass(env, scope, "the pass after the delete");
            assert!(exists(&env.admin, NETPOL, "NetworkPolicy", ns, DENY).await, "restored after deletion");

            // Opened to everyone by an edit: restored.
            merge_patch(&env.admin, NETPOL, "NetworkPolicy", Some(ns), ALLOW,
                &json!({"spec": {"ingress": [{}]}}))
                .await
                .expect("the admin opens the policy");
            pass(env, scope, "the pass after the edit");
            let allow = get(&env.admin, NETPOL, "NetworkPolicy", Some(ns), ALLOW).await.expect("allow policy");
            assert_eq!(allow.data["spec"]["ingress"][0]["from"].as_array().map(Vec::len), Some(2), "{}", allow.data["spec"]);

            // The allow-list withdrawn: its policy goes, the default deny stays.
            set_policy(env, scope, json!({"networkPolicy": {"allowIngressFrom": null, "egress": null}})).await;
            pass(env, scope, "the pass without an allow-list");
            assert!(!exists(&env.admin, NETPOL, "NetworkPolicy", ns, ALLOW).await);
            assert!(exists(&env.admin, NETPOL, "NetworkPolicy", ns, DENY).await);

            // The namespace stops being managed: its NetworkPolicies go.
            merge_patch(&env.admin, "v1", "Namespace", None, ns,
                &json!({"metadata": {"labels": {"app.vworkspace.io/managed-by": null}}}))
                .await
                .expect("unlabel");
            // That pass then refuses the instance declared in the namespace (NamespaceNotManaged),
            // after the release step it is about.
            let _ = scope.once(env);
            assert!(!exists(&env.admin, NETPOL, "NetworkPolicy", ns, DENY).await, "removed with the namespace's release");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_may_write_only_pod_security_labels_and_its_own_network_policies() {
    let ns = "cp-guard-scope-a";
    scenario!("cp-guard-scope", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
            // A first pass binds the operator's namespace role (its NetworkPolicy rights) here, so
            // what is refused below is refused by the admission policy, not by RBAC.
            intent.add_instance(ns, "app", "one");
            intent.release(&[]);
            intent.commit("release 1");
            set_policy(env, scope, json!({"podSecurity": "restricted"})).await;
            pass(env, scope, "first pass");
            let operator = client_from(&env.shared.operator_kubeconfig).await;
            let outside = "cp-guard-scope-outside";
            scope.apply(&env.admin, json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": outside}})).await;
            let dry = PatchParams { dry_run: true, ..PatchParams::default() };
            let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(operator.clone());
            let label = |k: &str, v: &str| json!({"metadata": {"labels": {k: v}}});
            let refused = [
                ("privileged", ns, label(ENFORCE, "privileged")),
                ("another label", ns, label("team", "mine")),
                ("the managed label", ns, label("app.vworkspace.io/managed-by", "someone")),
                ("an unmanaged namespace", outside, label(ENFORCE, "restricted")),
            ];
            for (what, target, patch) in refused {
                let error = namespaces
                    .patch(target, &dry, &Patch::Merge(&patch))
                    .await
                    .expect_err(what);
                assert!(
                    matches!(&error, kube::Error::Api(s) if (s.code == 403 || s.code == 422) && s.message.contains(GUARDRAILS_POLICY)),
                    "{what}: {error}"
                );
            }
            namespaces
                .patch(ns, &dry, &Patch::Merge(&label(ENFORCE, "baseline")))
                .await
                .expect("a Pod Security label of a managed namespace is admitted");

            let policies: Api<DynamicObject> = dynamic_api(&operator, NETPOL, "NetworkPolicy", Some(ns)).await;
            let policy = |name: &str| json!({"apiVersion": NETPOL, "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {"app.vworkspace.io/managed-by": "vworkspace"}},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}});
            let apply = PatchParams { dry_run: true, ..PatchParams::apply("vworkspace-gitops") };
            let error = policies
                .patch("allow-everything", &apply, &Patch::Apply(&policy("allow-everything")))
                .await
                .expect_err("another NetworkPolicy name");
            assert!(
                matches!(&error, kube::Error::Api(s) if (s.code == 403 || s.code == 422) && s.message.contains(GUARDRAILS_POLICY)),
                "{error}"
            );
            policies
                .patch(DENY, &apply, &Patch::Apply(&policy(DENY)))
                .await
                .expect("its own NetworkPolicy is admitted");
        })
        .await;
}
