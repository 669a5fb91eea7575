//! The review as text lines (`diff`'s style) and as the `ReviewResult` JSON document
//! (docs/cli-output.md).

use serde_json::{Value, json};
use vworkspace_core::review::intent_diff::{
    FieldChange, IntentDiff, ObjectChange, ValueChange, ValueChangeKind,
};
use vworkspace_core::review::release_state::ReleaseState;

use super::judge::signature_summary;
use super::model::{BaseVerdict, ClusterReview, CommitState, Review};

/// The first 12 characters of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// One field change as `diff` prints it.
pub fn field_line(f: &FieldChange) -> String {
    match (&f.from, &f.to) {
        (Some(_), Some(b)) if f.secret => format!("~ {}: {b} (ciphertext changed)", f.path),
        (Some(a), Some(b)) => format!("~ {}: {a} -> {b}", f.path),
        (None, Some(b)) => format!("+ {}: {b}", f.path),
        (Some(a), None) => format!("- {}: {a}", f.path),
        (None, None) => format!("~ {}", f.path),
    }
}

/// `added`, `rotated`, `removed`.
pub fn value_kind(kind: ValueChangeKind) -> &'static str {
    match kind {
        ValueChangeKind::Added => "added",
        ValueChangeKind::Rotated => "rotated",
        ValueChangeKind::Removed => "removed",
    }
}

/// One value change as a line: where, what, copied from where, bound to what.
pub fn value_line(v: &ValueChange, cluster: &ClusterReview) -> String {
    let mut line = format!("{}: <redacted> {}", v.at, value_kind(v.kind));
    if let Some(from) = &v.copied_from {
        line.push_str(&format!("; same ciphertext as {from} (copied)"));
    }
    let at = v.at.to_string();
    if let Some((_, binding)) = cluster.bindings.iter().find(|(place, _)| *place == at) {
        line.push_str(&format!("; {binding}"));
    }
    line
}

/// The commit's signature in words.
pub fn commit_line(commit: &CommitState) -> String {
    match commit {
        CommitState::Signed {
            principal,
            fingerprint,
        } => format!("signed by {principal} ({fingerprint})"),
        CommitState::Unsigned => "not signed".to_owned(),
        CommitState::NotTrusted(why) => format!("signature not trusted: {why}"),
    }
}

/// The head release in words: serial, expiry, signatures.
pub fn release_line(cluster: &ClusterReview) -> String {
    let Some(release) = &cluster.release else {
        return "no directory in the head".to_owned();
    };
    let Some(manifest) = &release.manifest else {
        return "no readable release.yaml".to_owned();
    };
    let base = match cluster.base_serial {
        Some(s) => format!(" (base {s})"),
        None => " (new cluster)".to_owned(),
    };
    let expires = release
        .expires
        .map_or_else(|| manifest.expires.clone(), |e| e.to_string());
    format!(
        "serial {}{base}, expires {expires}, {}",
        manifest.serial,
        signature_summary(release)
    )
}

/// The base in words.
pub fn base_line(cluster: &ClusterReview) -> String {
    match &cluster.base {
        BaseVerdict::Verified { serial } => format!("verified, release serial {serial}"),
        BaseVerdict::Refused { reason, .. } => format!("refused ({reason})"),
        BaseVerdict::Absent => "absent (the head adds this cluster)".to_owned(),
    }
}

/// Objects of one kind of change.
pub fn of_change(
    diff: &IntentDiff,
    want: fn(&ObjectChange) -> bool,
) -> impl Iterator<Item = &vworkspace_core::review::intent_diff::ObjectDiff> {
    diff.objects.iter().filter(move |o| want(&o.change))
}

/// Whether an object change makes an Operation run: created, or its spec changed (a new run).
pub fn runs(o: &vworkspace_core::review::intent_diff::ObjectDiff) -> bool {
    o.object.kind == "Operation"
        && match &o.change {
            ObjectChange::Created => true,
            ObjectChange::Changed(fields) => fields.iter().any(|f| f.path.starts_with("spec")),
            ObjectChange::Removed => false,
        }
}

fn cluster_text(c: &ClusterReview, out: &mut Vec<String>) {
    out.push(format!("cluster   {}: base {}", c.cluster, base_line(c)));
    out.push(format!("release   {}: {}", c.cluster, release_line(c)));
    for o in &c.diff.objects {
        let verb = match &o.change {
            ObjectChange::Created => "create   ",
            ObjectChange::Changed(_) => "update   ",
            ObjectChange::Removed => "prune    ",
        };
        out.push(format!("{verb} {}", o.object));
        if let ObjectChange::Changed(fields) = &o.change {
            out.extend(
                fields
                    .iter()
                    .map(|f| format!("          {}", field_line(f))),
            );
        }
        if runs(o) {
            out.push(format!("run       {} (an Operation runs once)", o.object));
        }
    }
    for v in &c.diff.values {
        out.push(format!("value     {}", value_line(v, c)));
    }
    out.push(format!(
        "unchanged {} object(s) in cluster {}",
        c.diff.unchanged, c.cluster
    ));
}

