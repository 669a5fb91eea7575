//! Reading `clusters/<id>/` from a checkout on disk, for the authoring commands (`release`).
//!
//! The operator itself never reads a work tree: it verifies the object database (see [`crate::repository`]).
//! This reader applies the same limits and the same refusals, so that what an author releases is what
//! the operator will accept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::limits::Limits;
use crate::repository::{ClusterTree, TreeEntry};

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
            let max = if relative == crate::layout::MANIFEST_FILE {
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
