//! The in-cluster reconciler of `Cluster` resources: one entry, [`reconcile`], that runs a pass in
//! ordered steps and one summarize step, in the style of Flux's source-controller:
//!
//! ```text
//! read trust inputs -> fetch (blocking pool) -> verify (blocking pool) -> managed namespaces
//!   -> list live -> diff -> apply -> prune -> status + Event + metrics
//! ```
//!
//! Everything before `apply` only reads: a pass that fails there leaves the cluster as it was and
//! says why in the status, an Event, the log and a metric. The decisions (trust config, managed set,
//! diff, status, Event) are pure functions in [`trust`], [`namespaces`], [`vworkspace_core::plan::diff`] and
//! [`status`]; this module sequences them and does the I/O.

pub mod conditions;
pub mod finalizer;
pub mod rbac;

pub mod apply;
pub mod namespaces;
pub mod retry;
pub mod status;
pub mod status_guard;
pub mod trust;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};

use crate::cluster::conditions::StepOutcome;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::source::FetchOptions;
use status::{AppliedSource, PassReport};
use vworkspace_core::crd::{Cluster, ClusterSpec, ClusterStatus, GitSourceRef};
use vworkspace_core::limits::Limits;
use vworkspace_core::pipeline::{PassMemo, VerifiedIntent};
use vworkspace_core::reasons as reason;
use vworkspace_core::repository::GitRef;

/// How long a namespace's RBAC, once checked, is trusted before it is read again.
pub const RBAC_RECHECK: Duration = Duration::from_secs(3600);

/// The component name in Events.
pub const COMPONENT: &str = "vworkspace-operator";

/// How the reconciler runs: where its inputs and cache live, and its limits.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The operator's namespace: the ConfigMaps and Secrets a `Cluster` names live here.
    pub namespace: String,
    /// Where Git caches live (an emptyDir in the pod).
    pub cache_dir: PathBuf,
    /// Fetch time and size limits (auth and CA come from the `Cluster`).
    pub fetch: FetchOptions,
    /// Limits on what a repository may contain.
    pub limits: Limits,
    /// The longest a pass may take (a stalled API server or Git server ends it with a reason instead
    /// of holding the Cluster forever).
    pub pass_timeout: Duration,
}

/// The default [`Settings::pass_timeout`].
pub const DEFAULT_PASS_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
struct SourceState {
    memo: Option<PassMemo>,
    failures: u32,
    /// Namespaces whose RBAC this process has checked and found (or made) right, and when: checked
    /// again after [`RBAC_RECHECK`], so a binding deleted by hand comes back within the hour.
    namespaces_ensured: HashMap<String, Instant>,
    /// The release serial whose coming expiry this process already warned about (one Event each).
    expiry_warned: Option<u64>,
    /// The last pass that found nothing to write, for [`unchanged_since`].
    unchanged: Option<UnchangedPass>,
}

/// A pass that found the live objects already as its verified release declares them: what it
/// read and what it reported. The next pass with the same verdict (the same `Arc`, from the memo),
/// the same managed namespaces and no change to the watched live objects since it read them
/// reports the same without planning, diffing or reading the objects again.
#[derive(Debug, Clone)]
struct UnchangedPass<V = VerifiedIntent> {
    verdict: Arc<V>,
    managed: Vec<vworkspace_core::crd::ManagedNamespace>,
    live_version: u64,
    inventory: Vec<vworkspace_core::crd::InventoryEntry>,
    apply: StepOutcome,
    applied: Option<AppliedSource>,
}

/// The report of the remembered unchanged pass, when it still holds ([`UnchangedPass`]).
fn unchanged_since<V>(
    last: Option<&UnchangedPass<V>>,
    verdict: &Arc<V>,
    managed: &[vworkspace_core::crd::ManagedNamespace],
    live_version: Option<u64>,
) -> Option<(
    Vec<vworkspace_core::crd::InventoryEntry>,
    StepOutcome,
    Option<AppliedSource>,
)> {
    let last = last?;
    (Arc::ptr_eq(&last.verdict, verdict)
        && last.managed == managed
        && Some(last.live_version) == live_version)
        .then(|| {
            (
                last.inventory.clone(),
                last.apply.clone(),
                last.applied.clone(),
            )
        })
}

