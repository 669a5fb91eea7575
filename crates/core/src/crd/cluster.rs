//! `Cluster` (ops.vworkspace.io/v1alpha1, cluster-scoped): one Git source of intent for this cluster
//! and every trust input that judges it. Nothing here can come from the repository.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired source and trust configuration.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(
        kube_core = "::kube_core",
        k8s_openapi = "::k8s_openapi",
        schemars = "::schemars",
        serde = "::serde",
        serde_json = "::serde_json"
    ),
    group = "ops.vworkspace.io",
    version = "v1alpha1",
    kind = "Cluster",
    doc = "One Git source of this cluster's intent and every trust input that judges it.",
    status = "ClusterStatus",
    // `kubectl get clusters` is ambiguous beside Cluster API and CloudNativePG: `kubectl get vwc`,
    // or `kubectl get vworkspace` for every kind of ours.
    shortname = "vwc",
    shortname = "vwcluster",
    category = "vworkspace",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Commit","type":"string","jsonPath":".status.lastAppliedCommit"}"#,
    printcolumn = r#"{"name":"Serial","type":"integer","jsonPath":".status.lastAppliedSerial"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// This cluster's id: the directory `clusters/<clusterId>/` and the `cluster` of its releases.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
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
    /// Chart signing keys: every `oci://` chart's signature is verified by source-controller
    /// (cosign) against them before anything is installed. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_verification: Option<ChartVerification>,
    /// Stop reconciling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// What deleting this `Cluster` does to the objects it applied: `Orphan` (default) leaves them,
    /// `Delete` prunes its inventory first.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Report each pass to the forge as a commit status on the commit it applied or refused
    /// (context `vworkspace/<clusterId>`). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_status: Option<CommitStatusSpec>,
    /// Pod Security labels and NetworkPolicies the operator keeps on every managed namespace
    /// (docs/security.md, "Namespace guardrails"). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_policy: Option<super::NamespacePolicy>,
}

/// Where and how commit statuses are sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommitStatusSpec {
    /// The forge's API.
    pub provider: ForgeProvider,
    /// The API base URL (`https://api.github.com`, `https://gitlab.example.org/api/v4`,
    /// `https://gitea.example.org/api/v1`). Default: derived from the source URL's host (GitHub:
    /// `https://api.github.com`; GitLab `https://<host>/api/v4`; Gitea `https://<host>/api/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The repository on the forge (`owner/name`, GitLab's `group/subgroup/project`). Default: the
    /// source URL's path without `.git`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// A Secret in `vworkspace-system` whose key `token` is an API token allowed to set commit
    /// statuses (GitHub `repo:status`, GitLab `api`, Gitea `write:repository`).
    pub secret_ref: LocalSecretRef,
}

/// The commit status API spoken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ForgeProvider {
    /// `POST /repos/{owner}/{repo}/statuses/{sha}`, `Authorization: Bearer`.
    GitHub,
    /// `POST /projects/{id}/statuses/{sha}`, `PRIVATE-TOKEN`.
    GitLab,
    /// Gitea or Forgejo: `POST /repos/{owner}/{repo}/statuses/{sha}`, `Authorization: token`.
    Gitea,
}

/// What deleting a `Cluster` does to the objects it applied.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Leave them running, unowned (a re-created `Cluster` with the same id takes them back: they
    /// carry its label).
    #[default]
    Orphan,
    /// Delete every object of the inventory that still carries this source's labels, in namespaces
    /// that are still managed, before the `Cluster` goes.
    Delete,
}

/// The Git source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSource {
    /// `https://`, `http://`, `ssh://`, `git://` or `file://` URL.
    pub url: String,
    /// What to follow.
    #[serde(rename = "ref")]
    pub git_ref: GitSourceRef,
    /// How often to poll: a duration such as `30s`, `5m`, `1h30m` (units `s`, `m`, `h`).
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub interval: String,
    /// A Secret in `vworkspace-system` with Flux's keys: `username`/`password` or `bearerToken` (and
    /// optionally `ca.crt`) for https; `identity` (an OpenSSH ed25519 deploy key), `known_hosts` (the
    /// pinned host keys) and, for an encrypted key, `password` for ssh.
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
    /// The namespace: only the operator's own (`vworkspace-system`), which is also the default; any
    /// other is refused, since a managed namespace is writable by its tenants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The ConfigMap.
    pub name: String,
    /// The key (default `allowed_signers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The cosign public keys that sign this cluster's charts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartVerification {
    /// A ConfigMap in the operator's namespace whose key (default `cosign.pub`) holds one or more
    /// PEM `PUBLIC KEY` blocks (what `cosign generate-key-pair` writes to `cosign.pub`).
    pub cosign_keys_config_map_ref: ConfigMapKeyRef,
}

