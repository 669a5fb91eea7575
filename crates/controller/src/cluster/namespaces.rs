//! Managed namespaces: the namespaces labelled `app.vworkspace.io/managed-by=vworkspace`, their RBAC
//! (see [`crate::cluster::rbac`]) and their record in `Cluster.status.managedNamespaces`. The decisions (which
//! namespaces, what changed, whether live RBAC already is what it should be) are pure; [`ensure`] and
//! [`release`] do the I/O, by name only.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cluster::rbac::{self, ALLOWED_TEMPLATES_ANNOTATION, MANAGED_LABEL};
use crate::error::Error;
use vworkspace_core::crd::ManagedNamespace;

/// The label selector of managed namespaces.
pub fn selector() -> String {
    format!("{}={}", MANAGED_LABEL.0, MANAGED_LABEL.1)
}

/// The managed namespaces among `namespaces`, sorted by name, with their allowed templates.
pub fn managed(namespaces: &[Namespace]) -> Vec<ManagedNamespace> {
    let mut out: Vec<ManagedNamespace> = namespaces
        .iter()
        .filter(|ns| {
            ns.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_LABEL.0))
                .is_some_and(|v| v == MANAGED_LABEL.1)
                // A namespace being deleted is no longer a place to apply to.
                && ns.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|ns| {
            Some(ManagedNamespace {
                name: ns.metadata.name.clone()?,
                allowed_operation_templates: rbac::allowed_templates(
                    ns.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(ALLOWED_TEMPLATES_ANNOTATION))
                        .map(String::as_str),
                ),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The namespaces that were managed (as the status recorded) and no longer are: their bindings go.
pub fn removed(previous: &[ManagedNamespace], current: &[ManagedNamespace]) -> Vec<String> {
    let now: BTreeSet<&str> = current.iter().map(|m| m.name.as_str()).collect();
    previous
        .iter()
        .map(|m| m.name.as_str())
        .filter(|name| !now.contains(name))
        .map(str::to_owned)
        .collect()
}

/// Whether a live binding already is what `desired` says (labels, role and subjects).
pub fn binding_matches(desired: &RoleBinding, live: &RoleBinding) -> bool {
    labels_match(&desired.metadata, &live.metadata)
        && desired.role_ref == live.role_ref
        && desired.subjects == live.subjects
}

/// Whether a live ServiceAccount already is what `desired` says.
pub fn service_account_matches(desired: &ServiceAccount, live: &ServiceAccount) -> bool {
    labels_match(&desired.metadata, &live.metadata)
        && desired.automount_service_account_token == live.automount_service_account_token
}

fn labels_match(
    desired: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    live: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    let live_labels = live.labels.clone().unwrap_or_default();
    desired
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| live_labels.get(k) == Some(v))
}

/// Lists the namespaces (the ClusterRole allows `list` on namespaces; nothing else is listed).
pub async fn list_managed(client: &Client) -> Result<Vec<ManagedNamespace>, Error> {
    Ok(list_managed_with_labels(client).await?.0)
}

/// The live labels of each listed namespace, by name, and whether the operator's field manager has
/// applied to it before (the guardrails judge them).
pub type NamespaceLabels = BTreeMap<String, (BTreeMap<String, String>, bool)>;

/// [`list_managed`], and the labels of the namespaces it lists.
pub async fn list_managed_with_labels(
    client: &Client,
) -> Result<(Vec<ManagedNamespace>, NamespaceLabels), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels(&selector()))
        .await
        .map_err(|source| Error::Kube {
            action: "list managed namespaces".into(),
            source,
        })?;
    let labels = list
        .items
        .iter()
        .filter_map(|ns| {
            let applied_before = ns.metadata.managed_fields.iter().flatten().any(|f| {
                f.manager.as_deref() == Some(crate::cluster::apply::FIELD_MANAGER)
                    && f.operation.as_deref() == Some("Apply")
            });
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            Some((ns.metadata.name.clone()?, (labels, applied_before)))
        })
        .collect();
    Ok((managed(&list.items), labels))
}

pub(crate) async fn ensure_one<K>(
    api: Api<K>,
    desired: &K,
    matches: fn(&K, &K) -> bool,
    field_manager: &str,
    what: String,
) -> Result<bool, Error>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    ensure_one_as(api, desired, matches, Check::ReadFirst, field_manager, what).await
}

