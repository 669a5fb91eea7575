//! Which children this process judges when it reconciles only some `Cluster`s (`run
//! --watch-label-selector`, Flux's sharding flag): several operator processes, each with its own
//! selector, then share one API server without judging each other's children. A child labelled for a
//! `Cluster` of this shard is ours; so is any child in a namespace a `Cluster` of this shard manages
//! (one written through the API, not by a pass, must still be refused by someone). Everything else
//! belongs to another shard: left alone, no status written. Without a selector every
//! child is ours, as before.

use std::sync::Arc;

use vworkspace_core::crd::Cluster;
use vworkspace_core::labels::LABEL_CLUSTER;

/// Whether a child with `cluster_label` (its [`LABEL_CLUSTER`]) in `namespace` is judged by the
/// process whose `Cluster`s are `ours`.
pub fn in_shard(cluster_label: Option<&str>, namespace: &str, ours: &[Arc<Cluster>]) -> bool {
    let labelled_ours =
        cluster_label.is_some_and(|label| ours.iter().any(|c| c.spec.cluster_id == label));
    // Otherwise by namespace: a namespace is managed by one Cluster, and a child whose label names
    // no Cluster of ours (none, a deleted one, a forged one) must still be judged by someone.
    labelled_ours
        || ours.iter().any(|c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.managed_namespaces.iter().any(|m| m.name == namespace))
        })
}

/// The child's [`LABEL_CLUSTER`].
pub fn cluster_label(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(LABEL_CLUSTER))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vworkspace_core::crd::{ClusterStatus, ManagedNamespace};

    fn cluster(id: &str, namespaces: &[&str]) -> Arc<Cluster> {
        let mut c: Cluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": id},
            "spec": {"clusterId": id,
                     "source": {"url": "file:///r", "ref": {"branch": "main"}, "interval": "5m"},
                     "commitSigners": {"configMapRef": {"name": "t"}},
                     "release": {"signersConfigMapRef": {"name": "t"}, "threshold": 1},
                     "decryption": {"identitySecretRef": {"name": "a"}}}
        }))
        .expect("a Cluster");
        c.status = Some(ClusterStatus {
            managed_namespaces: namespaces
                .iter()
                .map(|n| ManagedNamespace {
                    name: (*n).to_owned(),
                    allowed_operation_templates: Vec::new(),
                })
                .collect(),
            ..ClusterStatus::default()
        });
        Arc::new(c)
    }

    #[test]
    fn a_child_is_judged_by_the_shard_of_its_cluster_or_of_its_namespace() {
        let ours = [cluster("a", &["team-a"])];
        let cases: [(Option<&str>, &str, bool, &str); 7] = [
            (Some("a"), "team-a", true, "labelled for our Cluster"),
            (
                Some("a"),
                "elsewhere",
                true,
                "labelled for our Cluster, any namespace",
            ),
            (
                Some("b"),
                "team-b",
                false,
                "labelled for another shard's Cluster",
            ),
            (
                Some("b"),
                "team-a",
                true,
                "another Cluster's label in our namespace",
            ),
            (None, "team-a", true, "unlabelled, in a namespace we manage"),
            (
                None,
                "team-b",
                false,
                "unlabelled, in another shard's namespace",
            ),
            (Some(""), "team-a", true, "an empty label is no label"),
        ];
        for (label, namespace, expected, why) in cases {
            assert_eq!(in_shard(label, namespace, &ours), expected, "{why}");
        }
        assert!(!in_shard(None, "team-a", &[]), "no Cluster, no child");
    }
}
