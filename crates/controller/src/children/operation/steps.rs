//! The steps of an Operation's reconcile ([`super::STEPS`]), one function each.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::{Flow, OperationState, Step, WAITING_FOR_NAMESPACE, is_refusal, next_status};
use crate::children::declared::{self, DeclaredObject, DeclaredRelease, Verdict};
use crate::children::engines::{self, OperationError};
use crate::children::{ChildContext, api_resource, ensure_dynamic};
use crate::error::Error;
use vworkspace_core::crd::{Operation, OperationPhase, OperationStatus, OperationType};
use vworkspace_core::plan::LABEL_CLUSTER;

/// A step ran before the one whose output it needs: a defect of [`super::STEPS`], reported rather
/// than panicking (the list's test keeps it from happening).
pub(super) fn out_of_order(missing: Step) -> Error {
    Error::StepOrder(format!("Operation {missing:?}"))
}

fn effective(state: &OperationState) -> Result<&Arc<Operation>, Error> {
    state
        .effective
        .as_ref()
        .ok_or_else(|| out_of_order(Step::JudgeDeclared))
}

pub(super) async fn write_status(
    ctx: &ChildContext,
    op: &Operation,
    status: &OperationStatus,
) -> Result<(), Error> {
    crate::children::write_status(&ctx.client, op, op.status.as_ref(), status).await
}

/// Writes a status of the current run (`Pending` or `Failed`, no outputs) and ends the reconcile
/// with `then`.
async fn stop_with(
    ctx: &ChildContext,
    op: &Operation,
    run_id: &str,
    (phase, reason, message): (OperationPhase, &str, String),
    state: &OperationState,
    then: Action,
) -> Result<Flow, Error> {
    let status = next_status(
        op.status.as_ref(),
        run_id,
        phase,
        reason.to_owned(),
        message,
        None,
        state.now,
    );
    write_status(ctx, op, &status).await?;
    Ok(Flow::Done(then))
}

/// Whether the spec whose run id is `run_id` already ran (a refusal is not a run).
fn ran(op: &Operation, run_id: &str) -> bool {
    op.status.as_ref().is_some_and(|s| {
        s.run_id.as_deref() == Some(run_id)
            && engines::is_final(s.phase)
            && !is_refusal(s.reason.as_deref())
    })
}

/// [`Step::CheckManaged`].
pub(super) async fn check_managed(
    ctx: &ChildContext,
    op: &Operation,
    _: &mut OperationState,
) -> Result<Flow, Error> {
    if op.metadata.deletion_timestamp.is_some() {
        return Ok(Flow::Done(Action::await_change()));
    }
    if !ctx.in_shard(&op.metadata).await? {
        // Another process's Cluster (`run --watch-label-selector`): its shard judges it.
        return Ok(Flow::Done(Action::await_change()));
    }
    if !ctx.is_managed(&op.namespace().unwrap_or_default()).await? {
        // Not ours until the namespace is labelled; look again later.
        return Ok(Flow::Done(Action::requeue(Duration::from_secs(300))));
    }
    Ok(Flow::Next)
}

/// [`Step::SkipFinishedRun`]: a spec that already ran never runs again. A refusal is not a run: it
/// is judged again, so that allowing the template later (or declaring the Operation) lets the same
/// spec run.
pub(super) async fn skip_finished_run(
    _: &ChildContext,
    op: &Operation,
    _: &mut OperationState,
) -> Result<Flow, Error> {
    Ok(if ran(op, &engines::run_id(op)) {
        Flow::Done(Action::await_change())
    } else {
        Flow::Next
    })
}

