//! The `ApplicationInstance` status: one `Ready` condition, mirrored from the HelmRelease's (or a
//! failure before there is one). Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use vworkspace_core::crd::ApplicationInstanceStatus;
use vworkspace_core::reasons::WAITING_FOR_HELM_RELEASE;

/// The instance status for a HelmRelease's `Ready` (or a failure before there is one).
pub fn instance_status(
    previous: Option<&ApplicationInstanceStatus>,
    ready: (String, String, String),
    generation: Option<i64>,
    helm_release: Option<String>,
    now: jiff::Timestamp,
) -> ApplicationInstanceStatus {
    let (status, reason, message) = ready;
    let before = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == "Ready"));
    let transition = match before {
        Some(b) if b.status == status => b.last_transition_time.clone(),
        _ => Time(now),
    };
    ApplicationInstanceStatus {
        conditions: vec![Condition {
            type_: "Ready".into(),
            status,
            reason: if reason.is_empty() {
                WAITING_FOR_HELM_RELEASE.into()
            } else {
                reason
            },
            message,
            observed_generation: generation,
            last_transition_time: transition,
        }],
        observed_generation: generation,
        helm_release_ref: helm_release,
    }
}
