//! Gauges read from the watch stores at scrape time, so that they can never drift from what the
//! operator sees: each Cluster's `Ready` and applied release serial, and how many
//! ApplicationInstances are Ready and how many Operations are in each phase. Labels stay bounded:
//! the Cluster's name (one series per Cluster, an object only the cluster admin creates), a fixed
//! readiness value, a phase of the CRD's enum.

use std::sync::{Arc, OnceLock};

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use vworkspace_core::crd::{ApplicationInstance, Cluster, Operation, OperationPhase};

/// The stores the gauges are read from; empty until the controllers start (`run --once` has none).
#[derive(Clone)]
pub struct ObservedStores {
    /// Every `Cluster`.
    pub clusters: Store<Cluster>,
    /// Every ApplicationInstance.
    pub instances: Store<ApplicationInstance>,
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

impl Collector for Observed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ready: Family<ClusterLabel, Gauge> = Family::default();
        let serial: Family<ClusterLabel, Gauge> = Family::default();
        let instances: Family<ReadyLabel, Gauge> = Family::default();
        let operations: Family<PhaseLabel, Gauge> = Family::default();
        if let Some(stores) = self.0.get() {
            for cluster in stores.clusters.state() {
                let label = ClusterLabel {
                    cluster: cluster.name_any(),
                };
                let status = cluster.status.as_ref();
                let is_ready = status.is_some_and(|s| ready_value(&s.conditions) == "true");
                ready.get_or_create(&label).set(i64::from(is_ready));
                if let Some(applied) = status.and_then(|s| s.last_applied_serial) {
                    serial
                        .get_or_create(&label)
                        .set(i64::try_from(applied).unwrap_or(i64::MAX));
                }
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
        encode(
            &mut encoder,
            "cluster_ready",
            "1 when the Cluster's Ready condition is True (the declared release is installed and healthy)",
            &ready,
        )?;
        encode(
            &mut encoder,
            "cluster_release_serial",
            "The serial of the release the Cluster last applied",
            &serial,
        )?;
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