/// [`Step::JudgeDeclared`]: only what the verified release declares runs, and only as it declares
/// it.
pub(super) async fn judge_declared(
    ctx: &ChildContext,
    op: &Operation,
    state: &mut OperationState,
) -> Result<Flow, Error> {
    state.clusters = ctx.clusters().await?;
    let cluster_ids: Vec<String> = state
        .clusters
        .iter()
        .map(|c| c.spec.cluster_id.clone())
        .collect();
    let label = op.labels().get(LABEL_CLUSTER).map(String::as_str);
    let run_id = engines::run_id(op);
    match ctx.declared.judge_operation(op, label, &cluster_ids) {
        Verdict::Declared {
            release, altered, ..
        } if altered
            && crate::children::rollout::applied_by_newer_release(
                op.metadata.annotations.as_ref(),
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
            let object = crate::children::read_declared(&declared, op)?;
            let mut effective = op.clone();
            effective.spec = object.spec;
            state.declaring = Some(release.cluster_id.clone());
            if altered {
                return refuse_altered(ctx, op, &effective, &release, &declared, state).await;
            }
            state.effective = Some(Arc::new(effective));
            Ok(Flow::Next)
        }
        Verdict::Waiting { clusters } => {
            let message = declared::waiting_message(&clusters);
            let waiting = (
                OperationPhase::Pending,
                declared::WAITING_FOR_RELEASE,
                message,
            );
            let then = Action::requeue(Duration::from_secs(15));
            stop_with(ctx, op, &run_id, waiting, state, then).await
        }
        Verdict::NotDeclared { releases } => {
            let message = declared::not_declared_message("Operation", &releases);
            let refused = (
                OperationPhase::Failed,
                declared::NOT_DECLARED,
                message.clone(),
            );
            let then = Action::requeue(Duration::from_secs(60));
            let flow = stop_with(ctx, op, &run_id, refused, state, then).await?;
            refused_once(ctx, op, declared::NOT_DECLARED, &message, state.now).await;
            Ok(flow)
        }
    }
}

/// An altered Operation: nothing of the changed spec runs, and the declared run waits for the next
/// Cluster pass to put the declared spec back. A declared run that already finished keeps its status
/// (it must never run again), so only the Event says it.
async fn refuse_altered(
    ctx: &ChildContext,
    op: &Operation,
    effective: &Operation,
    release: &DeclaredRelease,
    declared: &DeclaredObject<Operation>,
    state: &OperationState,
) -> Result<Flow, Error> {
    let message = declared::spec_differs_message("Operation", release, &declared.digest);
    let declared_run = engines::run_id(effective);
    let then = Action::requeue(Duration::from_secs(60));
    let flow = if ran(op, &declared_run) {
        Flow::Done(then)
    } else {
        let refused = (
            OperationPhase::Failed,
            declared::SPEC_DIFFERS,
            message.clone(),
        );
        stop_with(ctx, op, &declared_run, refused, state, then).await?
    };
    refused_once(ctx, op, declared::SPEC_DIFFERS, &message, state.now).await;
    Ok(flow)
}

/// [`Step::CheckNamespaceRecorded`]: the namespace must be recorded by the `Cluster` whose verified
/// release declares the Operation (its pass bound the namespace's RBAC); until then the run waits
/// rather than failing for good. The allowed templates are the namespace's annotation as it is now
/// ([`ChildContext::allowed_templates`]), never a `Cluster`'s `status.managedNamespaces` list: a
/// Cluster whose pass stopped early (suspended, refused) keeps an old list there, and a template
/// revoked on the namespace must stop the next run.
pub(super) async fn check_namespace_recorded(
    ctx: &ChildContext,
    _: &Operation,
    state: &mut OperationState,
) -> Result<Flow, Error> {
    let op = effective(state)?.clone();
    let namespace = op.namespace().unwrap_or_default();
    let declaring = state
        .declaring
        .as_deref()
        .ok_or_else(|| out_of_order(Step::JudgeDeclared))?;
    let recorded = state
        .clusters
        .iter()
        .filter(|c| c.spec.cluster_id == declaring)
        .flat_map(|c| c.status.iter().flat_map(|s| s.managed_namespaces.iter()))
        .any(|m| m.name == namespace);
    let allowed = if recorded {
        ctx.allowed_templates(&namespace).await?
    } else {
        None
    };
    let Some(allowed) = allowed else {
        let message = format!(
            "namespace {namespace} is not recorded in the status.managedNamespaces of Cluster {declaring} (which declares this Operation) yet, or is no longer managed"
        );
        let waiting = (OperationPhase::Pending, WAITING_FOR_NAMESPACE, message);
        let then = Action::requeue(Duration::from_secs(15));
        return stop_with(ctx, &op, &engines::run_id(&op), waiting, state, then).await;
    };
    state.allowed = allowed;
    Ok(Flow::Next)
}

