//! `Cluster.spec.namespacePolicy`: the guardrails the operator keeps on every managed namespace (Pod
//! Security labels and NetworkPolicies). The cluster owner's, like every trust input of the `Cluster`:
//! the intent repository cannot declare or weaken it (docs/security.md, "Namespace guardrails").
//! What these values become is decided in [`crate::guardrails`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most namespace peers in one allow-list (ingress or egress).
pub const MAX_PEERS: usize = 64;
/// Most labels in one namespace selector.
pub const MAX_SELECTOR_LABELS: usize = 16;

/// The guardrails of every managed namespace. Absent: the operator leaves the namespaces' Pod
/// Security labels and NetworkPolicies alone; `namespacePolicy: {}` keeps `restricted` and the
/// default-deny ingress policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacePolicy {
    /// The Pod Security Standard enforced (and warned and audited) on each managed namespace:
    /// `restricted` (default) or `baseline`. `privileged` is refused.
    #[serde(default = "default_pod_security")]
    #[schemars(extend("enum" = ["restricted", "baseline"]))]
    pub pod_security: String,
    /// The NetworkPolicies kept in each managed namespace.
    #[serde(default)]
    pub network_policy: NamespaceNetworkPolicy,
}

impl NamespacePolicy {
    /// `namespacePolicy: {}`: `restricted`, default-deny ingress, nothing else declared.
    pub fn default_restricted() -> NamespacePolicy {
        NamespacePolicy {
            pod_security: default_pod_security(),
            network_policy: NamespaceNetworkPolicy::default(),
        }
    }
}

fn default_pod_security() -> String {
    "restricted".to_owned()
}

/// Ingress from other namespaces is denied (traffic inside the namespace is allowed) but from the
/// namespaces listed; egress is open unless `egress` is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceNetworkPolicy {
    /// Namespaces whose pods may connect to every pod of a managed namespace (an ingress
    /// controller's, a monitoring namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allow_ingress_from: Vec<NamespacePeer>,
    /// When set, egress is denied too, but to the managed namespace itself, to DNS (unless
    /// `allowDns: false`) and to the peers listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressPolicy>,
}

/// Namespaces by name or by labels: exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacePeer {
    /// One namespace, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Every namespace with these labels (`matchLabels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<BTreeMap<String, String>>,
}

/// The egress allow-list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressPolicy {
    /// Allow DNS (UDP and TCP port 53) to every namespace (default `true`: without it no name
    /// resolves).
    #[serde(default = "default_true")]
    pub allow_dns: bool,
    /// Namespaces pods may connect to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub to_namespaces: Vec<NamespacePeer>,
    /// Address ranges (CIDR, e.g. `10.0.0.0/8`) pods may connect to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub to_cidrs: Vec<String>,
}

fn default_true() -> bool {
    true
}
