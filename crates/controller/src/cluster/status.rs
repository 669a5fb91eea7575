//! The `Cluster` status a pass leaves, and the Event it emits: pure functions of the previous status
//! and what the pass found. A pass that changes nothing leaves the status equal to the previous one,
//! so the reconciler writes nothing (see [`next_status`] and [`note_for`]); the Events are written by
//! [`crate::events`].

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::events::{Note, Severity, clip};

use crate::cluster::conditions::{self, READY, StepOutcome};
use vworkspace_core::crd::{ClusterStatus, InventoryEntry, ManagedNamespace};

/// The release a successful pass applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedSource {
    /// The commit.
    pub commit: String,
    /// The release serial.
    pub serial: u64,
    /// The release manifest's digest.
    pub digest: String,
    /// Who signed the commit (`principal (fingerprint)`).
    pub signer: String,
}

impl AppliedSource {
    /// What a pass that applied `release` records as applied.
    pub fn of(release: &vworkspace_core::trust::release::VerifiedRelease) -> AppliedSource {
        let signer = release.commit().signer();
        AppliedSource {
            commit: release.commit().id().to_string(),
            serial: release.serial(),
            digest: release.digest().to_owned(),
            signer: format!("{} ({})", signer.principal, signer.fingerprint),
        }
    }
}

/// What one pass found, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Fetch and verification.
    pub verify: StepOutcome,
    /// Apply and prune.
    pub apply: StepOutcome,
    /// The commit the pass looked at, when it got that far.
    pub attempted_commit: Option<String>,
    /// Set when verification and apply both succeeded.
    pub applied: Option<AppliedSource>,
    /// The inventory after the pass, when the pass wrote or computed one.
    pub inventory: Option<Vec<InventoryEntry>>,
    /// The managed namespaces, when the pass listed them.
    pub managed_namespaces: Option<Vec<ManagedNamespace>>,
    /// The digest of the RBAC every managed namespace holds, when the pass gave it to all of them
    /// ([`crate::cluster::rbac::digest`]).
    pub namespace_rbac: Option<String>,
    /// The verdict on the release's values, when verification passed and every value decrypted and
    /// was bound where it is ([`vworkspace_core::pipeline::VerifiedIntent::values_verdict`]).
    pub values_verified: Option<String>,
    /// The settled record, when the pass found or made every declared object as declared and knows
    /// each one's generation ([`vworkspace_core::plan::settled`]); any other pass clears it.
    pub settled: Option<String>,
    /// Objects applied and pruned by this pass.
    pub writes: (usize, usize),
    /// The age recipients of the Cluster's identities, when the pass read them (public keys).
    pub recipients: Option<Vec<String>>,
    /// The verified release's serial and expiry, when verification passed.
    pub release_expires: Option<(u64, jiff::Timestamp)>,
    /// What the guardrails step found, when it ran (`None`: the condition is carried over).
    pub guardrails: Option<super::conditions::Guarded>,
}

impl PassReport {
    /// The message of the first failed step, if any (never a secret: errors name paths, not values).
    pub fn failure_message(&self) -> Option<&str> {
        match (&self.verify, &self.apply) {
            (StepOutcome::Failed { message, .. }, _) | (_, StepOutcome::Failed { message, .. }) => {
                Some(message)
            }
            _ => None,
        }
    }

    /// The reason of the first failed step, if any.
    pub fn failure(&self) -> Option<&'static str> {
        match (&self.verify, &self.apply) {
            (StepOutcome::Failed { reason, .. }, _) | (_, StepOutcome::Failed { reason, .. }) => {
                Some(reason)
            }
            _ => None,
        }
    }

    /// A pass that failed at verification, before anything was read from the cluster.
    pub fn refused(reason: &'static str, message: String, attempted: Option<String>) -> Self {
        PassReport {
            verify: StepOutcome::Failed {
                reason,
                message: clip(message),
            },
            apply: StepOutcome::NotRun,
            attempted_commit: attempted,
            applied: None,
            inventory: None,
            managed_namespaces: None,
            namespace_rbac: None,
            values_verified: None,
            settled: None,
            writes: (0, 0),
            recipients: None,
            release_expires: None,
            guardrails: None,
        }
    }
}

