//! The trust inputs a `Cluster` names, read from the API server by name only, and turned into a
//! [`TrustConfig`] by a pure function. The I/O half reads exactly the ConfigMaps and Secrets the
//! `Cluster` names in the operator's namespace (`get`, never `list`): the RBAC of `deploy/` allows no
//! more.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

use zeroize::Zeroizing;

use crate::error::Error;
use crate::source::Auth;
use vworkspace_core::crd::{ClusterSpec, ClusterStatus, ConfigMapKeyRef, IdentitySecretRef};
use vworkspace_core::limits::Limits;
use vworkspace_core::pipeline::TrustConfig;
use vworkspace_core::secrets::Identities;
use vworkspace_core::trust::release::AppliedRelease;
use vworkspace_core::trust::signers::AllowedSigners;

/// The key of an `allowed_signers` ConfigMap read when the reference names none.
pub const DEFAULT_SIGNERS_KEY: &str = "allowed_signers";
/// The key of the auth Secret holding a PEM CA bundle for the Git server.
pub const CA_KEY: &str = "ca.crt";

/// A Secret's keys and values, the values zeroized on drop.
pub type SecretData = BTreeMap<String, Zeroizing<Vec<u8>>>;

/// The raw trust inputs, as read from the API server.
#[derive(Clone, Default)]
pub struct TrustInputs {
    /// `allowed_signers` text for commits, with where it came from.
    pub commit_signers: (String, String),
    /// `allowed_signers` text for releases, with where it came from.
    pub release_signers: (String, String),
    /// The age identity file, with where it came from (zeroized on drop).
    pub identity: (String, Zeroizing<Vec<u8>>),
    /// The auth Secret's keys, when the source names one.
    pub auth: Option<(String, SecretData)>,
}

impl std::fmt::Debug for TrustInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The identity and the credentials are secret: only say where they came from.
        f.debug_struct("TrustInputs")
            .field("commit_signers", &self.commit_signers.0)
            .field("release_signers", &self.release_signers.0)
            .field("identity", &self.identity.0)
            .field("auth", &self.auth.as_ref().map(|(source, _)| source))
            .finish()
    }
}

/// What a pass needs besides the repository: the trust configuration, the Git credentials and CA.
#[derive(Debug, Clone)]
pub struct SourceTrust {
    /// The verifier's configuration.
    pub config: TrustConfig,
    /// Credentials for the Git server.
    pub auth: Auth,
    /// A PEM CA bundle for the Git server, when the auth Secret has `ca.crt`.
    pub ca_bundle: Option<Vec<u8>>,
}

fn text(source: &str, bytes: &[u8]) -> Result<Zeroizing<String>, Error> {
    String::from_utf8(bytes.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| Error::TrustInput {
            object: source.to_owned(),
            problem: "not UTF-8 text".to_owned(),
        })
}

/// Parses an age identity file read by [`identity_file`].
pub fn parse_identities(source: &str, bytes: &[u8]) -> Result<Identities, Error> {
    Ok(Identities::parse(&text(source, bytes)?, source)?)
}

/// Builds the trust configuration of one pass from the `Cluster` and the inputs it names. The last
/// applied commit, serial and release digest come from the `Cluster`'s status, so that a pass can only
/// move forward from what was applied.
pub fn trust_config(
    spec: &ClusterSpec,
    status: Option<&ClusterStatus>,
    inputs: &TrustInputs,
    now: jiff::Timestamp,
    limits: &Limits,
) -> Result<SourceTrust, Error> {
    let commit_signers = AllowedSigners::parse(&inputs.commit_signers.1, &inputs.commit_signers.0)?;
    let release_signers =
        AllowedSigners::parse(&inputs.release_signers.1, &inputs.release_signers.0)?;
    let identities = parse_identities(&inputs.identity.0, &inputs.identity.1)?;
    let (auth, ca_bundle) = match &inputs.auth {
        None => (Auth::None, None),
        Some((source, data)) => {
            let fields = data
                .iter()
                .filter(|(key, _)| Auth::KEYS.contains(&key.as_str()))
                .map(|(key, value)| (key.as_str(), value.as_slice()));
            let auth = Auth::from_fields(source, fields).map_err(|e| Error::TrustInput {
                object: source.clone(),
                problem: e.to_string(),
            })?;
            (auth, data.get(CA_KEY).map(|ca| ca.to_vec()))
        }
    };
    let threshold = usize::try_from(spec.release.threshold)
        .ok()
        .and_then(std::num::NonZeroUsize::new)
        .ok_or(Error::InvalidSpec {
            field: "spec.release.threshold",
            problem: "must be at least 1",
        })?;
    let last_commit = status.and_then(|s| s.last_applied_commit.clone());
    let last_applied = status
        .and_then(|s| s.last_applied_serial)
        .map(|serial| AppliedRelease {
            serial,
            digest: status.and_then(|s| s.last_applied_release_digest.clone()),
        });
    Ok(SourceTrust {
        config: TrustConfig::builder(&spec.cluster_id, commit_signers, release_signers, threshold)
            .last_applied(last_applied)
            .history(
                last_commit,
                spec.policy.history,
                spec.policy.allow_history_rewrite,
            )
            .identities(Some(identities))
            .require_bound_values(spec.policy.require_bound_values)
            .require_chart_digests(spec.policy.require_chart_digests)
            .max_validity_days(
                spec.policy
                    .max_release_validity_days
                    .unwrap_or(vworkspace_core::trust::release::DEFAULT_MAX_VALIDITY_DAYS),
            )
            .now(now)
            .limits(limits.clone())
            // Cluster status is the operator's alone (admission): its verdict may be reused.
            .values_verified(status.and_then(|s| s.values_verified.clone()))
            .build(),
        auth,
        ca_bundle,
    })
}

