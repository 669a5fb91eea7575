//! How a declared change reaches the running application, and when the instance may say so.
//!
//! Flux reconciles a HelmRelease when its generation changes or when its
//! `reconcile.fluxcd.io/requestedAt` annotation changes; a source re-reads its repository on its
//! interval or on the same annotation. Three declared changes move neither on their own:
//!
//! - a rotated encrypted value rewrites only the values Secret: the Secret carries Flux's
//!   `reconcile.fluxcd.io/watch: Enabled` label (helm-controller's default
//!   `--watch-configs-label-selector` then reconciles the HelmRelease that reads it), and the
//!   HelmRelease is asked to reconcile with the Secret's `resourceVersion` ([`values_request`]): the
//!   request names which Secret write it is for, and carries nothing derived from the plaintext;
//! - a new chart version in the same `HelmRepository`: the source is asked to reconcile with the
//!   declared chart ([`chart_request`]), so its index is re-read now rather than within the hour;
//! - nothing else: spec changes move the HelmRelease's generation.
//!
//! `Ready` is mirrored only when helm-controller has reconciled *this* generation and handled *this*
//! request ([`ready_for_current_generation`]); until then the instance is `Unknown` with Flux's reason
//! (or `Progressing`). The decisions are pure and unit-tested; the instance controller applies them.

use serde_json::Value;

use vworkspace_core::labels::ANNOTATION_SERIAL;
use vworkspace_core::reasons::PROGRESSING;

/// Flux's annotation that asks a controller to reconcile an object now (any new value does).
pub const ANNOTATION_REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
/// Flux's label on a Secret/ConfigMap that helm-controller watches for changes.
pub const LABEL_WATCH: &str = "reconcile.fluxcd.io/watch";
/// The value of [`LABEL_WATCH`] that helm-controller's default selector matches.
pub const WATCH_ENABLED: &str = "Enabled";

/// The reconcile request a HelmRelease carries for the values Secret at `resource_version` (the
/// Secret's `metadata.resourceVersion` after the operator's last write); `None` without a Secret.
pub fn values_request(resource_version: Option<&str>) -> Option<String> {
    resource_version.map(|rv| format!("values/{rv}"))
}

/// The reconcile request a chart source carries for the declared chart: a new name or version
/// makes source-controller re-read the repository index at once.
pub fn chart_request(chart: &str, version: &str) -> String {
    format!("chart/{chart}@{version}")
}

/// Sets (or, with `None`, leaves out) the reconcile request on `object`'s metadata.
pub fn request(object: &mut Value, value: Option<&str>) {
    let Some(value) = value else { return };
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(map) = annotations.as_object_mut() {
            map.insert(
                ANNOTATION_REQUESTED_AT.to_owned(),
                Value::String(value.to_owned()),
            );
        }
    }
}

