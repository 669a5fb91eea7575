//! The steps of an instance's reconcile ([`super::STEPS`]), one function each.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use serde_json::Value;

use super::{Children, Flow, InstanceState, Judged, Step, instance_status, refuse, write_status};
use crate::children::declared::{self, Verdict};
use crate::children::{ChildContext, api_resource, ensure_dynamic, flux, rollout};
use crate::error::Error;
use vworkspace_core::crd::{ApplicationInstance, WatchedInstance};
use vworkspace_core::plan::LABEL_CLUSTER;
use vworkspace_core::reasons::{VALUES_NOT_DECRYPTED, WAITING_FOR_HELM_RELEASE};
use vworkspace_core::secrets::{ValueContext, ValuesPolicy};

/// A step ran before the one whose output it needs: a defect of [`super::STEPS`], reported rather
/// than panicking (the list's test keeps it from happening).
pub(super) fn out_of_order(missing: Step) -> Error {
    Error::StepOrder(format!("ApplicationInstance {missing:?}"))
}

fn judged(state: &InstanceState) -> Result<&Judged, Error> {
    state
        .judged
        .as_ref()
        .ok_or_else(|| out_of_order(Step::JudgeDeclared))
}

fn invalid(instance: &ApplicationInstance) -> impl Fn(flux::ChildrenError) -> Error {
    let object = format!(
        "ApplicationInstance {}/{}",
        instance.namespace().unwrap_or_default(),
        instance.name_any()
    );
    move |e| Error::Child {
        object: object.clone(),
        source: e.into(),
    }
}

/// [`Step::CheckManaged`].
pub(super) async fn check_managed(
    ctx: &ChildContext,
    instance: &WatchedInstance,
    _: &mut InstanceState,
) -> Result<Flow, Error> {
    if instance.metadata.deletion_timestamp.is_some() {
        // Children go with their owner (garbage collection).
        return Ok(Flow::Done(Action::await_change()));
    }
    if !ctx.in_shard(&instance.metadata).await? {
        // Another process's Cluster (`run --watch-label-selector`): its shard judges it.
        return Ok(Flow::Done(Action::await_change()));
    }
    if !ctx
        .is_managed(&instance.namespace().unwrap_or_default())
        .await?
    {
        // Not ours until the namespace is labelled; look again later.
        return Ok(Flow::Done(Action::requeue(Duration::from_secs(300))));
    }
    Ok(Flow::Next)
}

/// [`Step::JudgeDeclared`]: only what the verified release declares is acted on, and only as it
/// declares it.
pub(super) async fn judge_declared(
    ctx: &ChildContext,
    instance: &WatchedInstance,
    state: &mut InstanceState,
) -> Result<Flow, Error> {
    let all: Vec<String> = ctx
        .clusters()
        .await?
        .iter()
        .map(|c| c.spec.cluster_id.clone())
        .collect();
    let label = instance.labels().get(LABEL_CLUSTER).map(String::as_str);
    match ctx.declared.judge_instance(instance, label, &all) {
        Verdict::Declared {
            release, altered, ..
        } if altered
            && rollout::applied_by_newer_release(
                instance.metadata.annotations.as_ref(),
                release.serial,
            ) =>
        {
            // Applied by a pass that has not published its release yet: judged once it has.
            Ok(Flow::Done(Action::requeue(Duration::from_secs(2))))
        }
        Verdict::Declared {
            release,
            declared,
            altered,
        } => {
            let object = crate::children::read_declared(&declared, instance)?;
            let effective = instance.with_spec(object.spec);
            state.judged = Some(Judged {
                release,
                declared,
                altered,
                effective: Arc::new(effective),
            });
            Ok(Flow::Next)
        }
        Verdict::Waiting { clusters } => {
            let status = instance_status(
                instance.status.as_ref(),
                (
                    "Unknown".into(),
                    declared::WAITING_FOR_RELEASE.into(),
                    declared::waiting_message(&clusters),
                ),
                instance.metadata.generation,
                None,
                state.now,
            );
            write_status(ctx, instance, &status).await?;
            Ok(Flow::Done(Action::requeue(Duration::from_secs(15))))
        }
        Verdict::NotDeclared { releases } => {
            let message = declared::not_declared_message("ApplicationInstance", &releases);
            refuse(ctx, instance, declared::NOT_DECLARED, message, state.now).await?;
            Ok(Flow::Done(Action::requeue(Duration::from_secs(60))))
        }
    }
}

