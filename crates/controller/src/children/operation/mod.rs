//! `Operation` -> one run through its engine: runs only what the last verified release of its
//! `Cluster` declares, with the declared spec ([`super::declared`]); checks the template against the
//! namespace's allowed templates, creates the child once (its name is the run id), follows the child's status into the
//! Operation's phase, and points `status.outputs.logsRef` at the latest Job or Workflow pod.
//!
//! One entry, [`reconcile`], runs the ordered steps [`STEPS`] (one signature each:
//! `async fn(&ChildContext, &Operation, &mut OperationState) -> Result<Flow, Error>`) and then the
//! summarize step that writes the run's status, as the `Cluster` pass does
//! ([`crate::cluster::pass`], where the choice of an enum dispatched by one `match` is explained).

mod engine_inputs;
mod status;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::ChildContext;
use crate::children::engines::{self, Child};
use crate::error::Error;
use vworkspace_core::crd::{Cluster, Operation, OperationOutputs, OperationPhase, OperationType};

pub use crate::children::Flow;
pub use status::{is_refusal, next_status};
pub use vworkspace_core::reasons::WAITING_FOR_NAMESPACE;

/// The steps of an Operation's reconcile, in order; the summarize step follows them.
pub const STEPS: [Step; 8] = [
    Step::CheckManaged,
    Step::SkipFinishedRun,
    Step::JudgeDeclared,
    Step::CheckNamespaceRecorded,
    Step::CheckTemplate,
    Step::BuildChild,
    Step::EnsureChild,
    Step::FindLogs,
];

/// One step of an Operation's reconcile ([`STEPS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Stops at an Operation being deleted or in an unmanaged namespace.
    CheckManaged,
    /// Stops at a spec that already ran (a refusal is not a run: it is judged again).
    SkipFinishedRun,
    /// Judges the Operation against the verified releases: only a declared one goes on, with the
    /// declared spec; an altered one is refused.
    JudgeDeclared,
    /// Waits until the declaring `Cluster`'s pass recorded the namespace; takes the templates the
    /// namespace's annotation allows now.
    CheckNamespaceRecorded,
    /// Refuses a template the namespace does not allow.
    CheckTemplate,
    /// Builds the engine's child (reading the RunCommand template).
    BuildChild,
    /// Creates the child once and reads its phase.
    EnsureChild,
    /// Points the logs at the newest pod of a Job or Workflow.
    FindLogs,
}

/// What the steps of one reconcile hand on to the next ones.
#[derive(Debug)]
pub struct OperationState {
    /// The clock's reading at the start.
    pub now: jiff::Timestamp,
    /// Every `Cluster` (from [`Step::JudgeDeclared`]).
    pub clusters: Vec<Arc<Cluster>>,
    /// The live identity with the declared spec (from [`Step::JudgeDeclared`]).
    pub effective: Option<Arc<Operation>>,
    /// The `spec.clusterId` of the Cluster whose verified release declares the Operation (from
    /// [`Step::JudgeDeclared`]).
    pub declaring: Option<String>,
    /// The templates the namespace's current annotation allows (from
    /// [`Step::CheckNamespaceRecorded`]).
    pub allowed: Vec<String>,
    /// From [`Step::BuildChild`].
    pub child: Option<Child>,
    /// The child's phase, reason and message (from [`Step::EnsureChild`]).
    pub observed: Option<(OperationPhase, String, String)>,
    /// From [`Step::FindLogs`].
    pub logs_ref: Option<String>,
}

impl OperationState {
    /// The state before the first step.
    pub fn new(now: jiff::Timestamp) -> Self {
        OperationState {
            now,
            clusters: Vec::new(),
            effective: None,
            declaring: None,
            allowed: Vec::new(),
            child: None,
            observed: None,
            logs_ref: None,
        }
    }
}

impl Step {
    /// Runs this step.
    pub async fn run(
        self,
        ctx: &ChildContext,
        op: &Operation,
        state: &mut OperationState,
    ) -> Result<Flow, Error> {
        match self {
            Step::CheckManaged => steps::check_managed(ctx, op, state).await,
            Step::SkipFinishedRun => steps::skip_finished_run(ctx, op, state).await,
            Step::JudgeDeclared => steps::judge_declared(ctx, op, state).await,
            Step::CheckNamespaceRecorded => steps::check_namespace_recorded(ctx, op, state).await,
            Step::CheckTemplate => steps::check_template(ctx, op, state).await,
            Step::BuildChild => steps::build_child(ctx, op, state).await,
            Step::EnsureChild => steps::ensure_child(ctx, op, state).await,
            Step::FindLogs => steps::find_logs(ctx, op, state).await,
        }
    }
}

/// Reconciles one Operation: [`STEPS`], then [`summarize`].
#[tracing::instrument(skip_all, fields(namespace = op.namespace().unwrap_or_default(), operation = %op.name_any()))]
pub async fn reconcile(op: Arc<Operation>, ctx: Arc<ChildContext>) -> Result<Action, Error> {
    let mut state = OperationState::new((ctx.clock)());
    for step in STEPS {
        if let Flow::Done(action) = step.run(&ctx, &op, &mut state).await? {
            return Ok(action);
        }
    }
    summarize(&ctx, &state).await
}

/// The summarize step: the run's status from the child's phase, with its outputs. Children of other
/// controllers are not watched (namespace-scoped rights only): polled while running.
pub async fn summarize(ctx: &ChildContext, state: &OperationState) -> Result<Action, Error> {
    let (Some(op), Some(child), Some((phase, reason, message))) =
        (&state.effective, &state.child, &state.observed)
    else {
        return Err(steps::out_of_order(Step::EnsureChild));
    };
    let kind = &op.spec.operation_type;
    let outputs = OperationOutputs {
        logs_ref: state.logs_ref.clone(),
        backup_name: (*kind == OperationType::Backup).then(|| child.name.clone()),
        snapshot_name: (*kind == OperationType::Snapshot).then(|| child.name.clone()),
    };
    let status = next_status(
        op.status.as_ref(),
        &engines::run_id(op),
        *phase,
        reason.clone(),
        message.clone(),
        Some(outputs),
        state.now,
    );
    steps::write_status(ctx, op, &status).await?;
    Ok(if engines::is_final(Some(*phase)) {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(15))
    })
}

/// Backs off on errors: 30 s.
#[tracing::instrument(skip_all, fields(namespace = op.namespace().unwrap_or_default(), operation = %op.name_any()))]
pub fn error_policy(op: Arc<Operation>, error: &Error, ctx: Arc<ChildContext>) -> Action {
    tracing::warn!(reason = error.reason(), error = %error, "Operation not reconciled");
    super::report_refusal(&ctx, op.namespace().as_deref(), error);
    Action::requeue(Duration::from_secs(30))
}

#[cfg(test)]
mod tests;