/// The instance's `Ready` for a live HelmRelease: `(status, reason, message)`.
///
/// `True` only when helm-controller says Ready for the HelmRelease's current `metadata.generation`
/// (the condition's `observedGeneration` and `status.observedGeneration` both equal it) and has
/// handled the object's reconcile request (`status.lastHandledReconcileAt` equals
/// `reconcile.fluxcd.io/requestedAt`). A verdict for the current generation that is not `True` is
/// mirrored as it is (Flux's reason); anything older is `Unknown`/`Progressing`. `None` when the
/// HelmRelease has no `Ready` condition yet.
pub fn ready_for_current_generation(helm_release: &Value) -> Option<(String, String, String)> {
    let conditions = helm_release["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    let generation = helm_release["metadata"]["generation"].as_i64();
    let condition_current =
        generation.is_some() && ready["observedGeneration"].as_i64() == generation;
    let status_current =
        generation.is_some() && helm_release["status"]["observedGeneration"].as_i64() == generation;
    let requested = helm_release["metadata"]["annotations"][ANNOTATION_REQUESTED_AT].as_str();
    let handled = helm_release["status"]["lastHandledReconcileAt"].as_str();
    let request_handled = requested.is_none() || requested == handled;
    let status = ready["status"].as_str().unwrap_or("Unknown").to_owned();
    let reason = ready["reason"].as_str().unwrap_or_default().to_owned();
    let message = ready["message"].as_str().unwrap_or_default().to_owned();
    if condition_current && status_current && request_handled {
        return Some((status, reason, message));
    }
    if condition_current && status != "True" {
        // helm-controller is working on (or failed) this generation: its own words.
        return Some(("Unknown".into(), reason, message));
    }
    let why = if condition_current && status_current {
        format!(
            "helm-controller has not yet handled the values change (request {}, handled {})",
            requested.unwrap_or_default(),
            handled.unwrap_or("none")
        )
    } else {
        format!(
            "helm-controller has not yet reconciled generation {} of the HelmRelease (observed {})",
            generation.unwrap_or_default(),
            ready["observedGeneration"]
                .as_i64()
                .or(helm_release["status"]["observedGeneration"].as_i64())
                .map_or_else(|| "none".to_owned(), |g| g.to_string())
        )
    };
    Some(("Unknown".into(), PROGRESSING.into(), why))
}

/// Whether a live object that differs from its declared spec was applied by a release newer than
/// the one published (`published_serial`): the Cluster pass applies before it publishes, so for a
/// moment a child controller sees the new spec and the old declared set. Such an object is not
/// refused: the pass publishes its release next, and the children look again when it does. The
/// annotation only postpones a judgement (the next pass puts back any spec it does not declare);
/// it never makes a spec acceptable.
pub fn applied_by_newer_release(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    published_serial: u64,
) -> bool {
    annotations
        .and_then(|a| a.get(ANNOTATION_SERIAL))
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|serial| serial > published_serial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn release(generation: i64, observed: i64, status: &str, reason: &str) -> Value {
        json!({
            "metadata": {"generation": generation},
            "status": {"observedGeneration": observed, "conditions": [{
                "type": "Ready", "status": status, "reason": reason, "message": "m",
                "observedGeneration": observed}]},
        })
    }

    #[test]
    fn ready_is_mirrored_only_for_the_current_generation() {
        let ready = ready_for_current_generation(&release(1, 1, "True", "InstallSucceeded"));
        assert_eq!(ready.map(|r| r.0), Some("True".to_owned()));
        // An upgrade applied (generation 2), helm-controller still at 1: not Ready.
        let (status, reason, message) =
            ready_for_current_generation(&release(2, 1, "True", "InstallSucceeded"))
                .expect("a condition");
        assert_eq!((status.as_str(), reason.as_str()), ("Unknown", PROGRESSING));
        assert!(
            message.contains("generation 2") && message.contains("observed 1"),
            "{message}"
        );
        // The condition caught up but status.observedGeneration did not (mid-patch): not Ready.
        let mut half = release(2, 1, "True", "UpgradeSucceeded");
        half["status"]["conditions"][0]["observedGeneration"] = json!(2);
        assert_eq!(
            ready_for_current_generation(&half).map(|r| r.0),
            Some("Unknown".into())
        );
        // Without any observed generation: not Ready either.
        let mut bare = release(1, 1, "True", "InstallSucceeded");
        bare["status"]["conditions"][0]
            .as_object_mut()
            .map(|c| c.remove("observedGeneration"));
        assert_eq!(
            ready_for_current_generation(&bare).map(|r| r.0),
            Some("Unknown".into())
        );
        assert_eq!(ready_for_current_generation(&json!({"status": {}})), None);
    }

    #[test]
    fn flux_reason_is_kept_for_the_current_generation() {
        let (status, reason, _) =
            ready_for_current_generation(&release(3, 3, "False", "UpgradeFailed")).expect("one");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "UpgradeFailed")
        );
        // Progressing on the current generation, with a stale status.observedGeneration.
        let mut working = release(3, 2, "Unknown", "Progressing");
        working["status"]["conditions"][0]["observedGeneration"] = json!(3);
        let (status, reason, _) = ready_for_current_generation(&working).expect("one");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("Unknown", "Progressing")
        );
    }

    #[test]
    fn ready_waits_for_the_values_request_to_be_handled() {
        let mut hr = release(1, 1, "True", "UpgradeSucceeded");
        request(&mut hr, values_request(Some("42")).as_deref());
        assert_eq!(
            hr["metadata"]["annotations"][ANNOTATION_REQUESTED_AT],
            "values/42"
        );
        hr["status"]["lastHandledReconcileAt"] = json!("values/41");
        let (status, reason, message) = ready_for_current_generation(&hr).expect("one");
        assert_eq!((status.as_str(), reason.as_str()), ("Unknown", PROGRESSING));
        assert!(
            message.contains("values/42") && message.contains("values/41"),
            "{message}"
        );
        hr["status"]["lastHandledReconcileAt"] = json!("values/42");
        assert_eq!(
            ready_for_current_generation(&hr).map(|r| r.0),
            Some("True".into())
        );
    }

    #[test]
    fn requests_follow_what_is_declared_and_carry_no_values() {
        assert_eq!(values_request(None), None);
        assert_eq!(values_request(Some("7")).as_deref(), Some("values/7"));
        assert_ne!(chart_request("app", "1.0.0"), chart_request("app", "1.1.0"));
        let mut object = json!({"metadata": {"name": "x"}});
        request(&mut object, None);
        assert!(object["metadata"].get("annotations").is_none());
        request(&mut object, Some(&chart_request("app", "1.1.0")));
        assert_eq!(
            object["metadata"]["annotations"][ANNOTATION_REQUESTED_AT],
            "chart/app@1.1.0"
        );
    }

    #[test]
    fn only_a_newer_serial_on_the_live_object_postpones_a_refusal() {
        let at = |s: &str| BTreeMap::from([(ANNOTATION_SERIAL.to_owned(), s.to_owned())]);
        assert!(applied_by_newer_release(Some(&at("8")), 7));
        assert!(!applied_by_newer_release(Some(&at("7")), 7));
        assert!(!applied_by_newer_release(Some(&at("6")), 7));
        assert!(!applied_by_newer_release(Some(&at("x")), 7));
        assert!(!applied_by_newer_release(None, 7));
    }
}
