//! The steps over the managed namespaces: release those that lost the label, give the others the
//! operator's RBAC (rechecked every [`RBAC_RECHECK`]), and record a changed list in the status before
//! anything is applied.

use std::time::Instant;

use vworkspace_core::crd::{Cluster, ManagedNamespace};

use super::{PassState, StepResult, failed};
use crate::cluster::{Context, RBAC_RECHECK, apply, namespaces, rbac, write_status};
use crate::error::Result;

/// The managed namespaces the last status recorded.
fn recorded(cluster: &Cluster) -> Vec<ManagedNamespace> {
    cluster
        .status
        .as_ref()
        .map(|s| s.managed_namespaces.clone())
        .unwrap_or_default()
}

/// [`super::Step::ReleaseNamespaces`].
pub(super) async fn release_namespaces(
    ctx: &Context,
    cluster: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    let (managed, labels) = match namespaces::list_managed_with_labels(&ctx.client).await {
        Ok(listed) => listed,
        Err(e) => return StepResult::Failed(failed(&e)),
    };
    for gone in namespaces::removed(&recorded(cluster), &managed) {
        // Before the bindings go: they hold the right to delete the NetworkPolicies.
        if cluster.spec.namespace_policy.is_some()
            && let Err(e) = crate::cluster::guardrails::release(&ctx.client, &gone).await
        {
            return StepResult::Failed(failed(&e));
        }
        if let Err(e) = namespaces::release(&ctx.client, &gone).await {
            return StepResult::Failed(failed(&e));
        }
        ctx.with_state(&state.name, |s| s.namespaces_ensured.remove(&gone));
    }
    state.managed = managed;
    state.namespace_labels = labels;
    StepResult::Next
}

/// The managed namespaces whose RBAC was not checked within [`RBAC_RECHECK`] of `now`, according
/// to `ensured` (when each was last checked).
pub(super) fn stale<'m>(
    managed: &'m [ManagedNamespace],
    ensured: &std::collections::HashMap<String, Instant>,
    now: Instant,
) -> Vec<&'m str> {
    managed
        .iter()
        .map(|ns| ns.name.as_str())
        .filter(|ns| {
            ensured
                .get(*ns)
                .is_none_or(|at| now.saturating_duration_since(*at) >= RBAC_RECHECK)
        })
        .collect()
}

/// At a process's first pass of `cluster`: when its status says every namespace it records was given
/// the RBAC this version gives ([`rbac::digest`]), those count as checked now. The status is written by
/// the operator alone (the admission policy `vworkspace-cluster-status-from-operator`); they are
/// checked again after [`RBAC_RECHECK`], or at once when a child write is refused there
/// ([`crate::access_lost`]). Without it a restart reads four objects back per namespace (4,000
/// requests at 1,000 namespaces).
fn seed_from_status(ctx: &Context, cluster: &Cluster, name: &str) {
    let given = cluster
        .status
        .as_ref()
        .is_some_and(|s| s.namespace_rbac.as_deref() == Some(rbac::digest()));
    let recorded = recorded(cluster);
    ctx.with_state(name, |s| {
        if std::mem::replace(&mut s.namespaces_seeded, true) || !given {
            return;
        }
        let now = Instant::now();
        for ns in recorded {
            s.namespaces_ensured.entry(ns.name).or_insert(now);
        }
    });
}

/// [`super::Step::EnsureNamespaceRbac`]: namespaces side by side, each one's objects in order (the
/// binding names the ServiceAccount).
pub(super) async fn ensure_namespace_rbac(
    ctx: &Context,
    cluster: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    let client = &ctx.client;
    seed_from_status(ctx, cluster, &state.name);
    // A namespace where a child controller was refused for lack of rights is checked now, whenever
    // it was last checked.
    let refused = ctx
        .access_lost
        .take(state.managed.iter().map(|ns| ns.name.as_str()));
    let ensured = ctx.with_state(&state.name, |s| {
        for ns in &refused {
            s.namespaces_ensured.remove(ns);
        }
        s.namespaces_ensured.clone()
    });
    if !refused.is_empty() {
        tracing::info!(namespaces = ?refused, "checking the RBAC of namespaces where a child controller was refused");
    }
    let stale = stale(&state.managed, &ensured, Instant::now());
    // A namespace this Cluster's status does not record yet is new to it: its RBAC is applied
    // without reading it first (half the requests of a first apply).
    let recorded: std::collections::BTreeSet<String> =
        recorded(cluster).into_iter().map(|ns| ns.name).collect();
    let ensures: Vec<futures::future::BoxFuture<'_, Result<&str>>> = stale
        .into_iter()
        .map(|ns| -> futures::future::BoxFuture<'_, _> {
            let check = if recorded.contains(ns) {
                namespaces::Check::ReadFirst
            } else {
                namespaces::Check::ApplyOnly
            };
            Box::pin(async move {
                namespaces::ensure(client, ns, apply::FIELD_MANAGER, check).await?;
                Ok(ns)
            })
        })
        .collect();
    let (ensured, error) = apply::bounded(ensures, apply::WRITE_CONCURRENCY).await;
    ctx.with_state(&state.name, |s| {
        for ns in ensured {
            s.namespaces_ensured.insert(ns.to_owned(), Instant::now());
        }
    });
    match error {
        Some(e) => StepResult::Failed(failed(&e)),
        None => StepResult::Next,
    }
}

/// [`super::Step::RecordNamespaces`]: recorded before anything is applied, because the admission
/// webhook and the Operation controller judge templates by this list and must know a new namespace
/// before its objects arrive.
pub(super) async fn record_namespaces(
    ctx: &Context,
    cluster: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    state.report.managed_namespaces = Some(state.managed.clone());
    // Every managed namespace holds this version's RBAC now (the step before gave it to each one
    // not checked within the hour).
    let digest = rbac::digest();
    state.report.namespace_rbac = Some(digest.to_owned());
    let rbac_recorded = cluster
        .status
        .as_ref()
        .is_some_and(|s| s.namespace_rbac.as_deref() == Some(digest));
    if recorded(cluster) == state.managed && rbac_recorded {
        return StepResult::Next;
    }
    let mut early = cluster.status.clone().unwrap_or_default();
    early.managed_namespaces = state.managed.clone();
    early.namespace_rbac = Some(digest.to_owned());
    match write_status(&ctx.client, &state.name, &early).await {
        Ok(()) => StepResult::Next,
        Err(e) => StepResult::Failed(failed(&e)),
    }
}
