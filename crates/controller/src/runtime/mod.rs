//! `run`: the operator process. Finds the API server as kubectl does (`KUBECONFIG`, then the in-cluster
//! service account), serves the probes and metrics, optionally waits for the leader Lease, then runs the
//! `Cluster` controller until SIGTERM or Ctrl-C. `--once` instead reconciles every `Cluster` one time and
//! reports whether all passed.

pub mod cert_expiry;
pub mod certs;
mod controllers;
pub mod leader;
pub mod probes;
mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::api::{ListParams, ObjectList};
use kube::{Api, Client};

pub use controllers::controllers;

use crate::cluster::{self, Context, Settings};
use crate::error::Error;
use crate::metrics::Metrics;
use vworkspace_core::crd::Cluster;

/// The options of `run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The operator's namespace (Secrets, ConfigMaps, Lease).
    pub namespace: String,
    /// The Git cache directory.
    pub cache_dir: PathBuf,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    /// Where `/healthz` and `/readyz` are served.
    pub health_addr: SocketAddr,
    /// Whether to hold a Lease before reconciling.
    pub leader_election: bool,
    /// One pass over every `Cluster`, then exit.
    pub once: bool,
    /// Fetch limits.
    pub fetch: crate::source::FetchOptions,
    /// Where Velero runs (Backups and Restores are created there).
    pub velero_namespace: String,
    /// Where the admission webhook listens, with the directory holding `tls.crt` and `tls.key`
    /// (a mounted Secret); no webhook when `None`.
    pub webhook: Option<(SocketAddr, PathBuf)>,
    /// Where the admission webhook listens with a certificate the operator makes and renews itself
    /// ([`certs`]: its own CA in a Secret, the caBundle set on its webhook configuration); no such
    /// webhook when `None`.
    pub webhook_self_managed: Option<(SocketAddr, certs::CertOptions)>,
    /// Where the push receiver listens, with its token ([`crate::receiver`]); off when `None`.
    pub receiver: Option<(SocketAddr, vworkspace_core::secrets::SecretValue)>,
    /// Reconcile only the `Cluster`s this label selector picks (and their children): sharding, as
    /// Flux's `--watch-label-selector`. Every `Cluster` when `None`.
    pub cluster_selector: Option<String>,
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Reconciles every `Cluster` once; true when every pass succeeded.
pub async fn once(ctx: Arc<Context>, selector: Option<&str>) -> Result<bool, Error> {
    let clusters = list_clusters(&ctx.client, selector).await?;
    let mut all_passed = true;
    for cluster in clusters.items {
        let name = kube::ResourceExt::name_any(&cluster);
        match cluster::reconcile(Arc::new(cluster), ctx.clone()).await {
            Ok(_) => println!("Cluster {name}: Ready"),
            Err(e) => {
                all_passed = false;
                println!("Cluster {name}: not ready ({})", e.reason());
            }
        }
    }
    Ok(all_passed)
}

/// The `Cluster`s `selector` picks (all without one); a selector the API server refuses is named.
async fn list_clusters(
    client: &Client,
    selector: Option<&str>,
) -> Result<ObjectList<Cluster>, Error> {
    let api: Api<Cluster> = Api::all(client.clone());
    let params = match selector {
        Some(selector) => ListParams::default().labels(selector),
        None => ListParams::default(),
    };
    api.list(&params).await.map_err(|source| Error::Kube {
        action: match selector {
            Some(selector) => format!("list Clusters with --watch-label-selector '{selector}'"),
            None => "list Clusters".into(),
        },
        source,
    })
}

