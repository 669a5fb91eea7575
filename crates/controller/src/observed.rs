//! Gauges read from the watch stores at scrape time, so that they can never drift from what the
//! operator sees: each Cluster's `Ready`, since when it is not Ready, its poll interval and applied
//! release serial (the not-Ready alert counts intervals from these), and how many
//! ApplicationInstances are Ready and how many Operations are in each phase. Labels stay bounded:
//! the Cluster's name (one series per Cluster, an object only the cluster admin creates), a fixed
//! readiness value, a phase of the CRD's enum.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use vworkspace_core::crd::{Cluster, Operation, OperationPhase, WatchedInstance};

/// The stores the gauges are read from; empty until the controllers start (`run --once` has none).
#[derive(Clone)]
pub struct ObservedStores {
    /// Every `Cluster`.
    pub clusters: Store<Cluster>,
    /// Every ApplicationInstance.
    pub instances: Store<WatchedInstance>,
    /// Every Operation.
    pub operations: Store<Operation>,
}

/// The collector registered once; the stores are handed to it when the controllers start.
#[derive(Clone, Default)]
pub struct Observed(Arc<OnceLock<ObservedStores>>);

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("stores", &self.0.get().is_some())
            .finish()
    }
}

impl Observed {
    /// Reads from `stores` from now on (the first call wins: one set of controllers per process).
    pub fn watch(&self, stores: ObservedStores) {
        let _ = self.0.set(stores);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabel {
    ready: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

fn ready_value(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> &'static str {
    match conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
    {
        Some("True") => "true",
        Some("False") => "false",
        _ => "unknown",
    }
}

fn phase_value(operation: &Operation) -> &'static str {
    match operation.status.as_ref().and_then(|s| s.phase.as_ref()) {
        None => "None",
        Some(OperationPhase::Pending) => "Pending",
        Some(OperationPhase::Running) => "Running",
        Some(OperationPhase::Succeeded) => "Succeeded",
        Some(OperationPhase::Failed) => "Failed",
    }
}

fn encode<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &M,
) -> Result<(), std::fmt::Error> {
    let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(family)
}

/// The per-Cluster gauges of one scrape.
#[derive(Default)]
struct ClusterGauges {
    ready: Family<ClusterLabel, Gauge>,
    serial: Family<ClusterLabel, Gauge>,
    interval: Family<ClusterLabel, Gauge<f64, AtomicU64>>,
    not_ready_since: Family<ClusterLabel, Gauge<f64, AtomicU64>>,
}

impl ClusterGauges {
    fn observe(&self, cluster: &Cluster) {
        let label = ClusterLabel {
            cluster: cluster.name_any(),
        };
        let status = cluster.status.as_ref();
        let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
        let is_ready = ready_value(conditions) == "true";
        self.ready.get_or_create(&label).set(i64::from(is_ready));
        if let Some(applied) = status.and_then(|s| s.last_applied_serial) {
            self.serial
                .get_or_create(&label)
                .set(i64::try_from(applied).unwrap_or(i64::MAX));
        }
        // An interval the schema would refuse is not exported (the pass refuses it too).
        if let Ok(interval) = vworkspace_core::crd::parse_interval(&cluster.spec.source.interval) {
            self.interval
                .get_or_create(&label)
                .set(interval.as_secs_f64());
        }
        if !is_ready {
            // Since the Ready condition last changed; a Cluster never reconciled yet counts from
            // its creation.
            let since = conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.last_transition_time.0)
                .or_else(|| cluster.metadata.creation_timestamp.as_ref().map(|t| t.0));
            if let Some(since) = since {
                self.not_ready_since
                    .get_or_create(&label)
                    .set(since.as_millisecond() as f64 / 1000.0);
            }
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode(
            encoder,
            "cluster_ready",
            "1 when the Cluster's Ready condition is True (the declared release is installed and healthy)",
            &self.ready,
        )?;
        encode(
            encoder,
            "cluster_release_serial",
            "The serial of the release the Cluster last applied",
            &self.serial,
        )?;
        encode(
            encoder,
            "cluster_interval_seconds",
            "The Cluster's poll interval (spec.source.interval)",
            &self.interval,
        )?;
        encode(
            encoder,
            "cluster_not_ready_since_timestamp_seconds",
            "Unix time since which the Cluster is not Ready (its Ready condition's last transition); absent while Ready",
            &self.not_ready_since,
        )
    }
}

impl Collector for Observed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let clusters = ClusterGauges::default();
        let instances: Family<ReadyLabel, Gauge> = Family::default();
        let operations: Family<PhaseLabel, Gauge> = Family::default();
        if let Some(stores) = self.0.get() {
            for cluster in stores.clusters.state() {
                clusters.observe(&cluster);
            }
            for instance in stores.instances.state() {
                let conditions = instance.status.as_ref().map(|s| s.conditions.as_slice());
                let value = ready_value(conditions.unwrap_or_default());
                instances.get_or_create(&ReadyLabel { ready: value }).inc();
            }
            for operation in stores.operations.state() {
                let phase = phase_value(&operation);
                operations.get_or_create(&PhaseLabel { phase }).inc();
            }
        }
        clusters.encode(&mut encoder)?;
        encode(
            &mut encoder,
            "application_instances",
            "ApplicationInstances by their Ready condition (true, false, unknown)",
            &instances,
        )?;
        encode(
            &mut encoder,
            "operations",
            "Operations by phase",
            &operations,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, interval: &str, ready: Option<(&str, &str)>) -> Cluster {
        let conditions: Vec<serde_json::Value> = ready
            .into_iter()
            .map(|(status, since)| {
                serde_json::json!({"type": "Ready", "status": status, "reason": "R", "message": "",
                                   "lastTransitionTime": since})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {
                "clusterId": name,
                "source": {"url": "https://git.example.org/intent.git", "ref": {"branch": "main"},
                           "interval": interval},
                "commitSigners": {"configMapRef": {"name": "commit-signers"}},
                "release": {"signersConfigMapRef": {"name": "release-signers"}, "threshold": 1},
                "decryption": {"identitySecretRef": {"name": "age-identity"}}
            },
            "status": {"conditions": conditions}
        }))
        .expect("a Cluster")
    }

    fn label(name: &str) -> ClusterLabel {
        ClusterLabel {
            cluster: name.into(),
        }
    }

    #[test]
    fn not_ready_since_its_last_transition_or_creation_and_its_interval_in_seconds() {
        let gauges = ClusterGauges::default();
        gauges.observe(&cluster(
            "down",
            "30s",
            Some(("False", "2026-01-02T00:00:00Z")),
        ));
        gauges.observe(&cluster("new", "1h", None));
        gauges.observe(&cluster("up", "5m", Some(("True", "2026-01-02T00:00:00Z"))));
        let since = |name| gauges.not_ready_since.get_or_create(&label(name)).get();
        assert_eq!(since("down"), 1_767_312_000.0);
        assert_eq!(
            since("new"),
            1_767_225_600.0,
            "never reconciled: since created"
        );
        let interval = |name| gauges.interval.get_or_create(&label(name)).get();
        assert_eq!(
            (interval("down"), interval("new"), interval("up")),
            (30.0, 3600.0, 300.0)
        );
        assert_eq!(gauges.ready.get_or_create(&label("up")).get(), 1);
        assert_eq!(gauges.ready.get_or_create(&label("down")).get(), 0);
        // A Ready Cluster has no not-Ready series (the family had none for it before the lookup).
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("since", "", gauges.not_ready_since.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(!text.contains("cluster=\"up\""), "{text}");
    }
}
