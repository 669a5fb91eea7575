//! The three controllers (Cluster, ApplicationInstance, Operation) and the watches they share, run
//! until a stop. [`controllers`] builds them in order and joins the tasks:
//!
//! ```text
//! managed-namespace watch -> Cluster controller -> live stores (instances, operations)
//!   -> shared child caches -> Cluster deletions -> HelmRelease watches
//!   => join: clusters, instances, operations, deletions, HelmRelease watches
//! ```

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, controller, reflector, watcher};
use kube::{Api, Client, ResourceExt};

use super::{CHILD_CONCURRENCY, DECLARED_POLL, stopped};
use crate::children::{Caches, ChildContext};
use crate::cluster::{self, Context};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::watch_clients::WatchClients;
use vworkspace_core::crd::{Cluster, Operation, WatchedInstance};

/// The three controllers (Cluster, ApplicationInstance, Operation) until `stop` turns true; running
/// reconciles finish first. Watches that fail or drop are re-established with back-off by
/// kube-runtime; a Cluster is also re-run on any change of a managed namespace.
///
/// The `Cluster` controller's reflector store and one on managed namespaces are what the child
/// controllers read (they replace `children.caches`) instead of the API server; the children start
/// once both stores hold the first full list. A deleted `Cluster` is forgotten
/// ([`Context::forget`]), seen by a metadata-only watch.
pub async fn controllers(
    client: Client,
    watch_clients: WatchClients,
    ctx: Arc<Context>,
    children: Arc<ChildContext>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let selector = children.caches.cluster_selector.clone();
    let (namespace_store, namespace_writer) = reflector::store::<Namespace>();
    // Signalled on every change of a managed namespace: the HelmRelease watches follow the set.
    let namespace_changed = Arc::new(tokio::sync::Notify::new());
    let namespace_changes = managed_namespace_changes(
        &client,
        namespace_writer,
        namespace_changed.clone(),
        ctx.metrics.clone(),
    );
    let cluster_controller = lean_controller(
        Api::<Cluster>::all(client.clone()),
        clusters_config(selector.as_deref()),
        None,
        ctx.metrics.clone(),
    );
    // The Cluster controller's own reflector store, shared with the children (no second watch).
    let cluster_store = cluster_controller.store();
    let (instance_controller, operation_controller) = live_controllers(&client, &ctx);
    ctx.metrics.observed.watch(crate::observed::ObservedStores {
        clusters: cluster_store.clone(),
        instances: instance_controller.store(),
        operations: operation_controller.store(),
    });
    let helm_releases =
        crate::children::watches::HelmReleaseWatches::counted_in(ctx.metrics.clone());
    let mut caches = Caches::new(cluster_store.clone(), namespace_store.clone());
    caches.helm_releases = Some(helm_releases.clone());
    caches.cluster_selector = selector.clone();
    let deletions = forget_deleted(
        &client,
        clusters_config(selector.as_deref()),
        &ctx,
        caches.clone(),
        cluster_store.clone(),
        &stop,
    );
    let children = {
        let mut shared = (*children).clone();
        shared.caches = caches;
        Arc::new(shared)
    };
    let (trigger_tx, trigger_rx) = futures::channel::mpsc::unbounded();
    let helm_release_watches = helm_releases.run(
        watch_clients,
        namespace_store.clone(),
        namespace_changed,
        trigger_tx,
        stopped(stop.clone()),
    );
    let clusters = cluster_controller
        .reconcile_all_on(futures::stream::select(
            namespace_changes,
            access_refused(ctx.access_lost.clone()),
        ))
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(cluster::reconcile, cluster::error_policy, ctx.clone())
        .inspect(counted(ctx.metrics.clone(), "Cluster"))
        .for_each(log_result);
    let child = ChildController {
        children,
        stores: (cluster_store, namespace_store),
        fence: ctx.fence.clone(),
        stop,
    };
    let children = child.run_both(instance_controller, operation_controller, trigger_rx);
    tokio::join!(clusters, children, deletions, helm_release_watches);
}

