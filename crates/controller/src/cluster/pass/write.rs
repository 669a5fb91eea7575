//! The steps that bring the live objects to the verified release: reuse a pass that found nothing to
//! write, read the live objects, diff and write, then record and publish what was applied.

use std::collections::BTreeSet;
use std::sync::Arc;

use vworkspace_core::crd::{Cluster, InventoryEntry, ManagedNamespace};
use vworkspace_core::pipeline::VerifiedIntent;
use vworkspace_core::plan::diff::{Changes, Skip};
use vworkspace_core::reasons as reason;

use super::{PassState, StepResult, failed};
use crate::cluster::conditions::StepOutcome;
use crate::cluster::status::AppliedSource;
use crate::cluster::{Context, apply};

/// A pass that found the live objects already as its verified release declares them: what it
/// read and what it reported. The next pass with the same verdict (the same `Arc`, from the memo),
/// the same managed namespaces and no change to the watched live objects since it read them
/// reports the same without planning, diffing or reading the objects again.
#[derive(Debug, Clone)]
pub(crate) struct UnchangedPass<V = VerifiedIntent> {
    pub(crate) verdict: Arc<V>,
    pub(crate) managed: Vec<ManagedNamespace>,
    pub(crate) live_version: u64,
    pub(crate) inventory: Vec<InventoryEntry>,
    pub(crate) apply: StepOutcome,
    pub(crate) applied: Option<AppliedSource>,
    pub(crate) settled: Option<String>,
}

/// The report of the remembered unchanged pass, when it still holds ([`UnchangedPass`]).
pub(super) fn unchanged_since<'l, V>(
    last: Option<&'l UnchangedPass<V>>,
    verdict: &Arc<V>,
    managed: &[ManagedNamespace],
    live_version: Option<u64>,
) -> Option<&'l UnchangedPass<V>> {
    let last = last?;
    (Arc::ptr_eq(&last.verdict, verdict)
        && last.managed == managed
        && Some(last.live_version) == live_version)
        .then_some(last)
}

/// [`super::Step::ReuseUnchanged`]: nothing changed since a pass found nothing to write, so the same
/// report, no plan, no reads. The counter is read once the stores hold their first list (the list
/// itself moves it), before the objects are.
pub(super) async fn reuse_unchanged(
    ctx: &Context,
    _: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    let verified = match state.verified() {
        Ok(verified) => verified,
        Err(result) => return result,
    };
    state.live_version = match ctx.live.get() {
        Some(stores) if stores.ready_within(apply::STORES_READY_WAIT).await => {
            Some(stores.version())
        }
        _ => None,
    };
    let last = ctx.with_state(&state.name, |s| s.unchanged.take());
    let Some(same) = unchanged_since(last.as_ref(), &verified, &state.managed, state.live_version)
    else {
        return StepResult::Next;
    };
    state.report.inventory = Some(same.inventory.clone());
    state.report.apply = same.apply.clone();
    state.report.applied = same.applied.clone();
    state.report.settled = same.settled.clone();
    ctx.with_state(&state.name, |s| s.unchanged = last);
    StepResult::Complete
}

/// [`super::Step::ReadLive`]: the plan, and the live objects it concerns: those labelled for this
/// source, and each declared one the labelled list did not return, read by name.
pub(super) async fn read_live(
    ctx: &Context,
    cluster: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    let verified = match state.verified() {
        Ok(verified) => verified,
        Err(result) => return result,
    };
    let plan = match vworkspace_core::plan::desired(&verified) {
        Ok(plan) => plan,
        Err(e) => return StepResult::Failed(failed(&crate::Error::Pass(e.into()))),
    };
    let client = &ctx.client;
    let listed = match state.prefetched_live.take() {
        Some(listed) => listed,
        None => apply::list_live(client, &cluster.spec.cluster_id, ctx.live.get()).await,
    };
    let mut live = match listed {
        Ok(live) => live,
        Err(e) => return StepResult::Failed(failed(&e)),
    };
    let unlisted = vworkspace_core::plan::diff::unlisted(&plan, &live, &managed_names(state));
    match apply::get_unlisted(client, &unlisted).await {
        Ok(found) => live.extend(found),
        Err(e) => return StepResult::Failed(failed(&e)),
    }
    let serial = verified.release().serial();
    if let Some(e) = crate::cluster::status_guard::floor(&cluster.spec, serial, &live) {
        // A refusal of the source: the recipients stay published.
        state.recipients = state.report.recipients.take();
        return StepResult::Refused(e);
    }
    state.plan = Some(plan);
    state.live = live;
    StepResult::Next
}

fn managed_names(state: &PassState<'_>) -> BTreeSet<String> {
    state.managed.iter().map(|m| m.name.clone()).collect()
}

/// What [`super::Step::Write`] leaves for [`super::Step::Publish`]: the diff's conclusions, owned
/// (the diff itself borrows the plan).
#[derive(Debug)]
pub struct Written {
    /// The inventory after a complete write ([`Changes::inventory`]).
    pub(super) inventory: Vec<InventoryEntry>,
    /// The `Applied` outcome of a complete write ([`partial`]).
    pub(super) outcome: StepOutcome,
    /// The declared objects left out (skipped or held by another owner).
    pub(super) not_applied: Vec<InventoryEntry>,
    /// Whether the diff found nothing to write.
    pub(super) noop: bool,
}

fn log_left_out(changes: &Changes<'_>) {
    for (id, why) in &changes.skipped {
        let why = match why {
            Skip::UnmanagedNamespace => "namespace not managed",
            _ => "not applied",
        };
        tracing::warn!(kind = %id.kind, namespace = %id.namespace, object = %id.name, why, "declared object not applied");
    }
    for (id, conflict) in &changes.conflicts {
        tracing::warn!(kind = %id.kind, namespace = %id.namespace, object = %id.name, holder = %conflict.holder(), "declared object exists and is not ours; not applied");
    }
}

