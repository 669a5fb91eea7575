//! Reading a commit and its cluster directory straight from a Git object database (`gix`).
//!
//! Nothing here decides trust: [`FetchedCommit`] is raw, unverified data handed to
//! [`crate::trust::commit_signature`]; [`ClusterTree`] is read only for a commit that passed verification.

pub mod commit_id;
mod tree;

pub use commit_id::{CommitId, InvalidCommitId};

use std::collections::BTreeMap;

/// A commit object as read from the object database, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedCommit {
    id: CommitId,
    raw: Vec<u8>,
    tree: String,
    parents: Vec<CommitId>,
    committer_time: jiff::Timestamp,
}

impl FetchedCommit {
    /// Reads a commit object from its exact bytes (what `git cat-file commit <id>` prints): its id is
    /// the SHA-1 of those bytes, its tree and parents are read as git reads them, its committer date
    /// as gix reads it. The object database reader goes through here too, so a `FetchedCommit` always
    /// names the bytes it holds.
    pub fn from_raw(raw: Vec<u8>) -> Result<FetchedCommit, GitError> {
        if raw.len() as u64 > MAX_COMMIT_BYTES {
            return Err(GitError::CommitTooLarge {
                id: "(new)".to_owned(),
                size: raw.len() as u64,
                limit: MAX_COMMIT_BYTES,
            });
        }
        let oid = gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::object::Kind::Commit, &raw)
            .map_err(|e| object_error("(new)", e))?;
        let id = CommitId::parse(&oid.to_string()).map_err(|e| object_error(oid, e))?;
        let (tree, parents) = git_tree_and_parents(&raw).ok_or_else(|| {
            object_error(&id, "malformed commit: no tree line, or bad parent lines")
        })?;
        let seconds = gix::objs::CommitRef::from_bytes(&raw, gix::hash::Kind::Sha1)
            .and_then(|parsed| parsed.committer().map(|c| c.seconds()))
            .map_err(|e| object_error(&id, e))?;
        let committer_time =
            jiff::Timestamp::from_second(seconds).map_err(|e| object_error(&id, e))?;
        Ok(FetchedCommit {
            id,
            raw,
            tree,
            parents,
            committer_time,
        })
    }

    /// The commit's id.
    pub fn id(&self) -> &CommitId {
        &self.id
    }
    /// The commit object's exact bytes (what `git cat-file commit <id>` prints).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
    /// The tree the commit points at, lowercase hex.
    pub fn tree(&self) -> &str {
        &self.tree
    }
    /// The parent commits.
    pub fn parents(&self) -> &[CommitId] {
        &self.parents
    }
    /// The committer date, as the commit claims it (attacker-controlled; see DESIGN.md).
    pub fn committer_time(&self) -> jiff::Timestamp {
        self.committer_time
    }
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
    pub(crate) cluster: String,
    pub(crate) commit: Option<CommitId>,
    pub(crate) entries: BTreeMap<String, TreeEntry>,
}

impl ClusterTree {
    /// Builds a tree from in-memory entries (a checkout, a tool, a test). It names no commit, so
    /// [`crate::trust::release::verify`] refuses it: only a tree read from a verified commit
    /// ([`crate::trust::commit_signature::VerifiedCommit::read_cluster_tree`]) can be verified.
    pub fn from_entries(cluster: impl Into<String>, entries: BTreeMap<String, TreeEntry>) -> Self {
        ClusterTree {
            cluster: cluster.into(),
            commit: None,
            entries,
        }
    }

    /// The cluster id whose directory this is.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The commit this tree was read from, if it was read from one.
    pub fn commit(&self) -> Option<&CommitId> {
        self.commit.as_ref()
    }

    /// Every entry below the directory (directories themselves are implied by the paths), keyed by
    /// path relative to it.
    pub fn entries(&self) -> &BTreeMap<String, TreeEntry> {
        &self.entries
    }

    /// Adds or replaces an entry. The tree is then no longer the commit's: it names none.
    pub fn insert(&mut self, path: impl Into<String>, entry: TreeEntry) {
        self.commit = None;
        self.entries.insert(path.into(), entry);
    }

    /// Stamps the tree with the commit it stands for (the crate's own tests build trees in memory).
    #[cfg(test)]
    pub(crate) fn at_commit(mut self, commit: &CommitId) -> Self {
        self.commit = Some(commit.clone());
        self
    }
}

use crate::limits::Limits;
use std::path::{Path, PathBuf};

