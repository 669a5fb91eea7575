//! Which file and line a finding names: refusals name their file first (`clusters/<id>/<path>: ...`),
//! then often a field (`spec.values.a.b: ...`) or a place (`at line 3, column 5`); the field's line
//! is read from the head's file ([`vworkspace_core::review::spans`]).

use vworkspace_core::limits::Limits;
use vworkspace_core::repository::{ClusterTree, TreeEntry};
use vworkspace_core::review::release_state::Severity;
use vworkspace_core::review::spans;
use vworkspace_core::trust::release::{MANIFEST_FILE, ReleaseError};

use super::model::{Finding, Level};

/// The line of `field` in the file `relative` (to the cluster directory) of `tree`.
pub fn field_line(tree: Option<&ClusterTree>, relative: &str, field: &str) -> Option<u64> {
    let Some(TreeEntry::File(bytes)) = tree?.entries().get(relative) else {
        return None;
    };
    let text = std::str::from_utf8(bytes).ok()?;
    spans::line_of(&spans::field_lines(text, &Limits::default()), field)
}

/// `... at line N, column C ...` in a message.
fn line_in_message(message: &str) -> Option<u64> {
    let at = message.find(" at line ")?;
    let digits: String = message[at + 9..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A finding from one line of a refusal (`clusters/<id>/<file>: [<field>: ]<what>`).
pub fn from_refusal_line(
    level: Level,
    title: &str,
    line: &str,
    cluster: &str,
    tree: Option<&ClusterTree>,
) -> Finding {
    let prefix = format!("clusters/{cluster}/");
    let (file, rest) = match line.split_once(": ") {
        Some((file, rest)) if file.starts_with(&prefix) => (file.to_owned(), rest),
        _ => (String::new(), line),
    };
    let relative = file.strip_prefix(&prefix).unwrap_or_default();
    let field = rest
        .split_once(": ")
        .map(|(f, _)| f)
        .filter(|f| !f.contains(' ') && (f.starts_with("spec") || f.starts_with("metadata")));
    let at = line_in_message(rest)
        .or_else(|| field.and_then(|f| field_line(tree, relative, f)))
        .or_else(|| (!file.is_empty() && !relative.ends_with('/')).then_some(1));
    Finding {
        level,
        title: title.to_owned(),
        file: if relative.ends_with('/') || relative.is_empty() {
            file.trim_end_matches('/').to_owned()
        } else {
            file
        },
        line: at,
        message: line.to_owned(),
    }
}

/// The findings of one release problem: its file, and the field of `release.yaml` it is about.
pub fn from_release_problem(
    severity: Severity,
    problem: &ReleaseError,
    cluster: &str,
    tree: Option<&ClusterTree>,
    waiting: &str,
) -> Vec<Finding> {
    let level = match severity {
        Severity::Refused => Level::Refused,
        Severity::Blocking => Level::Blocking,
    };
    let manifest = format!("clusters/{cluster}/{MANIFEST_FILE}");
    let at_field = |field: &str| field_line(tree, MANIFEST_FILE, field).or(Some(1));
    let one = |file: String, line: Option<u64>, message: String| Finding {
        level,
        title: "Release".to_owned(),
        file,
        line,
        message,
    };
    match problem {
        ReleaseError::Files { problems, .. } => problems
            .iter()
            .map(|p| {
                let path = p.split_once(": ").map_or(p.as_str(), |(path, _)| path);
                let present = tree.is_some_and(|t| t.entries().contains_key(path));
                one(
                    format!("clusters/{cluster}/{path}"),
                    present.then_some(1),
                    format!("clusters/{cluster}/{p}; write and sign a fresh release"),
                )
            })
            .collect(),
        ReleaseError::Signature { file, .. } | ReleaseError::SignatureFile { file, .. } => {
            vec![one(
                format!("clusters/{cluster}/{file}"),
                Some(1),
                problem.to_string(),
            )]
        }
        ReleaseError::BelowThreshold { .. } => {
            vec![one(manifest, at_field("serial"), waiting.to_owned())]
        }
        ReleaseError::WrongCluster { .. } => {
            vec![one(manifest, at_field("cluster"), problem.to_string())]
        }
        ReleaseError::Rollback { .. } | ReleaseError::BelowFloor { .. } => {
            vec![one(manifest, at_field("serial"), problem.to_string())]
        }
        ReleaseError::Expired { .. } | ReleaseError::ValidityTooLong { .. } => {
            vec![one(manifest, at_field("expires"), problem.to_string())]
        }
        ReleaseError::MissingManifest { .. } => vec![one(manifest, None, problem.to_string())],
        other => vec![one(
            manifest,
            line_in_message(&other.to_string()).or(Some(1)),
            other.to_string(),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_value_refusal_lands_on_its_field() {
        let mut entries = BTreeMap::new();
        entries.insert(
            "namespaces/a/applicationinstances/x.yaml".to_owned(),
            TreeEntry::File(b"kind: X\nspec:\n  values:\n    token: abc\n".to_vec()),
        );
        let tree = ClusterTree::from_entries("demo", entries);
        let f = from_refusal_line(
            Level::Refused,
            "ValuesInvalid",
            "clusters/demo/namespaces/a/applicationinstances/x.yaml: spec.values.token: a literal credential",
            "demo",
            Some(&tree),
        );
        assert_eq!(
            f.file,
            "clusters/demo/namespaces/a/applicationinstances/x.yaml"
        );
        assert_eq!(f.line, Some(4));
        let g = from_refusal_line(
            Level::Refused,
            "IntentInvalid",
            "clusters/demo/namespaces/a/applicationinstances/x.yaml: duplicate key \"a\" at line 7, column 3",
            "demo",
            Some(&tree),
        );
        assert_eq!(g.line, Some(7));
        let h = from_refusal_line(Level::Refused, "X", "something general", "demo", None);
        assert_eq!((h.file.as_str(), h.line), ("", None));
    }
}
