//! Whether the watches the operator cannot work without are healthy: `/readyz` answers 503 while one
//! of them (Clusters, managed namespaces, ApplicationInstances, Operations) has been failing for
//! longer than [`WATCH_FAILING_BOUND`], and 200 again once it delivers.
//!
//! kube-runtime re-establishes a failed watch with back-off and says nothing else: a watch refused
//! for good (its RBAC removed, a CRD deleted, an API server that answers but cannot serve the list)
//! would leave a replica that looks ready and acts on stores that never move again. A watch is
//! failing from its first error until the next event it delivers (a re-established watch delivers
//! its initial list at once, so a recovered watch is seen within one back-off step).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a required watch may fail before `/readyz` says so: longer than kube-runtime's back-off
/// between retries (at most 30 s), so one failed attempt and a quick recovery never flip readiness.
pub const WATCH_FAILING_BOUND: Duration = Duration::from_secs(60);

/// The watches `/readyz` depends on.
pub const REQUIRED_WATCHES: [&str; 4] =
    ["Cluster", "Namespace", "ApplicationInstance", "Operation"];

/// Since when each watch has been failing (absent: healthy).
#[derive(Debug, Default)]
pub struct WatchHealth {
    failing_since: Mutex<BTreeMap<String, Instant>>,
}

impl WatchHealth {
    /// Records one result of `watch`'s stream: an error starts (or continues) a failure, anything
    /// delivered ends it.
    pub fn record<T, E>(&self, watch: &str, result: &Result<T, E>) {
        self.record_at(watch, result.is_ok(), Instant::now());
    }

    pub(crate) fn record_at(&self, watch: &str, ok: bool, now: Instant) {
        let mut failing = match self.failing_since.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if ok {
            failing.remove(watch);
        } else {
            failing.entry(watch.to_owned()).or_insert(now);
        }
    }

    /// Why the replica is not ready: the first required watch failing for longer than `bound` at
    /// `now`, as one line; `None` when none is.
    pub fn unready_reason(&self, now: Instant, bound: Duration) -> Option<String> {
        let failing = match self.failing_since.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        REQUIRED_WATCHES.iter().find_map(|watch| {
            let since = failing.get(*watch)?;
            let for_how_long = now.saturating_duration_since(*since);
            (for_how_long > bound).then(|| {
                format!(
                    "the {watch} watch has been failing for {}s (bound {}s)",
                    for_how_long.as_secs(),
                    bound.as_secs()
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_required_watch_failing_past_the_bound_makes_the_replica_unready_until_it_delivers() {
        let health = WatchHealth::default();
        let start = Instant::now();
        let bound = Duration::from_secs(60);
        assert_eq!(health.unready_reason(start, bound), None);
        health.record_at("Operation", false, start);
        // Failing, but not for longer than the bound; a second error does not restart the clock.
        health.record_at("Operation", false, start + Duration::from_secs(30));
        assert_eq!(
            health.unready_reason(start + Duration::from_secs(60), bound),
            None
        );
        assert_eq!(
            health.unready_reason(start + Duration::from_secs(61), bound),
            Some("the Operation watch has been failing for 61s (bound 60s)".to_owned())
        );
        // A watch that is not required never makes the replica unready.
        health.record_at("HelmRelease", false, start);
        health.record_at("Operation", true, start + Duration::from_secs(62));
        assert_eq!(
            health.unready_reason(start + Duration::from_secs(600), bound),
            None
        );
        // A failure after a recovery is timed from its own start.
        health.record_at("Namespace", false, start + Duration::from_secs(100));
        assert_eq!(
            health.unready_reason(start + Duration::from_secs(150), bound),
            None
        );
        assert!(
            health
                .unready_reason(start + Duration::from_secs(161), bound)
                .is_some_and(|r| r.starts_with("the Namespace watch"))
        );
    }
}