/// The largest commit object the reader accepts; real commits are a few hundred bytes plus a
/// signature of about 300.
pub const MAX_COMMIT_BYTES: u64 = 1024 * 1024;

/// What to check out of the repository, as a `Cluster` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// A branch: `refs/heads/<name>` (or, in a fetched cache, `refs/remotes/origin/<name>`).
    Branch(String),
    /// A tag, lightweight or annotated (peeled to its commit).
    Tag(String),
    /// A full commit id.
    Commit(String),
    /// Any revision git understands (`HEAD`, `main`, a short id): for the command line only.
    Revision(String),
}

impl std::fmt::Display for GitRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitRef::Branch(b) => write!(f, "branch {b}"),
            GitRef::Tag(t) => write!(f, "tag {t}"),
            GitRef::Commit(c) => write!(f, "commit {c}"),
            GitRef::Revision(r) => write!(f, "revision {r}"),
        }
    }
}

/// Why reading the repository failed. Every message names the repository object or path involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// The repository could not be opened.
    #[error("cannot open git repository {path}: {message}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// What gix said.
        message: String,
    },
    /// The reference does not resolve to a commit.
    #[error("{reference} does not resolve to a commit: {message}")]
    RefNotFound {
        /// The reference asked for.
        reference: String,
        /// What gix said.
        message: String,
    },
    /// An object the commit needs is missing or unreadable.
    #[error("cannot read object {id}: {message}")]
    Object {
        /// The object id.
        id: String,
        /// What gix said.
        message: String,
    },
    /// The commit object is larger than [`MAX_COMMIT_BYTES`].
    #[error("commit {id} is {size} bytes, over the limit of {limit}")]
    CommitTooLarge {
        /// The commit id.
        id: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The commit has no `clusters/<id>/` directory.
    #[error("commit {commit} has no directory clusters/{cluster}/")]
    ClusterDirectoryMissing {
        /// The commit id.
        commit: String,
        /// The cluster id.
        cluster: String,
    },
    /// A path under the cluster directory is not valid UTF-8.
    #[error("clusters/{cluster}/{path}: file name is not valid UTF-8")]
    NonUtf8Path {
        /// The cluster id.
        cluster: String,
        /// The path, with invalid bytes replaced.
        path: String,
    },
    /// More entries (files and directories) than [`Limits::max_files`].
    #[error("clusters/{cluster}/ holds more than {limit} entries (files and directories)")]
    TooManyFiles {
        /// The cluster id.
        cluster: String,
        /// The limit.
        limit: usize,
    },
    /// A file larger than [`Limits::max_file_bytes`].
    #[error("clusters/{cluster}/{path}: {size} bytes, over the limit of {limit}")]
    FileTooLarge {
        /// The cluster id.
        cluster: String,
        /// The path relative to the cluster directory.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// All files together exceed [`Limits::max_total_bytes`].
    #[error("clusters/{cluster}/ holds more than {limit} bytes in all")]
    TotalTooLarge {
        /// The cluster id.
        cluster: String,
        /// The limit.
        limit: u64,
    },
    /// More commits between two points than a walk may visit.
    #[error("more than {limit} commits between {base} and {head}")]
    HistoryTooLong {
        /// The older commit.
        base: String,
        /// The newer commit.
        head: String,
        /// The limit.
        limit: usize,
    },
    /// A tree entry under `clusters/<id>/` has a mode other than `100644`, `100755`, `40000`
    /// (and the symbolic link and submodule modes, which the intent validator refuses by name).
    /// Git shows such an entry differently than a directory walk would read it (`140000` is a
    /// submodule to git), so it is refused.
    #[error(
        "clusters/{cluster}/{path}: tree entry mode {mode} is not allowed (only 100644, 100755 and 40000; git does not show this entry as a file or a directory)"
    )]
    BadEntryMode {
        /// The cluster id.
        cluster: String,
        /// The entry's path relative to the cluster directory.
        path: String,
        /// The mode as written in the tree object.
        mode: String,
    },
    /// A tree object that git's `fsck` calls malformed: duplicate names, a name that is empty,
    /// `.`, `..` or holds a `/`, entries out of git's order, or bytes that do not parse. Tools then
    /// disagree on which entry a path means, so the tree is refused.
    #[error("tree {tree} ({path}): {message}")]
    MalformedTree {
        /// The tree object id.
        tree: String,
        /// Where the tree is (`clusters/<id>/...`, or the commit's root).
        path: String,
        /// What is wrong, naming the entry.
        message: String,
    },
    /// The commit object's bytes do not hash to the id it was asked for (a corrupt or forged object
    /// database).
    #[error("object {id}: its bytes hash to {actual}, not to its id")]
    HashMismatch {
        /// The id asked for.
        id: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// The repository uses an object format this operator does not read (SHA-256).
    #[error(
        "git repository {path} uses the {format} object format, which is not supported: only SHA-1 repositories can be verified (see docs/signatures.md)"
    )]
    UnsupportedObjectFormat {
        /// The repository path.
        path: PathBuf,
        /// The format (`sha256`).
        format: String,
    },
    /// Directories nested deeper than [`Limits::max_tree_depth`].
    #[error("clusters/{cluster}/{path}: nested deeper than {limit} directories")]
    TooDeep {
        /// The cluster id.
        cluster: String,
        /// The path.
        path: String,
        /// The limit.
        limit: usize,
    },
}

