//! The admission webhook's server, on every replica (leader or not): its certificate from a mounted
//! Secret ([`start_webhook`]) or made and renewed by the operator ([`start_webhook_self_managed`]),
//! the allowed templates kept current from a watch on `Cluster`s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::certs;
use crate::error::Error;
use vworkspace_core::crd::Cluster;

/// Serves the admission webhook (on every replica, leader or not) with the allowed templates kept
/// current from a watch on `Cluster`s.
pub(super) async fn start_webhook(
    client: Client,
    addr: SocketAddr,
    cert_dir: PathBuf,
) -> Result<(), Error> {
    use crate::children::webhook_server::ReloadingCertificate;
    let certificate = ReloadingCertificate::new(cert_dir.join("tls.crt"), cert_dir.join("tls.key"))
        .map_err(|e| Error::Webhook(e.into()))?;
    let config = crate::children::webhook_server::tls_config(Arc::new(certificate))
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
) -> Result<(), Error> {
    let serving = Arc::new(certs::ServingCertificate::default());
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
