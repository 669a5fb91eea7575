//! The admission webhook over HTTPS (rustls): `POST /validate` answers AdmissionReviews with
//! [`vworkspace_core::admission::review`]. The certificate and key are files (a mounted Secret); they are re-read
//! when their modification time changes, checked at most once a second, so a rotated certificate is
//! served without a restart. A certificate that fails to load keeps the previous one in service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;

use vworkspace_core::admission::{MAX_REVIEW_BYTES, TemplatePolicy};

/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 256;

/// Why the webhook cannot serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The certificate or key could not be loaded.
    #[error("{path}: {message}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The listener failed.
    #[error("webhook listener: {0}")]
    Io(#[from] std::io::Error),
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, WebhookError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certificate_error = |path: &Path, message: String| WebhookError::Certificate {
        path: path.to_owned(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| certificate_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(certificate_error(cert, "no certificate".into()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| certificate_error(key, e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| certificate_error(key, e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// A serving pair from PEM bytes (the certificate chain, then the private key). The error names no
/// key material.
pub fn certified_key_from_pem(cert: &[u8], key: &[u8]) -> Result<Arc<CertifiedKey>, WebhookError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certificate_error = |what: &str, message: String| WebhookError::Certificate {
        path: PathBuf::from(what),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| certificate_error("tls.crt", e.to_string()))?;
    if chain.is_empty() {
        return Err(certificate_error("tls.crt", "no certificate".into()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(key)
        .map_err(|_| certificate_error("tls.key", "not a PEM private key".into()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| certificate_error("tls.key", e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match()
        .map_err(|e| certificate_error("tls.key", e.to_string()))?;
    Ok(Arc::new(pair))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A certificate resolver that re-reads its files when they change.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ReloadingCertificate {
    /// Loads the pair now; fails if it does not load.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Self, WebhookError> {
        let loaded = load(&cert, &key)?;
        let stamps = (modified(&cert), modified(&key));
        Ok(ReloadingCertificate {
            cert,
            key,
            state: Mutex::new(Loaded {
                key: loaded,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair served now, read again from the files when they changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.checked.elapsed() >= Duration::from_secs(1) {
            state.checked = Instant::now();
            let stamps = (modified(&self.cert), modified(&self.key));
            if stamps != state.stamps {
                match load(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                        state.key = key;
                        state.stamps = stamps;
                    }
                    // Half-written during a rotation, or bad: keep serving the previous pair.
                    Err(e) => tracing::warn!(error = %e, "webhook certificate not reloaded"),
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The allowed templates per managed namespace, from each namespace's current annotation
/// ([`TemplateIndex::update_from_namespaces`]), never from a `Cluster`'s status (a Cluster whose pass
/// stopped early keeps an old list there, so a revoked template would still be admitted).
#[derive(Debug, Clone, Default)]
pub struct TemplateIndex(Arc<RwLock<BTreeMap<String, Vec<String>>>>);

impl TemplateIndex {
    /// Rebuilds the index from the managed namespaces as they are now (a namespace without the
    /// managed label is left out: nothing may run there).
    pub fn update_from_namespaces(&self, namespaces: &[k8s_openapi::api::core::v1::Namespace]) {
        let index: BTreeMap<String, Vec<String>> = namespaces
            .iter()
            .filter(|n| {
                n.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(crate::cluster::rbac::MANAGED_LABEL.0))
                    .map(String::as_str)
                    == Some(crate::cluster::rbac::MANAGED_LABEL.1)
            })
            .filter_map(|n| {
                let name = n.metadata.name.clone()?;
                let annotation = n
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(crate::cluster::rbac::ALLOWED_TEMPLATES_ANNOTATION))
                    .map(String::as_str);
                Some((name, crate::cluster::rbac::allowed_templates(annotation)))
            })
            .collect();
        if let Ok(mut guard) = self.0.write() {
            *guard = index;
        }
    }
}

impl TemplatePolicy for TemplateIndex {
    fn allowed_templates(&self, namespace: &str) -> Option<Vec<String>> {
        self.0.read().ok()?.get(namespace).cloned()
    }
}

/// The TLS configuration of the webhook, with the certificate from files ([`ReloadingCertificate`])
/// or from the operator's own Secret ([`crate::runtime::certs::ServingCertificate`]).
pub fn tls_config(
    certificate: Arc<dyn ResolvesServerCert>,
) -> Result<rustls::ServerConfig, WebhookError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| WebhookError::Certificate {
        path: PathBuf::new(),
        message: e.to_string(),
    })?
    .with_no_client_auth()
    .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle<P: TemplatePolicy>(
    request: Request<hyper::body::Incoming>,
    policy: Arc<P>,
) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/validate") => {
            // Bounded in size and in time (a body trickled byte by byte is cut off).
            let collect = Limited::new(request.into_body(), MAX_REVIEW_BYTES).collect();
            let body = match tokio::time::timeout(Duration::from_secs(10), collect).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(_)) => return respond(StatusCode::PAYLOAD_TOO_LARGE, b"{}".to_vec()),
                Err(_) => return respond(StatusCode::REQUEST_TIMEOUT, b"{}".to_vec()),
            };
            let answer = vworkspace_core::admission::review(&body, policy.as_ref());
            respond(
                StatusCode::OK,
                serde_json::to_vec(&answer).unwrap_or_default(),
            )
        }
        (&Method::GET, "/healthz") => respond(StatusCode::OK, b"{}".to_vec()),
        _ => respond(StatusCode::NOT_FOUND, b"{}".to_vec()),
    }
}

/// Serves the webhook on `listener` until the task is dropped.
pub async fn serve<P: TemplatePolicy + Send + Sync + 'static>(
    listener: TcpListener,
    config: rustls::ServerConfig,
    policy: Arc<P>,
) -> Result<(), WebhookError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = listener.accept().await?;
        // At most MAX_CONNECTIONS at once: a client that opens connections without end waits here.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let acceptor = acceptor.clone();
        let policy = policy.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // A client that does not finish its handshake in 10 s is dropped.
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                _ => return,
            };
            let service = hyper::service::service_fn(move |request| {
                let policy = policy.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(request, policy).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(error = %e, "webhook connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(
        name: &str,
        managed: bool,
        annotation: Option<&str>,
    ) -> k8s_openapi::api::core::v1::Namespace {
        let mut ns = k8s_openapi::api::core::v1::Namespace::default();
        ns.metadata.name = Some(name.to_owned());
        if managed {
            ns.metadata.labels = Some(BTreeMap::from([(
                crate::cluster::rbac::MANAGED_LABEL.0.to_owned(),
                crate::cluster::rbac::MANAGED_LABEL.1.to_owned(),
            )]));
        }
        ns.metadata.annotations = annotation.map(|a| {
            BTreeMap::from([(
                crate::cluster::rbac::ALLOWED_TEMPLATES_ANNOTATION.to_owned(),
                a.to_owned(),
            )])
        });
        ns
    }

    #[test]
    fn the_index_follows_each_namespaces_current_annotation() {
        let index = TemplateIndex::default();
        index.update_from_namespaces(&[
            namespace("org-a", true, Some("pg-dump, restic-backup")),
            namespace("org-b", false, Some("pg-dump")),
        ]);
        assert_eq!(
            index.allowed_templates("org-a"),
            Some(vec!["pg-dump".to_owned(), "restic-backup".to_owned()])
        );
        assert_eq!(index.allowed_templates("org-b"), None, "not managed");
        // Revoked on the namespace: gone from the index at once.
        index.update_from_namespaces(&[namespace("org-a", true, Some("restic-backup"))]);
        assert_eq!(
            index.allowed_templates("org-a"),
            Some(vec!["restic-backup".to_owned()])
        );
    }
}
