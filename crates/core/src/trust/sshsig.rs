//! SSHSIG (OpenSSH's `ssh-keygen -Y sign` format) verification and signing, ed25519 only.
//!
//! One pure call decides: [`verify`] takes the armored signature, the message, the namespace the
//! signature must be for, the trusted keys and the verifier's clock, and returns who signed or
//! exactly why not.

use ssh_key::{Algorithm, HashAlg, LineEnding, SshSig};

use crate::trust::signers::{AllowedSigners, SignerEntry};

/// Largest armored signature accepted (an ed25519 SSHSIG is about 300 bytes).
pub const MAX_ARMORED_BYTES: usize = 8 * 1024;

/// Who made a verified signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The first principal of the matching `allowed_signers` entry.
    pub principal: String,
    /// The key's fingerprint, `SHA256:<base64>` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The end of the accepting entry's validity window, if it has one: a verification stays good
    /// only until then.
    pub valid_before: Option<jiff::Timestamp>,
}

/// Why a signature was refused. Each variant is a distinct refusal.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// Not a parseable armored SSHSIG.
    #[error("malformed SSH signature: {0}")]
    Malformed(String),
    /// Larger than [`MAX_ARMORED_BYTES`].
    #[error("SSH signature is {0} bytes, over the limit of {MAX_ARMORED_BYTES}")]
    TooLarge(usize),
    /// The signature's hash is not sha512.
    #[error("SSH signature uses hash {0}; only sha512 is accepted")]
    UnsupportedHash(String),
    /// The signature was made for another namespace.
    #[error("SSH signature is for namespace {found:?}, expected {expected:?}")]
    WrongNamespace {
        /// The namespace required here.
        expected: String,
        /// The namespace in the signature.
        found: String,
    },
    /// The key is not ed25519.
    #[error("signing key {fingerprint} is {algorithm}; only ed25519 keys are accepted")]
    UnsupportedKeyAlgorithm {
        /// The key's fingerprint.
        fingerprint: String,
        /// Its algorithm.
        algorithm: String,
    },
    /// No trusted entry lists the key.
    #[error("signing key {fingerprint} is not a trusted signer")]
    UnknownKey {
        /// The key's fingerprint.
        fingerprint: String,
    },
    /// The key is trusted, but not for this namespace.
    #[error(
        "signing key {fingerprint} ({principal}) is not allowed to sign namespace {namespace:?}"
    )]
    NamespaceNotAllowedForKey {
        /// The key's fingerprint.
        fingerprint: String,
        /// Its principal.
        principal: String,
        /// The namespace.
        namespace: String,
    },
    /// The key's `valid-after` is later than the verifier's clock.
    #[error(
        "signing key {fingerprint} ({principal}) is not valid before {valid_after}; verifier clock is {at}"
    )]
    KeyNotYetValid {
        /// The key's fingerprint.
        fingerprint: String,
        /// Its principal.
        principal: String,
        /// Its `valid-after`.
        valid_after: jiff::Timestamp,
        /// The verifier's clock.
        at: jiff::Timestamp,
    },
    /// The key's `valid-before` has passed at the verifier's clock.
    #[error(
        "signing key {fingerprint} ({principal}) expired at {valid_before}; verifier clock is {at}"
    )]
    KeyExpired {
        /// The key's fingerprint.
        fingerprint: String,
        /// Its principal.
        principal: String,
        /// Its `valid-before`.
        valid_before: jiff::Timestamp,
        /// The verifier's clock.
        at: jiff::Timestamp,
    },
    /// The cryptographic check failed: the message or the signature was changed.
    #[error("SSH signature by {fingerprint} does not match the signed data")]
    BadSignature {
        /// The key's fingerprint.
        fingerprint: String,
    },
    /// Signing failed (only [`sign`]).
    #[error("cannot sign: {0}")]
    Signing(String),
}

fn window_error(
    entry: &SignerEntry,
    fingerprint: &str,
    at: jiff::Timestamp,
) -> Option<SignatureError> {
    let principal = entry.principals.first().cloned().unwrap_or_default();
    if let Some(valid_after) = entry.valid_after
        && at < valid_after
    {
        return Some(SignatureError::KeyNotYetValid {
            fingerprint: fingerprint.to_owned(),
            principal,
            valid_after,
            at,
        });
    }
    if let Some(valid_before) = entry.valid_before
        && at > valid_before
    {
        return Some(SignatureError::KeyExpired {
            fingerprint: fingerprint.to_owned(),
            principal,
            valid_before,
            at,
        });
    }
    None
}

