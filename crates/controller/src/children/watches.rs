//! Watches on the HelmReleases the instance controller makes, one per managed namespace: the
//! operator's rights on HelmReleases are granted per namespace (the seed's namespace Role), so there
//! is no cluster-wide watch to take. A HelmRelease whose `Ready` changes (Flux's helm-controller
//! finished, or failed) triggers a reconcile of its instance, which mirrors it into the instance's
//! status within the watch's latency instead of a polling interval; one deleted by hand triggers it
//! too, so it is put back at once.
//!
//! What each watch keeps is small: per HelmRelease, a fingerprint of its `Ready` condition (no object
//! is stored). The same map tells the instance controller that a HelmRelease does not exist yet, so
//! that its first apply skips the read before it (an apply is idempotent: a stale "absent" costs one
//! apply that changes nothing, never a missed difference).
//!
//! The decisions ([`namespaces_to_change`], [`fingerprint`], [`Namespace::observe`]) are pure and
//! unit-tested; [`HelmReleaseWatches::run`] does the I/O.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use crate::children::flux::{self, LABEL_INSTANCE};
use crate::watch_clients::WatchClients;
use vworkspace_core::crd::WatchedInstance;
use vworkspace_core::labels::{LABEL_MANAGED_BY, MANAGED_BY_VALUE};

/// How often the set of watched namespaces is compared with the managed namespaces when no change
/// of a namespace was signalled (a missed signal costs at most this long).
pub const RESYNC_NAMESPACES: Duration = Duration::from_secs(10);

/// A fingerprint of a HelmRelease's `Ready` condition (status, reason, message, observed
/// generation); `None` when it has none yet.
pub type ReadyFingerprint = Option<u64>;

/// The fingerprint of a HelmRelease's `Ready` condition, with what the instance's readiness also
/// reads ([`super::rollout::ready_for_current_generation`]): the generations observed and the
/// reconcile request handled.
pub fn fingerprint(helm_release: &serde_json::Value) -> ReadyFingerprint {
    let ready = flux::helm_release_ready(helm_release)?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ready.hash(&mut hasher);
    let status = &helm_release["status"];
    status["observedGeneration"].as_i64().hash(&mut hasher);
    status["lastHandledReconcileAt"].as_str().hash(&mut hasher);
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["observedGeneration"].as_i64())
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// What a first read of a namespace's HelmReleases says about the operator's right to watch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The read succeeded: the watch can start.
    Granted,
    /// Forbidden: the Cluster pass labels a namespace before it binds the operator's Role there,
    /// so a new managed namespace answers 403 for a moment. Not an error: ask again shortly.
    NotYet,
    /// Anything else: the watch starts and retries with its own back-off.
    Other,
}

/// Classifies the answer to the access probe.
pub fn access_of<T>(answer: &Result<T, kube::Error>) -> Access {
    match answer {
        Ok(_) => Access::Granted,
        Err(kube::Error::Api(status)) if status.code == 403 => Access::NotYet,
        Err(_) => Access::Other,
    }
}

/// How many namespaces' watches make their first list at once. A restart at 1,000 namespaces used
/// to send 1,000 lists together, and kube-apiserver answered 1,290 of them 429 (its in-flight
/// limit), each then retried with back-off; a few dozen at a time finish sooner.
pub const CONCURRENT_STARTS: usize = 32;

/// The longest wait between two access probes of one namespace.
pub const ACCESS_PROBE_MAX: Duration = Duration::from_secs(5);

/// Waits until the HelmReleases of `api`'s namespace may be listed (one `limit=1` metadata list per
/// probe, 100 ms doubling to [`ACCESS_PROBE_MAX`]), so that a watch started on a namespace whose
/// RoleBinding the pass has not made yet does not log a 403 (kube-runtime warns on a forbidden
/// list). Returns the number of probes answered 403.
pub async fn wait_for_access(api: &Api<DynamicObject>, selector: &str) -> u32 {
    wait_for_access_among(api, selector, &tokio::sync::Semaphore::new(1)).await
}

