//! The settled record of a pass ([`vworkspace_core::plan::settled`]): made by a pass that found or
//! made every declared object as declared, checked by a fresh process's pass on the same commit,
//! which then stops without parsing the release again or reading the objects whole.

use std::sync::Arc;

use vworkspace_core::crd::{Cluster, InventoryEntry};
use vworkspace_core::pipeline::{TrustConfig, VerifiedIntent};
use vworkspace_core::plan::LABEL_CLUSTER;
use vworkspace_core::plan::diff::{Changes, LiveObject};
use vworkspace_core::plan::settled::{SettledKey, SettledObject, SettledRef, settled_digest};
use vworkspace_core::trust::release::VerifiedRelease;

use super::{PassState, StepResult};
use crate::cluster::conditions::StepOutcome;
use crate::cluster::{Context, apply};
use crate::error::Error;

/// A verified release whose intent is not parsed yet: the pass may find it settled
/// ([`reuse_settled`]) and never need it.
pub(crate) struct PendingIntent {
    pub(crate) release: VerifiedRelease,
    pub(crate) config: TrustConfig,
}

/// The key of the record, the parts a pass holds as owned values.
struct KeyParts {
    cluster_spec: Vec<u8>,
    managed: Vec<String>,
    recipients: Vec<String>,
}

impl KeyParts {
    fn of(cluster: &Cluster, state: &PassState<'_>) -> KeyParts {
        KeyParts {
            // A spec that does not serialize gives an empty key part, the same at both ends; the
            // commit, the release and the objects still decide.
            cluster_spec: serde_json::to_vec(&cluster.spec).unwrap_or_default(),
            managed: state.managed.iter().map(|m| m.name.clone()).collect(),
            recipients: state.report.recipients.clone().unwrap_or_default(),
        }
    }

    fn key<'a>(
        &'a self,
        release: &'a VerifiedRelease,
        values_verified: Option<&'a str>,
        ctx: &'a Context,
    ) -> SettledKey<'a> {
        SettledKey {
            commit: release.commit().id(),
            release_digest: release.digest(),
            cluster_spec: &self.cluster_spec,
            managed_namespaces: &self.managed,
            recipients: &self.recipients,
            values_verified,
            limits: &ctx.settings.limits,
        }
    }
}

/// The values verdict the status holds after this pass: this pass's, else the one it had.
fn values_after<'a>(cluster: &'a Cluster, state: &'a PassState<'_>) -> Option<&'a str> {
    state.report.values_verified.as_deref().or_else(|| {
        cluster
            .status
            .as_ref()
            .and_then(|s| s.values_verified.as_deref())
    })
}

/// The record of a complete write ([`super::Step::Write`]), or `None` when it cannot vouch for every
/// object the labelled list would return: something was left out (skipped, held by another owner,
/// kept), a labelled live object is neither declared nor pruned, or an object's generation after
/// its spec was as declared is not known (a write answered with another spec, an object read
/// without a version).
pub(super) fn record(
    ctx: &Context,
    cluster: &Cluster,
    state: &PassState<'_>,
    verified: &VerifiedIntent,
    changes: &Changes<'_>,
    done: &apply::Applied,
) -> Option<String> {
    if !(changes.skipped.is_empty() && changes.conflicts.is_empty() && changes.kept.is_empty()) {
        return None;
    }
    let objects = settled_objects(&state.live, changes, done, &cluster.spec.cluster_id)?;
    let parts = KeyParts::of(cluster, state);
    let key = parts.key(verified.release(), values_after(cluster, state), ctx);
    Some(settled_digest(&key, objects))
}

