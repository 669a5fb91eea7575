//! The Kubernetes side of a pass: read the live objects this source labelled, server-side apply what
//! [`vworkspace_core::plan::diff`] says to create or update (one field manager, force on conflicts), delete what it says
//! to prune. Only this module and its siblings touch the API server; the decisions are made before.

use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};

use crate::error::Error;
use vworkspace_core::crd::{ApplicationInstance, InventoryEntry, Operation, WatchedInstance};
use vworkspace_core::plan::diff::{Changes, LiveObject, LiveSpec};
use vworkspace_core::plan::settled::{ObjectVersion, SettledObject};
use vworkspace_core::plan::{DesiredObject, DesiredResource, LABEL_CLUSTER};

/// The field manager of every write the reconciler makes.
pub const FIELD_MANAGER: &str = vworkspace_core::labels::FIELD_MANAGER;

/// The two kinds a source declares.
fn resources() -> [ApiResource; 2] {
    [
        ApiResource::erase::<ApplicationInstance>(&()),
        ApiResource::erase::<Operation>(&()),
    ]
}

fn resource_of(api_version: &str, kind: &str) -> Option<ApiResource> {
    resources()
        .into_iter()
        .find(|r| r.api_version == api_version && r.kind == kind)
}

/// An object's uid and generation, when the API server sent both (it always does).
pub(crate) fn object_version(metadata: &kube::api::ObjectMeta) -> Option<ObjectVersion> {
    Some(ObjectVersion {
        uid: metadata.uid.clone()?,
        generation: metadata.generation?,
        deleting: metadata.deletion_timestamp.is_some(),
    })
}

fn live_object(resource: &ApiResource, mut object: DynamicObject) -> Option<LiveObject> {
    let version = object_version(&object.metadata);
    let spec = object
        .data
        .get_mut("spec")
        .map(serde_json::Value::take)
        .unwrap_or(serde_json::Value::Null);
    Some(LiveObject {
        id: InventoryEntry {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
            namespace: object.metadata.namespace.clone()?,
            name: object.metadata.name.clone()?,
        },
        labels: object.metadata.labels.unwrap_or_default(),
        annotations: object.metadata.annotations.unwrap_or_default(),
        spec: LiveSpec::Json(spec),
        managers: object
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        version,
    })
}

/// How many by-name lookups of [`get_unlisted`] run at once.
const LOOKUP_CONCURRENCY: usize = 8;

async fn get_one(client: Client, id: InventoryEntry) -> Result<Option<LiveObject>, Error> {
    let Some(resource) = resource_of(&id.api_version, &id.kind) else {
        return Ok(None);
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client, &id.namespace, &resource);
    match api.get_opt(&id.name).await {
        Ok(found) => Ok(found.and_then(|o| live_object(&resource, o))),
        Err(source) => Err(Error::Kube {
            action: format!("get {} {}/{}", id.kind, id.namespace, id.name),
            source,
        }),
    }
}

/// Above this many unlisted objects, [`get_unlisted`] first lists which of them exist at all.
pub const UNLISTED_LIST_ABOVE: usize = 64;

/// The page size of [`existing`]'s metadata lists.
const EXISTING_PAGE: u32 = 500;

/// Reads by name, without a label selector, each declared object the labelled list did not return
/// ([`vworkspace_core::plan::diff::unlisted`]): a same-named object made by hand or by another source
/// is then seen (and refused) instead of being planned as a create and taken over by the forced
/// apply. One `get` per object that is new to this source and exists; none in a steady state. Above
/// [`UNLISTED_LIST_ABOVE`] (a first apply: every object is new) a metadata-only list of each kind,
/// unselected and paged, says which exist, and only those are read: 10,000 new objects cost a few
/// pages instead of 10,000 requests.
pub async fn get_unlisted(
    client: &Client,
    ids: &[InventoryEntry],
) -> Result<Vec<LiveObject>, Error> {
    use futures::StreamExt;
    let existing = if ids.len() > UNLISTED_LIST_ABOVE {
        Some(existing(client, ids).await?)
    } else {
        None
    };
    // Collected first: a lazy filter inside the stream would make the pass's future fail the
    // higher-ranked `Send` check the controller's runtime needs.
    let to_read: Vec<InventoryEntry> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| existing.as_ref().is_none_or(|e| e.contains(i)))
        .map(|(_, id)| id.clone())
        .collect();
    let lookups = to_read.into_iter().map(|id| get_one(client.clone(), id));
    let found: Vec<Result<Option<LiveObject>, Error>> = futures::stream::iter(lookups)
        .buffered(LOOKUP_CONCURRENCY)
        .collect()
        .await;
    let mut live = Vec::new();
    for result in found {
        if let Some(object) = result? {
            live.push(object);
        }
    }
    Ok(live)
}

