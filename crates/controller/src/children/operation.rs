//! `Operation` -> one run through its engine: runs only what the last verified release of its
//! `Cluster` declares, with the declared spec ([`super::declared`]); checks the template against the
//! namespace's allowed templates, creates the child once (its name is the run id), follows the child's status into the
//! Operation's phase, and points `status.outputs.logsRef` at the latest Job or Workflow pod.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::declared::{self, Verdict};
use super::{ChildContext, api_resource, ensure_dynamic, kube_error};
use crate::children::engines::{self, JobTemplate, OperationError, RUN_COMMAND_TEMPLATE_PREFIX};
use crate::error::Error;
use vworkspace_core::crd::{
    Operation, OperationOutputs, OperationPhase, OperationStatus, OperationType,
};
use vworkspace_core::plan::LABEL_CLUSTER;

pub use vworkspace_core::reasons::WAITING_FOR_NAMESPACE;

/// Whether a final status is a refusal that is judged again (not a run that happened): a template not
/// allowed yet, an Operation not declared, or an altered spec.
pub fn is_refusal(reason: Option<&str>) -> bool {
    matches!(
        reason,
        Some(engines::TEMPLATE_NOT_ALLOWED | declared::NOT_DECLARED | declared::SPEC_DIFFERS)
    )
}

/// The next status of a run: pure, so that phases and timestamps are unit-tested.
pub fn next_status(
    previous: Option<&OperationStatus>,
    run_id: &str,
    phase: OperationPhase,
    reason: String,
    message: String,
    outputs: Option<OperationOutputs>,
    now: jiff::Timestamp,
) -> OperationStatus {
    let same_run = previous.is_some_and(|p| p.run_id.as_deref() == Some(run_id));
    let start_time = previous
        .filter(|_| same_run)
        .and_then(|p| p.start_time.clone())
        .or(Some(Time(now)));
    let completion_time = if engines::is_final(Some(phase)) {
        previous
            .filter(|_| same_run)
            .and_then(|p| p.completion_time.clone())
            .or(Some(Time(now)))
    } else {
        None
    };
    OperationStatus {
        phase: Some(phase),
        run_id: Some(run_id.to_owned()),
        reason: Some(reason),
        message: (!message.is_empty()).then_some(message),
        start_time,
        completion_time,
        outputs,
    }
}

async fn write_status(
    ctx: &ChildContext,
    op: &Operation,
    status: &OperationStatus,
) -> Result<(), Error> {
    super::write_status(&ctx.client, op, op.status.as_ref(), status).await
}

async fn job_template(ctx: &ChildContext, template: &str) -> Result<Option<JobTemplate>, Error> {
    let name = format!("{RUN_COMMAND_TEMPLATE_PREFIX}{template}");
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(map) = api.get_opt(&name).await.map_err(kube_error(format!(
        "get ConfigMap {}/{name}",
        ctx.namespace
    )))?
    else {
        return Ok(None);
    };
    let data = map.data.unwrap_or_default();
    let source = format!("ConfigMap {}/{name}", ctx.namespace);
    engines::job_template(
        data.get("image").map(String::as_str),
        data.get("command").map(String::as_str),
        &source,
    )
    .map(Some)
    .map_err(|e| Error::Operation(e.into()))
}

async fn latest_pod(
    ctx: &ChildContext,
    namespace: &str,
    selector: &str,
) -> Result<Option<String>, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(kube_error(format!("list pods in {namespace} ({selector})")))?;
    Ok(pods
        .items
        .iter()
        .max_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        })
        .and_then(|p| p.metadata.name.clone())
        .map(|n| format!("{namespace}/{n}")))
}

