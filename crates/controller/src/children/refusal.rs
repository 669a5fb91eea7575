//! Refusals made visible: when a child controller refuses an `ApplicationInstance` or `Operation`
//! (not declared by the verified release, or altered), it counts it in
//! `vworkspace_children_refused_total{reason,kind}` and records a Warning Event on the object, in its
//! namespace. Messages name objects, Clusters and serials only: never a value.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};

use super::ChildContext;
use crate::metrics::RefusalLabel;

/// The reference an Event about `object` points at.
pub fn reference<K>(object: &K) -> ObjectReference
where
    K: Resource<DynamicType = ()>,
{
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: object.meta().name.clone(),
        namespace: object.meta().namespace.clone(),
        uid: object.meta().uid.clone(),
        resource_version: object.meta().resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// The Warning Event of a refusal (pure).
pub fn event(
    involved: ObjectReference,
    reason: &'static str,
    message: &str,
    now: jiff::Timestamp,
) -> Event {
    let name = involved.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: involved.namespace.clone(),
            ..ObjectMeta::default()
        },
        involved_object: involved,
        reason: Some(reason.to_owned()),
        message: Some(crate::cluster::status::clip(message.to_owned())),
        type_: Some("Warning".to_owned()),
        source: Some(EventSource {
            component: Some(crate::cluster::COMPONENT.to_owned()),
            host: None,
        }),
        reporting_component: Some(crate::cluster::COMPONENT.to_owned()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    }
}

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
    let namespace = object.namespace().unwrap_or_default();
    tracing::warn!(kind, reason, "refused: {message}");
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &namespace);
    let event = event(reference(object), reason, message, now);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(error = %e, "cannot record an Event");
    }
}
