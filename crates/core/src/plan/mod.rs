//! The plan: the exact objects a pass would server-side apply, built only from a
//! [`VerifiedIntent`](crate::pipeline::VerifiedIntent).
//!
//! Every object carries the labels that mark it as this source's (the prune set is computed from them)
//! and annotations that trace it back to the commit and file it came from.

pub mod declared;
pub mod diff;
pub mod floor;
pub mod settled;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::compact::{Compact, CompactError};
use crate::crd::{ApplicationInstance, Operation};

use crate::pipeline::VerifiedIntent;

pub use crate::labels::{
    ANNOTATION_ADOPT, ANNOTATION_COMMIT, ANNOTATION_SERIAL, ANNOTATION_SOURCE_PATH, LABEL_CLUSTER,
    LABEL_MANAGED_BY, MANAGED_BY_VALUE as MANAGED_BY,
};

/// A typed object to apply.
#[derive(Debug, Clone, PartialEq)]
pub enum DesiredResource {
    /// An ApplicationInstance.
    ApplicationInstance(ApplicationInstance),
    /// An Operation.
    Operation(Operation),
}

/// The declared object as the verified intent holds it, before the plan stamps its labels and
/// annotations: shared with the intent (one [`Compact`] object, kept as JSON), it is what the
/// declared set keeps ([`crate::plan::declared`]), so that a long-running process holds the estate
/// once for both.
#[derive(Debug, Clone, PartialEq)]
pub enum DeclaredResource {
    /// An ApplicationInstance.
    ApplicationInstance(Compact<ApplicationInstance>),
    /// An Operation.
    Operation(Compact<Operation>),
}