/// The ConfigMap key read for [`ChartVerification`] when the reference names none.
pub const DEFAULT_COSIGN_KEYS_KEY: &str = "cosign.pub";

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
    /// The lowest release serial this cluster accepts: a rollback floor the owner pins in the spec,
    /// which survives a re-created `Cluster` or a restored etcd backup (the status's last applied
    /// serial does not). A release with a lower serial is refused (`ReleaseInvalid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_serial: Option<u64>,
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

/// The Secret key that holds the age identity file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentitySecretRef {
    /// The Secret's name (in `vworkspace-system`).
    pub name: String,
    /// The key holding an age identity file (default `identity.agekey`). The file may hold several
    /// `AGE-SECRET-KEY-1...` lines: during a rotation, the old and the new identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The Secret key read when [`IdentitySecretRef::key`] is absent.
pub const DEFAULT_IDENTITY_KEY: &str = "identity.agekey";

impl IdentitySecretRef {
    /// The key to read: [`IdentitySecretRef::key`] or [`DEFAULT_IDENTITY_KEY`].
    pub fn key_or_default(&self) -> &str {
        self.key.as_deref().unwrap_or(DEFAULT_IDENTITY_KEY)
    }
}

/// Why a `spec.source.interval` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntervalError {
    /// Not of the form `<n><unit>...` with units `s`, `m`, `h`.
    #[error("spec.source.interval {0:?}: expected a duration such as 30s, 5m or 1h30m")]
    Malformed(String),
    /// Zero, or over a day.
    #[error("spec.source.interval {0:?}: must be between 1s and 24h")]
    OutOfRange(String),
}

/// Parses a poll interval (`30s`, `5m`, `1h30m`): the schema's pattern, plus a range of 1s..=24h.
pub fn parse_interval(text: &str) -> Result<std::time::Duration, IntervalError> {
    let malformed = || IntervalError::Malformed(text.to_owned());
    if text.is_empty() || text.len() > 32 {
        return Err(malformed());
    }
    let mut seconds: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' => digits.push(c),
            's' | 'm' | 'h' => {
                let n: u64 = digits.parse().map_err(|_| malformed())?;
                digits.clear();
                let unit = match c {
                    's' => 1,
                    'm' => 60,
                    _ => 3600,
                };
                seconds = n
                    .checked_mul(unit)
                    .and_then(|s| seconds.checked_add(s))
                    .ok_or_else(|| IntervalError::OutOfRange(text.to_owned()))?;
            }
            _ => return Err(malformed()),
        }
    }
    if !digits.is_empty() {
        return Err(malformed());
    }
    if seconds == 0 || seconds > 24 * 3600 {
        return Err(IntervalError::OutOfRange(text.to_owned()));
    }
    Ok(std::time::Duration::from_secs(seconds))
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
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterPolicy {
    /// `head` (default) or `all`.
    #[serde(default)]
    pub history: HistoryPolicy,
    /// Accept a new commit that does not descend from the last applied one.
    #[serde(default)]
    pub allow_history_rewrite: bool,
    /// Refuse encrypted values that are not bound to where they are used (default `true`: an unbound
    /// value can be copied to any instance the cluster key decrypts for). Set `false` only while
    /// migrating plain `age -a` values to bound ones (docs/encrypted-values.md).
    #[serde(default = "default_require_bound_values")]
    pub require_bound_values: bool,
    /// The longest a release may be valid, in days from the verifier's clock to its `expires`
    /// (default 90): a release that expires far in the future lets a Git host freeze the cluster on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3650))]
    pub max_release_validity_days: Option<u32>,
    /// Refuse a release any of whose ApplicationInstances does not pin its chart by an OCI manifest
    /// digest (`spec.chart.digest`; an `https://` Helm repository cannot be pinned and is refused):
    /// the release's k-of-n signers then approve every chart byte for byte. Default `false`. The
    /// owner's alone: nothing in the repository can set or relax it.
    #[serde(default)]
    pub require_chart_digests: bool,
}