/// Runs the operator. Returns whether it ended well (for `--once`: every pass succeeded). After
/// SIGTERM it returns within [`SHUTDOWN_GRACE`] even mid-pass; the caller then shuts its runtime
/// down with [`SHUTDOWN_RUNTIME_GRACE`] so that a fetch stuck on the blocking pool cannot hold the
/// process.
///
/// In order: connect, (`--once`: one pass each, then return), serve the probes, reach the API
/// server, start the webhook, report ready, watch for the stop, take the leader Lease, then run the
/// controllers until the stop (and at most [`SHUTDOWN_GRACE`] after it).
pub async fn run(options: RunOptions) -> Result<bool, Error> {
    // Two rustls crypto providers are compiled in (kube's ring, reqwest's own); the process-level
    // default must be chosen, or the first TLS client panics. Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let connect = |source| Error::Kube {
        action: "connect to the API server (KUBECONFIG, then in-cluster)".into(),
        source,
    };
    let config = kube::Config::infer()
        .await
        .map_err(|e| connect(kube::Error::InferConfig(e)))?;
    let client = Client::try_from(config.clone()).map_err(connect)?;
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(context(&options, client.clone(), metrics.clone()));
    match crate::commit_status::Sender::spawn(
        client.clone(),
        options.namespace.clone(),
        metrics.clone(),
    ) {
        Ok(sender) => {
            let _ = ctx.commit_status.set(sender);
        }
        Err(problem) => tracing::warn!(%problem, "commit statuses disabled"),
    }
    if options.once {
        return once(ctx, options.cluster_selector.as_deref()).await;
    }
    let ready = serve_probes(&options, metrics.clone());
    start_servers(&options, &client, &metrics).await?;
    ready.store(true, Ordering::Relaxed);
    let (stop_tx, stop_rx) = stop_on_signal();
    if !options.leader_election {
        // Without leader election this process is the active one.
        metrics.leader.set(1);
    }
    if options.leader_election && !lead(&options, &client, &ctx, &metrics, &stop_tx).await {
        return Ok(true);
    }
    let children = Arc::new(child_context(&options, &client, &ctx, &metrics));
    cut_passes_after_stop(&ctx, stop_rx.clone());
    let watch_clients = crate::watch_clients::WatchClients::http2(config, client.clone());
    let running = controllers(client, watch_clients, ctx, children, stop_rx.clone());
    until_done_or_grace(running, stop_rx).await;
    Ok(true)
}

/// Checks the API server, then starts the webhook servers and the push receiver that `options` ask
/// for, and refuses a `--watch-label-selector` the API server refuses.
async fn start_servers(
    options: &RunOptions,
    client: &Client,
    metrics: &Arc<Metrics>,
) -> Result<(), Error> {
    client
        .apiserver_version()
        .await
        .map_err(|source| Error::Kube {
            action: "reach the API server".into(),
            source,
        })?;
    if let Some((addr, cert_dir)) = options.webhook.clone() {
        webhook::start_webhook(client.clone(), addr, cert_dir, metrics.clone()).await?;
    }
    if let Some((addr, cert_options)) = options.webhook_self_managed.clone() {
        webhook::start_webhook_self_managed(client.clone(), addr, cert_options, metrics.clone())
            .await?;
    }
    if let Some((addr, token)) = options.receiver.clone() {
        crate::receiver::start(addr, token, client.clone(), metrics.clone()).await?;
    }
    if let Some(selector) = options.cluster_selector.as_deref() {
        // A selector the API server refuses would leave every watch retrying: refuse it now.
        list_clusters(client, Some(selector)).await?;
    }
    Ok(())
}

/// The children controllers' context: this process's shard of `Cluster`s, the declared set `ctx`
/// keeps.
fn child_context(
    options: &RunOptions,
    client: &Client,
    ctx: &Context,
    metrics: &Arc<Metrics>,
) -> crate::children::ChildContext {
    let mut caches = crate::children::Caches::default();
    caches.cluster_selector = options.cluster_selector.clone();
    crate::children::ChildContext {
        client: client.clone(),
        namespace: options.namespace.clone(),
        velero_namespace: options.velero_namespace.clone(),
        limits: vworkspace_core::limits::Limits::default(),
        clock: jiff::Timestamp::now,
        declared: ctx.declared.clone(),
        metrics: metrics.clone(),
        caches,
        access_lost: ctx.access_lost.clone(),
    }
}

/// Waits for `running` to end, or after the stop for [`SHUTDOWN_GRACE`] at most.
async fn until_done_or_grace(
    running: impl std::future::Future<Output = ()>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
) {
    tokio::pin!(running);
    tokio::select! {
        _ = &mut running => {}
        _ = async {
            stopped(stop_rx).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            // A pass stuck on a stalled API server or Git server must not hold the Pod past its
            // termination grace: dropped here, it is taken up again by the next process (or leader).
            tracing::warn!(
                grace_seconds = SHUTDOWN_GRACE.as_secs(),
                "running reconciles did not finish in time after the stop; abandoning them"
            );
        }
    }
}

/// The `Cluster` reconciler's context for `options`, fenced by the leader Lease when elected.
fn context(options: &RunOptions, client: Client, metrics: Arc<Metrics>) -> Context {
    let settings = Settings {
        namespace: options.namespace.clone(),
        cache_dir: options.cache_dir.clone(),
        fetch: options.fetch.clone(),
        limits: vworkspace_core::limits::Limits::default(),
        pass_timeout: cluster::DEFAULT_PASS_TIMEOUT,
    };
    let mut ctx = Context::new(client, settings, metrics);
    if options.leader_election {
        // No write until the Lease is held, none once it is no longer certainly held.
        ctx.fence = crate::fence::Fence::leased();
    }
    ctx
}