/// The status after a pass. Only a fully successful pass moves `lastApplied*`; everything else keeps
/// what the last good pass recorded, which is what the next pass's rollback checks start from.
pub fn next_status(
    previous: Option<&ClusterStatus>,
    report: &PassReport,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> ClusterStatus {
    let previous = previous.cloned().unwrap_or_default();
    let mut conditions = conditions::summarize(
        &report.verify,
        &report.apply,
        generation,
        now,
        &previous.conditions,
    );
    conditions.extend(conditions::guardrails(
        report.guardrails.as_ref(),
        generation,
        now,
        &previous.conditions,
    ));
    let mut next = ClusterStatus {
        conditions,
        observed_generation: generation,
        last_attempted_commit: report
            .attempted_commit
            .clone()
            .or(previous.last_attempted_commit.clone()),
        inventory: report
            .inventory
            .clone()
            .unwrap_or(previous.inventory.clone()),
        managed_namespaces: report
            .managed_namespaces
            .clone()
            .unwrap_or(previous.managed_namespaces.clone()),
        namespace_rbac: report
            .namespace_rbac
            .clone()
            .or(previous.namespace_rbac.clone()),
        values_verified: report
            .values_verified
            .clone()
            .or(previous.values_verified.clone()),
        // Never carried over: only the pass that saw every object vouches for them.
        settled: report.settled.clone(),
        // Derived from the identity Secret by this pass, never carried from the status read back.
        recipients: report.recipients.clone().unwrap_or_default(),
        ..previous
    };
    if let Some(applied) = &report.applied {
        next.last_applied_commit = Some(applied.commit.clone());
        next.last_applied_serial = Some(applied.serial);
        next.last_applied_release_digest = Some(applied.digest.clone());
        next.last_applied_signer = Some(applied.signer.clone());
    }
    next
}

fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == READY)
}

/// How long before a release expires the operator starts warning (Event `ReleaseExpiringSoon`).
pub const EXPIRY_WARNING: jiff::SignedDuration = jiff::SignedDuration::from_hours(7 * 24);

/// The Event `ReleaseExpiringSoon`, when the verified release expires within [`EXPIRY_WARNING`] of
/// `now`: once it expires the operator refuses it and the cluster stays frozen on the last one.
pub fn expiry_note(
    report: &PassReport,
    cluster_id: &str,
    regarding: ObjectReference,
    now: jiff::Timestamp,
) -> Option<Note> {
    let (serial, expires) = report.release_expires?;
    let left = expires.duration_since(now);
    if left > EXPIRY_WARNING {
        return None;
    }
    Some(Note {
        regarding,
        severity: Severity::Warning,
        reason: vworkspace_core::reasons::RELEASE_EXPIRING_SOON.to_owned(),
        message: format!(
            "clusters/{cluster_id}/release.yaml (serial {serial}) expires at {expires}, in {}h; after that every pass is refused: publish a fresh release (vworkspace-operator release --cluster {cluster_id} --key <release key>), co-sign, commit",
            left.as_secs().max(0) / 3600
        ),
    })
}

