//! Operation engines, one per type, as pure builders and status readers:
//!
//! | type | child | where |
//! |---|---|---|
//! | Backup | velero.io/v1 `Backup` (included namespace = the operation's) | the Velero namespace |
//! | Restore | velero.io/v1 `Restore` of `target.backupName` | the Velero namespace |
//! | Snapshot | snapshot.storage.k8s.io/v1 `VolumeSnapshot` of `target.persistentVolumeClaim` | the operation's |
//! | RunCommand | batch/v1 `Job` from a cluster-side template, as `vworkspace-operation-runner` | the operation's |
//! | Workflow | argoproj.io/v1alpha1 `Workflow` from the `WorkflowTemplate` named by `template` | the operation's |
//!
//! An Operation runs once: its child's name carries a digest of the spec ([`run_id`]), so re-applying
//! the same spec finds the same child (or the finished status) and starts nothing; a changed spec is a
//! new run. Parameters are data, never code: a RunCommand's image and command come from the template
//! ConfigMap the platform team owns, and parameters reach the container as `PARAM_*` variables.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::children::flux::owner_reference;
use crate::cluster::rbac::RUNNER;
use vworkspace_core::crd::{Operation, OperationPhase, OperationSpec, OperationType};
use vworkspace_core::plan::{LABEL_MANAGED_BY, MANAGED_BY};

pub use vworkspace_core::labels::LABEL_OPERATION;
pub use vworkspace_core::labels::LABEL_OPERATION_NAMESPACE;
pub use vworkspace_core::reasons::INVALID_OPERATION;
/// Reason of an Operation whose template the namespace may not run (controller and webhook).
pub use vworkspace_core::reasons::TEMPLATE_NOT_ALLOWED;
/// The ConfigMap (operator namespace) holding a RunCommand template is named with this prefix.
pub const RUN_COMMAND_TEMPLATE_PREFIX: &str = "operation-template-";

/// A child to create: its API coordinates and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    /// `group/version` (or `v1`).
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace.
    pub namespace: String,
    /// Name ([`run_id`]).
    pub name: String,
    /// The object.
    pub body: Value,
}

/// A RunCommand template, read from the ConfigMap `operation-template-<template>`: keys `image` and
/// `command` (a JSON list of strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTemplate {
    /// The container image.
    pub image: String,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// Why an Operation cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OperationError {
    /// The namespace may not run this template.
    #[error(
        "template {template:?} is not allowed in namespace {namespace}: allowed are [{allowed}]; add it to the namespace annotation app.vworkspace.io/allowed-operation-templates"
    )]
    TemplateNotAllowed {
        /// The template.
        template: String,
        /// The namespace.
        namespace: String,
        /// What is allowed.
        allowed: String,
    },
    /// A field the type needs is missing or malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl OperationError {
    /// The bounded reason for the Operation's status.
    pub fn reason(&self) -> &'static str {
        match self {
            OperationError::TemplateNotAllowed { .. } => TEMPLATE_NOT_ALLOWED,
            OperationError::Invalid { .. } => INVALID_OPERATION,
        }
    }
}

