//! The webhook's certificates without extra parts, as Gatekeeper's cert-controller does: the operator
//! keeps its own CA and serving certificate in one Secret in its namespace (read and written by name
//! only: Secrets are never listed or watched), renews them before they expire, and writes the CA into
//! the `caBundle` of its own ValidatingWebhookConfiguration (by name).
//!
//! Every replica runs [`keep_current`]: it reads the Secret, and when the Secret is missing, unparseable
//! or due for renewal it writes a new one with a compare-and-swap (create fails when another replica
//! created it first; an update carries the resourceVersion it read), so concurrent replicas converge
//! on whichever write the API server accepted, and every replica then serves what the Secret holds.
//! No Lease is needed for that, and none may be: a fresh install has no leader yet, and the webhook
//! has to answer before the leader's first pass writes into a managed namespace.
//!
//! Renewal: the serving certificate lives [`SERVING_VALIDITY`] and is renewed when less than
//! [`SERVING_RENEW_BEFORE`] is left (same CA: the caBundle does not change). The CA lives
//! [`CA_VALIDITY`] and is replaced when less than [`CA_RENEW_BEFORE`] is left; the old CA stays in the
//! bundle until it expires, so a replica still serving a certificate of the old CA is trusted while
//! the others pick up the new one.
//!
//! Private keys are held in memory and in the Secret only; no error or log line carries them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How long a CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// A CA with less than this left is replaced.
pub const CA_RENEW_BEFORE: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a serving certificate is valid.
pub const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A serving certificate with less than this left is replaced.
pub const SERVING_RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);
/// How often each replica re-reads the Secret (a rotation by another replica is served within this).
pub const RECHECK: Duration = Duration::from_secs(60);
/// The wait after a failed round.
pub const RETRY: Duration = Duration::from_secs(5);

/// The keys of the Secret.
pub const CA_CERT: &str = "ca.crt";
/// The CA's private key.
pub const CA_KEY: &str = "ca.key";
/// The serving certificate.
pub const TLS_CERT: &str = "tls.crt";
/// The serving certificate's private key.
pub const TLS_KEY: &str = "tls.key";

/// What the certificate controller manages.
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// The operator's namespace, where the Secret lives.
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// The ValidatingWebhookConfiguration whose `caBundle` it sets.
    pub webhook_configuration: String,
    /// The names the serving certificate is valid for (DNS names or IP addresses); the first is
    /// its subject. The API server calls `<service>.<namespace>.svc`.
    pub dns_names: Vec<String>,
}

/// Why certificates could not be made or read. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Generating or signing failed.
    #[error("cannot generate the webhook certificate: {0}")]
    Generate(String),
    /// An API request failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The webhook configuration is not there.
    #[error("ValidatingWebhookConfiguration {0} not found")]
    NoWebhookConfiguration(String),
}

/// The contents of the Secret, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// The current CA first, then older CAs still valid.
    pub ca_bundle: String,
    ca_key: String,
    /// The serving certificate.
    pub cert: String,
    key: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("ca_bundle", &self.ca_bundle)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Reads the Secret's data; `None` when a key is missing or not UTF-8.
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Option<Material> {
        let text = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        Some(Material {
            ca_bundle: text(CA_CERT)?,
            ca_key: text(CA_KEY)?,
            cert: text(TLS_CERT)?,
            key: text(TLS_KEY)?,
        })
    }

    /// The Secret's data.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        [
            (CA_CERT, &self.ca_bundle),
            (CA_KEY, &self.ca_key),
            (TLS_CERT, &self.cert),
            (TLS_KEY, &self.key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
    }

    /// The serving pair for rustls.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, CertError> {
        crate::children::webhook_server::certified_key_from_pem(
            self.cert.as_bytes(),
            self.key.as_bytes(),
        )
        .map_err(|e| CertError::Generate(e.to_string()))
    }
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The Secret is current.
    Keep(Material),
    /// Write this, for the reason given.
    Write(Material, &'static str),
}

struct Parsed {
    not_before: i64,
    not_after: i64,
    names: Vec<String>,
    public_key: Vec<u8>,
    der: Vec<u8>,
}

fn parse_pems(pem_text: &str) -> Vec<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

fn parse(der: &[u8]) -> Option<Parsed> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Parsed {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        names,
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        der: der.to_vec(),
    })
}

