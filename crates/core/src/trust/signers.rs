//! Git's / OpenSSH's `allowed_signers` format: which keys are trusted, for which namespaces, when.
//!
//! Each line is `principals [options] keytype base64-key [comment]` (see `ssh-keygen(1)`, "ALLOWED
//! SIGNERS"). Supported options: `namespaces="a,b"`, `valid-after="..."`, `valid-before="..."`
//! (values in double quotes, as OpenSSH requires). Refused:
//! `cert-authority` (certificates are not supported). Times are `YYYYMMDD[HHMM[SS]][Z]` and are read
//! as UTC whether or not they end in `Z` (OpenSSH reads a time without `Z` as the verifier's local
//! time; a cluster has no meaningful local time). Principals are matched exactly; `*` and `?`
//! patterns are not supported and refused, because a signer list is a list of people, not patterns.

use ssh_key::PublicKey;

/// Most entries one file may hold.
pub const MAX_ENTRIES: usize = 4096;
/// Longest line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// One trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerEntry {
    /// The principals (identities) of the key, in file order.
    pub principals: Vec<String>,
    /// The namespaces the key may sign for (`None`: any).
    pub namespaces: Option<Vec<String>>,
    /// The key is not valid before this instant.
    pub valid_after: Option<jiff::Timestamp>,
    /// The key is not valid after this instant.
    pub valid_before: Option<jiff::Timestamp>,
    /// The public key.
    pub key: PublicKey,
    /// The line in the source it came from (1-based).
    pub line: usize,
}

impl SignerEntry {
    /// Whether the entry lets its key sign in `namespace`.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == namespace))
    }
}

/// A parsed `allowed_signers` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedSigners {
    source: String,
    entries: Vec<SignerEntry>,
}

/// Why an `allowed_signers` file was refused. Messages name the source and the line, never a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignersError {
    /// A line does not follow the format.
    #[error("{source_name}:{line}: {message}")]
    Syntax {
        /// The file or ConfigMap key.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A `cert-authority` entry: certificates are not supported.
    #[error(
        "{source_name}:{line}: cert-authority entries are not supported; list the signing keys themselves"
    )]
    CertAuthority {
        /// The file or ConfigMap key.
        source_name: String,
        /// 1-based line number.
        line: usize,
    },
    /// Too many entries or too long a line.
    #[error("{source_name}: {message}")]
    TooLarge {
        /// The file or ConfigMap key.
        source_name: String,
        /// Which bound.
        message: String,
    },
}

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

fn is_key_type(token: &str) -> bool {
    KEY_TYPES.contains(&token) || token.ends_with("-cert-v01@openssh.com")
}

/// Splits off the next whitespace-delimited token, honouring double quotes (which may appear inside
/// an options token such as `namespaces="git,file"`).
fn next_token(rest: &str) -> Option<(&str, &str)> {
    let rest = rest.trim_start();
    if rest.is_empty() {
        return None;
    }
    let mut in_quotes = false;
    for (i, c) in rest.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => return Some((&rest[..i], &rest[i..])),
            _ => {}
        }
    }
    Some((rest, ""))
}

/// Splits an options token on commas outside quotes.
fn split_options(token: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    for (i, c) in token.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                parts.push(&token[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&token[start..]);
    parts
}

fn unquote(value: &str) -> Result<&str, String> {
    match value.strip_prefix('"') {
        Some(inner) => inner
            .strip_suffix('"')
            .ok_or_else(|| format!("unterminated quote in {value:?}")),
        None => Ok(value),
    }
}

/// Option values must be quoted, as OpenSSH requires (`ssh-keygen` rejects the line otherwise).
fn quoted(option: &str, value: &str) -> Result<String, String> {
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        Ok(value[1..value.len() - 1].to_owned())
    } else {
        Err(format!(
            "option {option}: the value must be in double quotes, as OpenSSH requires"
        ))
    }
}

