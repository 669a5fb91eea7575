//! age-encrypted values inside `ApplicationInstance.spec.values`.
//!
//! A string leaf that starts with `-----BEGIN AGE ENCRYPTED FILE-----` is a secret value: an
//! ASCII-armored age file encrypted to the cluster's X25519 recipient. Nothing else is secret.
//! Values written by `vworkspace-operator encrypt --cluster --namespace --instance --path` carry their
//! scope in a small text envelope inside the plaintext (see [`Binding`]); the operator refuses a bound
//! value found anywhere but where it was bound.
//!
//! Plaintext lives only in [`SecretValue`], which zeroizes on drop and prints as `<redacted>`.
//! Errors name value paths and reasons, never a value, never a key.

pub mod values_policy;

use std::io::{BufReader, Read, Write};
use std::sync::Arc;

use serde_json::Value;
use zeroize::Zeroizing;

use crate::limits::Limits;

/// The first line of an armored age value.
pub const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
/// The first line of a bound value's plaintext.
pub const ENVELOPE_MAGIC: &str = "vworkspace-bound-value/v1";
/// What `plan` and every report show in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// Decrypted bytes. Zeroized on drop; `Debug` and `Display` print `<redacted>`; not serializable.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

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

/// One or more X25519 identities of the cluster (several during a rotation). `Debug` shows only
/// how many there are.
#[derive(Clone)]
pub struct Identities(Arc<Vec<age::x25519::Identity>>);

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

/// Whether a string leaf is a secret value.
pub fn is_armored(s: &str) -> bool {
    s.starts_with(ARMOR_BEGIN)
}

/// Where a bound value may be used: sealed inside its plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The cluster id.
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// The ApplicationInstance name.
    pub instance: String,
    /// The value path inside `spec.values` (see [`for_each_armored`]).
    pub path: String,
}

impl Binding {
    fn fields(&self) -> [(&'static str, &str); 4] {
        [
            ("cluster", &self.cluster),
            ("namespace", &self.namespace),
            ("instance", &self.instance),
            ("path", &self.path),
        ]
    }
}

/// Encodes the envelope: the magic line, one `name: value` line per binding field, a blank line,
/// then the value bytes verbatim.
fn seal(plaintext: &[u8], binding: &Binding) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    let mut out = Zeroizing::new(Vec::with_capacity(plaintext.len() + 128));
    out.extend_from_slice(ENVELOPE_MAGIC.as_bytes());
    out.push(b'\n');
    for (name, value) in binding.fields() {
        if value.is_empty() || value.contains(['\n', '\r']) {
            return Err(SecretsError::InvalidBinding(name));
        }
        out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(plaintext);
    Ok(out)
}

/// Splits an envelope; `Ok(None)` when the plaintext is not bound.
fn open_envelope(plaintext: &[u8]) -> Result<Option<(Binding, SecretValue)>, SecretsError> {
    let magic = format!("{ENVELOPE_MAGIC}\n");
    let Some(rest) = plaintext.strip_prefix(magic.as_bytes()) else {
        return Ok(None);
    };
    let mut fields: [Option<String>; 4] = [None, None, None, None];
    let names = ["cluster", "namespace", "instance", "path"];
    let mut rest = rest;
    for (i, name) in names.iter().enumerate() {
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| SecretsError::MalformedEnvelope(format!("missing {name} line")))?;
        let line = std::str::from_utf8(&rest[..end])
            .map_err(|_| SecretsError::MalformedEnvelope(format!("{name} line is not UTF-8")))?;
        let value = line
            .strip_prefix(&format!("{name}: "))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SecretsError::MalformedEnvelope(format!("expected the {name} line")))?;
        fields[i] = Some(value.to_owned());
        rest = &rest[end + 1..];
    }
    let value = rest.strip_prefix(b"\n").ok_or_else(|| {
        SecretsError::MalformedEnvelope("missing blank line after the header".into())
    })?;
    let [Some(cluster), Some(namespace), Some(instance), Some(path)] = fields else {
        return Err(SecretsError::MalformedEnvelope("incomplete header".into()));
    };
    Ok(Some((
        Binding {
            cluster,
            namespace,
            instance,
            path,
        },
        SecretValue::new(value.to_vec()),
    )))
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

