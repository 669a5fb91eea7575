//! The per-namespace RBAC of the seed model, built for one managed namespace: the operator's rights
//! there (the seed's namespace Role, rule for rule) bound to its ServiceAccount, and the
//! `vworkspace-operation-runner` ServiceAccount that Jobs and Workflows run as, with its own binding.
//! Pure: the reconciler applies what this returns when a namespace gains the managed label, and deletes
//! the bindings when it loses it.
//!
//! One deliberate change of form from the seed: the seed's per-namespace `Role` is shipped once, in
//! `deploy/`, as the ClusterRole [`NAMESPACE_CLUSTER_ROLE`] with exactly the same rules, and each
//! managed namespace gets a `RoleBinding` to it. The rights in a namespace are the same; the reason is
//! Kubernetes' escalation check: writing a `Role` requires holding every right it grants (or the
//! `escalate` verb, which would let a compromised operator write itself any Role anywhere), whereas a
//! `RoleBinding` only needs `bind` on the one named ClusterRole. See docs/operating.md.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The operator's ServiceAccount and the name of its Roles and bindings.
pub const OPERATOR: &str = "vworkspace-app-operator";
/// The operator's namespace.
pub const OPERATOR_NAMESPACE: &str = "vworkspace-system";
/// The ServiceAccount that Jobs and Workflows run as (never the operator's), and the name of its
/// binding and ClusterRole.
pub const RUNNER: &str = "vworkspace-operation-runner";
/// The ClusterRole (shipped in `deploy/`) that holds the seed's namespace Role rules; bound per
/// managed namespace, never cluster-wide.
pub const NAMESPACE_CLUSTER_ROLE: &str = "vworkspace-app-operator-namespace";
/// The ClusterRole (shipped in `deploy/`) with the one right GitOps mode adds in a managed namespace:
/// writing the `<instance>-values` Secrets (create, patch, delete; never list or watch). Bound per
/// managed namespace, as [`VALUES_BINDING`].
pub const VALUES_CLUSTER_ROLE: &str = "vworkspace-app-operator-values";
/// The name of the RoleBinding to [`VALUES_CLUSTER_ROLE`].
pub const VALUES_BINDING: &str = "vworkspace-app-operator-values";
/// The label that makes a namespace managed, and its value.
pub const MANAGED_LABEL: (&str, &str) = (
    vworkspace_core::labels::LABEL_MANAGED_BY,
    vworkspace_core::labels::MANAGED_BY_VALUE,
);
pub use vworkspace_core::labels::ALLOWED_TEMPLATES_ANNOTATION;

const ALL: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
const READ: &[&str] = &["get", "list", "watch"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let own = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(own(groups)),
        resources: Some(own(resources)),
        verbs: own(verbs),
        ..PolicyRule::default()
    }
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), OPERATOR.to_owned()),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "vworkspace".to_owned(),
            ),
        ])),
        ..ObjectMeta::default()
    }
}

/// The seed's namespace Role rules, rule for rule, and the NetworkPolicies of the namespace
/// guardrails (the one rule added to the seed's Role, docs/security.md).
pub fn namespace_rules() -> Vec<PolicyRule> {
    vec![
        rule(&["helm.toolkit.fluxcd.io"], &["helmreleases"], ALL),
        rule(
            &["source.toolkit.fluxcd.io"],
            &["helmrepositories", "ocirepositories"],
            ALL,
        ),
        rule(&[""], &["persistentvolumeclaims"], READ),
        rule(&["argoproj.io"], &["workflows", "workflowtemplates"], ALL),
        rule(&["batch"], &["jobs"], ALL),
        rule(&[""], &["pods", "pods/log"], READ),
        rule(&["snapshot.storage.k8s.io"], &["volumesnapshots"], ALL),
        rule(
            &["volsync.backube"],
            &["replicationsources", "replicationdestinations"],
            ALL,
        ),
        // Secrets and ConfigMaps by name only: never list or watch.
        rule(&[""], &["secrets", "configmaps"], &["get"]),
        rule(&[""], &["events"], &["create", "patch"]),
        // GitOps mode's namespace guardrails (issue 27), beyond the seed: the operator's own
        // NetworkPolicies, by name (never list or watch); the admission policy
        // vworkspace-app-operator-guardrails-scope limits the writes to its two names.
        rule(
            &["networking.k8s.io"],
            &["networkpolicies"],
            &["get", "create", "patch", "delete"],
        ),
    ]
}

