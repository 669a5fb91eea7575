//! `Cluster` (ops.vworkspace.io/v1alpha1, cluster-scoped): one Git source of intent for this cluster
//! and every trust input that judges it. Nothing here can come from the repository.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired source and trust configuration.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ops.vworkspace.io",
    version = "v1alpha1",
    kind = "Cluster",
    status = "ClusterStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Commit","type":"string","jsonPath":".status.lastAppliedCommit"}"#,
    printcolumn = r#"{"name":"Serial","type":"integer","jsonPath":".status.lastAppliedSerial"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// This cluster's id: the directory `clusters/<clusterId>/` and the `cluster` of its releases.
    pub cluster_id: String,
    /// Where the intent repository is.
    pub source: GitSource,
    /// Trusted commit signers.
    pub commit_signers: CommitSigners,
    /// Trusted release keys and threshold.
    pub release: ReleaseTrust,
    /// The cluster's age identities.
    pub decryption: Decryption,
    /// Stricter policies.
    #[serde(default)]
    pub policy: ClusterPolicy,
    /// Stop reconciling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// The Git source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSource {
    /// `https://`, `http://`, `git://` or `file://` URL.
    pub url: String,
    /// What to follow.
    #[serde(rename = "ref")]
    pub git_ref: GitSourceRef,
    /// How often to poll, e.g. `5m`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// A Secret in `vworkspace-system` with `username`/`password` or `bearerToken`, and optionally `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalSecretRef>,
}

fn default_interval() -> String {
    "5m".to_owned()
}

/// Exactly one of branch, tag or commit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum GitSourceRef {
    /// Follow a branch.
    Branch(String),
    /// Pin a tag.
    Tag(String),
    /// Pin a full commit id.
    Commit(String),
}

/// A ConfigMap key holding `allowed_signers` text.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapKeyRef {
    /// The namespace (default `vworkspace-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The ConfigMap.
    pub name: String,
    /// The key (default `allowed_signers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Trusted commit signers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommitSigners {
    /// The ConfigMap with the `allowed_signers` file (namespace `git`).
    pub config_map_ref: ConfigMapKeyRef,
}

/// Trusted release keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseTrust {
    /// The ConfigMap with the release keys (`namespaces="vworkspace-release"`).
    pub signers_config_map_ref: ConfigMapKeyRef,
    /// How many distinct keys must sign a release (k of n).
    #[schemars(range(min = 1))]
    pub threshold: u32,
}

/// A Secret in `vworkspace-system`, read by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalSecretRef {
    /// The Secret's name.
    pub name: String,
}

/// The age identities.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Decryption {
    /// The Secret in `vworkspace-system` holding identity files.
    pub identity_secret_ref: IdentitySecretRef,
}

/// Which Secret keys hold identities.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentitySecretRef {
    /// The Secret's name.
    pub name: String,
    /// The keys holding identity files (default: `identity.agekey`); several during a rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// How much history must be trusted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HistoryPolicy {
    /// Only the applied commit must be signed (it must still descend from the last applied one).
    #[default]
    Head,
    /// Every commit between the last applied one and the new one must be signed.
    All,
}

/// Stricter policies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterPolicy {
    /// `head` (default) or `all`.
    #[serde(default)]
    pub history: HistoryPolicy,
    /// Accept a new commit that does not descend from the last applied one.
    #[serde(default)]
    pub allow_history_rewrite: bool,
    /// Refuse encrypted values that are not bound to where they are used.
    #[serde(default)]
    pub require_bound_values: bool,
}

/// One object the source applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    /// apiVersion.
    pub api_version: String,
    /// kind.
    pub kind: String,
    /// namespace.
    pub namespace: String,
    /// name.
    pub name: String,
}

/// A managed namespace and what it may run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedNamespace {
    /// The namespace.
    pub name: String,
    /// Operation templates allowed there.
    #[serde(default)]
    pub allowed_operation_templates: Vec<String>,
}

/// What the operator observed and applied.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Ready, SourceVerified, Applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last commit applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_commit: Option<String>,
    /// Its release serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_serial: Option<u64>,
    /// SHA-256 of its `release.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_release_digest: Option<String>,
    /// Who signed the applied commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_signer: Option<String>,
    /// The last commit a pass looked at (applied or refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_commit: Option<String>,
    /// What this source applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// Managed namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_namespaces: Vec<ManagedNamespace>,
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