/// A repository opened for reading, isolated from the user's and the system's git configuration.
pub struct LocalRepository {
    repo: gix::Repository,
    path: PathBuf,
}

impl std::fmt::Debug for LocalRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRepository")
            .field("path", &self.path)
            .finish()
    }
}

fn object_error(id: impl std::fmt::Display, e: impl std::fmt::Display) -> GitError {
    GitError::Object {
        id: id.to_string(),
        message: e.to_string(),
    }
}

/// The `extensions.objectFormat` of the repository at `path` (a work tree or a bare repository), if
/// its config sets one.
fn object_format(path: &Path) -> Option<String> {
    let config = [path.join(".git").join("config"), path.join("config")]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())?;
    let mut in_extensions = false;
    for line in config.lines() {
        let line = line.trim();
        if let Some(section) = line.strip_prefix('[') {
            in_extensions = section
                .trim_end_matches(']')
                .trim()
                .eq_ignore_ascii_case("extensions");
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && in_extensions
            && key.trim().eq_ignore_ascii_case("objectformat")
        {
            return Some(value.trim().to_ascii_lowercase());
        }
    }
    None
}

/// The tree and parents of a raw commit object exactly as git's `parse_commit_buffer` reads them:
/// `tree <hex>` on the first line, then every `parent <hex>` line that immediately follows.
fn git_tree_and_parents(raw: &[u8]) -> Option<(String, Vec<CommitId>)> {
    fn hex_line(line: &[u8], prefix: &[u8]) -> Option<String> {
        let hex = line.strip_prefix(prefix)?;
        (hex.len() == 40 && hex.iter().all(u8::is_ascii_hexdigit))
            .then(|| String::from_utf8_lossy(hex).to_ascii_lowercase())
    }
    let mut lines = raw.split(|b| *b == b'\n');
    let tree = hex_line(lines.next()?, b"tree ")?;
    let mut parents = Vec::new();
    for line in lines {
        if !line.starts_with(b"parent ") {
            break;
        }
        parents.push(CommitId::parse(&hex_line(line, b"parent ")?).ok()?);
    }
    Some((tree, parents))
}

impl LocalRepository {
    /// Opens the repository at `path` (a work tree or a bare repository). The user's global and
    /// system configuration are not read: nothing on the machine can change what is verified.
    ///
    /// Replace refs (`refs/replace/*`) are never followed and grafts (`info/grafts`) never read: an
    /// object id always means the object stored under it, so what is verified is what is reported.
    /// A SHA-256 repository is refused with [`GitError::UnsupportedObjectFormat`].
    pub fn open(path: &Path) -> Result<Self, GitError> {
        let unsupported = || {
            object_format(path)
                .filter(|f| !f.eq_ignore_ascii_case("sha1"))
                .map(|format| GitError::UnsupportedObjectFormat {
                    path: path.to_owned(),
                    format,
                })
        };
        let options =
            gix::open::Options::isolated().config_overrides(["core.useReplaceRefs=false"]);
        let repo = gix::open_opts(path, options).map_err(|e| {
            unsupported().unwrap_or_else(|| GitError::Open {
                path: path.to_owned(),
                message: e.to_string(),
            })
        })?;
        if let Some(e) = unsupported() {
            return Err(e);
        }
        Ok(LocalRepository {
            repo,
            path: path.to_owned(),
        })
    }

