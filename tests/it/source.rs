//! The Git source against real servers on loopback, started by the tests: `git daemon` for git://,
//! and `git http-backend` behind a small HTTP/1.1 server for smart HTTP (with and without auth), plus
//! servers that are down, stall, send garbage or die mid-fetch.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::*;
use vworkspace_controller::source::{self, Auth, FetchOptions, SourceError};
use vworkspace_core::repository::GitRef;

pub(crate) use crate::support::free_port;

pub(crate) fn wait_for(port: u16) -> bool {
    (0..100).any(|_| {
        let up = TcpStream::connect(("127.0.0.1", port)).is_ok();
        if !up {
            std::thread::sleep(Duration::from_millis(50));
        }
        up
    })
}

/// The fixture's repository published as a bare repository under `root/served/intent.git`.
pub(crate) struct Upstream {
    pub(crate) fixture: Fixture,
    pub(crate) served: PathBuf,
}

impl Upstream {
    pub(crate) fn new() -> Upstream {
        let fixture = fixture();
        let served = fixture.root.join("served");
        std::fs::create_dir_all(&served).expect("mkdir");
        run(Command::new("git")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args(["clone", "-q", "--bare"])
            .arg(&fixture.repo)
            .arg(served.join("intent.git")));
        fixture.git(&[
            "remote",
            "add",
            "origin",
            served.join("intent.git").to_str().expect("utf8"),
        ]);
        Upstream { fixture, served }
    }

    pub(crate) fn push(&self, force: bool) {
        let mut args = vec!["push", "-q", "origin", "main"];
        if force {
            args.push("--force");
        }
        self.fixture.git(&args);
    }

    pub(crate) fn head(&self) -> String {
        self.fixture.git(&["rev-parse", "HEAD"])
    }

    pub(crate) fn file_url(&self) -> String {
        format!("file://{}", self.served.join("intent.git").display())
    }
}

struct Daemon(Child, u16);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `$(git --exec-path)/git-daemon`.
fn git_daemon_binary() -> PathBuf {
    let out = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git --exec-path");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("git-daemon")
}

