//! Namespace guardrails (`Cluster.spec.namespacePolicy`), decided: the policy checked, the Pod
//! Security labels and NetworkPolicies each managed namespace must carry, whether live ones still do,
//! and whether a namespace's live labels weaken the level (reported, not only repaired). Pure: the
//! controller reads and writes (crates/controller/src/cluster/guardrails.rs).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{MAX_PEERS, MAX_SELECTOR_LABELS, NamespacePeer, NamespacePolicy};
use crate::labels::{LABEL_CLUSTER, LABEL_MANAGED_BY, MANAGED_BY_VALUE};

/// The NetworkPolicy that denies ingress from other namespaces (same-namespace traffic allowed).
pub const DEFAULT_DENY_INGRESS: &str = "vworkspace-default-deny-ingress";
/// The NetworkPolicy of the declared allow-list (present only when something is declared).
pub const ALLOW_DECLARED: &str = "vworkspace-allow-declared";
/// The prefix of the Pod Security admission labels.
pub const POD_SECURITY_PREFIX: &str = "pod-security.kubernetes.io/";
/// The label the API server's PodSecurity admission enforces.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// The label Kubernetes sets on every namespace to its name (what a peer by name selects).
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A Pod Security Standard level, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodSecurityLevel {
    /// No restriction (never kept by the operator).
    Privileged,
    /// Known privilege escalations prevented.
    Baseline,
    /// Hardened (the default).
    Restricted,
}

impl PodSecurityLevel {
    /// The level as the label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurityLevel::Privileged => "privileged",
            PodSecurityLevel::Baseline => "baseline",
            PodSecurityLevel::Restricted => "restricted",
        }
    }

    fn parse(value: &str) -> Option<PodSecurityLevel> {
        match value {
            "privileged" => Some(PodSecurityLevel::Privileged),
            "baseline" => Some(PodSecurityLevel::Baseline),
            "restricted" => Some(PodSecurityLevel::Restricted),
            _ => None,
        }
    }
}

/// Why a `namespacePolicy` is refused; each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardrailError {
    /// `privileged` would switch Pod Security off.
    #[error(
        "spec.namespacePolicy.podSecurity: \"privileged\" is refused: managed namespaces run at `restricted` (default) or `baseline`"
    )]
    Privileged,
    /// Not a level.
    #[error(
        "spec.namespacePolicy.podSecurity: {0:?} is not a level: use `restricted` or `baseline`"
    )]
    UnknownLevel(String),
    /// A peer with both or neither of its fields, a bad name or selector.
    #[error("spec.namespacePolicy.networkPolicy.{field}: {problem}")]
    Peer {
        /// The field, e.g. `allowIngressFrom[2]`.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A list over [`MAX_PEERS`].
    #[error("spec.namespacePolicy.networkPolicy.{0}: more than {MAX_PEERS} entries")]
    TooMany(&'static str),
    /// Not a CIDR.
    #[error(
        "spec.namespacePolicy.networkPolicy.egress.toCidrs[{index}]: {value:?} is not a CIDR (e.g. 10.0.0.0/8)"
    )]
    Cidr {
        /// Where in the list.
        index: usize,
        /// The entry.
        value: String,
    },
}

/// A checked `namespacePolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guardrails {
    /// The level enforced, warned and audited.
    pub level: PodSecurityLevel,
    policy: NamespacePolicy,
}