/// [`ensure_one`], or with [`Check::ApplyOnly`] the apply alone, unread (a namespace new to the
/// `Cluster`: what it holds is written anyway, and the read would double the requests).
async fn ensure_one_as<K>(
    api: Api<K>,
    desired: &K,
    matches: fn(&K, &K) -> bool,
    check: Check,
    field_manager: &str,
    what: String,
) -> Result<bool, Error>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    if check == Check::ReadFirst {
        let live = api.get_opt(&name).await.map_err(|source| Error::Kube {
            action: format!("get {what}"),
            source,
        })?;
        if live.as_ref().is_some_and(|live| matches(desired, live)) {
            return Ok(false);
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(desired),
    )
    .await
    .map_err(|source| Error::Kube {
        action: format!("apply {what}"),
        source,
    })?;
    Ok(true)
}

/// How [`ensure`] treats a namespace's RBAC objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Read each by name and apply only what differs (a namespace a pass already gave them: a
    /// pass that finds them right writes nothing).
    ReadFirst,
    /// Apply each without reading it (a namespace new to the `Cluster`: they are written anyway).
    ApplyOnly,
}

/// Makes `namespace`'s RBAC what [`rbac::for_namespace`] says, as `check` says. Returns how many
/// objects were written.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    field_manager: &str,
    check: Check,
) -> Result<usize, Error> {
    let desired = rbac::for_namespace(namespace);
    let mut written = 0;
    // The binding to the runner's ClusterRole names the ServiceAccount: create it first.
    if ensure_one_as(
        Api::<ServiceAccount>::namespaced(client.clone(), namespace),
        &desired.runner,
        service_account_matches,
        check,
        field_manager,
        format!("ServiceAccount {namespace}/{}", rbac::RUNNER),
    )
    .await?
    {
        written += 1;
    }
    for binding in &desired.bindings {
        let name = binding.metadata.name.clone().unwrap_or_default();
        if ensure_one_as(
            Api::<RoleBinding>::namespaced(client.clone(), namespace),
            binding,
            binding_matches,
            check,
            field_manager,
            format!("RoleBinding {namespace}/{name}"),
        )
        .await?
        {
            written += 1;
        }
    }
    Ok(written)
}

/// Removes the operator's (both) and the runner's bindings from a namespace that lost the label. The runner
/// ServiceAccount stays (a Job may still run as it); without its binding it has no rights.
pub async fn release(client: &Client, namespace: &str) -> Result<(), Error> {
    let api: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    for name in [rbac::OPERATOR, rbac::VALUES_BINDING, rbac::RUNNER] {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            // Already gone: what we wanted.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("delete RoleBinding {namespace}/{name}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn namespace(name: &str, labels: &[(&str, &str)], templates: Option<&str>) -> Namespace {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.to_owned());
        ns.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        if let Some(t) = templates {
            ns.metadata.annotations = Some(BTreeMap::from([(
                ALLOWED_TEMPLATES_ANNOTATION.to_owned(),
                t.to_owned(),
            )]));
        }
        ns
    }

    #[test]
    fn only_labelled_namespaces_are_managed() {
        let managed = managed(&[
            namespace("b", &[MANAGED_LABEL], Some("pg-dump")),
            namespace("a", &[MANAGED_LABEL], None),
            namespace("c", &[(MANAGED_LABEL.0, "someone-else")], None),
            namespace("d", &[], None),
        ]);
        assert_eq!(
            managed,
            [
                ManagedNamespace {
                    name: "a".into(),
                    allowed_operation_templates: vec![]
                },
                ManagedNamespace {
                    name: "b".into(),
                    allowed_operation_templates: vec!["pg-dump".into()]
                },
            ]
        );
    }

    #[test]
    fn a_namespace_that_lost_the_label_is_released() {
        let m = |n: &str| ManagedNamespace {
            name: n.into(),
            allowed_operation_templates: vec![],
        };
        assert_eq!(removed(&[m("a"), m("b")], &[m("b"), m("c")]), ["a"]);
        assert!(removed(&[], &[m("a")]).is_empty());
    }

    #[test]
    fn live_rbac_is_compared_on_what_matters() {
        let desired = rbac::operator_role_binding("org");
        let mut live = desired.clone();
        live.metadata.resource_version = Some("7".into());
        assert!(binding_matches(&desired, &live));
        live.role_ref.name = "cluster-admin".into();
        assert!(!binding_matches(&desired, &live));
        let sa = rbac::runner_service_account("org");
        let mut live_sa = sa.clone();
        assert!(service_account_matches(&sa, &live_sa));
        live_sa.automount_service_account_token = Some(true);
        assert!(!service_account_matches(&sa, &live_sa));
    }
}