fn git_daemon(base: &Path) -> Daemon {
    // Another test may take the same free port between our probe and the daemon's bind; a daemon that
    // lost that race exits at once, so check it is still ours before using it, and retry otherwise.
    for _ in 0..20 {
        let port = free_port();
        // git-daemon itself, not the `git daemon` wrapper: killing the wrapper would leave the
        // daemon running after the test.
        let mut child = Command::new(git_daemon_binary())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args(["--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let listening = wait_for(port);
        std::thread::sleep(Duration::from_millis(100));
        if listening && child.try_wait().expect("try_wait").is_none() {
            return Daemon(child, port);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("no git daemon could bind a port");
}

/// An address where nothing listens: port 1 on loopback (privileged, never bound by these tests).
fn nothing_listens() -> u16 {
    1
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Serve normally.
    Normal,
    /// Accept connections and never answer.
    Stall,
    /// Answer every request with nonsense.
    Garbage,
    /// Serve ref advertisements, then cut the pack off halfway and close.
    DieMidPack,
}

struct Http {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Drop for Http {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A small HTTP/1.1 server in front of `git http-backend` (CGI). `auth`: the exact Authorization
/// header value required, if any.
fn http_server(root: &Path, mode: Mode, auth: Option<String>) -> Http {
    server(root, mode, auth, None)
}

/// A self-signed certificate for 127.0.0.1 (made by `openssl`), as a rustls server config and the
/// PEM file a client must trust.
fn tls(dir: &Path) -> (Arc<rustls::ServerConfig>, PathBuf) {
    use rustls::pki_types::pem::PemObject;
    let (ca, cert, key) = crate::support::tls::certificate(dir, "test");
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("config");
    (Arc::new(config), ca)
}

fn server(
    root: &Path,
    mode: Mode,
    auth: Option<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Http {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let (root, stop2, tls) = (root.to_owned(), stop.clone(), tls);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let (root, auth, tls) = (root.clone(), auth.clone(), tls.clone());
            std::thread::spawn(move || {
                let _ = match tls {
                    Some(config) => match rustls::ServerConnection::new(config) {
                        Ok(conn) => serve(
                            rustls::StreamOwned::new(conn, stream),
                            &root,
                            mode,
                            auth.as_deref(),
                        ),
                        Err(_) => Ok(()),
                    },
                    None => serve(stream, &root, mode, auth.as_deref()),
                };
            });
        }
    });
    Http { port, stop }
}

fn serve<S: Read + Write>(
    stream: S,
    root: &Path,
    mode: Mode,
    auth: Option<&str>,
) -> std::io::Result<()> {
    if mode == Mode::Stall {
        std::thread::sleep(Duration::from_secs(30));
        return Ok(());
    }
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(len) = header("content-length") {
            body.resize(len.parse().unwrap_or(0), 0);
            reader.read_exact(&mut body)?;
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let stream = reader.get_mut();
        if mode == Mode::Garbage {
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\nContent-Length: 24\r\n\r\nthis is not a git server")?;
            continue;
        }
        if let Some(required) = auth
            && header("authorization").as_deref() != Some(required)
        {
            stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut cgi = Command::new("git")
            .arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", &method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
            .env("CONTENT_LENGTH", body.len().to_string())
            .env(
                "HTTP_CONTENT_ENCODING",
                header("content-encoding").unwrap_or_default(),
            )
            .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        cgi.stdin.take().expect("stdin").write_all(&body)?;
        let output = cgi.wait_with_output()?.stdout;
        let split = output
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| (p, 4))
            .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
        let Some((end, sep)) = split else {
            stream.write_all(b"HTTP/1.1 500 Bad CGI\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        };
        let cgi_headers = String::from_utf8_lossy(&output[..end]).into_owned();
        let mut content = output[end + sep..].to_vec();
        let mut status = "200 OK".to_owned();
        let mut response = String::new();
        for line in cgi_headers.lines() {
            match line.split_once(':') {
                Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
                Some(_) => response.push_str(&format!("{line}\r\n")),
                None => {}
            }
        }
        let die = mode == Mode::DieMidPack && method == "POST";
        if die {
            content.truncate(content.len() / 2);
        }
        let length = if die {
            content.len() * 2
        } else {
            content.len()
        };
        stream.write_all(
            format!("HTTP/1.1 {status}\r\n{response}Content-Length: {length}\r\n\r\n").as_bytes(),
        )?;
        stream.write_all(&content)?;
        stream.flush()?;
        if die {
            // The server dies mid-pack: the connection drops with the response half sent.
            return Ok(());
        }
    }
}

pub(crate) fn options() -> FetchOptions {
    FetchOptions {
        timeout: Duration::from_secs(60),
        ..FetchOptions::default()
    }
}

pub(crate) fn main_branch() -> GitRef {
    GitRef::Branch("main".into())
}

/// Adds a signed release 2 to the fixture and pushes it; returns the new head.
pub(crate) fn second_release(up: &Upstream) -> String {
    up.fixture.write(
        "clusters/demo/namespaces/org-myteam/operations/weekly.yaml",
        &BACKUP.replace("nightly", "weekly"),
    );
    up.fixture.release(&[]);
    up.fixture.commit("release 2");
    up.push(false);
    up.head()
}

#[test]
fn file_url_clone_then_incremental_fetch() {
    let up = Upstream::new();
    let cache = up.fixture.root.join("cache");
    let first = source::fetch(&up.file_url(), &main_branch(), &cache, &options()).expect("clone");
    assert!(first.cloned);
    assert_eq!(first.commit, up.head());
    assert!(first.objects > 0);

    let unchanged =
        source::fetch(&up.file_url(), &main_branch(), &cache, &options()).expect("fetch");
    assert!(!unchanged.cloned);
    assert_eq!(
        (unchanged.objects, unchanged.pack_bytes),
        (0, 0),
        "nothing new travels"
    );

    let new_head = second_release(&up);
    let second = source::fetch(&up.file_url(), &main_branch(), &cache, &options()).expect("fetch");
    assert_eq!(second.commit, new_head);
    assert!(!second.cloned);
    // Only the new commit's objects travel: the commit, the changed trees, the new and changed blobs.
    let expected: usize = up
        .fixture
        .git(&[
            "rev-list",
            "--objects",
            &format!("{}..{new_head}", first.commit),
        ])
        .lines()
        .count();
    // The server may send a thin pack whose bases are then appended locally: at least the new objects,
    // and far fewer than a clone.
    assert!(
        second.objects >= expected as u64,
        "{} < {expected}",
        second.objects
    );
    assert!(
        second.objects < first.objects,
        "{} >= {}",
        second.objects,
        first.objects
    );
    assert!(second.pack_bytes < first.pack_bytes);
}

#[test]
fn git_daemon_serves_branch_tag_and_commit_pins() {
    let up = Upstream::new();
    let head = up.head();
    up.fixture.git(&["tag", "-a", "-m", "r1", "release-1"]);
    up.fixture.git(&["push", "-q", "origin", "release-1"]);
    let daemon = git_daemon(&up.served);
    let url = format!("git://127.0.0.1:{}/intent.git", daemon.1);
    let cache = up.fixture.root.join("cache");
    assert_eq!(
        source::fetch(&url, &main_branch(), &cache, &options())
            .expect("branch")
            .commit,
        head
    );
    assert_eq!(
        source::fetch(&url, &GitRef::Tag("release-1".into()), &cache, &options())
            .expect("tag")
            .commit,
        head
    );
    assert_eq!(
        source::fetch(&url, &GitRef::Commit(head.clone()), &cache, &options())
            .expect("commit")
            .commit,
        head
    );
    let missing =
        source::fetch(&url, &GitRef::Tag("nope".into()), &cache, &options()).expect_err("no tag");
    assert!(
        matches!(
            missing,
            SourceError::RefNotFound { .. } | SourceError::Fetch { .. }
        ),
        "{missing}"
    );
}

#[test]
fn smart_http_without_and_with_auth() {
    let up = Upstream::new();
    let open = http_server(&up.served, Mode::Normal, None);
    let url = format!("http://127.0.0.1:{}/intent.git", open.port);
    let cache = up.fixture.root.join("cache-open");
    assert_eq!(
        source::fetch(&url, &main_branch(), &cache, &options())
            .expect("http")
            .commit,
        up.head()
    );

    // Credentials are never sent in clear text.
    let clear = FetchOptions {
        auth: Auth::parse("bearerToken=tok-123\n", "auth").expect("auth"),
        ..options()
    };
    assert!(matches!(
        source::fetch(&url, &main_branch(), &cache, &clear),
        Err(SourceError::Config { .. })
    ));

    // HTTPS with the test CA: basic auth passes with the right password, fails without leaking it.
    let (tls_config, ca) = tls(&up.fixture.root);
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("odoo:s3cret-PASSWORD")
    );
    let guarded = server(
        &up.served,
        Mode::Normal,
        Some(basic),
        Some(tls_config.clone()),
    );
    let url = format!("https://127.0.0.1:{}/intent.git", guarded.port);
    let good = FetchOptions {
        auth: Auth::parse("username=odoo\npassword=s3cret-PASSWORD\n", "auth").expect("auth"),
        ca_bundle: Some(ca.clone()),
        ..options()
    };
    assert_eq!(
        source::fetch(
            &url,
            &main_branch(),
            &up.fixture.root.join("cache-basic"),
            &good
        )
        .expect("basic")
        .commit,
        up.head()
    );
    let untrusted = FetchOptions {
        ca_bundle: None,
        ..good.clone()
    };
    assert!(
        source::fetch(
            &url,
            &main_branch(),
            &up.fixture.root.join("cache-untrusted"),
            &untrusted
        )
        .is_err(),
        "unknown CA refused"
    );
    let bad = FetchOptions {
        auth: Auth::parse("username=odoo\npassword=wrong-PASSWORD\n", "auth").expect("auth"),
        ..good.clone()
    };
    let err = source::fetch(
        &url,
        &main_branch(),
        &up.fixture.root.join("cache-bad"),
        &bad,
    )
    .expect_err("401");
    assert!(matches!(err, SourceError::Fetch { .. }), "{err}");
    assert!(!format!("{err} {err:?}").contains("PASSWORD"), "{err}");
    // Credentials in the URL never reach the error either.
    let with_userinfo = format!(
        "https://odoo:leaked-PASSWORD@127.0.0.1:{}/intent.git",
        guarded.port
    );
    let err = source::fetch(
        &with_userinfo,
        &main_branch(),
        &up.fixture.root.join("cache-ui"),
        &FetchOptions {
            ca_bundle: Some(ca.clone()),
            ..options()
        },
    )
    .expect_err("401");
    assert!(
        !format!("{err} {err:?}").contains("leaked-PASSWORD"),
        "{err}"
    );

    // Bearer token over HTTPS.
    let bearer = server(
        &up.served,
        Mode::Normal,
        Some("Bearer tok-123".into()),
        Some(tls_config),
    );
    let url = format!("https://127.0.0.1:{}/intent.git", bearer.port);
    let token = FetchOptions {
        auth: Auth::parse("bearerToken=tok-123\n", "auth").expect("auth"),
        ca_bundle: Some(ca),
        ..options()
    };
    assert_eq!(
        source::fetch(
            &url,
            &main_branch(),
            &up.fixture.root.join("cache-bearer"),
            &token
        )
        .expect("bearer")
        .commit,
        up.head()
    );
}

#[test]
fn server_down_stalled_garbage_and_dying() {
    let up = Upstream::new();
    let cache = up.fixture.root.join("cache");
    let down = format!("http://127.0.0.1:{}/intent.git", nothing_listens());
    assert!(matches!(
        source::fetch(&down, &main_branch(), &cache, &options()),
        Err(SourceError::Fetch { .. })
    ));
    let down_git = format!("git://127.0.0.1:{}/intent.git", nothing_listens());
    assert!(matches!(
        source::fetch(&down_git, &main_branch(), &cache, &options()),
        Err(SourceError::Fetch { .. })
    ));

    let stall = http_server(&up.served, Mode::Stall, None);
    let quick = FetchOptions {
        timeout: Duration::from_secs(2),
        ..options()
    };
    let url = format!("http://127.0.0.1:{}/intent.git", stall.port);
    let err = source::fetch(
        &url,
        &main_branch(),
        &up.fixture.root.join("cache-stall"),
        &quick,
    )
    .expect_err("stall");
    assert!(
        matches!(
            err,
            SourceError::Timeout { seconds: 2, .. } | SourceError::Fetch { .. }
        ),
        "{err}"
    );

    // git:// stalls cannot be interrupted inside gix: the time limit answers anyway, and the same cache
    // is usable again at once (the stalled fetch is left behind with nothing to write to).
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let held: Vec<TcpStream> = silent.incoming().take(4).filter_map(Result::ok).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(held);
    });
    let stalled_cache = up.fixture.root.join("cache-git-stall");
    let url = format!("git://127.0.0.1:{silent_port}/intent.git");
    let err = source::fetch(&url, &main_branch(), &stalled_cache, &quick).expect_err("git stall");
    assert!(
        matches!(err, SourceError::Timeout { seconds: 2, .. }),
        "{err}"
    );
    let served = git_daemon(&up.served);
    let url = format!("git://127.0.0.1:{}/intent.git", served.1);
    let recovered = source::fetch(&url, &main_branch(), &stalled_cache, &options())
        .expect("cache usable again");
    assert_eq!(recovered.commit, up.head());

    let garbage = http_server(&up.served, Mode::Garbage, None);
    let url = format!("http://127.0.0.1:{}/intent.git", garbage.port);
    assert!(matches!(
        source::fetch(
            &url,
            &main_branch(),
            &up.fixture.root.join("cache-garbage"),
            &options()
        ),
        Err(SourceError::Fetch { .. })
    ));

    // Killed mid-fetch: the fetch fails, and the same cache then fetches cleanly from a good server.
    let dying = http_server(&up.served, Mode::DieMidPack, None);
    let url = format!("http://127.0.0.1:{}/intent.git", dying.port);
    let shared = up.fixture.root.join("cache-dying");
    assert!(source::fetch(&url, &main_branch(), &shared, &options()).is_err());
    let good = http_server(&up.served, Mode::Normal, None);
    let url = format!("http://127.0.0.1:{}/intent.git", good.port);
    assert_eq!(
        source::fetch(&url, &main_branch(), &shared, &options())
            .expect("recovers")
            .commit,
        up.head()
    );
}

#[test]
fn corrupt_cache_is_rebuilt() {
    let up = Upstream::new();
    let cache = up.fixture.root.join("cache");
    let first = source::fetch(&up.file_url(), &main_branch(), &cache, &options()).expect("clone");
    let repo_dir = source::cache_path(&cache, &up.file_url());
    // Truncate every object file, packed or loose (file:// copies loose objects): the objects are gone.
    let mut dirs = vec![repo_dir.join("objects")];
    let mut truncated = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("objects") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                std::fs::write(&path, b"").expect("truncate");
                truncated += 1;
            }
        }
    }
    assert!(truncated > 0, "the cache held objects");
    second_release(&up);
    let rebuilt =
        source::fetch(&up.file_url(), &main_branch(), &cache, &options()).expect("rebuilt");
    assert!(rebuilt.cloned, "the cache was rebuilt");
    assert_ne!(rebuilt.commit, first.commit);
}