/// Reads an armored SSHSIG exactly as OpenSSH's `sshsig_dearmor` (what `ssh-keygen -Y verify` and
/// git use) reads it, so that a signature file means the same here and to the stock tool:
///
/// - the file starts with `-----BEGIN SSH SIGNATURE-----` and a line feed: no text before it, no
///   CRLF (ssh-keygen: "missing header");
/// - the base64 runs up to the first line feed followed by `-----END SSH SIGNATURE-----`; whatever
///   follows that line is ignored, as ssh-keygen ignores it (ssh-keygen: "missing footer" without it);
/// - whitespace (space, tab, CR, LF, VT, FF) inside the base64 is skipped; padding is required and
///   any other character is refused;
/// - the decoded blob is an SSHSIG with nothing after its last field.
fn dearmor(armored: &[u8]) -> Result<SshSig, SignatureError> {
    use base64::Engine as _;
    const BEGIN: &[u8] = b"-----BEGIN SSH SIGNATURE-----\n";
    const END: &[u8] = b"\n-----END SSH SIGNATURE-----";
    let malformed = |why: &str| SignatureError::Malformed(why.to_owned());
    let body = armored.strip_prefix(BEGIN).ok_or_else(|| {
        malformed(
            "missing header: the file must start with \"-----BEGIN SSH SIGNATURE-----\" and a line feed (no text before it, no CRLF line ends), as ssh-keygen requires",
        )
    })?;
    let end = body
        .windows(END.len())
        .position(|w| w == END)
        .ok_or_else(|| malformed("missing footer \"-----END SSH SIGNATURE-----\""))?;
    let mut text = &body[..end];
    // OpenSSH reads the base64 as a C string: a NUL is accepted only as the very last byte.
    if let Some(nul) = text.iter().position(|b| *b == 0) {
        if nul + 1 != text.len() {
            return Err(malformed("a NUL byte inside the base64"));
        }
        text = &text[..nul];
    }
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
        .collect();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| malformed(&format!("the armor is not base64: {e}")))?;
    // Re-armored canonically (70 columns, as ssh-keygen writes) for the SSHSIG decoder, which also
    // refuses trailing bytes after the last field.
    let encoded = base64::engine::general_purpose::STANDARD.encode(&blob);
    let mut pem = String::from("-----BEGIN SSH SIGNATURE-----\n");
    for chunk in encoded.as_bytes().chunks(70) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END SSH SIGNATURE-----\n");
    SshSig::from_pem(pem).map_err(|e| SignatureError::Malformed(e.to_string()))
}

/// Verifies `armored` over `message` for `namespace`, by a key in `signers` valid at `at`.
pub fn verify(
    armored: &[u8],
    message: &[u8],
    namespace: &str,
    signers: &AllowedSigners,
    at: jiff::Timestamp,
) -> Result<Signer, SignatureError> {
    if armored.len() > MAX_ARMORED_BYTES {
        return Err(SignatureError::TooLarge(armored.len()));
    }
    let signature = dearmor(armored)?;
    let key = signature.public_key();
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    if signature.namespace() != namespace {
        return Err(SignatureError::WrongNamespace {
            expected: namespace.to_owned(),
            found: signature.namespace().to_owned(),
        });
    }
    if signature.hash_alg() != HashAlg::Sha512 {
        return Err(SignatureError::UnsupportedHash(
            signature.hash_alg().to_string(),
        ));
    }
    if key.algorithm() != Algorithm::Ed25519 || signature.algorithm() != Algorithm::Ed25519 {
        return Err(SignatureError::UnsupportedKeyAlgorithm {
            fingerprint,
            algorithm: key.algorithm().to_string(),
        });
    }
    let candidates: Vec<&SignerEntry> = signers
        .entries()
        .iter()
        .filter(|e| e.key.key_data() == key)
        .collect();
    if candidates.is_empty() {
        return Err(SignatureError::UnknownKey { fingerprint });
    }
    // Several lines may list one key (e.g. a rotation window); any one that allows the namespace at
    // this time is enough. Otherwise report the most specific refusal of the first candidate.
    let mut refusal = None;
    let mut accepted = None;
    for entry in &candidates {
        if !entry.allows_namespace(namespace) {
            refusal.get_or_insert(SignatureError::NamespaceNotAllowedForKey {
                fingerprint: fingerprint.clone(),
                principal: entry.principals.first().cloned().unwrap_or_default(),
                namespace: namespace.to_owned(),
            });
            continue;
        }
        if let Some(e) = window_error(entry, &fingerprint, at) {
            refusal = Some(e);
            continue;
        }
        accepted = Some(entry);
        break;
    }
    let Some(entry) = accepted else {
        return Err(refusal.unwrap_or(SignatureError::UnknownKey { fingerprint }));
    };
    entry
        .key
        .verify(namespace, message, &signature)
        .map_err(|_| SignatureError::BadSignature {
            fingerprint: fingerprint.clone(),
        })?;
    Ok(Signer {
        principal: entry.principals.first().cloned().unwrap_or_default(),
        fingerprint,
        valid_before: entry.valid_before,
    })
}

