//! Git's SSH commit signatures: the `gpgsig` header of a commit object.
//!
//! With `gpg.format=ssh`, `git commit -S` signs the commit object *without* its signature header
//! (namespace `git`, sha512) and stores the armored SSHSIG in a `gpgsig` header whose continuation
//! lines start with one space. [`verify_commit`] undoes exactly that and is the only way to build a
//! [`VerifiedCommit`].

use crate::repository::{CommitId, FetchedCommit};
use crate::trust::signers::AllowedSigners;
use crate::trust::sshsig::{self, SignatureError, Signer};

/// The SSHSIG namespace git uses for commits.
pub const NAMESPACE: &str = "git";
/// Largest commit object accepted.
pub const MAX_COMMIT_BYTES: usize = 1024 * 1024;
/// Most header lines (continuations included) accepted in a commit object.
pub const MAX_HEADER_LINES: usize = 4096;

const SSH_ARMOR: &str = "-----BEGIN SSH SIGNATURE-----";

/// A commit whose SSH signature was verified against trusted keys. Only [`verify_commit`] builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCommit {
    commit: FetchedCommit,
    signer: Signer,
}

impl VerifiedCommit {
    /// The commit id.
    pub fn id(&self) -> &CommitId {
        self.commit.id()
    }
    /// The commit as read.
    pub fn commit(&self) -> &FetchedCommit {
        &self.commit
    }
    /// Who signed it.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
    /// Reads `clusters/<cluster>/` of this commit from `repo`, bounded by `limits`. Only a verified
    /// commit's tree is ever read: an unsigned commit costs the operator one object read, not a
    /// tree walk.
    pub fn read_cluster_tree(
        &self,
        repo: &crate::repository::LocalRepository,
        cluster: &str,
        limits: &crate::limits::Limits,
    ) -> Result<crate::repository::ClusterTree, crate::repository::GitError> {
        repo.read_cluster_tree_at(self.id(), self.commit.tree(), cluster, limits)
    }
}

/// Why a commit's signature was refused. Every message names the commit.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitSignatureError {
    /// The commit carries no `gpgsig` header.
    #[error("commit {id} is not signed")]
    Unsigned {
        /// The commit id.
        id: String,
    },
    /// The signature is OpenPGP or X.509, not SSH.
    #[error(
        "commit {id} carries a non-SSH (OpenPGP or X.509) signature; only SSH ed25519 signatures are accepted"
    )]
    NotSshSignature {
        /// The commit id.
        id: String,
    },
    /// The SSH signature was refused.
    #[error("commit {id}: {source}")]
    Signature {
        /// The commit id.
        id: String,
        /// Why.
        source: SignatureError,
    },
    /// The commit object cannot be parsed.
    #[error("commit {id} is malformed: {message}")]
    Malformed {
        /// The commit id.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// The commit object exceeds [`MAX_COMMIT_BYTES`].
    #[error("commit {id} is {size} bytes, over the limit of {MAX_COMMIT_BYTES}")]
    TooLarge {
        /// The commit id.
        id: String,
        /// Its size.
        size: usize,
    },
}

/// A commit object split into the signed payload and the armored signature.
struct Split {
    payload: Vec<u8>,
    signature: Option<Vec<u8>>,
}

/// Splits `raw` exactly as git's `parse_buffer_signed_by_header` does (SHA-1 repositories):
///
/// - every `gpgsig <value>` header line, with the continuation lines (starting with one space) that
///   follow it, is the signature; several `gpgsig` headers are concatenated in order (the armor
///   parser then reads the first armored block, as `ssh-keygen` does);
/// - every other header line that *starts with* `gpgsig` (`gpgsig-sha256`, `gpgsig-foo`,
///   `gpgsigfoo`, ...) is removed from the payload with its continuation lines;
/// - everything else, from the blank line on, is the signed payload.
fn split(id: &str, raw: &[u8]) -> Result<Split, CommitSignatureError> {
    let malformed = |message: &str| CommitSignatureError::Malformed {
        id: id.to_owned(),
        message: message.to_owned(),
    };
    let header_end = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| p + 1)
        .ok_or_else(|| malformed("no blank line after the headers"))?;
    let (headers, body) = raw.split_at(header_end);
    let mut payload = Vec::with_capacity(raw.len());
    let mut signature: Option<Vec<u8>> = None;
    let mut in_signature = false;
    let mut other_signature = false;
    for (count, line) in headers.split_inclusive(|b| *b == b'\n').enumerate() {
        if count >= MAX_HEADER_LINES {
            return Err(malformed("too many header lines"));
        }
        let sig = if in_signature && line.first() == Some(&b' ') {
            Some(&line[1..])
        } else if let Some(rest) = line.strip_prefix(b"gpgsig ") {
            other_signature = false;
            Some(rest)
        } else if line.starts_with(b"gpgsig") {
            other_signature = true;
            None
        } else {
            if other_signature && line.first() != Some(&b' ') {
                other_signature = false;
            }
            None
        };
        match sig {
            Some(part) => {
                signature
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(part);
                in_signature = true;
            }
            None => {
                if !other_signature {
                    payload.extend_from_slice(line);
                }
                in_signature = false;
            }
        }
    }
    payload.extend_from_slice(body);
    Ok(Split { payload, signature })
}

