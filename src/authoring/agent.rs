//! Signing through ssh-agent (`SSH_AUTH_SOCK`): the private key never leaves the agent, so a
//! passphrase-protected key (or one on a hardware token behind the agent) signs releases too.
//!
//! The agent protocol (draft-miller-ssh-agent): `REQUEST_IDENTITIES` lists the keys, `SIGN_REQUEST`
//! signs a blob. For an SSHSIG the blob is the "signed data" of the SSHSIG format (magic, namespace,
//! hash algorithm, hash of the message), exactly what `ssh-keygen -Y sign` hands the agent.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
/// The largest agent reply read (a few hundred keys).
const MAX_REPLY: usize = 256 * 1024;

/// A connection to the agent at `SSH_AUTH_SOCK`.
#[derive(Debug)]
pub struct Agent {
    socket: PathBuf,
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_u32(input: &mut &[u8]) -> Result<u32, String> {
    if input.len() < 4 {
        return Err("truncated agent reply".into());
    }
    let (head, rest) = input.split_at(4);
    *input = rest;
    Ok(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
}

fn take_string<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let len = take_u32(input)? as usize;
    if input.len() < len {
        return Err("truncated agent reply".into());
    }
    let (head, rest) = input.split_at(len);
    *input = rest;
    Ok(head)
}

impl Agent {
    /// The agent `SSH_AUTH_SOCK` names, if it is set.
    pub fn from_env() -> Option<Agent> {
        std::env::var_os("SSH_AUTH_SOCK")
            .filter(|s| !s.is_empty())
            .map(|s| Agent {
                socket: PathBuf::from(s),
            })
    }

    /// The agent's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn call(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| format!("ssh-agent at {}: {e}", self.socket.display()))?;
        let timeout = Some(std::time::Duration::from_secs(30));
        let _ = stream.set_read_timeout(timeout);
        let _ = stream.set_write_timeout(timeout);
        let mut framed = Vec::with_capacity(request.len() + 4);
        put_string(&mut framed, request);
        stream
            .write_all(&framed)
            .map_err(|e| format!("ssh-agent: {e}"))?;
        let mut len = [0u8; 4];
        stream
            .read_exact(&mut len)
            .map_err(|e| format!("ssh-agent: {e}"))?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_REPLY {
            return Err(format!("ssh-agent: a reply of {len} bytes"));
        }
        let mut reply = vec![0u8; len];
        stream
            .read_exact(&mut reply)
            .map_err(|e| format!("ssh-agent: {e}"))?;
        Ok(reply)
    }

    /// The keys the agent holds: `(public key, comment)`.
    pub fn identities(&self) -> Result<Vec<(ssh_key::PublicKey, String)>, String> {
        let reply = self.call(&[REQUEST_IDENTITIES])?;
        let (kind, mut body) = reply.split_first().ok_or("empty agent reply")?;
        if *kind != IDENTITIES_ANSWER {
            return Err(format!("ssh-agent refused to list its keys (reply {kind})"));
        }
        let count = take_u32(&mut body)?;
        let mut keys = Vec::new();
        for _ in 0..count.min(1024) {
            let blob = take_string(&mut body)?;
            let comment = String::from_utf8_lossy(take_string(&mut body)?).into_owned();
            // Keys of a kind ssh-key cannot read are skipped: only ed25519 signs releases anyway.
            if let Ok(key) = ssh_key::PublicKey::from_bytes(blob) {
                keys.push((key, comment));
            }
        }
        Ok(keys)
    }

    /// Whether the agent holds `key`; its comment if so.
    pub fn holds(&self, key: &ssh_key::PublicKey) -> Result<Option<String>, String> {
        Ok(self
            .identities()?
            .into_iter()
            .find(|(k, _)| k.key_data() == key.key_data())
            .map(|(_, comment)| comment))
    }

    /// An armored SSHSIG over `message` for `namespace`, made by the agent with `key` (ed25519).
    pub fn sign_sshsig(
        &self,
        key: &ssh_key::PublicKey,
        namespace: &str,
        message: &[u8],
    ) -> Result<String, String> {
        let hash = ssh_key::HashAlg::Sha512;
        let data =
            ssh_key::SshSig::signed_data(namespace, hash, message).map_err(|e| e.to_string())?;
        let blob = key.to_bytes().map_err(|e| e.to_string())?;
        let mut request = vec![SIGN_REQUEST];
        put_string(&mut request, &blob);
        put_string(&mut request, &data);
        request.extend_from_slice(&0u32.to_be_bytes());
        let reply = self.call(&request)?;
        let (kind, mut body) = reply.split_first().ok_or("empty agent reply")?;
        if *kind != SIGN_RESPONSE {
            return Err(
                "ssh-agent refused to sign (a confirmation declined, or the key was removed?)"
                    .into(),
            );
        }
        let mut signature = take_string(&mut body)?;
        let algorithm = take_string(&mut signature)?;
        if algorithm != b"ssh-ed25519" {
            return Err(format!(
                "ssh-agent signed with {}; only ed25519 signs releases",
                String::from_utf8_lossy(algorithm)
            ));
        }
        let raw = take_string(&mut signature)?;
        let signature = ssh_key::Signature::new(ssh_key::Algorithm::Ed25519, raw.to_vec())
            .map_err(|e| e.to_string())?;
        let sshsig = ssh_key::SshSig::new(key.key_data().clone(), namespace, hash, signature)
            .map_err(|e| e.to_string())?;
        // Checked before it is written: a broken agent must not produce a signature that fails later.
        key.verify(namespace, message, &sshsig)
            .map_err(|e| format!("ssh-agent's signature does not verify: {e}"))?;
        sshsig
            .to_pem(ssh_key::LineEnding::LF)
            .map_err(|e| e.to_string())
    }
}