impl Guardrails {
    /// Checks `policy` (the CRD schema refuses the same; this guards every other way a spec arrives).
    pub fn from_policy(policy: &NamespacePolicy) -> Result<Guardrails, GuardrailError> {
        let level = match PodSecurityLevel::parse(&policy.pod_security) {
            Some(PodSecurityLevel::Privileged) => return Err(GuardrailError::Privileged),
            Some(level) => level,
            None => return Err(GuardrailError::UnknownLevel(policy.pod_security.clone())),
        };
        let network = &policy.network_policy;
        check_peers("allowIngressFrom", &network.allow_ingress_from)?;
        if let Some(egress) = &network.egress {
            check_peers("egress.toNamespaces", &egress.to_namespaces)?;
            if egress.to_cidrs.len() > MAX_PEERS {
                return Err(GuardrailError::TooMany("egress.toCidrs"));
            }
            for (index, cidr) in egress.to_cidrs.iter().enumerate() {
                if !is_cidr(cidr) {
                    return Err(GuardrailError::Cidr {
                        index,
                        value: cidr.clone(),
                    });
                }
            }
        }
        Ok(Guardrails {
            level,
            policy: policy.clone(),
        })
    }

    /// The Pod Security labels of every managed namespace: enforce, warn and audit at the level,
    /// each at version `latest`.
    pub fn labels(&self) -> BTreeMap<String, String> {
        ["enforce", "warn", "audit"]
            .into_iter()
            .flat_map(|mode| {
                [
                    (format!("{POD_SECURITY_PREFIX}{mode}"), self.level.as_str()),
                    (format!("{POD_SECURITY_PREFIX}{mode}-version"), "latest"),
                ]
            })
            .map(|(k, v)| (k, v.to_owned()))
            .collect()
    }

    /// The NetworkPolicies `namespace` must hold: [`DEFAULT_DENY_INGRESS`] always, and
    /// [`ALLOW_DECLARED`] when the policy declares an ingress or egress allow-list (`None`: it must
    /// not exist).
    pub fn network_policies(
        &self,
        namespace: &str,
        cluster_id: &str,
    ) -> (NetworkPolicy, Option<NetworkPolicy>) {
        let deny = NetworkPolicy {
            metadata: policy_meta(DEFAULT_DENY_INGRESS, namespace, cluster_id),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Ingress".to_owned()]),
                // Pods of this namespace only: every other source is denied.
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![pods_here()]),
                    ports: None,
                }]),
                egress: None,
            }),
        };
        (deny, self.allow_declared(namespace, cluster_id))
    }

    fn allow_declared(&self, namespace: &str, cluster_id: &str) -> Option<NetworkPolicy> {
        let network = &self.policy.network_policy;
        let ingress = &network.allow_ingress_from;
        if ingress.is_empty() && network.egress.is_none() {
            return None;
        }
        let mut types = Vec::new();
        let mut spec = NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            ..NetworkPolicySpec::default()
        };
        if !ingress.is_empty() {
            types.push("Ingress".to_owned());
            spec.ingress = Some(vec![NetworkPolicyIngressRule {
                from: Some(ingress.iter().map(peer).collect()),
                ports: None,
            }]);
        }
        if let Some(egress) = &network.egress {
            types.push("Egress".to_owned());
            spec.egress = Some(egress_rules(egress));
        }
        spec.policy_types = Some(types);
        Some(NetworkPolicy {
            metadata: policy_meta(ALLOW_DECLARED, namespace, cluster_id),
            spec: Some(spec),
        })
    }
}

fn egress_rules(egress: &crate::crd::EgressPolicy) -> Vec<NetworkPolicyEgressRule> {
    let mut to = vec![pods_here()];
    to.extend(egress.to_namespaces.iter().map(peer));
    to.extend(egress.to_cidrs.iter().map(|cidr| NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.clone(),
            except: None,
        }),
        ..NetworkPolicyPeer::default()
    }));
    let mut rules = vec![NetworkPolicyEgressRule {
        to: Some(to),
        ports: None,
    }];
    if egress.allow_dns {
        let port = |protocol: &str| NetworkPolicyPort {
            port: Some(IntOrString::Int(53)),
            protocol: Some(protocol.to_owned()),
            end_port: None,
        };
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector::default()),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![port("UDP"), port("TCP")]),
        });
    }
    rules
}

/// Every pod of the policy's own namespace.
fn pods_here() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    }
}

