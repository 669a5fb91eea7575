//! The one writer of Kubernetes Events. Every Event the operator records (a `Cluster` pass's outcome,
//! a release about to expire, a child controller's refusal) is built and written here:
//!
//! - **best effort**: a lost Event is logged, never fails a reconcile (the status already says it);
//! - **deduplicated**: the same Event (same object, type, reason and message) again within
//!   [`AGGREGATE_WINDOW`] bumps the `count` and `lastTimestamp` of the one already written, as
//!   client-go's event correlator does, instead of adding an object;
//! - **bounded reasons**: the reason is one of [`vworkspace_core::reasons`] (the callers pass those
//!   constants, or a `Ready` condition's reason, which is always one of them);
//! - **bounded messages**: cut to [`MAX_MESSAGE_BYTES`]; messages name
//!   objects, paths and serials, never a value.
//!
//! core/v1 Events, not events.k8s.io/v1 through kube-runtime's `Recorder`: the seed RBAC model grants
//! `create` and `patch` on core `events` (cluster-wide in deploy/clusterrole.yaml, in each managed
//! namespace by the namespace ClusterRole), which is all this writer uses; the `Recorder` writes
//! `events.k8s.io` objects, which would need a new rule in both roles and in the seed's model.
//! `kubectl get events` and `kubectl describe` show either kind.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};

/// Condition and Event messages are cut to this many bytes (the API server takes 32 KiB for a
/// condition; a refusal of thousands of files is cut, and `verify` on the same commit lists them all).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Cuts a message to [`MAX_MESSAGE_BYTES`] on a character boundary, saying so.
pub fn clip(message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_MESSAGE_BYTES - 40;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{} ... ({} bytes cut)",
        &message[..end],
        message.len() - end
    )
}

/// The component name in Events.
pub const COMPONENT: &str = "vworkspace-operator";

/// Events about a cluster-scoped object (a `Cluster`) are recorded in `default`, as the API server
/// does for cluster-scoped objects.
pub const CLUSTER_SCOPED_NAMESPACE: &str = "default";

/// How long a written Event takes repeats into its count instead of a new Event.
pub const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);

/// How many written Events the writer remembers for aggregation (the oldest is forgotten first).
pub const REMEMBERED: usize = 1024;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Something went as it should.
    Normal,
    /// Something needs a look.
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Normal => "Normal",
            Severity::Warning => "Warning",
        }
    }
}

/// One Event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// The object it is about.
    pub regarding: ObjectReference,
    /// `Normal` or `Warning`.
    pub severity: Severity,
    /// One of [`vworkspace_core::reasons`].
    pub reason: String,
    /// What happened (cut to the status's message bound when the Event is built).
    pub message: String,
}

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

/// Where an Event about `regarding` is recorded: its namespace, or [`CLUSTER_SCOPED_NAMESPACE`].
pub fn namespace_of(regarding: &ObjectReference) -> String {
    regarding
        .namespace
        .clone()
        .unwrap_or_else(|| CLUSTER_SCOPED_NAMESPACE.to_owned())
}

/// The Event of `note` at `now` (pure).
pub fn event(note: &Note, now: jiff::Timestamp) -> Event {
    let name = note.regarding.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(namespace_of(&note.regarding)),
            ..ObjectMeta::default()
        },
        involved_object: note.regarding.clone(),
        reason: Some(note.reason.clone()),
        message: Some(clip(note.message.clone())),
        type_: Some(note.severity.as_str().to_owned()),
        source: Some(EventSource {
            component: Some(COMPONENT.to_owned()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.to_owned()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    }
}

/// What makes two Events the same: the object, the type, the reason, the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    object: (Option<String>, Option<String>, Option<String>),
    severity: Severity,
    reason: String,
    message: String,
}

impl Key {
    fn of(note: &Note) -> Key {
        let r = &note.regarding;
        Key {
            namespace: namespace_of(r),
            object: (r.kind.clone(), r.name.clone(), r.uid.clone()),
            severity: note.severity,
            reason: note.reason.clone(),
            message: note.message.clone(),
        }
    }
}

/// An Event this process wrote: its name, its count, when it was last written.
#[derive(Debug, Clone)]
struct Written {
    name: String,
    count: i32,
    at: Instant,
}

/// The writer: remembers the Events it wrote lately, for aggregation. One per controller context.
#[derive(Debug, Default)]
pub struct EventWriter {
    recent: Mutex<HashMap<Key, Written>>,
}