/// The ClusterRole holding [`namespace_rules`]; `deploy/` ships it and a test keeps the two equal.
pub fn namespace_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: meta(NAMESPACE_CLUSTER_ROLE, None),
        rules: Some(namespace_rules()),
        ..ClusterRole::default()
    }
}

/// The values ClusterRole: write the `<instance>-values` Secrets that HelmReleases read.
pub fn values_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: meta(VALUES_CLUSTER_ROLE, None),
        rules: Some(vec![rule(
            &[""],
            &["secrets"],
            &["create", "patch", "delete"],
        )]),
        ..ClusterRole::default()
    }
}

/// The runner's ClusterRole: the default Job and Workflow profile needs no API access at all, so it
/// grants nothing; templates that need more bring their own profile (issue: children and admission).
pub fn runner_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: meta(RUNNER, None),
        rules: Some(Vec::new()),
        ..ClusterRole::default()
    }
}

fn binding(name: &str, namespace: &str, cluster_role: &str, subject: Subject) -> RoleBinding {
    RoleBinding {
        metadata: meta(name, Some(namespace)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: cluster_role.to_owned(),
        },
        subjects: Some(vec![subject]),
    }
}

/// Binds the operator's ServiceAccount to [`NAMESPACE_CLUSTER_ROLE`] in `namespace`.
pub fn operator_role_binding(namespace: &str) -> RoleBinding {
    binding(
        OPERATOR,
        namespace,
        NAMESPACE_CLUSTER_ROLE,
        Subject {
            kind: "ServiceAccount".to_owned(),
            name: OPERATOR.to_owned(),
            namespace: Some(OPERATOR_NAMESPACE.to_owned()),
            ..Subject::default()
        },
    )
}

/// Binds the operator's ServiceAccount to [`VALUES_CLUSTER_ROLE`] in `namespace`.
pub fn values_role_binding(namespace: &str) -> RoleBinding {
    binding(
        VALUES_BINDING,
        namespace,
        VALUES_CLUSTER_ROLE,
        Subject {
            kind: "ServiceAccount".to_owned(),
            name: OPERATOR.to_owned(),
            namespace: Some(OPERATOR_NAMESPACE.to_owned()),
            ..Subject::default()
        },
    )
}

/// Binds the namespace's runner ServiceAccount to the runner ClusterRole.
pub fn runner_role_binding(namespace: &str) -> RoleBinding {
    binding(
        RUNNER,
        namespace,
        RUNNER,
        Subject {
            kind: "ServiceAccount".to_owned(),
            name: RUNNER.to_owned(),
            namespace: Some(namespace.to_owned()),
            ..Subject::default()
        },
    )
}

/// Everything one managed namespace gets.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceRbac {
    /// The runner ServiceAccount.
    pub runner: ServiceAccount,
    /// The operator's bindings (namespace rules, values Secrets), then the runner's.
    pub bindings: [RoleBinding; 3],
}

/// The objects for managed namespace `namespace`.
pub fn for_namespace(namespace: &str) -> NamespaceRbac {
    NamespaceRbac {
        runner: runner_service_account(namespace),
        bindings: [
            operator_role_binding(namespace),
            values_role_binding(namespace),
            runner_role_binding(namespace),
        ],
    }
}

