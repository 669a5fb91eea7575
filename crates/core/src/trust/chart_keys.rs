//! Chart signing keys: the cosign public keys a `Cluster` names (`spec.chartVerification`), one
//! ConfigMap key in the operator's namespace holding one or more PEM `PUBLIC KEY` blocks. Each block
//! becomes one `<n>.pub` entry of the Secret source-controller reads for `OCIRepository.spec.verify`
//! (cosign loads one key per entry). Bounded: the text, the number of keys.

use base64::Engine as _;

/// The most keys one Cluster names (a rotation holds two or three).
pub const MAX_CHART_KEYS: usize = 16;
/// The longest key text read.
pub const MAX_CHART_KEYS_BYTES: usize = 64 * 1024;

const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
const END: &str = "-----END PUBLIC KEY-----";

/// Why the chart keys cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChartKeysError {
    /// No `PUBLIC KEY` block.
    #[error(
        "{0}: no PEM PUBLIC KEY block (cosign public keys, as `cosign generate-key-pair` writes cosign.pub)"
    )]
    Empty(String),
    /// Over [`MAX_CHART_KEYS_BYTES`] or [`MAX_CHART_KEYS`].
    #[error("{0}: over the limit of {MAX_CHART_KEYS} keys and {MAX_CHART_KEYS_BYTES} bytes")]
    TooLarge(String),
    /// A block without its end line, or text outside the blocks.
    #[error("{source_name}: line {line}: {problem}")]
    Malformed {
        /// Where the text came from.
        source_name: String,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        problem: &'static str,
    },
}

/// The keys, each one PEM block as cosign reads it (ending in a newline), in the order written.
pub fn parse(text: &str, source: &str) -> Result<Vec<String>, ChartKeysError> {
    if text.len() > MAX_CHART_KEYS_BYTES {
        return Err(ChartKeysError::TooLarge(source.to_owned()));
    }
    let malformed = |line: usize, problem: &'static str| ChartKeysError::Malformed {
        source_name: source.to_owned(),
        line,
        problem,
    };
    let mut keys = Vec::new();
    let mut body: Option<String> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        match (&mut body, line) {
            (None, "") => {}
            (None, BEGIN) => body = Some(String::new()),
            (None, _) => return Err(malformed(index + 1, "text outside a PUBLIC KEY block")),
            (Some(b64), END) => {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|_| malformed(index + 1, "the block is not base64"))?;
                if der.is_empty() {
                    return Err(malformed(index + 1, "an empty PUBLIC KEY block"));
                }
                keys.push(pem(b64));
                body = None;
                if keys.len() > MAX_CHART_KEYS {
                    return Err(ChartKeysError::TooLarge(source.to_owned()));
                }
            }
            (Some(b64), _) => b64.push_str(line),
        }
    }
    if body.is_some() {
        return Err(malformed(
            text.lines().count(),
            "a PUBLIC KEY block without its END line",
        ));
    }
    if keys.is_empty() {
        return Err(ChartKeysError::Empty(source.to_owned()));
    }
    Ok(keys)
}

fn pem(b64: &str) -> String {
    let mut out = format!("{BEGIN}\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ECDSA P-256 public key as `cosign generate-key-pair` writes it (SubjectPublicKeyInfo).
    const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEaXq5Nq7ZsYw4bEMm2dTk8m1x0vQz\nR2l0S3lTz0l0d0wq2u3xY1p3n8cQ0m5u7VXh9vJ8YB0bHc2b2VX0k3q1Zg==\n-----END PUBLIC KEY-----\n";

    #[test]
    fn keys_parse_one_block_each_and_refuse_the_rest() {
        let two = format!("{KEY}\n{KEY}");
        let keys = parse(&two, "ConfigMap s/k").expect("two keys");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], KEY);
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "no PEM PUBLIC KEY block"),
            ("hello\n".into(), "line 1: text outside a PUBLIC KEY block"),
            (
                KEY.replace("-----END PUBLIC KEY-----\n", ""),
                "without its END line",
            ),
            (KEY.replace("MFkw", "MF!w"), "not base64"),
            (
                "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n".into(),
                "empty PUBLIC KEY",
            ),
            (KEY.repeat(MAX_CHART_KEYS + 1), "over the limit"),
            ("x".repeat(MAX_CHART_KEYS_BYTES + 1), "over the limit"),
            (
                KEY.replace("PUBLIC KEY", "PRIVATE KEY"),
                "text outside a PUBLIC KEY block",
            ),
        ];
        for (text, want) in cases {
            let got = parse(&text, "ConfigMap s/k").expect_err(want).to_string();
            assert!(got.starts_with("ConfigMap s/k"), "{got}");
            assert!(got.contains(want), "{want}: {got}");
        }
    }
}
