//! age encryption and decryption of one value (readable by the stock `age -d`), with the envelope
//! sealed and opened.

use std::io::{Read, Write};

use zeroize::Zeroizing;

use super::armor::dearmor_and_check;
use super::envelope::{Binding, open_envelope, seal};
use super::{Identities, SecretValue, SecretsError, parse_recipient};
use crate::limits::Limits;

/// Encrypts `plaintext` to `recipient` as ASCII-armored age (readable by `age -d`), sealing it in the
/// binding envelope when `binding` is given.
pub fn encrypt(
    plaintext: &[u8],
    recipient: &str,
    binding: Option<&Binding>,
) -> Result<String, SecretsError> {
    let recipient = parse_recipient(recipient)?;
    let sealed;
    let payload = match binding {
        Some(b) => {
            sealed = seal(plaintext, b)?;
            &sealed[..]
        }
        None => plaintext,
    };
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|e| SecretsError::Encrypt(e.to_string()))?;
    let mut armored = Vec::new();
    let armor =
        age::armor::ArmoredWriter::wrap_output(&mut armored, age::armor::Format::AsciiArmor)
            .map_err(|e| SecretsError::Encrypt(e.to_string()))?;
    let mut writer = encryptor
        .wrap_output(armor)
        .map_err(|e| SecretsError::Encrypt(e.to_string()))?;
    writer
        .write_all(payload)
        .map_err(|e| SecretsError::Encrypt(e.to_string()))?;
    writer
        .finish()
        .and_then(|armor| armor.finish())
        .map_err(|e| SecretsError::Encrypt(e.to_string()))?;
    String::from_utf8(armored).map_err(|e| SecretsError::Encrypt(e.to_string()))
}

fn decrypt_raw(
    armored: &str,
    identities: &Identities,
    limits: &Limits,
) -> Result<SecretValue, SecretsError> {
    let binary = dearmor_and_check(armored, limits)?;
    let decryptor = age::Decryptor::new_buffered(&binary[..])
        .map_err(|e| SecretsError::Malformed(e.to_string()))?;
    if decryptor.is_scrypt() {
        return Err(SecretsError::PassphraseNotAllowed);
    }
    let reader = decryptor
        .decrypt(identities.0.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => SecretsError::NoMatchingIdentity,
            other => SecretsError::DecryptionFailed(other.to_string()),
        })?;
    // The envelope adds a few hundred bytes to the value; allow for it in the bound.
    let limit = limits.max_secret_plaintext_bytes + 1024;
    let mut plaintext = Zeroizing::new(Vec::new());
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut plaintext)
        .map_err(|e| SecretsError::DecryptionFailed(e.to_string()))?;
    if plaintext.len() > limit {
        return Err(SecretsError::TooLarge {
            what: "decrypted value",
            limit: limits.max_secret_plaintext_bytes,
        });
    }
    Ok(SecretValue(plaintext))
}

/// Decrypts one value and opens its envelope if it has one: `(binding, inner value)`.
pub fn decrypt(
    armored: &str,
    identities: &Identities,
    limits: &Limits,
) -> Result<(Option<Binding>, SecretValue), SecretsError> {
    let plaintext = decrypt_raw(armored, identities, limits)?;
    let (binding, value) = match open_envelope(plaintext.expose())? {
        Some((binding, value)) => (Some(binding), value),
        None => (None, plaintext),
    };
    if value.expose().len() > limits.max_secret_plaintext_bytes {
        return Err(SecretsError::TooLarge {
            what: "decrypted value",
            limit: limits.max_secret_plaintext_bytes,
        });
    }
    Ok((binding, value))
}

/// Decrypts one value and strips its envelope *without* checking the binding (used by tools that
/// re-encrypt, such as `demo`).
pub fn decrypt_any(
    armored: &str,
    identities: &Identities,
    limits: &Limits,
) -> Result<SecretValue, SecretsError> {
    decrypt(armored, identities, limits).map(|(_, value)| value)
}
