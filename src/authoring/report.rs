//! What `verify` and `demo` print for a passing and a refused ref.

use std::io::Write;

use vworkspace_core::pipeline::{self, TrustConfig};

/// Writes the lines `verify` prints for a passing ref.
pub fn report_pass(
    verified: &pipeline::VerifiedIntent,
    config: &TrustConfig,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let commit = verified.commit();
    let release = verified.release();
    let intent = verified.intent();
    writeln!(
        out,
        "ok      commit {} signed by {} ({})",
        commit.id(),
        commit.signer().principal,
        commit.signer().fingerprint
    )?;
    let signers: Vec<&str> = release
        .signers()
        .iter()
        .map(|s| s.principal.as_str())
        .collect();
    writeln!(
        out,
        "ok      release serial {} for cluster {}, expires {}, signed by {} of {} required keys: {}",
        release.serial(),
        config.cluster,
        release.expires(),
        signers.len(),
        config.release.threshold,
        signers.join(", ")
    )?;
    writeln!(
        out,
        "ok      intent: {} ApplicationInstance(s), {} Operation(s), {} files covered by the release",
        intent.application_instances.len(),
        intent.operations.len(),
        release.manifest().files.len()
    )?;
    if config.identities.is_some() {
        writeln!(
            out,
            "ok      values: {} encrypted value(s) decrypt",
            verified.values_checked()
        )?;
    } else {
        writeln!(
            out,
            "skipped values: no --identity given; encrypted values were checked for form only"
        )?;
    }
    for note in verified.notes() {
        writeln!(out, "note    {note}")?;
    }
    Ok(())
}

/// A refused ref, as `verify` reports it: a bounded reason and one finding a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The reason, as in the `Ready` condition (`CommitSignatureInvalid`).
    pub reason: &'static str,
    /// What was refused, one finding a line.
    pub findings: Vec<String>,
    /// The commands that fix it, one a line.
    pub hints: Vec<String>,
}

impl From<&pipeline::PassError> for Refusal {
    fn from(refused: &pipeline::PassError) -> Self {
        Refusal {
            reason: refused.reason(),
            findings: refused.findings(),
            hints: Vec::new(),
        }
    }
}

impl From<&vworkspace_controller::Error> for Refusal {
    fn from(refused: &vworkspace_controller::Error) -> Self {
        Refusal {
            reason: refused.reason(),
            findings: refused.findings(),
            hints: Vec::new(),
        }
    }
}

impl Refusal {
    /// Adds the command that fixes the refusal, where one does (`release` after an edit, the
    /// cluster ids on a `--cluster` typo).
    pub fn with_hints(mut self, cluster: &str) -> Self {
        let any = |needle: &str| self.findings.iter().any(|f| f.contains(needle));
        if self.reason == vworkspace_core::reasons::RELEASE_INVALID
            && (any("does not match the directory") || any("release.yaml is missing"))
        {
            self.hints.push(format!(
                "after an edit, write and sign a fresh release, then commit it: `vworkspace-operator release --cluster {cluster} --key <your release key>` (a co-signer then runs it with --sign-only)"
            ));
        }
        if self.reason == vworkspace_core::reasons::RELEASE_INVALID
            && any("distinct trusted key(s)")
        {
            self.hints.push(format!(
                "collect the missing signatures: each release key holder runs `vworkspace-operator release --cluster {cluster} --key <their key> --sign-only`"
            ));
        }
        if self.reason == vworkspace_core::reasons::RELEASE_INVALID && any("expired at") {
            self.hints.push(format!(
                "`vworkspace-operator release --cluster {cluster} --key <your release key> --expires 30d`, co-sign, commit"
            ));
        }
        if any(&format!("has no directory clusters/{cluster}/")) {
            self.hints.push(
                "`git ls-tree --name-only HEAD clusters/` lists the cluster ids of the commit; check --cluster"
                    .to_owned(),
            );
        }
        self
    }

