//! The `<instance>-values` Secret: the only place a decrypted value leaves memory.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::children::flux;
use crate::children::{ChildContext, kube_error};
use crate::cluster::apply::FIELD_MANAGER;
use crate::error::Error;
use vworkspace_core::crd::ApplicationInstance;

/// Brings the values Secret to `yaml` and the chart signing keys (or removes it when there is
/// neither). Secrets are read by name only. Returns the Secret's `resourceVersion` (what
/// [`crate::children::rollout::values_request`] names), `None` without a Secret.
pub(super) async fn ensure_values_secret(
    ctx: &ChildContext,
    instance: &ApplicationInstance,
    yaml: Option<&[u8]>,
    chart_keys: &[String],
) -> Result<Option<String>, Error> {
    let namespace = instance.namespace().unwrap_or_default();
    let name = flux::values_secret_name(&instance.name_any());
    let what = format!("Secret {namespace}/{name}");
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let live = api
        .get_opt(&name)
        .await
        .map_err(kube_error(format!("get {what}")))?;
    match (yaml.is_some() || !chart_keys.is_empty()).then_some(yaml) {
        Some(yaml) => {
            let desired =
                flux::values_secret_with(instance, yaml, chart_keys).map_err(|e| Error::Child {
                    object: what.clone(),
                    source: e.into(),
                })?;
            let same = live.as_ref().is_some_and(|l| {
                l.data.as_ref() == desired.data.as_ref()
                    && l.metadata.owner_references == desired.metadata.owner_references
                    && l.metadata.labels.as_ref().is_some_and(|have| {
                        desired.labels().iter().all(|(k, v)| have.get(k) == Some(v))
                    })
            });
            if same {
                return Ok(live.and_then(|l| l.metadata.resource_version));
            }
            let written = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await
                .map_err(kube_error(format!("apply {what}")))?;
            return Ok(written.metadata.resource_version);
        }
        None => {
            // Only ever delete our own Secret (labelled for this instance).
            let ours = live.as_ref().is_some_and(|l| {
                l.labels().get(flux::LABEL_INSTANCE) == Some(&instance.name_any())
            });
            if ours {
                api.delete(&name, &DeleteParams::background())
                    .await
                    .map_err(kube_error(format!("delete {what}")))?;
            }
        }
    }
    Ok(None)
}
