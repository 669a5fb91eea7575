//! The strict reader of a cluster directory: tree objects parsed as git's `fsck` checks them, and a
//! bounded walk of `clusters/<id>/` (depth, entry count, file and total size, checked before a blob
//! is inflated).

use std::collections::BTreeMap;

use gix::object::tree::EntryKind;

use super::{ClusterTree, CommitId, GitError, TreeEntry, object_error};
use crate::limits::Limits;

/// Reads `clusters/<cluster>/` of the tree `tree_id` in `repo`, bounded by `limits`.
pub(super) fn read_cluster_tree(
    repo: &gix::Repository,
    commit_id: &CommitId,
    tree_id: &str,
    cluster: &str,
    limits: &Limits,
) -> Result<ClusterTree, GitError> {
    let oid = gix::ObjectId::from_hex(tree_id.as_bytes()).map_err(|e| object_error(tree_id, e))?;
    let root = repo.find_tree(oid).map_err(|e| object_error(tree_id, e))?;
    let missing = || GitError::ClusterDirectoryMissing {
        commit: commit_id.to_string(),
        cluster: cluster.to_owned(),
    };
    // A cluster id is a single path segment: anything else could address another directory.
    if cluster.is_empty() || cluster.contains('/') || cluster == "." || cluster == ".." {
        return Err(missing());
    }
    // Looked up as git looks it up, through trees checked as git's fsck checks them: with a
    // duplicate or misordered `clusters` or `<id>` entry, git and a walk could pick different ones.
    let root_entries = parse_tree(&root.id, &root.data, "the commit's root")?;
    let clusters = root_entries
        .iter()
        .find(|e| e.name == b"clusters" && e.mode == "40000")
        .ok_or_else(missing)?;
    let clusters_tree = repo
        .find_tree(clusters.id)
        .map_err(|e| object_error(clusters.id, e))?;
    let cluster_entries = parse_tree(&clusters_tree.id, &clusters_tree.data, "clusters/")?;
    let entry = cluster_entries
        .iter()
        .find(|e| e.name == cluster.as_bytes() && e.mode == "40000")
        .ok_or_else(missing)?;
    let mut walk = TreeWalk {
        repo,
        cluster,
        limits,
        entries: BTreeMap::new(),
        total_bytes: 0,
        visited: 0,
    };
    walk.visit(entry.id, "", 0)?;
    Ok(ClusterTree {
        cluster: cluster.to_owned(),
        commit: Some(commit_id.clone()),
        entries: walk.entries,
    })
}

/// One entry of a tree object, as stored.
struct RawEntry {
    /// The mode exactly as written (`100644`, `40000`, ...).
    mode: String,
    /// The name's bytes.
    name: Vec<u8>,
    /// The object id.
    id: gix::ObjectId,
}

/// Parses a tree object's bytes and refuses what git's `fsck` reports as `duplicateEntries`,
/// `emptyName`, `fullPathname`, `hasDot`, `hasDotdot`, `treeNotSorted` or `badTree`: on such a tree,
/// `git show <commit>:<path>` and a walk over every entry can disagree on what a path holds.
fn parse_tree(
    tree: &gix::ObjectId,
    data: &[u8],
    location: &str,
) -> Result<Vec<RawEntry>, GitError> {
    let malformed = |message: String| GitError::MalformedTree {
        tree: tree.to_string(),
        path: location.to_owned(),
        message,
    };
    let mut entries: Vec<RawEntry> = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut rest = data;
    while !rest.is_empty() {
        let offset = data.len() - rest.len();
        let unparsable = || malformed(format!("cannot be parsed at byte {offset}"));
        let space = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(unparsable)?;
        let mode = &rest[..space];
        if mode.is_empty() || mode.len() > 6 || !mode.iter().all(|b| (b'0'..=b'7').contains(b)) {
            return Err(unparsable());
        }
        let after_mode = &rest[space + 1..];
        let nul = after_mode
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(unparsable)?;
        let name = &after_mode[..nul];
        let id_bytes = after_mode.get(nul + 1..nul + 21).ok_or_else(unparsable)?;
        let id = gix::ObjectId::try_from(id_bytes).map_err(|_| unparsable())?;
        rest = &after_mode[nul + 21..];
        let shown = String::from_utf8_lossy(name);
        if name.is_empty() {
            return Err(malformed("an entry has an empty name".into()));
        }
        if name.contains(&b'/') {
            return Err(malformed(format!("entry {shown:?} holds a '/'")));
        }
        if name == b"." || name == b".." {
            return Err(malformed(format!("entry {shown:?} is not a file name")));
        }
        if !names.insert(name.to_vec()) {
            return Err(malformed(format!(
                "entry {shown:?} appears twice; git would show the first, a walk the last"
            )));
        }
        let mode = String::from_utf8_lossy(mode).into_owned();
        if let Some(previous) = entries.last()
            && git_tree_order(previous, name, &mode) != std::cmp::Ordering::Less
        {
            return Err(malformed(format!(
                "entry {shown:?} is out of git's order (after {:?})",
                String::from_utf8_lossy(&previous.name)
            )));
        }
        entries.push(RawEntry {
            mode,
            name: name.to_vec(),
            id,
        });
    }
    Ok(entries)
}

