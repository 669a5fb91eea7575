//! Status conditions of a `Cluster`, in the style of Flux's source-controller: each step of a pass owns
//! one condition, and one summarize step derives `Ready` from them. Condition types and reasons are
//! documented constants; a Kubernetes Event for a condition uses the condition's reason as its reason,
//! and metrics use the same bounded set as labels.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The source was fetched and verified (commit, history, release, intent, values).
pub const SOURCE_VERIFIED: &str = "SourceVerified";
/// The verified plan was applied and pruned.
pub const APPLIED: &str = "Applied";
/// Everything above holds for the current generation.
pub const READY: &str = "Ready";
/// kstatus `Stalled`: present (and `True`) only while the last pass failed for a reason that trying
/// again cannot fix ([`super::retry::is_permanent`]); the `Cluster` then waits for a change
/// or its interval instead of retrying. Its reason and message are `Ready`'s.
pub const STALLED: &str = "Stalled";
/// Present while `spec.namespacePolicy` is set: `True` with reason `GuardrailsKept` when every
/// managed namespace carries its Pod Security labels and NetworkPolicies, or `PodSecurityWeakened`
/// when the last pass that looked found some weakened and restored them (the message names them).
/// Not part of `Ready`.
pub const NAMESPACE_GUARDRAILS: &str = "NamespaceGuardrails";

use vworkspace_core::reasons;

/// What one pass found, step by step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step succeeded.
    Succeeded,
    /// The step failed with a bounded reason and a message (never a secret).
    Failed {
        /// The reason constant.
        reason: &'static str,
        /// What happened.
        message: String,
    },
    /// The step did not run.
    NotRun,
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// The conditions a pass leaves: `SourceVerified`, `Applied`, and `Ready` summarized from them.
/// `previous` keeps `lastTransitionTime` stable when a condition's status does not change.
pub fn summarize(
    verify: &StepOutcome,
    apply: &StepOutcome,
    generation: Option<i64>,
    now: jiff::Timestamp,
    previous: &[Condition],
) -> Vec<Condition> {
    let at = |type_: &str, ok: bool, reason: &str, message: &str| {
        condition(type_, ok, reason, message, generation, now)
    };
    let source = match verify {
        StepOutcome::Succeeded => at(
            SOURCE_VERIFIED,
            true,
            reasons::SUCCEEDED,
            "commit, release, intent and values verified",
        ),
        StepOutcome::Failed { reason, message } => at(SOURCE_VERIFIED, false, reason, message),
        StepOutcome::NotRun => at(
            SOURCE_VERIFIED,
            false,
            reasons::PROGRESSING,
            "not verified yet",
        ),
    };
    let applied = match (verify, apply) {
        (StepOutcome::Succeeded, StepOutcome::Succeeded) => at(
            APPLIED,
            true,
            reasons::APPLY_SUCCEEDED,
            "applied and pruned",
        ),
        (StepOutcome::Succeeded, StepOutcome::Failed { reason, message }) => {
            at(APPLIED, false, reason, message)
        }
        (StepOutcome::Succeeded, StepOutcome::NotRun) => {
            at(APPLIED, false, reasons::PROGRESSING, "not applied yet")
        }
        _ => at(
            APPLIED,
            false,
            reasons::SOURCE_NOT_VERIFIED,
            "nothing applied: the source was not verified; the cluster keeps the last applied release",
        ),
    };
    let ready = ready(&source, &applied, &at);
    let stalled = (ready.status != "True" && crate::cluster::retry::is_permanent(&ready.reason))
        .then(|| at(STALLED, true, &ready.reason, &ready.message));
    [source, applied, ready]
        .into_iter()
        .chain(stalled)
        .map(|c| keep_transition(c, previous))
        .collect()
}

/// `Ready`: the first failing step's condition, or True when all hold.
fn ready(
    source: &Condition,
    applied: &Condition,
    at: &impl Fn(&str, bool, &str, &str) -> Condition,
) -> Condition {
    [source, applied]
        .into_iter()
        .find(|c| c.status != "True")
        .map(|c| at(READY, false, &c.reason, &c.message))
        .unwrap_or_else(|| {
            at(
                READY,
                true,
                reasons::SUCCEEDED,
                "applied the verified release",
            )
        })
}

/// What [`super::pass::Step::EnsureNamespaceGuardrails`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded {
    /// No `spec.namespacePolicy`: no `NamespaceGuardrails` condition.
    Off,
    /// The guardrails were kept on every managed namespace.
    Kept {
        /// The Pod Security level kept.
        level: &'static str,
        /// How many managed namespaces.
        namespaces: usize,
        /// The namespaces found weakened (and restored) by this pass, with what was found.
        weakened: Vec<(String, String)>,
    },
}

