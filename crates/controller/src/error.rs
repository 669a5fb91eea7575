//! The controller's error: a verifying pass's error ([`vworkspace_core::Error`]) plus what only the
//! in-cluster side can meet (fetching, the Kubernetes API, an unusable `Cluster`).
//!
//! [`Error::reason`] maps every variant to a bounded reason (see [`vworkspace_core::reasons`]) used
//! for conditions, Events and metric labels.

use vworkspace_core::reasons;

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
    /// The `Cluster` resource, or something it references, cannot be used as it is.
    #[error("{0}")]
    Config(String),
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
            Error::Config(_) => reasons::CONFIGURATION_INVALID,
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