/// Serves `/healthz`, `/readyz` and `/metrics` (on one address or two); the returned flag makes
/// `/readyz` answer ready.
fn serve_probes(options: &RunOptions, metrics: Arc<Metrics>) -> Arc<AtomicBool> {
    let ready = Arc::new(AtomicBool::new(false));
    let probes = crate::runtime::probes::Probes {
        ready: ready.clone(),
        metrics,
    };
    let mut servers = vec![options.health_addr];
    if options.metrics_addr != options.health_addr {
        servers.push(options.metrics_addr);
    }
    for addr in servers {
        let probes = probes.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::runtime::probes::serve(addr, probes).await {
                tracing::error!(%addr, error = %e, "cannot serve probes");
            }
        });
    }
    ready
}

/// The stop: turns true on SIGTERM or Ctrl-C (or when the sender is used, as on a lost Lease). A
/// watch channel, not a Notify: a stop that happens before someone waits is still seen.
fn stop_on_signal() -> (
    Arc<tokio::sync::watch::Sender<bool>>,
    tokio::sync::watch::Receiver<bool>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let signalled = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = signalled.send(true);
    });
    (stop_tx, stop_rx)
}

/// Resolves once `stop` turned true (or its sender is gone).
pub(crate) async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Waits for the leader Lease (false: the stop came first), then renews it in the background. The
/// fence stops every write the moment the Lease is no longer certainly held (running passes are
/// dropped, not finished); then the process stops (the Deployment restarts it as a follower), as
/// client-go's elector does.
async fn lead(
    options: &RunOptions,
    client: &Client,
    ctx: &Context,
    metrics: &Arc<Metrics>,
    stop: &Arc<tokio::sync::watch::Sender<bool>>,
) -> bool {
    let me = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("vworkspace-{}", std::process::id()));
    let elector =
        crate::runtime::leader::Elector::new(client.clone(), &options.namespace, me.clone());
    tracing::info!(identity = %me, "waiting for the leader Lease");
    let timing = crate::runtime::leader::TIMING;
    if !crate::runtime::leader::acquire(&elector, &ctx.fence, &timing, stopped(stop.subscribe()))
        .await
    {
        return false;
    }
    metrics.leader.set(1);
    tracing::info!(identity = %me, "leading");
    let (lost, fence, leader_metrics) = (stop.clone(), ctx.fence.clone(), metrics.clone());
    tokio::spawn(async move {
        crate::runtime::leader::keep(&elector, &fence, &timing).await;
        leader_metrics.leader.set(0);
        let _ = lost.send(true);
    });
    true
}

/// On the stop, running passes get [`PASS_STOP_GRACE`] to finish; then they are cut, and record
/// their status (with what they wrote) before [`SHUTDOWN_GRACE`] ends everything.
fn cut_passes_after_stop(ctx: &Context, stop: tokio::sync::watch::Receiver<bool>) {
    let stopping = ctx.stopping.clone();
    tokio::spawn(async move {
        stopped(stop).await;
        stopping.close_at(std::time::Instant::now() + PASS_STOP_GRACE);
    });
}

/// How long a running `Cluster` pass may take to finish after SIGTERM before it is cut (its status,
/// with what it wrote, is then recorded): leaves [`SHUTDOWN_GRACE`] time for that write.
pub const PASS_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long running reconciles may take to finish after SIGTERM (or a lost Lease) before they are
/// dropped: well inside the Pod's 30 s termination grace, with time left for the runtime to stop
/// ([`SHUTDOWN_RUNTIME_GRACE`]).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// How long the process waits, once `run` returned, for blocking work (a fetch on the blocking pool)
/// before it exits anyway; the caller passes it to `Runtime::shutdown_timeout`.
pub const SHUTDOWN_RUNTIME_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// How many ApplicationInstances (and, separately, Operations) are reconciled at once: each reconcile
/// holds a decrypted value set and a few API responses, so the bound is what keeps memory flat when
/// thousands of objects are queued at once (a restart, a release touching every instance).
pub const CHILD_CONCURRENCY: u16 = 16;

/// How often the child controllers look whether a Cluster pass published a new release (then every
/// object is reconciled again at once, instead of at its requeue).
const DECLARED_POLL: std::time::Duration = std::time::Duration::from_secs(1);
