//! The controllers that materialize what the `Cluster` pass applied: [`instance`] turns each
//! `ApplicationInstance` into its Flux source, HelmRelease and values Secret; [`operation`] runs each
//! `Operation` once through its engine. Both only act in managed namespaces (where the operator holds
//! its namespace rights), only on objects the last verified release of their `Cluster` declares, and
//! with the declared spec ([`declared`]), read before they write, and write nothing when the children
//! already are what they should be. The children are built by the pure [`crate::children::flux`] and
//! [`crate::children::engines`].

pub use vworkspace_core::plan::declared;
pub mod chart_keys;
pub mod chart_source;
pub mod engines;
pub mod flux;
pub mod foreign;
pub mod instance;
pub mod operation;
pub mod refusal;
pub mod rollout;
pub mod shard;
pub mod watches;
pub mod webhook_server;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use serde_json::Value;

use crate::cluster::apply::FIELD_MANAGER;
use crate::cluster::rbac::MANAGED_LABEL;
use crate::error::Error;
use vworkspace_core::crd::{Cluster, IdentitySecretRef};
use vworkspace_core::limits::Limits;
use vworkspace_core::secrets::Identities;

/// How a step of a child reconcile ended ([`instance::STEPS`], [`operation::STEPS`]).
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next step.
    Next,
    /// The reconcile ends here, with this requeue (its status, if any, is written).
    Done(kube::runtime::controller::Action),
}

/// What both controllers share.
#[derive(Clone)]
pub struct ChildContext {
    /// The API client.
    pub client: Client,
    /// The operator's namespace (identity Secrets, RunCommand templates).
    pub namespace: String,
    /// Where Velero runs.
    pub velero_namespace: String,
    /// Limits on values.
    pub limits: Limits,
    /// The clock.
    pub clock: fn() -> jiff::Timestamp,
    /// What the verified releases declare: published by the `Cluster` pass
    /// ([`crate::cluster::Context::declared`]), the only source the controllers act from.
    pub declared: std::sync::Arc<declared::DeclaredSet>,
    /// The exported metrics (refusals are counted here).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// What a reconcile reads from memory instead of the API server.
    pub caches: Caches,
    /// Where a refusal for lack of rights in a namespace is reported, for the `Cluster` pass to
    /// check that namespace's RBAC again ([`crate::access_lost`]; shared with
    /// [`crate::cluster::Context::access_lost`]).
    pub access_lost: std::sync::Arc<crate::access_lost::AccessLost>,
}

/// The shared caches of the child controllers. The stores are filled by the watches of
/// [`crate::runtime::controllers`] (one watch each, shared by every reconcile); without them (`None`,
/// as in tests against a fake API server) each reconcile reads the API server, as before.
#[derive(Clone, Default)]
pub struct Caches {
    /// Every `Cluster` (the reflector store of the `Cluster` controller's own watch).
    pub clusters: Option<Store<Cluster>>,
    /// The namespaces carrying the managed label (a watch with that label selector).
    pub managed_namespaces: Option<Store<Namespace>>,
    /// The per-namespace HelmRelease watches ([`watches`]): readiness is mirrored on their events
    /// instead of by polling. `None`: poll every [`POLL_WITHOUT_WATCH`].
    pub helm_releases: Option<watches::HelmReleaseWatches>,
    /// Parsed identities per identity Secret: `(name, key)` -> (when read, resourceVersion,
    /// identities). One entry per Secret a `Cluster` names; read again after [`IDENTITY_REREAD`]
    /// and parsed again only when the Secret's resourceVersion moved.
    identities: Arc<Mutex<IdentityCache>>,
    /// The Events written lately, for aggregation ([`crate::events`]): shared by both controllers.
    pub(crate) events: Arc<crate::events::EventWriter>,
    /// The label selector of the `Cluster`s this process reconciles (`run --watch-label-selector`);
    /// with one, children are judged only when they belong to one of them ([`shard::in_shard`]).
    pub cluster_selector: Option<String>,
}

/// `(Secret name, key)` -> (when it was read, the Secret's resourceVersion, the identities parsed
/// from it).
type IdentityCache = HashMap<(String, String), (std::time::Instant, String, Identities)>;