/// [`Step::DecryptValues`]: the declared values, decrypted with the identity of the declaring
/// `Cluster`, split into what stays inline and what goes to the Secret; the decrypted set itself is
/// dropped at once. A value that does not decrypt is `ValuesNotDecrypted` (paths and reasons only:
/// a `ValueError` never carries plaintext).
pub(super) async fn decrypt_values(
    ctx: &ChildContext,
    _: &WatchedInstance,
    state: &mut InstanceState,
) -> Result<Flow, Error> {
    let judged = judged(state)?;
    let instance = judged.effective.as_ref();
    let release = &judged.release;
    let identities = ctx
        .identities(&release.decryption.identity_secret_ref)
        .await?;
    let at = ValueContext {
        cluster: release.cluster_id.clone(),
        namespace: instance.namespace().unwrap_or_default(),
        instance: instance.name_any(),
    };
    let policy = ValuesPolicy {
        require_bound: release.require_bound_values,
    };
    // The effective object carries the declared spec (`judge_declared`).
    let values = instance.spec.values.clone().unwrap_or(Value::Null);
    let decrypted = match vworkspace_core::secrets::decrypt_values(
        &values,
        &at,
        &identities,
        &policy,
        &ctx.limits,
    ) {
        Ok(decrypted) => decrypted,
        Err(errors) => {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            let status = instance_status(
                instance.status.as_ref(),
                ("False".into(), VALUES_NOT_DECRYPTED.into(), message),
                instance.metadata.generation,
                None,
                state.now,
            );
            write_status(ctx, instance, &status).await?;
            return Ok(Flow::Done(Action::requeue(Duration::from_secs(300))));
        }
    };
    let split =
        flux::split_values(instance.spec.values.as_ref(), &decrypted).map_err(invalid(instance))?;
    drop(decrypted);
    state.values = Some(split);
    Ok(Flow::Next)
}

/// [`Step::BuildChildren`]: the Flux source and the HelmRelease, built from the declared spec, and
/// the chart signing keys the declaring Cluster names, read (nothing is written if any fails).
pub(super) async fn build_children(
    ctx: &ChildContext,
    _: &WatchedInstance,
    state: &mut InstanceState,
) -> Result<Flow, Error> {
    let judged = judged(state)?;
    let instance = judged.effective.as_ref();
    let values = state
        .values
        .as_ref()
        .ok_or_else(|| out_of_order(Step::DecryptValues))?;
    let (source_plural, mut source) = flux::source(instance).map_err(invalid(instance))?;
    let chart = &instance.spec.chart;
    let chart_keys = match &judged.release.chart_verification {
        Some(verification) if source["kind"] == "OCIRepository" => {
            let keys = crate::children::chart_keys::read(ctx, verification).await?;
            flux::verify_chart(&mut source, &flux::values_secret_name(&instance.name_any()));
            keys
        }
        _ => Vec::new(),
    };
    rollout::request(
        &mut source,
        Some(&rollout::chart_request(&chart.name, &chart.version)),
    );
    let helm_release = flux::helm_release(instance, &values.inline, values.secret.is_some())
        .map_err(invalid(instance))?;
    state.children = Some(Children {
        source_plural,
        source,
        helm_release,
    });
    state.chart_keys = chart_keys;
    Ok(Flow::Next)
}

