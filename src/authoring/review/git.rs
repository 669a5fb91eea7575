//! What a review reads from a commit outside its cluster directories: the cluster ids under
//! `clusters/` and the trust files under `trust/`, through `git` (as `release` reads the index).
//! Bounded: at most [`MAX_TRUST_FILES`] files of at most [`MAX_TRUST_FILE_BYTES`] each.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::super::CliError;
use super::super::inputs::usage;

/// The directory of trust files a base branch carries (signers, threshold).
pub const TRUST_DIR: &str = "trust/";
/// Most files read under `trust/`.
pub const MAX_TRUST_FILES: usize = 64;
/// Largest trust file read.
pub const MAX_TRUST_FILE_BYTES: u64 = 1024 * 1024;
/// Most cluster directories reviewed at once.
pub const MAX_CLUSTERS: usize = 1024;

fn git(root: &Path, args: &[&str]) -> Result<Output, CliError> {
    Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| usage(format!("git {}: {e}", args.join(" "))))
}

fn lines_of(out: &Output) -> Vec<String> {
    out.stdout
        .split(|b| *b == 0)
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

/// The cluster ids of `commit`: the directories under `clusters/`.
pub fn cluster_ids(root: &Path, commit: &str) -> Result<Vec<String>, CliError> {
    let out = git(
        root,
        &["ls-tree", "-z", "-d", "--name-only", commit, "clusters/"],
    )?;
    if !out.status.success() {
        return Err(usage(format!(
            "git ls-tree {commit} clusters/: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let ids: Vec<String> = lines_of(&out)
        .into_iter()
        .filter_map(|p| p.strip_prefix("clusters/").map(str::to_owned))
        .collect();
    if ids.len() > MAX_CLUSTERS {
        return Err(usage(format!(
            "commit {commit} has more than {MAX_CLUSTERS} cluster directories; review one with --cluster"
        )));
    }
    Ok(ids)
}

/// Every regular file under `trust/` of `commit`, path -> bytes.
pub fn trust_files(root: &Path, commit: &str) -> Result<BTreeMap<String, Vec<u8>>, CliError> {
    let out = git(root, &["ls-tree", "-r", "-z", "-l", commit, TRUST_DIR])?;
    if !out.status.success() {
        return Err(usage(format!(
            "git ls-tree {commit} {TRUST_DIR}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut files = BTreeMap::new();
    for record in lines_of(&out) {
        // `<mode> blob <id> <size>\t<path>`
        let Some((meta, path)) = record.split_once('\t') else {
            continue;
        };
        let fields: Vec<&str> = meta.split_whitespace().collect();
        let [mode, "blob", id, size] = fields[..] else {
            continue;
        };
        if mode != "100644" && mode != "100755" {
            continue;
        }
        if files.len() >= MAX_TRUST_FILES {
            return Err(usage(format!(
                "commit {commit}: more than {MAX_TRUST_FILES} files under {TRUST_DIR}"
            )));
        }
        let size: u64 = size.parse().unwrap_or(u64::MAX);
        if size > MAX_TRUST_FILE_BYTES {
            return Err(usage(format!(
                "{path} at {commit}: {size} bytes, over the limit of {MAX_TRUST_FILE_BYTES}"
            )));
        }
        let blob = git(root, &["cat-file", "blob", id])?;
        if !blob.status.success() {
            return Err(usage(format!("{path} at {commit}: cannot be read")));
        }
        files.insert(path.to_owned(), blob.stdout);
    }
    Ok(files)
}
