//! The children of an `ApplicationInstance`, built as plain values (pure): a Flux source
//! (`HelmRepository` for `https://` charts, `OCIRepository` for `oci://`), a `HelmRelease`
//! (helm.toolkit.fluxcd.io/v2) and, when the instance has encrypted values, the Secret
//! `<instance>-values` that the HelmRelease reads through `valuesFrom`.
//!
//! The values split: non-secret values stay inline in the HelmRelease; the decrypted leaves go, as a
//! sparse tree, into the Secret. Flux merges `valuesFrom` first and `spec.values` last, maps deeply and
//! lists by replacement, so the encrypted leaves are removed from the inline tree, and a list that holds
//! an encrypted leaf moves whole into the Secret (a sparse list would replace the inline one).
//! Third-party kinds are `serde_json` values applied as dynamic objects; no Flux code is vendored.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{Map, Value, json};
use zeroize::{Zeroize, Zeroizing};

use vworkspace_core::crd::ApplicationInstance;
use vworkspace_core::plan::{LABEL_MANAGED_BY, MANAGED_BY};
use vworkspace_core::secrets::{DecryptedValues, is_armored};

/// The Secret key the HelmRelease reads.
pub const VALUES_KEY: &str = "values.yaml";
pub use vworkspace_core::labels::LABEL_INSTANCE;
/// How often Flux reconciles the children it is given.
pub const FLUX_INTERVAL: &str = "10m";
/// How often Flux re-reads the chart repository.
pub const SOURCE_INTERVAL: &str = "1h";
/// The media type of a Helm chart layer in an OCI artifact.
pub const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// Why an instance's children cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChildrenError {
    /// The instance lacks a name, namespace or uid (it was not read from the API server).
    #[error("ApplicationInstance has no {0}")]
    Incomplete(&'static str),
    /// The chart repository is neither `https://` nor `oci://`.
    #[error("spec.chart.repository {0:?}: expected https:// or oci://")]
    Repository(String),
    /// A decrypted value's path does not lead to an encrypted leaf of `spec.values`.
    #[error("spec.values.{0}: no encrypted value at this path")]
    Path(String),
}

/// The name of the values Secret of `instance`.
pub fn values_secret_name(instance: &str) -> String {
    format!("{instance}-values")
}

struct Identity<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
}

fn identity(instance: &ApplicationInstance) -> Result<Identity<'_>, ChildrenError> {
    Ok(Identity {
        name: instance
            .metadata
            .name
            .as_deref()
            .ok_or(ChildrenError::Incomplete("metadata.name"))?,
        namespace: instance
            .metadata
            .namespace
            .as_deref()
            .ok_or(ChildrenError::Incomplete("metadata.namespace"))?,
        uid: instance
            .metadata
            .uid
            .as_deref()
            .ok_or(ChildrenError::Incomplete("metadata.uid"))?,
    })
}

/// The owner reference every child carries: deleting the instance deletes them (garbage collection).
pub fn owner_reference(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
    ])
}

/// The values Secret's labels: ours, and Flux's watch label, so that helm-controller reconciles the
/// HelmRelease that reads it as soon as it changes (its default `--watch-configs-label-selector`).
fn values_secret_labels(instance: &str) -> BTreeMap<String, String> {
    let mut labels = labels(instance);
    labels.insert(
        super::rollout::LABEL_WATCH.to_owned(),
        super::rollout::WATCH_ENABLED.to_owned(),
    );
    labels
}

fn metadata(id: &Identity<'_>) -> Value {
    json!({
        "name": id.name,
        "namespace": id.namespace,
        "labels": labels(id.name),
        "ownerReferences": [owner_reference(
            vworkspace_core::intent::APPLICATION_INSTANCE_API_VERSION,
            "ApplicationInstance",
            id.name,
            id.uid,
        )],
    })
}

/// The values split for Flux: what stays inline, and the sparse tree of secret leaves (YAML), if any.
pub struct SplitValues {
    /// `spec.values` without its encrypted leaves (and without lists that held one).
    pub inline: Value,
    /// The Secret's `values.yaml`: JSON (valid YAML) of the decrypted leaves, zeroized on drop.
    pub secret: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for SplitValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitValues")
            .field("inline", &self.inline)
            .field(
                "secret",
                &self
                    .secret
                    .as_ref()
                    .map(|_| vworkspace_core::secrets::REDACTED),
            )
            .finish()
    }
}

