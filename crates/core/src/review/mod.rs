//! Reviewing a change before it is applied (`diff --base`): what a pull request changes between two
//! commits, judged without the cluster and without its key.
//!
//! Nothing here builds a [`crate::pipeline::VerifiedIntent`]: the planner never sees what this
//! module reads. A review reads a commit's cluster directory *before* its signatures are complete
//! (that is the point of reviewing it), so it reads through [`read_tree_for_review`], under the same
//! limits and the same tree checks as a pass, and every verdict it reaches is reported, never acted on.

pub mod intent_diff;
pub mod release_state;
pub mod spans;

use crate::limits::Limits;
use crate::repository::{ClusterTree, FetchedCommit, GitError, LocalRepository};

/// Reads `clusters/<cluster>/` of `commit`, signed or not, for a review: bounded by `limits`, with
/// the tree checks of a pass. `Ok(None)` when the commit has no such directory (a cluster added or
/// removed by the change).
pub fn read_tree_for_review(
    repo: &LocalRepository,
    commit: &FetchedCommit,
    cluster: &str,
    limits: &Limits,
) -> Result<Option<ClusterTree>, GitError> {
    match repo.read_cluster_tree_at(commit.id(), commit.tree(), cluster, limits) {
        Ok(tree) => Ok(Some(tree)),
        Err(GitError::ClusterDirectoryMissing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
