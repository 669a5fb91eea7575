//! `run`: the operator process. Finds the API server as kubectl does (`KUBECONFIG`, then the in-cluster
//! service account), serves the probes and metrics, optionally waits for the leader Lease, then runs the
//! `Cluster` controller until SIGTERM or Ctrl-C. `--once` instead reconciles every `Cluster` one time and
//! reports whether all passed.

pub mod cert_expiry;
pub mod certs;
pub mod leader;
pub mod probes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Api, Client, ResourceExt};

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
pub async fn once(ctx: Arc<Context>) -> Result<bool, Error> {
    let api: Api<Cluster> = Api::all(ctx.client.clone());
    let clusters = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            action: "list Clusters".into(),
            source,
        })?;
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

/// Runs the operator. Returns whether it ended well (for `--once`: every pass succeeded). After
/// SIGTERM it returns within [`SHUTDOWN_GRACE`] even mid-pass; the caller then shuts its runtime
/// down with [`SHUTDOWN_RUNTIME_GRACE`] so that a fetch stuck on the blocking pool cannot hold the
/// process.
pub async fn run(options: RunOptions) -> Result<bool, Error> {
    // Two rustls crypto providers are compiled in (kube's ring, reqwest's own); the process-level
    // default must be chosen, or the first TLS client panics. Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await.map_err(|source| Error::Kube {
        action: "connect to the API server (KUBECONFIG, then in-cluster)".into(),
        source,
    })?;
    let metrics = Arc::new(Metrics::default());
    let settings = Settings {
        namespace: options.namespace.clone(),
        cache_dir: options.cache_dir.clone(),
        fetch: options.fetch.clone(),
        limits: vworkspace_core::limits::Limits::default(),
        pass_timeout: cluster::DEFAULT_PASS_TIMEOUT,
    };
    let mut ctx = Context::new(client.clone(), settings, metrics.clone());
    if options.leader_election {
        // No write until the Lease is held, none once it is no longer certainly held.
        ctx.fence = crate::fence::Fence::leased();
    }
    let ctx = Arc::new(ctx);
    if options.once {
        return once(ctx).await;
    }

    let ready = Arc::new(AtomicBool::new(false));
    let probes = crate::runtime::probes::Probes {
        ready: ready.clone(),
        metrics: metrics.clone(),
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
    client
        .apiserver_version()
        .await
        .map_err(|source| Error::Kube {
            action: "reach the API server".into(),
            source,
        })?;
    if let Some((addr, cert_dir)) = options.webhook.clone() {
        start_webhook(client.clone(), addr, cert_dir, metrics.clone()).await?;
    }
    if let Some((addr, cert_options)) = options.webhook_self_managed.clone() {
        start_webhook_self_managed(client.clone(), addr, cert_options, metrics.clone()).await?;
    }
    ready.store(true, Ordering::Relaxed);

    // A watch channel, not a Notify: a stop that happens before someone waits is still seen.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        });
    }
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    if !options.leader_election {
        // Without leader election this process is the active one.
        metrics.leader.set(1);
    }
    if options.leader_election {
        let me = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("vworkspace-{}", std::process::id()));
        let elector =
            crate::runtime::leader::Elector::new(client.clone(), &options.namespace, me.clone());
        tracing::info!(identity = %me, "waiting for the leader Lease");
        let timing = crate::runtime::leader::TIMING;
        if !crate::runtime::leader::acquire(&elector, &ctx.fence, &timing, stopped(stop_rx.clone()))
            .await
        {
            return Ok(true);
        }
        metrics.leader.set(1);
        tracing::info!(identity = %me, "leading");
        // Renew in the background. The fence stops every write the moment the Lease is no longer
        // certainly held (running passes are dropped, not finished); then the process stops (the
        // Deployment restarts it as a follower), as client-go's elector does.
        let lost = stop_tx.clone();
        let fence = ctx.fence.clone();
        let leader_metrics = metrics.clone();
        tokio::spawn(async move {
            crate::runtime::leader::keep(&elector, &fence, &timing).await;
            leader_metrics.leader.set(0);
            let _ = lost.send(true);
        });
    }

    let children = Arc::new(crate::children::ChildContext {
        client: client.clone(),
        namespace: options.namespace.clone(),
        velero_namespace: options.velero_namespace.clone(),
        limits: vworkspace_core::limits::Limits::default(),
        clock: jiff::Timestamp::now,
        declared: ctx.declared.clone(),
        metrics: metrics.clone(),
        caches: crate::children::Caches::default(),
    });
    {
        // On the stop, running passes get PASS_STOP_GRACE to finish; then they are cut, and record
        // their status (with what they wrote) before SHUTDOWN_GRACE ends everything.
        let stopping = ctx.stopping.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            stopped(stop).await;
            stopping.close_at(std::time::Instant::now() + PASS_STOP_GRACE);
        });
    }
    let running = controllers(client, ctx, children, stop_rx.clone());
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
    Ok(true)
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
    ctx: Arc<Context>,
    children: Arc<crate::children::ChildContext>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let fence = ctx.fence.clone();
    let (namespace_store, namespace_writer) = reflector::store::<Namespace>();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // Signalled on every change of a managed namespace: the HelmRelease watches follow the set.
    let namespace_changed = Arc::new(tokio::sync::Notify::new());
    let namespace_changes = {
        let changed = namespace_changed.clone();
        watcher(
            namespaces,
            watcher::Config::default().labels(&cluster::namespaces::selector()),
        )
        .default_backoff()
        .modify(lean)
        .reflect(namespace_writer)
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
    };
    let cluster_controller = lean_controller(Api::<Cluster>::all(client.clone()), None);
    // The Cluster controller's own reflector store, shared with the children (no second watch).
    let cluster_store = cluster_controller.store();
    let mut caches = crate::children::Caches::new(cluster_store.clone(), namespace_store.clone());
    let helm_releases = crate::children::watches::HelmReleaseWatches::default();
    caches.helm_releases = Some(helm_releases.clone());
    // Built here so that their stores exist for the Cluster pass (which reads the live objects of
    // a no-op pass from them instead of listing); they fill once the controllers run.
    let live_changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let instance_controller = lean_controller(
        Api::<vworkspace_core::crd::ApplicationInstance>::all(client.clone()),
        Some(live_changes.clone()),
    );
    let operation_controller = lean_controller(
        Api::<vworkspace_core::crd::Operation>::all(client.clone()),
        Some(live_changes.clone()),
    );
    ctx.metrics.observed.watch(crate::observed::ObservedStores {
        clusters: cluster_store.clone(),
        instances: instance_controller.store(),
        operations: operation_controller.store(),
    });
    ctx.set_live_stores(cluster::apply::LiveStores {
        instances: instance_controller.store(),
        operations: operation_controller.store(),
        changes: live_changes,
    });
    // Deletions, from a metadata-only watch (names only): forget what the process held for them.
    let deletions = {
        let (ctx, caches, store) = (ctx.clone(), caches.clone(), cluster_store.clone());
        watcher(
            Api::<kube::core::PartialObjectMeta<Cluster>>::all(client.clone()),
            watcher::Config::default(),
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
    };
    let children = {
        let mut shared = (*children).clone();
        shared.caches = caches;
        Arc::new(shared)
    };
    let (trigger_tx, trigger_rx) = futures::channel::mpsc::unbounded();
    let helm_release_watches = helm_releases.run(
        client.clone(),
        namespace_store.clone(),
        namespace_changed,
        trigger_tx,
        stopped(stop.clone()),
    );
    let clusters = cluster_controller
        .reconcile_all_on(namespace_changes)
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(cluster::reconcile, cluster::error_policy, ctx.clone())
        .inspect(counted(ctx.metrics.clone(), "Cluster"))
        .for_each(log_result);
    let config = controller::Config::default().concurrency(CHILD_CONCURRENCY);
    let instances = {
        let children = children.clone();
        let stop = stop.clone();
        let (cluster_store, namespace_store) = (cluster_store.clone(), namespace_store.clone());
        let config = config.clone();
        let fence = fence.clone();
        async move {
            // Before both stores hold their first list, every namespace would look unmanaged.
            let ready = async {
                let _ = cluster_store.wait_until_ready().await;
                let _ = namespace_store.wait_until_ready().await;
            };
            tokio::select! {
                () = ready => {}
                () = stopped(stop.clone()) => return,
            }
            instance_controller
                .with_config(config)
                .reconcile_all_on(
                    declared_changes(children.declared.clone()).take_until(stopped(stop.clone())),
                )
                .reconcile_on(trigger_rx.take_until(stopped(stop.clone())))
                .graceful_shutdown_on(stopped(stop.clone()))
                .run(
                    fenced(fence.clone(), crate::children::instance::reconcile),
                    crate::children::instance::error_policy,
                    children.clone(),
                )
                .inspect(counted(children.metrics.clone(), "ApplicationInstance"))
                .for_each(log_result)
                .await;
        }
    };
    let operations = async move {
        let ready = async {
            let _ = cluster_store.wait_until_ready().await;
            let _ = namespace_store.wait_until_ready().await;
        };
        tokio::select! {
            () = ready => {}
            () = stopped(stop.clone()) => return,
        }
        operation_controller
            .with_config(config)
            .reconcile_all_on(
                declared_changes(children.declared.clone()).take_until(stopped(stop.clone())),
            )
            .graceful_shutdown_on(stopped(stop))
            .run(
                fenced(fence.clone(), crate::children::operation::reconcile),
                crate::children::operation::error_policy,
                children.clone(),
            )
            .inspect(counted(children.metrics.clone(), "Operation"))
            .for_each(log_result)
            .await;
    };
    tokio::join!(
        clusters,
        instances,
        operations,
        deletions,
        helm_release_watches
    );
}

