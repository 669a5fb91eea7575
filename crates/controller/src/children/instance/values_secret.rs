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
/// neither). Secrets are read by name only. Compared on its whole content the operator owns: the
/// data (exactly its keys, no other), the type, our labels and annotations and the owner reference.
/// Returns the Secret's `resourceVersion` (what [`crate::children::rollout::values_request`] names),
/// `None` without a Secret, and the keys another writer had added and this call removed (names,
/// never values). `believed_absent` (the instance's children were never written): a Secret to write is
/// written without reading it first, and the apply's answer is checked for keys another writer
/// added, as after a read.
pub(super) async fn ensure_values_secret(
    ctx: &ChildContext,
    instance: &ApplicationInstance,
    yaml: Option<&[u8]>,
    chart_keys: &[String],
    believed_absent: bool,
) -> Result<(Option<String>, Option<String>), Error> {
    let namespace = instance.namespace().unwrap_or_default();
    let name = flux::values_secret_name(&instance.name_any());
    let what = format!("Secret {namespace}/{name}");
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let wanted = (yaml.is_some() || !chart_keys.is_empty()).then_some(yaml);
    let live = if believed_absent && wanted.is_some() {
        None
    } else {
        api.get_opt(&name)
            .await
            .map_err(kube_error(format!("get {what}")))?
    };
    match wanted {
        Some(yaml) => {
            let desired =
                flux::values_secret_with(instance, yaml, chart_keys).map_err(|e| Error::Child {
                    object: what.clone(),
                    source: e.into(),
                })?;
            if live.as_ref().is_some_and(|l| same_secret(&desired, l)) {
                return Ok((live.and_then(|l| l.metadata.resource_version), None));
            }
            let written = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await
                .map_err(kube_error(format!("apply {what}")))?;
            // Keys another writer added: server-side apply leaves them (it removes only what its
            // own manager owned), so they are removed by name.
            return remove_extra_keys(&api, &what, &desired, written).await;
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
    Ok((None, None))
}

/// Removes the data keys of `written` that the operator does not write ([`extra_keys`]): returns the
/// Secret's `resourceVersion` after that, and the removed keys' names (never their values).
async fn remove_extra_keys(
    api: &Api<Secret>,
    what: &str,
    desired: &Secret,
    written: Secret,
) -> Result<(Option<String>, Option<String>), Error> {
    let extra = extra_keys(desired, &written);
    if extra.is_empty() {
        return Ok((written.metadata.resource_version, None));
    }
    let name = written.name_any();
    let nulls: serde_json::Map<String, serde_json::Value> = extra
        .iter()
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let written = api
        .patch(
            &name,
            &params,
            &Patch::Merge(&serde_json::json!({"data": nulls})),
        )
        .await
        .map_err(kube_error(format!("remove undeclared keys of {what}")))?;
    let removed = extra
        .iter()
        .map(|k| format!("data.{k}"))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::warn!(
        object = what,
        fields = removed,
        "removed values Secret keys the operator does not declare"
    );
    Ok((written.metadata.resource_version, Some(removed)))
}

/// Whether the live Secret holds exactly what the operator writes: the same data (no other key), type,
/// owner references, and every label and annotation we set.
fn same_secret(desired: &Secret, live: &Secret) -> bool {
    let within = |want: Option<&std::collections::BTreeMap<String, String>>,
                  have: Option<&std::collections::BTreeMap<String, String>>| {
        want.is_none_or(|want| {
            want.iter()
                .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
        })
    };
    live.data == desired.data
        && live.type_.as_deref().unwrap_or("Opaque") == desired.type_.as_deref().unwrap_or("Opaque")
        && live.metadata.owner_references == desired.metadata.owner_references
        && within(
            desired.metadata.labels.as_ref(),
            live.metadata.labels.as_ref(),
        )
        && within(
            desired.metadata.annotations.as_ref(),
            live.metadata.annotations.as_ref(),
        )
        && live.string_data.is_none()
}

/// The data keys of `live` the operator does not write.
fn extra_keys(desired: &Secret, live: &Secret) -> Vec<String> {
    let declared = desired.data.as_ref();
    live.data
        .iter()
        .flat_map(|d| d.keys())
        .filter(|k| declared.is_none_or(|d| !d.contains_key(*k)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::flux::VALUES_KEY;
    use k8s_openapi::ByteString;

    fn secret(data: &[(&str, &str)], type_: &str, label: Option<&str>) -> Secret {
        let mut s = Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            type_: Some(type_.to_owned()),
            ..Secret::default()
        };
        s.metadata.labels = label.map(|l| [(flux::LABEL_INSTANCE.to_owned(), l.to_owned())].into());
        s
    }

    #[test]
    fn the_values_secret_is_compared_on_all_we_own_not_on_its_data_alone() {
        let desired = secret(&[(VALUES_KEY, "a: 1")], "Opaque", Some("web"));
        let mut with_other_label = desired.clone();
        if let Some(labels) = with_other_label.metadata.labels.as_mut() {
            labels.insert("tenant".into(), "x".into());
        }
        assert!(same_secret(&desired, &desired));
        assert!(
            same_secret(&desired, &with_other_label),
            "others' labels are theirs"
        );
        for (case, live) in [
            (
                "another value",
                secret(&[(VALUES_KEY, "a: 2")], "Opaque", Some("web")),
            ),
            (
                "an extra key",
                secret(
                    &[(VALUES_KEY, "a: 1"), ("override.yaml", "b: 2")],
                    "Opaque",
                    Some("web"),
                ),
            ),
            (
                "another type",
                secret(&[(VALUES_KEY, "a: 1")], "kubernetes.io/tls", Some("web")),
            ),
            (
                "our label gone",
                secret(&[(VALUES_KEY, "a: 1")], "Opaque", None),
            ),
            (
                "our label changed",
                secret(&[(VALUES_KEY, "a: 1")], "Opaque", Some("db")),
            ),
        ] {
            assert!(!same_secret(&desired, &live), "{case}");
        }
        let extra = secret(
            &[(VALUES_KEY, "a: 1"), ("override.yaml", "b: 2")],
            "Opaque",
            Some("web"),
        );
        assert_eq!(
            extra_keys(&desired, &extra),
            vec!["override.yaml".to_owned()]
        );
        assert!(extra_keys(&desired, &desired).is_empty());
    }
}
