//! Reading `clusters/<id>/` from a checkout on disk, for the authoring commands (`release`).
//!
//! The operator itself never reads a work tree: it verifies the object database (see `vworkspace_core::repository`).
//! This reader applies the same limits and the same refusals, so that what an author releases is what
//! the operator will accept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vworkspace_core::limits::Limits;
use vworkspace_core::repository::{ClusterTree, TreeEntry};

/// Why a checkout could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckoutError {
    /// The directory is missing or unreadable.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        message: String,
    },
    /// A file name is not valid UTF-8.
    #[error("{path}: file name is not valid UTF-8")]
    NonUtf8Path {
        /// The path.
        path: PathBuf,
    },
    /// A limit was exceeded.
    #[error("{path}: {message}")]
    Limit {
        /// The path.
        path: PathBuf,
        /// Which limit.
        message: String,
    },
}

/// Reads `<root>/clusters/<cluster>/` into a [`ClusterTree`]. Symlinks are recorded, never followed.
pub fn read_cluster_directory(
    root: &Path,
    cluster: &str,
    limits: &Limits,
) -> Result<ClusterTree, CheckoutError> {
    let dir = root.join("clusters").join(cluster);
    let mut entries = BTreeMap::new();
    let mut total = 0u64;
    visit(&dir, "", 0, limits, &mut entries, &mut total)?;
    Ok(ClusterTree::from_entries(cluster, entries))
}

fn io(path: &Path, e: std::io::Error) -> CheckoutError {
    CheckoutError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn visit(
    dir: &Path,
    prefix: &str,
    depth: usize,
    limits: &Limits,
    entries: &mut BTreeMap<String, TreeEntry>,
    total: &mut u64,
) -> Result<(), CheckoutError> {
    let limit = |message: String| CheckoutError::Limit {
        path: dir.to_owned(),
        message,
    };
    if depth > limits.max_tree_depth {
        return Err(limit(format!(
            "nested deeper than {} directories",
            limits.max_tree_depth
        )));
    }
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io(dir, e))?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let path = child.path();
        let name = child
            .file_name()
            .into_string()
            .map_err(|_| CheckoutError::NonUtf8Path { path: path.clone() })?;
        let relative = format!("{prefix}{name}");
        if entries.len() >= limits.max_files {
            return Err(limit(format!("more than {} files", limits.max_files)));
        }
        // symlink_metadata: a link is reported as a link, never followed out of the tree.
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        if meta.file_type().is_symlink() {
            entries.insert(relative, TreeEntry::Symlink);
        } else if meta.is_dir() {
            visit(
                &path,
                &format!("{relative}/"),
                depth + 1,
                limits,
                entries,
                total,
            )?;
        } else if meta.is_file() {
            let max = if relative == vworkspace_core::layout::MANIFEST_FILE {
                limits.max_manifest_bytes
            } else {
                limits.max_file_bytes
            };
            if meta.len() > max {
                return Err(CheckoutError::Limit {
                    path,
                    message: format!("{} bytes, over the limit of {max}", meta.len()),
                });
            }
            *total += meta.len();
            if *total > limits.max_total_bytes {
                return Err(limit(format!(
                    "more than {} bytes in all",
                    limits.max_total_bytes
                )));
            }
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            entries.insert(relative, TreeEntry::File(bytes));
        }
    }
    Ok(())
}

/// Reads `clusters/<cluster>/` as git will commit it: the blobs in the index (what `git add` stored,
/// after `core.autocrlf` and other clean filters), not the work tree's bytes, and only tracked
/// files (untracked and ignored files are never committed). Returns `None` when `root` is not a git
/// work tree. Refuses a tracked file whose work tree copy differs from the index, an untracked
/// file, or a conflict, under the cluster directory (`release.yaml` and `release.sigs/` excepted,
/// since `release` rewrites them): the manifest must list what the next commit will hold.
pub fn read_cluster_index(
    root: &Path,
    cluster: &str,
    limits: &Limits,
) -> Result<Option<ClusterTree>, CheckoutError> {
    let index = IndexReader {
        root,
        prefix: format!("clusters/{cluster}/"),
        limits,
    };
    let inside = index.git(&["rev-parse", "--is-inside-work-tree"])?;
    if !inside.status.success() || inside.stdout.trim_ascii() != b"true" {
        return Ok(None);
    }
    // Work tree and index must agree: `release` hashes the index, the author commits the work tree.
    index.check_work_tree()?;
    let staged = index.staged()?;
    let contents = index.blobs(&staged)?;
    let mut entries = BTreeMap::new();
    for file in staged {
        let entry = index.entry(&file, &contents)?;
        entries.insert(file.relative, entry);
    }
    Ok(Some(ClusterTree::from_entries(cluster, entries)))
}

