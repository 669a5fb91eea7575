//! The trust inputs of a review, and what a change does to them.
//!
//! The base is judged with the trust files it carries (`trust/commit_signers`,
//! `trust/release_signers`, optionally `trust/threshold`), or with the flags; the head always with
//! the base's. A change to `trust/` is its own section: it takes effect only once merged, so it needs
//! the approval of the base's signers, never of the keys it adds.

use std::collections::{BTreeMap, BTreeSet};

use ssh_key::HashAlg;
use vworkspace_core::trust::signers::AllowedSigners;

use super::model::{Finding, Level, TrustFileChange};

/// The base's commit signers file.
pub const COMMIT_SIGNERS: &str = "trust/commit_signers";
/// The base's release signers file.
pub const RELEASE_SIGNERS: &str = "trust/release_signers";
/// The base's release threshold: one positive integer.
pub const THRESHOLD: &str = "trust/threshold";

/// `trust/threshold`'s number.
pub fn parse_threshold(bytes: &[u8]) -> Result<usize, String> {
    let text = String::from_utf8_lossy(bytes);
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!(
                "{THRESHOLD}: expected one positive integer, found {:?}",
                text.trim()
            )
        })
}

/// `principal (SHA256:...)` for each key of an allowed_signers text.
fn keys(text: &[u8], path: &str) -> Option<BTreeSet<String>> {
    let signers = AllowedSigners::parse(&String::from_utf8_lossy(text), path).ok()?;
    Some(
        signers
            .entries()
            .iter()
            .map(|e| {
                let namespaces = e
                    .namespaces
                    .as_ref()
                    .map(|n| format!(" namespaces={}", n.join(",")))
                    .unwrap_or_default();
                format!(
                    "{} ({}){namespaces}",
                    e.principals.join(","),
                    e.key.fingerprint(HashAlg::Sha256)
                )
            })
            .collect(),
    )
}

fn details(path: &str, old: Option<&Vec<u8>>, new: Option<&Vec<u8>>) -> Vec<String> {
    if path == THRESHOLD {
        let show = |b: Option<&Vec<u8>>| {
            b.map_or("absent".to_owned(), |b| {
                String::from_utf8_lossy(b).trim().to_owned()
            })
        };
        return vec![format!("threshold {} -> {}", show(old), show(new))];
    }
    let empty = Vec::new();
    match (
        keys(old.unwrap_or(&empty), path),
        keys(new.unwrap_or(&empty), path),
    ) {
        (Some(a), Some(b)) => {
            let mut out: Vec<String> = b.difference(&a).map(|k| format!("+ key {k}")).collect();
            out.extend(a.difference(&b).map(|k| format!("- key {k}")));
            if out.is_empty() {
                out.push("same keys; comments or order changed".to_owned());
            }
            out
        }
        _ => vec!["changed (not an allowed_signers file)".to_owned()],
    }
}

/// Every file under `trust/` that differs, by path.
pub fn changes(
    base: &BTreeMap<String, Vec<u8>>,
    head: &BTreeMap<String, Vec<u8>>,
) -> Vec<TrustFileChange> {
    let paths: BTreeSet<&String> = base.keys().chain(head.keys()).collect();
    paths
        .into_iter()
        .filter_map(|path| {
            let (old, new) = (base.get(path), head.get(path));
            let status = match (old, new) {
                (None, Some(_)) => "added",
                (Some(_), None) => "removed",
                (Some(a), Some(b)) if a != b => "changed",
                _ => return None,
            };
            Some(TrustFileChange {
                path: path.clone(),
                status,
                details: details(path, old, new),
            })
        })
        .collect()
}

/// One warning per changed trust file, on its first line: who must approve it.
pub fn findings(
    changes: &[TrustFileChange],
    approvers: &[String],
    threshold: usize,
) -> Vec<Finding> {
    changes
        .iter()
        .map(|c| Finding {
            // Blocking: only the base's signers may approve it, and the tool cannot see approvals.
            level: Level::Blocking,
            title: "Trust files".to_owned(),
            file: c.path.clone(),
            line: (c.status != "removed").then_some(1),
            message: format!(
                "{} {}: {}; takes effect only once merged, the head is judged with the base's trust files; needs approval by the base's release signers ({threshold} of {})",
                c.path,
                c.status,
                c.details.join("; "),
                approvers.join(", ")
            ),
        })
        .collect()
}