fn invalid(field: &str, reason: &str) -> OperationError {
    OperationError::Invalid {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Whether `namespace` may run `template` (the rule is [`vworkspace_core::admission::check_template`],
/// shared with the webhook).
pub fn check_template(
    template: &str,
    namespace: &str,
    allowed: &[String],
) -> Result<(), OperationError> {
    vworkspace_core::admission::check_template(template, namespace, allowed).map_err(|e| {
        OperationError::TemplateNotAllowed {
            template: e.template,
            namespace: e.namespace,
            allowed: e.allowed,
        }
    })
}

/// Parses a RunCommand template ConfigMap's data.
pub fn job_template(
    image: Option<&str>,
    command: Option<&str>,
    source: &str,
) -> Result<JobTemplate, OperationError> {
    let image = image
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| invalid(source, "key image is missing"))?;
    let command: Vec<String> = match command {
        Some(text) => serde_json::from_str(text)
            .map_err(|_| invalid(source, "key command must be a JSON list of strings"))?,
        None => Vec::new(),
    };
    Ok(JobTemplate {
        image: image.trim().to_owned(),
        command,
    })
}

/// The longest name of a child (a DNS label: Velero and the label values that repeat it).
const MAX_CHILD_NAME: usize = 63;
/// The hex digits of a digest suffix (40 bits).
const DIGEST_HEX: usize = 10;

/// `<prefix>-<digest>` in at most [`MAX_CHILD_NAME`] bytes: the prefix is cut, never the digest.
fn with_digest(prefix: &str, digest: &[u8]) -> String {
    let hex = hex::encode(digest);
    let mut prefix: String = prefix
        .chars()
        .take(MAX_CHILD_NAME - DIGEST_HEX - 1)
        .collect();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("{prefix}-{}", &hex[..DIGEST_HEX])
}

/// The run id of an Operation: `<name>-<first 10 hex of SHA-256 of the spec>`, at most 63 bytes.
/// A name too long to keep whole is cut, and the digest then covers the whole name as well as the
/// spec, so two Operations whose names share the kept prefix never share a run (a name that fits
/// keeps the id it always had: a finished run is recognized by it and never started again).
pub fn run_id(operation: &Operation) -> String {
    let spec = serde_json::to_vec(&operation.spec).unwrap_or_default();
    let name = operation.metadata.name.as_deref().unwrap_or("operation");
    if name.len() < MAX_CHILD_NAME - DIGEST_HEX {
        return with_digest(name, &Sha256::digest(&spec));
    }
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0]);
    hasher.update(&spec);
    with_digest(name, &hasher.finalize())
}

/// The name of a child in the Velero namespace, where the Operations of every namespace meet:
/// `<namespace>-<run id>` cut to fit, then a digest of the namespace, the Operation's name and the
/// run id, which is never cut. So `team/a-nightly` and `team-a/nightly` never share a Backup, and a
/// long namespace never cuts off what tells one run from the next.
pub fn velero_name(namespace: &str, operation: &str, run_id: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [namespace, operation, run_id] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    with_digest(&format!("{namespace}-{run_id}"), &hasher.finalize())
}

fn env_name(key: &str) -> String {
    let mut out = String::from("PARAM_");
    out.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    out
}

/// Where an Operation's child goes and how it is labelled: in the Operation's namespace, owned by
/// it; or in Velero's, found by its labels (owner references cannot cross namespaces).
struct Placement {
    namespace: String,
    labels: Value,
    owned: Value,
    in_velero: Value,
}

impl Placement {
    fn of(operation: &Operation, velero_namespace: &str) -> Result<Placement, OperationError> {
        let name = operation
            .metadata
            .name
            .clone()
            .ok_or_else(|| invalid("metadata.name", "missing"))?;
        let namespace = operation
            .metadata
            .namespace
            .clone()
            .ok_or_else(|| invalid("metadata.namespace", "missing"))?;
        let uid = operation.metadata.uid.clone().unwrap_or_default();
        let id = run_id(operation);
        let labels = json!({
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_OPERATION_NAMESPACE: namespace,
            LABEL_OPERATION: name,
        });
        let owned = json!({
            "name": id,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(
                vworkspace_core::intent::OPERATION_API_VERSION,
                "Operation",
                &name,
                &uid,
            )],
        });
        let in_velero = json!({"name": velero_name(&namespace, &name, &id), "namespace": velero_namespace, "labels": labels});
        Ok(Placement {
            namespace,
            labels,
            owned,
            in_velero,
        })
    }
}

