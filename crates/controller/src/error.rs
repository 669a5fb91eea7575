//! The controller's error: a verifying pass's error ([`vworkspace_core::Error`]) plus what only the
//! in-cluster side can meet (fetching, the Kubernetes API, an unusable `Cluster`).
//!
//! [`Error::reason`] maps every variant to a bounded reason (see [`vworkspace_core::reasons`]) used
//! for conditions, Events and metric labels.

use vworkspace_core::reasons;

/// A stage error carried by a variant of [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every error a reconcile, a fetch or a child controller can end with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The verifying pass refused the commit (signature, history, release, intent, values).
    #[error(transparent)]
    Pass(#[from] vworkspace_core::Error),
    /// The source could not be fetched.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// A Kubernetes API request failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done, naming the object (`get Secret vworkspace-system/git-auth`).
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A Secret, ConfigMap or key that a `Cluster` names cannot be used (a missing key, a value that
    /// is not UTF-8 or not one line, credentials that do not go together). Names the object and key,
    /// never a value.
    #[error("{object}: {problem}")]
    TrustInput {
        /// The object and key (`Secret vworkspace-system/git-auth key password`).
        object: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A field of a `Cluster`'s spec cannot be used.
    #[error("{field}: {problem}")]
    InvalidSpec {
        /// The field (`spec.release.threshold`).
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A child could not be built from a declared object.
    #[error("{object}: {source}")]
    Child {
        /// The object (`ApplicationInstance org-myteam/nextcloud`).
        object: String,
        /// Why (a `children::flux::ChildrenError`; boxed so that this module, below every other,
        /// imports none of them).
        #[source]
        source: BoxError,
    },
    /// An Operation's engine input (a RunCommand template ConfigMap) cannot be used.
    #[error(transparent)]
    Operation(BoxError),
    /// The admission webhook cannot serve (its certificate, its key, its TLS configuration).
    #[error(transparent)]
    Webhook(BoxError),
    /// Local I/O the controller needs (a CA bundle file, a listening address).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file or address.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task (fetch and verify) panicked or was cancelled.
    #[error("the verification task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The leader Lease is no longer certainly held: the reconcile was dropped mid-way, nothing more
    /// written.
    #[error("not the certain leader any more: the reconcile was abandoned")]
    NotLeader,
    /// A step of a reconcile ran before the step whose output it needs: a defect of the step list,
    /// reported instead of a panic (each list's unit test keeps it from happening).
    #[error("internal: the step {0} did not run before the steps that need it")]
    StepOrder(String),
    /// The `Cluster`'s status cannot be read as the operator wrote it (an inventory that does not
    /// decode under its bounds): this Cluster's pass is refused until the field is removed.
    #[error(
        "status.compactInventory of Cluster {cluster} cannot be read ({problem}): nothing is applied or pruned until it is removed; only the operator may write Cluster status (to recover: kubectl patch vwc {cluster} --subresource=status --type=json -p '[{{\"op\":\"remove\",\"path\":\"/status/compactInventory\"}}]'; the next pass rebuilds it from the declared objects it applies)"
    )]
    StatusUnreadable {
        /// The Cluster.
        cluster: String,
        /// Why its inventory does not decode (never the raw value).
        problem: vworkspace_core::crd::inventory::InventoryError,
    },
    /// A verified release below the floor this source's live objects record.
    #[error(transparent)]
    Floor(#[from] vworkspace_core::plan::floor::FloorError),
    /// `spec.namespacePolicy` cannot be used (names the field).
    #[error(transparent)]
    Guardrails(#[from] vworkspace_core::guardrails::GuardrailError),
    /// A reconcile pass ended without applying (its status and Event say why).
    #[error("pass failed: {reason}")]
    PassFailed {
        /// The bounded reason, as in the `Ready` condition.
        reason: &'static str,
    },
}

impl Error {
    /// The bounded reason of this error: never an object name or error text.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Pass(e) => e.reason(),
            Error::Source(_) => reasons::FETCH_FAILED,
            Error::Kube { .. } => reasons::API_REQUEST_FAILED,
            Error::TrustInput { .. }
            | Error::InvalidSpec { .. }
            | Error::Child { .. }
            | Error::Operation(_)
            | Error::Webhook(_)
            | Error::Io { .. }
            | Error::Task(_)
            | Error::StepOrder(_)
            | Error::Guardrails(_) => reasons::CONFIGURATION_INVALID,
            Error::NotLeader => reasons::NOT_LEADER,
            Error::StatusUnreadable { .. } => reasons::STATUS_UNREADABLE,
            Error::Floor(e) => e.reason(),
            Error::PassFailed { reason } => reason,
        }
    }

    /// The message, one refusal a line.
    pub fn findings(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_owned).collect()
    }
}

/// The controller's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

// A stage error met outside a pass (a trust input read by the reconciler, a fetched commit) is the
// same refusal as inside one: it goes through the core error, which knows its reason.
macro_rules! through_core {
    ($($stage:ty),* $(,)?) => {
        $(impl From<$stage> for Error {
            fn from(e: $stage) -> Self {
                Error::Pass(e.into())
            }
        })*
    };
}
through_core!(
    vworkspace_core::secrets::SecretsError,
    vworkspace_core::trust::signers::SignersError,
    vworkspace_core::trust::commit_signature::CommitSignatureError,
    vworkspace_core::trust::history::HistoryError,
    vworkspace_core::trust::release::ReleaseError,
    vworkspace_core::intent::IntentErrors,
    vworkspace_core::yaml::YamlError,
);
