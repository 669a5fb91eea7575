//! Prometheus metrics of the reconciler. Labels are bounded sets: a reason constant or a result,
//! never an object name, a URL or error text (an attacker who controls the repository must not be
//! able to grow the series count).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `kind` label values of [`GuardrailLabel`].
pub const GUARDRAIL_REPAIR_KINDS: [&str; 3] = [
    "pod_security_weakened",
    "pod_security_drift",
    "network_policy",
];

/// The `kind` of a guardrail repair: `pod_security_weakened`, `pod_security_drift` or
/// `network_policy` (never a namespace name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardrailLabel {
    /// What was repaired.
    pub kind: &'static str,
}

/// The `reason` label: one of the constants of [`vworkspace_core::reasons`] or
/// [`crate::cluster::conditions`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: &'static str,
}

/// The labels of a refused child object: the reason constant and the kind (`ApplicationInstance` or
/// `Operation`), never a name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    /// The reason (one of [`vworkspace_core::plan::declared`]'s constants).
    pub reason: &'static str,
    /// The kind.
    pub kind: &'static str,
}

/// The `cluster` label: a `Cluster` object's name (one series per Cluster).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    /// The Cluster's name.
    pub cluster: String,
}

/// The `result` label of a pass: `success` or `failure`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// The result.
    pub result: &'static str,
}

/// The labels of a push receiver request: the forge its headers name and what became of it (both
/// fixed sets: `github`/`gitlab`/`gitea`/`generic`; `triggered`, `ignored`, `bad_signature`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabel {
    /// The forge.
    pub forge: &'static str,
    /// The outcome.
    pub outcome: &'static str,
}

/// The `watch` label: which watch failed (`Cluster`, `ApplicationInstance`, `Operation`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabel {
    /// The watched kind.
    pub watch: String,
}

/// The `kind` label of a child: one of [`CHILD_KINDS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChildKindLabel {
    /// The child's kind.
    pub kind: &'static str,
}

/// The kinds of child compared on their whole content (the `kind` label's bounded set).
pub const CHILD_KINDS: [&str; 4] = ["HelmRelease", "HelmRepository", "OCIRepository", "Secret"];

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Duration of whole passes, by result.
    pub pass_duration: Family<ResultLabel, Histogram>,
    /// Unix time of the last pass that verified, applied and pruned.
    pub last_success: Gauge<f64, AtomicU64>,
    /// Objects written by server-side apply (created or updated).
    pub applied: Counter,
    /// Objects deleted by pruning.
    pub pruned: Counter,
    /// Passes refused or failed, by reason.
    pub failures: Family<ReasonLabel, Counter>,
    /// Whether this replica is the active one (1: it holds the leader Lease, or runs without leader
    /// election) or not (0).
    pub leader: Gauge,
    /// ApplicationInstances and Operations the child controllers refused (not declared by the
    /// verified release, or altered), by reason and kind.
    pub refused: Family<RefusalLabel, Counter>,
    /// Unix time at which each Cluster's last verified release expires (alert well before it).
    pub release_expiry: Family<ClusterLabel, Gauge<f64, AtomicU64>>,
    /// Requests to the push receiver, by forge and outcome.
    pub receiver_requests: Family<ReceiverLabel, Counter>,
    /// Commit statuses sent to forges, by outcome (`sent`, `failed`, `dropped`).
    pub commit_statuses: Family<ResultLabel, Counter>,
    /// Duration of fetching and verifying a Cluster's source (the first step of a pass).
    pub fetch_duration: Histogram,
    /// Watch (and controller queue) errors, by watched kind: a watch that keeps failing is
    /// re-established with back-off, and this counter keeps moving.
    pub watch_errors: Family<WatchLabel, Counter>,
    /// Unix time at which the webhook's serving certificate expires (0 until one is loaded).
    pub webhook_certificate_expiry: Gauge<f64, AtomicU64>,
    /// Managed namespaces' guardrails the Cluster pass restored, by kind ([`GuardrailLabel`]).
    pub guardrail_repairs: Family<GuardrailLabel, Counter>,
    /// Gauges read from the watch stores at scrape time ([`crate::observed`]).
    pub observed: crate::observed::Observed,
    /// Since when each required watch has been failing: `/readyz` reads it
    /// ([`crate::watch_health`]).
    pub watch_health: crate::watch_health::WatchHealth,
    /// Children whose spec held fields another writer added and the release does not declare,
    /// removed, by kind.
    pub undeclared_fields_removed: Family<ChildKindLabel, Counter>,
}