/// The watch on managed namespaces, kept in `writer`'s store; one item (a Cluster re-run) per
/// change, and `changed` notified on every change and on the first full list.
fn managed_namespace_changes(
    client: &Client,
    writer: reflector::store::Writer<Namespace>,
    changed: Arc<tokio::sync::Notify>,
    metrics: Arc<Metrics>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    watcher(
        namespaces,
        watcher::Config::default().labels(&cluster::namespaces::selector()),
    )
    .default_backoff()
    .inspect(move |result| metrics.watch_health.record("Namespace", result))
    .modify(lean)
    .reflect(writer)
    .filter_map(move |event| {
        let changed = changed.clone();
        async move {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                    changed.notify_one();
                    Some(())
                }
                Ok(watcher::Event::InitDone) => {
                    changed.notify_one();
                    None
                }
                _ => None,
            }
        }
    })
}

/// One item each time a child controller reports a namespace where it was refused for lack of
/// rights: every `Cluster` re-runs, and the one managing that namespace checks its RBAC again.
fn access_refused(
    lost: Arc<crate::access_lost::AccessLost>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(lost, |lost| async move {
        lost.reported().await;
        Some(((), lost))
    })
}

/// The ApplicationInstance and Operation controllers, built before they run so that their stores
/// exist for the Cluster pass (which reads the live objects of a no-op pass from them instead of
/// listing, [`Context::set_live_stores`]); they fill once the controllers run.
fn live_controllers(
    client: &Client,
    ctx: &Context,
) -> (Controller<WatchedInstance>, Controller<Operation>) {
    let live_changes = Arc::new(AtomicU64::new(0));
    let (instances_listed_tx, instances_listed) = cluster::apply::Listed::new();
    let (operations_listed_tx, operations_listed) = cluster::apply::Listed::new();
    let instances = lean_controller(
        // The spec is kept by digest only (`WatchedInstance`): nothing acts on a live spec.
        Api::<WatchedInstance>::all(client.clone()),
        watcher::Config::default(),
        Some((live_changes.clone(), instances_listed_tx)),
        ctx.metrics.clone(),
    );
    let operations = lean_controller(
        Api::<Operation>::all(client.clone()),
        watcher::Config::default(),
        Some((live_changes.clone(), operations_listed_tx)),
        ctx.metrics.clone(),
    );
    ctx.set_live_stores(cluster::apply::LiveStores {
        instances: instances.store(),
        operations: operations.store(),
        changes: live_changes,
        listed: [instances_listed, operations_listed],
    });
    (instances, operations)
}

/// Deletions of `Cluster`s, from a metadata-only watch (names only): forgets what the process held
/// for them (its pass memory, its declared release, the identities no remaining Cluster names).
fn forget_deleted(
    client: &Client,
    config: watcher::Config,
    ctx: &Arc<Context>,
    caches: Caches,
    store: Store<Cluster>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let ctx = ctx.clone();
    watcher(
        Api::<kube::core::PartialObjectMeta<Cluster>>::all(client.clone()),
        config,
    )
    .default_backoff()
    .take_until(stopped(stop.clone()))
    .for_each(move |event| {
        if let Ok(watcher::Event::Delete(gone)) = event {
            let name = gone.name_any();
            let remaining: Vec<Arc<Cluster>> = store
                .state()
                .into_iter()
                .filter(|c| c.name_any() != name)
                .collect();
            let ids: Vec<String> = remaining
                .iter()
                .map(|c| c.spec.cluster_id.clone())
                .collect();
            ctx.forget_deleted(&name, &ids);
            let named: Vec<(String, String)> = remaining
                .iter()
                .map(|c| {
                    let secret = &c.spec.decryption.identity_secret_ref;
                    (secret.name.clone(), secret.key_or_default().to_owned())
                })
                .collect();
            caches.retain_identities(&named);
        }
        async {}
    })
}