/// How long an identity Secret, once read, is used before it is read again. Every instance of a
/// Cluster is decrypted with the same Secret: at 10,000 instances reading it for each would be
/// 10,000 reads of one object in a burst. A rotated identity is picked up within this time (the
/// `Cluster` pass, which reads the Secret on every pass, already refuses a release the new identity
/// cannot decrypt).
pub const IDENTITY_REREAD: std::time::Duration = std::time::Duration::from_secs(5);

/// How often an instance whose HelmRelease is not Ready is reconciled again when no HelmRelease
/// watch runs (tests against a fake API server, which serves no watches on Flux kinds).
pub const POLL_WITHOUT_WATCH: std::time::Duration = std::time::Duration::from_secs(30);

/// How often every instance is reconciled again while the HelmRelease watches run: drift of the
/// values Secret and the Flux source (neither is watched; Secrets cannot be, the operator may not
/// list them) is repaired within this time; the HelmRelease's own changes arrive by watch.
pub const RESYNC_WITH_WATCH: std::time::Duration = std::time::Duration::from_secs(600);

impl Caches {
    /// Caches over the given stores.
    pub fn new(clusters: Store<Cluster>, managed_namespaces: Store<Namespace>) -> Caches {
        Caches {
            clusters: Some(clusters),
            managed_namespaces: Some(managed_namespaces),
            helm_releases: None,
            identities: Arc::default(),
            events: Arc::default(),
            cluster_selector: None,
        }
    }

    /// Forgets the parsed identities of Secrets no `Cluster` in `keep` names any more.
    pub fn retain_identities(&self, keep: &[(String, String)]) {
        let mut guard = match self.identities.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.retain(|k, _| keep.contains(k));
    }
}

/// Reports `namespace` to the `Cluster` pass ([`crate::access_lost`]) when `error` is the API
/// server's refusal for lack of rights there: the operator's RoleBinding in it may be gone.
pub(crate) fn report_refusal(ctx: &ChildContext, namespace: Option<&str>, error: &Error) {
    let (Some(namespace), Error::Kube { source, .. }) = (namespace, error) else {
        return;
    };
    if crate::access_lost::is_rbac_refusal(source)
        && ctx.access_lost.report(namespace, std::time::Instant::now())
    {
        tracing::warn!(
            namespace,
            "refused for lack of rights in a managed namespace: the Cluster pass checks its RBAC again now"
        );
    }
}

impl ChildContext {
    /// Whether this process judges the child with `meta` ([`shard`]): always without a selector.
    pub async fn in_shard(&self, meta: &kube::api::ObjectMeta) -> Result<bool, Error> {
        if self.caches.cluster_selector.is_none() {
            return Ok(true);
        }
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        Ok(shard::in_shard(
            shard::cluster_label(meta),
            namespace,
            &self.clusters().await?,
        ))
    }

    /// Whether `namespace` carries the managed label: from the shared store when there is one, else
    /// read by name.
    pub async fn is_managed(&self, namespace: &str) -> Result<bool, Error> {
        match &self.caches.managed_namespaces {
            Some(store) => Ok(store
                .get(&ObjectRef::new(namespace))
                .is_some_and(|n| carries_managed_label(&n))),
            None => is_managed(&self.client, namespace).await,
        }
    }