/// One object to apply: the declared object (shared with the verified intent) and the labels and
/// annotations the plan stamps on it. The stamped object is built when it is written or shown
/// ([`DesiredObject::resource`]), never kept: a pass over 10,000 objects that writes none holds the
/// estate once, not twice.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObject {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// The namespace (from the path).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels` as applied: the author's, then the operator's (which win).
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations` as applied: the author's, then the operator's (which win).
    pub annotations: BTreeMap<String, String>,
    /// The object as the verified intent declares it (its spec is the one applied).
    pub declared: DeclaredResource,
}

impl DesiredObject {
    /// A desired object from a whole stamped object (its labels and annotations are the applied ones).
    pub fn from_resource(
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        resource: DesiredResource,
    ) -> Result<DesiredObject, CompactError> {
        let (declared, meta) = match resource {
            DesiredResource::ApplicationInstance(r) => (
                DeclaredResource::ApplicationInstance(Compact::new(&r)?),
                r.metadata,
            ),
            DesiredResource::Operation(r) => {
                (DeclaredResource::Operation(Compact::new(&r)?), r.metadata)
            }
        };
        Ok(DesiredObject {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels: meta.labels.unwrap_or_default(),
            annotations: meta.annotations.unwrap_or_default(),
            declared,
        })
    }

    /// The whole object to apply: the declared object with the namespace, labels and annotations
    /// stamped. Built on each call (the plan keeps no copy).
    pub fn resource(&self) -> Result<DesiredResource, CompactError> {
        let stamp = |meta: &mut ObjectMeta| {
            meta.namespace = Some(self.namespace.clone());
            meta.labels = Some(self.labels.clone());
            meta.annotations = Some(self.annotations.clone());
        };
        Ok(match &self.declared {
            DeclaredResource::ApplicationInstance(r) => {
                let mut r = r.get()?;
                stamp(&mut r.metadata);
                DesiredResource::ApplicationInstance(r)
            }
            DeclaredResource::Operation(r) => {
                let mut r = r.get()?;
                stamp(&mut r.metadata);
                DesiredResource::Operation(r)
            }
        })
    }

    /// The spec, as JSON.
    pub fn spec_json(&self) -> Result<serde_json::Value, CompactError> {
        match &self.declared {
            DeclaredResource::ApplicationInstance(r) => r.field("spec"),
            DeclaredResource::Operation(r) => r.field("spec"),
        }
    }
}

/// The metadata of a declared object, read without its spec.
#[derive(serde::Deserialize)]
struct MetadataOnly {
    #[serde(default)]
    metadata: ObjectMeta,
}

/// The objects a pass would apply, in a stable order (namespace, kind, name). Only [`desired`] builds
/// one, from verified intent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    objects: Vec<DesiredObject>,
}

/// Builds the plan from verified intent. Fails only if an object of the intent does not read back
/// from its compact form (a defect).
pub fn desired(verified: &VerifiedIntent) -> Result<Plan, CompactError> {
    let commit = verified.commit().id();
    let cluster = verified.release().manifest().cluster.as_str();
    let serial = verified.release().serial().to_string();
    // The operator's keys win over any the author wrote, so an author cannot disguise an object as
    // another source's.
    let stamped = |meta: &ObjectMeta, source_path: &str| {
        let mut labels = meta.labels.clone().unwrap_or_default();
        labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
        labels.insert(LABEL_CLUSTER.to_owned(), cluster.to_owned());
        let mut annotations = meta.annotations.clone().unwrap_or_default();
        annotations.insert(ANNOTATION_COMMIT.to_owned(), commit.to_string());
        annotations.insert(ANNOTATION_SERIAL.to_owned(), serial.clone());
        annotations.insert(
            ANNOTATION_SOURCE_PATH.to_owned(),
            format!("clusters/{cluster}/{source_path}"),
        );
        (labels, annotations)
    };
    let intent = verified.intent();
    let instances = intent.application_instances.iter().map(|item| {
        let meta = item.resource.part::<MetadataOnly>()?.metadata;
        let (labels, annotations) = stamped(&meta, &item.source_path);
        Ok(DesiredObject {
            api_version: crate::intent::APPLICATION_INSTANCE_API_VERSION.to_owned(),
            kind: "ApplicationInstance".to_owned(),
            namespace: item.namespace.clone(),
            name: item.name.clone(),
            labels,
            annotations,
            declared: DeclaredResource::ApplicationInstance(item.resource.clone()),
        })
    });
    let operations = intent.operations.iter().map(|item| {
        let meta = item.resource.part::<MetadataOnly>()?.metadata;
        let (labels, annotations) = stamped(&meta, &item.source_path);
        Ok(DesiredObject {
            api_version: crate::intent::OPERATION_API_VERSION.to_owned(),
            kind: "Operation".to_owned(),
            namespace: item.namespace.clone(),
            name: item.name.clone(),
            labels,
            annotations,
            declared: DeclaredResource::Operation(item.resource.clone()),
        })
    });
    let mut objects: Vec<DesiredObject> = instances
        .chain(operations)
        .collect::<Result<_, CompactError>>()?;
    objects.sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
    Ok(Plan { objects })
}

impl Plan {
    /// The objects, in order.
    pub fn objects(&self) -> &[DesiredObject] {
        &self.objects
    }

    /// A plan of hand-made objects, for the decision logic's unit tests.
    #[cfg(test)]
    pub(crate) fn from_objects(objects: Vec<DesiredObject>) -> Plan {
        Plan { objects }
    }

    /// Every object as a Kubernetes `List` (what `kubectl get -o json` prints), with encrypted values
    /// shown as `<redacted>`.
    pub fn to_json(&self) -> serde_json::Value {
        let items: Vec<serde_json::Value> = self
            .objects
            .iter()
            .map(|desired| {
                let rendered = match desired.resource() {
                    Ok(DesiredResource::ApplicationInstance(mut redacted)) => {
                        if let Some(values) = redacted.spec.values.as_mut() {
                            *values = crate::secrets::redact_values(values);
                        }
                        serde_json::to_value(&redacted).map_err(|e| e.to_string())
                    }
                    Ok(DesiredResource::Operation(resource)) => {
                        serde_json::to_value(&resource).map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                rendered.unwrap_or_else(|e| {
                    serde_json::json!({"error": format!("cannot render {}/{}: {e}", desired.namespace, desired.name)})
                })
            })
            .collect();
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
    }

    /// Multi-document YAML of every object, with encrypted values shown as `<redacted>`.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for desired in &self.objects {
            let rendered = match desired.resource() {
                Ok(DesiredResource::ApplicationInstance(mut redacted)) => {
                    if let Some(values) = redacted.spec.values.as_mut() {
                        *values = crate::secrets::redact_values(values);
                    }
                    serde_saphyr::to_string(&redacted).map_err(|e| e.to_string())
                }
                Ok(DesiredResource::Operation(resource)) => {
                    serde_saphyr::to_string(&resource).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            out.push_str("---\n");
            match rendered {
                Ok(yaml) => out.push_str(&yaml),
                // Serializing a JSON value cannot fail for want of a map key type; keep going anyway.
                Err(e) => out.push_str(&format!(
                    "# cannot render {}/{}: {e}\n",
                    desired.namespace, desired.name
                )),
            }
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }
}
