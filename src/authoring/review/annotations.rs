//! Every finding on the file and line it names: GitHub Actions workflow commands
//! (`::error file=...,line=...,title=...::message`) and GitLab's code-quality report (JSON).

use serde_json::json;

use super::model::{Finding, Level, Review};

/// GitHub's escaping of a command's message: `%`, CR and LF.
fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// GitHub's escaping of a command's property: the message's, and `:` and `,`.
fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

fn github_level(level: Level) -> &'static str {
    match level {
        Level::Refused | Level::Blocking => "error",
        Level::Warning => "warning",
        Level::Notice => "notice",
    }
}

fn github_line(f: &Finding) -> String {
    let mut properties = Vec::new();
    if !f.file.is_empty() {
        properties.push(format!("file={}", escape_property(&f.file)));
        if let Some(line) = f.line {
            properties.push(format!("line={line}"));
        }
    }
    properties.push(format!(
        "title={}",
        escape_property(&format!("{} ({})", f.title, f.level.as_str()))
    ));
    format!(
        "::{} {}::{}",
        github_level(f.level),
        properties.join(","),
        escape_data(f.short_message())
    )
}

/// `-o github`: one workflow command a finding, then a `::notice` with the summary.
pub fn github(review: &Review) -> String {
    let mut out: Vec<String> = review.findings.iter().map(github_line).collect();
    let blockers = review.blockers().count();
    out.push(format!(
        "::notice title=vworkspace review::{} cluster(s), {} finding(s), {blockers} blocking merge; head {} against base {}",
        review.clusters.len(),
        review.findings.len(),
        review.head.commit,
        escape_data(&review.base.reference),
    ));
    let mut text = out.join("\n");
    text.push('\n');
    text
}

fn gitlab_severity(level: Level) -> &'static str {
    match level {
        Level::Refused => "blocker",
        Level::Blocking => "critical",
        Level::Warning => "major",
        Level::Notice => "info",
    }
}

/// `-o gitlab`: GitLab's code-quality report, one issue a finding. The fingerprint is the SHA-256
/// of the finding's title, file, line and rank among findings of that title and place, not of its
/// message (which may hold a digest): the same finding keeps its identity from pipeline to pipeline.
pub fn gitlab(review: &Review) -> String {
    let mut seen: std::collections::BTreeMap<(String, String, Option<u64>), usize> =
        Default::default();
    let issues: Vec<serde_json::Value> = review
        .findings
        .iter()
        .map(|f| {
            let rank = seen
                .entry((f.title.clone(), f.file.clone(), f.line))
                .or_default();
            *rank += 1;
            let identity = format!("{}\0{}\0{:?}\0{rank}", f.title, f.file, f.line);
            let fingerprint = vworkspace_core::trust::release::sha256_digest(identity.as_bytes());
            json!({
                "description": f.message,
                "check_name": format!("vworkspace/{}", f.title),
                "fingerprint": fingerprint.trim_start_matches("sha256:"),
                "severity": gitlab_severity(f.level),
                "location": {
                    "path": if f.file.is_empty() { ".git" } else { f.file.as_str() },
                    "lines": {"begin": f.line.unwrap_or(1)},
                },
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&issues).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_properties_are_escaped() {
        let f = Finding {
            level: Level::Refused,
            title: "Intent, bad: x".into(),
            file: "clusters/a,b/x.yaml".into(),
            line: Some(3),
            message: "100% wrong\nsecond line".into(),
        };
        assert_eq!(
            github_line(&f),
            "::error file=clusters/a%2Cb/x.yaml,line=3,title=Intent%2C bad%3A x (refused)::100%25 wrong%0Asecond line"
        );
    }
}
