//! Reading a commit and its cluster directory straight from a Git object database (`gix`).
//!
//! Nothing here decides trust: [`FetchedCommit`] is raw, unverified data handed to
//! [`crate::commit_signature`]; [`ClusterTree`] is read only for a commit that passed verification.

use std::collections::BTreeMap;

/// A commit object as read from the object database, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedCommit {
    /// The commit's object id, lowercase hex.
    pub id: String,
    /// The commit object's exact bytes (what `git cat-file commit <id>` prints).
    pub raw: Vec<u8>,
    /// The tree the commit points at, lowercase hex.
    pub tree: String,
    /// Parent commit ids, lowercase hex.
    pub parents: Vec<String>,
    /// The committer date, as the commit claims it (attacker-controlled; see DESIGN.md).
    pub committer_time: jiff::Timestamp,
}

/// One entry of the cluster directory.
#[derive(Clone, PartialEq, Eq)]
pub enum TreeEntry {
    /// A regular (or executable) file with its contents.
    File(Vec<u8>),
    /// A symbolic link: never followed, always refused by the intent validator.
    Symlink,
    /// A submodule (gitlink): never followed, always refused.
    Submodule,
}

impl std::fmt::Debug for TreeEntry {
    // Contents may be large and are never needed in a debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TreeEntry::File(bytes) => write!(f, "File({} bytes)", bytes.len()),
            TreeEntry::Symlink => f.write_str("Symlink"),
            TreeEntry::Submodule => f.write_str("Submodule"),
        }
    }
}

/// The contents of `clusters/<cluster-id>/` at one commit, keyed by path relative to that directory
/// (`release.yaml`, `namespaces/org-a/applicationinstances/app.yaml`, ...), `/`-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTree {
    /// The cluster id whose directory this is.
    pub cluster: String,
    /// Every entry below the directory (directories themselves are implied by the paths).
    pub entries: BTreeMap<String, TreeEntry>,
}

impl ClusterTree {
    /// Builds a tree from in-memory entries (used by tests and by tools that work on a checkout).
    pub fn from_entries(cluster: impl Into<String>, entries: BTreeMap<String, TreeEntry>) -> Self {
        ClusterTree { cluster: cluster.into(), entries }
    }
}