/// The `NamespaceGuardrails` condition after a pass: from what the pass found, the previous one when
/// the step did not run, none when the policy is off.
pub fn guardrails(
    found: Option<&Guarded>,
    generation: Option<i64>,
    now: jiff::Timestamp,
    previous: &[Condition],
) -> Option<Condition> {
    let (reason, message) = match found {
        None => {
            return previous
                .iter()
                .find(|c| c.type_ == NAMESPACE_GUARDRAILS)
                .cloned();
        }
        Some(Guarded::Off) => return None,
        Some(Guarded::Kept {
            level,
            namespaces,
            weakened,
        }) if weakened.is_empty() => (
            reasons::GUARDRAILS_KEPT,
            format!(
                "Pod Security {level} and NetworkPolicies kept on {namespaces} managed namespace(s)"
            ),
        ),
        Some(Guarded::Kept {
            level, weakened, ..
        }) => (
            reasons::POD_SECURITY_WEAKENED,
            vworkspace_core::guardrails::weakened_message(level, weakened),
        ),
    };
    let message = crate::events::clip(message);
    let at = condition(
        NAMESPACE_GUARDRAILS,
        true,
        reason,
        &message,
        generation,
        now,
    );
    Some(keep_transition(at, previous))
}

/// `condition` with the transition time of the previous condition of its type, when its status is
/// the same.
fn keep_transition(mut condition: Condition, previous: &[Condition]) -> Condition {
    if let Some(old) = previous
        .iter()
        .find(|p| p.type_ == condition.type_ && p.status == condition.status)
    {
        condition.last_transition_time = old.last_transition_time.clone();
    }
    condition
}

#[cfg(test)]
mod tests {
    use super::*;
    use vworkspace_core::reasons as reason;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().expect("ts")
    }

    fn find<'a>(cs: &'a [Condition], type_: &str) -> &'a Condition {
        cs.iter().find(|c| c.type_ == type_).expect("condition")
    }

    #[test]
    fn all_good_is_ready() {
        let cs = summarize(
            &StepOutcome::Succeeded,
            &StepOutcome::Succeeded,
            Some(3),
            t("2026-01-01T00:00:00Z"),
            &[],
        );
        assert_eq!(find(&cs, READY).status, "True");
        assert_eq!(find(&cs, APPLIED).reason, reason::APPLY_SUCCEEDED);
        assert!(cs.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn a_refused_source_applies_nothing_and_ready_says_why() {
        let refused = StepOutcome::Failed {
            reason: reason::RELEASE_INVALID,
            message: "serial 6 is not greater than the last applied serial 7".into(),
        };
        let cs = summarize(
            &refused,
            &StepOutcome::NotRun,
            None,
            t("2026-01-01T00:00:00Z"),
            &[],
        );
        assert_eq!(find(&cs, SOURCE_VERIFIED).reason, reason::RELEASE_INVALID);
        assert_eq!(find(&cs, APPLIED).reason, reason::SOURCE_NOT_VERIFIED);
        let ready = find(&cs, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason::RELEASE_INVALID)
        );
        assert!(ready.message.contains("serial 6"));
    }

    #[test]
    fn apply_failure_is_ready_false_with_its_reason() {
        let failed = StepOutcome::Failed {
            reason: reason::APPLY_FAILED,
            message: "409 Conflict".into(),
        };
        let cs = summarize(
            &StepOutcome::Succeeded,
            &failed,
            None,
            t("2026-01-01T00:00:00Z"),
            &[],
        );
        assert_eq!(find(&cs, SOURCE_VERIFIED).status, "True");
        assert_eq!(find(&cs, READY).reason, reason::APPLY_FAILED);
    }

    #[test]
    fn transition_time_only_moves_on_a_status_change() {
        let first = summarize(
            &StepOutcome::Succeeded,
            &StepOutcome::Succeeded,
            None,
            t("2026-01-01T00:00:00Z"),
            &[],
        );
        let again = summarize(
            &StepOutcome::Succeeded,
            &StepOutcome::Succeeded,
            None,
            t("2026-01-02T00:00:00Z"),
            &first,
        );
        assert_eq!(
            find(&again, READY).last_transition_time,
            find(&first, READY).last_transition_time
        );
        let broken = StepOutcome::Failed {
            reason: reason::COMMIT_SIGNATURE_INVALID,
            message: "commit x is not signed".into(),
        };
        let later = summarize(
            &broken,
            &StepOutcome::NotRun,
            None,
            t("2026-01-03T00:00:00Z"),
            &again,
        );
        assert_eq!(
            find(&later, READY).last_transition_time,
            Time(t("2026-01-03T00:00:00Z"))
        );
    }

    #[test]
    fn a_permanent_refusal_is_stalled_and_a_transient_failure_is_not() {
        let refused = StepOutcome::Failed {
            reason: reason::RELEASE_INVALID,
            message: "release expired".into(),
        };
        let cs = summarize(
            &refused,
            &StepOutcome::NotRun,
            Some(2),
            t("2026-01-01T00:00:00Z"),
            &[],
        );
        let stalled = find(&cs, STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", reason::RELEASE_INVALID)
        );
        assert_eq!(stalled.observed_generation, Some(2));
        let unreachable = StepOutcome::Failed {
            reason: reason::FETCH_FAILED,
            message: "connection refused".into(),
        };
        let cs = summarize(
            &unreachable,
            &StepOutcome::NotRun,
            Some(2),
            t("2026-01-01T00:00:00Z"),
            &cs,
        );
        assert!(!cs.iter().any(|c| c.type_ == STALLED));
        let cs = summarize(
            &StepOutcome::Succeeded,
            &StepOutcome::Succeeded,
            Some(2),
            t("2026-01-01T00:00:00Z"),
            &cs,
        );
        assert!(!cs.iter().any(|c| c.type_ == STALLED));
    }
}