fn zeroize_strings(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(zeroize_strings),
        Value::Object(map) => map.values_mut().for_each(zeroize_strings),
        _ => {}
    }
}

/// Splits `values` given every decrypted leaf. The returned inline tree holds no ciphertext and no
/// plaintext; the secret tree holds only decrypted leaves (and whole lists that contained one).
pub fn split_values(
    values: Option<&Value>,
    decrypted: &DecryptedValues,
) -> Result<SplitValues, ChildrenError> {
    let Some(values) = values else {
        return Ok(SplitValues {
            inline: Value::Object(Map::new()),
            secret: None,
        });
    };
    let mut inline = values.clone();
    let mut secret = Value::Object(Map::new());
    let mut any = false;
    for (path, value, _) in decrypted.iter() {
        any = true;
        let segments: Vec<&str> = path.split('.').collect();
        // Walk down until a list or the leaf.
        let mut node = values;
        let mut cut = segments.len();
        for (i, segment) in segments.iter().enumerate() {
            if let Value::Array(_) = node {
                cut = i;
                break;
            }
            node = match node {
                Value::Object(map) => map
                    .get(*segment)
                    .ok_or_else(|| ChildrenError::Path(path.to_owned()))?,
                _ => return Err(ChildrenError::Path(path.to_owned())),
            };
        }
        let plaintext = || Value::String(String::from_utf8_lossy(value.expose()).into_owned());
        if cut == segments.len() {
            if !matches!(node, Value::String(s) if is_armored(s)) {
                return Err(ChildrenError::Path(path.to_owned()));
            }
            insert(&mut secret, &segments, plaintext());
            remove(&mut inline, &segments);
        } else {
            // The list at segments[..cut] moves whole; its encrypted leaf is replaced in place.
            let head = &segments[..cut];
            let mut list = get(&secret, head).cloned().unwrap_or_else(|| node.clone());
            vworkspace_core::secrets::set_leaf(&mut list, &segments[cut..].join("."), plaintext())
                .map_err(|_| ChildrenError::Path(path.to_owned()))?;
            insert(&mut secret, head, list);
            remove(&mut inline, head);
        }
    }
    let secret = if any {
        let bytes = serde_json::to_vec_pretty(&secret).unwrap_or_default();
        zeroize_strings(&mut secret);
        Some(Zeroizing::new(bytes))
    } else {
        None
    };
    Ok(SplitValues { inline, secret })
}

fn get<'v>(tree: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter()
        .try_fold(tree, |node, segment| node.get(*segment))
}

fn insert(tree: &mut Value, path: &[&str], leaf: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = tree;
    for segment in parents {
        if !node.get(*segment).is_some_and(Value::is_object)
            && let Value::Object(map) = node
        {
            map.insert((*segment).to_owned(), Value::Object(Map::new()));
        }
        node = match node.get_mut(*segment) {
            Some(next) => next,
            None => return,
        };
    }
    if let Value::Object(map) = node {
        map.insert((*last).to_owned(), leaf);
    }
}

fn remove(tree: &mut Value, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = tree;
    for segment in parents {
        node = match node.get_mut(*segment) {
            Some(next) => next,
            None => return,
        };
    }
    if let Value::Object(map) = node {
        map.remove(*last);
    }
}

/// The Flux source of an instance: `(plural, object)`.
pub fn source(instance: &ApplicationInstance) -> Result<(&'static str, Value), ChildrenError> {
    let id = identity(instance)?;
    let chart = &instance.spec.chart;
    if chart.repository.starts_with("https://") {
        Ok((
            "helmrepositories",
            json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "HelmRepository",
                "metadata": metadata(&id),
                "spec": {"url": chart.repository, "interval": SOURCE_INTERVAL},
            }),
        ))
    } else if chart.repository.starts_with("oci://") {
        let url = format!("{}/{}", chart.repository.trim_end_matches('/'), chart.name);
        // A digest the release's signers approved pins the artifact: Flux pulls exactly it (and
        // refuses the pull when the registry has no such manifest) whatever the tag points to.
        let reference = match &chart.digest {
            Some(digest) => json!({"digest": digest}),
            None => json!({"tag": chart.version}),
        };
        Ok((
            "ocirepositories",
            json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "OCIRepository",
                "metadata": metadata(&id),
                "spec": {
                    "url": url,
                    "ref": reference,
                    "interval": SOURCE_INTERVAL,
                    "layerSelector": {"mediaType": HELM_CHART_LAYER, "operation": "copy"},
                },
            }),
        ))
    } else {
        Err(ChildrenError::Repository(chart.repository.clone()))
    }
}