/// Reconciles one Operation.
#[tracing::instrument(skip_all, fields(namespace = op.namespace().unwrap_or_default(), operation = %op.name_any()))]
pub async fn reconcile(op: Arc<Operation>, ctx: Arc<ChildContext>) -> Result<Action, Error> {
    let namespace = op.namespace().unwrap_or_default();
    if op.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if !ctx.is_managed(&namespace).await? {
        // Not ours until the namespace is labelled; look again later.
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let previous = op.status.as_ref();
    // A refusal is not a run: it is judged again, so that allowing the template later (or declaring
    // the Operation) lets the same spec run.
    let ran = |run_id: &str| {
        previous.is_some_and(|s| {
            s.run_id.as_deref() == Some(run_id)
                && engines::is_final(s.phase)
                && !is_refusal(s.reason.as_deref())
        })
    };
    if ran(&engines::run_id(&op)) {
        // This spec already ran: never again.
        return Ok(Action::await_change());
    }
    let now = (ctx.clock)();
    let all = ctx.clusters().await?;
    // Only what the verified release declares runs, and only as it declares it.
    let cluster_ids: Vec<String> = all.iter().map(|c| c.spec.cluster_id.clone()).collect();
    let label = op.labels().get(LABEL_CLUSTER).map(String::as_str);
    let op = match ctx.declared.judge_operation(&op, label, &cluster_ids) {
        Verdict::Declared {
            release, altered, ..
        } if altered
            && super::rollout::applied_by_newer_release(
                op.metadata.annotations.as_ref(),
                release.serial,
            ) =>
        {
            // Applied by a pass that has not published its release yet: judged once it has.
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        Verdict::Declared {
            release,
            declared: declared_object,
            altered,
        } => {
            let mut effective = (*op).clone();
            effective.spec = declared_object.object.spec.clone();
            if altered {
                let declared_run = engines::run_id(&effective);
                if !ran(&declared_run) {
                    // Nothing of the changed spec runs, and the declared run waits for the next
                    // Cluster pass to put the declared spec back. A declared run that already
                    // finished keeps its status (it must never run again), so only the Event says it.
                    let message = declared::spec_differs_message(
                        "Operation",
                        &release,
                        &declared_object.digest,
                    );
                    let status = next_status(
                        previous,
                        &declared_run,
                        OperationPhase::Failed,
                        declared::SPEC_DIFFERS.to_owned(),
                        message.clone(),
                        None,
                        now,
                    );
                    write_status(&ctx, &op, &status).await?;
                    refused_once(&ctx, &op, declared::SPEC_DIFFERS, &message, now).await;
                } else {
                    let message = declared::spec_differs_message(
                        "Operation",
                        &release,
                        &declared_object.digest,
                    );
                    refused_once(&ctx, &op, declared::SPEC_DIFFERS, &message, now).await;
                }
                return Ok(Action::requeue(Duration::from_secs(60)));
            }
            Arc::new(effective)
        }
        Verdict::Waiting { clusters } => {
            let status = next_status(
                previous,
                &engines::run_id(&op),
                OperationPhase::Pending,
                declared::WAITING_FOR_RELEASE.to_owned(),
                declared::waiting_message(&clusters),
                None,
                now,
            );
            write_status(&ctx, &op, &status).await?;
            return Ok(Action::requeue(Duration::from_secs(15)));
        }
        Verdict::NotDeclared { releases } => {
            let message = declared::not_declared_message("Operation", &releases);
            let status = next_status(
                previous,
                &engines::run_id(&op),
                OperationPhase::Failed,
                declared::NOT_DECLARED.to_owned(),
                message.clone(),
                None,
                now,
            );
            write_status(&ctx, &op, &status).await?;
            refused_once(&ctx, &op, declared::NOT_DECLARED, &message, now).await;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    };
    let run_id = engines::run_id(&op);
    let previous = op.status.as_ref();
    let refuse = |e: OperationError| {
        next_status(
            previous,
            &run_id,
            OperationPhase::Failed,
            e.reason().to_owned(),
            e.to_string(),
            None,
            now,
        )
    };
    let recorded: Vec<_> = all
        .iter()
        .flat_map(|c| c.status.iter().flat_map(|s| s.managed_namespaces.iter()))
        .filter(|m| m.name == namespace)
        .collect();
    if recorded.is_empty() {
        // Labelled, but no Cluster pass has recorded it yet: wait rather than fail for good.
        let status = next_status(
            previous,
            &run_id,
            OperationPhase::Pending,
            WAITING_FOR_NAMESPACE.to_owned(),
            format!(
                "namespace {namespace} is not recorded in any Cluster's status.managedNamespaces yet"
            ),
            None,
            now,
        );
        write_status(&ctx, &op, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(15)));
    }
    let allowed: Vec<String> = recorded
        .iter()
        .flat_map(|m| m.allowed_operation_templates.iter().cloned())
        .collect();
    if let Err(e) = engines::check_template(&op.spec.template, &namespace, &allowed) {
        write_status(&ctx, &op, &refuse(e)).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let job = if op.spec.operation_type == OperationType::RunCommand {
        job_template(&ctx, &op.spec.template).await?
    } else {
        None
    };
    let child = match engines::child(&op, &ctx.velero_namespace, job.as_ref()) {
        Ok(child) => child,
        Err(e) => {
            write_status(&ctx, &op, &refuse(e)).await?;
            return Ok(Action::await_change());
        }
    };
    let resource = api_resource(&child.api_version, &child.kind, &child.plural);
    let (live, _) =
        ensure_dynamic(&ctx.client, &resource, &child.namespace, &child.body, false).await?;
    let (phase, reason, message) = engines::phase_of(&child.kind, &live);
    let logs_ref = match engines::pod_selector(&child.kind, &child.name) {
        Some(selector) => latest_pod(&ctx, &child.namespace, &selector).await?,
        None => None,
    };
    let outputs = OperationOutputs {
        logs_ref,
        backup_name: (op.spec.operation_type == OperationType::Backup).then(|| child.name.clone()),
        snapshot_name: (op.spec.operation_type == OperationType::Snapshot)
            .then(|| child.name.clone()),
    };
    let status = next_status(
        previous,
        &run_id,
        phase,
        reason,
        message,
        Some(outputs),
        now,
    );
    write_status(&ctx, &op, &status).await?;
    // Children of other controllers are not watched (namespace-scoped rights only): poll while running.
    Ok(if engines::is_final(Some(phase)) {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(15))
    })
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
        super::refusal::record(ctx, op, reason, message, now).await;
    }
}

/// Backs off on errors: 30 s.
#[tracing::instrument(skip_all, fields(namespace = op.namespace().unwrap_or_default(), operation = %op.name_any()))]
pub fn error_policy(op: Arc<Operation>, error: &Error, _: Arc<ChildContext>) -> Action {
    tracing::warn!(reason = error.reason(), error = %error, "Operation not reconciled");
    Action::requeue(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_completion_times_belong_to_the_run() {
        let t = |s| jiff::Timestamp::from_second(s).expect("time");
        let running = next_status(
            None,
            "r1",
            OperationPhase::Running,
            "Active".into(),
            String::new(),
            None,
            t(10),
        );
        assert_eq!(running.start_time, Some(Time(t(10))));
        assert_eq!(running.completion_time, None);
        let done = next_status(
            Some(&running),
            "r1",
            OperationPhase::Succeeded,
            "Complete".into(),
            String::new(),
            None,
            t(20),
        );
        assert_eq!(done.start_time, Some(Time(t(10))));
        assert_eq!(done.completion_time, Some(Time(t(20))));
        let again = next_status(
            Some(&done),
            "r1",
            OperationPhase::Succeeded,
            "Complete".into(),
            String::new(),
            None,
            t(30),
        );
        assert_eq!(again, done, "a finished run's status does not move");
        let next_run = next_status(
            Some(&done),
            "r2",
            OperationPhase::Pending,
            "Created".into(),
            String::new(),
            None,
            t(40),
        );
        assert_eq!(next_run.start_time, Some(Time(t(40))));
        assert_eq!(next_run.completion_time, None);
    }
}