fn pass_histogram() -> Histogram {
    // 10 ms to ~80 s: an unchanged pass is milliseconds, a first clone of a large repository is tens
    // of seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.01, 2.0, 14,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vworkspace");
        let metrics = Metrics {
            pass_duration: Family::new_with_constructor(pass_histogram),
            last_success: Gauge::default(),
            applied: Counter::default(),
            pruned: Counter::default(),
            failures: Family::default(),
            leader: Gauge::default(),
            refused: Family::default(),
            release_expiry: Family::default(),
            receiver_requests: Family::default(),
            commit_statuses: Family::default(),
            fetch_duration: pass_histogram(),
            watch_errors: Family::default(),
            webhook_certificate_expiry: Gauge::default(),
            guardrail_repairs: Family::default(),
            observed: crate::observed::Observed::default(),
            watch_health: Default::default(),
            undeclared_fields_removed: Family::default(),
            registry: Registry::default(),
        };
        register(&metrics, &mut registry);
        registry.register_collector(Box::new(metrics.observed.clone()));
        metrics.initialize_series();
        Metrics {
            registry,
            ..metrics
        }
    }
}

/// Registers every metric of `metrics` but the scrape-time collector.
fn register(metrics: &Metrics, registry: &mut Registry) {
    registry.register(
        "pass_duration_seconds",
        "Duration of a reconcile pass (fetch to status)",
        metrics.pass_duration.clone(),
    );
    registry.register(
        "last_success_timestamp_seconds",
        "Unix time of the last pass that applied and pruned successfully",
        metrics.last_success.clone(),
    );
    registry.register(
        "objects_applied",
        "Objects created or updated by server-side apply",
        metrics.applied.clone(),
    );
    registry.register(
        "objects_pruned",
        "Objects deleted because the source no longer declares them",
        metrics.pruned.clone(),
    );
    registry.register(
        "pass_failures",
        "Passes that were refused or failed, by reason",
        metrics.failures.clone(),
    );
    registry.register(
        "leader",
        "1 when this replica is the active one (holds the leader Lease, or runs without leader election)",
        metrics.leader.clone(),
    );
    registry.register(
        "children_refused",
        "ApplicationInstances and Operations refused because the verified release does not declare them as they are, by reason and kind",
        metrics.refused.clone(),
    );
    registry.register(
        "release_expiry_timestamp_seconds",
        "Unix time at which the Cluster's last verified release expires; after it every pass is refused",
        metrics.release_expiry.clone(),
    );
    registry.register(
        "receiver_requests",
        "Requests to the push receiver, by forge and outcome (triggered, ignored, bad_signature, unknown_repository, too_large, rate_limited, ...)",
        metrics.receiver_requests.clone(),
    );
    registry.register(
        "commit_statuses",
        "Commit statuses sent to the forge, by result (sent, failed after retries, dropped when the queue was full)",
        metrics.commit_statuses.clone(),
    );
    registry.register(
        "fetch_duration_seconds",
        "Duration of fetching and verifying a Cluster's source",
        metrics.fetch_duration.clone(),
    );
    registry.register(
        "namespace_guardrail_repairs",
        "Managed namespaces' guardrails restored by the Cluster pass, by kind (pod_security_weakened: the enforce level was removed or lowered; pod_security_drift: another Pod Security label changed; network_policy: a NetworkPolicy deleted or edited)",
        metrics.guardrail_repairs.clone(),
    );
    registry.register(
        "watch_errors",
        "Watch and controller queue errors, by watched kind (each is retried with back-off)",
        metrics.watch_errors.clone(),
    );
    registry.register(
        "child_undeclared_fields_removed",
        "Children whose spec held fields another writer added and the verified release does not declare, removed, by kind",
        metrics.undeclared_fields_removed.clone(),
    );
    registry.register(
        "webhook_certificate_expiry_timestamp_seconds",
        "Unix time at which the admission webhook's serving certificate expires",
        metrics.webhook_certificate_expiry.clone(),
    );
}

/// The reasons a pass is refused or fails with ([`vworkspace_core::reasons`]), exported at 0 from the
/// start: `increase()` in an alert sees the first refusal only if the series existed before it.
pub const PASS_FAILURE_REASONS: [&str; 13] = {
    use vworkspace_core::reasons as r;
    [
        r::FETCH_FAILED,
        r::COMMIT_SIGNATURE_INVALID,
        r::HISTORY_INVALID,
        r::TREE_INVALID,
        r::RELEASE_INVALID,
        r::INTENT_INVALID,
        r::VALUES_INVALID,
        r::CONFIGURATION_INVALID,
        r::API_REQUEST_FAILED,
        r::OWNERSHIP_CONFLICT,
        r::NAMESPACE_NOT_MANAGED,
        r::NOT_LEADER,
        r::INTERRUPTED,
    ]
};

/// The refusals of child objects exported at 0 from the start (as [`PASS_FAILURE_REASONS`]).
pub const CHILD_REFUSALS: [(&str, &str); 6] = {
    use vworkspace_core::reasons as r;
    [
        (r::NOT_DECLARED, "ApplicationInstance"),
        (r::SPEC_DIFFERS, "ApplicationInstance"),
        (r::INLINE_CREDENTIAL, "ApplicationInstance"),
        (r::NOT_DECLARED, "Operation"),
        (r::SPEC_DIFFERS, "Operation"),
        (r::TEMPLATE_NOT_ALLOWED, "Operation"),
    ]
};