/// Drops what no reconcile reads from a watched object before it is stored: `managedFields` (which
/// repeat the shape of the whole object, a third or more of its size). Ownership checks read them
/// from objects fetched by name ([`cluster::apply::get_unlisted`]), never from a store.
fn lean<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// A controller over every `K`, its store kept lean ([`lean`]). With `changes`, every event that
/// changes what a `Cluster` pass reads of an object ([`cluster::apply::changes_what_a_pass_reads`],
/// judged against the stored object before the event replaces it) moves the counter.
fn lean_controller<K>(
    api: Api<K>,
    changes: Option<Arc<std::sync::atomic::AtomicU64>>,
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
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
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
            if moved && let Some(counter) = &changes {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            event
        })
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(stream, reader)
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
) -> impl Fn(
    Arc<K>,
    Arc<C>,
) -> futures::future::BoxFuture<'static, Result<kube::runtime::controller::Action, Error>>
where
    F: std::future::Future<Output = Result<kube::runtime::controller::Action, Error>>
        + Send
        + 'static,
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
    watch: &'static str,
) -> impl Fn(&Result<T, controller::Error<R, W>>)
where
    R: std::error::Error + 'static,
    W: std::error::Error + 'static,
{
    move |result| metrics.count_watch_error(watch, result)
}