fn default_require_bound_values() -> bool {
    true
}

impl Default for ClusterPolicy {
    fn default() -> Self {
        ClusterPolicy {
            history: HistoryPolicy::default(),
            allow_history_rewrite: false,
            require_bound_values: default_require_bound_values(),
            max_release_validity_days: None,
            require_chart_digests: false,
        }
    }
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
// Read leniently (a hand-written `Deserialize` over `ClusterStatusWire`): an inventory that cannot be
// decoded under `super::inventory`'s bounds leaves `inventory` empty and says why in
// `inventory_unreadable`, so that one Cluster's bad status fails that Cluster's pass and never the
// list or watch of every Cluster. (Not a doc comment: it would land in the CRD's description.)
#[derive(Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
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
    /// What this source applied, held in the compact form of `vworkspace_core::crd::inventory`
    /// (`status.compactInventory`; the former list under `status.inventory` is still read).
    #[serde(
        default,
        rename = "compactInventory",
        alias = "inventory",
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "super::inventory::serialize"
    )]
    #[schemars(with = "Option<super::inventory::CompactInventory>")]
    pub inventory: Vec<InventoryEntry>,
    /// Managed namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_namespaces: Vec<ManagedNamespace>,
    /// The digest of the per-namespace RBAC (the runner ServiceAccount and the RoleBindings) that
    /// every namespace in `managedNamespaces` was given. A restarted operator that would give the
    /// same takes it as given (it checks again within the hour, or at once when a child write is
    /// refused there) instead of reading it back namespace by namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_rbac: Option<String>,
    /// The digest of the last verified release's encrypted values, recorded when every one of them
    /// decrypted and was bound where it is found (with the identities' recipients, the binding
    /// policy and the limits in the digest). A new process whose release gives the same digest
    /// reaches that verdict without decrypting every value again; the instance controller still
    /// decrypts each value before it writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_verified: Option<String>,
    /// The settled record of the last pass that found or made every declared object as declared
    /// ([`crate::plan::settled`]): a digest over what it judged with and every labelled object's
    /// uid, generation, labels and annotations after it. A new process that lists the same from
    /// the objects' metadata alone knows that nothing changed, without parsing the release again or
    /// reading the objects whole. Any other pass clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<String>,
    /// The age recipients (public keys, `age1...`) of the identities this Cluster decrypts with:
    /// what `vworkspace-operator encrypt --recipient` takes (`recipient --cluster NAME` prints them).
    /// Never a private key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The value of the `reconcile.fluxcd.io/requestedAt` annotation the last finished pass saw
    /// (Flux's convention): `reconcile --wait` waits for it to equal the value it set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Why the inventory in the status as read could not be decoded (never written; the pass refuses
    /// the Cluster with `StatusUnreadable` while it is set).
    #[serde(skip)]
    #[schemars(skip)]
    pub inventory_unreadable: Option<super::inventory::InventoryError>,
}

/// [`ClusterStatus`] as the API server sends it, the inventory still undecoded.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterStatusWire {
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default)]
    last_applied_commit: Option<String>,
    #[serde(default)]
    last_applied_serial: Option<u64>,
    #[serde(default)]
    last_applied_release_digest: Option<String>,
    #[serde(default)]
    last_applied_signer: Option<String>,
    #[serde(default)]
    last_attempted_commit: Option<String>,
    #[serde(default, rename = "compactInventory", alias = "inventory")]
    inventory: Option<serde_json::Value>,
    #[serde(default)]
    managed_namespaces: Vec<ManagedNamespace>,
    #[serde(default)]
    namespace_rbac: Option<String>,
    #[serde(default)]
    values_verified: Option<String>,
    #[serde(default)]
    settled: Option<String>,
    #[serde(default)]
    recipients: Vec<String>,
    #[serde(default)]
    observed_generation: Option<i64>,
    #[serde(default)]
    last_handled_reconcile_at: Option<String>,
}

