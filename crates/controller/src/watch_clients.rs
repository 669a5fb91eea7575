//! Clients for the long-lived watches that grow with the estate (one HelmRelease watch per managed
//! namespace), over HTTP/2 and pooled.
//!
//! kube-rs's client speaks HTTP/1.1 only, where every open watch holds a TLS connection of its own
//! with its read and write buffers: about 50 KiB each, 50 MiB at 1,000 namespaces. Over HTTP/2 a watch
//! is a stream on a shared connection. hyper keeps one HTTP/2 connection per host and per client,
//! and a server caps the streams on one connection (Go's default is 250; a request over the cap
//! waits for a free stream, which for a watch is forever). So this pool gives each watch a lease on
//! one of several clients, each carrying at most [`WATCHES_PER_CONNECTION`] watches, and opens a new
//! client when all are full. A server that does not offer HTTP/2 (ALPN) gets HTTP/1.1 from the same
//! clients: one connection per watch, as before.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::{Client, Config};
use tower::ServiceBuilder;

/// The most watches one client (one HTTP/2 connection) carries: well under Go's default cap of 250
/// streams a connection, which kube-apiserver keeps or raises.
pub const WATCHES_PER_CONNECTION: usize = 100;

/// How often an idle HTTP/2 connection is pinged, and how long a ping may go unanswered before the
/// connection is dropped and its watches re-established (client-go's defaults: 30 s and 15 s). A
/// watch on a dead connection would otherwise wait for TCP to give up.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// Builds one more client; the pool calls it when every client is full.
type MakeClient = Box<dyn Fn() -> Result<Client, kube::Error> + Send + Sync>;

/// The watch clients, and how many watches each carries.
#[derive(Clone)]
pub struct WatchClients {
    inner: Arc<Pool>,
}

struct Pool {
    /// `None`: every watch shares the one client in `slots` (a proxy, or a test's fake API).
    make: Option<MakeClient>,
    slots: Mutex<Vec<Slot>>,
}

struct Slot {
    client: Client,
    watches: usize,
}

impl std::fmt::Debug for WatchClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchClients")
            .field("connections", &self.connections())
            .finish()
    }
}

/// A watch's hold on a client; the client's count goes down when the lease is dropped (the watch's
/// task ended or was aborted).
pub struct Lease {
    pool: WatchClients,
    slot: usize,
    client: Client,
}

impl Lease {
    /// The client to watch with.
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.with(|slots| {
            if let Some(slot) = slots.get_mut(self.slot) {
                slot.watches = slot.watches.saturating_sub(1);
            }
        });
    }
}

/// Which client a new watch goes to: the first with room, or `None` when a new one is needed.
pub fn slot_with_room(watches: &[usize], per_connection: usize) -> Option<usize> {
    watches.iter().position(|&n| n < per_connection)
}

impl WatchClients {
    /// HTTP/2 clients built from `config` (the same credentials, CA and server as the main client).
    /// With a proxy configured, every watch uses `main` instead: kube-rs's client handles proxies.
    pub fn http2(config: Config, main: Client) -> Self {
        if config.proxy_url.is_some() {
            return Self::shared(main);
        }
        Self::built_by(Box::new(move || http2_client(&config)))
    }