    /// The refusal on one line: a failed fetch reports the transport's whole chain of causes,
    /// in Debug form (`reqwest::Error { kind: Request, .. }`); what it says is its first line and its
    /// deepest cause: `fetching URL: Transport handshake failed: Connection refused`.
    pub fn one_line(mut self) -> Self {
        let lines: Vec<&str> = self
            .findings
            .iter()
            .map(|f| f.trim())
            .filter(|f| !f.is_empty() && *f != "Caused by:")
            .collect();
        let Some((first, causes)) = lines.split_first() else {
            return self;
        };
        let mut text = readable(first);
        if let Some(deepest) = causes.last() {
            let cause = readable(deepest.split_once(": ").map_or(*deepest, |(n, rest)| {
                if n.bytes().all(|b| b.is_ascii_digit()) {
                    rest
                } else {
                    deepest
                }
            }));
            if !cause.is_empty() && !text.contains(&cause) {
                text = format!("{text}: {cause}");
            }
        }
        self.findings = vec![text];
        self
    }
}

/// A Debug rendering reduced to its message: the `message: "..."`, or the last quoted string, of a
/// `Type { .. }` or `Type("..")` text; plain text as it is.
fn readable(text: &str) -> String {
    let Some(debug_at) = text.find(['{', '(']) else {
        return text.trim_matches('"').to_owned();
    };
    // Keep a plain prefix (`fetching URL: `) and reduce what follows.
    let (prefix, debug) = match text[..debug_at].rfind(": ") {
        Some(colon) => (&text[..colon + 2], &text[colon + 2..]),
        None => ("", text),
    };
    let quoted: Vec<&str> = debug.split('"').skip(1).step_by(2).collect();
    let message = debug
        .find("message: \"")
        .and_then(|at| debug[at + 10..].split('"').next())
        .or_else(|| quoted.last().copied());
    match message {
        Some(m) => format!("{prefix}{m}"),
        None => text.to_owned(),
    }
}

/// Writes the lines `verify` prints for a refused ref: one finding a line, then the fixes.
pub fn report_refusal(refused: &Refusal, out: &mut dyn Write) -> std::io::Result<()> {
    for finding in &refused.findings {
        writeln!(out, "refused {}: {finding}", refused.reason)?;
    }
    for hint in &refused.hints {
        writeln!(out, "fix     {hint}")?;
    }
    Ok(())
}

/// The `apiVersion` of the JSON documents `verify -o json` and `plan -o json` print for a
/// result (schema: docs/cli-output.md). Fields are only ever added within a version.
pub const JSON_API_VERSION: &str = "cli.vworkspace.io/v1";

/// The JSON document of a passing ref.
pub fn pass_json(verified: &pipeline::VerifiedIntent, config: &TrustConfig) -> serde_json::Value {
    let commit = verified.commit();
    let release = verified.release();
    serde_json::json!({
        "apiVersion": JSON_API_VERSION,
        "kind": "VerifyResult",
        "mode": "commit",
        "cluster": config.cluster,
        "result": "passed",
        "reason": null,
        "commit": {
            "id": commit.id(),
            "signer": commit.signer().principal,
            "fingerprint": commit.signer().fingerprint,
        },
        "release": {
            "serial": release.serial(),
            "expires": release.expires().to_string(),
            "digest": release.digest(),
            "threshold": config.release.threshold,
            "signers": release.signers().iter().map(|s| serde_json::json!({
                "principal": s.principal,
                "fingerprint": s.fingerprint,
            })).collect::<Vec<_>>(),
            "files": release.manifest().files.len(),
        },
        "validUntil": verified.valid_until().to_string(),
        "intent": {
            "applicationInstances": verified.intent().application_instances.len(),
            "operations": verified.intent().operations.len(),
        },
        "values": {
            "count": verified.values_checked(),
            "decrypted": config.identities.is_some(),
        },
        "notes": verified.notes(),
        "findings": [],
        "hints": [],
    })
}

/// The JSON document of a refused ref.
pub fn refusal_json(refused: &Refusal, cluster: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": JSON_API_VERSION,
        "kind": "VerifyResult",
        "cluster": cluster,
        "result": "refused",
        "reason": refused.reason,
        "findings": refused.findings,
        "hints": refused.hints,
    })
}
