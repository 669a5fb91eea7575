//! The Git source: fetch a cluster's intent repository into a persistent per-URL cache with `gix`.
//!
//! One code path serves the first clone and every later fetch: the cache is a bare repository
//! initialized once and fetched into, so the second run transfers only new objects. The network is
//! untrusted transport: nothing fetched is believed until [`vworkspace_core::pipeline`] verifies it, and a
//! failed fetch changes nothing but the cache.
//!
//! Bounds: a wall-clock limit on the whole fetch (a stalled server cannot hang a pass), a byte limit
//! on the pack being received (enforced while it arrives) and an object limit (checked when the pack
//! is indexed). Credentials never appear in errors: URLs are shown without userinfo.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use vworkspace_core::repository::{GitRef, LocalRepository};
use vworkspace_core::secrets::SecretValue;

/// How the source authenticates.
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        /// The user name.
        username: String,
        /// The password or token.
        password: SecretValue,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(SecretValue),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl Auth {
    /// The keys an auth Secret may hold.
    pub const KEYS: [&'static str; 3] = ["username", "password", "bearerToken"];

    /// Builds credentials from the auth Secret's keys as the API returns them (`username` +
    /// `password`, or `bearerToken` alone), each value UTF-8 on one line. `source` names the Secret
    /// in errors; a value never appears in one. Keys other than [`Auth::KEYS`] are the caller's
    /// (e.g. `ca.crt`).
    pub fn from_fields<'a>(
        source: &str,
        fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Auth, SourceError> {
        let mut username = None;
        let mut password = None;
        let mut bearer = None;
        for (key, value) in fields {
            let config = |problem: &str| SourceError::Config {
                message: format!("{source} key {key}: {problem}"),
            };
            let text = std::str::from_utf8(value).map_err(|_| config("not UTF-8 text"))?;
            if text.contains('\n') {
                return Err(config("must be a single line"));
            }
            match key {
                "username" => username = Some(text.to_owned()),
                "password" => password = Some(SecretValue::new(text.as_bytes().to_vec())),
                "bearerToken" => bearer = Some(SecretValue::new(text.as_bytes().to_vec())),
                _ => return Err(config("unknown key (username, password, bearerToken)")),
            }
        }
        match (username, password, bearer) {
            (None, None, None) => Ok(Auth::None),
            (Some(username), Some(password), None) => Ok(Auth::Basic { username, password }),
            (None, None, Some(token)) => Ok(Auth::Bearer(token)),
            _ => Err(SourceError::Config {
                message: format!("{source}: give username and password, or bearerToken alone"),
            }),
        }
    }

    /// Reads credentials from a file of `key=value` lines (what `verify --auth-file` takes): the
    /// same keys as the Secret, see [`Auth::from_fields`].
    pub fn parse(text: &str, source: &str) -> Result<Auth, SourceError> {
        let mut fields = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (key, value) = line.split_once('=').ok_or_else(|| SourceError::Config {
                message: format!(
                    "{source}: expected key=value lines (username, password, bearerToken)"
                ),
            })?;
            fields.push((key.trim(), value.trim().as_bytes()));
        }
        Auth::from_fields(source, fields)
    }
}

/// Limits and settings of one fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Credentials.
    pub auth: Auth,
    /// Extra CA certificates (PEM bundle) trusted for HTTPS, besides the built-in roots.
    pub ca_bundle: Option<PathBuf>,
    /// The whole fetch, connection to last byte.
    pub timeout: Duration,
    /// Largest pack accepted, in bytes.
    pub max_pack_bytes: u64,
    /// Most objects one fetch may bring.
    pub max_objects: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            auth: Auth::None,
            ca_bundle: None,
            timeout: Duration::from_secs(120),
            max_pack_bytes: 512 * 1024 * 1024,
            max_objects: 2_000_000,
        }
    }
}

/// What a fetch did.
#[derive(Debug)]
pub struct Fetched {
    /// The cache repository, ready for [`vworkspace_core::pipeline`].
    pub repo: LocalRepository,
    /// The commit the ref resolved to.
    pub commit: String,
    /// Bytes of pack received by this fetch (0 when nothing was new).
    pub pack_bytes: u64,
    /// Objects received by this fetch.
    pub objects: u64,
    /// Whether the cache had to be created (first clone, or rebuilt after corruption).
    pub cloned: bool,
}