/// [`wait_for_access`], each probe holding one of `starts`' permits: never while it waits, so that
/// a namespace whose RoleBinding never comes holds up no other namespace's watch.
async fn wait_for_access_among(
    api: &Api<DynamicObject>,
    selector: &str,
    starts: &tokio::sync::Semaphore,
) -> u32 {
    let params = kube::api::ListParams::default().labels(selector).limit(1);
    let mut delay = Duration::from_millis(100);
    let mut forbidden = 0;
    loop {
        let answer = {
            let _permit = starts.acquire().await;
            api.list_metadata(&params).await
        };
        if access_of(&answer) != Access::NotYet {
            return forbidden;
        }
        forbidden += 1;
        tracing::debug!(
            forbidden,
            "HelmReleases not readable yet (the namespace's RoleBinding comes next); waiting"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(ACCESS_PROBE_MAX);
    }
}

/// What one namespace's watch knows.
#[derive(Debug, Default)]
pub struct Namespace {
    /// Whether the watch's first list (or its last relist) completed: until then an absent name
    /// proves nothing.
    synced: bool,
    /// HelmRelease name -> its `Ready` fingerprint.
    ready: HashMap<String, ReadyFingerprint>,
    /// Names seen during a relist in progress (the rest are gone once it completes).
    relisting: Option<HashSet<String>>,
    /// Whether the first list reports the HelmReleases that already have `Ready`. A namespace that
    /// becomes managed while the controllers run: its instances were reconciled before this watch
    /// listed, and a `Ready` reached in between would otherwise wait for the 10-minute resync. The
    /// namespaces managed at start are not announced (the controller reconciles every instance
    /// when it starts).
    announce_first_list: bool,
}

impl Namespace {
    /// A namespace whose first list reports what already has `Ready` ([`Self::announce_first_list`]).
    pub fn announcing_first_list() -> Self {
        Namespace {
            announce_first_list: true,
            ..Namespace::default()
        }
    }
}

/// One watch event, as [`Namespace::observe`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A (re)list starts.
    ListStarted,
    /// An object of the (re)list.
    Listed(String, ReadyFingerprint),
    /// The (re)list completed.
    ListDone,
    /// An object was created or changed.
    Changed(String, ReadyFingerprint),
    /// An object was deleted.
    Deleted(String),
}

impl Namespace {
    /// Takes one event; returns the names of the HelmReleases whose instance should be reconciled:
    /// those whose `Ready` changed, and those deleted. A HelmRelease first seen without `Ready`
    /// (the instance controller just made it) triggers nothing, nor does the first list of a
    /// namespace (the controller reconciles every instance when it starts).
    pub fn observe(&mut self, event: Observed) -> Vec<String> {
        match event {
            Observed::ListStarted => {
                self.relisting = Some(HashSet::new());
                Vec::new()
            }
            Observed::Listed(name, ready) => {
                if let Some(seen) = &mut self.relisting {
                    seen.insert(name.clone());
                }
                let before = self.ready.insert(name.clone(), ready);
                if (self.synced || self.announce_first_list) && before.flatten() != ready {
                    vec![name]
                } else {
                    Vec::new()
                }
            }
            Observed::ListDone => {
                self.synced = true;
                let Some(seen) = self.relisting.take() else {
                    return Vec::new();
                };
                let gone: Vec<String> = self
                    .ready
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for name in &gone {
                    self.ready.remove(name);
                }
                gone
            }
            Observed::Changed(name, ready) => {
                let before = self.ready.insert(name.clone(), ready);
                if before.flatten() != ready {
                    vec![name]
                } else {
                    Vec::new()
                }
            }
            Observed::Deleted(name) => {
                self.ready.remove(&name);
                vec![name]
            }
        }
    }
}

/// Which namespaces to start watching and which to stop: `(start, stop)`.
pub fn namespaces_to_change(
    watched: &BTreeSet<String>,
    managed: &BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    (
        managed.difference(watched).cloned().collect(),
        watched.difference(managed).cloned().collect(),
    )
}

/// Whether a HelmRelease is known to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Its namespace's watch has not completed a list: unknown.
    Unknown,
    /// The watch has listed and not seen it.
    Absent,
    /// The watch has seen it.
    Present,
}

/// The `watch` label of the HelmRelease watches' errors (one of [`crate::metrics::WATCHES`]).
pub const HELM_RELEASE_WATCH: &str = "HelmRelease";