fn peer(declared: &NamespacePeer) -> NetworkPolicyPeer {
    let labels = match (&declared.namespace, &declared.namespace_selector) {
        (Some(name), _) => BTreeMap::from([(NAME_LABEL.to_owned(), name.clone())]),
        (None, Some(selector)) => selector.clone(),
        // Refused by `from_policy`.
        (None, None) => BTreeMap::new(),
    };
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn policy_meta(name: &str, namespace: &str, cluster_id: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(BTreeMap::from([
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
            (LABEL_CLUSTER.to_owned(), cluster_id.to_owned()),
        ])),
        ..ObjectMeta::default()
    }
}

fn check_peers(field: &'static str, peers: &[NamespacePeer]) -> Result<(), GuardrailError> {
    if peers.len() > MAX_PEERS {
        return Err(GuardrailError::TooMany(field));
    }
    for (index, p) in peers.iter().enumerate() {
        let problem = match (&p.namespace, &p.namespace_selector) {
            (Some(_), Some(_)) | (None, None) => {
                Some("set exactly one of namespace and namespaceSelector".to_owned())
            }
            (Some(name), None) if !is_dns_label(name) => {
                Some(format!("namespace {name:?} is not a namespace name"))
            }
            (None, Some(selector)) if selector.is_empty() => Some(
                "an empty namespaceSelector selects every namespace: list them, or leave NetworkPolicies to the owner"
                    .to_owned(),
            ),
            (None, Some(selector)) if selector.len() > MAX_SELECTOR_LABELS => Some(format!(
                "namespaceSelector has more than {MAX_SELECTOR_LABELS} labels"
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(GuardrailError::Peer {
                field: format!("{field}[{index}]"),
                problem,
            });
        }
    }
    Ok(())
}

fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

/// Whether `live` (a namespace's labels) already carries every label of `desired`.
pub fn labels_hold(desired: &BTreeMap<String, String>, live: &BTreeMap<String, String>) -> bool {
    desired.iter().all(|(k, v)| live.get(k) == Some(v))
}

/// How a namespace's live labels weaken `level`, when they do: the enforce label removed (only
/// when `kept_before`: the operator had set it, so someone took it away; a namespace new to the
/// policy is not "weakened"), not a level, or weaker. `None` when they enforce `level` or
/// stronger (a stronger level, or changed warn/audit/version labels, are drift: repaired, not
/// reported as weakened).
pub fn weakened(
    level: PodSecurityLevel,
    live: &BTreeMap<String, String>,
    kept_before: bool,
) -> Option<String> {
    match live.get(ENFORCE_LABEL) {
        None if !kept_before => None,
        None => Some(format!("{ENFORCE_LABEL} removed")),
        Some(value) => match PodSecurityLevel::parse(value) {
            Some(found) if found >= level => None,
            Some(found) => Some(format!("{ENFORCE_LABEL}={}", found.as_str())),
            None => Some(format!("{ENFORCE_LABEL}={value:?} is not a level")),
        },
    }
}

/// The Warning Event's and condition's message for the namespaces found weakened
/// (`(namespace, how)`), restored to `level`.
pub fn weakened_message(level: &str, weakened: &[(String, String)]) -> String {
    let list: Vec<String> = weakened
        .iter()
        .map(|(ns, how)| format!("{ns} ({how})"))
        .collect();
    format!(
        "Pod Security of managed namespace(s) weakened below spec.namespacePolicy.podSecurity={level}, restored: {}",
        list.join(", ")
    )
}

/// Whether a live NetworkPolicy already is `desired`: its labels and its whole spec.
pub fn network_policy_holds(desired: &NetworkPolicy, live: &NetworkPolicy) -> bool {
    let live_labels = live.metadata.labels.clone().unwrap_or_default();
    desired
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| live_labels.get(k) == Some(v))
        && desired.spec == live.spec
}

#[cfg(test)]
mod tests;
