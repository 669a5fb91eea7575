//! Every label, annotation and finalizer the operator writes or reads, in one place.

/// The label naming the instance a child belongs to.
pub const LABEL_INSTANCE: &str = "apps.vworkspace.io/instance";

/// Label: the namespace of the Operation a child runs for.
pub const LABEL_OPERATION_NAMESPACE: &str = "ops.vworkspace.io/operation-namespace";

/// Label: the name of the Operation a child runs for.
pub const LABEL_OPERATION: &str = "ops.vworkspace.io/operation";

/// The finalizer on every `Cluster` the operator reconciles.
pub const FINALIZER: &str = "gitops.vworkspace.io/cleanup";

/// The namespace annotation that lists the operation templates a namespace may run (comma-separated),
/// recorded in `Cluster.status.managedNamespaces[].allowedOperationTemplates`.
pub const ALLOWED_TEMPLATES_ANNOTATION: &str = "app.vworkspace.io/allowed-operation-templates";

/// Label on every object the operator applies, and on the namespaces it may write in.
pub const LABEL_MANAGED_BY: &str = "app.vworkspace.io/managed-by";

/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "vworkspace";

/// Label naming the cluster source an object came from.
pub const LABEL_CLUSTER: &str = "gitops.vworkspace.io/cluster";

/// Annotation: the commit an object was applied from.
pub const ANNOTATION_COMMIT: &str = "gitops.vworkspace.io/commit";

/// Annotation: the release serial an object was applied from.
pub const ANNOTATION_SERIAL: &str = "gitops.vworkspace.io/release-serial";

/// Annotation an owner puts on an existing object (value: the cluster id) to let that cluster
/// source take it over; without it, a same-named object that is not the source's is refused
/// (`OwnershipConflict`).
pub const ANNOTATION_ADOPT: &str = "gitops.vworkspace.io/adopt";

/// Annotation: the file an object was read from, relative to the repository root.
pub const ANNOTATION_SOURCE_PATH: &str = "gitops.vworkspace.io/source-path";

/// The field manager of every write the operator makes (server-side apply, status, children).
pub const FIELD_MANAGER: &str = "vworkspace-gitops";