/// The per-namespace HelmRelease watches, shared by the instance controller (cheap to clone).
#[derive(Clone, Default)]
pub struct HelmReleaseWatches {
    namespaces: Arc<Mutex<HashMap<String, Namespace>>>,
    /// Where a failed watch is counted (`watch_errors_total{watch="HelmRelease"}`; the namespace is
    /// not a label: one series however many namespaces are watched).
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for HelmReleaseWatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelmReleaseWatches").finish_non_exhaustive()
    }
}

impl HelmReleaseWatches {
    /// Watches whose failures are counted in `metrics`.
    pub fn counted_in(metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self {
            metrics: Some(metrics),
            ..Self::default()
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Namespace>) -> T) -> T {
        let mut guard = match self.namespaces.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Whether the HelmRelease `namespace/name` is known to exist.
    pub fn known(&self, namespace: &str, name: &str) -> Known {
        self.with(|all| match all.get(namespace) {
            Some(ns) if ns.synced => {
                if ns.ready.contains_key(name) {
                    Known::Present
                } else {
                    Known::Absent
                }
            }
            _ => Known::Unknown,
        })
    }

    /// Keeps one watch per namespace of `managed` (the managed-namespace store) until `stop`
    /// resolves: started when a namespace becomes managed, stopped when it no longer is. `changed`
    /// is signalled on every change of a managed namespace (checked every
    /// [`RESYNC_NAMESPACES`] regardless). Each instance to reconcile is sent to `triggers`.
    pub async fn run(
        self,
        clients: WatchClients,
        managed: Store<k8s_openapi::api::core::v1::Namespace>,
        changed: Arc<tokio::sync::Notify>,
        triggers: futures::channel::mpsc::UnboundedSender<ObjectRef<WatchedInstance>>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let resource =
            super::api_resource("helm.toolkit.fluxcd.io/v2", "HelmRelease", "helmreleases");
        let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let starts = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_STARTS));
        tokio::pin!(stop);
        tokio::select! {
            () = &mut stop => return,
            _ = managed.wait_until_ready() => {}
        }
        // The namespaces managed at start are not announced; every later one is.
        let mut started = false;
        loop {
            let names: BTreeSet<String> = managed
                .state()
                .iter()
                .filter(|n| super::carries_managed_label(n))
                .map(|n| n.name_any())
                .collect();
            let watched: BTreeSet<String> = tasks.keys().cloned().collect();
            let (start, end) = namespaces_to_change(&watched, &names);
            for namespace in end {
                if let Some(task) = tasks.remove(&namespace) {
                    task.abort();
                }
                self.with(|all| all.remove(&namespace));
            }
            for namespace in start {
                let watch = if started {
                    Namespace::announcing_first_list()
                } else {
                    Namespace::default()
                };
                self.with(|all| all.insert(namespace.clone(), watch));
                let task = tokio::spawn(self.clone().watch(
                    clients.clone(),
                    starts.clone(),
                    resource.clone(),
                    namespace.clone(),
                    triggers.clone(),
                ));
                tasks.insert(namespace, task);
            }
            started = true;
            tokio::select! {
                () = &mut stop => break,
                () = changed.notified() => {}
                () = tokio::time::sleep(RESYNC_NAMESPACES) => {}
            }
        }
        for task in tasks.into_values() {
            task.abort();
        }
    }

    /// One namespace's watch, until aborted (re-established with back-off by kube-runtime), on a
    /// client of `clients` that it holds while it runs.
    async fn watch(
        self,
        clients: WatchClients,
        starts: Arc<tokio::sync::Semaphore>,
        resource: ApiResource,
        namespace: String,
        triggers: futures::channel::mpsc::UnboundedSender<ObjectRef<WatchedInstance>>,
    ) {
        let lease = loop {
            match clients.lease() {
                Ok(lease) => break lease,
                Err(e) => {
                    tracing::warn!(namespace = %namespace, error = %e, "no client for the HelmRelease watch yet; retrying");
                    tokio::time::sleep(ACCESS_PROBE_MAX).await;
                }
            }
        };
        let api: Api<DynamicObject> = Api::namespaced_with(lease.client(), &namespace, &resource);
        let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}");
        wait_for_access_among(&api, &selector, &starts).await;
        // Held until the first list completed (or failed): see [`CONCURRENT_STARTS`].
        let mut starting = starts.acquire_owned().await.ok();
        let config = watcher::Config::default().labels(&selector);
        let events = watcher(api, config).default_backoff();
        tokio::pin!(events);
        while let Some(event) = events.next().await {
            let observed = match event {
                Ok(watcher::Event::Init) => Observed::ListStarted,
                Ok(watcher::Event::InitApply(o)) => {
                    let (name, ready) = instance_and_ready(&o);
                    Observed::Listed(name, ready)
                }
                Ok(watcher::Event::InitDone) => {
                    drop(starting.take());
                    Observed::ListDone
                }
                Ok(watcher::Event::Apply(o)) => {
                    let (name, ready) = instance_and_ready(&o);
                    Observed::Changed(name, ready)
                }
                Ok(watcher::Event::Delete(o)) => Observed::Deleted(instance_and_ready(&o).0),
                Err(e) => {
                    drop(starting.take());
                    if let Some(metrics) = &self.metrics {
                        metrics.count_failed_watch(HELM_RELEASE_WATCH);
                    }
                    tracing::debug!(namespace = %namespace, error = %e, "HelmRelease watch failed; retrying");
                    continue;
                }
            };
            let due = self.with(|all| {
                all.get_mut(&namespace)
                    .map(|ns| ns.observe(observed))
                    .unwrap_or_default()
            });
            for instance in due {
                let _ = triggers.unbounded_send(ObjectRef::new(&instance).within(&namespace));
            }
        }
    }
}