/// The Event of a pass, if it deserves one: when `Ready` changed (status, reason or message) or the
/// pass wrote objects. A pass that keeps failing for the same reason, or that finds nothing to do,
/// emits nothing. The Event's reason is the `Ready` condition's reason (one of
/// [`vworkspace_core::reasons`], as every step outcome's).
pub fn note_for(
    previous: Option<&ClusterStatus>,
    next: &ClusterStatus,
    report: &PassReport,
    regarding: ObjectReference,
) -> Option<Note> {
    let now_ready = ready(&next.conditions)?;
    let before = previous.and_then(|p| ready(&p.conditions));
    let changed = before.is_none_or(|b| {
        (&b.status, &b.reason, &b.message)
            != (&now_ready.status, &now_ready.reason, &now_ready.message)
    });
    let (applied, pruned) = report.writes;
    if !changed && applied == 0 && pruned == 0 {
        return None;
    }
    let message = if applied + pruned > 0 {
        format!("{}; {applied} applied, {pruned} pruned", now_ready.message)
    } else {
        now_ready.message.clone()
    };
    Some(Note {
        regarding,
        severity: if now_ready.status == "True" {
            Severity::Normal
        } else {
            Severity::Warning
        },
        reason: now_ready.reason.clone(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::MAX_MESSAGE_BYTES;
    use vworkspace_core::reasons as reason;

    fn success() -> PassReport {
        PassReport {
            verify: StepOutcome::Succeeded,
            apply: StepOutcome::Succeeded,
            attempted_commit: Some("c1".into()),
            applied: Some(AppliedSource {
                commit: "c1".into(),
                serial: 4,
                digest: "sha256:aa".into(),
                signer: "odoo".into(),
            }),
            inventory: Some(vec![]),
            managed_namespaces: Some(vec![]),
            namespace_rbac: None,
            values_verified: None,
            settled: None,
            writes: (2, 1),
            recipients: None,
            release_expires: None,
            guardrails: None,
        }
    }

    fn reference() -> ObjectReference {
        ObjectReference {
            name: Some("prod".into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn success_moves_last_applied_and_an_unchanged_pass_changes_nothing() {
        let t0 = jiff::Timestamp::from_second(1_000).expect("time");
        let first = next_status(None, &success(), Some(3), t0);
        assert_eq!(first.last_applied_serial, Some(4));
        assert_eq!(first.last_applied_commit.as_deref(), Some("c1"));
        let event = note_for(None, &first, &success(), reference()).expect("event");
        assert_eq!(event.reason, "Succeeded");
        assert_eq!(event.severity, Severity::Normal);
        assert!(event.message.ends_with("2 applied, 1 pruned"));

        let quiet = PassReport {
            writes: (0, 0),
            ..success()
        };
        let t1 = jiff::Timestamp::from_second(2_000).expect("time");
        let second = next_status(Some(&first), &quiet, Some(3), t1);
        assert_eq!(
            second, first,
            "an unchanged pass leaves the status as it was"
        );
        assert!(note_for(Some(&first), &second, &quiet, reference()).is_none());
    }

    #[test]
    fn a_refusal_keeps_last_applied_and_warns_once() {
        let t0 = jiff::Timestamp::from_second(1_000).expect("time");
        let good = next_status(None, &success(), Some(1), t0);
        let refused = PassReport::refused(
            reason::RELEASE_INVALID,
            "release serial 3 does not exceed 4".into(),
            Some("c0".into()),
        );
        let bad = next_status(Some(&good), &refused, Some(1), t0);
        assert_eq!(bad.last_applied_serial, Some(4));
        assert_eq!(bad.last_applied_commit.as_deref(), Some("c1"));
        assert_eq!(bad.last_attempted_commit.as_deref(), Some("c0"));
        assert_eq!(bad.inventory, good.inventory);
        let ready = bad
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ReleaseInvalid")
        );
        let event = note_for(Some(&good), &bad, &refused, reference()).expect("event");
        assert_eq!(event.severity, Severity::Warning);
        assert_eq!(event.reason, "ReleaseInvalid");
        // The same refusal again: no new status, no new Event.
        let again = next_status(Some(&bad), &refused, Some(1), t0);
        assert_eq!(again, bad);
        assert!(note_for(Some(&bad), &again, &refused, reference()).is_none());
    }

    #[test]
    fn the_values_verdict_is_recorded_when_a_pass_reaches_one_and_kept_when_it_does_not() {
        let t0 = jiff::Timestamp::from_second(1_000).expect("time");
        let verified = PassReport {
            values_verified: Some("sha256:v1".into()),
            ..success()
        };
        let first = next_status(None, &verified, Some(1), t0);
        assert_eq!(first.values_verified.as_deref(), Some("sha256:v1"));
        // A refusal before verification says nothing of the values: the verdict stays.
        let refused = PassReport::refused(reason::FETCH_FAILED, "unreachable".into(), None);
        let kept = next_status(Some(&first), &refused, Some(1), t0);
        assert_eq!(kept.values_verified.as_deref(), Some("sha256:v1"));
        let newer = PassReport {
            values_verified: Some("sha256:v2".into()),
            ..success()
        };
        let moved = next_status(Some(&kept), &newer, Some(1), t0);
        assert_eq!(moved.values_verified.as_deref(), Some("sha256:v2"));
    }

    #[test]
    fn long_messages_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(5000);
        let clipped = clip(long);
        assert!(clipped.len() <= MAX_MESSAGE_BYTES);
        assert!(clipped.ends_with("bytes cut)"));
    }
}