/// Ends the run as refused by the engine (`Failed` with the error's reason).
async fn refuse(
    ctx: &ChildContext,
    op: &Operation,
    error: OperationError,
    state: &OperationState,
    then: Action,
) -> Result<Flow, Error> {
    let refused = (OperationPhase::Failed, error.reason(), error.to_string());
    stop_with(ctx, op, &engines::run_id(op), refused, state, then).await
}

/// [`Step::CheckTemplate`].
pub(super) async fn check_template(
    ctx: &ChildContext,
    _: &Operation,
    state: &mut OperationState,
) -> Result<Flow, Error> {
    let op = effective(state)?.clone();
    let namespace = op.namespace().unwrap_or_default();
    match engines::check_template(&op.spec.template, &namespace, &state.allowed) {
        Ok(()) => Ok(Flow::Next),
        Err(e) => {
            refuse(
                ctx,
                &op,
                e,
                state,
                Action::requeue(Duration::from_secs(300)),
            )
            .await
        }
    }
}

/// [`Step::BuildChild`]: a child that cannot be built fails the run for good.
pub(super) async fn build_child(
    ctx: &ChildContext,
    _: &Operation,
    state: &mut OperationState,
) -> Result<Flow, Error> {
    let op = effective(state)?.clone();
    let job = if op.spec.operation_type == OperationType::RunCommand {
        super::engine_inputs::job_template(ctx, &op.spec.template).await?
    } else {
        None
    };
    match engines::child(&op, &ctx.velero_namespace, job.as_ref()) {
        Ok(child) => {
            state.child = Some(child);
            Ok(Flow::Next)
        }
        Err(e) => refuse(ctx, &op, e, state, Action::await_change()).await,
    }
}

/// [`Step::EnsureChild`]: created once (its name is the run id); its phase is read from what the
/// API server answered.
pub(super) async fn ensure_child(
    ctx: &ChildContext,
    _: &Operation,
    state: &mut OperationState,
) -> Result<Flow, Error> {
    let child = state
        .child
        .as_ref()
        .ok_or_else(|| out_of_order(Step::BuildChild))?;
    let resource = api_resource(&child.api_version, &child.kind, &child.plural);
    let ensured =
        ensure_dynamic(&ctx.client, &resource, &child.namespace, &child.body, false).await?;
    state.observed = Some(engines::phase_of(&child.kind, &ensured.live));
    Ok(Flow::Next)
}

/// [`Step::FindLogs`].
pub(super) async fn find_logs(
    ctx: &ChildContext,
    _: &Operation,
    state: &mut OperationState,
) -> Result<Flow, Error> {
    let child = state
        .child
        .as_ref()
        .ok_or_else(|| out_of_order(Step::BuildChild))?;
    state.logs_ref = match engines::pod_selector(&child.kind, &child.name) {
        Some(selector) => {
            super::engine_inputs::latest_pod(ctx, &child.namespace, &selector).await?
        }
        None => None,
    };
    Ok(Flow::Next)
}

/// Counts a refusal and records its Event, unless the Operation's status already showed this refusal
/// (a requeue does not repeat the Event).
async fn refused_once(
    ctx: &ChildContext,
    op: &Operation,
    reason: &'static str,
    message: &str,
    now: jiff::Timestamp,
) {
    let already = op
        .status
        .as_ref()
        .is_some_and(|s| s.reason.as_deref() == Some(reason));
    if !already {
        crate::children::refusal::record(ctx, op, reason, message, now).await;
    }
}
