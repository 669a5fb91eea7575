//! When a `Cluster` is reconciled again: a pure decision from the pass's outcome.
//!
//! - A **permanent** refusal (a commit, history, tree, release, intent or values refusal, an unusable
//!   configuration, an ownership conflict, objects for unmanaged namespaces) does not go away by
//!   trying again: the `Cluster` is `Stalled` (kstatus) and waits for a change (a new generation
//!   re-runs it at once through the watch) or its interval, which also looks for a new commit. It is
//!   never refetched and re-verified every few seconds.
//! - A **transient** failure (the Git server, the API server, a refused write) backs off: 5 s,
//!   doubling per consecutive failure, at most 5 minutes.
//! - Every requeue is jittered, so that many `Cluster`s (or many operators after an outage) do not
//!   come back in lockstep.

use std::time::Duration;

use vworkspace_core::reasons;

/// Reasons that trying again cannot fix (the `Cluster` is `Stalled` until something changes).
const PERMANENT: &[&str] = &[
    reasons::COMMIT_SIGNATURE_INVALID,
    reasons::HISTORY_INVALID,
    reasons::TREE_INVALID,
    reasons::RELEASE_INVALID,
    reasons::INTENT_INVALID,
    reasons::VALUES_INVALID,
    reasons::CONFIGURATION_INVALID,
    reasons::OWNERSHIP_CONFLICT,
    reasons::NAMESPACE_NOT_MANAGED,
    reasons::STATUS_UNREADABLE,
];

/// Whether a failure with this reason is permanent: it stalls the `Cluster` until a change.
pub fn is_permanent(reason: &str) -> bool {
    PERMANENT.contains(&reason)
}

/// The first back-off after a transient failure.
pub const BACKOFF_START: Duration = Duration::from_secs(5);
/// The longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The back-off before jitter: [`BACKOFF_START`], doubling per consecutive failure, at most
/// [`BACKOFF_MAX`].
pub fn backoff(consecutive_failures: u32) -> Duration {
    let exponent = consecutive_failures.saturating_sub(1).min(6);
    (BACKOFF_START * (1u32 << exponent)).min(BACKOFF_MAX)
}

/// Spreads `base` over `[0.9, 1.1) * base`; `jitter` is uniform in `[0, 1)`.
pub fn jittered(base: Duration, jitter: f64) -> Duration {
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.5
    };
    base.mul_f64(0.9 + 0.2 * jitter)
}

/// When to run the `Cluster` again after a pass: `failure` is the failed pass's reason (`None` on
/// success), `consecutive_failures` counts transient failures in a row (this one included),
/// `interval` is the `Cluster`'s poll interval, `jitter` is uniform in `[0, 1)`.
pub fn requeue_after(
    failure: Option<&str>,
    consecutive_failures: u32,
    interval: Duration,
    jitter: f64,
) -> Duration {
    let base = match failure {
        None => interval,
        Some(reason) if is_permanent(reason) => interval,
        Some(_) => backoff(consecutive_failures).min(interval.max(BACKOFF_START)),
    };
    jittered(base, jitter)
}

/// A uniform number in `[0, 1)` from the process's random hasher keys (no extra dependency; not for
/// anything secret).
pub fn random_jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(std::time::SystemTime::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    #[test]
    fn backoff_doubles_and_is_capped() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn a_permanent_refusal_waits_for_the_interval_not_the_backoff() {
        for reason in [
            reasons::RELEASE_INVALID,
            reasons::COMMIT_SIGNATURE_INVALID,
            reasons::CONFIGURATION_INVALID,
            reasons::OWNERSHIP_CONFLICT,
        ] {
            assert!(is_permanent(reason));
            let first = requeue_after(Some(reason), 1, FIVE_MINUTES, 0.0);
            assert!(first >= Duration::from_secs(270), "{reason}: {first:?}");
        }
    }

    #[test]
    fn a_transient_failure_backs_off_from_five_seconds() {
        for reason in [
            reasons::FETCH_FAILED,
            reasons::API_REQUEST_FAILED,
            vworkspace_core::reasons::APPLY_FAILED,
        ] {
            assert!(!is_permanent(reason));
            let after: Vec<Duration> = (1..=8)
                .map(|n| requeue_after(Some(reason), n, Duration::from_secs(3600), 0.5))
                .collect();
            assert_eq!(after[0], Duration::from_secs(5));
            assert_eq!(after[1], Duration::from_secs(10));
            assert_eq!(after[7], Duration::from_secs(300));
        }
        // Never longer than the interval: a 30 s interval caps the back-off at 30 s.
        let capped = requeue_after(Some(reasons::FETCH_FAILED), 8, Duration::from_secs(30), 0.5);
        assert_eq!(capped, Duration::from_secs(30));
    }

    #[test]
    fn every_requeue_is_jittered_within_ten_percent() {
        for failure in [
            None,
            Some(reasons::RELEASE_INVALID),
            Some(reasons::FETCH_FAILED),
        ] {
            let low = requeue_after(failure, 3, FIVE_MINUTES, 0.0);
            let high = requeue_after(failure, 3, FIVE_MINUTES, 0.999);
            let mid = requeue_after(failure, 3, FIVE_MINUTES, 0.5);
            assert!(
                low < mid && mid < high,
                "{failure:?}: {low:?} {mid:?} {high:?}"
            );
            assert_eq!(low, mid.mul_f64(0.9));
            assert!(high < mid.mul_f64(1.1));
        }
        assert_eq!(jittered(FIVE_MINUTES, f64::NAN), FIVE_MINUTES);
        let samples: Vec<f64> = (0..64).map(|_| random_jitter()).collect();
        assert!(samples.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(
            samples.windows(2).any(|w| w[0] != w[1]),
            "random_jitter varies"
        );
    }
}