    /// The Operation templates `namespace` may run now, from its current annotation
    /// ([`crate::cluster::rbac::ALLOWED_TEMPLATES_ANNOTATION`]): from the shared store when there is
    /// one, else read by name. `None` when the namespace is not managed. Never from a `Cluster`'s
    /// `status.managedNamespaces`: a Cluster whose pass stopped early keeps an old list there.
    pub async fn allowed_templates(&self, namespace: &str) -> Result<Option<Vec<String>>, Error> {
        let read = match &self.caches.managed_namespaces {
            Some(store) => store.get(&ObjectRef::new(namespace)).map(|n| (*n).clone()),
            None => Api::<Namespace>::all(self.client.clone())
                .get_opt(namespace)
                .await
                .map_err(kube_error(format!("get Namespace {namespace}")))?,
        };
        Ok(read.filter(carries_managed_label).map(|n| {
            crate::cluster::rbac::allowed_templates(
                n.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(crate::cluster::rbac::ALLOWED_TEMPLATES_ANNOTATION))
                    .map(String::as_str),
            )
        }))
    }

    /// Every `Cluster`: from the shared store when there is one, else listed.
    pub async fn clusters(&self) -> Result<Vec<Arc<Cluster>>, Error> {
        match &self.caches.clusters {
            Some(store) => Ok(store.state()),
            None => Ok(clusters(&self.client)
                .await?
                .into_iter()
                .map(Arc::new)
                .collect()),
        }
    }

    /// The age identities a `Cluster` names, read from its Secret (by name; the operator may not
    /// list Secrets) at most every [`IDENTITY_REREAD`], and parsed only when the Secret's
    /// resourceVersion differs from the one parsed last.
    pub async fn identities(&self, reference: &IdentitySecretRef) -> Result<Identities, Error> {
        let key = reference.key_or_default().to_owned();
        let cache_key = (reference.name.clone(), key.clone());
        let lock = || match self.caches.identities.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((read, _, parsed)) = lock().get(&cache_key)
            && read.elapsed() < IDENTITY_REREAD
        {
            return Ok(parsed.clone());
        }
        let source = format!("Secret {}/{} key {key}", self.namespace, reference.name);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        // Read by name, as the Cluster pass reads it (never listed).
        let secret = api.get(&reference.name).await.map_err(kube_error(format!(
            "get Secret {}/{}",
            self.namespace, reference.name
        )))?;
        let read = std::time::Instant::now();
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        if !version.is_empty()
            && let Some((at, seen, parsed)) = lock().get_mut(&cache_key)
            && *seen == version
        {
            *at = read;
            return Ok(parsed.clone());
        }
        let bytes = zeroize::Zeroizing::new(
            secret
                .data
                .and_then(|mut d| d.remove(&key))
                .map(|b| b.0)
                .ok_or_else(|| Error::TrustInput {
                    object: source.clone(),
                    problem: "no such key".to_owned(),
                })?,
        );
        let parsed = crate::cluster::trust::parse_identities(&source, &bytes)?;
        if !version.is_empty() {
            lock().insert(cache_key, (read, version, parsed.clone()));
        }
        Ok(parsed)
    }
}

fn carries_managed_label(namespace: &Namespace) -> bool {
    namespace
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_LABEL.0))
        .is_some_and(|v| v == MANAGED_LABEL.1)
}

pub(crate) fn kube_error(action: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

/// Writes `status` to a namespaced object of the operator's own kinds (server-side apply on the status
/// subresource), unless it already is `current`.
pub async fn write_status<K, S>(
    client: &Client,
    object: &K,
    current: Option<&S>,
    status: &S,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(());
    }
    let name = object.meta().name.clone().unwrap_or_default();
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let kind = K::kind(&());
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let body =
        serde_json::json!({"apiVersion": K::api_version(&()), "kind": kind, "status": status});
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube_error(format!(
        "write status of {kind} {namespace}/{name}"
    )))?;
    Ok(())
}

/// Whether `namespace` carries the managed label (read by name; `get` on namespaces is granted).
pub async fn is_managed(client: &Client, namespace: &str) -> Result<bool, Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = api
        .get_opt(namespace)
        .await
        .map_err(kube_error(format!("get Namespace {namespace}")))?;
    Ok(ns.as_ref().is_some_and(carries_managed_label))
}

/// Every `Cluster` (cluster-scoped `list` on the operator's own kind is granted).
pub async fn clusters(client: &Client) -> Result<Vec<Cluster>, Error> {
    let api: Api<Cluster> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(kube_error("list Clusters".into()))?
        .items)
}

/// The API coordinates of a third-party kind.
pub fn api_resource(api_version: &str, kind: &str, plural: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

/// The annotation on every child written through [`ensure_dynamic`]: the digest of the spec it was
/// applied with. The API server and the owner's controller add defaulted fields to a child's spec, so
/// the live spec is never equal to the declared one; with this digest a declared field that was
/// removed is still seen as a change.
pub const ANNOTATION_SPEC_DIGEST: &str = "apps.vworkspace.io/spec-digest";

/// `sha256:<hex>` of a spec's JSON.
pub fn spec_digest(spec: &Value) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
}

