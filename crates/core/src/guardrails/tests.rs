use super::*;
use crate::crd::{EgressPolicy, NamespaceNetworkPolicy};

fn policy(level: &str) -> NamespacePolicy {
    NamespacePolicy {
        pod_security: level.to_owned(),
        network_policy: NamespaceNetworkPolicy::default(),
    }
}

fn by_name(name: &str) -> NamespacePeer {
    NamespacePeer {
        namespace: Some(name.to_owned()),
        namespace_selector: None,
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn the_default_policy_is_restricted() {
    let parsed: NamespacePolicy = serde_json::from_str("{}").expect("json");
    let guardrails = Guardrails::from_policy(&parsed).expect("valid");
    assert_eq!(guardrails.level, PodSecurityLevel::Restricted);
}

#[test]
fn levels_and_refusals_name_the_field() {
    let cases: &[(&str, Result<PodSecurityLevel, &str>)] = &[
        ("restricted", Ok(PodSecurityLevel::Restricted)),
        ("baseline", Ok(PodSecurityLevel::Baseline)),
        (
            "privileged",
            Err("spec.namespacePolicy.podSecurity: \"privileged\" is refused"),
        ),
        (
            "Restricted",
            Err("spec.namespacePolicy.podSecurity: \"Restricted\" is not a level"),
        ),
        (
            "",
            Err("spec.namespacePolicy.podSecurity: \"\" is not a level"),
        ),
    ];
    for (level, expected) in cases {
        let got = Guardrails::from_policy(&policy(level)).map(|g| g.level);
        match (got, expected) {
            (Ok(got), Ok(expected)) => assert_eq!(got, *expected, "{level}"),
            (Err(e), Err(prefix)) => assert!(e.to_string().starts_with(prefix), "{level}: {e}"),
            (got, expected) => panic!("{level}: {got:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn bad_allow_lists_are_refused_naming_the_entry() {
    let mut selector_and_name = by_name("ingress");
    selector_and_name.namespace_selector = Some(labels(&[("team", "a")]));
    let empty_selector = NamespacePeer {
        namespace: None,
        namespace_selector: Some(BTreeMap::new()),
    };
    let cases: Vec<(NamespaceNetworkPolicy, &str)> = vec![
        (
            NamespaceNetworkPolicy {
                allow_ingress_from: vec![by_name("ok"), selector_and_name],
                egress: None,
            },
            "spec.namespacePolicy.networkPolicy.allowIngressFrom[1]: set exactly one",
        ),
        (
            NamespaceNetworkPolicy {
                allow_ingress_from: vec![NamespacePeer::default()],
                egress: None,
            },
            "allowIngressFrom[0]: set exactly one",
        ),
        (
            NamespaceNetworkPolicy {
                allow_ingress_from: vec![by_name("Not_A-Name")],
                egress: None,
            },
            "allowIngressFrom[0]: namespace \"Not_A-Name\" is not a namespace name",
        ),
        (
            NamespaceNetworkPolicy {
                allow_ingress_from: vec![empty_selector],
                egress: None,
            },
            "allowIngressFrom[0]: an empty namespaceSelector selects every namespace",
        ),
        (
            NamespaceNetworkPolicy {
                allow_ingress_from: (0..=MAX_PEERS).map(|_| by_name("a")).collect(),
                egress: None,
            },
            "allowIngressFrom: more than 64 entries",
        ),
        (
            NamespaceNetworkPolicy {
                allow_ingress_from: vec![],
                egress: Some(EgressPolicy {
                    allow_dns: true,
                    to_namespaces: vec![],
                    to_cidrs: vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()],
                }),
            },
            "egress.toCidrs[1]: \"10.0.0.0/33\" is not a CIDR",
        ),
        (
            NamespaceNetworkPolicy {
                allow_ingress_from: vec![],
                egress: Some(EgressPolicy {
                    allow_dns: true,
                    to_namespaces: vec![],
                    to_cidrs: vec!["db.example.org".into()],
                }),
            },
            "egress.toCidrs[0]: \"db.example.org\" is not a CIDR",
        ),
    ];
    for (network_policy, expected) in cases {
        let policy = NamespacePolicy {
            pod_security: "restricted".into(),
            network_policy,
        };
        let error = Guardrails::from_policy(&policy).expect_err(expected);
        assert!(error.to_string().contains(expected), "{error} / {expected}");
    }
}

#[test]
fn labels_enforce_warn_and_audit_at_the_level_and_latest() {
    let guardrails = Guardrails::from_policy(&policy("baseline")).expect("valid");
    assert_eq!(
        guardrails.labels(),
        labels(&[
            ("pod-security.kubernetes.io/audit", "baseline"),
            ("pod-security.kubernetes.io/audit-version", "latest"),
            ("pod-security.kubernetes.io/enforce", "baseline"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
            ("pod-security.kubernetes.io/warn", "baseline"),
            ("pod-security.kubernetes.io/warn-version", "latest"),
        ])
    );
}

#[test]
fn weakened_and_drift_are_told_apart() {
    use PodSecurityLevel::*;
    // (desired, live labels, weakened)
    type Case<'a> = (PodSecurityLevel, &'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: &[Case] = &[
        (
            Restricted,
            &[],
            Some("pod-security.kubernetes.io/enforce removed"),
        ),
        (
            Restricted,
            &[(ENFORCE_LABEL, "privileged")],
            Some("pod-security.kubernetes.io/enforce=privileged"),
        ),
        (
            Restricted,
            &[(ENFORCE_LABEL, "baseline")],
            Some("pod-security.kubernetes.io/enforce=baseline"),
        ),
        (
            Restricted,
            &[(ENFORCE_LABEL, "nope")],
            Some("pod-security.kubernetes.io/enforce=\"nope\" is not a level"),
        ),
        (Baseline, &[(ENFORCE_LABEL, "baseline")], None),
        // Stronger than desired: drift, repaired down to the owner's level, not "weakened".
        (Baseline, &[(ENFORCE_LABEL, "restricted")], None),
        (Restricted, &[(ENFORCE_LABEL, "restricted")], None),
    ];
    for (level, live, expected) in cases {
        assert_eq!(
            weakened(*level, &labels(live), true).as_deref(),
            *expected,
            "{level:?} {live:?}"
        );
    }
    // A namespace the operator never labelled is new to the policy, not weakened; a weaker level
    // someone else set is weakening either way.
    assert_eq!(weakened(Restricted, &labels(&[]), false), None);
    assert!(weakened(Restricted, &labels(&[(ENFORCE_LABEL, "privileged")]), false).is_some());
    let guardrails = Guardrails::from_policy(&policy("restricted")).expect("valid");
    let mut live = guardrails.labels();
    live.insert("team".into(), "a".into());
    assert!(
        labels_hold(&guardrails.labels(), &live),
        "extra labels are not ours"
    );
    live.insert(
        "pod-security.kubernetes.io/warn-version".into(),
        "v1.30".into(),
    );
    assert!(
        !labels_hold(&guardrails.labels(), &live),
        "a pinned version is drift"
    );
    assert_eq!(weakened(Restricted, &live, true), None, "but not weakened");
}

#[test]
fn the_default_policy_denies_other_namespaces_and_declares_nothing_else() {
    let guardrails =
        Guardrails::from_policy(&NamespacePolicy::default_restricted()).expect("valid");
    let (deny, allow) = guardrails.network_policies("org-a", "demo");
    assert!(allow.is_none());
    let json = serde_json::to_value(&deny).expect("json");
    assert_eq!(
        json,
        serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": DEFAULT_DENY_INGRESS, "namespace": "org-a",
                "labels": {"app.vworkspace.io/managed-by": "vworkspace", "gitops.vworkspace.io/cluster": "demo"}},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {}}]}]}
        })
    );
}