/// Parses `YYYYMMDD[HHMM[SS]][Z]` as UTC.
pub fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    let digits = text.strip_suffix(['Z', 'z']).unwrap_or(text);
    let bad = || format!("time {text:?} is not YYYYMMDD[HHMM[SS]][Z]");
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 8 | 12 | 14) {
        return Err(bad());
    }
    let field = |range: std::ops::Range<usize>| -> Result<i32, String> {
        digits
            .get(range)
            .unwrap_or("0")
            .parse::<i32>()
            .map_err(|_| bad())
    };
    let number = |range: std::ops::Range<usize>| -> Result<i8, String> {
        i8::try_from(field(range)?).map_err(|_| bad())
    };
    let year = i16::try_from(field(0..4)?).map_err(|_| bad())?;
    let (hour, minute, second) = match digits.len() {
        8 => (0, 0, 0),
        12 => (number(8..10)?, number(10..12)?, 0),
        _ => (number(8..10)?, number(10..12)?, number(12..14)?),
    };
    let civil =
        jiff::civil::DateTime::new(year, number(4..6)?, number(6..8)?, hour, minute, second, 0)
            .map_err(|_| bad())?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|_| bad())
}

impl AllowedSigners {
    /// Parses the text of an `allowed_signers` file; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, SignersError> {
        let mut entries = Vec::new();
        for (index, raw_line) in text.lines().enumerate() {
            let line = index + 1;
            if raw_line.len() > MAX_LINE_BYTES {
                return Err(SignersError::TooLarge {
                    source_name: source.to_owned(),
                    message: format!("line {line} is longer than {MAX_LINE_BYTES} bytes"),
                });
            }
            let trimmed = raw_line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if entries.len() >= MAX_ENTRIES {
                return Err(SignersError::TooLarge {
                    source_name: source.to_owned(),
                    message: format!("more than {MAX_ENTRIES} entries"),
                });
            }
            entries.push(parse_line(trimmed, source, line)?);
        }
        Ok(AllowedSigners {
            source: source.to_owned(),
            entries,
        })
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[SignerEntry] {
        &self.entries
    }

    /// The name of the file or ConfigMap key the entries came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the file lists no key at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_line(text: &str, source: &str, line: usize) -> Result<SignerEntry, SignersError> {
    let syntax = |message: String| SignersError::Syntax {
        source_name: source.to_owned(),
        line,
        message,
    };
    let (principals_token, rest) = next_token(text).ok_or_else(|| syntax("empty entry".into()))?;
    let principals = parse_principals(principals_token).map_err(syntax)?;
    let (mut token, mut rest) =
        next_token(rest).ok_or_else(|| syntax("missing key type and key".into()))?;
    let mut options = LineOptions::default();
    if !is_key_type(token) {
        options = parse_options(token, source, line)?;
        (token, rest) =
            next_token(rest).ok_or_else(|| syntax("missing key type and key".into()))?;
    }
    if !is_key_type(token) {
        return Err(syntax(format!("unknown key type {token:?}")));
    }
    if token.ends_with("-cert-v01@openssh.com") {
        return Err(syntax(
            "certificates are not supported; list the signing key".into(),
        ));
    }
    let (blob, _comment) = next_token(rest).ok_or_else(|| syntax("missing base64 key".into()))?;
    let key = PublicKey::from_openssh(&format!("{token} {blob}"))
        .map_err(|e| syntax(format!("cannot read the {token} key: {e}")))?;
    if let (Some(after), Some(before)) = (options.valid_after, options.valid_before)
        && after >= before
    {
        return Err(syntax("valid-after is not before valid-before".into()));
    }
    Ok(SignerEntry {
        principals,
        namespaces: options.namespaces,
        valid_after: options.valid_after,
        valid_before: options.valid_before,
        key,
        line,
    })
}

/// The principals of a line: exact names, no patterns.
fn parse_principals(token: &str) -> Result<Vec<String>, String> {
    let token = unquote(token)?;
    let principals: Vec<String> = token.split(',').map(str::to_owned).collect();
    if principals.iter().any(|p| p.is_empty()) {
        return Err("empty principal".into());
    }
    if let Some(p) = principals.iter().find(|p| p.contains(['*', '?', '!'])) {
        return Err(format!(
            "principal {p:?}: patterns are not supported, list principals exactly"
        ));
    }
    Ok(principals)
}

