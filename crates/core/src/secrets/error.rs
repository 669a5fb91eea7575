//! [`SecretsError`]: why a value, a recipient or an identity was refused.

/// Why a value or an identity was refused. Never carries plaintext or key material.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretsError {
    /// Not a well-formed armored age file.
    #[error("not a well-formed ASCII-armored age value: {0}")]
    Malformed(String),
    /// The armored value or its plaintext is over the limit.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A passphrase (scrypt) stanza: only X25519 recipients are accepted.
    #[error(
        "encrypted with a passphrase (scrypt); encrypt to the cluster's age1... recipient instead"
    )]
    PassphraseNotAllowed,
    /// A stanza type other than X25519 (plugins, SSH recipients, post-quantum).
    #[error(
        "recipient stanza type {0:?} is not accepted; encrypt to the cluster's X25519 recipient (age1...)"
    )]
    UnsupportedStanza(String),
    /// None of the cluster's identities opens the value.
    #[error("no identity of this cluster decrypts it (encrypted to another recipient?)")]
    NoMatchingIdentity,
    /// The ciphertext was damaged or forged.
    #[error("decryption failed: {0}")]
    DecryptionFailed(String),
    /// The plaintext starts like a bound value but the envelope is broken.
    #[error("bound-value envelope is malformed: {0}")]
    MalformedEnvelope(String),
    /// A binding field holds a newline or is empty.
    #[error("binding field {0} must be non-empty and hold no newline")]
    InvalidBinding(&'static str),
    /// The recipient string is not an age X25519 recipient. Holds a safe description of what was
    /// given (the text itself only when it is public: an `age1...` string), never key material.
    #[error("recipient {0} is not an age X25519 recipient (age1...)")]
    InvalidRecipient(String),
    /// A secret key was given where a recipient (public key) belongs. The key is never echoed.
    #[error(
        "the recipient given is {0}, not a recipient; it was not printed. Give the public recipient (age1...): `age-keygen -y IDENTITY_FILE` prints it. Treat the key as exposed if it went into a shared log or shell history"
    )]
    SecretKeyAsRecipient(&'static str),
    /// An identity file could not be read. Never echoes the offending line.
    #[error("{source_name}:{line}: not an age X25519 identity (AGE-SECRET-KEY-1...)")]
    InvalidIdentity {
        /// The file or Secret key.
        source_name: String,
        /// 1-based line number.
        line: usize,
    },
    /// An identity file holds no identity.
    #[error("{0}: holds no age identity")]
    NoIdentities(String),
    /// Encryption failed.
    #[error("encryption failed: {0}")]
    Encrypt(String),
    /// A value path that [`set_leaf`] cannot follow.
    #[error("no value at path {0}")]
    NoSuchPath(String),
}