/// What the two child controllers share: their context, the stores they wait for, the leader's
/// fence and the stop.
#[derive(Clone)]
struct ChildController {
    children: Arc<ChildContext>,
    stores: (Store<Cluster>, Store<Namespace>),
    fence: crate::fence::Fence,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl ChildController {
    /// Runs the ApplicationInstance controller (also on each of `instance_triggers`: a HelmRelease's
    /// readiness moved) and the Operation controller, until both end.
    async fn run_both(
        self,
        instances: Controller<WatchedInstance>,
        operations: Controller<Operation>,
        instance_triggers: impl futures::Stream<Item = ObjectRef<WatchedInstance>> + Send + 'static,
    ) {
        let instances = self.clone().run(
            instances,
            instance_triggers,
            crate::children::instance::reconcile,
            crate::children::instance::error_policy,
        );
        let operations = self.run(
            operations,
            futures::stream::empty(),
            crate::children::operation::reconcile,
            crate::children::operation::error_policy,
        );
        tokio::join!(instances, operations);
    }

    /// Runs `controller` ([`CHILD_CONCURRENCY`] reconciles at once, each fenced) once both stores
    /// hold their first list (before, every namespace would look unmanaged); every object is
    /// reconciled again when the declared set moves, and each of `triggers` when it arrives.
    async fn run<K, F, Fut>(
        self,
        controller: Controller<K>,
        triggers: impl futures::Stream<Item = ObjectRef<K>> + Send + 'static,
        reconcile: F,
        error_policy: fn(Arc<K>, &Error, Arc<ChildContext>) -> Action,
    ) where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        F: Fn(Arc<K>, Arc<ChildContext>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
    {
        let (clusters, namespaces) = &self.stores;
        let ready = async {
            let _ = clusters.wait_until_ready().await;
            let _ = namespaces.wait_until_ready().await;
        };
        tokio::select! {
            () = ready => {}
            () = stopped(self.stop.clone()) => return,
        }
        let stop = &self.stop;
        controller
            .with_config(controller::Config::default().concurrency(CHILD_CONCURRENCY))
            .reconcile_all_on(
                declared_changes(self.children.declared.clone()).take_until(stopped(stop.clone())),
            )
            .reconcile_on(triggers.take_until(stopped(stop.clone())))
            .graceful_shutdown_on(stopped(stop.clone()))
            .run(
                fenced(self.fence.clone(), reconcile),
                error_policy,
                self.children.clone(),
            )
            .inspect(counted(self.children.metrics.clone(), &K::kind(&())))
            .for_each(log_result)
            .await;
    }
}

/// Drops what no reconcile reads from a watched object before it is stored: `managedFields` (which
/// repeat the shape of the whole object, a third or more of its size). Ownership checks read them
/// from objects fetched by name ([`cluster::apply::get_unlisted`]), never from a store.
fn lean<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// A controller over every `K`, its store kept lean ([`lean`]). With `live`, every event that
/// changes what a `Cluster` pass reads of an object ([`cluster::apply::changes_what_a_pass_reads`],
/// judged against the stored object before the event replaces it) moves the counter, and the flag
/// is set once the store holds the first list ([`cluster::apply::Listed`]). Every result of the
/// watch is recorded in `metrics`' watch health (`/readyz`).
fn lean_controller<K>(
    api: Api<K>,
    config: watcher::Config,
    live: Option<(Arc<AtomicU64>, tokio::sync::watch::Sender<bool>)>,
    metrics: Arc<Metrics>,
) -> Controller<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use futures::TryStreamExt;
    let (reader, writer) = reflector::store::<K>();
    let before = reader.clone();
    let listed = live.as_ref().map(|(_, listed)| listed.clone());
    let child = live.is_some();
    let kind = K::kind(&()).into_owned();
    let stream = watcher(api, config)
        .default_backoff()
        .inspect(move |result| metrics.watch_health.record(&kind, result))
        .map_ok(move |mut event| {
            let moved = match &mut event {
                watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                    lean(object);
                    let old = before.get(&reflector::ObjectRef::from_obj(object));
                    cluster::apply::changes_what_a_pass_reads(old.as_deref(), object)
                }
                watcher::Event::Delete(object) => {
                    lean(object);
                    true
                }
                watcher::Event::Init | watcher::Event::InitDone => true,
            };
            if moved && let Some((counter, _)) = &live {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            event
        })
        .reflect(writer)
        .inspect_ok(move |event| {
            // After `reflect`: the store has swapped the list in.
            if matches!(event, watcher::Event::InitDone)
                && let Some(listed) = &listed
            {
                listed.send_replace(true);
            }
        })
        .applied_objects();
    if !child {
        return Controller::for_stream(stream, reader);
    }
    // A child controller's own status write would reconcile its object once more (each an extra
    // read of every child): only what the reconcile reads from the object triggers one.
    let stream = stream.predicate_filter(reconciled_part, PredicateConfig::default());
    Controller::for_stream(stream, reader)
}

/// A hash of what a child reconcile reads from its object: everything but the status (which only
/// the reconcile itself writes) and the bookkeeping that moves with every write.
fn reconciled_part<K: kube::Resource>(object: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = object.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.uid.hash(&mut hasher);
    meta.generation.hash(&mut hasher);
    meta.labels.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0)
        .hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    meta.owner_references
        .as_ref()
        .map(|refs| refs.iter().map(|r| &r.uid).collect::<Vec<_>>())
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// The watch of the `Cluster`s this process reconciles: all, or those `selector` picks (`run
/// --watch-label-selector`).
pub fn clusters_config(selector: Option<&str>) -> watcher::Config {
    match selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    }
}