#[test]
fn the_declared_allow_list_becomes_one_policy() {
    let policy = NamespacePolicy {
        pod_security: "restricted".into(),
        network_policy: NamespaceNetworkPolicy {
            allow_ingress_from: vec![
                by_name("ingress-nginx"),
                NamespacePeer {
                    namespace: None,
                    namespace_selector: Some(labels(&[("team", "monitoring")])),
                },
            ],
            egress: Some(EgressPolicy {
                allow_dns: true,
                to_namespaces: vec![by_name("db")],
                to_cidrs: vec!["10.1.0.0/16".into()],
            }),
        },
    };
    let (_, allow) = Guardrails::from_policy(&policy)
        .expect("valid")
        .network_policies("org-a", "demo");
    let spec = serde_json::to_value(allow.expect("declared").spec).expect("json");
    assert_eq!(
        spec,
        serde_json::json!({
            "podSelector": {}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
                {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]}],
            "egress": [
                {"to": [{"podSelector": {}},
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db"}}},
                        {"ipBlock": {"cidr": "10.1.0.0/16"}}]},
                {"to": [{"namespaceSelector": {}}],
                 "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]
        })
    );
}

#[test]
fn the_weakened_message_names_each_namespace_and_what_was_found() {
    let message = weakened_message(
        "restricted",
        &[(
            "a".into(),
            "pod-security.kubernetes.io/enforce=privileged".into(),
        )],
    );
    assert!(message.contains("podSecurity=restricted"), "{message}");
    assert!(
        message.contains("a (pod-security.kubernetes.io/enforce=privileged)"),
        "{message}"
    );
}

#[test]
fn a_live_policy_holds_on_its_labels_and_whole_spec() {
    let guardrails = Guardrails::from_policy(&policy("restricted")).expect("valid");
    let (desired, _) = guardrails.network_policies("org-a", "demo");
    let mut live = desired.clone();
    live.metadata.resource_version = Some("9".into());
    assert!(network_policy_holds(&desired, &live));
    let mut opened = live.clone();
    if let Some(spec) = opened.spec.as_mut() {
        spec.ingress = Some(vec![NetworkPolicyIngressRule::default()]);
    }
    assert!(
        !network_policy_holds(&desired, &opened),
        "an allow-all edit"
    );
    let mut relabelled = live;
    relabelled.metadata.labels = None;
    assert!(!network_policy_holds(&desired, &relabelled));
}