/// Removes the armor, bounded, and checks the header: only X25519 stanzas. Returns the binary age file.
fn dearmor_and_check(armored: &str, limits: &Limits) -> Result<Vec<u8>, SecretsError> {
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
fn check_header(binary: &[u8]) -> Result<(), SecretsError> {
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

/// Calls `f(path, armored)` for every armored string leaf under `values`, in document order.
///
/// The value path joins map keys and array indices with `.`: `nextcloud.mail.smtp.password`,
/// `users.0.token`. A key that itself contains a `.` makes the path ambiguous: such leaves are
/// reported by [`decrypt_values`] as [`ValueErrorKind::UnaddressablePath`].
pub fn for_each_armored(values: &Value, f: &mut dyn FnMut(&str, &str)) {
    fn walk(value: &Value, path: &mut Vec<String>, f: &mut dyn FnMut(&str, &str)) {
        match value {
            Value::String(s) if is_armored(s) => f(&path.join("."), s),
            Value::Object(map) => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, f);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    walk(v, path, f);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    walk(values, &mut Vec::new(), f);
}

fn path_is_addressable(values: &Value, path: &str) -> bool {
    // Re-walk the dotted path: it must lead back to an armored leaf; a key holding a '.' breaks it.
    let mut node = values;
    for segment in path.split('.') {
        node = match node {
            Value::Object(map) => match map.get(segment) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(items) => match segment.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    matches!(node, Value::String(s) if is_armored(s))
}

/// Replaces the leaf at `path` (dotted, as [`for_each_armored`] reports it).
pub fn set_leaf(values: &mut Value, path: &str, new: Value) -> Result<(), SecretsError> {
    let mut node = values;
    for segment in path.split('.') {
        node = match node {
            Value::Object(map) => map.get_mut(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| SecretsError::NoSuchPath(path.to_owned()))?;
    }
    *node = new;
    Ok(())
}

/// A copy of `values` with every armored leaf replaced by `<redacted>`.
pub fn redact_values(values: &Value) -> Value {
    match values {
        Value::String(s) if is_armored(s) => Value::String(REDACTED.to_owned()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact_values(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_values).collect()),
        other => other.clone(),
    }
}

/// Where values are being checked: the instance whose `spec.values` they sit in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueContext {
    /// The cluster id.
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// The ApplicationInstance name.
    pub instance: String,
}

/// The cluster's policy for values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValuesPolicy {
    /// Refuse values that are not bound.
    pub require_bound: bool,
}

/// What is wrong with one value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueErrorKind {
    /// Decryption or form failed.
    Secrets(SecretsError),
    /// A bound value found somewhere it was not bound to.
    BindingMismatch {
        /// Which field differs: `cluster`, `namespace`, `instance` or `path`.
        field: &'static str,
        /// What the binding says.
        bound_to: String,
    },
    /// The cluster requires bound values and this one is not.
    UnboundValueNotAllowed,
    /// A key on the path contains a `.`, so the value cannot be bound unambiguously.
    UnaddressablePath,
    /// More encrypted values than the limit.
    TooManyValues(usize),
    /// A key that names a credential holds a literal, not an encrypted value (the admission webhook
    /// would refuse the object; `verify` refuses the commit first).
    LiteralCredential,
    /// `spec.values` is nested too deep to be checked (fails closed).
    TooDeep,
}

/// One refused value, named by its file (relative to the repository) and value path:
/// `clusters/<id>/namespaces/<ns>/applicationinstances/<instance>.yaml: spec.values.<path>: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The cluster id (empty when not known: the file is then named relative to the cluster
    /// directory).
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// The ApplicationInstance.
    pub instance: String,
    /// The value path.
    pub path: String,
    /// What is wrong.
    pub kind: ValueErrorKind,
}

impl ValueError {
    /// The file the value sits in, relative to the repository (relative to the cluster directory
    /// when the cluster is not known); empty for a refusal of the whole release.
    pub fn file(&self) -> String {
        if self.namespace.is_empty() || self.instance.is_empty() {
            return String::new();
        }
        let relative = format!(
            "namespaces/{}/applicationinstances/{}.yaml",
            self.namespace, self.instance
        );
        if self.cluster.is_empty() {
            relative
        } else {
            format!("clusters/{}/{relative}", self.cluster)
        }
    }
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self.file();
        match (file.is_empty(), self.path.is_empty()) {
            (true, _) if self.cluster.is_empty() => write!(f, "{}", describe(&self.kind)),
            (true, _) => write!(f, "clusters/{}/: {}", self.cluster, describe(&self.kind)),
            (false, true) => write!(f, "{file}: spec.values: {}", describe(&self.kind)),
            (false, false) => write!(
                f,
                "{file}: spec.values.{}: {}",
                self.path,
                describe(&self.kind)
            ),
        }?;
        match self.fix_command() {
            Some(command) => write!(f, " (`{command}`)"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ValueError {}

fn describe(kind: &ValueErrorKind) -> String {
    match kind {
        ValueErrorKind::Secrets(e) => e.to_string(),
        ValueErrorKind::BindingMismatch { field, bound_to } => format!(
            "value is bound to {field} {bound_to:?}, not to this one (copied from another place?); re-encrypt it for this place"
        ),
        ValueErrorKind::TooDeep => "values are nested too deep to be checked".into(),
        ValueErrorKind::LiteralCredential => {
            "a literal credential; encrypt it, or reference a Secret with secretRef".into()
        }
        ValueErrorKind::UnboundValueNotAllowed => {
            "value is not bound and this cluster requires bound values; re-encrypt it bound".into()
        }
        ValueErrorKind::UnaddressablePath => {
            "a key on this path contains '.', so the value cannot be bound; rename the key".into()
        }
        ValueErrorKind::TooManyValues(limit) => format!("more than {limit} encrypted values"),
    }
}

impl ValueError {
    /// The command that writes a correct value here, when one does.
    pub fn fix_command(&self) -> Option<String> {
        let file = self.file();
        match self.kind {
            ValueErrorKind::BindingMismatch { .. }
            | ValueErrorKind::LiteralCredential
            | ValueErrorKind::UnboundValueNotAllowed
                if !file.is_empty() && !self.path.is_empty() =>
            {
                Some(format!(
                    "vworkspace-operator encrypt --recipient <the cluster's age1... recipient> --in-place {file} --path {}",
                    self.path
                ))
            }
            _ => None,
        }
    }
}

/// Every value of one instance, decrypted. `Debug` prints paths only.
#[derive(Default)]
pub struct DecryptedValues {
    entries: Vec<(String, SecretValue, bool)>,
}

impl std::fmt::Debug for DecryptedValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|(p, _, bound)| format!("{p} (bound: {bound}) = {REDACTED}")),
            )
            .finish()
    }
}

impl DecryptedValues {
    /// How many values.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// The paths of values that are not bound (accepted, but reported).
    pub fn unbound_paths(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, _, b)| !b)
            .map(|(p, _, _)| p.clone())
            .collect()
    }
    /// `(path, value, bound)` for every value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretValue, bool)> {
        self.entries.iter().map(|(p, v, b)| (p.as_str(), v, *b))
    }
}

