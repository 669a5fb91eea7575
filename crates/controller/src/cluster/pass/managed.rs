//! The steps over the managed namespaces: release those that lost the label, give the others the
//! operator's RBAC (rechecked every [`RBAC_RECHECK`]), and record a changed list in the status before
//! anything is applied.

use std::time::Instant;

use vworkspace_core::crd::{Cluster, ManagedNamespace};

use super::{PassState, StepResult, failed};
use crate::cluster::{Context, RBAC_RECHECK, apply, namespaces, write_status};
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

/// [`super::Step::EnsureNamespaceRbac`]: namespaces side by side, each one's objects in order (the
/// binding names the ServiceAccount).
pub(super) async fn ensure_namespace_rbac(
    ctx: &Context,
    _: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    let client = &ctx.client;
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
    let ensures: Vec<futures::future::BoxFuture<'_, Result<&str>>> = stale
        .into_iter()
        .map(|ns| -> futures::future::BoxFuture<'_, _> {
            Box::pin(async move {
                namespaces::ensure(client, ns, apply::FIELD_MANAGER).await?;
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
    if recorded(cluster) == state.managed {
        return StepResult::Next;
    }
    let mut early = cluster.status.clone().unwrap_or_default();
    early.managed_namespaces = state.managed.clone();
    match write_status(&ctx.client, &state.name, &early).await {
        Ok(()) => StepResult::Next,
        Err(e) => StepResult::Failed(failed(&e)),
    }
}