async fn log_result<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "reconcile ended with an error");
    }
}

/// Serves the admission webhook (on every replica, leader or not) with the allowed templates kept
/// current from a watch on `Cluster`s.
async fn start_webhook(
    client: Client,
    addr: SocketAddr,
    cert_dir: PathBuf,
    metrics: Arc<Metrics>,
) -> Result<(), Error> {
    use crate::children::webhook_server::ReloadingCertificate;
    let certificate = ReloadingCertificate::new(cert_dir.join("tls.crt"), cert_dir.join("tls.key"))
        .map_err(|e| Error::Webhook(e.into()))?;
    let certificate = Arc::new(certificate);
    tokio::spawn(cert_expiry::export(certificate.clone(), metrics));
    let config = crate::children::webhook_server::tls_config(certificate)
        .map_err(|e| Error::Webhook(e.into()))?;
    serve_webhook(client, addr, config).await
}

/// How long a replica waits for its first certificate before it reports ready anyway (the handshakes
/// fail until then, and the API server applies the webhook's failure policy).
pub const FIRST_CERTIFICATE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves the admission webhook with the operator's own certificate ([`certs::keep_current`] on every
/// replica): waits up to [`FIRST_CERTIFICATE_WAIT`] for the first one, so that a replica reports
/// ready once it can answer.
async fn start_webhook_self_managed(
    client: Client,
    addr: SocketAddr,
    options: certs::CertOptions,
    metrics: Arc<Metrics>,
) -> Result<(), Error> {
    let serving = Arc::new(certs::ServingCertificate::default());
    tokio::spawn(cert_expiry::export(serving.clone(), metrics));
    tokio::spawn(certs::keep_current(
        client.clone(),
        options,
        serving.clone(),
    ));
    let config = crate::children::webhook_server::tls_config(serving.clone())
        .map_err(|e| Error::Webhook(e.into()))?;
    serve_webhook(client, addr, config).await?;
    let started = std::time::Instant::now();
    while !serving.is_loaded() && started.elapsed() < FIRST_CERTIFICATE_WAIT {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if !serving.is_loaded() {
        tracing::warn!("no webhook certificate yet; serving without one until it is written");
    }
    Ok(())
}

/// Listens on `addr` and serves the webhook with `config`, the allowed templates kept current from a
/// watch on `Cluster`s.
async fn serve_webhook(
    client: Client,
    addr: SocketAddr,
    config: rustls::ServerConfig,
) -> Result<(), Error> {
    use crate::children::webhook_server::TemplateIndex;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Io {
            what: format!("listen on the webhook address {addr}"),
            source,
        })?;
    let index = Arc::new(TemplateIndex::default());
    let (reader, writer) = kube::runtime::reflector::store::<Cluster>();
    let updates = index.clone();
    tokio::spawn(
        kube::runtime::reflector(
            writer,
            watcher(Api::<Cluster>::all(client), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(move |_| {
            let clusters: Vec<Cluster> = reader.state().iter().map(|c| (**c).clone()).collect();
            updates.update(&clusters);
            async {}
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = crate::children::webhook_server::serve(listener, config, index).await {
            tracing::error!(error = %e, "admission webhook stopped");
        }
    });
    Ok(())
}