#[test]
fn size_limits_refuse_large_packs() {
    let up = Upstream::new();
    let tiny = FetchOptions {
        max_objects: 3,
        ..options()
    };
    let err = source::fetch(
        &up.file_url(),
        &main_branch(),
        &up.fixture.root.join("c1"),
        &tiny,
    )
    .expect_err("objects");
    assert!(
        matches!(err, SourceError::TooManyObjects { limit: 3, .. }),
        "{err}"
    );
}

/// `verify` over a URL, with the history flags.
pub(crate) fn verify_url(
    up: &Upstream,
    url: &str,
    cache: &Path,
    extra: &[&str],
) -> std::process::Output {
    verify_url_cmd(up, url, cache, extra)
        .output()
        .expect("verify runs")
}

/// The `verify` command line of [`verify_url`].
pub(crate) fn verify_url_cmd(up: &Upstream, url: &str, cache: &Path, extra: &[&str]) -> Command {
    let cmd = up.fixture.verify_cmd("verify", "demo", &[]);
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut fixed = Command::new(BIN);
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        if a == "--repo" {
            iter.next();
            fixed.args(["--repo", url]);
        } else {
            fixed.arg(a);
        }
    }
    fixed
        .arg("--cache-dir")
        .arg(cache)
        .args(["--ref", "main"])
        .args(extra);
    fixed
}