/// Which of `ids` exist (their indexes), from metadata-only lists of all namespaces,
/// [`EXISTING_PAGE`] at a time, of the kinds among `ids` only.
async fn existing(
    client: &Client,
    ids: &[InventoryEntry],
) -> Result<std::collections::HashSet<usize>, Error> {
    let wanted: std::collections::HashMap<(&str, &str, &str), usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                (id.kind.as_str(), id.namespace.as_str(), id.name.as_str()),
                i,
            )
        })
        .collect();
    let mut found = std::collections::HashSet::new();
    for resource in resources() {
        if !ids.iter().any(|id| id.kind == resource.kind) {
            continue;
        }
        let params = ListParams::default().limit(EXISTING_PAGE);
        each_metadata(client, &resource, params, |meta| {
            let (Some(ns), Some(name)) = (&meta.namespace, &meta.name) else {
                return;
            };
            if let Some(i) = wanted.get(&(resource.kind.as_str(), ns.as_str(), name.as_str())) {
                found.insert(*i);
            }
        })
        .await?;
    }
    Ok(found)
}

/// The watched ApplicationInstances and Operations of the long-running process (the reflector stores
/// of their controllers, kept without `managedFields`).
#[derive(Clone)]
pub struct LiveStores {
    /// Every ApplicationInstance, its spec by digest ([`WatchedInstance`]).
    pub instances: Store<WatchedInstance>,
    /// Every Operation.
    pub operations: Store<Operation>,
    /// Moved by the watches on every change a pass reads ([`changes_what_a_pass_reads`]): spec
    /// (the generation), labels, annotations, deletion, creation, a relist. A status write does not
    /// move it.
    pub changes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Whether each store holds its first list: instances, then Operations ([`Listed`]).
    pub listed: [Listed; 2],
}

/// Whether a reflector store holds its first list, set by its watch stream after the store took the
/// list. The pass waits on this, never on the store's own `wait_until_ready`: that future rests on
/// a oneshot channel that wakes only its last poller, and the controller that owns the store polls
/// it too, so a pass waiting beside it slept until its own timeout (60 s on every first pass).
#[derive(Clone, Debug)]
pub struct Listed(tokio::sync::watch::Receiver<bool>);

impl Listed {
    /// A flag not yet set, and the sender that sets it.
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Listed) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Listed(rx))
    }

    /// Whether the first list is in the store.
    pub fn now(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits for the first list; false if the watch ended before it.
    pub async fn wait(&self) -> bool {
        self.0.clone().wait_for(|listed| *listed).await.is_ok()
    }
}

impl std::fmt::Debug for LiveStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStores")
            .field("instances", &self.instances.len())
            .field("operations", &self.operations.len())
            .finish()
    }
}

/// How long a pass of the long-running process waits for the stores' first list before it lists
/// instead (one list of every object of 10,000 costs more memory than the stores themselves).
pub const STORES_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a watch event replacing `old` (the stored object, if any) by `new` changes what a pass
/// reads of it: its spec (seen as `metadata.generation`, which the API server moves on every spec
/// change and only then), labels, annotations, or its being deleted. A status write changes none.
pub fn changes_what_a_pass_reads<K: kube::Resource>(old: Option<&K>, new: &K) -> bool {
    let Some(old) = old else {
        return true;
    };
    let (a, b) = (old.meta(), new.meta());
    a.generation != b.generation
        || a.labels != b.labels
        || a.annotations != b.annotations
        || a.deletion_timestamp != b.deletion_timestamp
        || a.uid != b.uid
}

impl LiveStores {
    /// The change counter now ([`LiveStores::changes`]).
    pub fn version(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits up to `wait` for both stores' first list; whether they hold it.
    pub async fn ready_within(&self, wait: std::time::Duration) -> bool {
        let both = async { self.listed[0].wait().await && self.listed[1].wait().await };
        matches!(tokio::time::timeout(wait, both).await, Ok(true))
    }

    /// The objects labelled for `cluster`, when both stores hold their first list; `None` before.
    pub fn labelled(&self, cluster: &str) -> Option<Vec<LiveObject>> {
        if !self.listed.iter().all(Listed::now) {
            return None;
        }
        let ours = |meta: &kube::api::ObjectMeta| {
            meta.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_CLUSTER))
                .is_some_and(|v| v == cluster)
        };
        let [instance_resource, operation_resource] = resources();
        let mut live = Vec::new();
        for object in self.instances.state_filter(|o| ours(&o.metadata)) {
            live.extend(typed_live_object(
                &instance_resource,
                &object.metadata,
                LiveSpec::Digest(object.spec),
            ));
        }
        for object in self.operations.state_filter(|o| ours(&o.metadata)) {
            live.extend(typed_live_object(
                &operation_resource,
                &object.metadata,
                LiveSpec::Operation(object.clone()),
            ));
        }
        Some(live)
    }
}