/// Whether every field of `want` is in `have` with the same value (objects recursively; lists
/// element by element, of the same length): what the server added to `have` does not count.
fn contains(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contains(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| contains(a, b))
        }
        _ => want == have,
    }
}

/// Whether a live object already carries what `desired` declares: every desired label, the owner
/// references, and its `spec`: equal, or applied with the same spec digest
/// ([`ANNOTATION_SPEC_DIGEST`]) and still holding every declared field (fields the API server or the
/// owner controller added do not count; a declared field changed by hand does).
pub fn same_object(desired: &Value, live: &Value) -> bool {
    let labels_ok = desired["metadata"]["labels"]
        .as_object()
        .is_none_or(|want| {
            want.iter()
                .all(|(k, v)| live["metadata"]["labels"].get(k) == Some(v))
        });
    // Annotations we declare (Flux's reconcile requests) count like labels; others' do not.
    let annotations_ok = desired["metadata"]["annotations"]
        .as_object()
        .is_none_or(|want| {
            want.iter()
                .all(|(k, v)| live["metadata"]["annotations"].get(k) == Some(v))
        });
    let owners_ok = desired["metadata"]["ownerReferences"].is_null()
        || desired["metadata"]["ownerReferences"] == live["metadata"]["ownerReferences"];
    let spec_ok = desired["spec"] == live["spec"]
        || (live["metadata"]["annotations"][ANNOTATION_SPEC_DIGEST].as_str()
            == Some(spec_digest(&desired["spec"]).as_str())
            && contains(&desired["spec"], &live["spec"]));
    labels_ok && annotations_ok && owners_ok && spec_ok
}

/// What [`ensure_dynamic`] found and did.
#[derive(Debug)]
pub struct Ensured {
    /// The live object (after the write, if any).
    pub live: Value,
    /// Whether it wrote.
    pub wrote: bool,
    /// The spec fields another writer had added and the release does not declare, removed by this
    /// call (their paths, comma-separated; never their values).
    pub removed: Option<String>,
}

