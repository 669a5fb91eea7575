//! The cluster's age X25519 identities, and the recipients values are encrypted to.

use std::sync::Arc;

use super::{SecretValue, SecretsError};

/// One or more X25519 identities of the cluster (several during a rotation). `Debug` shows only
/// how many there are.
#[derive(Clone)]
pub struct Identities(pub(super) Arc<Vec<age::x25519::Identity>>);

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} key(s), redacted)", self.0.len())
    }
}

impl Identities {
    /// Parses an identity file as `age-keygen` writes it: `#` comments and `AGE-SECRET-KEY-1...` lines.
    pub fn parse(text: &str, source: &str) -> Result<Self, SecretsError> {
        Self::parse_many(&[(source.to_owned(), text.to_owned())])
    }

    /// Parses several identity files (rotation: old and new key side by side).
    pub fn parse_many(files: &[(String, String)]) -> Result<Self, SecretsError> {
        let mut identities = Vec::new();
        for (source, text) in files {
            let before = identities.len();
            for (index, line) in text.lines().enumerate() {
                let line_text = line.trim();
                if line_text.is_empty() || line_text.starts_with('#') {
                    continue;
                }
                let identity = line_text.parse::<age::x25519::Identity>().map_err(|_| {
                    SecretsError::InvalidIdentity {
                        source_name: source.clone(),
                        line: index + 1,
                    }
                })?;
                identities.push(identity);
            }
            if identities.len() == before {
                return Err(SecretsError::NoIdentities(source.clone()));
            }
        }
        Ok(Identities(Arc::new(identities)))
    }

    /// How many identities there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `age1...` recipients (public keys) of the identities, in order: what `encrypt --recipient`
    /// takes. Public: safe to publish (the Cluster status does).
    pub fn recipients(&self) -> Vec<String> {
        self.0.iter().map(|i| i.to_public().to_string()).collect()
    }

    /// Whether both sets hold the same keys in the same order.
    pub fn same_keys(&self, other: &Identities) -> bool {
        // Compared by their public halves: no secret is touched to answer.
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.len() == other.0.len()
                && self
                    .0
                    .iter()
                    .zip(other.0.iter())
                    .all(|(a, b)| a.to_public() == b.to_public()))
    }

    /// Whether there are none (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Generates an identity: the secret `AGE-SECRET-KEY-1...` line and its `age1...` recipient.
pub fn generate() -> (SecretValue, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let secret = SecretValue::new(identity.to_string().expose_secret().as_bytes().to_vec());
    (secret, identity.to_public().to_string())
}

/// Parses an age X25519 recipient. A mistake is described without echoing anything but a public
/// `age1...` string: a pasted secret key never reaches a terminal or a CI log.
pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, SecretsError> {
    let trimmed = text.trim();
    if let Ok(recipient) = trimmed.parse::<age::x25519::Recipient>() {
        return Ok(recipient);
    }
    let upper = trimmed.to_ascii_uppercase();
    if upper.starts_with("AGE-SECRET-KEY-") {
        return Err(SecretsError::SecretKeyAsRecipient(
            "an age secret key (AGE-SECRET-KEY-1...)",
        ));
    }
    if upper.starts_with("AGE-PLUGIN-") {
        return Err(SecretsError::SecretKeyAsRecipient(
            "an age plugin identity (AGE-PLUGIN-...)",
        ));
    }
    if upper.contains("PRIVATE KEY") {
        return Err(SecretsError::SecretKeyAsRecipient("a private key"));
    }
    let public_looking = trimmed.starts_with("age1")
        && trimmed.len() <= 100
        && trimmed.bytes().all(|b| b.is_ascii_alphanumeric());
    Err(SecretsError::InvalidRecipient(if public_looking {
        format!("{trimmed:?}")
    } else if trimmed.starts_with("ssh-") {
        "(an SSH public key: SSH recipients are not accepted)".to_owned()
    } else {
        format!(
            "(the {} characters given, not shown)",
            trimmed.chars().count()
        )
    }))
}
