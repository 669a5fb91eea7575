//! Namespaces where the API server refused the operator a request for lack of rights (RBAC's 403).
//!
//! The operator's rights in a managed namespace are RoleBindings the `Cluster` pass writes there
//! ([`crate::cluster::rbac`]). The pass trusts a namespace it checked for [`crate::cluster::RBAC_RECHECK`]
//! (an hour): reading three bindings per namespace on every pass would cost thousands of requests at
//! scale, and watching them takes `list`/`watch` on RoleBindings cluster-wide, a right the seed's RBAC
//! model does not grant. Deleting or re-pointing them is refused to everyone but the operator and
//! break glass (`deploy/admission-children.yaml`, `vworkspace-namespace-rbac-from-operator`); should
//! one go anyway (break glass, a cluster without the policy), the child controllers are the first to
//! meet the consequence: a 403 on a HelmRelease, a values Secret or a Job. They report the namespace
//! here; the `Cluster` controller re-runs at once, and its pass checks that namespace's RBAC again
//! before anything else, instead of within the hour.
//!
//! Bounded: at most [`MAX_NAMESPACES`] namespaces are held (a report beyond is dropped: the hourly
//! check still covers it), and one namespace triggers at most one re-run per [`REPORT_INTERVAL`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most namespaces held at once.
pub const MAX_NAMESPACES: usize = 4096;

/// The shortest time between two re-runs triggered by one namespace: a 403 that a binding does not
/// cure (an admission denial, a missing ClusterRole) must not make every pass start over.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(30);

/// The namespaces reported and not yet taken by a pass, with the last time each triggered a re-run.
#[derive(Debug, Default)]
pub struct AccessLost {
    reported: Mutex<Reported>,
    /// Woken when a namespace is newly reported (the `Cluster` controller re-runs).
    notify: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Reported {
    /// Reported and not yet taken.
    pending: HashSet<String>,
    /// When each namespace last triggered a re-run (pruned past [`REPORT_INTERVAL`]).
    triggered: HashMap<String, Instant>,
}

/// Whether `error` is the API server's refusal for lack of rights: a 403 that no admission plugin
/// wrote (an admission policy or webhook also answers 403, and a RoleBinding does not cure it).
pub fn is_rbac_refusal(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            status.code == 403
                && !status.message.contains("denied request")
                && !status.message.contains("denied the request")
        }
        _ => false,
    }
}

impl AccessLost {
    /// Records that a request in `namespace` was refused for lack of rights, at `now`. Returns whether
    /// this report wakes the `Cluster` controller (not when the namespace did within
    /// [`REPORT_INTERVAL`], nor when [`MAX_NAMESPACES`] are already held).
    pub fn report(&self, namespace: &str, now: Instant) -> bool {
        let mut reported = lock(&self.reported);
        reported
            .triggered
            .retain(|_, at| now.saturating_duration_since(*at) < REPORT_INTERVAL);
        if reported.triggered.contains_key(namespace)
            || reported.triggered.len() >= MAX_NAMESPACES
            || (reported.pending.len() >= MAX_NAMESPACES && !reported.pending.contains(namespace))
        {
            return false;
        }
        reported.pending.insert(namespace.to_owned());
        reported.triggered.insert(namespace.to_owned(), now);
        drop(reported);
        self.notify.notify_one();
        true
    }

    /// Takes the reported namespaces among `managed` (those of one `Cluster`'s pass); the others stay
    /// for the `Cluster` that manages them.
    pub fn take<'m>(&self, managed: impl IntoIterator<Item = &'m str>) -> Vec<String> {
        let mut reported = lock(&self.reported);
        if reported.pending.is_empty() {
            return Vec::new();
        }
        managed
            .into_iter()
            .filter(|ns| reported.pending.remove(*ns))
            .map(str::to_owned)
            .collect()
    }

    /// Resolves when a namespace is newly reported.
    pub async fn reported(&self) {
        self.notify.notified().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "Forbidden")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn only_rbacs_refusal_counts() {
        let cases = [
            (
                403,
                "helmreleases.helm.toolkit.fluxcd.io \"app\" is forbidden: User \"system:serviceaccount:vworkspace-system:vworkspace-app-operator\" cannot patch resource \"helmreleases\"",
                true,
            ),
            (
                403,
                "secrets \"x\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'p' denied request: no",
                false,
            ),
            (
                403,
                "admission webhook \"validate.vworkspace.io\" denied the request: a literal credential",
                false,
            ),
            (404, "not found", false),
            (409, "conflict", false),
        ];
        for (code, message, expected) in cases {
            assert_eq!(
                is_rbac_refusal(&api_error(code, message)),
                expected,
                "{code} {message}"
            );
        }
    }

    #[test]
    fn a_namespace_triggers_once_per_interval_and_is_taken_by_the_cluster_managing_it() {
        let lost = AccessLost::default();
        let t0 = Instant::now();
        assert!(lost.report("team-a", t0));
        assert!(
            !lost.report("team-a", t0 + Duration::from_secs(5)),
            "debounced"
        );
        assert!(lost.report("team-b", t0 + Duration::from_secs(5)));
        // A pass of a Cluster managing team-a and team-c takes team-a only.
        assert_eq!(lost.take(["team-a", "team-c"]), ["team-a"]);
        assert!(lost.take(["team-a"]).is_empty(), "taken once");
        assert_eq!(lost.take(["team-b"]), ["team-b"]);
        // Past the interval, team-a triggers again.
        assert!(lost.report("team-a", t0 + REPORT_INTERVAL + Duration::from_secs(1)));
        assert_eq!(lost.take(["team-a"]), ["team-a"]);
    }

    #[test]
    fn the_namespaces_held_are_bounded() {
        let lost = AccessLost::default();
        let t0 = Instant::now();
        for i in 0..MAX_NAMESPACES {
            assert!(lost.report(&format!("ns-{i}"), t0));
        }
        assert!(!lost.report("one-more", t0), "beyond the bound: dropped");
        // Once the Clusters took theirs and the interval passed, there is room again.
        let all: Vec<String> = (0..MAX_NAMESPACES).map(|i| format!("ns-{i}")).collect();
        assert_eq!(
            lost.take(all.iter().map(String::as_str)).len(),
            MAX_NAMESPACES
        );
        assert!(
            !lost.report("one-more", t0 + Duration::from_secs(1)),
            "still within the interval"
        );
        assert!(lost.report("one-more", t0 + REPORT_INTERVAL));
    }

    #[tokio::test]
    async fn a_new_report_wakes_the_waiter() {
        let lost = std::sync::Arc::new(AccessLost::default());
        let waiter = tokio::spawn({
            let lost = lost.clone();
            async move { lost.reported().await }
        });
        tokio::task::yield_now().await;
        assert!(lost.report("team-a", Instant::now()));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