/// Git's tree order: names compared byte-wise, a directory's name as if it ended in `/`.
fn git_tree_order(previous: &RawEntry, name: &[u8], mode: &str) -> std::cmp::Ordering {
    let key = |name: &[u8], mode: &str| {
        let mut k = name.to_vec();
        if mode == "40000" || mode == "040000" {
            k.push(b'/');
        }
        k
    };
    key(&previous.name, &previous.mode).cmp(&key(name, mode))
}

struct TreeWalk<'a> {
    repo: &'a gix::Repository,
    cluster: &'a str,
    limits: &'a Limits,
    entries: BTreeMap<String, TreeEntry>,
    total_bytes: u64,
    /// Every tree entry seen, directories included: a few small trees that all point at one shared
    /// subtree would otherwise make the walk visit millions of directories (a "tree bomb").
    visited: usize,
}

impl TreeWalk<'_> {
    fn visit(&mut self, tree: gix::ObjectId, prefix: &str, depth: usize) -> Result<(), GitError> {
        if depth > self.limits.max_tree_depth {
            return Err(GitError::TooDeep {
                cluster: self.cluster.to_owned(),
                path: prefix.trim_end_matches('/').to_owned(),
                limit: self.limits.max_tree_depth,
            });
        }
        for (path, kind, id) in self.children(tree, prefix)? {
            if self.entries.len() >= self.limits.max_files {
                return Err(self.too_many_files());
            }
            match kind {
                EntryKind::Tree => self.visit(id, &format!("{path}/"), depth + 1)?,
                EntryKind::Link => {
                    self.entries.insert(path, TreeEntry::Symlink);
                }
                EntryKind::Commit => {
                    self.entries.insert(path, TreeEntry::Submodule);
                }
                EntryKind::Blob | EntryKind::BlobExecutable => self.read_file(path, id)?,
            }
        }
        Ok(())
    }

    fn too_many_files(&self) -> GitError {
        GitError::TooManyFiles {
            cluster: self.cluster.to_owned(),
            limit: self.limits.max_files,
        }
    }

    /// The entries of the tree `tree` at `prefix`, counted against the file limit: (path, kind, id).
    fn children(
        &mut self,
        tree: gix::ObjectId,
        prefix: &str,
    ) -> Result<Vec<(String, EntryKind, gix::ObjectId)>, GitError> {
        let tree = self
            .repo
            .find_tree(tree)
            .map_err(|e| object_error(tree, e))?;
        let mut children = Vec::new();
        // The entry count is bounded before the object is parsed (an entry takes at least 23
        // bytes), so one huge tree object cannot grow memory either.
        let remaining = self.limits.max_files.saturating_sub(self.visited);
        if tree.data.len() / 23 > remaining {
            return Err(self.too_many_files());
        }
        let location = format!("clusters/{}/{prefix}", self.cluster);
        for entry in parse_tree(&tree.id, &tree.data, &location)? {
            self.visited += 1;
            if self.visited > self.limits.max_files {
                return Err(self.too_many_files());
            }
            let name = std::str::from_utf8(&entry.name).map_err(|_| GitError::NonUtf8Path {
                cluster: self.cluster.to_owned(),
                path: format!("{prefix}{}", String::from_utf8_lossy(&entry.name)),
            })?;
            let path = format!("{prefix}{name}");
            // Only the modes git shows as a file or a directory; links and submodules are recorded
            // for the intent validator to refuse by name. Anything else (`140000`, which git shows
            // as a submodule; `100664`; a zero-padded `040000`) is refused here.
            let kind = match entry.mode.as_str() {
                "100644" => EntryKind::Blob,
                "100755" => EntryKind::BlobExecutable,
                "40000" => EntryKind::Tree,
                "120000" => EntryKind::Link,
                "160000" => EntryKind::Commit,
                _ => {
                    return Err(GitError::BadEntryMode {
                        cluster: self.cluster.to_owned(),
                        path,
                        mode: entry.mode,
                    });
                }
            };
            children.push((path, kind, entry.id));
        }
        Ok(children)
    }

    /// Records the blob `id` at `path`, its size checked against the limits first.
    fn read_file(&mut self, path: String, id: gix::ObjectId) -> Result<(), GitError> {
        // The size comes from the object header: an oversized blob is refused before it is
        // inflated into memory.
        let size = self
            .repo
            .find_header(id)
            .map_err(|e| object_error(id, e))?
            .size();
        let limit = if path == crate::layout::MANIFEST_FILE {
            self.limits.max_manifest_bytes
        } else {
            self.limits.max_file_bytes
        };
        if size > limit {
            return Err(GitError::FileTooLarge {
                cluster: self.cluster.to_owned(),
                path,
                size,
                limit,
            });
        }
        self.total_bytes += size;
        if self.total_bytes > self.limits.max_total_bytes {
            return Err(GitError::TotalTooLarge {
                cluster: self.cluster.to_owned(),
                limit: self.limits.max_total_bytes,
            });
        }
        let blob = self.repo.find_blob(id).map_err(|e| object_error(id, e))?;
        self.entries
            .insert(path, TreeEntry::File(blob.data.clone()));
        Ok(())
    }
}
