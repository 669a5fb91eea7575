//! `ApplicationInstance` -> Flux source + HelmRelease + `<instance>-values` Secret, and the instance's
//! status mirrored from the HelmRelease's `Ready`. Decryption happens here, in memory, with the
//! identity of the `Cluster` the instance came from; the plaintext leaves only into the values Secret.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::{ChildContext, api_resource, clusters, ensure_dynamic, is_managed, kube_error};
use crate::children::flux::{self, VALUES_KEY};
use crate::cluster::apply::FIELD_MANAGER;
use crate::error::Error;
use vworkspace_core::crd::{ApplicationInstance, ApplicationInstanceStatus, Cluster};
use vworkspace_core::plan::LABEL_CLUSTER;
use vworkspace_core::secrets::{Identities, ValueContext, ValuesPolicy};

/// Reason of an instance whose values do not decrypt (or whose Cluster cannot be found).
pub const VALUES_NOT_DECRYPTED: &str = "ValuesNotDecrypted";
/// Reason while the HelmRelease has not reported yet.
pub const WAITING: &str = "WaitingForHelmRelease";

/// The `Cluster` an instance belongs to: the one its `gitops.vworkspace.io/cluster` label names, or
/// the only one.
pub fn cluster_of<'c>(
    instance: &ApplicationInstance,
    clusters: &'c [Cluster],
) -> Option<&'c Cluster> {
    match instance.labels().get(LABEL_CLUSTER) {
        Some(id) => clusters.iter().find(|c| &c.spec.cluster_id == id),
        None if clusters.len() == 1 => clusters.first(),
        None => None,
    }
}

/// The instance status for a HelmRelease's `Ready` (or a failure before there is one).
pub fn instance_status(
    previous: Option<&ApplicationInstanceStatus>,
    ready: (String, String, String),
    generation: Option<i64>,
    helm_release: Option<String>,
    now: jiff::Timestamp,
) -> ApplicationInstanceStatus {
    let (status, reason, message) = ready;
    let before = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == "Ready"));
    let transition = match before {
        Some(b) if b.status == status => b.last_transition_time.clone(),
        _ => Time(now),
    };
    ApplicationInstanceStatus {
        conditions: vec![Condition {
            type_: "Ready".into(),
            status,
            reason: if reason.is_empty() {
                WAITING.into()
            } else {
                reason
            },
            message,
            observed_generation: generation,
            last_transition_time: transition,
        }],
        observed_generation: generation,
        helm_release_ref: helm_release,
    }
}

async fn identities(ctx: &ChildContext, cluster: &Cluster) -> Result<Identities, Error> {
    let (source, bytes) = crate::cluster::trust::identity_file(
        &ctx.client,
        &ctx.namespace,
        &cluster.spec.decryption.identity_secret_ref,
    )
    .await?;
    crate::cluster::trust::parse_identities(&source, &bytes)
}

async fn write_status(
    ctx: &ChildContext,
    instance: &ApplicationInstance,
    status: &ApplicationInstanceStatus,
) -> Result<(), Error> {
    super::write_status(&ctx.client, instance, instance.status.as_ref(), status).await
}

/// Brings the values Secret to `yaml` (or removes it when there is nothing secret). Secrets are read
/// by name only.
async fn ensure_values_secret(
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
            let desired =
                flux::values_secret(instance, yaml).map_err(|e| Error::Config(e.to_string()))?;
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

/// Reconciles one instance.
pub async fn reconcile(
    instance: Arc<ApplicationInstance>,
    ctx: Arc<ChildContext>,
) -> Result<Action, Error> {
    let namespace = instance.namespace().unwrap_or_default();
    let name = instance.name_any();
    if instance.metadata.deletion_timestamp.is_some() {
        // Children go with their owner (garbage collection).
        return Ok(Action::await_change());
    }
    if !is_managed(&ctx.client, &namespace).await? {
        // Not ours until the namespace is labelled; look again later.
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let now = (ctx.clock)();
    let generation = instance.metadata.generation;
    let fail = |reason: &str, message: String| {
        instance_status(
            instance.status.as_ref(),
            ("False".into(), reason.into(), message),
            generation,
            None,
            now,
        )
    };
    let all = clusters(&ctx.client).await?;
    let Some(cluster) = cluster_of(&instance, &all) else {
        let status = fail(
            VALUES_NOT_DECRYPTED,
            "no Cluster matches this instance's gitops.vworkspace.io/cluster label".into(),
        );
        write_status(&ctx, &instance, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    };
    let identities = identities(&ctx, cluster).await?;
    let at = ValueContext {
        cluster: cluster.spec.cluster_id.clone(),
        namespace: namespace.clone(),
        instance: name.clone(),
    };
    let policy = ValuesPolicy {
        require_bound: cluster.spec.policy.require_bound_values,
    };
    let values = instance.spec.values.clone().unwrap_or(Value::Null);
    let decrypted = match vworkspace_core::secrets::decrypt_values(
        &values,
        &at,
        &identities,
        &policy,
        &ctx.limits,
    ) {
        Ok(d) => d,
        Err(errors) => {
            // Paths and reasons only: a ValueError never carries plaintext.
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            write_status(&ctx, &instance, &fail(VALUES_NOT_DECRYPTED, message)).await?;
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    };
    let split = flux::split_values(instance.spec.values.as_ref(), &decrypted)
        .map_err(|e| Error::Config(format!("ApplicationInstance {namespace}/{name}: {e}")))?;
    drop(decrypted);
    let invalid = |e: flux::ChildrenError| {
        Error::Config(format!("ApplicationInstance {namespace}/{name}: {e}"))
    };
    let (plural, source) = flux::source(&instance).map_err(invalid)?;
    let release =
        flux::helm_release(&instance, &split.inline, split.secret.is_some()).map_err(invalid)?;
    let source_kind = source["kind"].as_str().unwrap_or_default().to_owned();
    // The values Secret first: the HelmRelease that reads it must never see it missing.
    ensure_values_secret(
        &ctx,
        &instance,
        split.secret.as_deref().map(|v| v.as_slice()),
    )
    .await?;
    drop(split);
    ensure_dynamic(
        &ctx.client,
        &api_resource("source.toolkit.fluxcd.io/v1", &source_kind, plural),
        &namespace,
        &source,
    )
    .await?;
    let (live_release, _) = ensure_dynamic(
        &ctx.client,
        &api_resource("helm.toolkit.fluxcd.io/v2", "HelmRelease", "helmreleases"),
        &namespace,
        &release,
    )
    .await?;
    let ready = flux::helm_release_ready(&live_release).unwrap_or_else(|| {
        (
            "Unknown".into(),
            WAITING.into(),
            "the HelmRelease has not reported yet".into(),
        )
    });
    let is_ready = ready.0 == "True";
    let status = instance_status(
        instance.status.as_ref(),
        ready,
        generation,
        Some(format!("{namespace}/{name}")),
        now,
    );
    write_status(&ctx, &instance, &status).await?;
    // No watch on HelmReleases (the operator may only list them per namespace): poll until Ready.
    Ok(Action::requeue(Duration::from_secs(if is_ready {
        600
    } else {
        30
    })))
}

/// Backs off on errors: 30 s.
pub fn error_policy(
    instance: Arc<ApplicationInstance>,
    error: &Error,
    _: Arc<ChildContext>,
) -> Action {
    tracing::warn!(namespace = ?instance.namespace(), instance = %instance.name_any(), reason = error.reason(), error = %error, "ApplicationInstance not reconciled");
    Action::requeue(Duration::from_secs(30))
}
