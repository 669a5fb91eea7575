//! Chart provenance: `spec.chart.digest` (an OCI manifest digest the release's signers approve) and
//! the `Cluster` policy `requireChartDigests` that makes it mandatory.
//!
//! A digest is judged strictly (algorithm, length, lowercase hex: what the OCI image spec writes and
//! Flux's `OCIRepository.spec.ref.digest` takes) because a lenient form could name two artifacts to
//! two readers. Only `oci://` charts can be pinned: a Helm repository (`https://`) serves a chart by
//! name and version from an index its host can rewrite, and Flux has no digest pin for it.

use super::{Intent, IntentError, IntentErrorKind, IntentErrors, invalid};
use crate::crd::ChartRef;

/// The only digest algorithm accepted (OCI registries address manifests by SHA-256).
pub const DIGEST_ALGORITHM: &str = "sha256";
/// Hex digits of a SHA-256 digest.
pub const DIGEST_HEX_LEN: usize = 64;

/// Why `digest` is not `sha256:<64 lowercase hex>`, if it is not.
pub fn digest_problem(digest: &str) -> Option<String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Some(format!(
            "{:?} must be {DIGEST_ALGORITHM}:<{DIGEST_HEX_LEN} hex digits> (an OCI manifest digest)",
            shorten(digest)
        ));
    };
    if algorithm != DIGEST_ALGORITHM {
        return Some(format!(
            "algorithm {:?} is not accepted: only {DIGEST_ALGORITHM} (an OCI manifest digest, {DIGEST_ALGORITHM}:<{DIGEST_HEX_LEN} hex digits>)",
            shorten(algorithm)
        ));
    }
    if let Some((at, c)) = hex
        .char_indices()
        .find(|(_, c)| !matches!(c, '0'..='9' | 'a'..='f'))
    {
        return Some(format!(
            "{c:?} at position {} of the {DIGEST_ALGORITHM} digest: expected lowercase hex digits (0-9, a-f)",
            DIGEST_ALGORITHM.len() + 1 + at
        ));
    }
    if hex.len() != DIGEST_HEX_LEN {
        return Some(format!(
            "{DIGEST_ALGORITHM} digest has {} characters after \"{DIGEST_ALGORITHM}:\", expected {DIGEST_HEX_LEN} hex digits",
            hex.chars().count()
        ));
    }
    None
}

/// A value quoted in a message, cut to a bounded length (the file is the attacker's).
fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Whether the chart comes from an OCI registry (the only source a digest can pin).
pub fn is_oci(chart: &ChartRef) -> bool {
    chart.repository.starts_with("oci://")
}

/// The rules of `spec.chart.digest` every instance obeys, policy or not: a well-formed digest, and
/// only on an `oci://` chart.
pub(super) fn check_chart(chart: &ChartRef) -> Result<(), IntentErrorKind> {
    let Some(digest) = &chart.digest else {
        return Ok(());
    };
    if let Some(problem) = digest_problem(digest) {
        return Err(invalid("spec.chart.digest", problem));
    }
    if !is_oci(chart) {
        return Err(invalid(
            "spec.chart.digest",
            format!(
                "a digest pins an OCI artifact; {:?} is a Helm repository, which cannot be pinned by digest (publish the chart to an oci:// registry)",
                chart.repository
            ),
        ));
    }
    Ok(())
}

