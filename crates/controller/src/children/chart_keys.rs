//! The chart signing keys a `Cluster` names (`spec.chartVerification.cosignKeysConfigMapRef`), read
//! like the other trust inputs: by name, from the operator's namespace only, when an instance that
//! the Cluster's verified release declares is materialized. They reach source-controller as `.pub`
//! entries of the instance's `<instance>-values` Secret, which its `OCIRepository.spec.verify`
//! names: the one Secret per instance the operator may write (deploy/admission-policy.yaml), read by
//! source-controller only for the keys that end in `.pub` (the values stay helm-controller's).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use super::{ChildContext, kube_error};
use crate::error::Error;
use vworkspace_core::crd::{ChartVerification, DEFAULT_COSIGN_KEYS_KEY};

/// The Secret key of the `index`th chart key (cosign loads every key ending in `.pub`).
pub fn secret_key(index: usize) -> String {
    format!("cosign-{index}.pub")
}

/// The PEM keys the Cluster names, one block each.
pub async fn read(
    ctx: &ChildContext,
    verification: &ChartVerification,
) -> Result<Vec<String>, Error> {
    let reference = &verification.cosign_keys_config_map_ref;
    let namespace = crate::cluster::trust::trust_input_namespace(
        "spec.chartVerification.cosignKeysConfigMapRef",
        reference,
        &ctx.namespace,
    )?;
    let key = reference.key.as_deref().unwrap_or(DEFAULT_COSIGN_KEYS_KEY);
    let source = format!("ConfigMap {namespace}/{} key {key}", reference.name);
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let map = api
        .get(&reference.name)
        .await
        .map_err(kube_error(format!("get {source}")))?;
    let text = map
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| Error::TrustInput {
            object: source.clone(),
            problem: "no such key".to_owned(),
        })?;
    vworkspace_core::trust::chart_keys::parse(text, &source).map_err(|e| Error::TrustInput {
        object: source.clone(),
        problem: e.to_string(),
    })
}