/// Asks source-controller to verify the chart's cosign signature against the `.pub` keys of the
/// Secret `secret` (in the source's namespace) before it serves the artifact. Only an
/// `OCIRepository` has `spec.verify`; another source is left as it is.
pub fn verify_chart(source: &mut Value, secret: &str) {
    if source["kind"] == "OCIRepository" {
        source["spec"]["verify"] = json!({"provider": "cosign", "secretRef": {"name": secret}});
    }
}

/// The HelmRelease of an instance, given its inline values and whether it has a values Secret.
pub fn helm_release(
    instance: &ApplicationInstance,
    inline: &Value,
    has_secret: bool,
) -> Result<Value, ChildrenError> {
    let id = identity(instance)?;
    let (_, source) = source(instance)?;
    let chart = &instance.spec.chart;
    let mut spec = json!({
        "interval": FLUX_INTERVAL,
        "releaseName": instance.spec.release_name.as_deref().unwrap_or(id.name),
    });
    if source["kind"] == "OCIRepository" {
        spec["chartRef"] = json!({"kind": "OCIRepository", "name": id.name});
    } else {
        spec["chart"] = json!({"spec": {
            "chart": chart.name,
            "version": chart.version,
            "sourceRef": {"kind": "HelmRepository", "name": id.name},
        }});
    }
    if inline.as_object().is_some_and(|m| !m.is_empty()) {
        spec["values"] = inline.clone();
    }
    if has_secret {
        spec["valuesFrom"] = json!([{
            "kind": "Secret",
            "name": values_secret_name(id.name),
            "valuesKey": VALUES_KEY,
        }]);
    }
    if instance.spec.suspend == Some(true) {
        spec["suspend"] = json!(true);
    }
    Ok(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": metadata(&id),
        "spec": spec,
    }))
}

/// The values Secret of an instance.
pub fn values_secret(instance: &ApplicationInstance, yaml: &[u8]) -> Result<Secret, ChildrenError> {
    values_secret_with(instance, Some(yaml), &[])
}

/// The `<instance>-values` Secret: the decrypted values (`values.yaml`), when any, and the chart
/// signing keys (`cosign-<n>.pub`, [`super::chart_keys`]), when the Cluster names them.
pub fn values_secret_with(
    instance: &ApplicationInstance,
    yaml: Option<&[u8]>,
    chart_keys: &[String],
) -> Result<Secret, ChildrenError> {
    let id = identity(instance)?;
    let mut data: BTreeMap<String, ByteString> = chart_keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            (
                super::chart_keys::secret_key(i),
                ByteString(key.as_bytes().to_vec()),
            )
        })
        .collect();
    if let Some(yaml) = yaml {
        data.insert(VALUES_KEY.to_owned(), ByteString(yaml.to_vec()));
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(values_secret_name(id.name)),
            namespace: Some(id.namespace.to_owned()),
            labels: Some(values_secret_labels(id.name)),
            owner_references: Some(vec![owner_reference(
                vworkspace_core::intent::APPLICATION_INSTANCE_API_VERSION,
                "ApplicationInstance",
                id.name,
                id.uid,
            )]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

/// The HelmRelease's `Ready` condition, mirrored on the instance: `(status, reason, message)`.
pub fn helm_release_ready(helm_release: &Value) -> Option<(String, String, String)> {
    let conditions = helm_release["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    Some((
        ready["status"].as_str().unwrap_or("Unknown").to_owned(),
        ready["reason"].as_str().unwrap_or_default().to_owned(),
        ready["message"].as_str().unwrap_or_default().to_owned(),
    ))
}