/// The `Cluster` policy `requireChartDigests`: every ApplicationInstance pins its chart by digest,
/// so every chart that can be installed was approved, byte for byte, by the release's signers. A
/// refusal names every instance file; the whole release is refused.
pub fn check_policy(
    intent: &Intent,
    cluster: &str,
    require_digests: bool,
) -> Result<(), IntentErrors> {
    if !require_digests {
        return Ok(());
    }
    let errors: Vec<IntentError> = intent
        .application_instances
        .iter()
        .filter_map(|item| {
            let instance = match item.resource.get() {
                Ok(instance) => instance,
                Err(e) => {
                    return Some(IntentError {
                        cluster: cluster.to_owned(),
                        path: item.source_path.clone(),
                        kind: IntentErrorKind::InvalidSpec(e.to_string()),
                    });
                }
            };
            let chart = &instance.spec.chart;
            let kind = if !is_oci(chart) {
                invalid(
                    "spec.chart.repository",
                    format!(
                        "{:?} is a Helm repository: the Cluster's policy requireChartDigests needs every chart pinned by digest, which only an oci:// registry allows (push the chart to an OCI registry and set spec.chart.digest)",
                        chart.repository
                    ),
                )
            } else if chart.digest.is_none() {
                invalid(
                    "spec.chart.digest",
                    "required by the Cluster's policy requireChartDigests: pin the chart by its OCI manifest digest (sha256:<64 hex digits>, what `helm push` prints as Digest)",
                )
            } else {
                return None;
            };
            Some(IntentError {
                cluster: cluster.to_owned(),
                path: item.source_path.clone(),
                kind,
            })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(IntentErrors { errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ApplicationInstance, ApplicationInstanceSpec};
    use crate::intent::Item;

    const GOOD: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn chart(repository: &str, digest: Option<&str>) -> ChartRef {
        ChartRef {
            repository: repository.into(),
            name: "app".into(),
            version: "1.0.0".into(),
            digest: digest.map(str::to_owned),
        }
    }

    #[test]
    fn digests_are_judged_strictly() {
        let long = format!("sha256:{}", "a".repeat(65));
        let upper = GOOD.replace("abcdef", "ABCDEF");
        let cases: &[(&str, Option<&str>)] = &[
            (GOOD, None),
            (
                "sha256:",
                Some("0 characters after \"sha256:\", expected 64"),
            ),
            (
                &GOOD[..70],
                Some("63 characters after \"sha256:\", expected 64"),
            ),
            (&long, Some("65 characters after \"sha256:\", expected 64")),
            (
                &upper,
                Some("'A' at position 17 of the sha256 digest: expected lowercase hex"),
            ),
            (
                "sha512:0123",
                Some("algorithm \"sha512\" is not accepted: only sha256"),
            ),
            ("SHA256:00", Some("algorithm \"SHA256\" is not accepted")),
            (
                "0123456789abcdef",
                Some("must be sha256:<64 hex digits> (an OCI manifest digest)"),
            ),
            ("", Some("\"\" must be sha256:<64 hex digits>")),
            (
                "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
                Some("'g' at position 70"),
            ),
            (
                "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\u{e9}",
                Some("'é' at position 70"),
            ),
        ];
        for (digest, expected) in cases {
            let problem = digest_problem(digest);
            match (expected, &problem) {
                (None, None) => {}
                (Some(want), Some(got)) => assert!(got.contains(want), "{digest:?}: {got}"),
                _ => panic!("{digest:?}: expected {expected:?}, got {problem:?}"),
            }
        }
        // A hostile value is quoted bounded.
        let huge = "x".repeat(10_000);
        assert!(digest_problem(&huge).is_some_and(|m| m.len() < 200));
    }

    #[test]
    fn a_digest_only_on_an_oci_chart() {
        assert_eq!(
            check_chart(&chart("oci://r.example/charts", Some(GOOD))),
            Ok(())
        );
        assert_eq!(check_chart(&chart("https://charts.example", None)), Ok(()));
        let refused = check_chart(&chart("https://charts.example", Some(GOOD)));
        assert!(
            matches!(&refused, Err(IntentErrorKind::InvalidField { field, reason })
                if field == "spec.chart.digest" && reason.contains("cannot be pinned by digest")),
            "{refused:?}"
        );
        let malformed = check_chart(&chart("oci://r.example/charts", Some("sha256:12")));
        assert!(
            matches!(&malformed, Err(IntentErrorKind::InvalidField { field, .. }) if field == "spec.chart.digest"),
            "{malformed:?}"
        );
    }

    fn intent(charts: &[(&str, ChartRef)]) -> Intent {
        let items = charts
            .iter()
            .map(|(name, chart)| {
                let spec = ApplicationInstanceSpec {
                    chart: chart.clone(),
                    release_name: None,
                    values: None,
                    suspend: None,
                };
                Item {
                    source_path: format!("namespaces/team/applicationinstances/{name}.yaml"),
                    namespace: "team".into(),
                    name: (*name).into(),
                    resource: crate::compact::Compact::new(&ApplicationInstance::new(name, spec))
                        .expect("compact"),
                }
            })
            .collect();
        Intent {
            application_instances: items,
            operations: Vec::new(),
        }
    }

    #[test]
    fn the_policy_names_every_unpinned_instance_file() {
        let all = intent(&[
            ("pinned", chart("oci://r.example/charts", Some(GOOD))),
            ("tag-only", chart("oci://r.example/charts", None)),
            ("helm-repo", chart("https://charts.example", None)),
        ]);
        // Off: nothing refused.
        assert_eq!(check_policy(&all, "demo", false), Ok(()));
        let refused = check_policy(&all, "demo", true).expect_err("two unpinned instances");
        let lines: Vec<String> = refused.errors.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with(
            "clusters/demo/namespaces/team/applicationinstances/tag-only.yaml: spec.chart.digest: required by the Cluster's policy requireChartDigests"
        ), "{}", lines[0]);
        assert!(lines[1].starts_with(
            "clusters/demo/namespaces/team/applicationinstances/helm-repo.yaml: spec.chart.repository: \"https://charts.example\" is a Helm repository"
        ), "{}", lines[1]);
        assert!(lines[1].contains("only an oci:// registry"), "{}", lines[1]);
        // Every chart pinned: admitted.
        let pinned = intent(&[("pinned", chart("oci://r.example/charts", Some(GOOD)))]);
        assert_eq!(check_policy(&pinned, "demo", true), Ok(()));
    }
}