/// [`Step::EnsureValuesSecret`]: first, so that the HelmRelease that reads it never sees it missing;
/// the plaintext is dropped once written.
pub(super) async fn ensure_values_secret(
    ctx: &ChildContext,
    _: &WatchedInstance,
    state: &mut InstanceState,
) -> Result<Flow, Error> {
    let values = state
        .values
        .take()
        .ok_or_else(|| out_of_order(Step::DecryptValues))?;
    let instance = judged(state)?.effective.as_ref();
    let secret = values.secret.as_deref().map(|v| v.as_slice());
    let (written, removed) = super::values_secret::ensure_values_secret(
        ctx,
        instance,
        secret,
        &state.chart_keys,
        children_never_written(instance),
    )
    .await?;
    let removed = removed.map(|fields| {
        let name = crate::children::flux::values_secret_name(&instance.name_any());
        format!("Secret {name}: {fields}")
    });
    if let Some(entry) = removed {
        ctx.metrics.count_undeclared_removed("Secret");
        state.removed.push(entry);
    }
    // The HelmRelease asks helm-controller to reconcile for this Secret write (its spec may not move).
    let children = state
        .children
        .as_mut()
        .ok_or_else(|| out_of_order(Step::BuildChildren))?;
    rollout::request(
        &mut children.helm_release,
        rollout::values_request(written.as_deref()).as_deref(),
    );
    Ok(Flow::Next)
}

fn children(state: &InstanceState) -> Result<&Children, Error> {
    state
        .children
        .as_ref()
        .ok_or_else(|| out_of_order(Step::BuildChildren))
}

/// Whether the instance's children were never written (its status names no HelmRelease: only the
/// instance controller writes it, once all three children were written). They are then most likely
/// absent, and are written without a read before each (the apply's answer is checked instead). At
/// 10,000 new instances that is 20,000 reads answered 404 saved; a wrong guess costs one write.
fn children_never_written(instance: &ApplicationInstance) -> bool {
    instance
        .status
        .as_ref()
        .and_then(|s| s.helm_release_ref.as_ref())
        .is_none()
}

/// [`Step::EnsureSource`]: and reads source-controller's verdict on the chart artifact.
pub(super) async fn ensure_source(
    ctx: &ChildContext,
    _: &WatchedInstance,
    state: &mut InstanceState,
) -> Result<Flow, Error> {
    let instance = judged(state)?.effective.as_ref();
    let children = children(state)?;
    let kind = children.source["kind"].as_str().unwrap_or_default();
    let ensured = ensure_dynamic(
        &ctx.client,
        &api_resource("source.toolkit.fluxcd.io/v1", kind, children.source_plural),
        &instance.namespace().unwrap_or_default(),
        &children.source,
        children_never_written(instance),
    )
    .await?;
    let kind = kind.to_owned();
    note_removal(ctx, state, &kind, &ensured);
    state.chart_refused = crate::children::chart_source::refused(&ensured.live);
    Ok(Flow::Next)
}

/// Counts and keeps (for the instance's `ChildDrift` condition) the undeclared fields `ensured`
/// removed from a child of `kind`.
fn note_removal(
    ctx: &ChildContext,
    state: &mut InstanceState,
    kind: &str,
    ensured: &crate::children::Ensured,
) {
    if let Some(fields) = &ensured.removed {
        ctx.metrics.count_undeclared_removed(kind);
        let name = ensured.live["metadata"]["name"]
            .as_str()
            .unwrap_or_default();
        state.removed.push(format!("{kind} {name}: {fields}"));
    }
}

/// [`Step::EnsureHelmRelease`]: written without reading it first when the namespace's watch has
/// listed it absent; its `Ready` is read from what the API server answered.
pub(super) async fn ensure_helm_release(
    ctx: &ChildContext,
    _: &WatchedInstance,
    state: &mut InstanceState,
) -> Result<Flow, Error> {
    let instance = judged(state)?.effective.as_ref();
    let (namespace, name) = (
        instance.namespace().unwrap_or_default(),
        instance.name_any(),
    );
    let known_absent =
        children_never_written(instance)
            || ctx.caches.helm_releases.as_ref().is_some_and(|w| {
                w.known(&namespace, &name) == crate::children::watches::Known::Absent
            });
    let ensured = ensure_dynamic(
        &ctx.client,
        &api_resource("helm.toolkit.fluxcd.io/v2", "HelmRelease", "helmreleases"),
        &namespace,
        &children(state)?.helm_release,
        known_absent,
    )
    .await?;
    note_removal(ctx, state, "HelmRelease", &ensured);
    state.ready = Some(
        rollout::ready_for_current_generation(&ensured.live).unwrap_or_else(|| {
            (
                "Unknown".into(),
                WAITING_FOR_HELM_RELEASE.into(),
                "the HelmRelease has not reported yet".into(),
            )
        }),
    );
    Ok(Flow::Next)
}