/// The watches whose errors are counted.
pub const WATCHES: [&str; 4] = ["Cluster", "ApplicationInstance", "Operation", "HelmRelease"];

impl Metrics {
    /// Creates the series of bounded label sets at 0, so that they are exported before the first event.
    fn initialize_series(&self) {
        for result in ["success", "failure"] {
            let _ = self.pass_duration.get_or_create(&ResultLabel { result });
        }
        for reason in PASS_FAILURE_REASONS {
            let _ = self.failures.get_or_create(&ReasonLabel { reason });
        }
        for (reason, kind) in CHILD_REFUSALS {
            let _ = self.refused.get_or_create(&RefusalLabel { reason, kind });
        }
        for kind in CHILD_KINDS {
            let _ = self
                .undeclared_fields_removed
                .get_or_create(&ChildKindLabel { kind });
        }
        for kind in GUARDRAIL_REPAIR_KINDS {
            let _ = self
                .guardrail_repairs
                .get_or_create(&GuardrailLabel { kind });
        }
        for watch in WATCHES {
            let _ = self.watch_errors.get_or_create(&WatchLabel {
                watch: watch.to_owned(),
            });
        }
    }

    /// Records one finished pass.
    pub fn record_pass(&self, seconds: f64, failure: Option<&'static str>) {
        let result = if failure.is_some() {
            "failure"
        } else {
            "success"
        };
        self.pass_duration
            .get_or_create(&ResultLabel { result })
            .observe(seconds);
        match failure {
            Some(reason) => {
                self.failures.get_or_create(&ReasonLabel { reason }).inc();
            }
            None => {
                let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
                self.last_success.set(now);
            }
        }
    }

    /// Counts a child of `kind` whose undeclared spec fields were removed (a kind outside
    /// [`CHILD_KINDS`] is counted as `other`, so the label set stays bounded).
    pub fn count_undeclared_removed(&self, kind: &str) {
        let kind = CHILD_KINDS
            .iter()
            .find(|k| **k == kind)
            .copied()
            .unwrap_or("other");
        self.undeclared_fields_removed
            .get_or_create(&ChildKindLabel { kind })
            .inc();
    }

    /// Counts a failed watch (or controller queue error) of `watch`; a reconcile error is not one.
    pub fn count_watch_error<T, R, W>(
        &self,
        watch: &str,
        result: &Result<T, kube::runtime::controller::Error<R, W>>,
    ) where
        R: std::error::Error + 'static,
        W: std::error::Error + 'static,
    {
        if let Err(kube::runtime::controller::Error::QueueError(_)) = result {
            self.count_failed_watch(watch);
        }
    }

    /// Counts one failed watch of `watch` (one of [`WATCHES`], so the label set stays bounded).
    pub fn count_failed_watch(&self, watch: &str) {
        self.watch_errors
            .get_or_create(&WatchLabel {
                watch: watch.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_carries_every_metric_with_bounded_labels() {
        let metrics = Metrics::default();
        metrics.record_pass(0.5, None);
        metrics.record_pass(0.1, Some(vworkspace_core::reasons::RELEASE_INVALID));
        metrics.applied.inc_by(3);
        metrics.pruned.inc();
        metrics.count_failed_watch(crate::children::watches::HELM_RELEASE_WATCH);
        metrics
            .refused
            .get_or_create(&RefusalLabel {
                reason: "NotDeclaredInRelease",
                kind: "Operation",
            })
            .inc();
        metrics.count_undeclared_removed("HelmRelease");
        metrics.count_undeclared_removed("Tenant's own kind");
        let text = metrics.encode();
        for name in [
            "vworkspace_child_undeclared_fields_removed_total{kind=\"HelmRelease\"} 1",
            "vworkspace_child_undeclared_fields_removed_total{kind=\"Secret\"} 0",
            "vworkspace_child_undeclared_fields_removed_total{kind=\"other\"} 1",
            "vworkspace_pass_duration_seconds_bucket{le=",
            "vworkspace_pass_duration_seconds_count{result=\"success\"} 1",
            "vworkspace_objects_applied_total 3",
            "vworkspace_objects_pruned_total 1",
            "vworkspace_pass_failures_total{reason=\"ReleaseInvalid\"} 1",
            "vworkspace_last_success_timestamp_seconds ",
            "vworkspace_leader 0",
            "vworkspace_children_refused_total{reason=\"NotDeclaredInRelease\",kind=\"Operation\"} 1",
            "vworkspace_fetch_duration_seconds_count 0",
            "vworkspace_webhook_certificate_expiry_timestamp_seconds 0",
            "# TYPE vworkspace_watch_errors counter",
            "vworkspace_watch_errors_total{watch=\"HelmRelease\"} 1",
            "vworkspace_watch_errors_total{watch=\"Operation\"} 0",
            "# TYPE vworkspace_cluster_ready gauge",
            "# TYPE vworkspace_cluster_release_serial gauge",
            "# TYPE vworkspace_application_instances gauge",
            "# TYPE vworkspace_operations gauge",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
