//! A pinned `known_hosts` file, as given with the credentials (`--known-hosts`, or the source
//! Secret's `known_hosts` key): the only thing that decides whether an SSH server is the one the
//! owner meant. There is no trust on first use and no way to turn the check off.
//!
//! OpenSSH's format: `[@marker] patterns keytype base64 [comment]`, patterns comma-separated, each a
//! host name (`*` and `?` wildcards, `!` negation), `[host]:port` for a port other than 22, or a hashed
//! name (`|1|salt|hmac-sha1`). `@revoked` lines refuse a key; `@cert-authority` lines are ignored
//! (host certificates are not accepted).

use russh::keys::{Algorithm, HashAlg, PublicKey};

/// One host key line.
#[derive(Debug, Clone)]
struct Entry {
    patterns: Vec<String>,
    revoked: bool,
    key: PublicKey,
}

/// The parsed file.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

/// A host key that is not pinned, or is revoked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct HostKeyRefused {
    /// `host` or `[host]:port`, as looked up.
    pub host: String,
    /// The fingerprint (`SHA256:...`) of the key the server presented.
    pub presented: String,
    /// The fingerprints pinned for this host (empty when none is).
    pub pinned: Vec<String>,
    /// Whether the presented key is marked `@revoked`.
    pub revoked: bool,
}

impl HostKeyRefused {
    fn message(&self) -> String {
        if self.revoked {
            return format!(
                "host key of {} ({}) is marked @revoked in known_hosts; nothing fetched",
                self.host, self.presented
            );
        }
        if self.pinned.is_empty() {
            return format!(
                "host {} is not in known_hosts (it presented {}); nothing fetched",
                self.host, self.presented
            );
        }
        format!(
            "host key of {} does not match known_hosts: it presented {}, known_hosts pins {}; nothing fetched",
            self.host,
            self.presented,
            self.pinned.join(", ")
        )
    }
}

/// The name OpenSSH looks a host up by: `host`, or `[host]:port` for any port but 22.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The `SHA256:<base64>` fingerprint `ssh-keygen -l` prints.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl KnownHosts {
    /// Parses a `known_hosts` file; `source` names it in errors (a line number, never a key).
    pub fn parse(text: &str, source: &str) -> Result<KnownHosts, String> {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let problem = |what: &str| format!("{source} line {}: {what}", index + 1);
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let marker = first.strip_prefix('@').map(str::to_owned);
            if marker.is_some() {
                first = fields.next().ok_or_else(|| problem("no host patterns"))?;
            }
            let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
                return Err(problem("expected `[@marker] hosts keytype base64`"));
            };
            let key = PublicKey::from_openssh(&format!("{kind} {blob}"))
                .map_err(|e| problem(&format!("not a public key: {e}")))?;
            match marker.as_deref() {
                None | Some("revoked") => entries.push(Entry {
                    patterns: first.split(',').map(str::to_owned).collect(),
                    revoked: marker.is_some(),
                    key,
                }),
                Some("cert-authority") => {}
                Some(other) => return Err(problem(&format!("unknown marker @{other}"))),
            }
        }
        if !entries.iter().any(|e| !e.revoked) {
            return Err(format!("{source}: no host key in it"));
        }
        Ok(KnownHosts { entries })
    }

    fn for_host<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |entry| host_matches(name, &entry.patterns))
    }

    /// The key algorithms pinned for the host, in file order (what the client offers first).
    pub fn algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let name = lookup_name(host, port);
        let mut algorithms: Vec<Algorithm> = Vec::new();
        for entry in self.for_host(&name).filter(|e| !e.revoked) {
            let algorithm = entry.key.algorithm();
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
        algorithms
    }

    /// Accepts `presented` only when a non-revoked line for the host pins exactly that key.
    pub fn check(
        &self,
        host: &str,
        port: u16,
        presented: &PublicKey,
    ) -> Result<(), HostKeyRefused> {
        let name = lookup_name(host, port);
        let mut refused = HostKeyRefused {
            host: name.clone(),
            presented: fingerprint(presented),
            pinned: Vec::new(),
            revoked: false,
        };
        let same = |entry: &Entry| entry.key.key_data() == presented.key_data();
        if self.for_host(&name).any(|e| e.revoked && same(e)) {
            refused.revoked = true;
            return Err(refused);
        }
        if self.for_host(&name).any(|e| !e.revoked && same(e)) {
            return Ok(());
        }
        refused.pinned = self
            .for_host(&name)
            .filter(|e| !e.revoked)
            .map(|e| fingerprint(&e.key))
            .collect();
        Err(refused)
    }
}

