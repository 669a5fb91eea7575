//! The bound-value envelope: where a value may be used, sealed inside its plaintext.

use zeroize::Zeroizing;

use super::{SecretValue, SecretsError};

/// The first line of a bound value's plaintext.
pub const ENVELOPE_MAGIC: &str = "vworkspace-bound-value/v1";

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
    pub(super) fn fields(&self) -> [(&'static str, &str); 4] {
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
pub(super) fn seal(
    plaintext: &[u8],
    binding: &Binding,
) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
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
pub(super) fn open_envelope(
    plaintext: &[u8],
) -> Result<Option<(Binding, SecretValue)>, SecretsError> {
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