/// Shared by every reconcile: the client, the settings, the metrics and per-source memory.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// How to run.
    pub settings: Settings,
    /// The exported metrics.
    pub metrics: Arc<Metrics>,
    /// The clock (injected so tests can move it).
    pub clock: fn() -> jiff::Timestamp,
    /// What each Cluster's last verified, applied release declares: published by [`reconcile`]
    /// after a successful apply, read by the child controllers (share it with
    /// [`crate::children::ChildContext::declared`]). Empty at process start.
    pub declared: Arc<vworkspace_core::plan::declared::DeclaredSet>,
    /// The leader's write fence: a reconcile is dropped, mid-request if need be, the moment this
    /// replica no longer certainly holds the Lease ([`crate::fence`]). Unfenced by default.
    pub fence: crate::fence::Fence,
    /// Closed (with a grace) when the process is stopping: a running pass is then cut like at its
    /// deadline, and its status, with what it wrote, recorded. Unfenced by default.
    pub stopping: crate::fence::Fence,
    /// The watched live objects of the long-running process ([`Context::set_live_stores`]): a pass
    /// reads the live state from them instead of listing. Unset (`run --once`, tests): listed.
    live: std::sync::OnceLock<apply::LiveStores>,
    state: Mutex<HashMap<String, SourceState>>,
}

