//! The crate's error: one enum over the stage errors, each stage keeping its own precise enum.
//!
//! [`Error::reason`] maps every variant to a bounded reason (see [`crate::reasons`]) used
//! for conditions, Events and metric labels; [`Error::findings`] splits the message into one line
//! per refusal for `verify`.

use crate::intent::IntentErrors;
use crate::reasons as reason;
use crate::repository::GitError;
use crate::secrets::{SecretsError, ValueError};
use crate::trust::commit_signature::CommitSignatureError;
use crate::trust::release::ReleaseError;
use crate::trust::signers::SignersError;
use crate::yaml::YamlError;

/// Every refused value of a pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ValueErrors(pub Vec<ValueError>);

/// Every error a verifying pass can end with (the controller adds fetching and API errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ref or the commit could not be read.
    #[error(transparent)]
    Fetch(GitError),
    /// The cluster directory could not be read within the limits.
    #[error(transparent)]
    Tree(GitError),
    /// The commit's signature was refused.
    #[error(transparent)]
    CommitSignature(#[from] CommitSignatureError),
    /// The commit's place in history was refused (not a descendant, unsigned commits in between).
    #[error(transparent)]
    History(#[from] crate::trust::history::HistoryError),
    /// The release was refused.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// Intent files were refused.
    #[error(transparent)]
    Intent(#[from] IntentErrors),
    /// Encrypted values were refused.
    #[error(transparent)]
    Values(#[from] ValueErrors),
    /// A trusted-signers file was refused.
    #[error(transparent)]
    Signers(#[from] SignersError),
    /// An identity or value could not be used.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// A YAML file was refused.
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// A declared object did not read back from its compact form (a defect; nothing is applied).
    #[error(transparent)]
    Compact(#[from] crate::compact::CompactError),
}

impl Error {
    /// The bounded reason of this error: never an object name or error text.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Fetch(_) => reason::FETCH_FAILED,
            Error::Tree(_) => reason::TREE_INVALID,
            Error::CommitSignature(_) => reason::COMMIT_SIGNATURE_INVALID,
            Error::History(_) => reason::HISTORY_INVALID,
            Error::Release(_) => reason::RELEASE_INVALID,
            Error::Intent(_) | Error::Yaml(_) | Error::Compact(_) => reason::INTENT_INVALID,
            Error::Values(_) | Error::Secrets(_) => reason::VALUES_INVALID,
            Error::Signers(_) => reason::CONFIGURATION_INVALID,
        }
    }

    /// The message, one refusal a line.
    pub fn findings(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_owned).collect()
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