#[test]
fn force_push_and_rollback_are_refused_by_ancestry() {
    let up = Upstream::new();
    let daemon = git_daemon(&up.served);
    let url = format!("git://127.0.0.1:{}/intent.git", daemon.1);
    let cache = up.fixture.root.join("cache");
    let first = up.head();
    let second = second_release(&up);

    let out = verify_url(&up, &url, &cache, &["--last-commit", &first]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // The host serves the older, validly signed commit again (force push back): refused, naming both.
    up.fixture.git(&["reset", "-q", "--hard", &first]);
    up.push(true);
    let out = verify_url(&up, &url, &cache, &["--last-commit", &second]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("refused HistoryInvalid:") && text.contains(&first) && text.contains(&second),
        "{text}"
    );
    // An explicit rewrite allowance lets the ancestry pass (the release serial still guards rollbacks).
    let out = verify_url(
        &up,
        &url,
        &cache,
        &[
            "--last-commit",
            &second,
            "--allow-history-rewrite",
            "--last-serial",
            "1",
        ],
    );
    assert!(
        stdout(&out).contains("refused ReleaseInvalid:"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn history_all_requires_every_commit_signed() {
    let up = Upstream::new();
    let base = up.head();
    // An unsigned commit, then a signed release on top of it.
    up.fixture
        .write("README.md", "changed without a signature\n");
    up.fixture.git(&["add", "-A"]);
    up.fixture
        .git(&["commit", "-q", "--no-gpg-sign", "-m", "unsigned"]);
    let unsigned = up.head();
    second_release(&up);
    let cache = up.fixture.root.join("cache");
    let url = up.file_url();
    let head_only = verify_url(&up, &url, &cache, &["--last-commit", &base]);
    assert_eq!(head_only.status.code(), Some(0), "{}", stdout(&head_only));
    let all = verify_url(
        &up,
        &url,
        &cache,
        &["--last-commit", &base, "--history", "all"],
    );
    assert_eq!(all.status.code(), Some(1));
    let text = stdout(&all);
    assert!(
        text.contains(&format!("commit {unsigned} is not signed")),
        "{text}"
    );
}

#[test]
fn cli_reports_fetch_failures_as_refusals() {
    let up = Upstream::new();
    let url = format!("http://127.0.0.1:{}/intent.git", nothing_listens());
    let out = verify_url(&up, &url, &up.fixture.root.join("cache"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("refused FetchFailed:"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn history_all_checks_merge_commits_and_both_sides() {
    let up = Upstream::new();
    let base = up.head();
    up.fixture.git(&["checkout", "-q", "-b", "side"]);
    up.fixture.write("notes/side.txt", "side\n");
    up.fixture.commit("signed side commit");
    up.fixture.git(&["checkout", "-q", "main"]);
    up.fixture.write("notes/main.txt", "main\n");
    up.fixture.commit("signed main commit");
    // The merge itself is unsigned: it must be refused under history: all.
    up.fixture
        .git(&["merge", "-q", "--no-gpg-sign", "--no-edit", "side"]);
    let merge = up.head();
    second_release(&up);
    let cache = up.fixture.root.join("cache");
    let out = verify_url(
        &up,
        &up.file_url(),
        &cache,
        &["--last-commit", &base, "--history", "all"],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("commit {merge} is not signed")),
        "{text}"
    );
    assert_eq!(
        text.matches("is not signed").count(),
        1,
        "the signed side commits pass: {text}"
    );
}