/// A watched object as the pass reads it: its spec stays the store's (an Operation shared and
/// converted to JSON only when compared; an instance's digest).
fn typed_live_object(
    resource: &ApiResource,
    metadata: &kube::api::ObjectMeta,
    spec: LiveSpec,
) -> Option<LiveObject> {
    Some(LiveObject {
        id: InventoryEntry {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
            namespace: metadata.namespace.clone()?,
            name: metadata.name.clone()?,
        },
        labels: metadata.labels.clone().unwrap_or_default(),
        annotations: metadata.annotations.clone().unwrap_or_default(),
        spec,
        // Labelled for this source: ours, so no holder is ever named from these.
        managers: Vec::new(),
        version: object_version(metadata),
    })
}

/// Every ApplicationInstance and Operation that carries this cluster source's label, in all
/// namespaces: from `stores` when the long-running process watches them (a pass that changes
/// nothing then sends no request for them; an edit by hand reaches the store by the watch), else
/// listed (the seed ClusterRole allows `list` on the operator's own kinds).
pub async fn list_live(
    client: &Client,
    cluster: &str,
    stores: Option<&LiveStores>,
) -> Result<Vec<LiveObject>, Error> {
    if let Some(stores) = stores
        && stores.ready_within(STORES_READY_WAIT).await
        && let Some(live) = stores.labelled(cluster)
    {
        return Ok(live);
    }
    let selector = format!("{LABEL_CLUSTER}={cluster}");
    let mut live = Vec::new();
    for resource in resources() {
        // Read as dynamic objects: a live object someone edited into a shape our types refuse must not
        // stop the pass from replacing it.
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        // Paged: only one page of whole objects (status, managedFields and all) is held at a time,
        // not the whole estate's (a fresh process's peak at 10,000 instances).
        let mut params = ListParams::default().labels(&selector).limit(LIVE_PAGE);
        loop {
            let page = api.list(&params).await.map_err(|source| Error::Kube {
                action: format!("list {}", resource.plural),
                source,
            })?;
            let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            live.extend(
                page.items
                    .into_iter()
                    .filter_map(|o| live_object(&resource, o)),
            );
            match next {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    Ok(live)
}

/// What the settled record covers of every ApplicationInstance and Operation that carries this
/// cluster source's label ([`vworkspace_core::plan::settled`]): metadata-only lists, paged as
/// [`list_live`] pages, so neither side encodes or decodes a spec. An object the API server sent
/// without a uid or generation gets a version no record holds (the whole pass then runs).
pub async fn list_settled(client: &Client, cluster: &str) -> Result<Vec<SettledObject>, Error> {
    let selector = format!("{LABEL_CLUSTER}={cluster}");
    let mut listed = Vec::new();
    for resource in resources() {
        let params = ListParams::default().labels(&selector).limit(LIVE_PAGE);
        each_metadata(client, &resource, params, |meta| {
            let (Some(namespace), Some(name)) = (meta.namespace.clone(), meta.name.clone()) else {
                return;
            };
            listed.push(SettledObject {
                id: InventoryEntry {
                    api_version: resource.api_version.clone(),
                    kind: resource.kind.clone(),
                    namespace,
                    name,
                },
                version: object_version(&meta).unwrap_or(ObjectVersion {
                    uid: String::new(),
                    generation: -1,
                    deleting: true,
                }),
                labels: meta.labels.unwrap_or_default(),
                annotations: meta.annotations.unwrap_or_default(),
            });
        })
        .await?;
    }
    Ok(listed)
}

/// Hands `each` the metadata of every object of `resource` that `params` selects, from metadata-only
/// lists of all namespaces, one page at a time (`params` sets the page size).
async fn each_metadata(
    client: &Client,
    resource: &ApiResource,
    mut params: ListParams,
    mut each: impl FnMut(kube::api::ObjectMeta),
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    loop {
        let page = api
            .list_metadata(&params)
            .await
            .map_err(|source| Error::Kube {
                action: format!("list {} (metadata)", resource.plural),
                source,
            })?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        for object in page.items {
            each(object.metadata);
        }
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Objects per page of [`list_live`]: kube-apiserver's own default page size for clients that page
/// (client-go's pager).
const LIVE_PAGE: u32 = 500;

/// What the writes of one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Objects written by server-side apply.
    pub applied: Vec<InventoryEntry>,
    /// Objects deleted.
    pub pruned: Vec<InventoryEntry>,
    /// What the API server answered for each written object whose answer holds exactly the declared
    /// spec (for the settled record); an object whose answer differs is not among them.
    pub answers: Vec<SettledObject>,
}

/// What the API server answered to one write.
struct Answer {
    /// The answer as the settled record covers it ([`answered`]).
    settled: Option<SettledObject>,
    /// The fields of the answer's spec that the release does not declare, as the JSON merge patch
    /// that removes them (`{"spec": ...}`); only asked for an object whose live spec was known by
    /// digest ([`Changes::unread`]): the answer is then the first whole view of it.
    undeclared: Option<serde_json::Value>,
}

/// Server-side applies one object; what the answer says ([`Answer`]), its undeclared fields only
/// when `unread`.
async fn apply_one(
    client: &Client,
    desired: &DesiredObject,
    unread: bool,
) -> Result<Answer, Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let what = format!(
        "apply {} {}/{}",
        desired.kind, desired.namespace, desired.name
    );
    let resource = desired
        .resource()
        .map_err(|e| Error::Pass(vworkspace_core::Error::from(e)))?;
    let answer = match resource {
        DesiredResource::ApplicationInstance(object) => {
            Api::<ApplicationInstance>::namespaced(client.clone(), &desired.namespace)
                .patch(&desired.name, &params, &Patch::Apply(&object))
                .await
                .map(|o| (o.metadata, serde_json::to_value(&o.spec).ok()))
        }
        DesiredResource::Operation(object) => {
            Api::<Operation>::namespaced(client.clone(), &desired.namespace)
                .patch(&desired.name, &params, &Patch::Apply(&object))
                .await
                .map(|o| (o.metadata, serde_json::to_value(&o.spec).ok()))
        }
    };
    let (metadata, spec) = answer.map_err(|source| Error::Kube {
        action: what,
        source,
    })?;
    // Serialized once for both questions asked of the answer.
    let declared = desired.spec_json().ok();
    let undeclared = match (&spec, &declared) {
        (Some(spec), Some(declared)) if unread => {
            vworkspace_core::plan::diff::undeclared_fields(declared, spec)
                .map(|patch| serde_json::json!({ "spec": patch }))
        }
        _ => None,
    };
    Ok(Answer {
        settled: answered(desired, declared.as_ref(), &metadata, spec.as_ref()),
        undeclared,
    })
}

/// A write's answer as the settled record covers it, when its spec is exactly the declared one:
/// the generation it carries is then the declared spec's. An answer with fields another writer
/// holds, or without a uid or generation, is left out (no record is made; the next fresh process
/// reads everything).
fn answered(
    desired: &DesiredObject,
    declared: Option<&serde_json::Value>,
    metadata: &kube::api::ObjectMeta,
    spec: Option<&serde_json::Value>,
) -> Option<SettledObject> {
    if !vworkspace_core::plan::diff::same_value(declared?, spec?) {
        return None;
    }
    Some(SettledObject {
        id: vworkspace_core::plan::diff::identity(desired),
        version: object_version(metadata)?,
        labels: metadata.labels.clone().unwrap_or_default(),
        annotations: metadata.annotations.clone().unwrap_or_default(),
    })
}

/// Removes the fields of a live object that the release does not declare (`patch`, from
/// [`Changes::undeclared`]): a JSON merge patch setting each to `null`, under the operator's field
/// manager. Server-side apply alone cannot: it removes only fields its own manager owned, and a
/// field another manager set to the same value would stay co-owned by it.
async fn remove_undeclared(
    client: &Client,
    desired: &DesiredObject,
    patch: &serde_json::Value,
) -> Result<Option<SettledObject>, Error> {
    let id = vworkspace_core::plan::diff::identity(desired);
    let Some(resource) = resource_of(&id.api_version, &id.kind) else {
        return Ok(None);
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &id.namespace, &resource);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(&id.name, &params, &Patch::Merge(patch))
        .await
        .map(|o| {
            let declared = desired.spec_json().ok();
            answered(desired, declared.as_ref(), &o.metadata, o.data.get("spec"))
        })
        .map_err(|source| Error::Kube {
            action: format!(
                "remove fields the release does not declare from {} {}/{}",
                id.kind, id.namespace, id.name
            ),
            source,
        })
}

/// Deletes one pruned object; one already gone counts as pruned.
pub async fn prune_one(client: &Client, id: &InventoryEntry) -> Result<(), Error> {
    let Some(resource) = resource_of(&id.api_version, &id.kind) else {
        // The inventory is ours and only ever holds the two kinds; anything else is left alone.
        return Ok(());
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &id.namespace, &resource);
    match api.delete(&id.name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!("delete {} {}/{}", id.kind, id.namespace, id.name),
            source,
        }),
    }
}

/// What the writes of a pass have done so far, kept outside the pass so that a pass cut at its
/// deadline (its future dropped mid-write) still records what it wrote.
#[derive(Debug, Default)]
pub struct Progress {
    inner: std::sync::Mutex<ProgressState>,
}

#[derive(Debug, Default)]
struct ProgressState {
    sent: Vec<InventoryEntry>,
    pruned: Vec<InventoryEntry>,
    fetching: bool,
}

impl Progress {
    fn with<T>(&self, f: impl FnOnce(&mut ProgressState) -> T) -> T {
        let mut guard = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Records that an apply of `id` is about to be sent.
    pub fn sent(&self, id: InventoryEntry) {
        self.with(|s| s.sent.push(id));
    }

    /// Records that `id` was deleted (or already gone).
    pub fn pruned(&self, id: InventoryEntry) {
        self.with(|s| s.pruned.push(id));
    }

    /// Records whether the pass is fetching (so that a deadline hit there is a fetch failure).
    pub fn set_fetching(&self, fetching: bool) {
        self.with(|s| s.fetching = fetching);
    }

    /// Whether the pass was fetching when it was last told.
    pub fn fetching(&self) -> bool {
        self.with(|s| s.fetching)
    }

    /// Whether any object write was sent.
    pub fn wrote(&self) -> bool {
        self.with(|s| !s.sent.is_empty() || !s.pruned.is_empty())
    }

    /// The inventory after the pass stopped here, from the one it started with
    /// ([`vworkspace_core::plan::diff::after_interruption`]).
    pub fn inventory(&self, previous: &[InventoryEntry]) -> Vec<InventoryEntry> {
        self.with(|s| vworkspace_core::plan::diff::after_interruption(previous, &s.sent, &s.pruned))
    }
}

/// How many writes (applies, then deletes) of one pass are in flight at once. One at a time, a pass
/// of 10,000 objects waits 10,000 round trips; the API server and etcd take many writes at once.
/// Kept moderate so that one pass does not starve the API server's other clients (its default
/// max-mutating-requests-inflight is 200).
pub const WRITE_CONCURRENCY: usize = 16;

/// Runs `work` in order with at most `limit` running at once (an `async` block does nothing until
/// first polled, so one not yet started has sent nothing). After the first error no further one is
/// started; those running are awaited (what they did is done, and must be recorded). Returns the
/// successes in completion order and the first error.
///
/// The work is a list of boxed `Send` futures, not a closure: inside a reconcile future, which
/// kube-runtime needs to be `Send`, a closure returning `async` blocks that borrow trips the
/// compiler's higher-ranked `Send` inference.
pub async fn bounded<'a, T>(
    work: Vec<futures::future::BoxFuture<'a, Result<T, Error>>>,
    limit: usize,
) -> (Vec<T>, Option<Error>) {
    use futures::StreamExt;
    let mut work = work.into_iter();
    let mut running = futures::stream::FuturesUnordered::new();
    let mut done = Vec::new();
    let mut error = None;
    loop {
        while error.is_none() && running.len() < limit.max(1) {
            match work.next() {
                Some(next) => running.push(next),
                None => break,
            }
        }
        match running.next().await {
            Some(Ok(value)) => done.push(value),
            Some(Err(e)) => {
                if error.is_none() {
                    error = Some(e);
                }
            }
            None => break,
        }
    }
    (done, error)
}

/// Applies then prunes, [`WRITE_CONCURRENCY`] writes at a time. Stops starting writes at the first
/// refused one and returns what was done (the writes already in flight included) with the error,
/// so that the status can say exactly how far the pass got; `progress` records each write as it
/// goes, for a pass cut at its deadline. Prune runs only when every apply succeeded: an object is
/// never deleted while its replacement may be missing. The lists in [`Applied`] are in plan order.
pub async fn write(
    client: &Client,
    changes: &Changes<'_>,
    progress: &Progress,
) -> (Applied, Option<Error>) {
    let mut done = Applied::default();
    type Answered = (usize, InventoryEntry, Option<SettledObject>);
    let applies: Vec<futures::future::BoxFuture<'_, Result<Answered, Error>>> = changes
        .create
        .iter()
        .chain(&changes.update)
        .enumerate()
        .map(|(at, desired)| -> futures::future::BoxFuture<'_, _> {
            Box::pin(async move {
                let id = vworkspace_core::plan::diff::identity(desired);
                progress.sent(id.clone());
                let answer = apply_one(client, desired, changes.unread.contains(&id)).await?;
                let mut settled = answer.settled;
                if let Some(patch) = changes.undeclared.get(&id).or(answer.undeclared.as_ref()) {
                    // The last write's answer is the one that counts.
                    settled = remove_undeclared(client, desired, patch).await?;
                }
                Ok((at, id, settled))
            })
        })
        .collect();
    let (mut applied, error) = bounded(applies, WRITE_CONCURRENCY).await;
    applied.sort_unstable_by_key(|(at, _, _)| *at);
    for (_, id, answer) in applied {
        done.applied.push(id);
        done.answers.extend(answer);
    }
    if error.is_some() {
        return (done, error);
    }
    let prunes: Vec<futures::future::BoxFuture<'_, Result<(usize, InventoryEntry), Error>>> =
        changes
            .prune
            .iter()
            .enumerate()
            .map(|(at, id)| -> futures::future::BoxFuture<'_, _> {
                Box::pin(async move {
                    prune_one(client, id).await?;
                    progress.pruned(id.clone());
                    Ok((at, id.clone()))
                })
            })
            .collect();
    let (mut pruned, error) = bounded(prunes, WRITE_CONCURRENCY).await;
    pruned.sort_unstable_by_key(|(at, _)| *at);
    done.pruned = pruned.into_iter().map(|(_, id)| id).collect();
    (done, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use serde_json::json;
    use std::time::Duration;

    fn instance(namespace: &str, name: &str, cluster: Option<&str>) -> ApplicationInstance {
        let mut labels = serde_json::Map::new();
        if let Some(cluster) = cluster {
            labels.insert(LABEL_CLUSTER.into(), json!(cluster));
        }
        serde_json::from_value(json!({
            "apiVersion": "apps.vworkspace.io/v1alpha1", "kind": "ApplicationInstance",
            "metadata": {"namespace": namespace, "name": name, "labels": labels,
                         "annotations": {"a": "1"}},
            "spec": {"chart": {"repository": "https://charts.example.org/", "name": "c", "version": "1.0.0"},
                     "values": {"replicas": 2}}
        }))
        .expect("an instance")
    }

    #[tokio::test]
    async fn a_fresh_process_lists_the_live_objects_a_page_at_a_time() {
        use http_body_util::BodyExt;
        // Two pages of instances (the second page asked for by the first's continue token), and
        // no Operations.
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = requests.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let seen = seen.clone();
            async move {
                let query = request.uri().query().unwrap_or_default().to_owned();
                let path = request.uri().path().to_owned();
                seen.lock().expect("lock").push(format!("{path}?{query}"));
                let _ = request.into_body().collect().await;
                let item = |name: &str| {
                    serde_json::to_value(instance("org", name, Some("prod"))).expect("json")
                };
                let body = if path.ends_with("/applicationinstances")
                    && query.contains("continue=page2")
                {
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [item("b")]})
                } else if path.ends_with("/applicationinstances") {
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"continue": "page2"}, "items": [item("a")]})
                } else {
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []})
                };
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&body).expect("json"),
                    ))
                    .map_err(|e| kube::Error::Service(e.into()))
            }
        });
        let client = Client::new(service, "default");
        let live = list_live(&client, "prod", None).await.expect("listed");
        let names: Vec<&str> = live.iter().map(|l| l.id.name.as_str()).collect();
        assert_eq!(names, ["a", "b"], "both pages");
        assert_eq!(
            live[0].spec.json().expect("listed")["values"]["replicas"],
            2,
            "the spec is kept"
        );
        let requests = requests.lock().expect("lock").clone();
        let instances: Vec<&String> = requests
            .iter()
            .filter(|r| r.contains("/applicationinstances"))
            .collect();
        assert_eq!(instances.len(), 2, "{requests:?}");
        assert!(
            instances
                .iter()
                .all(|r| r.contains(&format!("limit={LIVE_PAGE}"))),
            "{requests:?}"
        );
        assert!(instances[1].contains("continue=page2"), "{requests:?}");
    }

    #[tokio::test]
    async fn bounded_writes_stop_starting_after_the_first_error_and_keep_what_ran() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let started = std::sync::Mutex::new(Vec::new());
        let started = &started;
        let (running, most) = (&running, &most);
        let work: Vec<futures::future::BoxFuture<'_, Result<usize, Error>>> = (0..100usize)
            .map(|i| -> futures::future::BoxFuture<'_, _> {
                Box::pin(async move {
                    started.lock().expect("lock").push(i);
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    if i == 10 {
                        Err(Error::NotLeader)
                    } else {
                        Ok(i)
                    }
                })
            })
            .collect();
        let (done, error) = bounded(work, 4).await;
        assert!(matches!(error, Some(Error::NotLeader)));
        assert!(most.load(Ordering::SeqCst) <= 4, "at most 4 at once");
        let started = started.lock().expect("lock").clone();
        assert!(
            started.len() < 16,
            "no new write after the error: {started:?}"
        );
        // Every write that started, but the refused one, is reported done.
        let mut done = done;
        done.sort_unstable();
        let expected: Vec<usize> = started.iter().copied().filter(|i| *i != 10).collect();
        assert_eq!(done, expected);
        let work: Vec<futures::future::BoxFuture<'_, Result<usize, Error>>> = (0..50usize)
            .map(|i| -> futures::future::BoxFuture<'_, _> { Box::pin(async move { Ok(i) }) })
            .collect();
        let (all, none) = bounded(work, 16).await;
        assert!(none.is_none());
        assert_eq!(all.len(), 50);
    }

    /// The long-running process knows a watched instance's spec by digest only: when the digest
    /// differs, the apply's answer is the first whole view of it, and a field it holds that the
    /// release does not declare (added by hand) is removed then, by the same merge patch a listed
    /// object would get.
    #[tokio::test]
    async fn an_update_judged_by_digest_removes_what_its_answer_shows_undeclared() {
        use http::Method;
        let declared = instance("a", "one", Some("prod"));
        let desired = DesiredObject::from_resource(
            "apps.vworkspace.io/v1alpha1",
            "ApplicationInstance",
            "a",
            "one",
            DesiredResource::ApplicationInstance(declared.clone()),
        )
        .expect("compact");
        let id = vworkspace_core::plan::diff::identity(&desired);
        let path = "/apis/apps.vworkspace.io/v1alpha1/namespaces/a/applicationinstances/one";
        let mut clean = serde_json::to_value(&declared).expect("json");
        clean["metadata"]["uid"] = json!("u1");
        clean["metadata"]["generation"] = json!(2);
        let mut with_extra = clean.clone();
        with_extra["spec"]["values"]["addedByHand"] = json!("x");
        for (answer, unread, patches) in [
            (&with_extra, true, 2),
            (&clean, true, 1),
            // Known whole and without undeclared fields: nothing is learned from the answer.
            (&with_extra, false, 1),
        ] {
            let api =
                crate::testing::FakeApi::new().route(Method::PATCH, path, 200, answer.clone());
            let mut changes = Changes::default();
            changes.update.push(&desired);
            if unread {
                changes.unread.insert(id.clone());
            }
            let (done, error) = write(&api.client(), &changes, &Progress::default()).await;
            assert!(error.is_none(), "{error:?}");
            assert_eq!(done.applied, std::slice::from_ref(&id));
            let seen = api.seen();
            assert_eq!(seen.len(), patches, "{seen:?}");
            if patches == 2 {
                assert_eq!(
                    seen[1].body,
                    json!({"spec": {"values": {"addedByHand": null}}})
                );
            }
            // Recorded as settled only when the last answer is the declared spec.
            assert_eq!(
                done.answers.len(),
                usize::from(answer == &clean),
                "{seen:?}"
            );
        }
    }

    #[test]
    fn what_a_pass_reads_is_spec_labels_annotations_and_existence_never_status() {
        let old = instance("a", "one", Some("prod"));
        assert!(changes_what_a_pass_reads(None, &old), "new");
        let mut status_only = old.clone();
        status_only.status = Some(Default::default());
        status_only.metadata.resource_version = Some("9".into());
        assert!(!changes_what_a_pass_reads(Some(&old), &status_only));
        let mut spec = old.clone();
        spec.metadata.generation = Some(2);
        assert!(changes_what_a_pass_reads(Some(&old), &spec));
        let mut relabelled = old.clone();
        relabelled.metadata.labels = None;
        assert!(changes_what_a_pass_reads(Some(&old), &relabelled));
        let mut annotated = old.clone();
        annotated.metadata.annotations = None;
        assert!(changes_what_a_pass_reads(Some(&old), &annotated));
        let mut recreated = old.clone();
        recreated.metadata.uid = Some("other".into());
        assert!(changes_what_a_pass_reads(Some(&old), &recreated));
    }

    /// Every first pass of the long-running process waited its whole 60 s here: it awaited the
    /// store's own readiness, which wakes only its last poller, and the controller owning the store
    /// polled it after the pass did.
    #[tokio::test]
    async fn a_pass_waiting_for_the_first_list_wakes_beside_the_controllers_own_wait() {
        let (instances, mut instance_writer) = reflector::store::<WatchedInstance>();
        let (operations, mut operation_writer) = reflector::store::<Operation>();
        let (instances_listed, listed_i) = Listed::new();
        let (operations_listed, listed_o) = Listed::new();
        let stores = LiveStores {
            instances: instances.clone(),
            operations: operations.clone(),
            changes: Default::default(),
            listed: [listed_i, listed_o],
        };
        let pass = tokio::spawn(async move { stores.ready_within(Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The controllers wait on their stores too (kube-runtime's `delay_tasks_until`), later.
        let controllers = tokio::spawn(async move {
            let _ = instances.wait_until_ready().await;
            let _ = operations.wait_until_ready().await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        instance_writer.apply_watcher_event(&Event::Init);
        instance_writer.apply_watcher_event(&Event::InitDone);
        instances_listed.send_replace(true);
        operation_writer.apply_watcher_event(&Event::Init);
        operation_writer.apply_watcher_event(&Event::InitDone);
        operations_listed.send_replace(true);
        let woke = tokio::time::timeout(Duration::from_secs(5), pass).await;
        assert!(
            matches!(woke, Ok(Ok(true))),
            "the pass wakes when the lists land: {woke:?}"
        );
        let controllers = tokio::time::timeout(Duration::from_secs(5), controllers).await;
        assert!(controllers.is_ok(), "the controllers' own wait still ends");
    }

    #[test]
    fn live_objects_come_from_the_stores_once_both_listed_and_only_this_sources() {
        let (instances, mut instance_writer) = reflector::store::<WatchedInstance>();
        let (operations, mut operation_writer) = reflector::store::<Operation>();
        let (instances_listed, listed_i) = Listed::new();
        let (operations_listed, listed_o) = Listed::new();
        let stores = LiveStores {
            instances,
            operations,
            changes: Default::default(),
            listed: [listed_i, listed_o],
        };
        assert!(stores.labelled("prod").is_none(), "nothing listed yet");
        instance_writer.apply_watcher_event(&Event::Init);
        for object in [
            instance("a", "one", Some("prod")),
            instance("a", "two", Some("staging")),
            instance("b", "three", None),
        ] {
            instance_writer.apply_watcher_event(&Event::InitApply(WatchedInstance::of(&object)));
        }
        instance_writer.apply_watcher_event(&Event::InitDone);
        instances_listed.send_replace(true);
        assert!(
            stores.labelled("prod").is_none(),
            "the Operations are not listed yet: the caller lists instead"
        );
        operation_writer.apply_watcher_event(&Event::Init);
        operation_writer.apply_watcher_event(&Event::InitDone);
        operations_listed.send_replace(true);
        let live = stores.labelled("prod").expect("both stores listed");
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].id.kind, "ApplicationInstance");
        assert_eq!(
            (live[0].id.namespace.as_str(), live[0].id.name.as_str()),
            ("a", "one")
        );
        // The spec by digest only: it is the declared one, and nothing else.
        let declared = instance("a", "one", Some("prod")).spec;
        let mut other = declared.clone();
        other.values = Some(json!({"replicas": 3}));
        let [declared, other] = [declared, other].map(|s| serde_json::to_value(s).expect("json"));
        assert!(live[0].spec.json().is_none());
        assert!(live[0].spec.is(&declared) && !live[0].spec.is(&other));
        assert_eq!(live[0].annotations.get("a").map(String::as_str), Some("1"));
        assert!(live[0].managers.is_empty());
        // An edit by hand reaches the store by the watch, and so the next pass.
        let mut edited = instance("a", "one", Some("prod"));
        edited.spec.values = Some(json!({"replicas": 3}));
        instance_writer.apply_watcher_event(&Event::Apply(WatchedInstance::of(&edited)));
        let live = stores.labelled("prod").expect("listed");
        assert!(live[0].spec.is(&other) && !live[0].spec.is(&declared));
    }

    /// A first apply (every object new): one metadata list per kind says which exist, and only
    /// those are read by name; a few new objects are read by name directly.
    #[tokio::test]
    async fn many_unlisted_objects_are_looked_up_by_one_list_and_few_by_name() {
        let id = |i: usize| InventoryEntry {
            api_version: "apps.vworkspace.io/v1alpha1".into(),
            kind: "ApplicationInstance".into(),
            namespace: format!("org-{}", i % 7),
            name: format!("app-{i}"),
        };
        let many: Vec<InventoryEntry> = (0..200).map(id).collect();
        let api = crate::testing::FakeApi::new();
        let item = |e: &InventoryEntry| {
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                   "metadata": {"name": e.name, "namespace": e.namespace}})
        };
        // Two of the 200 exist (one made by hand), and one object nobody declared.
        api.get(
            "/apis/apps.vworkspace.io/v1alpha1/applicationinstances",
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                   "metadata": {"continue": ""},
                   "items": [item(&many[3]), item(&many[150]),
                             {"metadata": {"name": "other", "namespace": "org-1"}}]}),
        );
        for e in [&many[3], &many[150]] {
            api.get(
                &format!("/apis/apps.vworkspace.io/v1alpha1/namespaces/{}/applicationinstances/{}", e.namespace, e.name),
                json!({"apiVersion": "apps.vworkspace.io/v1alpha1", "kind": "ApplicationInstance",
                       "metadata": {"name": e.name, "namespace": e.namespace, "managedFields": [{"manager": "kubectl"}]},
                       "spec": {}}),
            );
        }
        let found = get_unlisted(&api.client(), &many).await.expect("lookups");
        let names: Vec<&str> = found.iter().map(|l| l.id.name.as_str()).collect();
        assert_eq!(names, ["app-3", "app-150"]);
        assert_eq!(found[0].managers, ["kubectl"]);
        let seen: Vec<String> = api.seen().iter().map(|s| s.line()).collect();
        assert_eq!(seen.len(), 3, "one list, two reads: {seen:?}");
        assert!(seen[0].ends_with("/applicationinstances"), "{seen:?}");

        // At the threshold, each is read by name (a steady state has none).
        let api = crate::testing::FakeApi::new();
        let few: Vec<InventoryEntry> = (0..UNLISTED_LIST_ABOVE).map(id).collect();
        let found = get_unlisted(&api.client(), &few).await.expect("lookups");
        assert!(found.is_empty());
        assert_eq!(api.seen().len(), UNLISTED_LIST_ABOVE);
        assert!(api.seen().iter().all(|s| s.path.contains("/namespaces/")));
    }
}