/// When the leaf (first) certificate of a served pair expires, in Unix seconds.
pub fn leaf_not_after(key: &CertifiedKey) -> Option<i64> {
    key.cert.first().and_then(|c| parse(c)).map(|p| p.not_after)
}

fn signed_by(child: &[u8], ca: &[u8]) -> bool {
    use x509_parser::prelude::*;
    let (Ok((_, child)), Ok((_, ca))) = (
        X509Certificate::from_der(child),
        X509Certificate::from_der(ca),
    ) else {
        return false;
    };
    child.verify_signature(Some(ca.public_key())).is_ok()
}

/// `unix` (seconds, not before 1970) as rcgen's time type, which is `date_time_ymd`'s.
macro_rules! at {
    ($unix:expr) => {
        rcgen::date_time_ymd(1970, 1, 1)
            + Duration::from_secs(u64::try_from($unix).unwrap_or_default())
    };
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn new_ca(now: i64) -> Result<(String, rcgen::KeyPair), CertError> {
    let err = |e: rcgen::Error| CertError::Generate(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vworkspace-operator webhook CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = at!(now - 300);
    params.not_after = at!(now + secs(CA_VALIDITY));
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key))
}

fn new_serving(
    ca_cert_pem: &str,
    ca_key: &rcgen::KeyPair,
    names: &[String],
    now: i64,
) -> Result<(String, String), CertError> {
    let err = |e: rcgen::Error| CertError::Generate(e.to_string());
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(err)?;
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(err)?;
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.as_str());
    }
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = at!(now - 300);
    params.not_after = at!(now + secs(SERVING_VALIDITY));
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Decides, at `now` (UNIX seconds), whether the Secret's `existing` contents can stay or what to
/// write instead. Pure apart from key generation.
pub fn plan(existing: Option<&Material>, names: &[String], now: i64) -> Result<Plan, CertError> {
    // The CA: reuse it when it parses, its key loads and it has long enough left.
    let ca = existing.and_then(|m| {
        let first = parse_pems(&m.ca_bundle).into_iter().next()?;
        let parsed = parse(&first)?;
        let key = rcgen::KeyPair::from_pem(&m.ca_key).ok()?;
        // The key must be the certificate's, or what it signs verifies against nothing.
        (key.public_key_raw() == parsed.public_key.as_slice()).then_some((m, parsed, key))
    });
    let ca_current = ca
        .as_ref()
        .is_some_and(|(_, p, _)| p.not_before <= now && p.not_after - now > secs(CA_RENEW_BEFORE));
    if let (true, Some((m, ca_parsed, _))) = (ca_current, ca.as_ref()) {
        let serving_ok = parse_pems(&m.cert)
            .first()
            .and_then(|d| parse(d))
            .is_some_and(|p| {
                p.not_before <= now
                    && p.not_after - now > secs(SERVING_RENEW_BEFORE)
                    && names.iter().all(|n| p.names.contains(n))
                    && signed_by(&p.der, &ca_parsed.der)
            })
            && m.certified_key().is_ok();
        if serving_ok {
            return Ok(Plan::Keep((*m).clone()));
        }
    }
    let reason;
    let (ca_pem, ca_key_pem, bundle, ca_key) = match ca {
        Some((m, _, key)) if ca_current => {
            reason = "serving certificate renewed";
            (
                pem_first(&m.ca_bundle),
                m.ca_key.clone(),
                still_valid(&m.ca_bundle, now),
                key,
            )
        }
        previous => {
            reason = if existing.is_some() {
                "CA renewed"
            } else {
                "CA and serving certificate created"
            };
            let (pem, key) = new_ca(now)?;
            let mut bundle = pem.clone();
            // An old CA still valid stays trusted (when its key was lost, its certificates
            // may still be served by replicas that have not re-read the Secret).
            if let Some(m) = previous.map(|(m, _, _)| m).or(existing) {
                let old = still_valid(&m.ca_bundle, now);
                if !old.is_empty() {
                    bundle.push_str(&old);
                }
            }
            (pem, key.serialize_pem(), bundle, key)
        }
    };
    let (cert, key) = new_serving(&ca_pem, &ca_key, names, now)?;
    Ok(Plan::Write(
        Material {
            ca_bundle: bundle,
            ca_key: ca_key_pem,
            cert,
            key,
        },
        reason,
    ))
}

fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn pem_first(bundle: &str) -> String {
    parse_pems(bundle)
        .first()
        .map(|d| to_pem(d))
        .unwrap_or_default()
}