impl<'de> Deserialize<'de> for ClusterStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = ClusterStatusWire::deserialize(d)?;
        let (inventory, inventory_unreadable) = match wire.inventory {
            None | Some(serde_json::Value::Null) => (Vec::new(), None),
            Some(raw) => match super::inventory::decode_any(raw) {
                Ok(entries) => (entries, None),
                Err(e) => (Vec::new(), Some(e)),
            },
        };
        Ok(ClusterStatus {
            conditions: wire.conditions,
            last_applied_commit: wire.last_applied_commit,
            last_applied_serial: wire.last_applied_serial,
            last_applied_release_digest: wire.last_applied_release_digest,
            last_applied_signer: wire.last_applied_signer,
            last_attempted_commit: wire.last_attempted_commit,
            inventory,
            managed_namespaces: wire.managed_namespaces,
            namespace_rbac: wire.namespace_rbac,
            values_verified: wire.values_verified,
            settled: wire.settled,
            recipients: wire.recipients,
            observed_generation: wire.observed_generation,
            last_handled_reconcile_at: wire.last_handled_reconcile_at,
            inventory_unreadable,
        })
    }
}

/// The annotation that asks for a pass now (Flux's name; `reconcile` and the push receivers set it
/// to the current time). A pass records the value it saw in `status.lastHandledReconcileAt`.
pub const RECONCILE_REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// Longest `reconcile.fluxcd.io/requestedAt` value copied into the status (Flux writes RFC 3339
/// times); a longer one is not recorded.
pub const MAX_RECONCILE_REQUEST_LEN: usize = 64;

impl Cluster {
    /// The `reconcile.fluxcd.io/requestedAt` value to record as handled, if any (bounded).
    pub fn reconcile_requested_at(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(RECONCILE_REQUESTED_AT)
            .map(String::as_str)
            .filter(|v| !v.is_empty() && v.len() <= MAX_RECONCILE_REQUEST_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(
            parse_interval("5m"),
            Ok(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            parse_interval("1h30m"),
            Ok(std::time::Duration::from_secs(5400))
        );
        assert_eq!(
            parse_interval("30s"),
            Ok(std::time::Duration::from_secs(30))
        );
        for bad in ["", "5", "m", "5 m", "5min", "-5m", "1.5h"] {
            assert_eq!(
                parse_interval(bad),
                Err(IntervalError::Malformed(bad.into())),
                "{bad:?}"
            );
        }
        for out in ["0s", "25h", "99999999999999999999h"] {
            assert!(
                matches!(
                    parse_interval(out),
                    Err(IntervalError::OutOfRange(_) | IntervalError::Malformed(_))
                ),
                "{out:?}"
            );
        }
        assert_eq!(
            parse_interval("0s"),
            Err(IntervalError::OutOfRange("0s".into()))
        );
        assert_eq!(
            parse_interval("25h"),
            Err(IntervalError::OutOfRange("25h".into()))
        );
    }

    #[test]
    fn spec_round_trip_and_defaults() {
        let spec: ClusterSpec = serde_json::from_value(serde_json::json!({
            "clusterId": "demo",
            "source": {"url": "https://git.example.org/intent.git", "ref": {"branch": "main"}},
            "commitSigners": {"configMapRef": {"name": "commit-signers"}},
            "release": {"signersConfigMapRef": {"name": "release-signers"}, "threshold": 2},
            "decryption": {"identitySecretRef": {"name": "age-identity"}}
        }))
        .expect("valid spec");
        assert_eq!(spec.source.interval, "5m");
        assert_eq!(spec.deletion_policy, DeletionPolicy::Orphan);
        assert_eq!(spec.source.git_ref, GitSourceRef::Branch("main".into()));
        assert_eq!(spec.policy.history, HistoryPolicy::Head);
        assert!(
            spec.policy.require_bound_values,
            "a new Cluster refuses unbound values"
        );
        let partial: ClusterPolicy =
            serde_json::from_value(serde_json::json!({"history": "all"})).expect("policy");
        assert!(partial.require_bound_values);
        let opted_out: ClusterPolicy =
            serde_json::from_value(serde_json::json!({"requireBoundValues": false}))
                .expect("policy");
        assert!(!opted_out.require_bound_values);
        assert_eq!(
            spec.decryption.identity_secret_ref.key_or_default(),
            DEFAULT_IDENTITY_KEY
        );
        // Two refs at once, or an unknown field, are refused.
        let two_refs =
            serde_json::json!({"url": "https://x", "ref": {"branch": "main", "tag": "v1"}});
        assert!(serde_json::from_value::<GitSource>(two_refs).is_err());
        let typo =
            serde_json::json!({"url": "https://x", "ref": {"branch": "main"}, "intervall": "1m"});
        assert!(serde_json::from_value::<GitSource>(typo).is_err());
    }
}
