//! Exports when the webhook's serving certificate expires
//! (`vworkspace_webhook_certificate_expiry_timestamp_seconds`), whichever way it is provided: files
//! mounted from a cert-manager Secret or the operator's own rotated Secret. The alert
//! `VworkspaceWebhookCertificateExpiringSoon` (deploy/monitoring/) fires on it before the API server
//! starts failing admission calls.

use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;

use crate::children::webhook_server::ReloadingCertificate;
use crate::metrics::Metrics;
use crate::runtime::certs::{ServingCertificate, leaf_not_after};

/// How often the served certificate is looked at (a rotation is seen within this).
pub const LOOK_EVERY: Duration = Duration::from_secs(30);

/// A source of the certificate served now.
pub trait ServedCertificate: Send + Sync + 'static {
    /// The pair served now, if any.
    fn served(&self) -> Option<Arc<CertifiedKey>>;
}

impl ServedCertificate for ServingCertificate {
    fn served(&self) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ServedCertificate for ReloadingCertificate {
    fn served(&self) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Sets the gauge from `source` every [`LOOK_EVERY`], for as long as the process runs.
pub async fn export(source: Arc<impl ServedCertificate>, metrics: Arc<Metrics>) {
    loop {
        if let Some(not_after) = source.served().as_deref().and_then(leaf_not_after) {
            metrics.webhook_certificate_expiry.set(not_after as f64);
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}
