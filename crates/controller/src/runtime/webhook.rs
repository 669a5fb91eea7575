//! The admission webhook's server, on every replica (leader or not): its certificate from a mounted
//! Secret ([`start_webhook`]) or made and renewed by the operator ([`start_webhook_self_managed`]),
//! the allowed templates kept current from a watch on the managed namespaces.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::certs;
use crate::error::Error;

/// Serves the admission webhook (on every replica, leader or not) with the allowed templates kept
/// current from a watch on the managed namespaces.
pub(super) async fn start_webhook(
    client: Client,
    addr: SocketAddr,
    cert_dir: PathBuf,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<(), Error> {
    use crate::children::webhook_server::ReloadingCertificate;
    let certificate = ReloadingCertificate::new(cert_dir.join("tls.crt"), cert_dir.join("tls.key"))
        .map_err(|e| Error::Webhook(e.into()))?;
    let certificate = Arc::new(certificate);
    tokio::spawn(super::cert_expiry::export(certificate.clone(), metrics));
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
pub(super) async fn start_webhook_self_managed(
    client: Client,
    addr: SocketAddr,
    options: certs::CertOptions,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<(), Error> {
    let serving = Arc::new(certs::ServingCertificate::default());
    tokio::spawn(super::cert_expiry::export(serving.clone(), metrics));
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
/// watch on the managed namespaces (their annotation as it is now, never a `Cluster`'s status).
async fn serve_webhook(
    client: Client,
    addr: SocketAddr,
    config: rustls::ServerConfig,
) -> Result<(), Error> {
    use crate::children::webhook_server::TemplateIndex;
    use k8s_openapi::api::core::v1::Namespace;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Io {
            what: format!("listen on the webhook address {addr}"),
            source,
        })?;
    let index = Arc::new(TemplateIndex::default());
    let (reader, writer) = kube::runtime::reflector::store::<Namespace>();
    let updates = index.clone();
    let selector = watcher::Config::default().labels(&crate::cluster::namespaces::selector());
    tokio::spawn(
        kube::runtime::reflector(writer, watcher(Api::<Namespace>::all(client), selector))
            .default_backoff()
            .for_each(move |_| {
                let namespaces: Vec<Namespace> =
                    reader.state().iter().map(|n| (**n).clone()).collect();
                updates.update_from_namespaces(&namespaces);
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
