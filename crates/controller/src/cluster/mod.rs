//! The in-cluster reconciler of `Cluster` resources: one entry, [`reconcile`], that runs a pass as
//! the ordered list of named steps [`pass::STEPS`] and then one summarize step that derives `Ready`
//! and writes the status, in the style of Flux's source-controller (`reconcileStorage`,
//! `reconcileSource`, `reconcileArtifact`, then `summarizeAndPatch`):
//!
//! ```text
//! ReadTrust -> FetchAndVerify (blocking pool) -> CheckSerialFloor -> ReleaseNamespaces
//!   -> EnsureNamespaceRbac -> RecordNamespaces -> ReuseUnchanged -> ReadLive -> Write -> Publish
//!   => summarize: status + Event + metrics
//! ```
//!
//! Everything before `Write` only reads: a pass that fails there leaves the cluster as it was and
//! says why in the status, an Event, the log and a metric. The decisions (trust config, managed set,
//! diff, status, Event) are pure functions in [`trust`], [`namespaces`], [`vworkspace_core::plan::diff`] and
//! [`status`]; the steps sequence them and do the I/O.

pub mod conditions;
pub mod finalizer;
pub mod guardrails;
pub mod rbac;

pub mod apply;
pub mod commit_update;
pub mod namespaces;
pub mod pass;
pub mod retry;
pub mod status;
pub mod status_guard;
mod summarize;
pub mod trust;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::source::FetchOptions;
use status::PassReport;
use vworkspace_core::crd::{Cluster, ClusterStatus};
use vworkspace_core::limits::Limits;
use vworkspace_core::pipeline::PassMemo;
use vworkspace_core::reasons as reason;

/// How long a namespace's RBAC, once checked, is trusted before it is read again.
pub const RBAC_RECHECK: Duration = Duration::from_secs(3600);

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
    /// Whether this process took the namespaces the status records as given their RBAC (once, at
    /// its first pass of the Cluster, when `status.namespaceRbac` is this version's digest).
    namespaces_seeded: bool,
    /// The release serial whose coming expiry this process already warned about (one Event each).
    expiry_warned: Option<u64>,
    /// The last pass that found nothing to write ([`pass::UnchangedPass`]).
    unchanged: Option<pass::UnchangedPass>,
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
    /// Where finished passes queue their commit status ([`crate::commit_status`]); unset: none sent.
    pub commit_status: std::sync::OnceLock<crate::commit_status::Sender>,
    /// Writes the passes' Events ([`crate::events`]).
    events: crate::events::EventWriter,
    /// Namespaces where a child controller was refused for lack of rights: their RBAC is checked
    /// again by the next pass ([`crate::access_lost`]). Share it with
    /// [`crate::children::ChildContext::access_lost`].
    pub access_lost: Arc<crate::access_lost::AccessLost>,
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
            commit_status: std::sync::OnceLock::new(),
            events: crate::events::EventWriter::default(),
            access_lost: Arc::default(),
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
            return summarize::summarize_and_patch(
                &cluster,
                &ctx,
                report,
                Instant::now(),
                Duration::ZERO,
            )
            .await;
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
    let timeout = ctx.settings.pass_timeout;
    // The pass: its steps (pass::STEPS), then the summarize step.
    let report = tokio::select! {
        outcome = tokio::time::timeout(timeout, pass::run(&cluster, &ctx, &progress)) => {
            match outcome {
                Ok(report) => report,
                Err(_) => pass::deadline_report(&cluster, timeout, &progress, pass::Cut::Deadline),
            }
        }
        _ = ctx.stopping.lost() => pass::deadline_report(&cluster, timeout, &progress, pass::Cut::Stopping),
    };
    summarize::summarize_and_patch(&cluster, &ctx, report, started, interval).await
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

/// Writes a Cluster's status: a server-side apply under the operator's field manager; for a Cluster
/// whose inventory could not be read ([`ClusterStatus::inventory_unreadable`]), a JSON merge patch
/// that leaves `status.compactInventory` as it is. There, the apply would drop the inventory fields
/// this manager still owns from its last write and keep the rest, an object the API server refuses
/// (`compactInventory.format: Required value`, seen on kube-apiserver 1.36), so the refusal would
/// never reach the status; and the operator must not remove the inventory itself (nothing could be
/// pruned safely after).
async fn write_status(client: &Client, name: &str, status: &ClusterStatus) -> Result<()> {
    let api: Api<Cluster> = Api::all(client.clone());
    let (params, patch) = if status.inventory_unreadable.is_some() {
        // A status is strings, numbers and string-keyed maps: it always serializes to an object.
        let mut fields = match serde_json::to_value(status) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        fields.remove("compactInventory");
        let params = PatchParams {
            field_manager: Some(apply::FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        (
            params,
            Patch::Merge(serde_json::json!({ "status": fields })),
        )
    } else {
        let body = serde_json::json!({
            "apiVersion": Cluster::api_version(&()),
            "kind": Cluster::kind(&()),
            "status": status,
        });
        (
            PatchParams::apply(apply::FIELD_MANAGER).force(),
            Patch::Apply(body),
        )
    };
    api.patch_status(name, &params, &patch)
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