/// A digest of what [`for_namespace`] gives every managed namespace (names, roles, subjects; the
/// namespace itself left out): recorded in `status.namespaceRbac` once every managed namespace holds
/// it, so that a restarted operator giving the same need not read it back. An operator version that
/// gives other RBAC has another digest and checks every namespace again.
pub fn digest() -> &'static str {
    static DIGEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use sha2::Digest as _;
        let template = for_namespace("");
        let bytes = serde_json::to_vec(&(&template.runner, &template.bindings)).unwrap_or_default();
        let hash = sha2::Sha256::digest(&bytes);
        format!("sha256:{}", hex::encode(&hash[..16]))
    });
    &DIGEST
}

/// The templates a namespace may run, from its [`ALLOWED_TEMPLATES_ANNOTATION`]: trimmed, sorted,
/// de-duplicated, empty entries dropped.
pub fn allowed_templates(annotation: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = annotation
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The runner ServiceAccount: Jobs and Workflows run as it. It has no token mounted by default; the
/// operation templates' Roles (issue: children and admission) grant it what a template needs.
pub fn runner_service_account(namespace: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(RUNNER, Some(namespace)),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_the_seeds_and_never_list_secrets() {
        let rules = namespace_rules();
        // The seed's ten, and the guardrails' NetworkPolicies (issue 27), last.
        assert_eq!(rules.len(), 11);
        let netpol = rules.last().expect("the guardrails rule");
        assert_eq!(
            netpol.resources.as_deref(),
            Some(&["networkpolicies".to_owned()][..])
        );
        assert_eq!(netpol.verbs, ["get", "create", "patch", "delete"]);
        for r in &rules {
            let resources = r.resources.clone().unwrap_or_default();
            if resources.iter().any(|x| x == "secrets") {
                assert_eq!(r.verbs, ["get"]);
            }
            assert!(!resources.iter().any(|x| x == "pods/exec" || x == "*"));
            assert!(!r.verbs.iter().any(|v| v == "*"));
        }
        let pods = rules
            .iter()
            .find(|r| {
                r.resources
                    .as_deref()
                    .is_some_and(|x| x.contains(&"pods".to_owned()))
            })
            .expect("pods rule");
        assert_eq!(pods.verbs, ["get", "list", "watch"]);
        assert_eq!(namespace_cluster_role().rules, Some(rules));
        assert_eq!(runner_cluster_role().rules, Some(Vec::new()));
    }

    #[test]
    fn bindings_name_the_operator_and_the_runner_separately() {
        let rbac = for_namespace("org-myteam");
        let [operator, values, runner] = &rbac.bindings;
        assert_eq!(values.role_ref.name, VALUES_CLUSTER_ROLE);
        let verbs = &values_cluster_role().rules.unwrap_or_default()[0].verbs;
        assert!(!verbs.iter().any(|v| v == "list" || v == "watch"));
        let subject = &operator.subjects.as_ref().expect("subjects")[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            (OPERATOR, Some(OPERATOR_NAMESPACE))
        );
        assert_eq!(
            (
                operator.role_ref.kind.as_str(),
                operator.role_ref.name.as_str()
            ),
            ("ClusterRole", NAMESPACE_CLUSTER_ROLE)
        );
        assert_eq!(operator.metadata.namespace.as_deref(), Some("org-myteam"));
        let subject = &runner.subjects.as_ref().expect("subjects")[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            (RUNNER, Some("org-myteam"))
        );
        assert_eq!(runner.role_ref.name, RUNNER);
        assert_eq!(rbac.runner.metadata.name.as_deref(), Some(RUNNER));
        assert_ne!(RUNNER, OPERATOR);
        assert_eq!(rbac.runner.automount_service_account_token, Some(false));
    }

    #[test]
    fn allowed_templates_are_trimmed_sorted_and_unique() {
        assert_eq!(
            allowed_templates(Some(" restic-backup,pg-dump, ,restic-backup")),
            ["pg-dump", "restic-backup"]
        );
        assert!(allowed_templates(None).is_empty());
    }
}