/// The options of a line.
#[derive(Default)]
struct LineOptions {
    namespaces: Option<Vec<String>>,
    valid_after: Option<jiff::Timestamp>,
    valid_before: Option<jiff::Timestamp>,
}

/// Parses the options token: `namespaces=`, `valid-after=`, `valid-before=`, each at most once;
/// `cert-authority` and anything else are refused.
fn parse_options(token: &str, source: &str, line: usize) -> Result<LineOptions, SignersError> {
    let syntax = |message: String| SignersError::Syntax {
        source_name: source.to_owned(),
        line,
        message,
    };
    let mut options = LineOptions::default();
    let mut seen: Vec<String> = Vec::new();
    for option in split_options(token) {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, Some(quoted(n, v).map_err(syntax)?)),
            None => (option, None),
        };
        // OpenSSH refuses the line ("multiple \"valid-before\" clauses"); keeping the last one
        // would ignore a `valid-before` an owner put in front to revoke a key.
        let lowered = name.to_ascii_lowercase();
        if seen.contains(&lowered) {
            return Err(syntax(format!(
                "option {lowered} appears more than once; OpenSSH and git refuse such a line"
            )));
        }
        seen.push(lowered);
        match (name.to_ascii_lowercase().as_str(), value) {
            ("cert-authority", None) => {
                return Err(SignersError::CertAuthority {
                    source_name: source.to_owned(),
                    line,
                });
            }
            ("namespaces", Some(v)) => {
                let list: Vec<String> = v.split(',').map(str::to_owned).collect();
                if list.iter().any(|n| n.is_empty()) {
                    return Err(syntax("namespaces= holds an empty namespace".into()));
                }
                options.namespaces = Some(list);
            }
            ("valid-after", Some(v)) => options.valid_after = Some(parse_time(&v).map_err(syntax)?),
            ("valid-before", Some(v)) => {
                options.valid_before = Some(parse_time(&v).map_err(syntax)?)
            }
            _ => return Err(syntax(format!("unknown or malformed option {option:?}"))),
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkKRaHHpI7DSMDqmnlQa5sUVQtHTXlrpxunuSIzUgOF";

    #[test]
    fn parses_plain_and_optioned_entries() {
        let text = format!(
            "# comment\n\nalice@example.org {KEY} alice's laptop\n\
             bob,carol namespaces=\"git,vworkspace-release\",valid-after=\"20260101\",valid-before=\"20270101120000Z\" {KEY}\n"
        );
        let signers = AllowedSigners::parse(&text, "signers").expect("parses");
        let entries = signers.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].principals, ["alice@example.org"]);
        assert_eq!(entries[0].namespaces, None);
        assert_eq!(entries[0].line, 3);
        assert_eq!(entries[1].principals, ["bob", "carol"]);
        assert_eq!(
            entries[1].namespaces.as_deref(),
            Some(&["git".to_owned(), "vworkspace-release".to_owned()][..])
        );
        assert_eq!(
            entries[1].valid_after,
            Some("2026-01-01T00:00:00Z".parse().expect("ts"))
        );
        assert_eq!(
            entries[1].valid_before,
            Some("2027-01-01T12:00:00Z".parse().expect("ts"))
        );
        assert!(entries[1].allows_namespace("git"));
        assert!(!entries[1].allows_namespace("file"));
        assert!(entries[0].allows_namespace("anything"));
    }

    #[test]
    fn time_formats() {
        assert_eq!(
            parse_time("20260102").expect("date"),
            "2026-01-02T00:00:00Z"
                .parse::<jiff::Timestamp>()
                .expect("ts")
        );
        assert_eq!(
            parse_time("202601021304").expect("minutes"),
            "2026-01-02T13:04:00Z"
                .parse::<jiff::Timestamp>()
                .expect("ts")
        );
        assert_eq!(
            parse_time("20260102130405Z").expect("seconds"),
            "2026-01-02T13:04:05Z"
                .parse::<jiff::Timestamp>()
                .expect("ts")
        );
        for bad in [
            "2026",
            "2026010",
            "20261302",
            "20260230",
            "2026010225",
            "2026-01-02",
            "20260102x",
        ] {
            assert!(parse_time(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn errors_name_source_and_line() {
        let err =
            AllowedSigners::parse(&format!("a {KEY}\nb bogus-option=1 {KEY}\n"), "cm/signers")
                .expect_err("bad option");
        assert!(matches!(err, SignersError::Syntax { line: 2, .. }), "{err}");
        assert!(err.to_string().starts_with("cm/signers:2:"), "{err}");

        let err = AllowedSigners::parse("a ssh-ed25519 !!!notbase64\n", "f").expect_err("bad key");
        assert!(matches!(err, SignersError::Syntax { line: 1, .. }), "{err}");

        let err = AllowedSigners::parse("a ssh-foo AAAA\n", "f").expect_err("bad type");
        assert!(err.to_string().contains("unknown"), "{err}");

        let err = AllowedSigners::parse("a\n", "f").expect_err("no key");
        assert!(err.to_string().contains("missing key type"), "{err}");
    }

    #[test]
    fn quoting_case_and_other_key_types() {
        // A 1024-bit RSA key, listed next to an ed25519 one: the file loads (a signature by it is
        // refused later, by `sshsig::verify`).
        const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCbKus2lElfFQ6kzzbz7gKc4Yct7lEBm1cpHg9CK5RHz5+rpDABHlQEAkBoJBBZqZ3QxVZ1ZfXi+7ly6G9CBxA5g1Pj+b5BFKU2Nq2t4BFzylbQe1N7V2O7fk3bYMDBHYT1kK6BEYwexbDc8SHBSLqb3/oHpjpMfP0LyIL6O4APJQ==";
        let text = format!(
            "\"alice@example.org,bob\" NAMESPACES=\"git\",Valid-Before=\"20270101Z\" {KEY} # laptop\r\n\
             \t  # indented comment\r\n\
             carol {RSA} carol's old key\n"
        );
        let signers = AllowedSigners::parse(&text, "f").expect("parses");
        let entries = signers.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].principals, ["alice@example.org", "bob"]);
        assert!(entries[0].allows_namespace("git"));
        assert!(!entries[0].allows_namespace("vworkspace-release"));
        assert_eq!(
            entries[0].valid_before,
            Some("2027-01-01T00:00:00Z".parse().expect("ts"))
        );
        assert_eq!(entries[1].principals, ["carol"]);
        assert_eq!(entries[1].line, 3);
        assert_eq!(
            entries[1].key.algorithm(),
            ssh_key::Algorithm::Rsa { hash: None }
        );
        assert_eq!(signers.source(), "f");
    }

    #[test]
    fn refusals() {
        let err = AllowedSigners::parse(&format!("ca@example.org cert-authority {KEY}\n"), "f")
            .expect_err("ca");
        assert_eq!(
            err,
            SignersError::CertAuthority {
                source_name: "f".into(),
                line: 1
            }
        );
        let err =
            AllowedSigners::parse(&format!("*@example.org {KEY}\n"), "f").expect_err("pattern");
        assert!(
            err.to_string().contains("patterns are not supported"),
            "{err}"
        );
        let err = AllowedSigners::parse(&format!("a valid-after=20270101 {KEY}\n"), "f")
            .expect_err("unquoted");
        assert!(err.to_string().contains("double quotes"), "{err}");
        let err =
            AllowedSigners::parse(&format!("a namespaces=\"git {KEY}\n"), "f").expect_err("quote");
        assert!(matches!(err, SignersError::Syntax { .. }), "{err}");
        let err = AllowedSigners::parse(
            &format!("a valid-after=\"20270101\",valid-before=\"20260101\" {KEY}\n"),
            "f",
        )
        .expect_err("window");
        assert!(
            err.to_string()
                .contains("valid-after is not before valid-before"),
            "{err}"
        );
        let long = format!("a {KEY} {}\n", "x".repeat(MAX_LINE_BYTES));
        assert!(matches!(
            AllowedSigners::parse(&long, "f"),
            Err(SignersError::TooLarge { .. })
        ));
        let many = format!("a {KEY}\n").repeat(MAX_ENTRIES + 1);
        assert!(matches!(
            AllowedSigners::parse(&many, "f"),
            Err(SignersError::TooLarge { .. })
        ));
    }
}
