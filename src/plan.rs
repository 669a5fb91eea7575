//! The plan: the exact objects a pass would server-side apply, built only from a
//! [`VerifiedIntent`](crate::pipeline::VerifiedIntent).
//!
//! Every object carries the labels that mark it as this source's (the prune set is computed from them)
//! and annotations that trace it back to the commit and file it came from.

use serde_json::{Map, Value};

use crate::pipeline::VerifiedIntent;

/// Label on every object the operator applies.
pub const LABEL_MANAGED_BY: &str = "app.vworkspace.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "vworkspace";
/// Label naming the cluster source an object came from.
pub const LABEL_CLUSTER: &str = "gitops.vworkspace.io/cluster";
/// Annotation: the commit an object was applied from.
pub const ANNOTATION_COMMIT: &str = "gitops.vworkspace.io/commit";
/// Annotation: the release serial an object was applied from.
pub const ANNOTATION_SERIAL: &str = "gitops.vworkspace.io/release-serial";
/// Annotation: the file an object was read from, relative to the repository root.
pub const ANNOTATION_SOURCE_PATH: &str = "gitops.vworkspace.io/source-path";

/// One object to apply.
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
    /// The whole object, labels and annotations included. Encrypted values stay ciphertext here.
    pub object: Value,
}

/// The objects a pass would apply, in a stable order (namespace, kind, name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The objects.
    pub objects: Vec<DesiredObject>,
}

/// Builds the plan from verified intent.
pub fn desired(verified: &VerifiedIntent) -> Plan {
    let commit = verified.commit().id().to_owned();
    let release = verified.release();
    let cluster = release.manifest().cluster.clone();
    let serial = release.serial().to_string();
    let mut objects: Vec<DesiredObject> = verified
        .intent()
        .objects()
        .map(|item| {
            let mut object = item.object;
            stamp(
                &mut object,
                &item.namespace,
                &[(LABEL_MANAGED_BY, MANAGED_BY), (LABEL_CLUSTER, &cluster)],
                &[
                    (ANNOTATION_COMMIT, &commit),
                    (ANNOTATION_SERIAL, &serial),
                    (
                        ANNOTATION_SOURCE_PATH,
                        &format!("clusters/{cluster}/{}", item.source_path),
                    ),
                ],
            );
            DesiredObject {
                api_version: item.api_version,
                kind: item.kind,
                namespace: item.namespace,
                name: item.name,
                object,
            }
        })
        .collect();
    objects.sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
    Plan { objects }
}

/// Sets the namespace and the operator's labels and annotations; the operator's keys win over any
/// the author wrote, so an author cannot disguise an object as another source's.
fn stamp(
    object: &mut Value,
    namespace: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    let metadata = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    metadata.insert("namespace".into(), Value::String(namespace.to_owned()));
    for (field, pairs) in [("labels", labels), ("annotations", annotations)] {
        let map = metadata
            .entry(field)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(map) = map.as_object_mut() {
            for (k, v) in pairs {
                map.insert((*k).to_owned(), Value::String((*v).to_owned()));
            }
        }
    }
}

impl Plan {
    /// Multi-document YAML of every object, with encrypted values shown as `<redacted>`.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for desired in &self.objects {
            let mut object = desired.object.clone();
            if let Some(values) = object.pointer_mut("/spec/values") {
                *values = crate::secrets::redact_values(values);
            }
            out.push_str("---\n");
            match serde_saphyr::to_string(&object) {
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