/// [`super::Step::Write`]: diffs the plan against the live objects and the recorded inventory, then
/// applies and prunes. A refused write ends the pass with `ApplyFailed`; what was written stays
/// owned (it carries our labels), what was pruned is gone, and the refused write was answered, so
/// it is not owned (a cut pass, unanswered, owns it).
pub(super) async fn write(
    ctx: &Context,
    cluster: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    let Some(plan) = &state.plan else {
        return super::out_of_order(super::Step::ReadLive);
    };
    let inventory = cluster
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let managed = managed_names(state);
    let changes = vworkspace_core::plan::diff::diff(
        plan,
        &state.live,
        &inventory,
        &managed,
        &cluster.spec.cluster_id,
    );
    log_left_out(&changes);
    let (done, error) = if changes.is_noop() {
        (apply::Applied::default(), None)
    } else {
        apply::write(&ctx.client, &changes, state.progress).await
    };
    ctx.metrics.applied.inc_by(done.applied.len() as u64);
    ctx.metrics.pruned.inc_by(done.pruned.len() as u64);
    state.report.writes = (done.applied.len(), done.pruned.len());
    if let Some(e) = error {
        state.report.inventory = Some(vworkspace_core::plan::diff::after_interruption(
            &inventory,
            &done.applied,
            &done.pruned,
        ));
        return StepResult::Failed(apply_failed(failed(&e)));
    }
    state.report.settled = state.verified().ok().and_then(|verified| {
        super::settled::record(ctx, cluster, state, &verified, &changes, &done)
    });
    let written = Written {
        inventory: changes.inventory(),
        outcome: match partial(&changes, &cluster.spec.cluster_id) {
            None => StepOutcome::Succeeded,
            Some((reason, message)) => StepOutcome::Failed {
                reason,
                message: crate::events::clip(message),
            },
        },
        not_applied: changes
            .skipped
            .iter()
            .map(|(id, _)| id.clone())
            .chain(changes.conflicts.iter().map(|(id, _)| id.clone()))
            .collect(),
        noop: changes.is_noop(),
    };
    state.written = Some(written);
    StepResult::Next
}

/// A failed write's outcome: its message under the reason `ApplyFailed`.
fn apply_failed(outcome: StepOutcome) -> StepOutcome {
    match outcome {
        StepOutcome::Failed { message, .. } => StepOutcome::Failed {
            reason: reason::APPLY_FAILED,
            message,
        },
        other => other,
    }
}

/// [`super::Step::Publish`]: the report of a complete write; the children act on what this release
/// declares from now on (never on what the API server holds), published only once every declared
/// object is applied; a pass that found nothing to write is remembered ([`UnchangedPass`]).
pub(super) async fn publish(
    ctx: &Context,
    cluster: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    let (Some(written), Some(plan)) = (state.written.take(), state.plan.take()) else {
        return super::out_of_order(super::Step::Write);
    };
    let verified = match state.verified() {
        Ok(verified) => verified,
        Err(result) => return result,
    };
    let release = verified.release();
    let commit = verified.commit().id().to_string();
    state.report.inventory = Some(written.inventory);
    state.report.apply = written.outcome;
    ctx.declared.publish(
        &cluster.spec,
        release.serial(),
        &commit,
        &plan,
        &written.not_applied,
    );
    state.report.applied = Some(AppliedSource::of(release));
    if written.noop
        && let Some(live_version) = state.live_version
    {
        // Read before the live objects were: any change since moves the counter.
        let remembered = UnchangedPass {
            verdict: verified.clone(),
            managed: state.managed.clone(),
            live_version,
            inventory: state.report.inventory.clone().unwrap_or_default(),
            apply: state.report.apply.clone(),
            applied: state.report.applied.clone(),
            settled: state.report.settled.clone(),
        };
        ctx.with_state(&state.name, |s| s.unchanged = Some(remembered));
    }
    StepResult::Next
}

/// The `Applied` failure of a pass that wrote everything it may but left declared objects out:
/// objects that exist and are not this source's ([`reason::OWNERSHIP_CONFLICT`], naming each object
/// and its holder), objects in unmanaged namespaces ([`reason::NAMESPACE_NOT_MANAGED`]). `None` when
/// nothing was left out.
pub(crate) fn partial(changes: &Changes<'_>, cluster: &str) -> Option<(&'static str, String)> {
    let mut parts = Vec::new();
    if !changes.conflicts.is_empty() {
        parts.push(format!(
            "{} declared object(s) exist and are not this source's (not applied, never pruned; to let \
             this source take one over, annotate it {}={cluster}): {}",
            changes.conflicts.len(),
            vworkspace_core::plan::ANNOTATION_ADOPT,
            changes
                .conflicts
                .iter()
                .map(|(id, c)| format!("{} {}/{} held by {}", id.kind, id.namespace, id.name, c.holder()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !changes.skipped.is_empty() {
        parts.push(format!(
            "{} declared object(s) are in namespaces without the label {}={}: {}",
            changes.skipped.len(),
            crate::cluster::rbac::MANAGED_LABEL.0,
            crate::cluster::rbac::MANAGED_LABEL.1,
            changes
                .skipped
                .iter()
                .map(|(id, _)| format!("{} {}/{}", id.kind, id.namespace, id.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let reason = if !changes.conflicts.is_empty() {
        reason::OWNERSHIP_CONFLICT
    } else if !changes.skipped.is_empty() {
        reason::NAMESPACE_NOT_MANAGED
    } else {
        return None;
    };
    Some((reason, parts.join("; ")))
}