fn api_error(action: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

/// ConfigMaps read during one pass, so that two keys of one ConfigMap cost one request.
type ReadConfigMaps = BTreeMap<(String, String), ConfigMap>;

/// The namespace a trust input's ConfigMap is read from: the operator's own, whatever the reference
/// says. A reference to another namespace is refused, naming the field: a managed namespace is
/// writable by its tenants, and a signers list there would let a tenant choose who signs.
pub fn trust_input_namespace<'a>(
    field: &str,
    reference: &'a ConfigMapKeyRef,
    operator_namespace: &'a str,
) -> Result<&'a str, Error> {
    match reference.namespace.as_deref() {
        None => Ok(operator_namespace),
        Some(ns) if ns == operator_namespace => Ok(operator_namespace),
        Some(ns) => Err(Error::TrustInput {
            object: format!("{field}.namespace"),
            problem: format!(
                "{ns:?} is not the operator's namespace {operator_namespace:?}: trust inputs are read only from the operator's namespace (omit the field, or move ConfigMap {} there)",
                reference.name
            ),
        }),
    }
}

async fn config_map_text(
    client: &Client,
    default_namespace: &str,
    reference: &ConfigMapKeyRef,
    field: &str,
    read: &mut ReadConfigMaps,
) -> Result<(String, String), Error> {
    let namespace = trust_input_namespace(field, reference, default_namespace)?;
    let key = reference.key.as_deref().unwrap_or(DEFAULT_SIGNERS_KEY);
    let source = format!("ConfigMap {namespace}/{} key {key}", reference.name);
    let id = (namespace.to_owned(), reference.name.clone());
    if !read.contains_key(&id) {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let map = api
            .get(&reference.name)
            .await
            .map_err(api_error(format!("get {source}")))?;
        read.insert(id.clone(), map);
    }
    let value = read[&id]
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
        .ok_or_else(|| Error::TrustInput {
            object: source.clone(),
            problem: "no such key".to_owned(),
        })?;
    Ok((source, value))
}

async fn secret_data(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(String, SecretData), Error> {
    let source = format!("Secret {namespace}/{name}");
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    // A Secret is read by its name, never listed (the operator may not enumerate Secrets).
    let secret = api
        .get(name)
        .await
        .map_err(api_error(format!("get {source}")))?;
    let data = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Zeroizing::new(v.0)))
        .collect();
    Ok((source, data))
}

/// Reads the age identity file a `Cluster` names (a Secret in `namespace`, by name), with where it
/// came from.
pub async fn identity_file(
    client: &Client,
    namespace: &str,
    reference: &IdentitySecretRef,
) -> Result<(String, Zeroizing<Vec<u8>>), Error> {
    let (source, mut data) = secret_data(client, namespace, &reference.name).await?;
    let key = reference.key_or_default();
    let identity = data.remove(key).ok_or_else(|| Error::TrustInput {
        object: format!("{source} key {key}"),
        problem: "no such key".to_owned(),
    })?;
    Ok((format!("{source} key {key}"), identity))
}

/// Reads every input the `Cluster` names from `namespace` (the operator's own).
pub async fn read_inputs(
    client: &Client,
    namespace: &str,
    spec: &ClusterSpec,
) -> Result<TrustInputs, Error> {
    let mut read = ReadConfigMaps::new();
    let commit_signers = config_map_text(
        client,
        namespace,
        &spec.commit_signers.config_map_ref,
        "spec.commitSigners.configMapRef",
        &mut read,
    )
    .await?;
    let release_signers = config_map_text(
        client,
        namespace,
        &spec.release.signers_config_map_ref,
        "spec.release.signersConfigMapRef",
        &mut read,
    )
    .await?;
    let identity = identity_file(client, namespace, &spec.decryption.identity_secret_ref).await?;
    let auth = match &spec.source.secret_ref {
        Some(reference) => Some(secret_data(client, namespace, &reference.name).await?),
        None => None,
    };
    Ok(TrustInputs {
        commit_signers,
        release_signers,
        identity,
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(namespace: Option<&str>) -> ConfigMapKeyRef {
        ConfigMapKeyRef {
            namespace: namespace.map(str::to_owned),
            name: "release-signers".into(),
            key: None,
        }
    }

    #[test]
    fn trust_inputs_come_only_from_the_operators_namespace() {
        let field = "spec.release.signersConfigMapRef";
        assert_eq!(
            trust_input_namespace(field, &reference(None), "vworkspace-system").ok(),
            Some("vworkspace-system")
        );
        assert_eq!(
            trust_input_namespace(
                field,
                &reference(Some("vworkspace-system")),
                "vworkspace-system"
            )
            .ok(),
            Some("vworkspace-system")
        );
        let refused = trust_input_namespace(field, &reference(Some("team-a")), "vworkspace-system")
            .expect_err("a tenant's namespace");
        assert_eq!(
            refused.reason(),
            vworkspace_core::reasons::CONFIGURATION_INVALID
        );
        assert_eq!(
            refused.to_string(),
            "spec.release.signersConfigMapRef.namespace: \"team-a\" is not the operator's namespace \"vworkspace-system\": trust inputs are read only from the operator's namespace (omit the field, or move ConfigMap release-signers there)"
        );
    }
}