/// One item each time the declared set's generation moves (polled every [`DECLARED_POLL`]).
fn declared_changes(
    declared: Arc<vworkspace_core::plan::declared::DeclaredSet>,
) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold(declared.generation(), move |seen| {
        let declared = declared.clone();
        async move {
            loop {
                tokio::time::sleep(DECLARED_POLL).await;
                let now = declared.generation();
                if now != seen {
                    return Some(((), now));
                }
            }
        }
    })
}

/// A child reconcile run inside the leader's write fence ([`crate::fence`]): dropped the moment the
/// Lease is no longer certainly held. (The `Cluster` reconcile fences itself.)
fn fenced<K, C, F>(
    fence: crate::fence::Fence,
    reconcile: impl Fn(Arc<K>, Arc<C>) -> F,
) -> impl Fn(Arc<K>, Arc<C>) -> futures::future::BoxFuture<'static, Result<Action, Error>>
where
    F: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    move |object, ctx| {
        let fence = fence.clone();
        let work = reconcile(object, ctx);
        Box::pin(async move { fence.guard(work).await.unwrap_or(Err(Error::NotLeader)) })
    }
}

/// Counts the watch errors among a controller's results ([`Metrics::count_watch_error`]).
fn counted<T, R, W>(
    metrics: Arc<Metrics>,
    watch: &str,
) -> impl Fn(&Result<T, controller::Error<R, W>>) + use<T, R, W>
where
    R: std::error::Error + 'static,
    W: std::error::Error + 'static,
{
    let watch = watch.to_owned();
    move |result| metrics.count_watch_error(&watch, result)
}

async fn log_result<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "reconcile ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vworkspace_core::crd::ApplicationInstance;

    fn instance(change: impl FnOnce(&mut serde_json::Value)) -> ApplicationInstance {
        let mut object = json!({
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "metadata": {"name": "app", "namespace": "org", "uid": "u1", "generation": 1,
                "resourceVersion": "10", "labels": {"a": "1"}, "annotations": {"b": "2"}},
            "spec": {"chart": {"repository": "https://charts.example", "name": "app", "version": "1.0.0"}},
            "status": {"observedGeneration": 1}
        });
        change(&mut object);
        serde_json::from_value(object).expect("an ApplicationInstance")
    }

    #[test]
    fn a_child_reconcile_is_triggered_by_what_it_reads_never_by_its_own_status_write() {
        let base = reconciled_part(&instance(|_| {}));
        let same = [
            instance(|o| o["status"] = json!({"observedGeneration": 1, "conditions": []})),
            instance(|o| o["metadata"]["resourceVersion"] = json!("11")),
        ];
        for object in &same {
            assert_eq!(reconciled_part(object), base, "{:?}", object.metadata);
        }
        let moved = [
            instance(|o| o["metadata"]["generation"] = json!(2)),
            instance(|o| o["metadata"]["labels"]["a"] = json!("x")),
            instance(|o| {
                o["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"] = json!("now")
            }),
            instance(|o| o["metadata"]["deletionTimestamp"] = json!("2026-12-04T00:00:00Z")),
            instance(|o| o["metadata"]["finalizers"] = json!(["f"])),
            instance(|o| o["metadata"]["uid"] = json!("u2")),
        ];
        for object in &moved {
            assert_ne!(reconciled_part(object), base, "{:?}", object.metadata);
        }
    }
}
