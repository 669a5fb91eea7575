//! The push receiver: an HTTP endpoint of `run` (its own port, off by default) that turns a forge's
//! verified push event into a pass now, like Flux's `Receiver`.
//!
//! It listens on one path derived from the secret token (`/hook/<sha256>`, see [`hook_path`]), so a
//! scanner without the token finds nothing. A request is rate limited, its body bounded, its
//! signature verified in constant time ([`verify`]); only then is the payload read, and only for the
//! repository URLs and the ref. Every Cluster following that repository at that ref is annotated
//! `reconcile.fluxcd.io/requestedAt` (the leader's watch starts its pass, whichever replica
//! received the push). The payload never decides content: the pass fetches and verifies as always,
//! so a forged or replayed push can at most cause a pass that finds nothing new.

pub mod matching;
pub mod verify;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::metrics::{Metrics, ReceiverLabel};
use verify::{Forge, NotAPush};
use vworkspace_core::crd::{Cluster, RECONCILE_REQUESTED_AT};
use vworkspace_core::secrets::SecretValue;

/// Largest request body read (GitHub caps push payloads at 25 MB, but lists at most 20 commits;
/// a push event is a few KiB to a few hundred).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Requests accepted in a burst, and per second after it (one bucket for the endpoint, taken before
/// any signature is computed, so a flood costs neither CPU nor API requests).
pub const RATE_BURST: f64 = 30.0;
/// See [`RATE_BURST`].
pub const RATE_PER_SECOND: f64 = 10.0;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Headers and body must arrive within this.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 20;

/// The path a token serves under: `/hook/` and the hex SHA-256 of `vworkspace-receiver:` followed
/// by the token (`printf 'vworkspace-receiver:%s' "$TOKEN" | sha256sum`).
pub fn hook_path(token: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"vworkspace-receiver:");
    hasher.update(token);
    format!("/hook/{}", hex::encode(hasher.finalize()))
}

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The receiver's state, shared by its connections.
pub struct Receiver {
    token: SecretValue,
    path: String,
    client: Client,
    metrics: Arc<Metrics>,
    bucket: Mutex<Bucket>,
    clock: fn() -> jiff::Timestamp,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("path", &self.path)
            .finish()
    }
}