/// Verifies the SSH signature of `commit` against `signers`, judging key validity windows at `at`.
///
/// `at` is the caller's decision: the verifier's clock for the commit that will be applied (a commit's
/// own date can be backdated by whoever holds an expired or stolen key), the committer date only for
/// older commits of a history walk.
pub fn verify_commit(
    commit: &FetchedCommit,
    signers: &AllowedSigners,
    at: jiff::Timestamp,
) -> Result<VerifiedCommit, CommitSignatureError> {
    let id = commit.id().as_str();
    if commit.raw().len() > MAX_COMMIT_BYTES {
        return Err(CommitSignatureError::TooLarge {
            id: id.to_owned(),
            size: commit.raw().len(),
        });
    }
    let split = split(id, commit.raw())?;
    let signature = split
        .signature
        .ok_or_else(|| CommitSignatureError::Unsigned { id: id.to_owned() })?;
    if !signature.starts_with(SSH_ARMOR.as_bytes()) {
        return Err(CommitSignatureError::NotSshSignature { id: id.to_owned() });
    }
    let signer =
        sshsig::verify(&signature, &split.payload, NAMESPACE, signers, at).map_err(|source| {
            CommitSignatureError::Signature {
                id: id.to_owned(),
                source,
            }
        })?;
    Ok(VerifiedCommit {
        commit: commit.clone(),
        signer,
    })
}

/// Signs an unsigned commit object as `git commit -S` with `gpg.format=ssh` does: the `gpgsig`
/// header goes at the end of the header block, continuation lines prefixed by one space.
pub fn sign_commit(
    unsigned_raw: &[u8],
    key: &ssh_key::PrivateKey,
) -> Result<Vec<u8>, CommitSignatureError> {
    let split = split("(new)", unsigned_raw)?;
    if split.signature.is_some() || split.payload != unsigned_raw {
        // A header starting with `gpgsig` is not signed by git: refuse rather than sign around it.
        return Err(CommitSignatureError::Malformed {
            id: "(new)".into(),
            message: "already signed (it carries a header starting with gpgsig)".into(),
        });
    }
    let armored = sshsig::sign(unsigned_raw, NAMESPACE, key).map_err(|source| {
        CommitSignatureError::Signature {
            id: "(new)".into(),
            source,
        }
    })?;
    let header_end = unsigned_raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| p + 1)
        .ok_or_else(|| CommitSignatureError::Malformed {
            id: "(new)".into(),
            message: "no blank line after the headers".into(),
        })?;
    let mut out = Vec::with_capacity(unsigned_raw.len() + armored.len() + 64);
    out.extend_from_slice(&unsigned_raw[..header_end]);
    let mut lines = armored.trim_end_matches('\n').split('\n');
    if let Some(first) = lines.next() {
        out.extend_from_slice(b"gpgsig ");
        out.extend_from_slice(first.as_bytes());
        out.push(b'\n');
    }
    for line in lines {
        out.push(b' ');
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(&unsigned_raw[header_end..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNSIGNED: &[u8] = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@example.org> 1700000000 +0000\ncommitter A <a@example.org> 1700000000 +0000\n\nmessage\n";

    fn fetched(raw: Vec<u8>) -> FetchedCommit {
        FetchedCommit::from_raw(raw).expect("a commit object")
    }

    #[test]
    fn sign_and_verify_round_trip_and_payload_is_exact() {
        let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .expect("key");
        let signed = sign_commit(UNSIGNED, &key).expect("sign");
        let parts = split("x", &signed).expect("split");
        assert_eq!(parts.payload, UNSIGNED);
        let public = key.public_key().to_openssh().expect("pub");
        let signers = AllowedSigners::parse(&format!("me {public}\n"), "t").expect("signers");
        let now = jiff::Timestamp::now();
        let verified = verify_commit(&fetched(signed.clone()), &signers, now).expect("verified");
        assert_eq!(verified.signer().principal, "me");
        assert!(matches!(
            verify_commit(&fetched(UNSIGNED.to_vec()), &signers, now),
            Err(CommitSignatureError::Unsigned { .. })
        ));
        let pgp = String::from_utf8(UNSIGNED.to_vec())
            .expect("utf8")
            .replacen(
                "\n\n",
                "\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n -----END PGP SIGNATURE-----\n\n",
                1,
            );
        assert!(matches!(
            verify_commit(&fetched(pgp.into_bytes()), &signers, now),
            Err(CommitSignatureError::NotSshSignature { .. })
        ));
        let mut tampered = signed;
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        assert!(matches!(
            verify_commit(&fetched(tampered), &signers, now),
            Err(CommitSignatureError::Signature {
                source: SignatureError::BadSignature { .. },
                ..
            })
        ));
        // Oversized or shapeless objects never become a FetchedCommit: the reader refuses them.
        assert!(matches!(
            FetchedCommit::from_raw(vec![b'a'; MAX_COMMIT_BYTES + 1]),
            Err(crate::repository::GitError::CommitTooLarge { .. })
        ));
        assert!(matches!(
            FetchedCommit::from_raw(b"tree x".to_vec()),
            Err(crate::repository::GitError::Object { .. })
        ));
    }
}
