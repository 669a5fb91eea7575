//! The ASCII armor of an age value, and the header check every value passes before decryption:
//! bounded, X25519 stanzas only.

use std::io::{BufReader, Read};

use super::SecretsError;
use crate::limits::Limits;

/// The first line of an armored age value.
pub const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";

/// Whether a string leaf is a secret value.
pub fn is_armored(s: &str) -> bool {
    s.starts_with(ARMOR_BEGIN)
}

/// Removes the armor, bounded, and checks the header: only X25519 stanzas. Returns the binary age file.
pub(super) fn dearmor_and_check(armored: &str, limits: &Limits) -> Result<Vec<u8>, SecretsError> {
    if armored.len() > limits.max_secret_armored_bytes {
        return Err(SecretsError::TooLarge {
            what: "armored value",
            limit: limits.max_secret_armored_bytes,
        });
    }
    if !is_armored(armored) {
        return Err(SecretsError::Malformed(
            "does not start with the age armor line".into(),
        ));
    }
    let mut binary = Vec::with_capacity(armored.len());
    age::armor::ArmoredReader::new(BufReader::new(armored.as_bytes()))
        .take(limits.max_secret_armored_bytes as u64)
        .read_to_end(&mut binary)
        .map_err(|e| SecretsError::Malformed(e.to_string()))?;
    check_header(&binary)?;
    Ok(binary)
}

/// Walks the text header of a binary age file: `age-encryption.org/v1`, stanzas `-> TYPE args`
/// (with body lines), then `--- mac`. Refuses any stanza type but X25519, scrypt by name.
pub(super) fn check_header(binary: &[u8]) -> Result<(), SecretsError> {
    let mut lines = binary.split(|b| *b == b'\n');
    if lines.next() != Some(b"age-encryption.org/v1".as_slice()) {
        return Err(SecretsError::Malformed("not an age v1 file".into()));
    }
    let mut stanzas = 0usize;
    let mut x25519 = 0usize;
    let mut first_other: Option<String> = None;
    for line in lines {
        if line.starts_with(b"---") {
            return match (x25519, first_other) {
                (0, Some(tag)) => Err(SecretsError::UnsupportedStanza(tag)),
                (0, None) => Err(SecretsError::Malformed("no recipient stanza".into())),
                _ => Ok(()),
            };
        }
        if let Some(rest) = line.strip_prefix(b"-> ") {
            stanzas += 1;
            // Every stanza is tried by the decryptor; bound the count.
            if stanzas > 64 {
                return Err(SecretsError::Malformed(
                    "more than 64 recipient stanzas".into(),
                ));
            }
            let tag = rest.split(|b| *b == b' ').next().unwrap_or_default();
            match tag {
                b"X25519" => x25519 += 1,
                // A passphrase anywhere in the header is refused, whatever else is there.
                b"scrypt" => return Err(SecretsError::PassphraseNotAllowed),
                // Unknown stanzas (age's own "grease", plugins) are ignored, as age does; only
                // X25519 ones can be opened by the cluster's identities.
                other => {
                    first_other.get_or_insert_with(|| {
                        String::from_utf8_lossy(&other[..other.len().min(32)]).into_owned()
                    });
                }
            }
        }
    }
    Err(SecretsError::Malformed("header has no MAC line".into()))
}