/// The answer to one request: status, metric outcome, body.
type Answer = (StatusCode, &'static str, String);

impl Receiver {
    /// A receiver for `token` (at least [`MIN_TOKEN_LEN`] bytes) that annotates Clusters with `client`.
    pub fn new(
        token: SecretValue,
        client: Client,
        metrics: Arc<Metrics>,
    ) -> Result<Receiver, String> {
        if token.expose().len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the receiver token must be at least {MIN_TOKEN_LEN} bytes"
            ));
        }
        Ok(Receiver {
            path: hook_path(token.expose()),
            token,
            client,
            metrics,
            bucket: Mutex::new(Bucket {
                tokens: RATE_BURST,
                at: Instant::now(),
            }),
            clock: jiff::Timestamp::now,
        })
    }

    /// The path it serves.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn admit(&self) -> bool {
        let Ok(mut bucket) = self.bucket.lock() else {
            return false;
        };
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * RATE_PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(RATE_BURST);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Answers one request and counts it.
    pub async fn respond<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let forge = Forge::of(request.headers());
        let (status, outcome, body) = self.answer(request, forge).await;
        self.metrics
            .receiver_requests
            .get_or_create(&ReceiverLabel {
                forge: forge.label(),
                outcome,
            })
            .inc();
        if status == StatusCode::ACCEPTED {
            tracing::info!(
                forge = forge.label(),
                outcome,
                "push receiver accepted a request"
            );
        } else if status.is_client_error() || status.is_server_error() {
            tracing::warn!(
                forge = forge.label(),
                outcome,
                status = status.as_u16(),
                "push receiver refused a request"
            );
        }
        let mut response = Response::new(Full::new(Bytes::from(body + "\n")));
        *response.status_mut() = status;
        response
    }

    async fn answer<B>(&self, request: Request<B>, forge: Forge) -> Answer
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if request.uri().path() != self.path {
            return (StatusCode::NOT_FOUND, "unknown_path", "not found".into());
        }
        if request.method() != Method::POST {
            return (StatusCode::METHOD_NOT_ALLOWED, "method", "POST only".into());
        }
        if !self.admit() {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests".into(),
            );
        }
        let (parts, body) = request.into_parts();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body over {MAX_BODY_BYTES} bytes"),
        );
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return too_large;
        }
        let body =
            match tokio::time::timeout(READ_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect())
                .await
            {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large,
                Ok(Err(_)) | Err(_) => {
                    return (
                        StatusCode::REQUEST_TIMEOUT,
                        "incomplete",
                        "the body did not arrive".into(),
                    );
                }
            };
        if !verify::authentic(forge, &parts.headers, &body, self.token.expose()) {
            return (
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "signature or token does not verify".into(),
            );
        }
        let push = match verify::push(forge, &parts.headers, &body) {
            Ok(push) => push,
            Err(NotAPush::Event(event)) => {
                return (
                    StatusCode::OK,
                    "ignored",
                    format!("event {event:?} ignored: only pushes trigger a pass"),
                );
            }
            Err(NotAPush::Malformed(problem)) => {
                return (StatusCode::BAD_REQUEST, "malformed", problem);
            }
        };
        self.trigger(&push).await
    }

    /// Annotates every Cluster the push concerns.
    async fn trigger(&self, push: &verify::Push) -> Answer {
        let api: Api<Cluster> = Api::all(self.client.clone());
        let clusters = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(error = %e, "push receiver cannot list Clusters");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "trigger_failed",
                    "cannot read Clusters".into(),
                );
            }
        };
        let concerned: Vec<String> = clusters
            .iter()
            .filter(|c| c.spec.suspend != Some(true))
            .filter(|c| matching::concerns(c, &push.urls, &push.git_ref))
            .map(|c| c.name_any())
            .collect();
        if concerned.is_empty() {
            return (
                StatusCode::NOT_FOUND,
                "unknown_repository",
                "no Cluster follows this repository at this ref".into(),
            );
        }
        let requested = (self.clock)().to_string();
        let patch =
            serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: requested}}});
        for name in &concerned {
            if let Err(e) = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(cluster = %name, error = %e, "push receiver cannot annotate a Cluster");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "trigger_failed",
                    "cannot annotate a Cluster".into(),
                );
            }
            tracing::info!(cluster = %name, "push received: pass requested");
        }
        (
            StatusCode::ACCEPTED,
            "triggered",
            format!("pass requested for {} Cluster(s)", concerned.len()),
        )
    }
}

/// Starts the receiver of `run --receiver-addr`: binds `addr` now (a port in use fails `run`), then
/// serves in the background. Logs the path (a hash of the token, not the token).
pub async fn start(
    addr: SocketAddr,
    token: SecretValue,
    client: Client,
    metrics: Arc<Metrics>,
) -> Result<(), crate::error::Error> {
    let receiver =
        Receiver::new(token, client, metrics).map_err(|message| crate::error::Error::Io {
            what: "push receiver token".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
        })?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| crate::error::Error::Io {
            what: format!("push receiver: listen on {addr}"),
            source,
        })?;
    tracing::info!(%addr, path = receiver.path(), "push receiver listening");
    tokio::spawn(async move {
        if let Err(e) = serve_on(listener, Arc::new(receiver)).await {
            tracing::error!(%addr, error = %e, "push receiver stopped");
        }
    });
    Ok(())
}

/// Binds `addr` and serves until the task is dropped.
pub async fn serve(addr: SocketAddr, receiver: Arc<Receiver>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_on(listener, receiver).await
}

/// Serves on a bound listener (tests bind port 0).
pub async fn serve_on(listener: TcpListener, receiver: Arc<Receiver>) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = listener.accept().await?;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let receiver = receiver.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(
                move |request: Request<hyper::body::Incoming>| {
                    let receiver = receiver.clone();
                    async move { Ok::<_, std::convert::Infallible>(receiver.respond(request).await) }
                },
            );
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "receiver connection ended");
            }
        });
    }
}
