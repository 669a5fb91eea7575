//! The per-namespace RBAC of the seed model, built for one managed namespace: the operator's Role and
//! RoleBinding, and the `vworkspace-operation-runner` ServiceAccount that Jobs and Workflows run as.
//! Pure: the reconciler applies what this returns when a namespace gains the managed label, and deletes
//! the RoleBinding when it loses it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The operator's ServiceAccount and the name of its Roles and bindings.
pub const OPERATOR: &str = "vworkspace-app-operator";
/// The operator's namespace.
pub const OPERATOR_NAMESPACE: &str = "vworkspace-system";
/// The ServiceAccount that Jobs and Workflows run as (never the operator's).
pub const RUNNER: &str = "vworkspace-operation-runner";

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

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
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

/// The seed's namespace Role, rule for rule.
pub fn operator_role(namespace: &str) -> Role {
    Role {
        metadata: meta(OPERATOR, namespace),
        rules: Some(vec![
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
        ]),
    }
}

/// Binds the operator's ServiceAccount to [`operator_role`] in `namespace`.
pub fn operator_role_binding(namespace: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(OPERATOR, namespace),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: OPERATOR.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: OPERATOR.to_owned(),
            namespace: Some(OPERATOR_NAMESPACE.to_owned()),
            ..Subject::default()
        }]),
    }
}

/// The runner ServiceAccount: Jobs and Workflows run as it. It has no token mounted by default; the
/// operation templates' Roles (issue: children and admission) grant it what a template needs.
pub fn runner_service_account(namespace: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(RUNNER, namespace),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_is_the_seeds_and_never_lists_secrets() {
        let role = operator_role("org-myteam");
        assert_eq!(role.metadata.namespace.as_deref(), Some("org-myteam"));
        let rules = role.rules.unwrap_or_default();
        assert_eq!(rules.len(), 10);
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
    }

    #[test]
    fn binding_names_the_operator_and_runner_is_separate() {
        let binding = operator_role_binding("org-myteam");
        let subject = &binding.subjects.expect("subjects")[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            (OPERATOR, Some(OPERATOR_NAMESPACE))
        );
        assert_eq!(binding.role_ref.name, OPERATOR);
        let runner = runner_service_account("org-myteam");
        assert_eq!(runner.metadata.name.as_deref(), Some(RUNNER));
        assert_ne!(RUNNER, OPERATOR);
        assert_eq!(runner.automount_service_account_token, Some(false));
    }
}