    /// The path the repository was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves `reference` to a commit id (lowercase hex). Tags are peeled to their commit.
    pub fn resolve(&self, reference: &GitRef) -> Result<String, GitError> {
        let candidates: Vec<String> = match reference {
            GitRef::Branch(b) => vec![
                format!("refs/heads/{b}"),
                format!("refs/remotes/origin/{b}"),
            ],
            GitRef::Tag(t) => vec![format!("refs/tags/{t}")],
            GitRef::Commit(c) => vec![c.clone()],
            GitRef::Revision(r) => vec![r.clone()],
        };
        let mut last_error = String::from("not found");
        for candidate in candidates {
            let spec = format!("{candidate}^{{commit}}");
            match self.repo.rev_parse_single(spec.as_str()) {
                Ok(id) => {
                    let id = id.detach().to_string();
                    if let GitRef::Commit(c) = reference
                        && !id.eq_ignore_ascii_case(c)
                    {
                        // A pin must name the full commit id: an abbreviation could become
                        // ambiguous, or be made to resolve elsewhere, as the repository grows.
                        return Err(GitError::RefNotFound {
                            reference: reference.to_string(),
                            message: format!("a commit pin must be the full id ({id})"),
                        });
                    }
                    return Ok(id);
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        // gix describes a bad revision in its parser's terms
        // (`delegate.traverse(NthAncestor(5)) failed`); say it in the user's.
        if let GitRef::Revision(r) = reference {
            last_error = format!(
                "no commit {r:?} in this repository (a branch, a tag, a commit id, or HEAD~N within the history; `git log --oneline` lists the commits)"
            );
        }
        Err(GitError::RefNotFound {
            reference: reference.to_string(),
            message: last_error,
        })
    }

    /// Reads a commit object: its exact bytes and the headers the pipeline needs.
    pub fn read_commit(&self, id: &str) -> Result<FetchedCommit, GitError> {
        let oid = gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| object_error(id, e))?;
        let header = self
            .repo
            .find_header(oid)
            .map_err(|e| object_error(id, e))?;
        if header.kind() != gix::object::Kind::Commit {
            return Err(object_error(
                id,
                format!("is a {}, not a commit", header.kind()),
            ));
        }
        if header.size() > MAX_COMMIT_BYTES {
            return Err(GitError::CommitTooLarge {
                id: id.to_owned(),
                size: header.size(),
                limit: MAX_COMMIT_BYTES,
            });
        }
        let commit = self
            .repo
            .find_commit(oid)
            .map_err(|e| object_error(id, e))?;
        // The bytes must be the object named `id` (no replacement, no corrupt or forged store).
        let actual = gix::objs::compute_hash(
            gix::hash::Kind::Sha1,
            gix::object::Kind::Commit,
            &commit.data,
        )
        .map_err(|e| object_error(id, e))?;
        if actual != oid {
            return Err(GitError::HashMismatch {
                id: oid.to_string(),
                actual: actual.to_string(),
            });
        }
        // Tree and parents are read as git reads them (first line, then the `parent` lines right
        // after it); gix's own parse must agree, or the commit is malformed.
        let fetched = FetchedCommit::from_raw(commit.data.clone())?;
        let gix_tree = commit
            .tree_id()
            .map_err(|e| object_error(id, e))?
            .detach()
            .to_string();
        let gix_parents: Vec<String> = commit
            .parent_ids()
            .map(|p| p.detach().to_string())
            .collect();
        if gix_tree != fetched.tree
            || fetched
                .parents
                .iter()
                .map(CommitId::as_str)
                .ne(gix_parents.iter().map(String::as_str))
        {
            return Err(object_error(
                id,
                "malformed commit: its tree or parent lines are read differently by git",
            ));
        }
        Ok(fetched)
    }

    /// Whether the repository holds the commit `id`.
    pub fn has_commit(&self, id: &str) -> bool {
        gix::ObjectId::from_hex(id.as_bytes())
            .ok()
            .and_then(|oid| self.repo.find_header(oid).ok())
            .is_some_and(|h| h.kind() == gix::object::Kind::Commit)
    }

    /// The commits reachable from `head` but not from `base`, newest first (merge commits and both
    /// sides of merges included), at most `limit` of them. With `base` an ancestor of `head`, these are
    /// the commits a fast-forward from `base` to `head` brings.
    pub fn commits_since(
        &self,
        base: &str,
        head: &str,
        limit: usize,
    ) -> Result<Vec<String>, GitError> {
        let parse =
            |id: &str| gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| object_error(id, e));
        let walk = self
            .repo
            .rev_walk([parse(head)?])
            .with_hidden([parse(base)?])
            .all()
            .map_err(|e| object_error(head, e))?;
        let mut out = Vec::new();
        for info in walk {
            let info = info.map_err(|e| object_error(head, e))?;
            if out.len() >= limit {
                return Err(GitError::HistoryTooLong {
                    base: base.to_owned(),
                    head: head.to_owned(),
                    limit,
                });
            }
            out.push(info.id.to_string());
        }
        Ok(out)
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors, walking at most `limit` commits.
    pub fn is_ancestor(
        &self,
        ancestor: &str,
        descendant: &str,
        limit: usize,
    ) -> Result<bool, GitError> {
        if ancestor.eq_ignore_ascii_case(descendant) {
            return Ok(true);
        }
        let target =
            gix::ObjectId::from_hex(ancestor.as_bytes()).map_err(|e| object_error(ancestor, e))?;
        let start = gix::ObjectId::from_hex(descendant.as_bytes())
            .map_err(|e| object_error(descendant, e))?;
        let walk = self
            .repo
            .rev_walk([start])
            .all()
            .map_err(|e| object_error(descendant, e))?;
        for (count, info) in walk.enumerate() {
            if count >= limit {
                return Err(GitError::HistoryTooLong {
                    base: ancestor.to_owned(),
                    head: descendant.to_owned(),
                    limit,
                });
            }
            if info.map_err(|e| object_error(descendant, e))?.id == target {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads `clusters/<cluster>/` of the tree `tree_id`, bounded by `limits`. Crate-private: the
    /// public way in is [`crate::trust::commit_signature::VerifiedCommit::read_cluster_tree`], so only a
    /// verified commit's tree is ever read.
    pub(crate) fn read_cluster_tree_at(
        &self,
        commit_id: &CommitId,
        tree_id: &str,
        cluster: &str,
        limits: &Limits,
    ) -> Result<ClusterTree, GitError> {
        tree::read_cluster_tree(&self.repo, commit_id, tree_id, cluster, limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args([
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@example.org",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn write(dir: &Path, path: &str, contents: &[u8]) {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, contents).expect("write");
    }

    /// A repository with one commit holding clusters/demo and clusters/other.
    fn repo_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q"]);
        for (path, contents) in files {
            write(dir.path(), path, contents);
        }
        git(dir.path(), &["add", "-A"]);
        git(dir.path(), &["commit", "-q", "-m", "intent"]);
        let head = git(dir.path(), &["rev-parse", "HEAD"]);
        (dir, head)
    }

    fn read(dir: &Path, head: &str, limits: &Limits) -> Result<ClusterTree, GitError> {
        let repo = LocalRepository::open(dir).expect("open");
        let commit = repo.read_commit(head).expect("commit");
        repo.read_cluster_tree_at(commit.id(), commit.tree(), "demo", limits)
    }

    #[test]
    fn reads_commit_bytes_exactly_as_git_does() {
        let (dir, head) = repo_with(&[("clusters/demo/a.yaml", b"a: 1\n")]);
        let repo = LocalRepository::open(dir.path()).expect("open");
        let commit = repo.read_commit(&head).expect("commit");
        let cat = Command::new("git")
            .current_dir(dir.path())
            .args(["cat-file", "commit", &head])
            .output()
            .expect("git cat-file");
        assert_eq!(commit.raw, cat.stdout);
        assert_eq!(commit.id, head);
        assert_eq!(commit.tree, git(dir.path(), &["rev-parse", "HEAD^{tree}"]));
        assert!(commit.parents.is_empty());
        let epoch: i64 = git(dir.path(), &["log", "-1", "--format=%ct"])
            .parse()
            .expect("epoch");
        assert_eq!(commit.committer_time.as_second(), epoch);
    }

    #[test]
    fn reads_only_the_cluster_directory() {
        let (dir, head) = repo_with(&[
            ("clusters/demo/release.yaml", b"r\n"),
            (
                "clusters/demo/namespaces/a/applicationinstances/x.yaml",
                b"x\n",
            ),
            ("clusters/other/release.yaml", b"other\n"),
            ("README.md", b"readme\n"),
        ]);
        let tree = read(dir.path(), &head, &Limits::default()).expect("tree");
        let paths: Vec<&str> = tree.entries.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            ["namespaces/a/applicationinstances/x.yaml", "release.yaml"]
        );
        assert_eq!(
            tree.entries["release.yaml"],
            TreeEntry::File(b"r\n".to_vec())
        );
    }

    #[test]
    fn missing_cluster_directory_is_named() {
        let (dir, head) = repo_with(&[("clusters/other/release.yaml", b"r\n")]);
        let err = read(dir.path(), &head, &Limits::default()).expect_err("missing");
        assert!(
            matches!(err, GitError::ClusterDirectoryMissing { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("clusters/demo/"), "{err}");
    }

    #[test]
    fn symlinks_are_recorded_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q"]);
        write(dir.path(), "clusters/demo/release.yaml", b"r\n");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("clusters/demo/evil.yaml"))
            .expect("symlink");
        git(dir.path(), &["add", "-A"]);
        git(dir.path(), &["commit", "-q", "-m", "link"]);
        let head = git(dir.path(), &["rev-parse", "HEAD"]);
        let tree = read(dir.path(), &head, &Limits::default()).expect("tree");
        assert_eq!(tree.entries["evil.yaml"], TreeEntry::Symlink);
    }

    #[test]
    fn oversized_file_is_refused_by_name() {
        let big = vec![b'a'; 2048];
        let (dir, head) = repo_with(&[("clusters/demo/big.yaml", &big)]);
        let limits = Limits {
            max_file_bytes: 1024,
            ..Limits::default()
        };
        let err = read(dir.path(), &head, &limits).expect_err("too big");
        assert!(
            matches!(
                err,
                GitError::FileTooLarge {
                    size: 2048,
                    limit: 1024,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("clusters/demo/big.yaml"), "{err}");
    }

    #[test]
    fn file_count_total_size_and_depth_are_bounded() {
        let (dir, head) = repo_with(&[
            ("clusters/demo/a.yaml", b"0123456789"),
            ("clusters/demo/b.yaml", b"0123456789"),
            ("clusters/demo/c.yaml", b"0123456789"),
            ("clusters/demo/d/e/f/g.yaml", b"0"),
        ]);
        let few = Limits {
            max_files: 2,
            ..Limits::default()
        };
        assert!(matches!(
            read(dir.path(), &head, &few),
            Err(GitError::TooManyFiles { limit: 2, .. })
        ));
        let small = Limits {
            max_total_bytes: 25,
            ..Limits::default()
        };
        assert!(matches!(
            read(dir.path(), &head, &small),
            Err(GitError::TotalTooLarge { limit: 25, .. })
        ));
        let shallow = Limits {
            max_tree_depth: 2,
            ..Limits::default()
        };
        let err = read(dir.path(), &head, &shallow).expect_err("too deep");
        assert!(matches!(err, GitError::TooDeep { .. }), "{err}");
    }

    #[test]
    fn refs_resolve_to_commits_and_pins_must_be_full() {
        let (dir, head) = repo_with(&[("clusters/demo/a.yaml", b"a\n")]);
        git(dir.path(), &["tag", "-a", "-m", "annotated", "v1"]);
        git(dir.path(), &["tag", "light"]);
        let repo = LocalRepository::open(dir.path()).expect("open");
        assert_eq!(
            repo.resolve(&GitRef::Branch("main".into()))
                .expect("branch"),
            head
        );
        assert_eq!(
            repo.resolve(&GitRef::Tag("v1".into()))
                .expect("annotated tag"),
            head
        );
        assert_eq!(
            repo.resolve(&GitRef::Tag("light".into())).expect("tag"),
            head
        );
        assert_eq!(
            repo.resolve(&GitRef::Commit(head.clone())).expect("commit"),
            head
        );
        assert!(matches!(
            repo.resolve(&GitRef::Commit(head[..12].to_owned())),
            Err(GitError::RefNotFound { .. })
        ));
        assert!(matches!(
            repo.resolve(&GitRef::Branch("nope".into())),
            Err(GitError::RefNotFound { .. })
        ));
        // A tag name is not a branch: pins are exact about the kind of ref.
        assert!(matches!(
            repo.resolve(&GitRef::Branch("v1".into())),
            Err(GitError::RefNotFound { .. })
        ));
    }

    #[test]
    fn non_commit_objects_are_refused() {
        let (dir, _head) = repo_with(&[("clusters/demo/a.yaml", b"a\n")]);
        let tree = git(dir.path(), &["rev-parse", "HEAD^{tree}"]);
        let repo = LocalRepository::open(dir.path()).expect("open");
        assert!(matches!(
            repo.read_commit(&tree),
            Err(GitError::Object { .. })
        ));
    }
}
