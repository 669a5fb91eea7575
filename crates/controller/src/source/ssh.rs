//! `ssh://` in process: a russh client opens an exec channel running `git-upload-pack '<path>'` and
//! gix speaks the Git protocol over it (v2 where the server accepts `GIT_PROTOCOL`), so the image
//! needs no `ssh` or `git` program.
//!
//! The server must present a host key pinned in the `known_hosts` given with the credentials; any
//! other key ends the connection before authentication, naming the host and both fingerprints. The
//! client authenticates with one ed25519 deploy key. Every wait (TCP connect, key exchange,
//! authentication, each read and write) is bounded by the fetch's deadline, so a stalled server ends
//! the fetch at its time limit. The key and its passphrase never reach a log or an error.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::time::Instant;

use super::SourceError;
use super::known_hosts::{HostKeyRefused, KnownHosts};
use vworkspace_core::secrets::SecretValue;

/// How long after the fetch's time limit the session gives up by itself (the fetch's watchdog has
/// reported the timeout by then).
const SESSION_SLACK: Duration = Duration::from_secs(1);

/// The most of the server's stderr kept to explain a failure.
const STDERR_LIMIT: usize = 4096;

/// An SSH deploy key and the pinned host keys, as the source Secret (`identity`, `known_hosts`,
/// `password`) or the CLI (`--ssh-key`, `--known-hosts`) give them.
#[derive(Clone)]
pub struct SshCredentials {
    key: Arc<PrivateKey>,
    known_hosts: Arc<KnownHosts>,
}

impl std::fmt::Debug for SshCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SshCredentials(key {}, {} known host keys)",
            super::known_hosts::fingerprint(self.key.public_key()),
            self.known_hosts_len()
        )
    }
}

impl SshCredentials {
    /// Decodes an OpenSSH private key (ed25519 only; `passphrase` when it is encrypted) and parses
    /// `known_hosts`. `source` names where they came from in errors, which never quote either.
    pub fn new(
        source: &str,
        identity: &SecretValue,
        passphrase: Option<&SecretValue>,
        known_hosts: &str,
    ) -> Result<SshCredentials, SourceError> {
        let config = |message: String| SourceError::Config { message };
        let text = identity
            .expose_str()
            .ok_or_else(|| config(format!("{source} identity: not UTF-8 text")))?;
        let passphrase = match passphrase {
            Some(p) => Some(
                p.expose_str()
                    .ok_or_else(|| config(format!("{source} password: not UTF-8 text")))?,
            ),
            None => None,
        };
        let key = russh::keys::decode_secret_key(text, passphrase).map_err(|e| {
            // The decoder's message names the format problem or a wrong passphrase, never key bytes.
            config(format!(
                "{source} identity: not a usable OpenSSH private key ({e})"
            ))
        })?;
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(config(format!(
                "{source} identity: a {} key; only ed25519 deploy keys are accepted",
                key.algorithm()
            )));
        }
        let known_hosts =
            KnownHosts::parse(known_hosts, &format!("{source} known_hosts")).map_err(config)?;
        Ok(SshCredentials {
            key: Arc::new(key),
            known_hosts: Arc::new(known_hosts),
        })
    }

    fn known_hosts_len(&self) -> usize {
        self.known_hosts.algorithms("*", 22).len()
    }
}

/// Where an `ssh://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The login (default `git`, as Flux assumes).
    pub user: String,
    /// The host name or address.
    pub host: String,
    /// The port (default 22).
    pub port: u16,
    /// The repository path as the server's shell receives it.
    pub path: String,
}

impl SshTarget {
    /// Parses `ssh://[user@]host[:port]/path` (`/~user/x` and `/~/x` are home-relative, as in git).
    pub fn parse(url: &str) -> Result<SshTarget, String> {
        let rest = url
            .strip_prefix("ssh://")
            .ok_or_else(|| format!("{url}: not an ssh:// URL"))?;
        let (authority, path) = rest
            .find('/')
            .map(|i| rest.split_at(i))
            .ok_or_else(|| format!("{url}: no repository path"))?;
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, host)) => (user.to_owned(), host),
            None => ("git".to_owned(), authority),
        };
        let (host, port) = match host_port.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or_else(|| format!("{url}: unclosed [ in the host"))?;
                (host.to_owned(), after.strip_prefix(':'))
            }
            None => match host_port.split_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (host_port.to_owned(), None),
            },
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{url}: bad port {p:?}"))?,
            None => 22,
        };
        let path = path
            .strip_prefix("/~")
            .map_or(path.to_owned(), |p| format!("~{p}"));
        let bad = |c: char| c.is_control();
        if host.is_empty() || user.is_empty() || path.len() < 2 || path.chars().any(bad) {
            return Err(format!("{url}: expected ssh://[user@]host[:port]/path"));
        }
        if host.starts_with('-') || user.starts_with('-') || path.starts_with('-') {
            return Err(format!(
                "{url}: a host, user or path may not start with '-'"
            ));
        }
        Ok(SshTarget {
            user,
            host,
            port,
            path,
        })
    }

    /// The command run on the exec channel, the path single-quoted as git quotes it.
    pub fn upload_pack_command(&self) -> String {
        format!("git-upload-pack '{}'", self.path.replace('\'', r"'\''"))
    }
}