/// Reads a dynamic object by name and server-side applies `desired` if it differs. `known_absent`:
/// the object is believed absent (a watch has listed the namespace and not seen it, or its
/// instance's children were never written), so the read is skipped and the apply's answer is
/// checked instead: fields another writer added to an object that did exist are removed as after a
/// read.
pub async fn ensure_dynamic(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    desired: &Value,
    known_absent: bool,
) -> Result<Ensured, Error> {
    let name = desired["metadata"]["name"].as_str().unwrap_or_default();
    let what = format!("{} {namespace}/{name}", resource.kind);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let live = if known_absent {
        None
    } else {
        api.get_opt(name)
            .await
            .map_err(kube_error(format!("get {what}")))?
    };
    let live = live.map(|l| serde_json::to_value(l).unwrap_or(Value::Null));
    // Fields another writer added and we do not declare: removed after the apply below.
    let foreign = live
        .as_ref()
        .filter(|_| foreign::compared_whole(resource))
        .and_then(|l| foreign::foreign_spec_fields(desired, l));
    if let Some(live) = live
        && foreign.is_none()
        && same_object(desired, &live)
    {
        return Ok(Ensured {
            live,
            wrote: false,
            removed: None,
        });
    }
    let mut body = desired.clone();
    if body["metadata"].is_object() {
        body["metadata"]["annotations"][ANNOTATION_SPEC_DIGEST] =
            Value::String(spec_digest(&desired["spec"]));
    }
    let written = api
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(kube_error(format!("apply {what}")))?;
    let written = serde_json::to_value(written).unwrap_or(Value::Null);
    // Not read before: what the apply answered is what was there, with our fields on top.
    let foreign = foreign.or_else(|| {
        (known_absent && foreign::compared_whole(resource))
            .then(|| foreign::foreign_spec_fields(desired, &written))
            .flatten()
    });
    let Some(patch) = foreign else {
        return Ok(Ensured {
            live: written,
            wrote: true,
            removed: None,
        });
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let written = api
        .patch(name, &params, &Patch::Merge(&patch))
        .await
        .map_err(kube_error(format!("remove undeclared fields of {what}")))?;
    let written = serde_json::to_value(written).unwrap_or(Value::Null);
    let fields = foreign::removed_paths(&patch).join(", ");
    tracing::warn!(kind = %resource.kind, namespace, object = name, fields, "removed spec fields the operator does not declare");
    record_removal(client, &written, &what, &fields).await;
    Ok(Ensured {
        live: written,
        wrote: true,
        removed: Some(fields),
    })
}

/// Records the removal of undeclared fields as a Warning Event on the child (best effort).
async fn record_removal(client: &Client, child: &Value, what: &str, fields: &str) {
    let involved = k8s_openapi::api::core::v1::ObjectReference {
        api_version: child["apiVersion"].as_str().map(str::to_owned),
        kind: child["kind"].as_str().map(str::to_owned),
        name: child["metadata"]["name"].as_str().map(str::to_owned),
        namespace: child["metadata"]["namespace"].as_str().map(str::to_owned),
        uid: child["metadata"]["uid"].as_str().map(str::to_owned),
        ..Default::default()
    };
    let namespace = involved.namespace.clone().unwrap_or_default();
    let note = crate::events::Note {
        regarding: involved,
        severity: crate::events::Severity::Warning,
        reason: vworkspace_core::reasons::UNDECLARED_FIELDS_REMOVED.to_owned(),
        message: format!(
            "removed from {what} spec fields the verified release does not declare (written by another field manager): {fields}"
        ),
    };
    let event = crate::events::event(&note, jiff::Timestamp::now());
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(e) = api.create(&kube::api::PostParams::default(), &event).await {
        tracing::warn!(error = %e, "cannot record an Event");
    }
}

/// The declared object, read back from the declared set's compact form. A failure is a defect
/// (the JSON is the operator's own); it is this reconcile's error, naming the live object.
pub(crate) fn read_declared<T, K>(
    declared: &vworkspace_core::plan::declared::DeclaredObject<T>,
    live: &K,
) -> Result<T, Error>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    K: kube::Resource<DynamicType = ()>,
{
    use kube::ResourceExt as _;
    declared.object.get().map_err(|e| Error::Child {
        object: format!(
            "{} {}/{}",
            K::kind(&()),
            live.namespace().unwrap_or_default(),
            live.name_any()
        ),
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_compare_on_what_we_declare() {
        let desired = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}});
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "resourceVersion": "9"}, "spec": {"x": 1}, "status": {}});
        assert!(same_object(&desired, &live));
        let drifted = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 2}});
        assert!(!same_object(&desired, &drifted));
        let relabelled = json!({"metadata": {"labels": {}}, "spec": {"x": 1}});
        assert!(!same_object(&desired, &relabelled));
        // A reconcile request we declare is a change until the live object carries it.
        let requested = json!({"metadata": {"labels": {"a": "1"}, "annotations": {"r": "2"}}, "spec": {"x": 1}});
        assert!(!same_object(&requested, &live));
        let handled = json!({"metadata": {"labels": {"a": "1"}, "annotations": {"r": "2", "o": "3"}}, "spec": {"x": 1}});
        assert!(same_object(&requested, &handled));
        // Defaulted by the server: the same when applied with this spec's digest, not otherwise.
        let digest = spec_digest(&desired["spec"]);
        let defaulted = json!({"metadata": {"labels": {"a": "1"}, "annotations": {ANNOTATION_SPEC_DIGEST: digest}},
                               "spec": {"x": 1, "interval": "5m"}});
        assert!(same_object(&desired, &defaulted));
        let mut older = defaulted.clone();
        older["metadata"]["annotations"][ANNOTATION_SPEC_DIGEST] = json!("sha256:00");
        assert!(
            !same_object(&desired, &older),
            "a removed declared field is a change"
        );
        let mut edited = defaulted.clone();
        edited["spec"]["x"] = json!(2);
        assert!(
            !same_object(&desired, &edited),
            "a declared field edited by hand is a change"
        );
        assert_eq!(api_resource("v1", "Pod", "pods").group, "");
        assert_eq!(
            api_resource("velero.io/v1", "Backup", "backups").group,
            "velero.io"
        );
    }
}
