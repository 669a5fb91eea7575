//! `/healthz`, `/readyz` and `/metrics` over plain HTTP/1 (the probes and the scraper are in-cluster;
//! nothing secret is served). `/readyz` answers 200 once the operator has reached the API server, and
//! 503 with a one-line reason while a required watch has been failing for longer than
//! [`WATCH_FAILING_BOUND`] ([`crate::watch_health`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::watch_health::WATCH_FAILING_BOUND;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// What the endpoints report.
#[derive(Debug, Clone)]
pub struct Probes {
    /// Set once the API server answered.
    pub ready: Arc<AtomicBool>,
    /// The metrics to expose.
    pub metrics: Arc<Metrics>,
}

/// Answers one request.
pub fn respond(probes: &Probes, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => match readiness(probes) {
            None => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Some(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {reason}\n"),
            ),
        },
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            probes.metrics.encode(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

/// Why the replica is not ready, or `None`.
fn readiness(probes: &Probes) -> Option<String> {
    if !probes.ready.load(Ordering::Relaxed) {
        return Some("the API server has not answered yet".to_owned());
    }
    probes
        .metrics
        .watch_health
        .unready_reason(std::time::Instant::now(), WATCH_FAILING_BOUND)
}

/// Binds `addr` and serves until the task is dropped.
pub async fn serve(addr: SocketAddr, probes: Probes) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_on(listener, probes).await
}

/// Serves on a bound listener (tests bind port 0).
pub async fn serve_on(listener: TcpListener, probes: Probes) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = listener.accept().await?;
        // Bounded: a client that opens connections without end waits here.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let probes = probes.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let response = respond(&probes, request.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "probe connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_flag_and_metrics_are_openmetrics() {
        let probes = Probes {
            ready: Arc::new(AtomicBool::new(false)),
            metrics: Arc::new(Metrics::default()),
        };
        assert_eq!(respond(&probes, "/healthz").status(), StatusCode::OK);
        assert_eq!(
            respond(&probes, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        probes.ready.store(true, Ordering::Relaxed);
        assert_eq!(respond(&probes, "/readyz").status(), StatusCode::OK);
        // A required watch failing for longer than the bound: 503; once it delivers again: 200.
        let long_ago = std::time::Instant::now()
            .checked_sub(WATCH_FAILING_BOUND * 2)
            .expect("a monotonic clock older than two bounds");
        probes
            .metrics
            .watch_health
            .record_at("Cluster", false, long_ago);
        assert_eq!(
            respond(&probes, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        probes
            .metrics
            .watch_health
            .record::<(), ()>("Cluster", &Ok(()));
        assert_eq!(respond(&probes, "/readyz").status(), StatusCode::OK);
        let metrics = respond(&probes, "/metrics");
        assert!(
            metrics.headers()[http::header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|v| v.starts_with("application/openmetrics-text"))
        );
        assert_eq!(respond(&probes, "/secret").status(), StatusCode::NOT_FOUND);
    }
}