/// Checks the server's host key against the pinned `known_hosts` and records why it refused.
struct HostKeyCheck {
    target: SshTarget,
    known_hosts: Arc<KnownHosts>,
    refused: Arc<Mutex<Option<HostKeyRefused>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, presented: &PublicKey) -> Result<bool, Self::Error> {
        match self
            .known_hosts
            .check(&self.target.host, self.target.port, presented)
        {
            Ok(()) => Ok(true),
            Err(refused) => {
                if let Ok(mut slot) = self.refused.lock() {
                    *slot = Some(refused);
                }
                Ok(false)
            }
        }
    }
}

/// The runtime the SSH session lives on while gix reads and writes from the fetch thread.
struct Session {
    runtime: tokio::runtime::Runtime,
    handle: Option<Handle<HostKeyCheck>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(1),
                    handle.disconnect(russh::Disconnect::ByApplication, "", ""),
                )
                .await
            });
        }
    }
}

/// The exec channel's stdout as a blocking reader; stderr is kept (bounded) to explain an early end.
pub struct ChannelReader {
    read: ChannelReadHalf,
    pending: Vec<u8>,
    offset: usize,
    stderr: Vec<u8>,
    exit_status: Option<u32>,
    deadline: Instant,
    session: Arc<Session>,
}

/// The exec channel's stdin as a blocking writer.
pub struct ChannelWriter {
    write: ChannelWriteHalf<client::Msg>,
    deadline: Instant,
    session: Arc<Session>,
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the SSH server sent nothing before the fetch's time limit",
    )
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.offset < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.offset);
                buf[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
                self.offset += n;
                return Ok(n);
            }
            let (deadline, read) = (self.deadline, &mut self.read);
            let message = self
                .session
                .runtime
                .block_on(async { tokio::time::timeout_at(deadline, read.wait()).await })
                .map_err(|_| timed_out())?;
            match message {
                Some(ChannelMsg::Data { data }) => {
                    self.pending = data.to_vec();
                    self.offset = 0;
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    let room = STDERR_LIMIT.saturating_sub(self.stderr.len());
                    self.stderr.extend_from_slice(&data[..data.len().min(room)]);
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    self.exit_status = Some(exit_status)
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return self.end(),
                Some(_) => {}
            }
        }
    }
}

