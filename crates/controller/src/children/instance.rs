//! `ApplicationInstance` -> Flux source + HelmRelease + `<instance>-values` Secret, and the instance's
//! status mirrored from the HelmRelease's `Ready`. Decryption happens here, in memory, with the
//! identity of the `Cluster` whose verified release declares the instance, and only of the values
//! that release declares ([`super::declared`]): the live object's spec is compared with the declared
//! one, never decrypted. The plaintext leaves only into the values Secret.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::declared::{self, DeclaredRelease, Verdict};
use super::{ChildContext, api_resource, ensure_dynamic, kube_error, rollout};
use crate::children::flux::{self, VALUES_KEY};
use crate::cluster::apply::FIELD_MANAGER;
use crate::error::Error;
use vworkspace_core::crd::{ApplicationInstance, ApplicationInstanceStatus};
use vworkspace_core::plan::LABEL_CLUSTER;
use vworkspace_core::secrets::{Identities, ValueContext, ValuesPolicy};

pub use vworkspace_core::reasons::VALUES_NOT_DECRYPTED;
pub use vworkspace_core::reasons::WAITING_FOR_HELM_RELEASE as WAITING;

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

async fn identities(ctx: &ChildContext, release: &DeclaredRelease) -> Result<Identities, Error> {
    ctx.identities(&release.decryption.identity_secret_ref)
        .await
}

async fn write_status(
    ctx: &ChildContext,
    instance: &ApplicationInstance,
    status: &ApplicationInstanceStatus,
) -> Result<(), Error> {
    super::write_status(&ctx.client, instance, instance.status.as_ref(), status).await
}