/// A child of the kind `api_version`/`kind` (`plural`) with `body`.
fn child_of(api_version: &str, kind: &str, plural: &str, body: Value) -> Child {
    Child {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
        namespace: body["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        name: body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body,
    }
}

/// Builds the child of `operation`. `velero_namespace` is where Velero runs; `job` is the RunCommand
/// template (read by the caller), required for that type only.
pub fn child(
    operation: &Operation,
    velero_namespace: &str,
    job: Option<&JobTemplate>,
) -> Result<Child, OperationError> {
    let at = Placement::of(operation, velero_namespace)?;
    let spec = &operation.spec;
    match spec.operation_type {
        OperationType::Backup => Ok(backup(spec, &at)),
        OperationType::Restore => restore(spec, &at),
        OperationType::Snapshot => snapshot(spec, &at),
        OperationType::RunCommand => run_command(spec, &at, job),
        OperationType::Workflow => Ok(workflow(spec, &at)),
    }
}

fn backup(spec: &OperationSpec, at: &Placement) -> Child {
    let mut backup_spec = json!({"includedNamespaces": [at.namespace]});
    if let Some(instance) = &spec.target.application_instance {
        backup_spec["labelSelector"] =
            json!({"matchLabels": {"app.kubernetes.io/instance": instance}});
    }
    if let Some(ttl) = spec.parameters.get("ttl") {
        backup_spec["ttl"] = json!(ttl);
    }
    if let Some(location) = spec.parameters.get("storageLocation") {
        backup_spec["storageLocation"] = json!(location);
    }
    child_of(
        "velero.io/v1",
        "Backup",
        "backups",
        json!({"apiVersion": "velero.io/v1", "kind": "Backup", "metadata": at.in_velero, "spec": backup_spec}),
    )
}

fn restore(spec: &OperationSpec, at: &Placement) -> Result<Child, OperationError> {
    let backup = spec
        .target
        .backup_name
        .clone()
        .ok_or_else(|| invalid("spec.target.backupName", "a Restore names the backup"))?;
    Ok(child_of(
        "velero.io/v1",
        "Restore",
        "restores",
        json!({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": at.in_velero,
               "spec": {"backupName": backup, "includedNamespaces": [at.namespace]}}),
    ))
}

fn snapshot(spec: &OperationSpec, at: &Placement) -> Result<Child, OperationError> {
    let claim = spec.target.persistent_volume_claim.clone().ok_or_else(|| {
        invalid(
            "spec.target.persistentVolumeClaim",
            "a Snapshot names the PVC",
        )
    })?;
    let mut snapshot_spec = json!({"source": {"persistentVolumeClaimName": claim}});
    if let Some(class) = spec.parameters.get("volumeSnapshotClassName") {
        snapshot_spec["volumeSnapshotClassName"] = json!(class);
    }
    Ok(child_of(
        "snapshot.storage.k8s.io/v1",
        "VolumeSnapshot",
        "volumesnapshots",
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": at.owned, "spec": snapshot_spec}),
    ))
}

/// The container of a RunCommand Job: the template's image and command, the parameters as
/// environment, the restricted profile.
fn run_container(spec: &OperationSpec, template: &JobTemplate) -> Value {
    let env: Vec<Value> = spec
        .parameters
        .iter()
        .map(|(k, v)| json!({"name": env_name(k), "value": v}))
        .collect();
    let mut container = json!({
        "name": "run",
        "image": template.image,
        "env": env,
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    });
    if !template.command.is_empty() {
        container["command"] = json!(template.command);
    }
    container
}

fn run_command(
    spec: &OperationSpec,
    at: &Placement,
    job: Option<&JobTemplate>,
) -> Result<Child, OperationError> {
    let template = job.ok_or_else(|| {
        invalid(
            "spec.template",
            "no RunCommand template ConfigMap of this name",
        )
    })?;
    Ok(child_of(
        "batch/v1",
        "Job",
        "jobs",
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": at.owned, "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": at.labels},
                "spec": {
                    "serviceAccountName": RUNNER,
                    "automountServiceAccountToken": false,
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": true,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [run_container(spec, template)],
                },
            },
        }}),
    ))
}