/// Why a fetch failed. URLs in messages never carry credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A bad URL, auth file or CA bundle.
    #[error("{message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// The server could not be reached, refused us, or broke the protocol.
    #[error("fetching {url}: {message}")]
    Fetch {
        /// The URL, redacted.
        url: String,
        /// What gix said (with the URL's userinfo redacted).
        message: String,
    },
    /// The fetch took longer than its limit.
    #[error("fetching {url}: no complete answer within {seconds}s (server down or stalled)")]
    Timeout {
        /// The URL, redacted.
        url: String,
        /// The limit.
        seconds: u64,
    },
    /// The pack was larger than allowed.
    #[error("fetching {url}: the server sent more than {limit} bytes of pack; refused")]
    TooLarge {
        /// The URL, redacted.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The pack had more objects than allowed.
    #[error("fetching {url}: the server sent {count} objects, over the limit of {limit}; refused")]
    TooManyObjects {
        /// The URL, redacted.
        url: String,
        /// What was sent.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// The cache could not be created, locked or read.
    #[error("cache {path}: {message}")]
    Cache {
        /// The cache directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The ref is not on the server.
    #[error("fetching {url}: {reference} not found on the server")]
    RefNotFound {
        /// The URL, redacted.
        url: String,
        /// The ref.
        reference: String,
    },
}

/// `url` without its userinfo (`https://user:secret@host/x` -> `https://***@host/x`).
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if let Some(at) = authority.rfind('@') {
            return format!("{scheme}://***@{}{path}", &authority[at + 1..]);
        }
    }
    url.to_owned()
}

/// Redacts every occurrence of the URL's userinfo in a message from below (gix may echo the URL).
fn redact_message(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &redact_url(url));
    if let Some((_, rest)) = url.split_once("://")
        && let Some(at) = rest[..rest.find('/').unwrap_or(rest.len())].rfind('@')
    {
        let userinfo = &rest[..at];
        if !userinfo.is_empty() {
            out = out.replace(userinfo, "***");
        }
    }
    out
}

/// Whether `text` names a remote (rather than a local path).
pub fn is_url(text: &str) -> bool {
    ["file://", "git://", "http://", "https://"]
        .iter()
        .any(|s| text.starts_with(s))
}

/// The cache directory of `url` under `cache_root`: one bare repository per URL (userinfo excluded).
pub fn cache_path(cache_root: &Path, url: &str) -> PathBuf {
    let digest = Sha256::digest(redact_url(url).as_bytes());
    cache_root.join(hex::encode(&digest[..12]))
}

/// The refspecs that bring `reference` into the cache, and the local ref to read it from.
fn refspecs(reference: &GitRef) -> (Vec<String>, GitRef) {
    match reference {
        GitRef::Branch(b) => (
            vec![format!("+refs/heads/{b}:refs/remotes/origin/{b}")],
            GitRef::Branch(b.clone()),
        ),
        GitRef::Tag(t) => (
            vec![format!("+refs/tags/{t}:refs/tags/{t}")],
            GitRef::Tag(t.clone()),
        ),
        // A commit may sit on any branch: bring all of them (a server need not serve unadvertised ids).
        GitRef::Commit(c) => (
            vec![
                "+refs/heads/*:refs/remotes/origin/*".to_owned(),
                "+refs/tags/*:refs/tags/*".to_owned(),
            ],
            GitRef::Commit(c.clone()),
        ),
        GitRef::Revision(r) if r == "HEAD" => (
            vec!["+HEAD:refs/remotes/origin/HEAD".to_owned()],
            GitRef::Revision("refs/remotes/origin/HEAD".to_owned()),
        ),
        GitRef::Revision(r) => (
            vec![format!("+refs/heads/{r}:refs/remotes/origin/{r}")],
            GitRef::Branch(r.clone()),
        ),
    }
}

