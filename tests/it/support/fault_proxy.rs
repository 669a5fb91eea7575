//! A fault-injecting HTTPS reverse proxy in front of the real kube-apiserver, on loopback with its
//! own certificate (a test CA, `tls::certificate`). Each client connection gets its own upstream TLS
//! connection and its requests are forwarded one by one (HTTP/1.1, bodies streamed both ways, so
//! watches work through it). While a burst is on ([`FaultProxy::burst`]), `refused` of every `of`
//! requests are answered by the proxy itself, alternately `429 Too Many Requests` (with
//! `Retry-After`) and `500 Internal Server Error`, with the API server's `Status` body; the others
//! still reach the API server. The proxy counts what it forwarded and what it refused, in and out of
//! the burst.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

type Body = BoxBody<Bytes, hyper::Error>;

/// What the proxy saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests forwarded to the API server.
    pub forwarded: u64,
    /// Requests answered 429 by the proxy.
    pub refused_429: u64,
    /// Requests answered 500 by the proxy.
    pub refused_500: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.forwarded + self.refused_429 + self.refused_500
    }
    pub fn refused(&self) -> u64 {
        self.refused_429 + self.refused_500
    }
}

#[derive(Default)]
struct State {
    on: AtomicBool,
    refused: AtomicU64,
    of: AtomicU64,
    seen: AtomicU64,
    forwarded: AtomicU64,
    refused_429: AtomicU64,
    refused_500: AtomicU64,
}

impl State {
    fn counts(&self) -> Counts {
        Counts {
            forwarded: self.forwarded.load(Ordering::SeqCst),
            refused_429: self.refused_429.load(Ordering::SeqCst),
            refused_500: self.refused_500.load(Ordering::SeqCst),
        }
    }

    /// The refusal for the next request, if the burst refuses it.
    fn verdict(&self) -> Option<StatusCode> {
        if !self.on.load(Ordering::SeqCst) {
            return None;
        }
        let (refused, of) = (
            self.refused.load(Ordering::SeqCst),
            self.of.load(Ordering::SeqCst).max(1),
        );
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        if n % of >= refused {
            return None;
        }
        Some(if (n / of).is_multiple_of(2) {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        })
    }
}

/// The running proxy; stops listening when dropped.
pub struct FaultProxy {
    pub port: u16,
    /// The CA of the proxy's certificate (PEM file).
    pub ca: PathBuf,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Status body the API server sends with `code`.
fn refusal(code: StatusCode) -> Response<Body> {
    let (reason, message) = if code == StatusCode::TOO_MANY_REQUESTS {
        (
            "TooManyRequests",
            "too many requests, please try again later (fault proxy)",
        )
    } else {
        ("InternalError", "an error on the server (fault proxy)")
    };
    let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": reason, "message": message, "code": code.as_u16()});
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if code == StatusCode::TOO_MANY_REQUESTS {
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    response
}

fn upstream_tls(ca: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("the API server's CA") {
        roots.add(cert.expect("a CA certificate")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One client connection: its own upstream connection, requests forwarded in turn.
async fn serve_connection(
    client: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    upstream: (String, u16),
    connector: tokio_rustls::TlsConnector,
    state: Arc<State>,
) {
    let Ok(tcp) = tokio::net::TcpStream::connect((upstream.0.as_str(), upstream.1)).await else {
        return;
    };
    let Ok(name) = ServerName::try_from(upstream.0.clone()) else {
        return;
    };
    let Ok(tls) = connector.connect(name, tcp).await else {
        return;
    };
    let Ok((sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await
    else {
        return;
    };
    tokio::spawn(connection);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (sender, state) = (sender.clone(), state.clone());
        async move {
            match state.verdict() {
                Some(code) => {
                    let counter = if code == StatusCode::TOO_MANY_REQUESTS {
                        &state.refused_429
                    } else {
                        &state.refused_500
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, hyper::Error>(refusal(code))
                }
                None => {
                    state.forwarded.fetch_add(1, Ordering::SeqCst);
                    let response = sender.lock().await.send_request(request).await?;
                    Ok(response.map(BodyExt::boxed))
                }
            }
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await;
}

impl FaultProxy {
    /// Starts on a free loopback port in front of `server` (`https://host:port`, trusted by the CA
    /// file `server_ca`), with its own certificate under `dir`. No burst yet.
    pub async fn start(dir: &Path, server: &str, server_ca: &Path) -> FaultProxy {
        let authority = server
            .strip_prefix("https://")
            .expect("an https:// API server")
            .trim_end_matches('/');
        let (host, port) = authority.rsplit_once(':').expect("host:port");
        let upstream = (host.to_owned(), port.parse::<u16>().expect("a port"));
        let (ca, cert, key) = super::tls::certificate(dir, "fault-proxy");
        let certificate = Arc::new(
            vworkspace_controller::children::webhook_server::ReloadingCertificate::new(cert, key)
                .expect("proxy certificate"),
        );
        let config = vworkspace_controller::children::webhook_server::tls_config(certificate)
            .expect("tls config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let connector = upstream_tls(server_ca);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, connector, state) =
                    (acceptor.clone(), connector.clone(), shared.clone());
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        serve_connection(tls, upstream, connector, state).await;
                    }
                });
            }
        });
        FaultProxy {
            port,
            ca,
            state,
            task,
        }
    }

    /// A copy of `kubeconfig` (one cluster, as the tests write them) whose server is the proxy and
    /// whose CA is the proxy's, written to `out`.
    pub fn kubeconfig(&self, kubeconfig: &Path, out: &Path) {
        let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
        let rewritten: Vec<String> = text
            .lines()
            .map(|line| {
                let indent = &line[..line.len() - line.trim_start().len()];
                let trimmed = line.trim_start();
                if trimmed.starts_with("server:") {
                    format!("{indent}server: https://127.0.0.1:{}", self.port)
                } else if trimmed.starts_with("certificate-authority:") {
                    format!("{indent}certificate-authority: {}", self.ca.display())
                } else {
                    line.to_owned()
                }
            })
            .collect();
        assert!(
            rewritten.iter().any(|l| l.contains(&self.port.to_string())),
            "the kubeconfig names a server"
        );
        std::fs::write(out, rewritten.join("\n") + "\n").expect("write kubeconfig");
    }

    /// Refuses `refused` of every `of` requests from now until [`FaultProxy::end_burst`].
    pub fn burst(&self, refused: u64, of: u64) {
        self.state.refused.store(refused, Ordering::SeqCst);
        self.state.of.store(of, Ordering::SeqCst);
        self.state.on.store(true, Ordering::SeqCst);
    }

    pub fn end_burst(&self) {
        self.state.on.store(false, Ordering::SeqCst);
    }

    /// What the proxy has seen so far.
    pub fn counts(&self) -> Counts {
        self.state.counts()
    }

    /// Waits `window` with the burst on, and returns what the proxy saw in it.
    pub async fn burst_for(&self, refused: u64, of: u64, window: Duration) -> Counts {
        let before = self.counts();
        self.burst(refused, of);
        tokio::time::sleep(window).await;
        self.end_burst();
        let after = self.counts();
        Counts {
            forwarded: after.forwarded - before.forwarded,
            refused_429: after.refused_429 - before.refused_429,
            refused_500: after.refused_500 - before.refused_500,
        }
    }
}
