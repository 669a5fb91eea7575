//! `WatchedInstance`: a live `ApplicationInstance` as the long-running process keeps it in its watch
//! store: metadata, status, and the spec by digest only ([`SpecDigest`]).
//!
//! Nothing the process acts on comes from a live spec: children are built from, and values
//! decrypted from, the verified release's declared spec; the live spec is only ever compared with
//! it. So the store keeps what the comparison needs (32 bytes) instead of the whole typed spec
//! (about 1.9 KiB an instance: the `values` maps and the armored secrets in them). The type cannot
//! give a live spec to anything by mistake: it has none.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::Resource;
use serde::Deserialize;
use std::borrow::Cow;

use super::{ApplicationInstance, ApplicationInstanceSpec, ApplicationInstanceStatus};
use crate::spec_digest::SpecDigest;

/// A watched `ApplicationInstance`: the same kind on the API server, read with its spec reduced to a
/// digest as it is decoded (the whole spec is never stored).
#[derive(Clone, Debug, PartialEq)]
pub struct WatchedInstance {
    /// The object's metadata.
    pub metadata: ObjectMeta,
    /// The digest of its spec as the API server holds it; `None` for a spec that does not
    /// serialize (it then equals no declared spec).
    pub spec: Option<SpecDigest>,
    /// Its status (written by the operator).
    pub status: Option<ApplicationInstanceStatus>,
}

impl WatchedInstance {
    /// The watched form of a whole object.
    pub fn of(instance: &ApplicationInstance) -> WatchedInstance {
        WatchedInstance {
            metadata: instance.metadata.clone(),
            spec: SpecDigest::of_spec(&instance.spec),
            status: instance.status.clone(),
        }
    }

    /// The whole object with this one's metadata and status and `spec` (a declared spec: the live
    /// one is not kept).
    pub fn with_spec(&self, spec: ApplicationInstanceSpec) -> ApplicationInstance {
        ApplicationInstance {
            metadata: self.metadata.clone(),
            spec,
            status: self.status.clone(),
        }
    }
}

/// The object as the API server sends it; the spec is typed (as the whole kind would be decoded,
/// so a spec the kind refuses is refused here too) and then hashed and dropped.
#[derive(Deserialize)]
struct Wire {
    metadata: ObjectMeta,
    spec: ApplicationInstanceSpec,
    #[serde(default)]
    status: Option<ApplicationInstanceStatus>,
}

impl<'de> Deserialize<'de> for WatchedInstance {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        Ok(WatchedInstance {
            metadata: wire.metadata,
            spec: SpecDigest::of_spec(&wire.spec),
            status: wire.status,
        })
    }
}

impl Resource for WatchedInstance {
    type DynamicType = ();
    type Scope = <ApplicationInstance as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        ApplicationInstance::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        ApplicationInstance::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        ApplicationInstance::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        ApplicationInstance::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_as_the_kind_does_and_keeps_the_spec_by_digest_only() {
        let wire = json!({
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "metadata": {"name": "web", "namespace": "team-a", "uid": "u1", "generation": 3},
            "spec": {"chart": {"repository": "https://charts.example.org/", "name": "app", "version": "1.0.0"},
                     "values": {"replicas": 2.0}},
            "status": {"observedGeneration": 3}
        });
        let watched: WatchedInstance = serde_json::from_value(wire.clone()).expect("decodes");
        let whole: ApplicationInstance = serde_json::from_value(wire).expect("decodes");
        assert_eq!(watched, WatchedInstance::of(&whole));
        assert_eq!(watched.metadata.generation, Some(3));
        assert_eq!(
            watched.status.as_ref().and_then(|s| s.observed_generation),
            Some(3)
        );
        // A declared `replicas: 2` is the same spec.
        let mut declared = whole.spec.clone();
        declared.values = Some(json!({"replicas": 2}));
        assert_eq!(watched.spec, SpecDigest::of_spec(&declared));
        declared.values = Some(json!({"replicas": 3}));
        assert_ne!(watched.spec, SpecDigest::of_spec(&declared));
        assert_eq!(watched.with_spec(whole.spec.clone()), whole);
        assert_eq!(
            WatchedInstance::url_path(&(), Some("team-a")),
            ApplicationInstance::url_path(&(), Some("team-a"))
        );
    }

    #[test]
    fn a_spec_the_kind_refuses_is_refused() {
        let wire = json!({
            "metadata": {"name": "web", "namespace": "team-a"},
            "spec": {"chart": {"repository": "x", "name": "app", "version": "1", "unknown": true}}
        });
        assert!(serde_json::from_value::<WatchedInstance>(wire).is_err());
    }
}