/// Fetches `reference` of `url` into the cache under `cache_root` and resolves it.
pub fn fetch(
    url: &str,
    reference: &GitRef,
    cache_root: &Path,
    options: &FetchOptions,
) -> Result<Fetched, SourceError> {
    if !is_url(url) {
        return Err(SourceError::Config {
            message: format!(
                "{}: not a file://, git://, http:// or https:// URL",
                redact_url(url)
            ),
        });
    }
    if !matches!(options.auth, Auth::None) && !url.starts_with("https://") {
        // A password or token sent in clear text is a password or token given away.
        return Err(SourceError::Config {
            message: format!(
                "{}: credentials are only ever sent over https://",
                redact_url(url)
            ),
        });
    }
    let path = cache_path(cache_root, url);
    let cache_error = |message: String| SourceError::Cache {
        path: path.clone(),
        message,
    };
    std::fs::create_dir_all(cache_root).map_err(|e| cache_error(e.to_string()))?;
    // One fetch per cache at a time (held for this call; see `abandon` for fetches that time out).
    let lock_file = std::fs::File::create(path.with_extension("lock"))
        .map_err(|e| cache_error(e.to_string()))?;
    lock_file
        .try_lock()
        .map_err(|_| cache_error("another fetch is still using this cache".into()))?;

    let existed = path.join("HEAD").exists();
    let first = fetch_into(&path, url, reference, options, existed);
    let result = match first {
        Ok(fetched) => Ok(fetched),
        // A broken cache must not wedge the source: rebuild it once from scratch.
        Err(error) if existed && !cache_is_sound(&path) => {
            tracing::warn!(cache = %path.display(), %error, "cache is corrupt; rebuilding it");
            std::fs::remove_dir_all(&path).map_err(|e| cache_error(e.to_string()))?;
            fetch_into(&path, url, reference, options, false)
        }
        Err(error) => Err(error),
    };
    drop(lock_file);
    result
}

/// Moves a cache whose fetch could not be stopped out of the way and deletes it. The stalled worker
/// (blocked in a read no flag can interrupt) then finds its repository gone and ends on its own; the
/// next fetch starts from a fresh clone instead of waiting for it.
fn abandon(path: &Path) {
    let aside = path.with_extension(format!("abandoned-{}", std::process::id()));
    if std::fs::rename(path, &aside).is_ok() {
        let _ = std::fs::remove_dir_all(&aside);
    }
}

/// Whether the cache opens and every ref it holds points at a readable commit and tree.
fn cache_is_sound(path: &Path) -> bool {
    let Ok(repo) = gix::open_opts(path, gix::open::Options::isolated()) else {
        return false;
    };
    let Ok(refs) = repo.references() else {
        return false;
    };
    let Ok(all) = refs.all() else { return false };
    for reference in all {
        let Ok(mut reference) = reference else {
            return false;
        };
        let Ok(id) = reference.peel_to_id() else {
            return false;
        };
        let Ok(object) = repo.find_object(id) else {
            return false;
        };
        if let Ok(commit) = object.try_into_commit()
            && commit.tree().is_err()
        {
            return false;
        }
    }
    true
}

fn fetch_into(
    path: &Path,
    url: &str,
    reference: &GitRef,
    options: &FetchOptions,
    existed: bool,
) -> Result<Fetched, SourceError> {
    let redacted = redact_url(url);
    if !existed {
        create_cache(path)?;
    }
    let (pack_bytes, objects) = fetch_watched(path, url, reference, options)?;
    // A pack that arrived faster than the watchdog looked is checked here; either way nothing of an
    // oversized fetch is kept, or the next fetch would find its refs already moved.
    if let Some(error) = oversized(&redacted, pack_bytes, objects, options) {
        std::fs::remove_dir_all(path).map_err(|e| cache_error(path, e.to_string()))?;
        return Err(error);
    }
    let repo = LocalRepository::open(path).map_err(|e| cache_error(path, e.to_string()))?;
    let (_, local) = refspecs(reference);
    let commit = repo.resolve(&local).map_err(|_| SourceError::RefNotFound {
        url: redacted,
        reference: reference.to_string(),
    })?;
    Ok(Fetched {
        repo,
        commit,
        pack_bytes,
        objects,
        cloned: !existed,
    })
}

