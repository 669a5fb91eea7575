//! `ApplicationInstance` (apps.vworkspace.io/v1alpha1): one Helm chart installed in a managed namespace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of an application instance.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(
        kube_core = "::kube_core",
        k8s_openapi = "::k8s_openapi",
        schemars = "::schemars",
        serde = "::serde",
        serde_json = "::serde_json"
    ),
    group = "apps.vworkspace.io",
    version = "v1alpha1",
    kind = "ApplicationInstance",
    derive = "PartialEq",
    namespaced,
    shortname = "ai",
    category = "vworkspace",
    doc = "One Helm chart installed in a managed namespace, materialized as a Flux HelmRelease.",
    status = "ApplicationInstanceStatus",
    printcolumn = r#"{"name":"Chart","type":"string","jsonPath":".spec.chart.name"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.chart.version"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","priority":1,"jsonPath":".spec.chart.digest"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationInstanceSpec {
    /// The chart to install.
    pub chart: ChartRef,
    /// The Helm release name (default: the instance's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Chart values. String leaves that are ASCII-armored age values are secrets: they are decrypted
    /// by the operator and reach the chart through a Secret, never inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::preserve_unknown_object")]
    pub values: Option<serde_json::Value>,
    /// Stop reconciling this instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// Where a chart comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartRef {
    /// The chart repository: an `https://` Helm repository or an `oci://` registry path.
    pub repository: String,
    /// The chart name.
    pub name: String,
    /// The exact chart version.
    pub version: String,
    /// The OCI manifest digest of the chart (`sha256:<64 lowercase hex>`), `oci://` charts only:
    /// Flux pulls exactly this artifact (`OCIRepository.spec.ref.digest`) whatever the tag points
    /// to now, so the release's signers approve these bytes, not a tag a registry can move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sha256:[a-f0-9]{64}$"))]
    pub digest: Option<String>,
}

/// What the operator observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationInstanceStatus {
    /// Conditions (`Ready` mirrors the HelmRelease).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The HelmRelease that materializes this instance (`<namespace>/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_release_ref: Option<String>,
}
