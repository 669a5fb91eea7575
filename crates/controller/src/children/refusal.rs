//! Refusals made visible: when a child controller refuses an `ApplicationInstance` or `Operation`
//! (not declared by the verified release, or altered), it counts it in
//! `vworkspace_children_refused_total{reason,kind}` and records a Warning Event on the object, in its
//! namespace ([`crate::events`]). Messages name objects, Clusters and serials only: never a value.

use kube::Resource;

use super::ChildContext;
use crate::events::{Note, Severity, reference};
use crate::metrics::RefusalLabel;

/// Counts a refusal and records its Event (best effort: a lost Event is logged, never fatal; the
/// status already says it).
pub async fn record<K>(
    ctx: &ChildContext,
    object: &K,
    reason: &'static str,
    message: &str,
    now: jiff::Timestamp,
) where
    K: Resource<DynamicType = ()>,
{
    let kind: &'static str = match K::kind(&()).as_ref() {
        "ApplicationInstance" => "ApplicationInstance",
        "Operation" => "Operation",
        _ => "Other",
    };
    ctx.metrics
        .refused
        .get_or_create(&RefusalLabel { reason, kind })
        .inc();
    tracing::warn!(kind, reason, "refused: {message}");
    let note = Note {
        regarding: reference(object),
        severity: Severity::Warning,
        reason: reason.to_owned(),
        message: message.to_owned(),
    };
    ctx.caches.events.write(&ctx.client, note, now).await;
}