impl Context {
    /// A context with the real clock.
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        Context {
            client,
            settings,
            metrics,
            clock: jiff::Timestamp::now,
            declared: Arc::default(),
            fence: crate::fence::Fence::unfenced(),
            stopping: crate::fence::Fence::unfenced(),
            live: std::sync::OnceLock::new(),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Lets passes read live objects from these watched stores (once; a second call is ignored).
    pub fn set_live_stores(&self, stores: apply::LiveStores) {
        let _ = self.live.set(stores);
    }

    /// Drops everything this process keeps about a `Cluster` (its memo with the verified intent,
    /// back-off count, namespace checks, and its entry in the declared set): when it is deleted.
    pub fn forget(&self, name: &str, cluster_id: &str) {
        let mut guard = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.remove(name);
        drop(guard);
        self.declared.forget(cluster_id);
    }

    /// Whether this process keeps memory about the `Cluster` named `name`.
    pub fn remembers(&self, name: &str) -> bool {
        let guard = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.contains_key(name)
    }

    /// Releases what this process holds for a deleted `Cluster` named `name` when only its name is
    /// known (a deletion seen by the metadata watch, without our finalizer having run): its pass memo (the
    /// verified intent), RBAC and expiry memory, and the declared release of every cluster id not in
    /// `remaining` (the `spec.clusterId`s of the Clusters that still exist; the children stop acting
    /// on the others).
    pub fn forget_deleted(&self, name: &str, remaining: &[String]) {
        let mut guard = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.remove(name);
        drop(guard);
        self.declared.retain(remaining);
    }

    fn with_state<T>(&self, cluster: &str, f: impl FnOnce(&mut SourceState) -> T) -> T {
        let mut guard = match self.state.lock() {
            Ok(guard) => guard,
            // A panic elsewhere leaves the memo possibly stale, never wrong: it is re-verified.
            Err(poisoned) => poisoned.into_inner(),
        };
        f(guard.entry(cluster.to_owned()).or_default())
    }
}

fn git_ref(reference: &GitSourceRef) -> GitRef {
    match reference {
        GitSourceRef::Branch(b) => GitRef::Branch(b.clone()),
        GitSourceRef::Tag(t) => GitRef::Tag(t.clone()),
        GitSourceRef::Commit(c) => GitRef::Commit(c.to_ascii_lowercase()),
    }
}

fn reference_of(cluster: &Cluster) -> ObjectReference {
    ObjectReference {
        api_version: Some(Cluster::api_version(&()).into_owned()),
        kind: Some(Cluster::kind(&()).into_owned()),
        name: Some(cluster.name_any()),
        uid: cluster.metadata.uid.clone(),
        resource_version: cluster.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

fn failed(error: &Error) -> StepOutcome {
    StepOutcome::Failed {
        reason: error.reason(),
        message: status::clip(error.findings().join("; ")),
    }
}

/// Fetches and verifies on the blocking pool: the network and the CPU-heavy verification never run
/// on the async runtime's workers.
async fn fetch_and_verify(
    ctx: &Context,
    name: &str,
    spec: &ClusterSpec,
    trust: trust::SourceTrust,
) -> std::result::Result<Arc<VerifiedIntent>, (Error, Option<String>)> {
    let url = spec.source.url.clone();
    let reference = git_ref(&spec.source.git_ref);
    let cache_dir = ctx.settings.cache_dir.clone();
    let mut options = ctx.settings.fetch.clone();
    options.auth = trust.auth.clone();
    if let Some(ca) = &trust.ca_bundle {
        // The CA is public material; a file keeps `FetchOptions` what the CLI uses.
        let path = cache_dir.join(format!("{name}.ca.pem"));
        // Written on the blocking pool (as tokio::fs does): a slow disk must not hold a runtime
        // worker.
        let (dir, file, bundle) = (cache_dir.clone(), path.clone(), ca.clone());
        let written = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, bundle))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        written.map_err(|e| {
            (
                Error::Io {
                    what: format!("write the CA bundle of {name} to {}", path.display()),
                    source: e,
                },
                None,
            )
        })?;
        options.ca_bundle = Some(path);
    }
    let mut memo = ctx.with_state(name, |s| s.memo.take()).unwrap_or_default();
    let config = trust.config;
    let joined = tokio::task::spawn_blocking(move || {
        let outcome = match crate::source::fetch(&url, &reference, &cache_dir, &options) {
            Ok(fetched) => memo
                .verify_ref(&fetched.repo, &GitRef::Commit(fetched.commit), &config)
                .map_err(|e| (Error::Pass(*e.error), e.commit)),
            Err(e) => Err((Error::Source(e), None)),
        };
        (memo, outcome)
    })
    .await;
    match joined {
        Ok((memo, outcome)) => {
            ctx.with_state(name, |s| s.memo = Some(memo));
            outcome
        }
        Err(e) => Err((Error::Task(e), None)),
    }
}

/// One pass over one `Cluster`, up to the report (status and Event are written by the caller).
async fn pass(cluster: &Cluster, ctx: &Context, progress: &apply::Progress) -> PassReport {
    let name = cluster.name_any();
    let spec = &cluster.spec;
    let previous = cluster.status.as_ref();
    if let Some(refused) = status_guard::unreadable(&name, previous) {
        return refused;
    }
    let client = &ctx.client;
    let inputs = match trust::read_inputs(client, &ctx.settings.namespace, spec).await {
        Ok(inputs) => inputs,
        Err(e) => return PassReport::refused(e.reason(), e.findings().join("; "), None),
    };
    // A floor the status lost is taken from this source's live objects, not dropped.
    let restored = match status_guard::restored_floor(client, spec, previous, ctx.live.get()).await
    {
        Ok(restored) => restored,
        Err(e) => return PassReport::refused(e.reason(), e.findings().join("; "), None),
    };
    let floor_status = restored.as_ref().or(previous);
    let trust = match trust::trust_config(
        spec,
        floor_status,
        &inputs,
        (ctx.clock)(),
        &ctx.settings.limits,
    ) {
        Ok(trust) => trust,
        Err(e) => return PassReport::refused(e.reason(), e.findings().join("; "), None),
    };
    drop(inputs);
    // Published even when verification fails: a new Cluster's authors need the recipient first.
    let recipients = trust.config.identities.as_ref().map(|i| i.recipients());
    progress.set_fetching(true);
    let verified = fetch_and_verify(ctx, &name, spec, trust).await;
    progress.set_fetching(false);
    let verified = match verified {
        Ok(verified) => verified,
        Err((e, commit)) => {
            let mut report = PassReport::refused(e.reason(), e.findings().join("; "), commit);
            report.recipients = recipients;
            return report;
        }
    };
    let commit = verified.commit().id().to_string();
    // The floor the owner pinned in the spec holds even when the status lost its own (a re-created
    // Cluster, a restored etcd backup).
    if let Err(e) = vworkspace_core::trust::release::check_floor(
        &spec.cluster_id,
        verified.release().serial(),
        spec.release.min_serial,
    ) {
        let e = Error::from(e);
        return PassReport::refused(e.reason(), e.findings().join("; "), Some(commit));
    }
    let mut report = PassReport {
        verify: StepOutcome::Succeeded,
        apply: StepOutcome::NotRun,
        attempted_commit: Some(commit.clone()),
        applied: None,
        inventory: None,
        managed_namespaces: None,
        writes: (0, 0),
        recipients,
        release_expires: Some((verified.release().serial(), verified.release().expires())),
    };
    let fail = |mut report: PassReport, error: Error| {
        report.apply = failed(&error);
        report
    };

    // Managed namespaces: make their RBAC right, release those that lost the label.
    let managed = match namespaces::list_managed(client).await {
        Ok(managed) => managed,
        Err(e) => return fail(report, e),
    };
    let recorded = previous
        .map(|s| s.managed_namespaces.clone())
        .unwrap_or_default();
    for gone in namespaces::removed(&recorded, &managed) {
        if let Err(e) = namespaces::release(client, &gone).await {
            return fail(report, e);
        }
        ctx.with_state(&name, |s| s.namespaces_ensured.remove(&gone));
    }
    let stale: Vec<&str> = managed
        .iter()
        .map(|ns| ns.name.as_str())
        .filter(|ns| {
            !ctx.with_state(&name, |s| {
                s.namespaces_ensured
                    .get(*ns)
                    .is_some_and(|at| at.elapsed() < RBAC_RECHECK)
            })
        })
        .collect();
    // Namespaces side by side (each one's objects in order: the binding names the ServiceAccount).
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
    ctx.with_state(&name, |s| {
        for ns in ensured {
            s.namespaces_ensured.insert(ns.to_owned(), Instant::now());
        }
    });
    if let Some(e) = error {
        return fail(report, e);
    }
    report.managed_namespaces = Some(managed.clone());
    if recorded != managed {
        // Recorded before anything is applied: the admission webhook and the Operation controller
        // judge templates by this list, and must know a new namespace before its objects arrive.
        let mut early = previous.cloned().unwrap_or_default();
        early.managed_namespaces = managed.clone();
        if let Err(e) = write_status(client, &name, &early).await {
            return fail(report, e);
        }
    }

    // Nothing changed since a pass found nothing to write: the same report, no plan, no reads. The
    // counter is read once the stores hold their first list (the list itself moves it), before
    // the objects are.
    let live_version = match ctx.live.get() {
        Some(stores) if stores.ready_within(apply::STORES_READY_WAIT).await => {
            Some(stores.version())
        }
        _ => None,
    };
    let last = ctx.with_state(&name, |s| s.unchanged.take());
    if let Some((inventory, apply, applied)) =
        unchanged_since(last.as_ref(), &verified, &managed, live_version)
    {
        ctx.with_state(&name, |s| s.unchanged = last);
        report.inventory = Some(inventory);
        report.apply = apply;
        report.applied = applied;
        return report;
    }
    drop(last);

    // Plan against the live cluster, then write.
    let plan = vworkspace_core::plan::desired(&verified);
    let mut live = match apply::list_live(client, &spec.cluster_id, ctx.live.get()).await {
        Ok(live) => live,
        Err(e) => return fail(report, e),
    };
    let managed_names: BTreeSet<String> = managed.iter().map(|m| m.name.clone()).collect();
    let unlisted = vworkspace_core::plan::diff::unlisted(&plan, &live, &managed_names);
    match apply::get_unlisted(client, &unlisted).await {
        Ok(found) => live.extend(found),
        Err(e) => return fail(report, e),
    }
    let serial = verified.release().serial();
    if let Some(mut refused) = status_guard::floor(spec, serial, &live, &commit) {
        refused.recipients = report.recipients;
        return refused;
    }
    let inventory = previous.map(|s| s.inventory.clone()).unwrap_or_default();
    let changes = vworkspace_core::plan::diff::diff(
        &plan,
        &live,
        &inventory,
        &managed_names,
        &spec.cluster_id,
    );
    for (id, why) in &changes.skipped {
        let why = match why {
            vworkspace_core::plan::diff::Skip::UnmanagedNamespace => "namespace not managed",
            _ => "not applied",
        };
        tracing::warn!(kind = %id.kind, namespace = %id.namespace, object = %id.name, why, "declared object not applied");
    }
    for (id, conflict) in &changes.conflicts {
        tracing::warn!(kind = %id.kind, namespace = %id.namespace, object = %id.name, holder = %conflict.holder(), "declared object exists and is not ours; not applied");
    }
    let (done, error) = if changes.is_noop() {
        (apply::Applied::default(), None)
    } else {
        apply::write(client, &changes, progress).await
    };
    ctx.metrics.applied.inc_by(done.applied.len() as u64);
    ctx.metrics.pruned.inc_by(done.pruned.len() as u64);
    report.writes = (done.applied.len(), done.pruned.len());
    match error {
        None => {
            report.inventory = Some(changes.inventory());
            report.apply = match partial(&changes, &spec.cluster_id) {
                None => StepOutcome::Succeeded,
                Some((reason, message)) => StepOutcome::Failed {
                    reason,
                    message: status::clip(message),
                },
            };
            // The children act on what this release declares from now on (never on what the
            // API server holds): published only once every declared object is applied.
            let not_applied: Vec<_> = changes
                .skipped
                .iter()
                .map(|(id, _)| id.clone())
                .chain(changes.conflicts.iter().map(|(id, _)| id.clone()))
                .collect();
            ctx.declared.publish(
                spec,
                verified.release().serial(),
                &commit,
                &plan,
                &not_applied,
            );
            let signer = verified.commit().signer();
            report.applied = Some(AppliedSource {
                commit,
                serial: verified.release().serial(),
                digest: verified.release().digest().to_owned(),
                signer: format!("{} ({})", signer.principal, signer.fingerprint),
            });
            if changes.is_noop()
                && let Some(live_version) = live_version
            {
                // Read before the live objects were: any change since moves the counter.
                let remembered = UnchangedPass {
                    verdict: verified.clone(),
                    managed: managed.clone(),
                    live_version,
                    inventory: report.inventory.clone().unwrap_or_default(),
                    apply: report.apply.clone(),
                    applied: report.applied.clone(),
                };
                ctx.with_state(&name, |s| s.unchanged = Some(remembered));
            }
        }
        Some(e) => {
            // What was written stays owned (it carries our labels); what was pruned is gone. The
            // refused write was answered: it is not owned (a cut pass, unanswered, owns it).
            report.inventory = Some(vworkspace_core::plan::diff::after_interruption(
                &inventory,
                &done.applied,
                &done.pruned,
            ));
            report = fail(report, e);
            report.apply = match report.apply {
                StepOutcome::Failed { message, .. } => StepOutcome::Failed {
                    reason: crate::cluster::conditions::REASON_APPLY_FAILED,
                    message,
                },
                other => other,
            };
        }
    }
    report
}

/// `Applied` reason: the release applied, but some declared objects are in unmanaged namespaces.
pub const SKIPPED_UNMANAGED: &str = reason::NAMESPACE_NOT_MANAGED;

/// The `Applied` failure of a pass that wrote everything it may but left declared objects out:
/// objects that exist and are not this source's ([`reason::OWNERSHIP_CONFLICT`], naming each object
/// and its holder), objects in unmanaged namespaces ([`SKIPPED_UNMANAGED`]). `None` when nothing was
/// left out.
fn partial(
    changes: &vworkspace_core::plan::diff::Changes<'_>,
    cluster: &str,
) -> Option<(&'static str, String)> {
    let mut parts = Vec::new();
    if !changes.conflicts.is_empty() {
        parts.push(format!(
            "{} declared object(s) exist and are not this source's (not applied, never pruned; to let \
             this source take one over, annotate it {}={cluster}): {}",
            changes.conflicts.len(),
            vworkspace_core::plan::ANNOTATION_ADOPT,
            changes
                .conflicts
                .iter()
                .map(|(id, c)| format!("{} {}/{} held by {}", id.kind, id.namespace, id.name, c.holder()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !changes.skipped.is_empty() {
        parts.push(format!(
            "{} declared object(s) are in namespaces without the label {}={}: {}",
            changes.skipped.len(),
            crate::cluster::rbac::MANAGED_LABEL.0,
            crate::cluster::rbac::MANAGED_LABEL.1,
            changes
                .skipped
                .iter()
                .map(|(id, _)| format!("{} {}/{}", id.kind, id.namespace, id.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let reason = if !changes.conflicts.is_empty() {
        reason::OWNERSHIP_CONFLICT
    } else if !changes.skipped.is_empty() {
        SKIPPED_UNMANAGED
    } else {
        return None;
    };
    Some((reason, parts.join("; ")))
}

/// The reconcile entry: runs a pass, writes the status only when it changed, emits an Event only when
/// `Ready` changed or objects were written, records metrics, and requeues at the interval (or backs
/// off on failure).
///
/// Fenced: the whole reconcile (pass, status, Event) runs inside [`Context::fence`] and is dropped,
/// with any request in flight, the moment the leader Lease is no longer certainly held; it then
/// writes nothing more and ends with [`Error::NotLeader`].
#[tracing::instrument(skip_all, fields(cluster = %cluster.name_any()))]
pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action> {
    let fence = ctx.fence.clone();
    match fence.guard(reconcile_held(cluster, ctx)).await {
        Ok(result) => result,
        Err(crate::fence::Fenced) => {
            tracing::warn!(
                "leader Lease not certainly held: reconcile abandoned, nothing more written"
            );
            Err(Error::NotLeader)
        }
    }
}

async fn reconcile_held(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action> {
    if cluster.metadata.deletion_timestamp.is_some() {
        return delete(&cluster, &ctx).await;
    }
    if !finalizer::has_finalizer(&cluster) {
        // Before anything is written: a Cluster deleted from now on is finalized.
        finalizer::add(&ctx.client, &cluster.name_any()).await?;
    }
    let interval = match vworkspace_core::crd::parse_interval(&cluster.spec.source.interval) {
        Ok(interval) => interval,
        Err(e) => {
            let report = PassReport::refused(reason::CONFIGURATION_INVALID, e.to_string(), None);
            return finish(&cluster, &ctx, report, Instant::now(), Duration::ZERO).await;
        }
    };
    if cluster.spec.suspend == Some(true) {
        tracing::info!("suspended; not reconciled");
        return Ok(Action::requeue(retry::jittered(
            interval,
            retry::random_jitter(),
        )));
    }
    let started = Instant::now();
    let progress = apply::Progress::default();
    let report = tokio::select! {
        outcome = tokio::time::timeout(ctx.settings.pass_timeout, pass(&cluster, &ctx, &progress)) => {
            match outcome {
                Ok(report) => report,
                Err(_) => deadline_report(&cluster, &ctx, &progress, Cut::Deadline),
            }
        }
        _ = ctx.stopping.lost() => deadline_report(&cluster, &ctx, &progress, Cut::Stopping),
    };
    finish(&cluster, &ctx, report, started, interval).await
}

/// Why a pass was cut before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// It hit [`Settings::pass_timeout`].
    Deadline,
    /// The process is stopping ([`Context::stopping`]).
    Stopping,
}

/// The report of a pass cut before it finished. Whatever it sent is recorded in the inventory (it
/// carries our labels; if the next release drops it, it is pruned). A deadline hit while fetching
/// is the Git server's doing (`FetchFailed`), anywhere else the API server's (`ApiRequestFailed`); a
/// stop is `Interrupted`.
fn deadline_report(
    cluster: &Cluster,
    ctx: &Context,
    progress: &apply::Progress,
    cut: Cut,
) -> PassReport {
    let (reason, message) = match cut {
        Cut::Stopping => (
            reason::INTERRUPTED,
            "the operator stopped before the pass finished; the next process takes it up"
                .to_owned(),
        ),
        Cut::Deadline => {
            let (reason, culprit) = if progress.fetching() {
                (reason::FETCH_FAILED, "the Git server stalled")
            } else {
                (reason::API_REQUEST_FAILED, "the API server stalled")
            };
            (
                reason,
                format!(
                    "the pass did not finish within {} s ({culprit})",
                    ctx.settings.pass_timeout.as_secs()
                ),
            )
        }
    };
    let mut report = PassReport::refused(reason, message, None);
    if progress.wrote() {
        let previous = cluster
            .status
            .as_ref()
            .map(|s| s.inventory.clone())
            .unwrap_or_default();
        report.inventory = Some(progress.inventory(&previous));
    }
    report
}

/// A `Cluster` being deleted: what `spec.deletionPolicy` says, the finalizer removed, and this
/// process's memory of it dropped.
async fn delete(cluster: &Cluster, ctx: &Context) -> Result<Action> {
    let name = cluster.name_any();
    if finalizer::has_finalizer(cluster) {
        let deleted = finalizer::finalize(&ctx.client, cluster).await?;
        ctx.metrics.pruned.inc_by(deleted as u64);
        tracing::info!(
            policy = match cluster.spec.deletion_policy {
                vworkspace_core::crd::DeletionPolicy::Orphan => "Orphan",
                vworkspace_core::crd::DeletionPolicy::Delete => "Delete",
            },
            deleted,
            "Cluster deleted; finalizer removed"
        );
    }
    ctx.forget(&name, &cluster.spec.cluster_id);
    Ok(Action::await_change())
}

async fn finish(
    cluster: &Cluster,
    ctx: &Context,
    report: PassReport,
    started: Instant,
    interval: Duration,
) -> Result<Action> {
    let name = cluster.name_any();
    let now = (ctx.clock)();
    let previous = cluster.status.as_ref();
    let next = status::next_status(previous, &report, cluster.metadata.generation, now);
    let failure = report.failure();
    match failure {
        Some(reason) => {
            tracing::warn!(
                reason,
                commit = report.attempted_commit.as_deref().unwrap_or("none"),
                detail = report.failure_message().unwrap_or_default(),
                "pass failed"
            )
        }
        None => {
            tracing::info!(
                commit = report.attempted_commit.as_deref().unwrap_or("none"),
                applied = report.writes.0,
                pruned = report.writes.1,
                duration_ms = started.elapsed().as_millis() as u64,
                "pass succeeded"
            )
        }
    }
    if previous != Some(&next) {
        write_status(&ctx.client, &name, &next).await?;
    }
    if let Some(event) = status::event_for(previous, &next, &report, reference_of(cluster), now) {
        // An Event is best effort: losing one must not fail a pass that already wrote its status.
        let api: Api<Event> = Api::namespaced(ctx.client.clone(), status::EVENT_NAMESPACE);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(error = %e, "cannot record an Event");
        }
    }
    if let Some((serial, expires)) = report.release_expires {
        ctx.metrics
            .release_expiry
            .get_or_create(&crate::metrics::ClusterLabel {
                cluster: name.clone(),
            })
            .set(expires.as_millisecond() as f64 / 1000.0);
        let warned = ctx.with_state(&name, |s| s.expiry_warned == Some(serial));
        if !warned
            && let Some(event) = status::expiry_event(
                &report,
                &cluster.spec.cluster_id,
                reference_of(cluster),
                now,
            )
        {
            let api: Api<Event> = Api::namespaced(ctx.client.clone(), status::EVENT_NAMESPACE);
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => ctx.with_state(&name, |s| s.expiry_warned = Some(serial)),
                Err(e) => tracing::warn!(cluster = %name, error = %e, "cannot record an Event"),
            }
        }
    }
    ctx.metrics
        .record_pass(started.elapsed().as_secs_f64(), failure);
    match failure {
        None => {
            ctx.with_state(&name, |s| s.failures = 0);
            Ok(Action::requeue(retry::requeue_after(
                None,
                0,
                interval,
                retry::random_jitter(),
            )))
        }
        Some(reason) => Err(Error::PassFailed { reason }),
    }
}

async fn write_status(client: &Client, name: &str, status: &ClusterStatus) -> Result<()> {
    let api: Api<Cluster> = Api::all(client.clone());
    let body = serde_json::json!({
        "apiVersion": Cluster::api_version(&()),
        "kind": Cluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(apply::FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::Kube {
        action: format!("write status of Cluster {name}"),
        source,
    })?;
    Ok(())
}

/// When a `Cluster` whose pass failed with `error` runs again ([`retry::requeue_after`]): at its
/// interval when the failure is permanent (the `Cluster` is `Stalled`), after a back-off that grows
/// with consecutive transient failures otherwise; jittered.
pub fn retry_after(cluster: &Cluster, error: &Error, ctx: &Context) -> Duration {
    let reason = error.reason();
    let interval = vworkspace_core::crd::parse_interval(&cluster.spec.source.interval)
        .unwrap_or(Duration::from_secs(300));
    let failures = ctx.with_state(&cluster.name_any(), |s| {
        if retry::is_permanent(reason) {
            // A stall is not a streak of transient failures: the next transient one starts at 5 s.
            s.failures = 0;
        } else {
            s.failures = s.failures.saturating_add(1);
        }
        s.failures
    });
    let after = retry::requeue_after(Some(reason), failures, interval, retry::random_jitter());
    tracing::debug!(
        reason,
        failures,
        stalled = retry::is_permanent(reason),
        after_seconds = after.as_secs(),
        "requeued"
    );
    after
}

/// The controller's error policy: [`retry_after`].
#[tracing::instrument(skip_all, fields(cluster = %cluster.name_any()))]
pub fn error_policy(cluster: Arc<Cluster>, error: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(retry_after(&cluster, error, &ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_pass_is_reused_only_for_the_same_verdict_namespaces_and_live_objects() {
        let verdict = Arc::new(1u8);
        let managed = vec![vworkspace_core::crd::ManagedNamespace {
            name: "org-a".into(),
            allowed_operation_templates: vec![],
        }];
        let last = UnchangedPass {
            verdict: verdict.clone(),
            managed: managed.clone(),
            live_version: 7,
            inventory: vec![],
            apply: StepOutcome::Succeeded,
            applied: None,
        };
        assert!(unchanged_since(Some(&last), &verdict, &managed, Some(7)).is_some());
        assert!(unchanged_since(None, &verdict, &managed, Some(7)).is_none());
        // A new verdict (another commit, other trust inputs), even an equal one.
        assert!(unchanged_since(Some(&last), &Arc::new(1u8), &managed, Some(7)).is_none());
        assert!(unchanged_since(Some(&last), &verdict, &[], Some(7)).is_none());
        // A live object changed (or was edited by hand) since the pass read them.
        assert!(unchanged_since(Some(&last), &verdict, &managed, Some(8)).is_none());
        // No watched stores (`run --once`): always a full pass.
        assert!(unchanged_since(Some(&last), &verdict, &managed, None).is_none());
    }
}
