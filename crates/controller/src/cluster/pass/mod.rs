//! One pass over one `Cluster`: the ordered list of named steps [`STEPS`], each with the one
//! signature `async fn(&Context, &Cluster, &mut PassState) -> StepResult`, run until one ends the
//! pass. The report they leave is then summarized into `Ready` and written by
//! [`super::summarize::summarize_and_patch`], as Flux's source-controller runs `reconcileStorage`,
//! `reconcileSource`, `reconcileArtifact` and then `summarizeAndPatch`.
//!
//! The steps are an enum dispatched by one `match` ([`Step::run`]), not a slice of boxed async fns:
//! every step borrows the pass state mutably across its awaits, which a slice of `fn` pointers can
//! only hold through a higher-ranked signature and one boxing wrapper per step; the `match` keeps
//! the futures unboxed and `Send` (kube-runtime needs that), gives each step a name for the logs and
//! the tests, and the compiler checks that every step has a body.
//!
//! Everything before [`Step::Write`] only reads (but for the managed namespaces' RBAC and
//! guardrails, which are the operator's own): a pass that stops there leaves the cluster as it was and its report says why.

mod cut;
mod guardrails;
mod managed;
mod settled;
mod source;
mod write;

use std::sync::Arc;

use vworkspace_core::crd::{Cluster, ManagedNamespace};
use vworkspace_core::pipeline::VerifiedIntent;
use vworkspace_core::plan::Plan;
use vworkspace_core::plan::diff::LiveObject;
use vworkspace_core::plan::settled::SettledObject;

use super::Context;
use super::apply;
use super::conditions::StepOutcome;
use super::status::PassReport;
use crate::error::Error;

pub(crate) use cut::{Cut, deadline_report};
pub(crate) use write::UnchangedPass;

/// The steps of a pass, in order. The summarize step follows them in [`super::reconcile`].
pub const STEPS: [Step; 12] = [
    Step::ReadTrust,
    Step::FetchAndVerify,
    Step::CheckSerialFloor,
    Step::ReleaseNamespaces,
    Step::EnsureNamespaceRbac,
    Step::EnsureNamespaceGuardrails,
    Step::RecordNamespaces,
    Step::ReuseSettled,
    Step::ReuseUnchanged,
    Step::ReadLive,
    Step::Write,
    Step::Publish,
];

/// One step of a pass ([`STEPS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reads the trust inputs the `Cluster` names and makes the trust configuration of this pass
    /// (signers, threshold, identities, rollback floor); publishes the recipients.
    ReadTrust,
    /// Fetches the source and verifies it, both on the blocking pool.
    FetchAndVerify,
    /// Holds the release to the serial floor the owner pinned in the spec.
    CheckSerialFloor,
    /// Lists the managed namespaces and releases those that lost the label.
    ReleaseNamespaces,
    /// Gives each managed namespace not checked within [`super::RBAC_RECHECK`] the operator's RBAC.
    EnsureNamespaceRbac,
    /// Keeps `spec.namespacePolicy` on every managed namespace: Pod Security labels and
    /// NetworkPolicies, restored (and a weakened level reported) on every pass.
    EnsureNamespaceGuardrails,
    /// Records a changed managed-namespace list in the status before anything is applied.
    RecordNamespaces,
    /// For a release verified but not parsed yet (a fresh process on the commit it applied last):
    /// ends the pass when the live objects' metadata gives the settled record the status holds,
    /// else parses the release.
    ReuseSettled,
    /// Reports the remembered pass again when nothing changed since it found nothing to write.
    ReuseUnchanged,
    /// Plans the verified release and reads the live objects it concerns.
    ReadLive,
    /// Diffs plan and live objects, applies, then prunes.
    Write,
    /// Records what the pass applied, publishes the declared release to the children and remembers
    /// a pass that found nothing to write.
    Publish,
}

/// How a step ended.
#[derive(Debug)]
pub enum StepResult {
    /// Go on with the next step.
    Next,
    /// The report is complete: the pass ends here with it.
    Complete,
    /// Verification refused: the pass ends with `SourceVerified=False` and reads nothing more.
    Refused(Error),
    /// A step after verification failed: the pass ends with `Applied=False` and this outcome.
    Failed(StepOutcome),
}

/// What the steps of one pass hand on to the next ones.
pub struct PassState<'p> {
    /// The `Cluster`'s name.
    pub name: String,
    /// What the pass has written so far (read when it is cut).
    pub progress: &'p apply::Progress,
    /// From [`Step::ReadTrust`].
    pub trust: Option<super::trust::SourceTrust>,
    /// The age recipients of the `Cluster`'s identities (from [`Step::ReadTrust`]).
    pub recipients: Option<Vec<String>>,
    /// The commit the pass looked at, once known.
    pub attempted_commit: Option<String>,
    /// From [`Step::FetchAndVerify`] (or [`Step::ReuseSettled`], which parses a pending release).
    pub verified: Option<Arc<VerifiedIntent>>,
    /// From [`Step::FetchAndVerify`], instead of `verified`, when the pass may find the objects
    /// settled: the release verified, its intent not parsed yet.
    pub(crate) pending: Option<settled::PendingIntent>,
    /// What the settled record covers of the live objects, listed from their metadata alone by
    /// [`Step::FetchAndVerify`] beside a pending release; [`Step::ReuseSettled`] takes it.
    pub prefetched_settled: Option<Result<Vec<SettledObject>, Error>>,
    /// The managed namespaces now (from [`Step::ReleaseNamespaces`]).
    pub managed: Vec<ManagedNamespace>,
    /// The live labels of the managed namespaces (from [`Step::ReleaseNamespaces`]).
    pub namespace_labels: super::namespaces::NamespaceLabels,
    /// The watched live objects' change counter, read before the objects are.
    pub live_version: Option<u64>,
    /// From [`Step::ReadLive`].
    pub plan: Option<Plan>,
    /// From [`Step::ReadLive`].
    pub live: Vec<LiveObject>,
    /// This source's live objects, listed by [`Step::FetchAndVerify`] while the source was fetched
    /// and verified (a process without watch stores); [`Step::ReadLive`] takes them.
    pub prefetched_live: Option<Result<Vec<LiveObject>, Error>>,
    /// From [`Step::Write`].
    pub written: Option<write::Written>,
    /// The report so far.
    pub report: PassReport,
}

