//! The `<instance>-values` Secret: the only place a decrypted value leaves memory.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::children::flux::{self, VALUES_KEY};
use crate::children::{ChildContext, kube_error};
use crate::cluster::apply::FIELD_MANAGER;
use crate::error::Error;
use vworkspace_core::crd::ApplicationInstance;

/// Brings the values Secret to `yaml` (or removes it when there is nothing secret). Secrets are read
/// by name only.
pub(super) async fn ensure_values_secret(
    ctx: &ChildContext,
    instance: &ApplicationInstance,
    yaml: Option<&[u8]>,
) -> Result<(), Error> {
    let namespace = instance.namespace().unwrap_or_default();
    let name = flux::values_secret_name(&instance.name_any());
    let what = format!("Secret {namespace}/{name}");
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let live = api
        .get_opt(&name)
        .await
        .map_err(kube_error(format!("get {what}")))?;
    match yaml {
        Some(yaml) => {
            let desired = flux::values_secret(instance, yaml).map_err(|e| Error::Child {
                object: what.clone(),
                source: e.into(),
            })?;
            let same = live.as_ref().is_some_and(|l| {
                l.data
                    .as_ref()
                    .and_then(|d| d.get(VALUES_KEY))
                    .map(|b| b.0.as_slice())
                    == Some(yaml)
                    && l.metadata.owner_references == desired.metadata.owner_references
            });
            if !same {
                api.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await
                .map_err(kube_error(format!("apply {what}")))?;
            }
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
    Ok(())
}