/// One file of the index under the cluster directory: its path below it, mode and blob id.
struct Staged {
    relative: String,
    mode: String,
    id: String,
}

/// Reads one cluster directory of a work tree's index with `git`.
struct IndexReader<'a> {
    root: &'a Path,
    /// `clusters/<cluster>/`.
    prefix: String,
    limits: &'a Limits,
}

impl IndexReader<'_> {
    fn git(&self, args: &[&str]) -> Result<std::process::Output, CheckoutError> {
        std::process::Command::new("git")
            .arg("-C")
            .arg(self.root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| io(self.root, e))
    }

    fn limit(&self, message: String) -> CheckoutError {
        CheckoutError::Limit {
            path: self.root.join(&self.prefix),
            message,
        }
    }

    fn failed(&self, what: &str, out: &std::process::Output) -> CheckoutError {
        self.limit(format!(
            "git {what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }

    /// What `release` itself writes: the manifest and the signatures.
    fn is_release_output(&self, path: &str) -> bool {
        let prefix = &self.prefix;
        path == format!("{prefix}{}", vworkspace_core::layout::MANIFEST_FILE)
            || path.starts_with(&format!(
                "{prefix}{}",
                vworkspace_core::layout::SIGNATURES_DIR
            ))
    }

    /// Refuses untracked files and changes not staged under the cluster directory.
    fn check_work_tree(&self) -> Result<(), CheckoutError> {
        let status = self.git(&[
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--",
            &self.prefix,
        ])?;
        if !status.status.success() {
            return Err(self.failed("status", &status));
        }
        let mut problems = Vec::new();
        let mut records = status.stdout.split(|b| *b == 0);
        while let Some(record) = records.next() {
            let (Some(code), Some(path)) = (record.get(..2), record.get(3..)) else {
                continue;
            };
            // A rename or copy (`R`/`C` in either column) is followed by its source path as a field
            // of its own: it is not a record.
            if code.iter().any(|c| matches!(c, b'R' | b'C')) {
                records.next();
            }
            let path = String::from_utf8_lossy(path);
            if self.is_release_output(&path) {
                continue;
            }
            match code {
                b"??" => problems.push(format!("{path}: untracked; `git add` it or remove it")),
                [_, b' '] => {}
                _ => problems.push(format!(
                    "{path}: changed in the work tree but not staged; `git add` it (release hashes what git will commit)"
                )),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(self.limit(format!(
                "the work tree differs from the index:\n{}",
                problems.join("\n")
            )))
        }
    }

    /// The staged files under the cluster directory, within the depth and count limits; refuses a
    /// conflict.
    fn staged(&self) -> Result<Vec<Staged>, CheckoutError> {
        let listing = self.git(&["ls-files", "--stage", "-z", "--", &self.prefix])?;
        if !listing.status.success() {
            return Err(self.failed("ls-files", &listing));
        }
        let mut staged = Vec::new();
        for record in listing.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let text = std::str::from_utf8(record).map_err(|_| CheckoutError::NonUtf8Path {
                path: self.root.join(String::from_utf8_lossy(record).as_ref()),
            })?;
            let unexpected = || self.limit(format!("unexpected git ls-files output {text:?}"));
            let (meta, path) = text.split_once('\t').ok_or_else(unexpected)?;
            let fields: Vec<&str> = meta.split(' ').collect();
            let [mode, id, stage] = fields[..] else {
                return Err(unexpected());
            };
            if stage != "0" {
                return Err(self.limit(format!("{path}: unresolved merge conflict")));
            }
            let relative = path.strip_prefix(&self.prefix).unwrap_or(path).to_owned();
            if relative.matches('/').count() > self.limits.max_tree_depth {
                return Err(self.limit(format!(
                    "{path}: nested deeper than {} directories",
                    self.limits.max_tree_depth
                )));
            }
            staged.push(Staged {
                relative,
                mode: mode.to_owned(),
                id: id.to_owned(),
            });
            if staged.len() > self.limits.max_files {
                return Err(self.limit(format!("more than {} files", self.limits.max_files)));
            }
        }
        Ok(staged)
    }

    /// The blobs of the regular files, by id, in one `git cat-file --batch`.
    fn blobs(
        &self,
        staged: &[Staged],
    ) -> Result<std::collections::HashMap<String, Vec<u8>>, CheckoutError> {
        let blob_ids: Vec<&str> = staged
            .iter()
            .filter(|s| s.mode == "100644" || s.mode == "100755")
            .map(|s| s.id.as_str())
            .collect();
        if blob_ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let out = self.cat_file(&blob_ids)?;
        self.split_batch(&blob_ids, &out)
    }

    /// `git cat-file --batch` over `ids`: its whole output.
    fn cat_file(&self, ids: &[&str]) -> Result<Vec<u8>, CheckoutError> {
        use std::io::Write as _;
        let mut child = std::process::Command::new("git")
            .arg("-C")
            .arg(self.root)
            .args(["cat-file", "--batch"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| io(self.root, e))?;
        let input = ids.join("\n") + "\n";
        // Written from another thread while this one reads: git answers as it reads, and once its
        // output fills the pipe it stops reading, so writing everything first would never end.
        let stdin = child.stdin.take();
        let (written, out) = std::thread::scope(|scope| {
            let writer =
                scope.spawn(move || stdin.map(|mut stdin| stdin.write_all(input.as_bytes())));
            let out = child.wait_with_output();
            (writer.join(), out)
        });
        let out = out.map_err(|e| io(self.root, e))?;
        if !out.status.success() || !matches!(written, Ok(Some(Ok(())))) {
            return Err(self.failed("cat-file", &out));
        }
        Ok(out.stdout)
    }

    /// The blobs of a `git cat-file --batch` output, within the total size limit.
    fn split_batch(
        &self,
        ids: &[&str],
        out: &[u8],
    ) -> Result<std::collections::HashMap<String, Vec<u8>>, CheckoutError> {
        let mut contents = std::collections::HashMap::new();
        let mut rest = out;
        let mut total = 0u64;
        for id in ids {
            let newline = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| self.limit("truncated git cat-file output".into()))?;
            let header = String::from_utf8_lossy(&rest[..newline]).into_owned();
            let size: usize = header
                .strip_prefix(&format!("{id} blob "))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| self.limit(format!("unexpected git cat-file output {header:?}")))?;
            let body = rest
                .get(newline + 1..newline + 1 + size)
                .ok_or_else(|| self.limit("truncated git cat-file output".into()))?;
            total += size as u64;
            if total > self.limits.max_total_bytes {
                return Err(self.limit(format!(
                    "more than {} bytes in all",
                    self.limits.max_total_bytes
                )));
            }
            contents.insert(id.to_string(), body.to_vec());
            rest = rest.get(newline + 2 + size..).unwrap_or_default();
        }
        Ok(contents)
    }

    /// The tree entry of a staged file, its size within the limit.
    fn entry(
        &self,
        file: &Staged,
        contents: &std::collections::HashMap<String, Vec<u8>>,
    ) -> Result<TreeEntry, CheckoutError> {
        let (relative, id) = (&file.relative, &file.id);
        Ok(match file.mode.as_str() {
            "120000" => TreeEntry::Symlink,
            "160000" => TreeEntry::Submodule,
            _ => {
                // Two files with the same contents share one blob: look it up, never take it.
                let bytes = contents.get(id).cloned().ok_or_else(|| {
                    self.limit(format!("{}{relative}: blob {id} not read", self.prefix))
                })?;
                let max = if relative == vworkspace_core::layout::MANIFEST_FILE {
                    self.limits.max_manifest_bytes
                } else {
                    self.limits.max_file_bytes
                };
                if bytes.len() as u64 > max {
                    return Err(CheckoutError::Limit {
                        path: self.root.join(&self.prefix).join(relative),
                        message: format!("{} bytes, over the limit of {max}", bytes.len()),
                    });
                }
                TreeEntry::File(bytes)
            }
        })
    }
}