/// Every object the labelled list returns after the pass, with the version its declared spec has:
/// the unchanged ones as the comparing read saw them, the written ones as their answers say.
pub(super) fn settled_objects<'a>(
    live: &'a [LiveObject],
    changes: &'a Changes<'_>,
    done: &'a apply::Applied,
    cluster: &str,
) -> Option<Vec<SettledRef<'a>>> {
    let written = changes.create.len() + changes.update.len();
    if done.applied.len() != written || done.answers.len() != written {
        return None;
    }
    let by_id: std::collections::BTreeMap<&InventoryEntry, &LiveObject> =
        live.iter().map(|l| (&l.id, l)).collect();
    let mut objects: Vec<SettledRef<'a>> = done.answers.iter().map(SettledObject::as_ref).collect();
    for id in &changes.unchanged {
        let live = by_id.get(id)?;
        objects.push(SettledRef {
            id,
            version: live.version.as_ref()?,
            labels: &live.labels,
            annotations: &live.annotations,
        });
    }
    let covered: std::collections::BTreeSet<&InventoryEntry> =
        objects.iter().map(|o| o.id).chain(&done.pruned).collect();
    let labelled_left = live.iter().any(|l| {
        l.labels.get(LABEL_CLUSTER).map(String::as_str) == Some(cluster) && !covered.contains(&l.id)
    });
    (!labelled_left).then_some(objects)
}

/// [`super::Step::ReuseSettled`]: for a release verified but not parsed yet (a fresh process on the
/// commit it applied last), the pass ends here when the objects' metadata gives the record the
/// status holds; otherwise the release is parsed (while the live objects are listed whole) and the
/// pass goes on as any other.
///
/// A pass that ends here publishes nothing to the child controllers (it has no plan): only a
/// process without watch stores gets a pending release ([`super::source`]), and such a process
/// (`run --once`) runs no child controller; `run` sets its stores before its first pass.
pub(super) async fn reuse_settled(
    ctx: &Context,
    cluster: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    let Some(pending) = state.pending.take() else {
        return StepResult::Next;
    };
    let listed = state.prefetched_settled.take();
    let recorded = cluster.status.as_ref().and_then(|s| s.settled.as_deref());
    if let (Some(Ok(objects)), Some(recorded)) = (&listed, recorded) {
        let parts = KeyParts::of(cluster, state);
        let key = parts.key(&pending.release, values_after(cluster, state), ctx);
        let digest = settled_digest(&key, objects.iter().map(SettledObject::as_ref));
        if digest == recorded {
            settled_report(cluster, state, &pending.release, digest);
            return StepResult::Complete;
        }
        tracing::debug!("the live objects are not as the last pass left them: the whole pass runs");
    }
    match read_intent_and_list(ctx, cluster, state, pending).await {
        Ok(verified) => {
            super::log_values_checked(&verified);
            state.report.values_verified = verified.values_verdict().map(str::to_owned);
            state.verified = Some(verified);
            StepResult::Next
        }
        Err(e) => StepResult::Refused(e),
    }
}

/// The report of a pass that found the record unchanged: what the last pass applied, applied.
fn settled_report(
    cluster: &Cluster,
    state: &mut PassState<'_>,
    release: &VerifiedRelease,
    digest: String,
) {
    state.report.inventory = cluster.status.as_ref().map(|s| s.inventory.clone());
    state.report.apply = StepOutcome::Succeeded;
    state.report.applied = Some(crate::cluster::status::AppliedSource::of(release));
    state.report.settled = Some(digest);
}

/// Parses the pending release on the blocking pool while this source's live objects are listed
/// whole: the commit is the one the status records as applied last, as in
/// [`super::source::lists_while_verifying`].
async fn read_intent_and_list(
    ctx: &Context,
    cluster: &Cluster,
    state: &mut PassState<'_>,
    pending: PendingIntent,
) -> Result<Arc<VerifiedIntent>, Error> {
    let PendingIntent { release, config } = pending;
    let parse = tokio::task::spawn_blocking(move || {
        vworkspace_core::pipeline::read_intent(release, &config)
    });
    let list = apply::list_live(&ctx.client, &cluster.spec.cluster_id, None);
    let (parsed, listed) = futures::join!(parse, list);
    state.prefetched_live = Some(listed);
    match parsed {
        Ok(Ok(verified)) => Ok(Arc::new(verified)),
        Ok(Err(e)) => Err(Error::Pass(*e.error)),
        Err(e) => Err(Error::Task(e)),
    }
}
