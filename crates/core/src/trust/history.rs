//! Rollback protection on the commit graph: the new commit must descend from the last applied one,
//! and, under the `history: all` policy, every commit in between must carry a trusted signature.
//!
//! The release serial already stops a replayed *release*; this stops a Git host from serving an
//! older or a parallel history, and (with `all`) from slipping unsigned commits under a signed head.

use crate::crd::HistoryPolicy;
use crate::repository::{GitError, LocalRepository};
use crate::trust::commit_signature::{self, CommitSignatureError};
use crate::trust::signers::AllowedSigners;

/// Most commits a history walk visits before giving up (a bound on what a server can make us do).
pub const MAX_HISTORY_COMMITS: usize = 100_000;

/// The cluster's history policy and what it last applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryCheck {
    /// The last applied commit, if any.
    pub last_commit: Option<String>,
    /// `head` (ancestry only) or `all` (ancestry and every commit in between signed).
    pub policy: HistoryPolicy,
    /// Accept a commit that does not descend from the last applied one.
    pub allow_rewrite: bool,
}

/// Why the history was refused. Every message names both commits.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The new commit does not descend from the last applied one.
    #[error(
        "commit {new} does not descend from the last applied commit {last}: history rewrite or rollback refused (a Cluster may allow rewrites with policy.allowHistoryRewrite)"
    )]
    NotDescendant {
        /// The last applied commit.
        last: String,
        /// The refused commit.
        new: String,
    },
    /// The last applied commit is not in the fetched history at all.
    #[error(
        "the last applied commit {last} is not in the history of {new}: the branch was rewritten or the server serves another history (refused)"
    )]
    LastCommitMissing {
        /// The last applied commit.
        last: String,
        /// The refused commit.
        new: String,
    },
    /// Commits between the two are not signed by a trusted key.
    #[error("history: all requires every commit since {last} to be signed by a trusted key:\n{}", .problems.join("\n"))]
    UnsignedHistory {
        /// The last applied commit.
        last: String,
        /// One line per refused commit.
        problems: Vec<String>,
    },
    /// Reading the history failed.
    #[error(transparent)]
    Git(#[from] GitError),
}

/// Checks `new` against the last applied commit under `check`'s policy. Older commits' signatures are
/// judged at the earlier of their own committer date and the verifier's clock `now` (history
/// legitimately predates today's key rotation, but a date in the future is one nobody can check: a
/// key whose `valid-after` has not come yet must not pass on a commit dated after it); the head
/// commit itself is verified by the pipeline at the verifier's clock.
pub fn check(
    repo: &LocalRepository,
    new: &str,
    check: &HistoryCheck,
    signers: &AllowedSigners,
    now: jiff::Timestamp,
) -> Result<(), HistoryError> {
    let Some(last) = check.last_commit.as_deref() else {
        return Ok(());
    };
    if last.eq_ignore_ascii_case(new) {
        return Ok(());
    }
    let descends = repo.has_commit(last) && repo.is_ancestor(last, new, MAX_HISTORY_COMMITS)?;
    if !descends {
        if check.allow_rewrite {
            return Ok(());
        }
        return Err(if repo.has_commit(last) {
            HistoryError::NotDescendant {
                last: last.to_owned(),
                new: new.to_owned(),
            }
        } else {
            HistoryError::LastCommitMissing {
                last: last.to_owned(),
                new: new.to_owned(),
            }
        });
    }
    if check.policy == HistoryPolicy::All {
        let mut problems = Vec::new();
        for id in repo.commits_since(last, new, MAX_HISTORY_COMMITS)? {
            if id == new {
                continue;
            }
            let commit = repo.read_commit(&id)?;
            let at = commit.committer_time().min(now);
            if let Err(e) = commit_signature::verify_commit(&commit, signers, at) {
                problems.push(match e {
                    CommitSignatureError::Unsigned { .. } => format!("commit {id} is not signed"),
                    other => other.to_string(),
                });
            }
        }
        if !problems.is_empty() {
            return Err(HistoryError::UnsignedHistory {
                last: last.to_owned(),
                problems,
            });
        }
    }
    Ok(())
}
