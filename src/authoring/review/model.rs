//! What a review found, before it is rendered (text, JSON, Markdown, annotations): one value that
//! every output reads, in one deterministic order.

use vworkspace_core::review::intent_diff::IntentDiff;
use vworkspace_core::review::release_state::ReleaseState;

/// One side of the review: the ref as given and the commit it resolved to.
#[derive(Debug, Clone)]
pub struct Side {
    /// The ref as given (`origin/main`, `HEAD`).
    pub reference: String,
    /// The commit id.
    pub commit: String,
}

/// The head commit's own signature, judged with the base's commit signers.
#[derive(Debug, Clone)]
pub enum CommitState {
    /// Signed by a trusted key.
    Signed {
        /// The signer's principal.
        principal: String,
        /// The key's fingerprint.
        fingerprint: String,
    },
    /// No signature at all.
    Unsigned,
    /// A signature that does not verify with the base's signers (why).
    NotTrusted(String),
}

/// How the base's release stands under its own trust inputs.
#[derive(Debug, Clone)]
pub enum BaseVerdict {
    /// Every check of a pass passed.
    Verified {
        /// The release serial.
        serial: u64,
    },
    /// The base itself is refused (reported; the review goes on with its files).
    Refused {
        /// The bounded reason.
        reason: &'static str,
        /// One refusal a line.
        findings: Vec<String>,
    },
    /// The base has no directory for this cluster (the change adds it).
    Absent,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The head is refused: no signature can make it pass (exit 3).
    Refused,
    /// Merging waits on it (signatures to collect, a release to write afresh).
    Blocking,
    /// A reviewer should look (a copied value, a trust-file change).
    Warning,
    /// For information (an unbound value).
    Notice,
}

impl Level {
    /// The word used in text and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Refused => "refused",
            Level::Blocking => "blocking",
            Level::Warning => "warning",
            Level::Notice => "notice",
        }
    }
}

/// One finding, on the file and line it names (the line when the file says where).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// A short title (`ReleaseInvalid`, `Signatures`, `Copied value`).
    pub title: String,
    /// The file, relative to the repository; empty when the finding is about the commit.
    pub file: String,
    /// The line in the head's file (1-based), when known.
    pub line: Option<u64>,
    /// What it says: one line, never a plaintext value.
    pub message: String,
}

impl Finding {
    /// The message without its leading `<file>: ` (shown apart by the comment and annotations).
    pub fn short_message(&self) -> &str {
        if self.file.is_empty() {
            return &self.message;
        }
        self.message
            .strip_prefix(self.file.as_str())
            .and_then(|rest| rest.strip_prefix(": "))
            .unwrap_or(&self.message)
    }
}

/// One changed trust file.
#[derive(Debug, Clone)]
pub struct TrustFileChange {
    /// The path (`trust/release_signers`).
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub status: &'static str,
    /// What changed, one line each (`+ key alice (SHA256:...)`, `threshold 2 -> 1`).
    pub details: Vec<String>,
}

/// One cluster's review.
#[derive(Debug)]
pub struct ClusterReview {
    /// The cluster id.
    pub cluster: String,
    /// The base's verdict under its own trust inputs.
    pub base: BaseVerdict,
    /// The base's release serial, whether or not the base verified.
    pub base_serial: Option<u64>,
    /// The head's release, judged with the base's trust inputs; `None` when the head has no
    /// directory for this cluster.
    pub release: Option<ReleaseState>,
    /// Whether the head's key-free checks (layout, schema, values) passed.
    pub checks_passed: bool,
    /// What changes.
    pub diff: IntentDiff,
    /// The binding of each changed value, when `--identity` was given (location order).
    pub bindings: Vec<(String, String)>,
}

/// The whole review.
#[derive(Debug)]
pub struct Review {
    /// The base.
    pub base: Side,
    /// The head.
    pub head: Side,
    /// Where the trust inputs came from: `base` (its `trust/` files) or `flags`.
    pub trust_source: &'static str,
    /// The head commit's signature.
    pub commit: CommitState,
    /// The base's commit signers' principals and release signers' principals, and the threshold:
    /// who must approve a trust-file change.
    pub base_release_signers: Vec<String>,
    /// The base's threshold.
    pub threshold: usize,
    /// Each cluster, by id.
    pub clusters: Vec<ClusterReview>,
    /// Changed trust files, by path.
    pub trust_files: Vec<TrustFileChange>,
    /// Every finding, in cluster, file, line order.
    pub findings: Vec<Finding>,
}

impl Review {
    /// Whether any declared object changes.
    pub fn changed(&self) -> bool {
        self.clusters.iter().any(|c| !c.diff.is_empty()) || !self.trust_files.is_empty()
    }
    /// Whether the head is refused.
    pub fn refused(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Refused)
    }
    /// What must happen before merging: refusals and blocking findings.
    pub fn blockers(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| matches!(f.level, Level::Refused | Level::Blocking))
    }
    /// The exit code, as `diff`: 3 refused, 1 changes, 0 none.
    pub fn exit_code(&self) -> crate::authoring::ExitCode {
        if self.refused() {
            3
        } else if self.changed() {
            1
        } else {
            0
        }
    }
}
