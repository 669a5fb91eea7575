//! Namespace guardrails, written (`Cluster.spec.namespacePolicy`, issue 27): the Pod Security labels
//! on a managed namespace and the NetworkPolicies in it, read by name and written by server-side
//! apply with the operator's field manager only where they differ from what
//! [`vworkspace_core::guardrails`] decides. RBAC: `patch` on namespaces (clusterrole-gitops.yaml) and
//! `get`/`create`/`patch`/`delete` on NetworkPolicies in managed namespaces (the namespace
//! ClusterRole); the admission policy `vworkspace-app-operator-guardrails-scope` lets the operator
//! change no other label of a namespace, and write no other NetworkPolicy.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use vworkspace_core::guardrails::{
    ALLOW_DECLARED, DEFAULT_DENY_INGRESS, Guardrails, labels_hold, network_policy_holds, weakened,
};

use super::apply::FIELD_MANAGER;
use super::namespaces::ensure_one;
use crate::error::Error;

use crate::metrics::GUARDRAIL_REPAIR_KINDS as REPAIR_KINDS;

/// What keeping one namespace's guardrails found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    /// How its live labels weakened the level (they were restored), when they did.
    pub weakened: Option<String>,
    /// Whether its Pod Security labels were written.
    pub labels_written: bool,
    /// How many NetworkPolicies were written or deleted.
    pub policies_written: usize,
}

impl Kept {
    /// The repairs, as [`REPAIR_KINDS`] with counts.
    pub fn repairs(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let labels = match (self.labels_written, self.weakened.is_some()) {
            (false, _) => None,
            (true, true) => Some((REPAIR_KINDS[0], 1)),
            (true, false) => Some((REPAIR_KINDS[1], 1)),
        };
        let policies =
            (self.policies_written > 0).then_some((REPAIR_KINDS[2], self.policies_written as u64));
        labels.into_iter().chain(policies)
    }
}

/// Makes `namespace` carry `guardrails`: its labels (judged on its live labels from the pass's list,
/// and whether our field manager applied to it before) and its NetworkPolicies.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    (live_labels, kept_before): &(BTreeMap<String, String>, bool),
    guardrails: &Guardrails,
    cluster_id: &str,
) -> Result<Kept, Error> {
    let desired = guardrails.labels();
    let mut kept = Kept::default();
    if !labels_hold(&desired, live_labels) {
        kept.weakened = weakened(guardrails.level, live_labels, *kept_before);
        apply_labels(client, namespace, &desired).await?;
        kept.labels_written = true;
    }
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    let (deny, allow) = guardrails.network_policies(namespace, cluster_id);
    for desired in std::iter::once(&deny).chain(allow.as_ref()) {
        let name = desired.metadata.name.clone().unwrap_or_default();
        let what = format!("NetworkPolicy {namespace}/{name}");
        if ensure_one(
            api.clone(),
            desired,
            network_policy_holds,
            FIELD_MANAGER,
            what,
        )
        .await?
        {
            kept.policies_written += 1;
        }
    }
    if allow.is_none() && delete_if_present(&api, namespace, ALLOW_DECLARED).await? {
        kept.policies_written += 1;
    }
    Ok(kept)
}

/// Only the Pod Security labels, owned by our field manager (the namespace's other labels stay
/// their writers').
async fn apply_labels(
    client: &Client,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace, "labels": labels},
    });
    Api::<Namespace>::all(client.clone())
        .patch(
            namespace,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| Error::Kube {
            action: format!("apply the Pod Security labels of Namespace {namespace}"),
            source,
        })?;
    Ok(())
}

/// Deletes a NetworkPolicy of ours that should not exist; whether one was there.
async fn delete_if_present(
    api: &Api<NetworkPolicy>,
    namespace: &str,
    name: &str,
) -> Result<bool, Error> {
    let kube_error = |action: &str, source| Error::Kube {
        action: format!("{action} NetworkPolicy {namespace}/{name}"),
        source,
    };
    if api
        .get_opt(name)
        .await
        .map_err(|e| kube_error("get", e))?
        .is_none()
    {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(kube_error("delete", e)),
    }
}

/// Removes the operator's NetworkPolicies from a namespace that is no longer managed (its Pod
/// Security labels stay: loosening them is the owner's call, and the operator may no longer write
/// the namespace).
pub async fn release(client: &Client, namespace: &str) -> Result<(), Error> {
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    for name in [DEFAULT_DENY_INGRESS, ALLOW_DECLARED] {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("delete NetworkPolicy {namespace}/{name}"),
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

    #[test]
    fn repairs_are_counted_by_bounded_kind() {
        let cases = [
            (Kept::default(), vec![]),
            (
                Kept {
                    weakened: Some("x".into()),
                    labels_written: true,
                    policies_written: 0,
                },
                vec![("pod_security_weakened", 1)],
            ),
            (
                Kept {
                    weakened: None,
                    labels_written: true,
                    policies_written: 2,
                },
                vec![("pod_security_drift", 1), ("network_policy", 2)],
            ),
        ];
        for (kept, expected) in cases {
            assert_eq!(kept.repairs().collect::<Vec<_>>(), expected, "{kept:?}");
        }
    }
}