impl<'p> PassState<'p> {
    /// The state before the first step.
    pub fn new(name: String, progress: &'p apply::Progress) -> Self {
        PassState {
            name,
            progress,
            trust: None,
            recipients: None,
            attempted_commit: None,
            verified: None,
            pending: None,
            prefetched_settled: None,
            managed: Vec::new(),
            namespace_labels: Default::default(),
            live_version: None,
            plan: None,
            live: Vec::new(),
            prefetched_live: None,
            written: None,
            report: PassReport::refused(vworkspace_core::reasons::PROGRESSING, String::new(), None),
        }
    }

    /// The verified release, parsed or pending, once [`Step::FetchAndVerify`] ran.
    fn release(&self) -> Option<&vworkspace_core::trust::release::VerifiedRelease> {
        match (&self.verified, &self.pending) {
            (Some(verified), _) => Some(verified.release()),
            (None, Some(pending)) => Some(&pending.release),
            (None, None) => None,
        }
    }

    /// The verified intent, once [`Step::FetchAndVerify`] ran.
    fn verified(&self) -> Result<Arc<VerifiedIntent>, StepResult> {
        self.verified
            .clone()
            .ok_or_else(|| out_of_order(Step::FetchAndVerify))
    }
}

/// How the values of a parsed release were checked (the scale bench reads this line).
fn log_values_checked(verified: &VerifiedIntent) {
    tracing::debug!(
        values = verified.values_checked(),
        reused_verdict = verified.values_reused(),
        "values checked"
    );
}

/// A step ran before the one whose output it needs: a defect of [`STEPS`], reported rather than
/// panicking (the list's test keeps it from happening).
fn out_of_order(missing: Step) -> StepResult {
    StepResult::Failed(failed(&Error::StepOrder(format!(
        "Cluster pass {missing:?}"
    ))))
}

/// The `Failed` outcome of an error (message clipped).
pub(crate) fn failed(error: &Error) -> StepOutcome {
    StepOutcome::Failed {
        reason: error.reason(),
        message: crate::events::clip(error.findings().join("; ")),
    }
}

impl Step {
    /// Runs this step.
    pub async fn run(
        self,
        ctx: &Context,
        cluster: &Cluster,
        state: &mut PassState<'_>,
    ) -> StepResult {
        match self {
            Step::ReadTrust => source::read_trust(ctx, cluster, state).await,
            Step::FetchAndVerify => source::fetch_and_verify(ctx, cluster, state).await,
            Step::CheckSerialFloor => source::check_serial_floor(ctx, cluster, state).await,
            Step::ReleaseNamespaces => managed::release_namespaces(ctx, cluster, state).await,
            Step::EnsureNamespaceRbac => managed::ensure_namespace_rbac(ctx, cluster, state).await,
            Step::EnsureNamespaceGuardrails => {
                guardrails::ensure_namespace_guardrails(ctx, cluster, state).await
            }
            Step::RecordNamespaces => managed::record_namespaces(ctx, cluster, state).await,
            Step::ReuseSettled => settled::reuse_settled(ctx, cluster, state).await,
            Step::ReuseUnchanged => write::reuse_unchanged(ctx, cluster, state).await,
            Step::ReadLive => write::read_live(ctx, cluster, state).await,
            Step::Write => write::write(ctx, cluster, state).await,
            Step::Publish => write::publish(ctx, cluster, state).await,
        }
    }
}

/// Runs [`STEPS`] over `cluster` until one ends the pass; the report (status and Event are written
/// by the summarize step).
pub async fn run(cluster: &Cluster, ctx: &Context, progress: &apply::Progress) -> PassReport {
    use kube::ResourceExt;
    let mut state = PassState::new(cluster.name_any(), progress);
    for step in STEPS {
        let started = std::time::Instant::now();
        let result = step.run(ctx, cluster, &mut state).await;
        // Where a pass spends its time, step by step (`RUST_LOG=vworkspace_controller::cluster::pass=debug`).
        tracing::debug!(step = ?step, duration_ms = started.elapsed().as_millis() as u64, "pass step ended");
        match result {
            StepResult::Next => continue,
            StepResult::Complete => break,
            StepResult::Refused(error) => {
                let mut report = PassReport::refused(
                    error.reason(),
                    error.findings().join("; "),
                    state.attempted_commit.take(),
                );
                report.recipients = state.recipients.take();
                return report;
            }
            StepResult::Failed(outcome) => {
                state.report.apply = outcome;
                break;
            }
        }
    }
    state.report
}

#[cfg(test)]
mod tests;
