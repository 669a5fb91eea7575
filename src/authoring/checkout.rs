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
    let git = |args: &[&str]| -> Result<std::process::Output, CheckoutError> {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| io(root, e))
    };
    let inside = git(&["rev-parse", "--is-inside-work-tree"])?;
    if !inside.status.success() || inside.stdout.trim_ascii() != b"true" {
        return Ok(None);
    }
    let prefix = format!("clusters/{cluster}/");
    let limit = |message: String| CheckoutError::Limit {
        path: root.join(&prefix),
        message,
    };
    let failed = |what: &str, out: &std::process::Output| {
        limit(format!(
            "git {what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    };
    let is_release_output = |path: &str| {
        path == format!("{prefix}{}", vworkspace_core::layout::MANIFEST_FILE)
            || path.starts_with(&format!(
                "{prefix}{}",
                vworkspace_core::layout::SIGNATURES_DIR
            ))
    };
    // Work tree and index must agree: `release` hashes the index, the author commits the work tree.
    let status = git(&[
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=all",
        "--",
        &prefix,
    ])?;
    if !status.status.success() {
        return Err(failed("status", &status));
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
        if is_release_output(&path) {
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
    if !problems.is_empty() {
        return Err(limit(format!(
            "the work tree differs from the index:\n{}",
            problems.join("\n")
        )));
    }
    let listing = git(&["ls-files", "--stage", "-z", "--", &prefix])?;
    if !listing.status.success() {
        return Err(failed("ls-files", &listing));
    }
    let mut staged = Vec::new();
    for record in listing.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let text = std::str::from_utf8(record).map_err(|_| CheckoutError::NonUtf8Path {
            path: root.join(String::from_utf8_lossy(record).as_ref()),
        })?;
        let (meta, path) = text
            .split_once('\t')
            .ok_or_else(|| limit(format!("unexpected git ls-files output {text:?}")))?;
        let fields: Vec<&str> = meta.split(' ').collect();
        let [mode, id, stage] = fields[..] else {
            return Err(limit(format!("unexpected git ls-files output {text:?}")));
        };
        if stage != "0" {
            return Err(limit(format!("{path}: unresolved merge conflict")));
        }
        let relative = path.strip_prefix(&prefix).unwrap_or(path).to_owned();
        if relative.matches('/').count() > limits.max_tree_depth {
            return Err(limit(format!(
                "{path}: nested deeper than {} directories",
                limits.max_tree_depth
            )));
        }
        staged.push((relative, mode.to_owned(), id.to_owned()));
        if staged.len() > limits.max_files {
            return Err(limit(format!("more than {} files", limits.max_files)));
        }
    }
    // The blobs, in one `git cat-file --batch`.
    let blob_ids: Vec<&str> = staged
        .iter()
        .filter(|(_, mode, _)| mode == "100644" || mode == "100755")
        .map(|(_, _, id)| id.as_str())
        .collect();
    let mut contents = std::collections::HashMap::new();
    if !blob_ids.is_empty() {
        use std::io::Write as _;
        let mut child = std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["cat-file", "--batch"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| io(root, e))?;
        let input = blob_ids.join("\n") + "\n";
        // Written from another thread while this one reads: git answers as it reads, and once its
        // output fills the pipe it stops reading, so writing everything first would never end.
        let stdin = child.stdin.take();
        let (written, out) = std::thread::scope(|scope| {
            let writer =
                scope.spawn(move || stdin.map(|mut stdin| stdin.write_all(input.as_bytes())));
            let out = child.wait_with_output();
            (writer.join(), out)
        });
        let out = out.map_err(|e| io(root, e))?;
        if !out.status.success() || !matches!(written, Ok(Some(Ok(())))) {
            return Err(failed("cat-file", &out));
        }
        let mut rest = &out.stdout[..];
        let mut total = 0u64;
        for id in &blob_ids {
            let newline = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| limit("truncated git cat-file output".into()))?;
            let header = String::from_utf8_lossy(&rest[..newline]).into_owned();
            let size: usize = header
                .strip_prefix(&format!("{id} blob "))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| limit(format!("unexpected git cat-file output {header:?}")))?;
            let body = rest
                .get(newline + 1..newline + 1 + size)
                .ok_or_else(|| limit("truncated git cat-file output".into()))?;
            total += size as u64;
            if total > limits.max_total_bytes {
                return Err(limit(format!(
                    "more than {} bytes in all",
                    limits.max_total_bytes
                )));
            }
            contents.insert(id.to_string(), body.to_vec());
            rest = rest.get(newline + 2 + size..).unwrap_or_default();
        }
    }
    let mut entries = BTreeMap::new();
    for (relative, mode, id) in staged {
        let entry = match mode.as_str() {
            "120000" => TreeEntry::Symlink,
            "160000" => TreeEntry::Submodule,
            _ => {
                // Two files with the same contents share one blob: look it up, never take it.
                let bytes = contents
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| limit(format!("{prefix}{relative}: blob {id} not read")))?;
                let max = if relative == vworkspace_core::layout::MANIFEST_FILE {
                    limits.max_manifest_bytes
                } else {
                    limits.max_file_bytes
                };
                if bytes.len() as u64 > max {
                    return Err(CheckoutError::Limit {
                        path: root.join(&prefix).join(&relative),
                        message: format!("{} bytes, over the limit of {max}", bytes.len()),
                    });
                }
                TreeEntry::File(bytes)
            }
        };
        entries.insert(relative, entry);
    }
    Ok(Some(ClusterTree::from_entries(cluster, entries)))
}