/// The instance a HelmRelease belongs to (its label; the HelmRelease is named like its instance)
/// and its `Ready` fingerprint.
fn instance_and_ready(helm_release: &DynamicObject) -> (String, ReadyFingerprint) {
    let name = helm_release
        .labels()
        .get(LABEL_INSTANCE)
        .cloned()
        .unwrap_or_else(|| helm_release.name_any());
    // `data` holds every top-level field but the metadata, `status` included: read in place.
    (name, fingerprint(&helm_release.data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release(status: &str, reason: &str) -> serde_json::Value {
        json!({"status": {"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": status, "reason": reason, "message": "m"}]}})
    }

    #[test]
    fn readiness_is_fingerprinted_by_status_reason_message_and_generation() {
        assert_eq!(fingerprint(&json!({"status": {}})), None);
        let progressing = fingerprint(&release("Unknown", "Progressing"));
        let ready = fingerprint(&release("True", "InstallSucceeded"));
        assert!(progressing.is_some() && ready.is_some());
        assert_ne!(progressing, ready);
        assert_eq!(ready, fingerprint(&release("True", "InstallSucceeded")));
        let mut later = release("True", "InstallSucceeded");
        later["status"]["observedGeneration"] = json!(2);
        assert_ne!(ready, fingerprint(&later), "a new generation reconciled");
    }

    #[test]
    fn a_watched_helm_release_names_its_instance_and_its_readiness() {
        let mut object = release("True", "InstallSucceeded");
        object["apiVersion"] = json!("helm.toolkit.fluxcd.io/v2");
        object["kind"] = json!("HelmRelease");
        object["metadata"] =
            json!({"name": "hr", "namespace": "ns", "labels": {LABEL_INSTANCE: "app"}});
        let watched: DynamicObject = serde_json::from_value(object.clone()).expect("object");
        assert_eq!(
            instance_and_ready(&watched),
            ("app".to_owned(), fingerprint(&object))
        );
        assert!(instance_and_ready(&watched).1.is_some());
        object["metadata"]["labels"] = json!({});
        object.as_object_mut().map(|o| o.remove("status"));
        let unlabelled: DynamicObject = serde_json::from_value(object).expect("object");
        assert_eq!(instance_and_ready(&unlabelled), ("hr".to_owned(), None));
    }

    #[test]
    fn the_first_list_and_our_own_creates_trigger_nothing_readiness_and_deletes_do() {
        let mut ns = Namespace::default();
        assert!(ns.observe(Observed::ListStarted).is_empty());
        assert!(ns.observe(Observed::Listed("a".into(), Some(1))).is_empty());
        assert!(ns.observe(Observed::Listed("b".into(), None)).is_empty());
        assert!(ns.observe(Observed::ListDone).is_empty());
        assert!(ns.synced);
        // Our own create: no Ready yet.
        assert!(ns.observe(Observed::Changed("c".into(), None)).is_empty());
        // Status written by Flux without a change of Ready: nothing.
        assert!(
            ns.observe(Observed::Changed("a".into(), Some(1)))
                .is_empty()
        );
        // Ready changed.
        assert_eq!(ns.observe(Observed::Changed("c".into(), Some(7))), ["c"]);
        assert_eq!(ns.observe(Observed::Changed("a".into(), Some(2))), ["a"]);
        // Deleted by hand: the instance puts it back.
        assert_eq!(ns.observe(Observed::Deleted("b".into())), ["b"]);
        assert!(!ns.ready.contains_key("b"));
    }

    #[test]
    fn a_namespace_managed_later_reports_on_its_first_list_what_already_has_ready() {
        let mut ns = Namespace::announcing_first_list();
        assert!(ns.observe(Observed::ListStarted).is_empty());
        // Flux made it Ready before this watch listed: the instance must hear of it.
        assert_eq!(ns.observe(Observed::Listed("a".into(), Some(1))), ["a"]);
        // Just created by the instance controller, no Ready yet: nothing to report.
        assert!(ns.observe(Observed::Listed("b".into(), None)).is_empty());
        assert!(ns.observe(Observed::ListDone).is_empty());
        assert!(
            ns.observe(Observed::Changed("a".into(), Some(1)))
                .is_empty()
        );
        assert_eq!(ns.observe(Observed::Changed("b".into(), Some(3))), ["b"]);
    }

    #[test]
    fn a_relist_reports_what_changed_or_went_while_the_watch_was_down() {
        let mut ns = Namespace::default();
        ns.observe(Observed::ListStarted);
        ns.observe(Observed::Listed("a".into(), Some(1)));
        ns.observe(Observed::Listed("b".into(), Some(1)));
        ns.observe(Observed::Listed("c".into(), None));
        ns.observe(Observed::ListDone);
        // The watch broke; the relist finds a changed, b unchanged, c gone.
        ns.observe(Observed::ListStarted);
        assert_eq!(ns.observe(Observed::Listed("a".into(), Some(2))), ["a"]);
        assert!(ns.observe(Observed::Listed("b".into(), Some(1))).is_empty());
        assert_eq!(ns.observe(Observed::ListDone), ["c"]);
        assert_eq!(ns.ready.len(), 2);
    }

    #[test]
    fn a_forbidden_probe_means_not_yet_anything_else_starts_the_watch() {
        let status = |code, reason| {
            kube::Error::Api(
                kube::core::Status::failure("fake", reason)
                    .with_code(code)
                    .boxed(),
            )
        };
        let forbidden = status(403, "Forbidden");
        let gone = status(404, "NotFound");
        assert_eq!(access_of::<()>(&Ok(())), Access::Granted);
        assert_eq!(access_of::<()>(&Err(forbidden)), Access::NotYet);
        assert_eq!(access_of::<()>(&Err(gone)), Access::Other);
    }

    #[test]
    fn a_handled_request_or_a_generation_observed_moves_the_fingerprint() {
        let ready = release("True", "UpgradeSucceeded");
        let mut handled = ready.clone();
        handled["status"]["lastHandledReconcileAt"] = json!("values/9");
        assert_ne!(fingerprint(&ready), fingerprint(&handled));
        let mut condition = ready.clone();
        condition["status"]["conditions"][0]["observedGeneration"] = json!(2);
        assert_ne!(fingerprint(&ready), fingerprint(&condition));
    }

    #[test]
    fn known_needs_a_completed_list() {
        let watches = HelmReleaseWatches::default();
        assert_eq!(watches.known("ns", "a"), Known::Unknown);
        watches.with(|all| all.insert("ns".into(), Namespace::default()));
        assert_eq!(watches.known("ns", "a"), Known::Unknown);
        watches.with(|all| {
            let ns = all.get_mut("ns").expect("inserted");
            ns.observe(Observed::ListStarted);
            ns.observe(Observed::Listed("a".into(), None));
            ns.observe(Observed::ListDone);
        });
        assert_eq!(watches.known("ns", "a"), Known::Present);
        assert_eq!(watches.known("ns", "b"), Known::Absent);
    }

    #[test]
    fn watched_namespaces_follow_the_managed_ones() {
        let watched: BTreeSet<String> = ["a", "b"].map(String::from).into();
        let managed: BTreeSet<String> = ["b", "c"].map(String::from).into();
        assert_eq!(
            namespaces_to_change(&watched, &managed),
            (vec!["c".to_owned()], vec!["a".to_owned()])
        );
    }
}