/// OpenSSH's rule: some pattern matches and no negated pattern does.
fn host_matches(name: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for pattern in patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_match(negated, name) {
                return false;
            }
        } else if pattern.starts_with("|1|") {
            matched |= hashed_match(pattern, name);
        } else {
            matched |= wildcard_match(pattern, name);
        }
    }
    matched
}

/// `|1|<base64 salt>|<base64 HMAC-SHA1(salt, name)>`, compared in constant time.
fn hashed_match(pattern: &str, name: &str) -> bool {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut parts = pattern.trim_start_matches("|1|").split('|');
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (engine.decode(salt), engine.decode(hash)) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    ring::hmac::verify(&key, name.as_bytes(), &hash).is_ok()
}

/// Case-insensitive glob with `*` (any run) and `?` (one character), as OpenSSH matches host names.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let name: Vec<char> = name.to_ascii_lowercase().chars().collect();
    let (mut p, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match backtrack {
                Some((star, at)) => {
                    p = star + 1;
                    n = at + 1;
                    backtrack = Some((star, at + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).expect("key")
    }

    #[test]
    fn plain_port_wildcard_and_negated_patterns() {
        let hosts = KnownHosts::parse(
            &format!("# pinned\ngit.example.org,10.0.0.1 {ED}\n[127.0.0.1]:2222 {ED}\n*.corp,!bad.corp {OTHER}\n"),
            "kh",
        )
        .expect("parses");
        assert!(hosts.check("git.example.org", 22, &key(ED)).is_ok());
        assert!(hosts.check("GIT.example.org", 22, &key(ED)).is_ok());
        assert!(hosts.check("127.0.0.1", 2222, &key(ED)).is_ok());
        assert!(hosts.check("a.corp", 22, &key(OTHER)).is_ok());
        let refused = hosts
            .check("bad.corp", 22, &key(OTHER))
            .expect_err("negated");
        assert!(refused.pinned.is_empty());
        assert!(
            refused.to_string().contains("not in known_hosts"),
            "{refused}"
        );
        let refused = hosts
            .check("127.0.0.1", 2222, &key(OTHER))
            .expect_err("wrong key");
        assert_eq!(refused.host, "[127.0.0.1]:2222");
        assert_eq!(refused.pinned, vec![fingerprint(&key(ED))]);
        let text = refused.to_string();
        assert!(text.contains(&fingerprint(&key(OTHER))), "{text}");
        assert!(text.contains(&fingerprint(&key(ED))), "{text}");
        assert!(
            hosts.check("127.0.0.1", 22, &key(ED)).is_err(),
            "port 22 is not 2222"
        );
        assert_eq!(
            hosts.algorithms("git.example.org", 22),
            vec![Algorithm::Ed25519]
        );
    }

    #[test]
    fn hashed_names_and_revoked_keys() {
        // `ssh-keygen -H` of "[127.0.0.1]:2222" with this salt.
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::STANDARD;
        let salt = [7u8; 20];
        let hkey = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
        let tag = ring::hmac::sign(&hkey, b"[127.0.0.1]:2222");
        let hashed = format!("|1|{}|{}", engine.encode(salt), engine.encode(tag.as_ref()));
        let hosts = KnownHosts::parse(
            &format!("{hashed} {ED}\n@revoked * {OTHER}\n@cert-authority *.x {ED}\n"),
            "kh",
        )
        .expect("parses");
        assert!(hosts.check("127.0.0.1", 2222, &key(ED)).is_ok());
        assert!(hosts.check("127.0.0.2", 2222, &key(ED)).is_err());
        assert!(
            hosts
                .check("127.0.0.1", 2222, &key(OTHER))
                .expect_err("revoked")
                .revoked
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_line() {
        assert!(KnownHosts::parse("", "kh").is_err());
        let e = KnownHosts::parse(&format!("h {ED}\nh ssh-ed25519 !!!\n"), "kh").expect_err("bad");
        assert!(e.starts_with("kh line 2:"), "{e}");
        assert!(KnownHosts::parse(&format!("@weird h {ED}\n"), "kh").is_err());
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("git*.org", "github.org"));
        assert!(wildcard_match("10.0.0.?", "10.0.0.7"));
        assert!(!wildcard_match("10.0.0.?", "10.0.0.17"));
        assert!(!wildcard_match("a*b", "acbd"));
    }
}