/// The text report.
pub fn text(review: &Review) -> String {
    let mut out = vec![format!(
        "review    base {} ({}) -> head {} ({}); trust inputs from {}",
        review.base.reference,
        short(&review.base.commit),
        review.head.reference,
        short(&review.head.commit),
        trust_source(review)
    )];
    out.push(format!("commit    {}", commit_line(&review.commit)));
    for c in &review.clusters {
        cluster_text(c, &mut out);
    }
    for t in &review.trust_files {
        out.push(format!(
            "trust     {} {}: {}",
            t.path,
            t.status,
            t.details.join("; ")
        ));
    }
    for f in &review.findings {
        let at = match (f.file.is_empty(), f.line) {
            (true, _) => String::new(),
            (false, Some(line)) => format!("{}:{line}: ", f.file),
            (false, None) => format!("{}: ", f.file),
        };
        out.push(format!(
            "{:<9} {}: {at}{}",
            f.level.as_str(),
            f.title,
            f.message
        ));
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Where the trust inputs came from, in words.
pub fn trust_source(review: &Review) -> String {
    match review.trust_source {
        "base" => format!("the base's trust/ files ({})", review.base.reference),
        _ => "the flags".to_owned(),
    }
}

fn release_json(release: &ReleaseState) -> Value {
    json!({
        "serial": release.manifest.as_ref().map(|m| m.serial),
        "expires": release.expires.map(|e| e.to_string()),
        "digest": release.digest,
        "threshold": release.threshold,
        "signedBy": release.signed_by.iter().map(|s| json!({"principal": s.principal, "fingerprint": s.fingerprint})).collect::<Vec<_>>(),
        "missing": release.missing,
        "complete": release.complete(),
        "problems": release.problems.iter().map(|(_, p)| p.to_string()).collect::<Vec<_>>(),
    })
}

fn cluster_json(c: &ClusterReview) -> Value {
    let objects = |want: fn(&ObjectChange) -> bool| {
        of_change(&c.diff, want)
            .map(|o| json!({"object": o.object.to_string(), "file": format!("clusters/{}/{}", c.cluster, o.source_path)}))
            .collect::<Vec<_>>()
    };
    let (verdict, serial, reason, findings) = match &c.base {
        BaseVerdict::Verified { serial } => ("verified", Some(*serial), None, Vec::new()),
        BaseVerdict::Refused { reason, findings } => {
            ("refused", c.base_serial, Some(*reason), findings.clone())
        }
        BaseVerdict::Absent => ("absent", None, None, Vec::new()),
    };
    json!({
        "cluster": c.cluster,
        "base": {"verdict": verdict, "serial": serial, "reason": reason, "findings": findings},
        "head": {
            "present": c.release.is_some(),
            "checks": if c.checks_passed { "passed" } else { "refused" },
            "release": c.release.as_ref().map(release_json),
        },
        "create": objects(|c| matches!(c, ObjectChange::Created)),
        "update": of_change(&c.diff, |c| matches!(c, ObjectChange::Changed(_))).map(|o| {
            let ObjectChange::Changed(fields) = &o.change else { return Value::Null };
            json!({
                "object": o.object.to_string(),
                "file": format!("clusters/{}/{}", c.cluster, o.source_path),
                "fields": fields.iter().map(|f| json!({"path": f.path, "from": f.from, "to": f.to, "secret": f.secret})).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
        "prune": objects(|c| matches!(c, ObjectChange::Removed)),
        "run": c.diff.objects.iter().filter(|o| runs(o)).map(|o| o.object.to_string()).collect::<Vec<_>>(),
        "unchanged": c.diff.unchanged,
        "values": c.diff.values.iter().map(|v| json!({
            "at": v.at.to_string(),
            "file": format!("clusters/{}/{}", c.cluster, v.source_path),
            "change": value_kind(v.kind),
            "copiedFrom": v.copied_from.as_ref().map(ToString::to_string),
            "binding": c.bindings.iter().find(|(p, _)| *p == v.at.to_string()).map(|(_, b)| b),
        })).collect::<Vec<_>>(),
    })
}

/// The `ReviewResult` document.
pub fn json(review: &Review) -> String {
    let (state, signer, fingerprint, why) = match &review.commit {
        CommitState::Signed {
            principal,
            fingerprint,
        } => ("signed", Some(principal), Some(fingerprint), None),
        CommitState::Unsigned => ("unsigned", None, None, None),
        CommitState::NotTrusted(why) => ("notTrusted", None, None, Some(why)),
    };
    let result = if review.refused() {
        "refused"
    } else if review.blockers().next().is_some() {
        "blocked"
    } else {
        "ready"
    };
    let doc = json!({
        "apiVersion": crate::authoring::report::JSON_API_VERSION,
        "kind": "ReviewResult",
        "base": {"ref": review.base.reference, "commit": review.base.commit},
        "head": {"ref": review.head.reference, "commit": review.head.commit},
        "trustSource": review.trust_source,
        "result": result,
        "changed": review.changed(),
        "commit": {"state": state, "signer": signer, "fingerprint": fingerprint, "why": why},
        "clusters": review.clusters.iter().map(cluster_json).collect::<Vec<_>>(),
        "trustFiles": review.trust_files.iter().map(|t| json!({"path": t.path, "status": t.status, "details": t.details})).collect::<Vec<_>>(),
        "approvers": {"releaseSigners": review.base_release_signers, "threshold": review.threshold},
        "findings": review.findings.iter().map(|f| json!({
            "level": f.level.as_str(), "title": f.title, "file": f.file, "line": f.line, "message": f.message,
        })).collect::<Vec<_>>(),
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}