/// Signs `message` for `namespace` with an ed25519 key; returns the armored SSHSIG (LF line ends),
/// the same format `ssh-keygen -Y sign` writes.
pub fn sign(
    message: &[u8],
    namespace: &str,
    key: &ssh_key::PrivateKey,
) -> Result<String, SignatureError> {
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(SignatureError::Signing("only ed25519 keys sign".into()));
    }
    let signature = key
        .sign(namespace, HashAlg::Sha512, message)
        .map_err(|e| SignatureError::Signing(e.to_string()))?;
    signature
        .to_pem(LineEnding::LF)
        .map_err(|e| SignatureError::Signing(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ssh_key::PrivateKey {
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).expect("key")
    }

    fn signers_for(key: &ssh_key::PrivateKey, options: &str) -> AllowedSigners {
        let public = key.public_key().to_openssh().expect("public");
        AllowedSigners::parse(&format!("alice {options} {public}\n"), "test").expect("signers")
    }

    fn now() -> jiff::Timestamp {
        "2026-06-01T00:00:00Z".parse().expect("ts")
    }

    #[test]
    fn sign_then_verify() {
        let k = key();
        let sig = sign(b"hello", "vworkspace-release", &k).expect("sign");
        let who = verify(
            sig.as_bytes(),
            b"hello",
            "vworkspace-release",
            &signers_for(&k, ""),
            now(),
        )
        .expect("ok");
        assert_eq!(who.principal, "alice");
        assert_eq!(
            who.fingerprint,
            k.public_key().fingerprint(HashAlg::Sha256).to_string()
        );
    }

    #[test]
    fn each_refusal() {
        let k = key();
        let sig = sign(b"hello", "vworkspace-release", &k).expect("sign");
        let ok = signers_for(&k, "");
        let v =
            |msg: &[u8], ns: &str, s: &AllowedSigners| verify(sig.as_bytes(), msg, ns, s, now());
        assert!(matches!(
            v(b"hellO", "vworkspace-release", &ok),
            Err(SignatureError::BadSignature { .. })
        ));
        assert!(matches!(
            v(b"hello", "git", &ok),
            Err(SignatureError::WrongNamespace { .. })
        ));
        assert!(matches!(
            v(b"hello", "vworkspace-release", &signers_for(&key(), "")),
            Err(SignatureError::UnknownKey { .. })
        ));
        assert!(matches!(
            v(
                b"hello",
                "vworkspace-release",
                &signers_for(&k, "namespaces=\"git\"")
            ),
            Err(SignatureError::NamespaceNotAllowedForKey { .. })
        ));
        assert!(matches!(
            v(
                b"hello",
                "vworkspace-release",
                &signers_for(&k, "valid-before=\"20260101\"")
            ),
            Err(SignatureError::KeyExpired { .. })
        ));
        assert!(matches!(
            v(
                b"hello",
                "vworkspace-release",
                &signers_for(&k, "valid-after=\"20270101\"")
            ),
            Err(SignatureError::KeyNotYetValid { .. })
        ));
        assert!(matches!(
            verify(
                b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n",
                b"x",
                "git",
                &ok,
                now()
            ),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(&vec![b'a'; MAX_ARMORED_BYTES + 1], b"x", "git", &ok, now()),
            Err(SignatureError::TooLarge(_))
        ));
    }

    #[test]
    fn sha256_signatures_are_refused() {
        let k = key();
        let sig = k
            .sign("git", HashAlg::Sha256, b"m")
            .expect("sign")
            .to_pem(LineEnding::LF)
            .expect("pem");
        let err = verify(sig.as_bytes(), b"m", "git", &signers_for(&k, ""), now())
            .expect_err("sha256 refused");
        assert_eq!(err, SignatureError::UnsupportedHash("sha256".into()));
        assert_eq!(
            err.to_string(),
            "SSH signature uses hash sha256; only sha512 is accepted"
        );
    }

    #[test]
    fn a_second_line_for_the_same_key_can_allow_it() {
        let k = key();
        let public = k.public_key().to_openssh().expect("public");
        let signers = AllowedSigners::parse(
            &format!(
                "old valid-before=\"20260101\" {public}\nnew valid-after=\"20260101\" {public}\n"
            ),
            "t",
        )
        .expect("signers");
        let sig = sign(b"m", "git", &k).expect("sign");
        assert_eq!(
            verify(sig.as_bytes(), b"m", "git", &signers, now())
                .expect("ok")
                .principal,
            "new"
        );
    }
}