impl EventWriter {
    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Written>> {
        match self.recent.lock() {
            Ok(guard) => guard,
            // A panic elsewhere leaves at worst a count off by one.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The Event already written for `key` within the window, if any.
    fn repeat_of(&self, key: &Key) -> Option<Written> {
        self.recent()
            .get(key)
            .filter(|w| w.at.elapsed() < AGGREGATE_WINDOW)
            .cloned()
    }

    fn remember(&self, key: Key, written: Written) {
        let mut recent = self.recent();
        recent.retain(|_, w| w.at.elapsed() < AGGREGATE_WINDOW);
        while recent.len() >= REMEMBERED {
            let Some(oldest) = recent
                .iter()
                .min_by_key(|(_, w)| w.at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            recent.remove(&oldest);
        }
        recent.insert(key, written);
    }

    /// Records `note` (best effort): a repeat within [`AGGREGATE_WINDOW`] bumps the count of the
    /// Event already written, anything else is a new Event. Whether it was recorded.
    pub async fn write(&self, client: &Client, note: Note, now: jiff::Timestamp) -> bool {
        let key = Key::of(&note);
        let api: Api<Event> = Api::namespaced(client.clone(), &key.namespace);
        if let Some(last) = self.repeat_of(&key) {
            let count = last.count.saturating_add(1);
            let bump = serde_json::json!({"count": count, "lastTimestamp": Time(now)});
            match api
                .patch(&last.name, &PatchParams::default(), &Patch::Merge(&bump))
                .await
            {
                Ok(_) => {
                    self.remember(
                        key,
                        Written {
                            count,
                            at: Instant::now(),
                            ..last
                        },
                    );
                    return true;
                }
                // Gone (Events expire) or refused: record it anew.
                Err(e) => {
                    tracing::debug!(error = %e, "cannot count a repeated Event; recording it anew")
                }
            }
        }
        match api.create(&PostParams::default(), &event(&note, now)).await {
            Ok(created) => {
                if let Some(name) = created.metadata.name {
                    let written = Written {
                        name,
                        count: 1,
                        at: Instant::now(),
                    };
                    self.remember(key, written);
                }
                true
            }
            Err(e) => {
                tracing::warn!(reason = %note.reason, error = %e, "cannot record an Event");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeApi, status_body};
    use http::Method;
    use serde_json::json;

    fn note(message: &str) -> Note {
        Note {
            regarding: ObjectReference {
                kind: Some("Operation".into()),
                name: Some("nightly".into()),
                namespace: Some("org-a".into()),
                uid: Some("u-1".into()),
                ..ObjectReference::default()
            },
            severity: Severity::Warning,
            reason: vworkspace_core::reasons::NOT_DECLARED.into(),
            message: message.into(),
        }
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_000).expect("time")
    }

    const EVENTS: &str = "/api/v1/namespaces/org-a/events";

    #[test]
    fn an_event_names_its_object_source_and_bounded_message() {
        let event = event(&note(&"x".repeat(10_000)), now());
        assert_eq!(event.metadata.generate_name.as_deref(), Some("nightly."));
        assert_eq!(event.metadata.namespace.as_deref(), Some("org-a"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.reason.as_deref(), Some("NotDeclaredInRelease"));
        assert_eq!(event.reporting_component.as_deref(), Some(COMPONENT));
        assert_eq!(event.count, Some(1));
        let message = event.message.unwrap_or_default();
        assert!(message.len() <= MAX_MESSAGE_BYTES);
        let mut cluster_scoped = note("m");
        cluster_scoped.regarding.namespace = None;
        assert_eq!(namespace_of(&cluster_scoped.regarding), "default");
    }

    #[tokio::test]
    async fn a_repeat_is_counted_on_the_event_already_written_and_anything_else_is_new() {
        let api = FakeApi::new();
        api.route(
            Method::POST,
            EVENTS,
            201,
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "nightly.1", "namespace": "org-a"},
                   "involvedObject": {}}),
        );
        api.route(
            Method::PATCH,
            &format!("{EVENTS}/nightly.1"),
            200,
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "nightly.1"}, "involvedObject": {}}),
        );
        let writer = EventWriter::default();
        let client = api.client();
        assert!(writer.write(&client, note("first"), now()).await);
        assert!(writer.write(&client, note("first"), now()).await);
        assert!(writer.write(&client, note("first"), now()).await);
        assert!(writer.write(&client, note("second"), now()).await);
        assert_eq!(
            api.writes(),
            [
                format!("POST {EVENTS}"),
                format!("PATCH {EVENTS}/nightly.1"),
                format!("PATCH {EVENTS}/nightly.1"),
                format!("POST {EVENTS}"),
            ]
        );
        let counts: Vec<_> = api
            .seen()
            .iter()
            .filter(|s| s.method == Method::PATCH)
            .map(|s| s.body["count"].clone())
            .collect();
        assert_eq!(counts, [json!(2), json!(3)]);
    }

    #[tokio::test]
    async fn a_lost_event_is_reported_and_an_expired_one_written_anew() {
        let refused = FakeApi::new();
        refused.route(Method::POST, EVENTS, 403, status_body(403, "Forbidden"));
        let writer = EventWriter::default();
        assert!(!writer.write(&refused.client(), note("m"), now()).await);

        // Counted once, then the Event expired on the server (404): a new one.
        let api = FakeApi::new();
        api.route(
            Method::POST,
            EVENTS,
            201,
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "nightly.1"}, "involvedObject": {}}),
        );
        api.route(
            Method::PATCH,
            &format!("{EVENTS}/nightly.1"),
            404,
            status_body(404, "NotFound"),
        );
        let client = api.client();
        assert!(writer.write(&client, note("m"), now()).await);
        assert!(writer.write(&client, note("m"), now()).await);
        assert_eq!(
            api.writes(),
            [
                format!("POST {EVENTS}"),
                format!("PATCH {EVENTS}/nightly.1"),
                format!("POST {EVENTS}"),
            ]
        );
    }
}