/// The certificates of `bundle` not yet expired at `now`, as PEM.
fn still_valid(bundle: &str, now: i64) -> String {
    parse_pems(bundle)
        .iter()
        .filter(|d| parse(d).is_some_and(|p| p.not_after > now))
        .map(|d| to_pem(d))
        .collect()
}

/// The serving certificate every TLS handshake gets: none until the first is loaded (handshakes fail
/// then, and the API server applies the webhook's failure policy).
#[derive(Debug, Default)]
pub struct ServingCertificate(RwLock<Option<Arc<CertifiedKey>>>);

impl ServingCertificate {
    /// Serves `key` from now on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut guard) = self.0.write() {
            *guard = Some(key);
        }
    }

    /// The pair served now, if one is loaded.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok()?.clone()
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.0.read().map(|g| g.is_some()).unwrap_or(false)
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok()?.clone()
    }
}

fn kube_err(action: String) -> impl FnOnce(kube::Error) -> CertError {
    move |source| CertError::Kube { action, source }
}

fn is_status(e: &CertError, code: u16) -> bool {
    matches!(e, CertError::Kube { source: kube::Error::Api(s), .. } if s.code == code)
}

/// One round: reads the Secret, writes it when [`plan`] says so, sets the `caBundle`, and returns what
/// the replica serves now. `Ok(None)` when another replica's write won a race (read again).
pub async fn round(client: &Client, options: &CertOptions) -> Result<Option<Material>, CertError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &options.namespace);
    let name = &options.secret;
    let existing = secrets
        .get_opt(name)
        .await
        .map_err(kube_err(format!("get Secret {}/{name}", options.namespace)))?;
    let material = existing
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(Material::from_data);
    let now = jiff::Timestamp::now().as_second();
    let material = match plan(material.as_ref(), &options.dns_names, now)? {
        Plan::Keep(m) => m,
        Plan::Write(m, reason) => {
            let mut secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(options.namespace.clone()),
                    labels: Some(
                        [(
                            "app.kubernetes.io/name".to_owned(),
                            "vworkspace-app-operator".to_owned(),
                        )]
                        .into(),
                    ),
                    ..ObjectMeta::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(m.to_data()),
                ..Secret::default()
            };
            let result = match existing {
                None => secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .map(drop)
                    .map_err(kube_err(format!(
                        "create Secret {}/{name}",
                        options.namespace
                    ))),
                Some(old) => {
                    // Compare-and-swap: the resourceVersion read above.
                    secret.metadata.resource_version = old.metadata.resource_version;
                    secrets
                        .replace(name, &PostParams::default(), &secret)
                        .await
                        .map(drop)
                        .map_err(kube_err(format!(
                            "update Secret {}/{name}",
                            options.namespace
                        )))
                }
            };
            match result {
                Ok(()) => tracing::info!(secret = %name, reason, "webhook certificate written"),
                Err(e) if is_status(&e, 409) => return Ok(None),
                Err(e) => return Err(e),
            }
            m
        }
    };
    set_ca_bundle(client, &options.webhook_configuration, &material.ca_bundle).await?;
    Ok(Some(material))
}

/// What the webhook may trust of `bundle` (the Secret's `ca.crt`): its first certificate, the
/// operator's current CA ([`plan`] keeps it only when it matches `ca.key`, or made it), and the older
/// ones only while `trusted` (the webhook's caBundle now) holds them too: a CA the operator set
/// itself before it was replaced. Whatever else sits in `ca.crt` (a certificate someone added to the
/// Secret) never reaches the caBundle.
pub fn own_ca_bundle(bundle: &str, trusted: Option<&[u8]>) -> String {
    let all = parse_pems(bundle);
    let trusted = trusted
        .and_then(|t| std::str::from_utf8(t).ok())
        .map(parse_pems)
        .unwrap_or_default();
    let own: Vec<&Vec<u8>> = all
        .iter()
        .enumerate()
        .filter(|(i, der)| *i == 0 || trusted.contains(der))
        .map(|(_, der)| der)
        .collect();
    if own.len() == all.len() {
        bundle.to_owned()
    } else {
        own.into_iter().map(|der| to_pem(der)).collect()
    }
}

