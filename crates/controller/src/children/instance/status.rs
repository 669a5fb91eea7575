//! The `ApplicationInstance` status: a `Ready` condition, mirrored from the HelmRelease's (or a
//! failure before there is one), and a `ChildDrift` condition once a child held fields another writer
//! added (the last removal, kept until the next one). Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use vworkspace_core::crd::ApplicationInstanceStatus;
use vworkspace_core::reasons::{UNDECLARED_FIELDS_REMOVED, WAITING_FOR_HELM_RELEASE};

/// The condition type that records the last time undeclared fields were removed from a child.
pub const CHILD_DRIFT: &str = "ChildDrift";

/// How much of the removed paths a condition message holds.
const DRIFT_MESSAGE_LIMIT: usize = 1024;

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
    // The last removal is kept: the Event expires, the condition says what was last repaired.
    let drift = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == CHILD_DRIFT));
    ApplicationInstanceStatus {
        conditions: std::iter::once(Condition {
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
        })
        .chain(drift.cloned())
        .collect(),
        observed_generation: generation,
        // Kept through a refusal or a wait: the children written before are still there (and a
        // reconcile reads them before writing again, `steps::children_never_written`).
        helm_release_ref: helm_release
            .or_else(|| previous.and_then(|p| p.helm_release_ref.clone())),
    }
}

/// Records in `status` that this reconcile removed undeclared spec fields from children (`removed`:
/// `<kind> <name>: <paths>`, never values): `ChildDrift=True`, reason `UndeclaredFieldsRemoved`, the
/// transition time now.
pub fn record_drift(
    status: &mut ApplicationInstanceStatus,
    removed: &[String],
    now: jiff::Timestamp,
) {
    let mut message = format!(
        "removed spec fields another writer added and the verified release does not declare: {}",
        removed.join("; ")
    );
    if message.len() > DRIFT_MESSAGE_LIMIT {
        let cut = (0..=DRIFT_MESSAGE_LIMIT)
            .rev()
            .find(|i| message.is_char_boundary(*i))
            .unwrap_or(0);
        message.truncate(cut);
        message.push_str("...");
    }
    status.conditions.retain(|c| c.type_ != CHILD_DRIFT);
    status.conditions.push(Condition {
        type_: CHILD_DRIFT.into(),
        status: "True".into(),
        reason: UNDECLARED_FIELDS_REMOVED.into(),
        message,
        observed_generation: status.observed_generation,
        last_transition_time: Time(now),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> (String, String, String) {
        ("True".into(), "InstallSucceeded".into(), "installed".into())
    }

    #[test]
    fn the_helm_release_ref_is_kept_through_a_refusal_or_a_wait() {
        let at = |s| jiff::Timestamp::from_second(s).expect("time");
        let waiting = (
            "False".into(),
            "WaitingForVerifiedRelease".into(),
            "m".into(),
        );
        let first = instance_status(None, waiting.clone(), Some(1), None, at(10));
        assert_eq!(first.helm_release_ref, None, "no child written yet");
        let written = instance_status(
            Some(&first),
            ready(),
            Some(1),
            Some("org/web".into()),
            at(20),
        );
        assert_eq!(written.helm_release_ref.as_deref(), Some("org/web"));
        let restarted = instance_status(Some(&written), waiting, Some(1), None, at(30));
        assert_eq!(restarted.helm_release_ref.as_deref(), Some("org/web"));
    }

    #[test]
    fn a_removal_is_recorded_and_kept_until_the_next_one() {
        let at = |s| jiff::Timestamp::from_second(s).expect("time");
        let mut status = instance_status(None, ready(), Some(1), None, at(10));
        assert_eq!(status.conditions.len(), 1, "no drift seen: no condition");
        record_drift(
            &mut status,
            &["HelmRelease web: spec.suspend".to_owned()],
            at(20),
        );
        let drift = |s: &ApplicationInstanceStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == CHILD_DRIFT)
                .cloned()
                .expect("a ChildDrift condition")
        };
        let first = drift(&status);
        assert_eq!(
            (first.status.as_str(), first.reason.as_str()),
            ("True", UNDECLARED_FIELDS_REMOVED)
        );
        assert!(
            first.message.ends_with("HelmRelease web: spec.suspend"),
            "{}",
            first.message
        );
        // A later reconcile that removes nothing keeps it as it was (no status write).
        let later = instance_status(Some(&status), ready(), Some(1), None, at(30));
        assert_eq!(later, status);
        // The next removal replaces it.
        let mut next = later.clone();
        record_drift(&mut next, &["x".repeat(5000)], at(40));
        let second = drift(&next);
        assert_eq!(second.last_transition_time, Time(at(40)));
        assert!(second.message.len() <= DRIFT_MESSAGE_LIMIT + 3);
        assert_eq!(
            next.conditions
                .iter()
                .filter(|c| c.type_ == CHILD_DRIFT)
                .count(),
            1
        );
    }
}
