//! [`super::Step::EnsureNamespaceGuardrails`]: every managed namespace gets the Pod Security labels
//! and NetworkPolicies of `spec.namespacePolicy` on every pass (the labels judged on the pass's own
//! namespace list, the policies read by name); a namespace found weakened is restored and reported
//! (Warning Event `PodSecurityWeakened`, the `NamespaceGuardrails` condition, the repairs metric).

use vworkspace_core::crd::Cluster;
use vworkspace_core::guardrails::Guardrails;

use super::{PassState, StepResult, failed};
use crate::cluster::conditions::Guarded;
use crate::cluster::guardrails::{self, Kept};
use crate::cluster::{Context, apply};
use crate::error::{Error, Result};
use crate::events::{Note, Severity, reference};
use crate::metrics::GuardrailLabel;

/// How often a write refused with 403 is tried again (a binding of this pass not yet seen).
const RBAC_PROPAGATION_TRIES: u32 = 5;
/// How long between those tries.
const RBAC_PROPAGATION_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

fn forbidden(error: &Error) -> bool {
    matches!(error, Error::Kube { source: kube::Error::Api(status), .. } if status.code == 403)
}

/// [`super::Step::EnsureNamespaceGuardrails`].
pub(super) async fn ensure_namespace_guardrails(
    ctx: &Context,
    cluster: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    let Some(policy) = &cluster.spec.namespace_policy else {
        state.report.guardrails = Some(Guarded::Off);
        return StepResult::Next;
    };
    let guardrails = match Guardrails::from_policy(policy) {
        Ok(guardrails) => guardrails,
        Err(e) => return StepResult::Failed(failed(&Error::from(e))),
    };
    let (kept, error) = keep_all(ctx, cluster, state, &guardrails).await;
    let mut found = Vec::new();
    for (namespace, kept) in kept {
        for (kind, count) in kept.repairs() {
            ctx.metrics
                .guardrail_repairs
                .get_or_create(&GuardrailLabel { kind })
                .inc_by(count);
        }
        if let Some(how) = kept.weakened {
            found.push((namespace, how));
        }
    }
    found.sort();
    if !found.is_empty() {
        let note = Note {
            regarding: reference(cluster),
            severity: Severity::Warning,
            reason: vworkspace_core::reasons::POD_SECURITY_WEAKENED.to_owned(),
            message: vworkspace_core::guardrails::weakened_message(
                guardrails.level.as_str(),
                &found,
            ),
        };
        ctx.events.write(&ctx.client, note, (ctx.clock)()).await;
    }
    state.report.guardrails = Some(Guarded::Kept {
        level: guardrails.level.as_str(),
        namespaces: state.managed.len(),
        weakened: found,
    });
    match error {
        Some(e) => StepResult::Failed(failed(&e)),
        None => StepResult::Next,
    }
}

/// Keeps every managed namespace's guardrails, side by side: what each found, and the first error.
async fn keep_all(
    ctx: &Context,
    cluster: &Cluster,
    state: &PassState<'_>,
    guardrails: &Guardrails,
) -> (Vec<(String, Kept)>, Option<Error>) {
    let client = &ctx.client;
    let cluster_id = cluster.spec.cluster_id.as_str();
    let no_labels = Default::default();
    let work: Vec<futures::future::BoxFuture<'_, Result<(String, Kept)>>> = state
        .managed
        .iter()
        .map(|ns| -> futures::future::BoxFuture<'_, _> {
            let live = state.namespace_labels.get(&ns.name).unwrap_or(&no_labels);
            Box::pin(async move {
                let mut tries = 0;
                loop {
                    match guardrails::ensure(client, &ns.name, live, guardrails, cluster_id).await {
                        Ok(kept) => return Ok((ns.name.clone(), kept)),
                        // A RoleBinding written by the step before takes the API server's
                        // authorizer a moment to see: a 403 then is retried, a few times.
                        Err(e) if forbidden(&e) && tries < RBAC_PROPAGATION_TRIES => {
                            tries += 1;
                            tokio::time::sleep(RBAC_PROPAGATION_WAIT).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            })
        })
        .collect();
    apply::bounded(work, apply::WRITE_CONCURRENCY).await
}
