//! What source-controller says about an instance's chart artifact, read from the `OCIRepository` the
//! operator wrote. When Flux refuses the artifact a release pinned (`spec.chart.digest`) or whose
//! signature it could not verify (`spec.verify`), helm-controller installs nothing and only says its
//! source is not ready; the instance says why, in its own documented reasons:
//!
//! | source-controller (Ready=False, this generation) | instance `Ready=False` reason |
//! |---|---|
//! | `OCIArtifactPullFailed` with `spec.ref.digest` set | `ChartDigestMismatch` |
//! | `VerificationError` (or `SourceVerified=False`) | `ChartVerificationFailed` |
//!
//! Flux's own reason and message follow in the instance's message (bounded).

use serde_json::Value;

use vworkspace_core::reasons::{CHART_DIGEST_MISMATCH, CHART_VERIFICATION_FAILED};

/// source-controller's reason for an OCI artifact it could not pull (`sourcev1.OCIPullFailedReason`).
pub const FLUX_OCI_PULL_FAILED: &str = "OCIArtifactPullFailed";
/// source-controller's reason for a signature it refused (`sourcev1.VerificationError`).
pub const FLUX_VERIFICATION_ERROR: &str = "VerificationError";
/// The longest part of Flux's message copied into the instance's.
const MAX_FLUX_MESSAGE: usize = 1024;

fn condition<'a>(source: &'a Value, kind: &str) -> Option<&'a Value> {
    source["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_FLUX_MESSAGE) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The instance's `Ready` (`False`, reason, message) when source-controller refused the chart
/// artifact for the source's current generation; `None` otherwise (the HelmRelease speaks).
pub fn refused(source: &Value) -> Option<(String, String, String)> {
    if source["kind"] != "OCIRepository" {
        return None;
    }
    let generation = source["metadata"]["generation"].as_i64()?;
    let current = |c: &Value| c["observedGeneration"].as_i64() == Some(generation);
    let ready = condition(source, "Ready").filter(|c| current(c) && c["status"] == "False");
    let verified_false =
        condition(source, "SourceVerified").filter(|c| current(c) && c["status"] == "False");
    let flux_reason = ready.and_then(|c| c["reason"].as_str()).unwrap_or_default();
    let flux_message = ready
        .or(verified_false)
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default();
    let url = source["spec"]["url"].as_str().unwrap_or_default();
    let digest = source["spec"]["ref"]["digest"].as_str();
    if flux_reason == FLUX_VERIFICATION_ERROR || verified_false.is_some() {
        let message = format!(
            "source-controller refused the signature of the chart {url}: {FLUX_VERIFICATION_ERROR}: {}; nothing is installed from it",
            bounded(flux_message)
        );
        return Some(("False".into(), CHART_VERIFICATION_FAILED.into(), message));
    }
    match digest {
        Some(digest) if flux_reason == FLUX_OCI_PULL_FAILED => {
            let message = format!(
                "source-controller cannot pull the chart {url}@{digest} the release pinned (the registry has no such manifest, or served other bytes): {FLUX_OCI_PULL_FAILED}: {}; nothing is installed from it",
                bounded(flux_message)
            );
            Some(("False".into(), CHART_DIGEST_MISMATCH.into(), message))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn source(digest: Option<&str>, conditions: Value) -> Value {
        let reference = match digest {
            Some(d) => json!({"digest": d}),
            None => json!({"tag": "1.0.0"}),
        };
        json!({
            "kind": "OCIRepository",
            "metadata": {"generation": 3},
            "spec": {"url": "oci://127.0.0.1:5000/charts/app", "ref": reference},
            "status": {"conditions": conditions},
        })
    }

    fn ready(status: &str, reason: &str, generation: i64) -> Value {
        json!({"type": "Ready", "status": status, "reason": reason, "observedGeneration": generation,
               "message": "failed to determine artifact digest: MANIFEST_UNKNOWN"})
    }

    #[test]
    fn flux_refusals_become_documented_reasons() {
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            (
                "pinned digest the registry lacks",
                source(
                    Some(DIGEST),
                    json!([ready("False", FLUX_OCI_PULL_FAILED, 3)]),
                ),
                Some(CHART_DIGEST_MISMATCH),
            ),
            (
                "a tag that cannot be pulled is Flux's business (the HelmRelease speaks)",
                source(None, json!([ready("False", FLUX_OCI_PULL_FAILED, 3)])),
                None,
            ),
            (
                "a refusal of an older generation is stale",
                source(
                    Some(DIGEST),
                    json!([ready("False", FLUX_OCI_PULL_FAILED, 2)]),
                ),
                None,
            ),
            (
                "signature refused",
                source(
                    Some(DIGEST),
                    json!([ready("False", FLUX_VERIFICATION_ERROR, 3)]),
                ),
                Some(CHART_VERIFICATION_FAILED),
            ),
            (
                "SourceVerified False alone",
                source(
                    None,
                    json!([{"type": "SourceVerified", "status": "False", "observedGeneration": 3,
                            "reason": FLUX_VERIFICATION_ERROR, "message": "no matching signatures"}]),
                ),
                Some(CHART_VERIFICATION_FAILED),
            ),
            (
                "ready",
                source(Some(DIGEST), json!([ready("True", "Succeeded", 3)])),
                None,
            ),
            ("no status yet", source(Some(DIGEST), json!([])), None),
        ];
        for (case, source, expected) in cases {
            let got = refused(&source);
            assert_eq!(
                got.as_ref().map(|(_, reason, _)| reason.as_str()),
                expected,
                "{case}"
            );
            if let Some((status, _, message)) = got {
                assert_eq!(status, "False", "{case}");
                assert!(
                    message.contains("oci://127.0.0.1:5000/charts/app"),
                    "{case}: {message}"
                );
                assert!(
                    message.contains("nothing is installed"),
                    "{case}: {message}"
                );
            }
        }
        let helm_repository = json!({"kind": "HelmRepository", "metadata": {"generation": 1}});
        assert_eq!(refused(&helm_repository), None);
        // Flux's message is copied bounded.
        let mut long = source(
            Some(DIGEST),
            json!([ready("False", FLUX_OCI_PULL_FAILED, 3)]),
        );
        long["status"]["conditions"][0]["message"] = json!("x".repeat(100_000));
        let (_, _, message) = refused(&long).expect("refused");
        assert!(message.len() < 2_000, "{}", message.len());
    }
}
