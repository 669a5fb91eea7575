//! `-o markdown`: the pull-request comment. Read in ten seconds: a summary line, a table per
//! namespace, field diffs collapsed in `<details>`, the trust state, what blocks merging. Stable: it
//! starts with [`MARKER`] (a bot finds its own comment by it and edits it), and every list is in a
//! fixed order, so the same change renders byte for byte the same.

use std::collections::BTreeMap;

use vworkspace_core::review::intent_diff::{ObjectChange, ObjectDiff};

use super::model::{ClusterReview, Level, Review};
use super::render::{
    base_line, commit_line, field_line, release_line, runs, short, trust_source, value_line,
};

/// The hidden first line of every comment.
pub const MARKER: &str = "<!-- vworkspace-operator:review -->";

/// Text safe in a Markdown table cell or list item: no pipes, no HTML, one line.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\n', '\r'], " ")
}

fn counts(review: &Review) -> String {
    let (mut create, mut update, mut prune, mut run) = (0, 0, 0, 0);
    for c in &review.clusters {
        for o in &c.diff.objects {
            match o.change {
                ObjectChange::Created => create += 1,
                ObjectChange::Changed(_) => update += 1,
                ObjectChange::Removed => prune += 1,
            }
            if runs(o) {
                run += 1;
            }
        }
    }
    format!("{create} to create, {update} to change, {prune} to prune, {run} Operation(s) to run")
}

fn summary(review: &Review) -> String {
    let blockers = review.blockers().count();
    let (icon, verdict) = if review.refused() {
        ("❌", "refused".to_owned())
    } else if blockers > 0 {
        ("⏳", format!("{blockers} thing(s) block merging"))
    } else {
        ("✅", "ready to merge".to_owned())
    };
    let counted = if review.refused() {
        "the head is refused: what it would change is shown once it passes".to_owned()
    } else {
        counts(review)
    };
    format!(
        "### {icon} vworkspace review: {verdict}\n\n**{counted}** · {} cluster(s) · head `{}` against base `{}` (`{}`)",
        review.clusters.len(),
        short(&review.head.commit),
        cell(&review.base.reference),
        short(&review.base.commit)
    )
}

fn verb(o: &ObjectDiff) -> &'static str {
    match (&o.change, runs(o)) {
        (ObjectChange::Created, true) => "🟢 create, ▶ runs",
        (ObjectChange::Created, false) => "🟢 create",
        (ObjectChange::Changed(_), true) => "🟡 update, ▶ runs",
        (ObjectChange::Changed(_), false) => "🟡 update",
        (ObjectChange::Removed, _) => "🔴 prune",
    }
}

fn namespace_tables(c: &ClusterReview, out: &mut Vec<String>) {
    let mut by_namespace: BTreeMap<&str, Vec<&ObjectDiff>> = BTreeMap::new();
    for o in &c.diff.objects {
        by_namespace.entry(&o.object.namespace).or_default().push(o);
    }
    for (namespace, objects) in by_namespace {
        out.push(format!("\n**`{}` / `{namespace}`**\n", c.cluster));
        out.push("| change | kind | name | fields |".to_owned());
        out.push("|---|---|---|---|".to_owned());
        for o in &objects {
            let fields = match &o.change {
                ObjectChange::Changed(f) => f.len().to_string(),
                _ => String::new(),
            };
            out.push(format!(
                "| {} | {} | `{}` | {fields} |",
                verb(o),
                o.object.kind,
                cell(&o.object.name)
            ));
        }
        for o in objects {
            let ObjectChange::Changed(fields) = &o.change else {
                continue;
            };
            out.push(format!(
                "\n<details><summary>{} <code>{}/{}</code>: {} field(s)</summary>\n\n```diff",
                o.object.kind,
                cell(&o.object.namespace),
                cell(&o.object.name),
                fields.len()
            ));
            for f in fields {
                // `diff` highlighting: `+` green, `-` red; a change shows both lines.
                match (&f.from, &f.to) {
                    (Some(a), Some(b)) if !f.secret => {
                        out.push(format!("- {}: {a}", f.path));
                        out.push(format!("+ {}: {b}", f.path));
                    }
                    _ => out.push(field_line(f).replacen("~ ", "! ", 1)),
                }
            }
            out.push("```\n</details>".to_owned());
        }
    }
}

fn trust_section(review: &Review, out: &mut Vec<String>) {
    out.push("\n#### Trust".to_owned());
    out.push(format!(
        "- trust inputs: {}; the head is never judged with its own",
        cell(&trust_source(review))
    ));
    out.push(format!(
        "- head commit: {}",
        cell(&commit_line(&review.commit))
    ));
    for c in &review.clusters {
        out.push(format!(
            "- `{}`: release {}; base {}",
            c.cluster,
            cell(&release_line(c)),
            cell(&base_line(c))
        ));
        for v in &c.diff.values {
            out.push(format!("  - value {}", cell(&value_line(v, c))));
        }
    }
    if review.trust_files.is_empty() {
        return;
    }
    out.push(format!(
        "\n#### ⚠ Trust files changed: needs the base's signers ({} of {})\n",
        review.threshold,
        cell(&review.base_release_signers.join(", "))
    ));
    for t in &review.trust_files {
        out.push(format!("- `{}` {}", cell(&t.path), t.status));
        for d in &t.details {
            out.push(format!("  - {}", cell(d)));
        }
    }
}

fn blockers_section(review: &Review, out: &mut Vec<String>) {
    let notes: Vec<_> = review
        .findings
        .iter()
        .filter(|f| matches!(f.level, Level::Warning | Level::Notice))
        .collect();
    if review.blockers().next().is_some() {
        out.push("\n#### Blocks merging\n".to_owned());
        for f in review.blockers() {
            let at = match f.line {
                Some(line) if !f.file.is_empty() => format!("`{}:{line}` ", f.file),
                _ if !f.file.is_empty() => format!("`{}` ", f.file),
                _ => String::new(),
            };
            let mark = if f.level == Level::Refused {
                "❌"
            } else {
                "⏳"
            };
            out.push(format!(
                "- [ ] {mark} **{}** {at}{}",
                cell(&f.title),
                cell(&f.message)
            ));
        }
    }
    if !notes.is_empty() {
        out.push("\n#### For the reviewer\n".to_owned());
        for f in notes {
            out.push(format!(
                "- **{}** `{}`: {}",
                cell(&f.title),
                f.file,
                cell(&f.message)
            ));
        }
    }
}

/// The comment.
pub fn comment(review: &Review) -> String {
    let mut out = vec![MARKER.to_owned(), summary(review)];
    for c in &review.clusters {
        namespace_tables(c, &mut out);
    }
    trust_section(review, &mut out);
    blockers_section(review, &mut out);
    let mut text = out.join("\n");
    text.push('\n');
    text
}