fn workflow(spec: &OperationSpec, at: &Placement) -> Child {
    let parameters: Vec<Value> = spec
        .parameters
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    child_of(
        "argoproj.io/v1alpha1",
        "Workflow",
        "workflows",
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": at.owned, "spec": {
            "workflowTemplateRef": {"name": spec.template},
            "serviceAccountName": RUNNER,
            "arguments": {"parameters": parameters},
        }}),
    )
}

/// `(phase, reason, message)` without a message.
fn phase(phase: OperationPhase, reason: &str) -> (OperationPhase, String, String) {
    (phase, reason.to_owned(), String::new())
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// The phase of a run from its child's status: `(phase, reason, message)`.
pub fn phase_of(kind: &str, child: &Value) -> (OperationPhase, String, String) {
    let status = &child["status"];
    match kind {
        "Backup" | "Restore" => velero_phase(status),
        "VolumeSnapshot" => snapshot_phase(status),
        "Job" => job_phase(status),
        "Workflow" => workflow_phase(status),
        _ => phase(OperationPhase::Pending, "Unknown"),
    }
}

fn velero_phase(status: &Value) -> (OperationPhase, String, String) {
    match status["phase"].as_str() {
        Some("Completed") => phase(OperationPhase::Succeeded, "Completed"),
        Some(p @ ("Failed" | "PartiallyFailed" | "FailedValidation")) => (
            OperationPhase::Failed,
            p.to_owned(),
            text(&status["failureReason"]),
        ),
        Some(p @ ("InProgress" | "WaitingForPluginOperations" | "Finalizing")) => {
            phase(OperationPhase::Running, p)
        }
        _ => phase(OperationPhase::Pending, "New"),
    }
}

fn snapshot_phase(status: &Value) -> (OperationPhase, String, String) {
    if status["readyToUse"] == Value::Bool(true) {
        phase(OperationPhase::Succeeded, "ReadyToUse")
    } else if !status["error"].is_null() {
        (
            OperationPhase::Failed,
            "SnapshotError".into(),
            text(&status["error"]["message"]),
        )
    } else if status.is_null() {
        phase(OperationPhase::Pending, "Created")
    } else {
        phase(OperationPhase::Running, "Snapshotting")
    }
}

fn job_phase(status: &Value) -> (OperationPhase, String, String) {
    let condition = |type_: &str| {
        status["conditions"].as_array().and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == type_ && c["status"] == "True")
        })
    };
    if let Some(c) = condition("Complete") {
        (
            OperationPhase::Succeeded,
            "Complete".into(),
            text(&c["message"]),
        )
    } else if let Some(c) = condition("Failed") {
        (
            OperationPhase::Failed,
            c["reason"].as_str().unwrap_or("Failed").to_owned(),
            text(&c["message"]),
        )
    } else if status["active"].as_i64().unwrap_or(0) > 0 {
        phase(OperationPhase::Running, "Active")
    } else {
        phase(OperationPhase::Pending, "Created")
    }
}

fn workflow_phase(status: &Value) -> (OperationPhase, String, String) {
    match status["phase"].as_str() {
        Some("Succeeded") => (
            OperationPhase::Succeeded,
            "Succeeded".into(),
            text(&status["message"]),
        ),
        Some(p @ ("Failed" | "Error")) => (
            OperationPhase::Failed,
            p.to_owned(),
            text(&status["message"]),
        ),
        Some("Running") => phase(OperationPhase::Running, "Running"),
        _ => phase(OperationPhase::Pending, "Pending"),
    }
}

/// Whether a phase is final: the Operation never runs again for the same spec.
pub fn is_final(phase: Option<OperationPhase>) -> bool {
    matches!(
        phase,
        Some(OperationPhase::Succeeded | OperationPhase::Failed)
    )
}

/// The label selector of the pods of a Job or Workflow child, for `status.outputs.logsRef`.
pub fn pod_selector(kind: &str, child_name: &str) -> Option<String> {
    match kind {
        "Job" => Some(format!("job-name={child_name}")),
        "Workflow" => Some(format!("workflows.argoproj.io/workflow={child_name}")),
        _ => None,
    }
}