/// Sets `caBundle` on every webhook of the named configuration to [`own_ca_bundle`] of `bundle` (an
/// update carrying the resourceVersion read; nothing is sent when it is already set).
pub async fn set_ca_bundle(client: &Client, name: &str, bundle: &str) -> Result<(), CertError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mut config = api
        .get_opt(name)
        .await
        .map_err(kube_err(format!(
            "get ValidatingWebhookConfiguration {name}"
        )))?
        .ok_or_else(|| CertError::NoWebhookConfiguration(name.to_owned()))?;
    let mut changed = false;
    for hook in config.webhooks.iter_mut().flatten() {
        let current = hook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice());
        let wanted = ByteString(own_ca_bundle(bundle, current).into_bytes());
        if hook.client_config.ca_bundle.as_ref() != Some(&wanted) {
            hook.client_config.ca_bundle = Some(wanted);
            changed = true;
        }
    }
    if changed {
        match api.replace(name, &PostParams::default(), &config).await {
            Ok(_) => tracing::info!(configuration = %name, "webhook caBundle set"),
            // Someone else changed it meanwhile: the next round reads it again.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(source) => {
                return Err(CertError::Kube {
                    action: format!("update ValidatingWebhookConfiguration {name}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Keeps the Secret, the `caBundle` and `serving` current until the task is dropped: a round every
/// [`RECHECK`], or [`RETRY`] after a failure (logged, without key material).
pub async fn keep_current(client: Client, options: CertOptions, serving: Arc<ServingCertificate>) {
    let mut served: Option<Material> = None;
    loop {
        let wait = match round(&client, &options).await {
            Ok(Some(material)) => {
                if served.as_ref() != Some(&material) {
                    match material.certified_key() {
                        Ok(key) => {
                            serving.set(key);
                            tracing::info!(secret = %options.secret, "webhook serving certificate loaded");
                            served = Some(material);
                        }
                        Err(e) => tracing::warn!(error = %e, "webhook certificate not loaded"),
                    }
                }
                RECHECK
            }
            Ok(None) => Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(error = %e, "webhook certificate");
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 24 * 3600;

    fn names() -> Vec<String> {
        vec![
            "vworkspace-app-operator-webhook.vworkspace-system.svc".into(),
            "127.0.0.1".into(),
        ]
    }

    fn written(plan: Plan) -> (Material, &'static str) {
        match plan {
            Plan::Write(m, reason) => (m, reason),
            Plan::Keep(_) => panic!("expected a write"),
        }
    }

    #[test]
    fn a_missing_secret_gets_a_ca_and_a_serving_certificate_for_every_name() {
        let (m, reason) = written(plan(None, &names(), NOW).expect("plan"));
        assert_eq!(reason, "CA and serving certificate created");
        let ca = parse_pems(&m.ca_bundle);
        assert_eq!(ca.len(), 1);
        let serving = parse(&parse_pems(&m.cert)[0]).expect("parses");
        assert_eq!(serving.names, names());
        assert!(signed_by(&serving.der, &ca[0]));
        assert_eq!(serving.not_after - NOW, secs(SERVING_VALIDITY));
        assert!(m.certified_key().is_ok());
        // The Secret's data round-trips.
        assert_eq!(Material::from_data(&m.to_data()), Some(m.clone()));
        // Never printed.
        let shown = format!("{m:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }

    #[test]
    fn a_current_secret_is_kept() {
        let (m, _) = written(plan(None, &names(), NOW).expect("plan"));
        let later = NOW + 30 * DAY;
        assert_eq!(
            plan(Some(&m), &names(), later).expect("plan"),
            Plan::Keep(m)
        );
    }

    #[test]
    fn the_serving_certificate_is_renewed_before_expiry_under_the_same_ca() {
        let (m, _) = written(plan(None, &names(), NOW).expect("plan"));
        let due = NOW + secs(SERVING_VALIDITY) - secs(SERVING_RENEW_BEFORE) + DAY;
        let (renewed, reason) = written(plan(Some(&m), &names(), due).expect("plan"));
        assert_eq!(reason, "serving certificate renewed");
        assert_eq!(
            renewed.ca_bundle, m.ca_bundle,
            "the caBundle does not change"
        );
        assert_ne!(renewed.cert, m.cert);
        let serving = parse(&parse_pems(&renewed.cert)[0]).expect("parses");
        assert_eq!(serving.not_after - due, secs(SERVING_VALIDITY));
        assert!(signed_by(&serving.der, &parse_pems(&m.ca_bundle)[0]));
        assert_eq!(
            plan(Some(&renewed), &names(), due).expect("plan"),
            Plan::Keep(renewed)
        );
    }

    #[test]
    fn a_new_name_or_a_broken_key_gets_a_new_serving_certificate() {
        let (m, _) = written(plan(None, &names(), NOW).expect("plan"));
        let mut more = names();
        more.push("other.vworkspace-system.svc".into());
        let (renewed, reason) = written(plan(Some(&m), &more, NOW).expect("plan"));
        assert_eq!(reason, "serving certificate renewed");
        assert_eq!(
            parse(&parse_pems(&renewed.cert)[0]).expect("parses").names,
            more
        );
        let mut broken = m.clone();
        broken.key = "not a key".into();
        let (_, reason) = written(plan(Some(&broken), &names(), NOW).expect("plan"));
        assert_eq!(reason, "serving certificate renewed");
    }

    #[test]
    fn the_ca_is_renewed_before_expiry_and_the_old_one_stays_trusted_until_it_expires() {
        let (m, _) = written(plan(None, &names(), NOW).expect("plan"));
        let due = NOW + secs(CA_VALIDITY) - secs(CA_RENEW_BEFORE) + DAY;
        let (renewed, reason) = written(plan(Some(&m), &names(), due).expect("plan"));
        assert_eq!(reason, "CA renewed");
        let bundle = parse_pems(&renewed.ca_bundle);
        assert_eq!(bundle.len(), 2, "new CA first, the old one after it");
        assert_eq!(bundle[1], parse_pems(&m.ca_bundle)[0]);
        let serving = parse(&parse_pems(&renewed.cert)[0]).expect("parses");
        assert!(signed_by(&serving.der, &bundle[0]));
        // Once the old CA has expired it leaves the bundle at the next write.
        let past_old = NOW + secs(CA_VALIDITY) + DAY;
        let mut stale = renewed.clone();
        stale.cert = "garbage".into();
        let (next, _) = written(plan(Some(&stale), &names(), past_old).expect("plan"));
        assert_eq!(parse_pems(&next.ca_bundle).len(), 1);
    }

    #[test]
    fn the_ca_bundle_holds_the_operators_own_cas_not_what_else_sits_in_the_secret() {
        let (m, _) = written(plan(None, &names(), NOW).expect("plan"));
        let (foreign, _) = new_ca(NOW).expect("a CA someone else made");
        // Someone appends their CA to the Secret's ca.crt: a fresh configuration trusts ours only.
        let tampered = format!("{}{foreign}", m.ca_bundle);
        assert_eq!(own_ca_bundle(&tampered, None), pem_first(&m.ca_bundle));
        assert_eq!(
            own_ca_bundle(&tampered, Some(m.ca_bundle.as_bytes())),
            pem_first(&m.ca_bundle),
            "not added to a configuration that trusts our CA"
        );
        // Our CA renewed: the old one stays while the configuration trusts it (we set it there) ...
        let due = NOW + secs(CA_VALIDITY) - secs(CA_RENEW_BEFORE) + DAY;
        let (renewed, _) = written(plan(Some(&m), &names(), due).expect("plan"));
        assert_eq!(parse_pems(&renewed.ca_bundle).len(), 2);
        assert_eq!(
            own_ca_bundle(&renewed.ca_bundle, Some(m.ca_bundle.as_bytes())),
            renewed.ca_bundle
        );
        // ... and once set, the bundle is stable (nothing more to write).
        assert_eq!(
            own_ca_bundle(&renewed.ca_bundle, Some(renewed.ca_bundle.as_bytes())),
            renewed.ca_bundle
        );
        // A foreign CA slipped in behind the old one is dropped, the old one kept.
        let slipped = format!("{}{foreign}", renewed.ca_bundle);
        assert_eq!(
            parse_pems(&own_ca_bundle(&slipped, Some(renewed.ca_bundle.as_bytes()))),
            parse_pems(&renewed.ca_bundle)
        );
    }

    #[test]
    fn an_unreadable_ca_is_replaced() {
        let (mut m, _) = written(plan(None, &names(), NOW).expect("plan"));
        m.ca_key = rcgen::KeyPair::generate().expect("key").serialize_pem();
        let (renewed, reason) = written(plan(Some(&m), &names(), NOW).expect("plan"));
        assert_eq!(reason, "CA renewed");
        assert!(renewed.certified_key().is_ok());
    }
}
