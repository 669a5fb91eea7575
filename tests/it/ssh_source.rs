//! The `ssh://` source against a real OpenSSH `sshd` started by each test on loopback, with its own
//! host key, config and authorized_keys, serving the fixture's repository through the server's
//! `git-upload-pack`. The client is the operator's in-process russh transport: no `ssh` program.
//! Also: `file://` and `ssh://` fetched by the CLI with no `ssh` or `git` binary on PATH.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::source::{
    Upstream, free_port, main_branch, options, second_release, verify_url_cmd, wait_for,
};
use crate::common::*;
use vworkspace_controller::source::{self, Auth, FetchOptions, SourceError};
use vworkspace_core::secrets::SecretValue;

const SSHD: &str = "/usr/sbin/sshd";

/// One `sshd -D` in its own process group, killed (group and all) when dropped.
struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

fn keygen(path: &Path, passphrase: &str) -> String {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f"])
        .arg(path));
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_owned()
}

/// Keys for one server: its host key, a second (wrong) host key, the deploy key, an unknown key and
/// a key whose authorized command stalls.
struct Keys {
    dir: PathBuf,
    host_pub: String,
    other_host_pub: String,
}

impl Keys {
    fn new(root: &Path) -> Keys {
        let dir = root.join("ssh");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let host_pub = keygen(&dir.join("host_key"), "");
        let other_host_pub = keygen(&dir.join("other_host_key"), "");
        let deploy = keygen(&dir.join("deploy_key"), "");
        keygen(&dir.join("unknown_key"), "");
        let stalled = keygen(&dir.join("stalled_key"), "");
        let locked = keygen(&dir.join("locked_key"), "correct horse");
        // `restrict`: no pty, no forwarding; commands still run (git-upload-pack by the client).
        std::fs::write(
            dir.join("authorized_keys"),
            format!(
                "restrict {deploy}\nrestrict {locked}\nrestrict,command=\"sleep 20\" {stalled}\n"
            ),
        )
        .expect("authorized_keys");
        Keys {
            dir,
            host_pub,
            other_host_pub,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn known_hosts(&self, port: u16, host_key: &str) -> String {
        format!("# pinned for the test\n[127.0.0.1]:{port} {host_key}\n")
    }

    fn credentials(&self, key: &str, known_hosts: &str, passphrase: Option<&str>) -> Auth {
        let identity = std::fs::read(self.path(key)).expect("key");
        let mut fields: Vec<(&str, &[u8])> = vec![
            ("identity", &identity),
            ("known_hosts", known_hosts.as_bytes()),
        ];
        if let Some(p) = passphrase {
            fields.push(("password", p.as_bytes()));
        }
        Auth::from_fields("secret ssh-test", fields).expect("credentials")
    }
}

/// Starts sshd on a free loopback port with a config of its own; `None` (with a SKIPPED line) when
/// the machine has no sshd (scripts/test.sh installs openssh-server).
fn sshd(keys: &Keys) -> Option<Sshd> {
    if !Path::new(SSHD).exists() {
        println!("SKIPPED sshd test: no {SSHD} (install openssh-server; scripts/test.sh does)");
        return None;
    }
    // As root, sshd needs its privilege separation directory (the Debian service creates it).
    if run_text("id", &["-u"]) == "0" {
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    }
    let port = free_port();
    let config = keys.path("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nAcceptEnv GIT_PROTOCOL\nLogLevel VERBOSE\n",
            keys.path("host_key").display(),
            keys.path("sshd.pid").display(),
            keys.path("authorized_keys").display(),
        ),
    )
    .expect("sshd_config");
    let log = std::fs::File::create(keys.path("sshd.log")).expect("log");
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("sshd starts");
    let server = Sshd {
        child,
        port,
        dir: keys.dir.clone(),
    };
    assert!(wait_for(port), "sshd did not listen: {}", server.log());
    Some(server)
}

fn run_text(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn ssh_url(up: &Upstream, port: u16) -> String {
    let user = run_text("id", &["-un"]);
    format!(
        "ssh://{user}@127.0.0.1:{port}{}",
        up.served.join("intent.git").display()
    )
}

fn with_auth(auth: Auth) -> FetchOptions {
    FetchOptions { auth, ..options() }
}

use std::os::unix::process::CommandExt as _;

#[test]
fn ssh_fetch_then_incremental_fetch_with_a_pinned_host_key() {
    let up = Upstream::new();
    let keys = Keys::new(&up.fixture.root);
    let Some(server) = sshd(&keys) else { return };
    let url = ssh_url(&up, server.port);
    let pinned = keys.known_hosts(server.port, &keys.host_pub);
    let fetch_options = with_auth(keys.credentials("deploy_key", &pinned, None));
    let cache = up.fixture.root.join("cache");

    let first = source::fetch(&url, &main_branch(), &cache, &fetch_options)
        .unwrap_or_else(|e| panic!("first fetch: {e}\nsshd: {}", server.log()));
    assert!(first.cloned);
    assert_eq!(first.commit, up.head());
    assert!(first.objects > 0);

    let unchanged = source::fetch(&url, &main_branch(), &cache, &fetch_options).expect("again");
    assert_eq!(
        (unchanged.objects, unchanged.cloned),
        (0, false),
        "nothing new travels"
    );

    let new_head = second_release(&up);
    let second = source::fetch(&url, &main_branch(), &cache, &fetch_options).expect("incremental");
    assert_eq!(second.commit, new_head);
    assert!(!second.cloned);
    assert!(
        second.objects > 0 && second.objects < first.objects,
        "{} new objects against {} in the clone",
        second.objects,
        first.objects
    );
    // The server ran git-upload-pack for our deploy key, asked for protocol v2.
    let log = server.log();
    assert!(log.contains("Accepted publickey"), "{log}");

    // An encrypted deploy key, with its passphrase as the Secret's `password`.
    let locked = with_auth(keys.credentials("locked_key", &pinned, Some("correct horse")));
    let fetched = source::fetch(&url, &main_branch(), &up.fixture.root.join("c2"), &locked)
        .expect("encrypted key");
    assert_eq!(fetched.commit, new_head);
    let identity = SecretValue::new(std::fs::read(keys.path("locked_key")).expect("key"));
    let wrong =
        source::ssh::SshCredentials::new("s", &identity, None, &pinned).expect_err("no passphrase");
    assert!(wrong.to_string().starts_with("s identity:"), "{wrong}");
}

#[test]
fn a_wrong_host_key_names_both_fingerprints_and_fetches_nothing() {
    let up = Upstream::new();
    let keys = Keys::new(&up.fixture.root);
    let Some(server) = sshd(&keys) else { return };
    let url = ssh_url(&up, server.port);
    let wrong = keys.known_hosts(server.port, &keys.other_host_pub);
    let cache = up.fixture.root.join("cache");
    let error = source::fetch(
        &url,
        &main_branch(),
        &cache,
        &with_auth(keys.credentials("deploy_key", &wrong, None)),
    )
    .expect_err("wrong host key");
    let fingerprint = |public: &str| {
        let file = keys.path("fp.pub");
        std::fs::write(&file, public).expect("write");
        run_text("ssh-keygen", &["-l", "-f", file.to_str().expect("utf8")])
            .split_whitespace()
            .nth(1)
            .expect("fingerprint")
            .to_owned()
    };
    let text = error.to_string();
    assert!(matches!(error, SourceError::HostKey { .. }), "{text}");
    assert!(
        text.contains(&format!("[127.0.0.1]:{}", server.port)),
        "{text}"
    );
    assert!(
        text.contains(&fingerprint(&keys.host_pub)),
        "presented: {text}"
    );
    assert!(
        text.contains(&fingerprint(&keys.other_host_pub)),
        "pinned: {text}"
    );
    // Nothing was fetched and the server never saw our key.
    let repo = source::cache_path(&cache, &url);
    assert!(
        !repo.join("refs/remotes").exists()
            || std::fs::read_dir(repo.join("refs/remotes"))
                .map(|d| d.count())
                .unwrap_or(0)
                == 0,
        "a ref was written"
    );
    assert!(
        !server.log().contains("Accepted publickey"),
        "{}",
        server.log()
    );

    // A host missing from known_hosts is refused the same way (no trust on first use).
    let elsewhere = format!("[127.0.0.1]:1 {}\n", keys.host_pub);
    let error = source::fetch(
        &url,
        &main_branch(),
        &cache,
        &with_auth(keys.credentials("deploy_key", &elsewhere, None)),
    )
    .expect_err("unknown host");
    assert!(
        error.to_string().contains("is not in known_hosts"),
        "{error}"
    );
}

#[test]
fn an_unknown_deploy_key_and_a_stalled_server_are_refused_in_bounded_time() {
    let up = Upstream::new();
    let keys = Keys::new(&up.fixture.root);
    let Some(server) = sshd(&keys) else { return };
    let url = ssh_url(&up, server.port);
    let pinned = keys.known_hosts(server.port, &keys.host_pub);

    let error = source::fetch(
        &url,
        &main_branch(),
        &up.fixture.root.join("c1"),
        &with_auth(keys.credentials("unknown_key", &pinned, None)),
    )
    .expect_err("unknown key");
    assert!(
        error.to_string().contains("refused the deploy key"),
        "{error}"
    );

    // The key's authorized command sleeps: the session opens, git-upload-pack never answers.
    let stalled = FetchOptions {
        timeout: Duration::from_secs(3),
        ..with_auth(keys.credentials("stalled_key", &pinned, None))
    };
    let started = Instant::now();
    let error = source::fetch(&url, &main_branch(), &up.fixture.root.join("c2"), &stalled)
        .expect_err("stalled");
    assert!(
        matches!(error, SourceError::Timeout { seconds: 3, .. }),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // A port that accepts and never speaks SSH: bounded the same way.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let black_hole = format!("ssh://git@127.0.0.1:{port}/x.git");
    let started = Instant::now();
    let error = source::fetch(
        &black_hole,
        &main_branch(),
        &up.fixture.root.join("c3"),
        &FetchOptions {
            timeout: Duration::from_secs(2),
            ..with_auth(keys.credentials(
                "deploy_key",
                &keys.known_hosts(port, &keys.host_pub),
                None,
            ))
        },
    )
    .expect_err("silent");
    assert!(matches!(error, SourceError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(silent);
}

#[test]
fn ssh_urls_need_pinned_credentials_and_keys_stay_out_of_errors() {
    let up = Upstream::new();
    let keys = Keys::new(&up.fixture.root);
    let cache = up.fixture.root.join("cache");
    let error = source::fetch(
        "ssh://git@127.0.0.1:1/x.git",
        &main_branch(),
        &cache,
        &options(),
    )
    .expect_err("no credentials");
    assert!(matches!(error, SourceError::Config { .. }), "{error}");
    assert!(error.to_string().contains("known_hosts"), "{error}");
    let pinned = keys.known_hosts(1, &keys.host_pub);
    let auth = keys.credentials("deploy_key", &pinned, None);
    let error = source::fetch(
        &up.file_url(),
        &main_branch(),
        &cache,
        &with_auth(auth.clone()),
    )
    .expect_err("ssh credentials on file://");
    assert!(matches!(error, SourceError::Config { .. }), "{error}");
    let key_text = std::fs::read_to_string(keys.path("deploy_key")).expect("key");
    let secret_line = key_text.lines().nth(1).expect("a base64 line");
    assert!(!format!("{auth:?}").contains(secret_line));
    // known_hosts without an identity, or with a username, is a configuration error.
    assert!(Auth::from_fields("s", [("known_hosts", pinned.as_bytes())]).is_err());
    assert!(
        Auth::from_fields(
            "s",
            [
                ("identity", key_text.as_bytes()),
                ("known_hosts", pinned.as_bytes()),
                ("username", b"git".as_slice()),
            ]
        )
        .is_err()
    );
}

/// `verify` as users run it, with PATH holding nothing: no `git`, no `ssh`, no `git-upload-pack`.
#[test]
fn file_and_ssh_urls_verify_with_no_git_or_ssh_on_path() {
    let up = Upstream::new();
    let keys = Keys::new(&up.fixture.root);
    let empty = up.fixture.root.join("empty-path");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let verify = |url: &str, extra: &[&str]| {
        let cache = up
            .fixture
            .root
            .join(format!("cache-{}", url.len() + extra.len()));
        let mut cmd = verify_url_cmd(&up, url, &cache, extra);
        cmd.env_clear().env("PATH", &empty).env("HOME", &empty);
        cmd.output().expect("verify runs")
    };
    let out = verify(&up.file_url(), &[]);
    assert!(
        out.status.success(),
        "file:// without git on PATH: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let Some(server) = sshd(&keys) else { return };
    let known_hosts = keys.path("known_hosts");
    std::fs::write(&known_hosts, keys.known_hosts(server.port, &keys.host_pub)).expect("write");
    let key = keys.path("deploy_key");
    let out = verify(
        &ssh_url(&up, server.port),
        &[
            "--ssh-key",
            key.to_str().expect("utf8"),
            "--known-hosts",
            known_hosts.to_str().expect("utf8"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ssh:// without ssh on PATH: {stdout}{}\nsshd: {}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(stdout.contains(&up.head()), "{stdout}");

    // The wrong host key through the CLI: a refusal (exit 1) naming the host.
    std::fs::write(
        &known_hosts,
        keys.known_hosts(server.port, &keys.other_host_pub),
    )
    .expect("write");
    let out = verify(
        &ssh_url(&up, server.port),
        &[
            "--ssh-key",
            key.to_str().expect("utf8"),
            "--known-hosts",
            known_hosts.to_str().expect("utf8"),
            "--fetch-timeout",
            "20s",
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("does not match known_hosts"), "{text}");
}
