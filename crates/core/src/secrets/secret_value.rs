//! [`SecretValue`]: decrypted bytes that never print.

use zeroize::Zeroizing;

/// What `plan` and every report show in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// Decrypted bytes. Zeroized on drop; `Debug` and `Display` print `<redacted>`; not serializable.
#[derive(Clone)]
pub struct SecretValue(pub(super) Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps plaintext bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(Zeroizing::new(bytes))
    }
    /// The plaintext. Every call site is a place plaintext leaves this type: keep them few.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    /// The plaintext as text, when it is UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}
