//! Every reason string of the operator, in one place: the `reason` of conditions, Events (an Event's
//! reason equals its condition's) and the `reason` label of metrics. Bounded: a reason never carries
//! an object name or error text.

/// The ref could not be resolved or the commit could not be read.
pub const FETCH_FAILED: &str = "FetchFailed";
/// The commit's signature was refused.
pub const COMMIT_SIGNATURE_INVALID: &str = "CommitSignatureInvalid";
/// The commit does not descend from the last applied one, or unsigned commits lie in between.
pub const HISTORY_INVALID: &str = "HistoryInvalid";
/// The cluster directory could not be read within the limits.
pub const TREE_INVALID: &str = "TreeInvalid";
/// The release manifest or its signatures were refused.
pub const RELEASE_INVALID: &str = "ReleaseInvalid";
/// An intent file was refused.
pub const INTENT_INVALID: &str = "IntentInvalid";
/// An encrypted value did not decrypt, or was bound elsewhere.
pub const VALUES_INVALID: &str = "ValuesInvalid";
/// The cluster-side trust configuration is unusable (a signers file that does not parse).
pub const CONFIGURATION_INVALID: &str = "ConfigurationInvalid";
/// A Kubernetes API request failed (reading the trust inputs, listing, writing status).
pub const API_REQUEST_FAILED: &str = "ApiRequestFailed";
/// A declared object exists and is not this cluster source's (made by hand or by another source):
/// refused, never taken over, never pruned (adopt it with the `gitops.vworkspace.io/adopt` annotation).
pub const OWNERSHIP_CONFLICT: &str = "OwnershipConflict";
/// Declared objects are in namespaces without the managed label: not applied, reported per object.
pub const NAMESPACE_NOT_MANAGED: &str = "NamespaceNotManaged";
/// This replica no longer certainly holds the leader Lease: the pass was abandoned, nothing more
/// written (the new leader carries on).
pub const NOT_LEADER: &str = "NotLeader";
/// The operator was stopping (SIGTERM): the running pass was cut; what it wrote is recorded, the next
/// process takes it up.
pub const INTERRUPTED: &str = "Interrupted";
/// Every step passed.
pub const SUCCEEDED: &str = "Succeeded";

/// An admission denial: a credential-named key in `spec.values` holds a literal.
pub const INLINE_CREDENTIAL: &str = "InlineCredentialInValues";
/// An Operation's template is not allowed in its namespace (admission and the Operation's status).
pub const TEMPLATE_NOT_ALLOWED: &str = "OperationTemplateNotAllowedInNamespace";

/// A child controller refused a live object that the last verified release does not declare.
pub const NOT_DECLARED: &str = "NotDeclaredInRelease";
/// A child controller refused a live object whose spec differs from the one the release declared.
pub const SPEC_DIFFERS: &str = "SpecDiffersFromRelease";
/// A child controller waits: its Cluster has not verified and applied a release since the start.
pub const WAITING_FOR_RELEASE: &str = "WaitingForVerifiedRelease";

/// Reason of an Operation that lacks what its type needs (a PVC, a backup name, a template).
pub const INVALID_OPERATION: &str = "InvalidOperation";

/// A child's spec held fields another writer added and the verified release does not declare; they
/// were removed (Event on the child, the instance's `ChildDrift` condition, a metric by kind).
pub const UNDECLARED_FIELDS_REMOVED: &str = "UndeclaredFieldsRemoved";

/// Reason while the namespace is labelled but not yet recorded by a `Cluster` pass.
pub const WAITING_FOR_NAMESPACE: &str = "WaitingForManagedNamespace";

/// Reason of an instance whose declared values do not decrypt.
pub const VALUES_NOT_DECRYPTED: &str = "ValuesNotDecrypted";

/// Reason of an instance whose pinned chart (`spec.chart.digest`) source-controller could not pull:
/// the registry has no manifest with that digest (the tag was re-pushed, or the digest is wrong), or
/// served other bytes. Nothing is installed from it.
pub const CHART_DIGEST_MISMATCH: &str = "ChartDigestMismatch";

/// Reason of an instance whose chart's cosign signature source-controller refused
/// (`VerificationError`: no signature by a key the `Cluster` names in `spec.chartVerification`).
/// Nothing is installed from it.
pub const CHART_VERIFICATION_FAILED: &str = "ChartVerificationFailed";

/// Reason while the HelmRelease has not reported yet.
pub const WAITING_FOR_HELM_RELEASE: &str = "WaitingForHelmRelease";

/// `Applied` reason: every object applied, every stale one pruned.
pub const APPLY_SUCCEEDED: &str = "ApplySucceeded";

/// `Applied` reason: the API server refused a write.
pub const APPLY_FAILED: &str = "ApplyFailed";

/// `Applied` reason: nothing applied because the source was not verified.
pub const SOURCE_NOT_VERIFIED: &str = "SourceNotVerified";

/// `Ready` reason while a pass has not finished yet.
pub const PROGRESSING: &str = "Progressing";

/// The Event reason of [`expiry_event`].
pub const RELEASE_EXPIRING_SOON: &str = "ReleaseExpiringSoon";

/// `Ready` reason: the Cluster's status cannot be read as the operator wrote it (an inventory that
/// is not decodable under its bounds); this Cluster's pass is refused until the field is removed.
pub const STATUS_UNREADABLE: &str = "StatusUnreadable";

/// `NamespaceGuardrails` condition and Warning Event: a managed namespace's Pod Security labels
/// enforced less than `spec.namespacePolicy.podSecurity` (the enforce label removed, or a weaker
/// level such as `privileged`); the pass restored them.
pub const POD_SECURITY_WEAKENED: &str = "PodSecurityWeakened";

/// `NamespaceGuardrails` condition: every managed namespace carries the Pod Security labels and
/// NetworkPolicies of `spec.namespacePolicy` (none was found weakened by this pass).
pub const GUARDRAILS_KEPT: &str = "GuardrailsKept";
