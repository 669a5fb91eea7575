//! Custom resource types. The Rust types are the source of truth; `crds/` is generated from them by
//! `vworkspace-operator crdgen --out-dir crds` and `tests/crds.rs` fails when the two differ.

mod application_instance;
mod cluster;
pub mod inventory;
mod namespace_policy;
mod operation;
mod watched_instance;

pub use application_instance::*;
pub use cluster::*;
pub use namespace_policy::*;
pub use operation::*;
pub use watched_instance::*;

use kube_core::CustomResourceExt;

/// Why the CRDs could not be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrdError {
    /// Serialization failed.
    #[error("cannot render CRD {name}: {message}")]
    Render {
        /// The CRD.
        name: String,
        /// Why.
        message: String,
    },
}

/// A free-form object whose fields the API server keeps as written.
pub(crate) fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Every CRD as `(file name, YAML)`, in a stable order.
pub fn render_all() -> Result<Vec<(String, String)>, CrdError> {
    let crds = [ApplicationInstance::crd(), Operation::crd(), Cluster::crd()];
    crds.iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            serde_saphyr::to_string(crd)
                .map(|yaml| (format!("{name}.yaml"), yaml))
                .map_err(|e| CrdError::Render {
                    name,
                    message: e.to_string(),
                })
        })
        .collect()
}
