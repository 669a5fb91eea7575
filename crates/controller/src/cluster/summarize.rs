//! The summarize step that follows every pass ([`super::pass::STEPS`]): derives `Ready` from the
//! steps' outcomes ([`super::status::next_status`]), writes the status only when it changed, emits
//! the pass's Event and the release-expiry warning, records metrics, and says when to run again.

use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::status::{self, PassReport};
use super::{Context, retry, write_status};
use crate::error::{Error, Result};
use crate::events::reference;
use vworkspace_core::crd::Cluster;

fn log_outcome(report: &PassReport, started: Instant) {
    match report.failure() {
        Some(reason) => {
            tracing::warn!(
                reason,
                commit = report.attempted_commit.as_deref().unwrap_or("none"),
                detail = report.failure_message().unwrap_or_default(),
                "pass failed"
            )
        }
        None => {
            tracing::info!(
                commit = report.attempted_commit.as_deref().unwrap_or("none"),
                applied = report.writes.0,
                pruned = report.writes.1,
                duration_ms = started.elapsed().as_millis() as u64,
                "pass succeeded"
            )
        }
    }
}

/// Summarizes the pass into the status and writes it when it changed, emits its Event, records its
/// metrics; requeues at the interval on success, fails with the pass's reason otherwise (the error
/// policy then backs off).
pub(super) async fn summarize_and_patch(
    cluster: &Cluster,
    ctx: &Context,
    report: PassReport,
    started: Instant,
    interval: Duration,
) -> Result<Action> {
    let name = cluster.name_any();
    let now = (ctx.clock)();
    let previous = cluster.status.as_ref();
    let mut next = status::next_status(previous, &report, cluster.metadata.generation, now);
    // A pass started by `reconcile` or a push receiver says it handled that request (Flux's rule).
    next.last_handled_reconcile_at = cluster.reconcile_requested_at().map(str::to_owned);
    log_outcome(&report, started);
    if previous != Some(&next) {
        write_status(&ctx.client, &name, &next).await?;
    }
    if let Some(note) = status::note_for(previous, &next, &report, reference(cluster)) {
        // Best effort: losing an Event must not fail a pass that already wrote its status.
        ctx.events.write(&ctx.client, note, now).await;
    }
    warn_expiry(cluster, ctx, &report, now).await;
    if let (Some(sender), Some(update)) = (
        ctx.commit_status.get(),
        super::commit_update::commit_status_update(cluster, &report),
    ) {
        sender.submit(update);
    }
    let failure = report.failure();
    ctx.metrics
        .record_pass(started.elapsed().as_secs_f64(), failure);
    match failure {
        None => {
            ctx.with_state(&name, |s| s.failures = 0);
            Ok(Action::requeue(retry::requeue_after(
                None,
                0,
                interval,
                retry::random_jitter(),
            )))
        }
        Some(reason) => Err(Error::PassFailed { reason }),
    }
}

/// Exports the verified release's expiry and warns once per serial when it comes close.
async fn warn_expiry(cluster: &Cluster, ctx: &Context, report: &PassReport, now: jiff::Timestamp) {
    let Some((serial, expires)) = report.release_expires else {
        return;
    };
    let name = cluster.name_any();
    ctx.metrics
        .release_expiry
        .get_or_create(&crate::metrics::ClusterLabel {
            cluster: name.clone(),
        })
        .set(expires.as_millisecond() as f64 / 1000.0);
    let warned = ctx.with_state(&name, |s| s.expiry_warned == Some(serial));
    if warned {
        return;
    }
    let Some(note) = status::expiry_note(report, &cluster.spec.cluster_id, reference(cluster), now)
    else {
        return;
    };
    if ctx.events.write(&ctx.client, note, now).await {
        ctx.with_state(&name, |s| s.expiry_warned = Some(serial));
    }
}