fn cache_error(path: &Path, message: String) -> SourceError {
    SourceError::Cache {
        path: path.to_owned(),
        message,
    }
}

/// A new bare cache at `path` (whatever was there is removed).
fn create_cache(path: &Path) -> Result<(), SourceError> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(|e| cache_error(path, e.to_string()))?;
    }
    gix::ThreadSafeRepository::init_opts(
        path,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        gix::open::Options::isolated(),
    )
    .map_err(|e| cache_error(path, format!("cannot create: {e}")))?;
    Ok(())
}

/// The error of a fetch that brought more than the limits allow, if it did.
fn oversized(
    redacted: &str,
    pack_bytes: u64,
    objects: u64,
    options: &FetchOptions,
) -> Option<SourceError> {
    if pack_bytes > options.max_pack_bytes {
        Some(SourceError::TooLarge {
            url: redacted.to_owned(),
            limit: options.max_pack_bytes,
        })
    } else if objects > options.max_objects {
        Some(SourceError::TooManyObjects {
            url: redacted.to_owned(),
            count: objects,
            limit: options.max_objects,
        })
    } else {
        None
    }
}

/// Runs [`run_fetch`] on its own thread and watches it: the deadline and the byte limit are
/// enforced while the pack arrives (by what gix writes under objects/pack). Returns (pack bytes,
/// objects) received.
fn fetch_watched(
    path: &Path,
    url: &str,
    reference: &GitRef,
    options: &FetchOptions,
) -> Result<(u64, u64), SourceError> {
    let redacted = redact_url(url);
    let interrupt = Arc::new(AtomicBool::new(false));
    let (sender, receiver) = std::sync::mpsc::channel();
    let worker = {
        let (cache, url, reference, options, interrupt) = (
            path.to_owned(),
            url.to_owned(),
            reference.clone(),
            options.clone(),
            interrupt.clone(),
        );
        std::thread::Builder::new()
            .name("git-fetch".into())
            .spawn(move || {
                let result = run_fetch(&cache, &url, &reference, &options, &interrupt);
                let _ = sender.send(result);
            })
            .map_err(|e| cache_error(path, format!("cannot start the fetch: {e}")))?
    };
    let deadline = Instant::now() + options.timeout;
    let pack_dir = path.join("objects/pack");
    let before = dir_size(&pack_dir);
    let outcome = loop {
        match receiver.recv_timeout(Duration::from_millis(50)) {
            Ok(result) => break result,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(SourceError::Fetch {
                    url: redacted.clone(),
                    message: "the fetch ended without a result".into(),
                });
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= deadline {
            interrupt.store(true, Ordering::Relaxed);
            // The worker may be blocked in a read that no flag can interrupt: leave it behind with
            // nothing to write to; its result is dropped.
            abandon(path);
            return Err(SourceError::Timeout {
                url: redacted,
                seconds: options.timeout.as_secs(),
            });
        }
        if dir_size(&pack_dir).saturating_sub(before) > options.max_pack_bytes {
            interrupt.store(true, Ordering::Relaxed);
            // Wait for the interrupted fetch to stop writing, then drop whatever it left.
            if receiver.recv_timeout(Duration::from_secs(5)).is_ok() {
                let _ = worker.join();
                let _ = std::fs::remove_dir_all(path);
            } else {
                abandon(path);
            }
            return Err(SourceError::TooLarge {
                url: redacted,
                limit: options.max_pack_bytes,
            });
        }
    };
    let _ = worker.join();
    outcome
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The blocking fetch itself: returns (pack bytes, objects) received.
fn run_fetch(
    path: &Path,
    url: &str,
    reference: &GitRef,
    options: &FetchOptions,
    interrupt: &AtomicBool,
) -> Result<(u64, u64), SourceError> {
    let redacted = redact_url(url);
    let fail = |e: &dyn std::fmt::Display| SourceError::Fetch {
        url: redacted.clone(),
        message: redact_message(&format!("{e:#}"), url),
    };
    let repo = gix::open_opts(path, gix::open::Options::isolated()).map_err(|e| fail(&e))?;
    let (specs, _) = refspecs(reference);
    let remote = repo
        .remote_at(url)
        .map_err(|e| fail(&e))?
        .with_refspecs(
            specs.iter().map(String::as_str),
            gix::remote::Direction::Fetch,
        )
        .map_err(|e| fail(&e))?;
    let mut connection = remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| fail(&e))?;
    if url.starts_with("http://") || url.starts_with("https://") {
        connection = connection.with_transport_options(Box::new(http_options(options)?));
    }
    let auth = options.auth.clone();
    let connection = connection.with_credentials(move |action| match (&auth, action) {
        (Auth::Basic { username, password }, gix::credentials::helper::Action::Get(context)) => {
            Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: username.clone(),
                    password: String::from_utf8_lossy(password.expose()).into_owned(),
                    oauth_refresh_token: None,
                },
                next: context.into(),
            }))
        }
        // No stored or prompted credentials, ever: the Secret is the only source.
        _ => Ok(None),
    });
    let outcome = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| fail(&e))?
        .receive(gix::progress::Discard, interrupt)
        .map_err(|e| fail(&e))?;
    match outcome.status {
        gix::remote::fetch::Status::Change {
            write_pack_bundle, ..
        } => {
            let objects = u64::from(write_pack_bundle.index.num_objects);
            let bytes = write_pack_bundle
                .data_path
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .unwrap_or(0);
            Ok((bytes, objects))
        }
        _ => Ok((0, 0)),
    }
}

