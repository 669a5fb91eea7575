//! `Operation` (ops.vworkspace.io/v1alpha1): a one-shot operational task in a managed namespace.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired operation.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(
        kube_core = "::kube_core",
        k8s_openapi = "::k8s_openapi",
        schemars = "::schemars",
        serde = "::serde",
        serde_json = "::serde_json"
    ),
    group = "ops.vworkspace.io",
    version = "v1alpha1",
    kind = "Operation",
    derive = "PartialEq",
    namespaced,
    shortname = "op",
    category = "vworkspace",
    doc = "A one-shot operational task (backup, restore, snapshot, command, workflow) run from an allowed template.",
    status = "OperationStatus",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationSpec {
    /// What kind of operation.
    #[serde(rename = "type")]
    pub operation_type: OperationType,
    /// The operation template to run; it must be allowed in the namespace.
    pub template: String,
    /// What the operation acts on.
    #[serde(default)]
    pub target: OperationTarget,
    /// Template parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// The operation types, one engine each.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationType {
    /// A Velero Backup of the namespace.
    Backup,
    /// A Velero Restore.
    Restore,
    /// A CSI VolumeSnapshot of a PVC.
    Snapshot,
    /// A Job running as `vworkspace-operation-runner`.
    RunCommand,
    /// An Argo Workflow from a WorkflowTemplate.
    Workflow,
}

/// What an operation acts on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationTarget {
    /// An ApplicationInstance in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_instance: Option<String>,
    /// A PersistentVolumeClaim in the same namespace (Snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<String>,
    /// The backup to restore from (Restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
}

/// Phases of an operation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationPhase {
    /// Accepted, not started.
    Pending,
    /// Its child is running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error, or refused.
    Failed,
}

/// What the operator observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// The phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<OperationPhase>,
    /// The run this status describes: the child's name, `<name>-<digest of the spec>`. A finished
    /// run with the same id is never started again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// A machine-readable reason (e.g. `OperationTemplateNotAllowedInNamespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the child was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// What it produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<OperationOutputs>,
}

/// Outputs of an operation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutputs {
    /// The pod whose logs tell what happened (`<namespace>/<pod>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_ref: Option<String>,
    /// The Velero Backup made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// The VolumeSnapshot made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
}