impl ChannelReader {
    /// The end of stdout: clean when the command succeeded, else what it said on stderr.
    fn end(&mut self) -> std::io::Result<usize> {
        let said = String::from_utf8_lossy(&self.stderr).trim().to_owned();
        match (self.exit_status, said.is_empty()) {
            (Some(0) | None, true) => Ok(0),
            (status, _) => Err(std::io::Error::other(format!(
                "the server's git-upload-pack ended{}{}",
                status
                    .map(|s| format!(" with status {s}"))
                    .unwrap_or_default(),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            ))),
        }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (deadline, write) = (self.deadline, &self.write);
        self.session
            .runtime
            .block_on(async { tokio::time::timeout_at(deadline, write.data(buf)).await })
            .map_err(|_| timed_out())?
            .map_err(|e| std::io::Error::other(format!("SSH channel: {e}")))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The gix transport over one SSH exec channel.
pub type SshConnection =
    gix::protocol::transport::client::git::blocking_io::Connection<ChannelReader, ChannelWriter>;

/// Connects, checks the host key, authenticates and starts `git-upload-pack` on the server, all
/// within `timeout`. `shown` is the redacted URL for errors.
pub fn connect(
    target: &SshTarget,
    credentials: &SshCredentials,
    timeout: Duration,
    shown: &str,
) -> Result<SshConnection, SourceError> {
    let fail = |message: String| SourceError::Fetch {
        url: shown.to_owned(),
        message,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("git-ssh")
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the SSH client: {e}")))?;
    // A little after the fetch's own watchdog, which reports the timeout: the session then ends on
    // its own instead of being left behind.
    let deadline = Instant::now() + timeout + SESSION_SLACK;
    let refused = Arc::new(Mutex::new(None));
    let opened = runtime.block_on(async {
        tokio::time::timeout_at(deadline, open_channel(target, credentials, refused.clone())).await
    });
    let (handle, channel) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(message)) => {
            let host_key = refused.lock().ok().and_then(|mut slot| slot.take());
            return Err(match host_key {
                Some(refused) => SourceError::HostKey {
                    url: shown.to_owned(),
                    refused,
                },
                None => fail(message),
            });
        }
        Err(_) => {
            return Err(SourceError::Timeout {
                url: shown.to_owned(),
                seconds: timeout.as_secs(),
            });
        }
    };
    let session = Arc::new(Session {
        runtime,
        handle: Some(handle),
    });
    let (read, write) = channel.split();
    let reader = ChannelReader {
        read,
        pending: Vec::new(),
        offset: 0,
        stderr: Vec::new(),
        exit_status: None,
        deadline,
        session: session.clone(),
    };
    let writer = ChannelWriter {
        write,
        deadline,
        session,
    };
    Ok(
        gix::protocol::transport::client::git::blocking_io::Connection::new(
            reader,
            writer,
            gix::protocol::transport::Protocol::V2,
            target.path.clone(),
            None::<(String, Option<u16>)>,
            gix::protocol::transport::client::git::ConnectMode::Process,
            false,
        )
        .custom_url(Some(shown.into())),
    )
}

/// The session's steps up to a running `git-upload-pack`; errors say which step failed.
async fn open_channel(
    target: &SshTarget,
    credentials: &SshCredentials,
    refused: Arc<Mutex<Option<HostKeyRefused>>>,
) -> Result<(Handle<HostKeyCheck>, russh::Channel<client::Msg>), String> {
    let mut config = client::Config {
        nodelay: true,
        ..Default::default()
    };
    // Offer only the pinned algorithms, so a server with several host keys presents a pinned one.
    let pinned = credentials
        .known_hosts
        .algorithms(&target.host, target.port);
    if !pinned.is_empty() {
        config.preferred.key = pinned.into();
    }
    let check = HostKeyCheck {
        target: target.clone(),
        known_hosts: credentials.known_hosts.clone(),
        refused,
    };
    let address = (target.host.as_str(), target.port);
    let mut handle = client::connect(Arc::new(config), address, check)
        .await
        .map_err(|e| format!("SSH connection to {}:{}: {e}", target.host, target.port))?;
    let key = PrivateKeyWithHashAlg::new(credentials.key.clone(), None);
    let auth = handle
        .authenticate_publickey(target.user.clone(), key)
        .await
        .map_err(|e| format!("SSH authentication: {e}"))?;
    if !auth.success() {
        return Err(format!(
            "the server refused the deploy key {} for user {}",
            super::known_hosts::fingerprint(credentials.key.public_key()),
            target.user
        ));
    }
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| format!("SSH session channel: {e}"))?;
    // Protocol v2 when the server accepts the variable (`AcceptEnv GIT_PROTOCOL`); v0 otherwise,
    // which gix detects from the first lines.
    let _ = channel.set_env(false, "GIT_PROTOCOL", "version=2").await;
    channel
        .exec(true, target.upload_pack_command())
        .await
        .map_err(|e| format!("starting git-upload-pack: {e}"))?;
    Ok((handle, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls() {
        let t = SshTarget::parse("ssh://git@github.com/org/intent.git").expect("url");
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port),
            ("git", "github.com", 22)
        );
        assert_eq!(t.upload_pack_command(), "git-upload-pack '/org/intent.git'");
        let t = SshTarget::parse("ssh://127.0.0.1:2222/srv/it's.git").expect("url");
        assert_eq!((t.user.as_str(), t.port), ("git", 2222));
        assert_eq!(
            t.upload_pack_command(),
            r"git-upload-pack '/srv/it'\''s.git'"
        );
        let t = SshTarget::parse("ssh://deploy@[::1]:22/~/repo").expect("url");
        assert_eq!((t.host.as_str(), t.path.as_str()), ("::1", "~/repo"));
        for bad in [
            "ssh://host",
            "ssh://host/",
            "ssh://host:x/r",
            "ssh://-oProxyCommand=x/r",
            "ssh://h/r\nx",
            "https://h/r",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_ed25519_keys_and_no_key_in_errors() {
        let known =
            "h ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n";
        let garbage = SecretValue::new(b"-----BEGIN OPENSSH PRIVATE KEY-----\nhunter2\n".to_vec());
        let error = SshCredentials::new("secret x", &garbage, None, known).expect_err("garbage");
        let text = error.to_string();
        assert!(text.starts_with("secret x identity:"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