fn http_options(
    options: &FetchOptions,
) -> Result<gix::protocol::transport::client::blocking_io::http::Options, SourceError> {
    use gix::protocol::transport::client::blocking_io::http;
    let mut http_options = http::Options::default();
    if let Auth::Bearer(token) = &options.auth {
        let token = String::from_utf8_lossy(token.expose()).into_owned();
        http_options
            .extra_headers
            .push(format!("Authorization: Bearer {token}"));
    }
    let certificates = match &options.ca_bundle {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| SourceError::Config {
                message: format!("CA bundle {}: {e}", path.display()),
            })?;
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SourceError::Config {
                message: format!("CA bundle {}: {e}", path.display()),
            })?
        }
        None => Vec::new(),
    };
    let timeout = options.timeout;
    let configure: Box<http::reqwest::ConfigureClientFn> = Box::new(move |builder| {
        let builder = builder
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(20)));
        Ok(certificates
            .iter()
            .cloned()
            .fold(builder, |b, c| b.add_root_certificate(c)))
    });
    http_options.backend = Some(Arc::new(std::sync::Mutex::new(http::reqwest::Options {
        configure_client: Some(configure),
        configure_request: None,
    })));
    Ok(http_options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://user:hunter2@git.example.org/x.git"),
            "https://***@git.example.org/x.git"
        );
        assert_eq!(
            redact_url("https://git.example.org/a@b"),
            "https://git.example.org/a@b"
        );
        assert_eq!(redact_url("git://host/repo"), "git://host/repo");
        let msg = redact_message(
            "could not reach https://user:hunter2@h/x: user:hunter2 refused",
            "https://user:hunter2@h/x",
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        assert_eq!(
            cache_path(Path::new("/c"), "https://u:p@h/x"),
            cache_path(Path::new("/c"), "https://h/x").with_file_name(
                cache_path(Path::new("/c"), "https://u:p@h/x")
                    .file_name()
                    .unwrap_or_default()
            )
        );
    }

    #[test]
    fn auth_file_format() {
        assert!(matches!(
            Auth::parse("username=a\npassword=b\n", "f"),
            Ok(Auth::Basic { .. })
        ));
        assert!(matches!(
            Auth::parse("bearerToken=t\n", "f"),
            Ok(Auth::Bearer(_))
        ));
        assert!(matches!(Auth::parse("# none\n", "f"), Ok(Auth::None)));
        assert!(Auth::parse("username=a\n", "f").is_err());
        assert!(Auth::parse("token=a\n", "f").is_err());
        let debug = format!(
            "{:?}",
            Auth::parse("username=a\npassword=hunter2\n", "f").expect("ok")
        );
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