    /// Clients built by `make`, one more whenever every client carries its
    /// [`WATCHES_PER_CONNECTION`].
    fn built_by(make: MakeClient) -> Self {
        WatchClients {
            inner: Arc::new(Pool {
                make: Some(make),
                slots: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Every watch on `client` (a proxy; the tests' fake API server).
    pub fn shared(client: Client) -> Self {
        WatchClients {
            inner: Arc::new(Pool {
                make: None,
                slots: Mutex::new(vec![Slot { client, watches: 0 }]),
            }),
        }
    }

    /// A client for one more watch. When a new client cannot be built (a credential file unreadable
    /// for a moment), the watch shares the least loaded one rather than not running.
    pub fn lease(&self) -> Result<Lease, kube::Error> {
        let (slot, client) = self.with(|slots| {
            let counts: Vec<usize> = slots.iter().map(|s| s.watches).collect();
            let chosen = match (
                &self.inner.make,
                slot_with_room(&counts, WATCHES_PER_CONNECTION),
            ) {
                (_, Some(_)) | (None, None) => slot_or_least_loaded(&counts, None),
                (Some(make), None) => match make() {
                    Ok(client) => {
                        slots.push(Slot { client, watches: 0 });
                        Ok(slots.len() - 1)
                    }
                    Err(e) => slot_or_least_loaded(&counts, Some(e)),
                },
            }?;
            let slot = &mut slots[chosen];
            slot.watches += 1;
            Ok::<_, kube::Error>((chosen, slot.client.clone()))
        })?;
        Ok(Lease {
            pool: self.clone(),
            slot,
            client,
        })
    }

    /// How many clients (HTTP/2 connections, when the server speaks it) the watches use.
    pub fn connections(&self) -> usize {
        self.with(|slots| slots.iter().filter(|s| s.watches > 0).count())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<Slot>) -> T) -> T {
        let mut slots = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut slots)
    }
}

/// The first slot with room under the cap, else the least loaded; `error` when there is none.
fn slot_or_least_loaded(
    counts: &[usize],
    error: Option<kube::Error>,
) -> Result<usize, kube::Error> {
    slot_with_room(counts, WATCHES_PER_CONNECTION)
        .or_else(|| (0..counts.len()).min_by_key(|&i| counts[i]))
        .ok_or_else(|| {
            error.unwrap_or_else(|| kube::Error::Service("no client to watch with".into()))
        })
}

/// A client like kube-rs's own (base URI, credentials, impersonation headers, the same TLS trust)
/// whose connections offer HTTP/2 by ALPN and keep it alive with pings.
fn http2_client(config: &Config) -> Result<Client, kube::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let tls = config.rustls_client_config()?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => builder.with_server_name_resolver(
            hyper_rustls::FixedServerNameResolver::new(name.clone().try_into().map_err(|_| {
                kube::Error::Service(format!("invalid TLS server name {name:?}").into())
            })?),
        ),
        None => builder,
    };
    let connector = builder.enable_all_versions().wrap_connector(http);
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_INTERVAL)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_goes_to_the_first_client_with_room_and_a_new_one_when_all_are_full() {
        let cap = WATCHES_PER_CONNECTION;
        assert_eq!(slot_with_room(&[], cap), None, "no client yet");
        assert_eq!(slot_with_room(&[cap, 3], cap), Some(1));
        assert_eq!(slot_with_room(&[cap - 1, 0], cap), Some(0));
        assert_eq!(slot_with_room(&[cap, cap], cap), None);
        // A client that lost watches is filled again before a new one opens.
        assert_eq!(slot_with_room(&[cap, 40, cap], cap), Some(1));
    }

    #[test]
    fn without_a_way_to_build_more_the_least_loaded_client_is_shared() {
        let cap = WATCHES_PER_CONNECTION;
        assert_eq!(slot_or_least_loaded(&[cap + 5, cap], None).ok(), Some(1));
        assert!(slot_or_least_loaded(&[], None).is_err());
    }

    fn leases(pool: &WatchClients, n: usize) -> Vec<Lease> {
        (0..n)
            .map(|_| pool.lease())
            .collect::<Result<_, _>>()
            .expect("a client is leased")
    }

    #[tokio::test]
    async fn a_shared_client_carries_every_watch() {
        let pool = WatchClients::shared(crate::testing::FakeApi::new().client());
        assert_eq!(pool.connections(), 0);
        let all = leases(&pool, WATCHES_PER_CONNECTION + 1);
        assert_eq!(pool.connections(), 1, "a shared pool never opens another");
        assert_eq!(pool.with(|s| s[0].watches), WATCHES_PER_CONNECTION + 1);
        drop(all);
        assert_eq!(
            pool.connections(),
            0,
            "dropped leases give their place back"
        );
    }

    #[tokio::test]
    async fn a_client_is_opened_for_each_full_hundred_and_freed_places_are_reused() {
        let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = built.clone();
        let api = crate::testing::FakeApi::new();
        let pool = WatchClients::built_by(Box::new(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(api.client())
        }));
        let mut first = leases(&pool, 2 * WATCHES_PER_CONNECTION + 1);
        assert_eq!(built.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(pool.connections(), 3);
        // Watches of the first client end (their namespaces left); new ones fill it again.
        let ended: Vec<Lease> = first.drain(..10).collect();
        assert!(ended.iter().all(|l| l.slot == 0));
        drop(ended);
        let again = leases(&pool, 10);
        assert!(
            again.iter().all(|l| l.slot == 0),
            "the freed places are reused"
        );
        assert_eq!(
            built.load(std::sync::atomic::Ordering::Relaxed),
            3,
            "no fourth client"
        );
        drop((first, again));
        assert_eq!(pool.connections(), 0);
    }
}