/// Brings the values Secret to `yaml` (or removes it when there is nothing secret). Secrets are read
/// by name only. Returns the Secret's `resourceVersion` (what [`rollout::values_request`] names).
async fn ensure_values_secret(
    ctx: &ChildContext,
    instance: &ApplicationInstance,
    yaml: Option<&[u8]>,
) -> Result<Option<String>, Error> {
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

/// Reconciles one instance.
#[tracing::instrument(skip_all, fields(namespace = instance.namespace().unwrap_or_default(), instance = %instance.name_any()))]
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
    if !ctx.is_managed(&namespace).await? {
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
    // Only what the verified release declares is acted on, and only as it declares it.
    let all: Vec<String> = ctx
        .clusters()
        .await?
        .iter()
        .map(|c| c.spec.cluster_id.clone())
        .collect();
    let label = instance.labels().get(LABEL_CLUSTER).map(String::as_str);
    let (declaring, declared_object, altered) =
        match ctx.declared.judge_instance(&instance, label, &all) {
            Verdict::Declared {
                release, altered, ..
            } if altered
                && rollout::applied_by_newer_release(
                    instance.metadata.annotations.as_ref(),
                    release.serial,
                ) =>
            {
                // Applied by a pass that has not published its release yet: judged once it has.
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            Verdict::Declared {
                release,
                declared,
                altered,
            } => (release, declared, altered),
            Verdict::Waiting { clusters } => {
                let status = instance_status(
                    instance.status.as_ref(),
                    (
                        "Unknown".into(),
                        declared::WAITING_FOR_RELEASE.into(),
                        declared::waiting_message(&clusters),
                    ),
                    generation,
                    None,
                    now,
                );
                write_status(&ctx, &instance, &status).await?;
                return Ok(Action::requeue(Duration::from_secs(15)));
            }
            Verdict::NotDeclared { releases } => {
                let message = declared::not_declared_message("ApplicationInstance", &releases);
                refuse(&ctx, &instance, declared::NOT_DECLARED, message, now).await?;
                return Ok(Action::requeue(Duration::from_secs(60)));
            }
        };
    // The object the children are built from: the live identity (name, uid for owner references),
    // the declared spec. An altered live spec is never read past this point.
    let mut effective = (*instance).clone();
    effective.spec = declared_object.object.spec.clone();
    let instance = Arc::new(effective);
    let identities = identities(&ctx, &declaring).await?;
    let at = ValueContext {
        cluster: declaring.cluster_id.clone(),
        namespace: namespace.clone(),
        instance: name.clone(),
    };
    let policy = ValuesPolicy {
        require_bound: declaring.require_bound_values,
    };
    let values = declared_object
        .object
        .spec
        .values
        .clone()
        .unwrap_or(Value::Null);
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
    let split = flux::split_values(instance.spec.values.as_ref(), &decrypted).map_err(|e| {
        Error::Child {
            object: format!("ApplicationInstance {namespace}/{name}"),
            source: e.into(),
        }
    })?;
    drop(decrypted);
    let invalid = |e: flux::ChildrenError| Error::Child {
        object: format!("ApplicationInstance {namespace}/{name}"),
        source: e.into(),
    };
    let (plural, mut source) = flux::source(&instance).map_err(invalid)?;
    let chart = &instance.spec.chart;
    rollout::request(
        &mut source,
        Some(&rollout::chart_request(&chart.name, &chart.version)),
    );
    let mut release =
        flux::helm_release(&instance, &split.inline, split.secret.is_some()).map_err(invalid)?;
    let source_kind = source["kind"].as_str().unwrap_or_default().to_owned();
    // The values Secret first: the HelmRelease that reads it must never see it missing.
    let values_version = ensure_values_secret(
        &ctx,
        &instance,
        split.secret.as_deref().map(|v| v.as_slice()),
    )
    .await?;
    drop(split);
    rollout::request(
        &mut release,
        rollout::values_request(values_version.as_deref()).as_deref(),
    );
    ensure_dynamic(
        &ctx.client,
        &api_resource("source.toolkit.fluxcd.io/v1", &source_kind, plural),
        &namespace,
        &source,
        false,
    )
    .await?;
    let known_absent = ctx
        .caches
        .helm_releases
        .as_ref()
        .is_some_and(|w| w.known(&namespace, &name) == super::watches::Known::Absent);
    let (live_release, _) = ensure_dynamic(
        &ctx.client,
        &api_resource("helm.toolkit.fluxcd.io/v2", "HelmRelease", "helmreleases"),
        &namespace,
        &release,
        known_absent,
    )
    .await?;
    let ready = rollout::ready_for_current_generation(&live_release).unwrap_or_else(|| {
        (
            "Unknown".into(),
            WAITING.into(),
            "the HelmRelease has not reported yet".into(),
        )
    });
    let is_ready = ready.0 == "True" && !altered;
    if altered {
        // The children follow the declared spec (done above); the live object says it was changed.
        let message = declared::spec_differs_message(
            "ApplicationInstance",
            &declaring,
            &declared_object.digest,
        );
        refuse(&ctx, &instance, declared::SPEC_DIFFERS, message, now).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let status = instance_status(
        instance.status.as_ref(),
        ready,
        generation,
        Some(format!("{namespace}/{name}")),
        now,
    );
    write_status(&ctx, &instance, &status).await?;
    Ok(Action::requeue(next_look(
        is_ready,
        ctx.caches.helm_releases.is_some(),
    )))
}

/// When an applied instance is looked at again. With the per-namespace HelmRelease watches
/// ([`super::watches`]) a change of `Ready` triggers the reconcile, so only the resync of what is
/// not watched remains ([`super::RESYNC_WITH_WATCH`], jittered so that 10,000 instances applied
/// together do not come back together); without them a HelmRelease that is not Ready yet is polled
/// every [`super::POLL_WITHOUT_WATCH`].
pub fn next_look(ready: bool, watched: bool) -> Duration {
    if watched {
        crate::cluster::retry::jittered(
            super::RESYNC_WITH_WATCH,
            crate::cluster::retry::random_jitter(),
        )
    } else if ready {
        super::RESYNC_WITH_WATCH
    } else {
        super::POLL_WITHOUT_WATCH
    }
}

/// Writes `Ready=False` with a refusal `reason`; counts it and records an Event when the instance was
/// not already refused for that reason (a requeue does not repeat the Event).
async fn refuse(
    ctx: &ChildContext,
    instance: &ApplicationInstance,
    reason: &'static str,
    message: String,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let already = instance
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.reason == reason && c.status == "False");
    let status = instance_status(
        instance.status.as_ref(),
        ("False".into(), reason.into(), message.clone()),
        instance.metadata.generation,
        None,
        now,
    );
    write_status(ctx, instance, &status).await?;
    if !already {
        super::refusal::record(ctx, instance, reason, &message, now).await;
    }
    Ok(())
}

/// Backs off on errors: 30 s.
#[tracing::instrument(skip_all, fields(namespace = instance.namespace().unwrap_or_default(), instance = %instance.name_any()))]
pub fn error_policy(
    instance: Arc<ApplicationInstance>,
    error: &Error,
    _: Arc<ChildContext>,
) -> Action {
    tracing::warn!(reason = error.reason(), error = %error, "ApplicationInstance not reconciled");
    Action::requeue(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_instances_are_resynced_rarely_unwatched_ones_polled_until_ready() {
        for ready in [true, false] {
            let next = next_look(ready, true);
            assert!(
                next >= super::super::RESYNC_WITH_WATCH.mul_f64(0.9)
                    && next <= super::super::RESYNC_WITH_WATCH.mul_f64(1.1),
                "{next:?}"
            );
        }
        assert_eq!(next_look(false, false), super::super::POLL_WITHOUT_WATCH);
        assert_eq!(next_look(true, false), super::super::RESYNC_WITH_WATCH);
    }
}