/// Every armored leaf as `(dotted path, armor, addressable)`. A leaf is addressable only when no key
/// on its path contains a `.` (and the dotted path leads back to it): a bound value at
/// `values["a.b"]` names the path `a.b`, which a copy at `values.a.b` would also answer to.
fn collect_leaves(
    values: &Value,
    at: &ValueContext,
    limits: &Limits,
) -> Result<Vec<(String, String, bool)>, Vec<ValueError>> {
    fn walk(
        value: &Value,
        path: &mut Vec<String>,
        dotted: bool,
        out: &mut Vec<(String, String, bool)>,
    ) {
        match value {
            Value::String(s) if is_armored(s) => out.push((path.join("."), s.clone(), !dotted)),
            Value::Object(map) => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, dotted || k.contains('.'), out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    walk(v, path, dotted, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut leaves = Vec::new();
    walk(values, &mut Vec::new(), false, &mut leaves);
    for leaf in &mut leaves {
        leaf.2 = leaf.2 && path_is_addressable(values, &leaf.0);
    }
    if leaves.len() > limits.max_secret_values {
        return Err(vec![ValueError {
            cluster: at.cluster.clone(),
            namespace: at.namespace.clone(),
            instance: at.instance.clone(),
            path: String::new(),
            kind: ValueErrorKind::TooManyValues(limits.max_secret_values),
        }]);
    }
    Ok(leaves)
}

/// Decrypts every armored leaf of one instance's `spec.values`, checks bindings and policy, and
/// collects every refusal (one per bad leaf).
pub fn decrypt_values(
    values: &Value,
    at: &ValueContext,
    identities: &Identities,
    policy: &ValuesPolicy,
    limits: &Limits,
) -> Result<DecryptedValues, Vec<ValueError>> {
    let leaves = collect_leaves(values, at, limits)?;
    let mut errors = Vec::new();
    let mut decrypted = DecryptedValues::default();
    for (path, armored, addressable) in leaves {
        let error = |kind| ValueError {
            cluster: at.cluster.clone(),
            namespace: at.namespace.clone(),
            instance: at.instance.clone(),
            path: path.clone(),
            kind,
        };
        if !addressable {
            errors.push(error(ValueErrorKind::UnaddressablePath));
            continue;
        }
        match decrypt(&armored, identities, limits) {
            Err(e) => errors.push(error(ValueErrorKind::Secrets(e))),
            Ok((Some(binding), value)) => {
                let expected = [
                    ("cluster", &at.cluster),
                    ("namespace", &at.namespace),
                    ("instance", &at.instance),
                    ("path", &path),
                ];
                match binding
                    .fields()
                    .into_iter()
                    .zip(expected)
                    .find(|((_, bound), (_, here))| bound != here)
                {
                    Some(((field, bound_to), _)) => {
                        errors.push(error(ValueErrorKind::BindingMismatch {
                            field,
                            bound_to: bound_to.to_owned(),
                        }))
                    }
                    None => decrypted.entries.push((path.clone(), value, true)),
                }
            }
            Ok((None, value)) => {
                if policy.require_bound {
                    errors.push(error(ValueErrorKind::UnboundValueNotAllowed));
                } else {
                    decrypted.entries.push((path.clone(), value, false));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(decrypted)
    } else {
        Err(errors)
    }
}

/// Checks every armored leaf without identities (e.g. in a pull request's CI, which must not hold
/// the cluster's key): size, armor, header, X25519 stanzas only. Returns how many values there are.
pub fn check_values_form(
    values: &Value,
    at: &ValueContext,
    limits: &Limits,
) -> Result<usize, Vec<ValueError>> {
    let leaves = collect_leaves(values, at, limits)?;
    let mut errors = Vec::new();
    for (path, armored, addressable) in &leaves {
        let kind = if !addressable {
            Some(ValueErrorKind::UnaddressablePath)
        } else {
            dearmor_and_check(armored, limits)
                .err()
                .map(ValueErrorKind::Secrets)
        };
        if let Some(kind) = kind {
            errors.push(ValueError {
                cluster: at.cluster.clone(),
                namespace: at.namespace.clone(),
                instance: at.instance.clone(),
                path: path.clone(),
                kind,
            });
        }
    }
    if errors.is_empty() {
        Ok(leaves.len())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &str = "hunter2-PLAINTEXT-MARKER";

    fn keys() -> (Identities, String) {
        let (secret, recipient) = generate();
        let ids = Identities::parse(secret.expose_str().expect("utf8"), "test").expect("identity");
        (ids, recipient)
    }

    fn ctx() -> ValueContext {
        ValueContext {
            cluster: "demo".into(),
            namespace: "org-a".into(),
            instance: "app".into(),
        }
    }

    fn binding(path: &str) -> Binding {
        Binding {
            cluster: "demo".into(),
            namespace: "org-a".into(),
            instance: "app".into(),
            path: path.into(),
        }
    }

    #[test]
    fn bound_round_trip_and_mismatches() {
        let (ids, rcpt) = keys();
        let limits = Limits::default();
        let good =
            encrypt(MARKER.as_bytes(), &rcpt, Some(&binding("smtp.password"))).expect("encrypt");
        let values = serde_json::json!({"smtp": {"password": good.clone(), "host": "h"}});
        let decrypted =
            decrypt_values(&values, &ctx(), &ids, &ValuesPolicy::default(), &limits).expect("ok");
        assert_eq!(decrypted.len(), 1);
        assert_eq!(
            decrypted
                .iter()
                .next()
                .map(|(_, v, b)| (v.expose().to_vec(), b)),
            Some((MARKER.as_bytes().to_vec(), true))
        );
        assert!(!format!("{decrypted:?}").contains(MARKER));

        // Moved to another path, instance, namespace or cluster.
        let moved = serde_json::json!({"smtp": {"user": good.clone()}});
        let errs = decrypt_values(&moved, &ctx(), &ids, &ValuesPolicy::default(), &limits)
            .expect_err("moved");
        assert!(
            matches!(
                &errs[0].kind,
                ValueErrorKind::BindingMismatch { field: "path", .. }
            ),
            "{errs:?}"
        );
        for (field, other) in [
            (
                "instance",
                ValueContext {
                    instance: "other".into(),
                    ..ctx()
                },
            ),
            (
                "namespace",
                ValueContext {
                    namespace: "org-b".into(),
                    ..ctx()
                },
            ),
            (
                "cluster",
                ValueContext {
                    cluster: "prod".into(),
                    ..ctx()
                },
            ),
        ] {
            let errs = decrypt_values(&values, &other, &ids, &ValuesPolicy::default(), &limits)
                .expect_err("moved");
            assert!(
                matches!(&errs[0].kind, ValueErrorKind::BindingMismatch { field: f, .. } if *f == field),
                "{errs:?}"
            );
            assert!(
                errs[0].to_string().contains("spec.values.smtp.password"),
                "{}",
                errs[0]
            );
            assert!(!errs[0].to_string().contains(MARKER));
        }
    }

    #[test]
    fn unbound_values_are_reported_and_can_be_refused() {
        let (ids, rcpt) = keys();
        let plain = encrypt(MARKER.as_bytes(), &rcpt, None).expect("encrypt");
        let values = serde_json::json!({"list": [{"token": plain}]});
        let ok = decrypt_values(
            &values,
            &ctx(),
            &ids,
            &ValuesPolicy::default(),
            &Limits::default(),
        )
        .expect("ok");
        assert_eq!(ok.unbound_paths(), ["list.0.token"]);
        let errs = decrypt_values(
            &values,
            &ctx(),
            &ids,
            &ValuesPolicy {
                require_bound: true,
            },
            &Limits::default(),
        )
        .expect_err("refused");
        assert_eq!(errs[0].kind, ValueErrorKind::UnboundValueNotAllowed);
    }

    #[test]
    fn envelope_rules() {
        assert!(matches!(
            seal(b"x", &binding("a\nb")),
            Err(SecretsError::InvalidBinding("path"))
        ));
        assert!(matches!(
            seal(b"x", &binding("")),
            Err(SecretsError::InvalidBinding("path"))
        ));
        let sealed = seal(b"v\n\nw", &binding("p")).expect("seal");
        let (b, v) = open_envelope(&sealed).expect("open").expect("bound");
        assert_eq!(b, binding("p"));
        assert_eq!(v.expose(), b"v\n\nw");
        let broken = format!("{ENVELOPE_MAGIC}\ncluster: demo\nnamespace org-a\n");
        assert!(matches!(
            open_envelope(broken.as_bytes()),
            Err(SecretsError::MalformedEnvelope(_))
        ));
        assert!(open_envelope(b"plain value").expect("unbound").is_none());
    }

    #[test]
    fn keys_with_dots_are_unaddressable() {
        let (ids, rcpt) = keys();
        let v = encrypt(b"x", &rcpt, None).expect("encrypt");
        let values = serde_json::json!({"a.b": v});
        let errs = decrypt_values(
            &values,
            &ctx(),
            &ids,
            &ValuesPolicy::default(),
            &Limits::default(),
        )
        .expect_err("dot");
        assert_eq!(errs[0].kind, ValueErrorKind::UnaddressablePath);
    }

    #[test]
    fn identity_errors_never_echo_keys() {
        let (secret, _) = generate();
        let text = secret.expose_str().expect("utf8").to_owned();
        // Change the last (checksum) character to a different one: bech32 detects any single change.
        let last = if text.ends_with('Q') { 'P' } else { 'Q' };
        let broken = format!("# comment\n{}{last}\n", &text[..text.len() - 1]);
        let err = Identities::parse(&broken, "identity.txt").expect_err("bad");
        assert_eq!(
            err,
            SecretsError::InvalidIdentity {
                source_name: "identity.txt".into(),
                line: 2
            }
        );
        assert!(!err.to_string().contains(&text[15..40]));
        assert!(matches!(
            Identities::parse("# nothing\n", "empty"),
            Err(SecretsError::NoIdentities(_))
        ));
        let (ids, _) = keys();
        assert!(!format!("{ids:?}").contains("AGE-SECRET-KEY"));
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(format!("{secret}"), REDACTED);
    }

    #[test]
    fn redact_and_set_leaf() {
        let mut values =
            serde_json::json!({"a": {"b": format!("{ARMOR_BEGIN}\nxx\n")}, "c": [1, "d"]});
        assert_eq!(
            redact_values(&values),
            serde_json::json!({"a": {"b": REDACTED}, "c": [1, "d"]})
        );
        set_leaf(&mut values, "c.1", Value::String("e".into())).expect("set");
        assert_eq!(values["c"][1], "e");
        assert!(matches!(
            set_leaf(&mut values, "c.9", Value::Null),
            Err(SecretsError::NoSuchPath(_))
        ));
    }
}
