//! Interop with the real tools: commits signed by `git commit -S` (gpg.format=ssh) and checked by
//! `git verify-commit`; release signatures from and to `ssh-keygen -Y sign/verify`. On every case
//! our decision is asserted next to the stock tool's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vworkspace_core::repository::LocalRepository;
use vworkspace_core::trust::commit_signature::{self, CommitSignatureError};
use vworkspace_core::trust::signers::AllowedSigners;
use vworkspace_core::trust::sshsig::{self, SignatureError};

struct Repo {
    _dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("command runs")
}

fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let work = root.join("work");
        std::fs::create_dir_all(&work).expect("mkdir");
        let r = Repo {
            _dir: dir,
            root,
            work,
        };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("git");
        c.current_dir(&self.work)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &self.root)
            .args([
                "-c",
                "user.name=Signer",
                "-c",
                "user.email=signer@example.org",
                "-c",
                "gpg.format=ssh",
            ]);
        c
    }

    fn git(&self, args: &[&str]) -> String {
        ok(self.cmd().args(args))
    }

    fn keygen(&self, name: &str, kind: &str) -> (PathBuf, String) {
        let path = self.root.join(name);
        ok(Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
            .arg(&path));
        let public = std::fs::read_to_string(path.with_extension("pub")).expect("pub");
        (path, public.trim().to_owned())
    }

    /// A commit signed by the real `git commit -S` with `key` (or unsigned with None).
    fn commit(&self, key: Option<&Path>, message: &str) -> String {
        std::fs::write(self.work.join("f.txt"), message).expect("write");
        self.git(&["add", "-A"]);
        match key {
            Some(k) => ok(self
                .cmd()
                .arg("-c")
                .arg(format!("user.signingkey={}", k.display()))
                .args(["commit", "-q", "-S", "-m", message])),
            None => self.git(&["commit", "-q", "--no-gpg-sign", "-m", message]),
        };
        self.git(&["rev-parse", "HEAD"])
    }

    fn write_object(&self, raw: &[u8]) -> String {
        let mut child = self
            .cmd()
            .args(["hash-object", "-t", "commit", "-w", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("git");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(raw)
            .expect("write");
        let out = child.wait_with_output().expect("hash-object");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn signers_file(&self, text: &str) -> PathBuf {
        let path = self.root.join(format!("signers-{}", text.len()));
        std::fs::write(&path, text).expect("write");
        path
    }

    /// `git verify-commit` with the given allowed_signers file: true when git accepts.
    fn git_accepts(&self, id: &str, signers: &Path) -> bool {
        output(
            self.cmd()
                .arg("-c")
                .arg(format!("gpg.ssh.allowedSignersFile={}", signers.display()))
                .args(["verify-commit", id]),
        )
        .status
        .success()
    }

    fn ours(
        &self,
        id: &str,
        signers: &Path,
        at: jiff::Timestamp,
    ) -> Result<String, CommitSignatureError> {
        let repo = LocalRepository::open(&self.work).expect("open");
        let commit = repo.read_commit(id).expect("read");
        let text = std::fs::read_to_string(signers).expect("signers");
        let signers = AllowedSigners::parse(&text, "allowed_signers").expect("parse");
        commit_signature::verify_commit(&commit, &signers, at).map(|v| v.signer().principal.clone())
    }
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

#[test]
fn good_commit_verifies_with_both() {
    let r = Repo::new();
    let (key, public) = r.keygen("alice", "ed25519");
    let id = r.commit(Some(&key), "good");
    let signers = r.signers_file(&format!("alice@example.org namespaces=\"git\" {public}\n"));
    assert!(r.git_accepts(&id, &signers));
    assert_eq!(
        r.ours(&id, &signers, now()).expect("ours"),
        "alice@example.org"
    );
}

#[test]
fn unsigned_commit_refused_by_both() {
    let r = Repo::new();
    let (_, public) = r.keygen("alice", "ed25519");
    let id = r.commit(None, "unsigned");
    let signers = r.signers_file(&format!("alice {public}\n"));
    assert!(!r.git_accepts(&id, &signers));
    assert!(matches!(
        r.ours(&id, &signers, now()),
        Err(CommitSignatureError::Unsigned { .. })
    ));
}

#[test]
fn unknown_key_refused_by_both() {
    let r = Repo::new();
    let (key, _) = r.keygen("mallory", "ed25519");
    let (_, trusted) = r.keygen("alice", "ed25519");
    let id = r.commit(Some(&key), "by mallory");
    let signers = r.signers_file(&format!("alice {trusted}\n"));
    assert!(!r.git_accepts(&id, &signers));
    assert!(matches!(
        r.ours(&id, &signers, now()),
        Err(CommitSignatureError::Signature {
            source: SignatureError::UnknownKey { .. },
            ..
        })
    ));
}

#[test]
fn tampered_commit_refused_by_both() {
    let r = Repo::new();
    let (key, public) = r.keygen("alice", "ed25519");
    let id = r.commit(Some(&key), "original message");
    let raw = ok(r.cmd().args(["cat-file", "commit", &id])) + "\n";
    let tampered = r.write_object(
        raw.replace("original message", "original messagf")
            .as_bytes(),
    );
    assert_ne!(tampered, id);
    let signers = r.signers_file(&format!("alice {public}\n"));
    assert!(!r.git_accepts(&tampered, &signers));
    assert!(matches!(
        r.ours(&tampered, &signers, now()),
        Err(CommitSignatureError::Signature {
            source: SignatureError::BadSignature { .. },
            ..
        })
    ));
}

#[test]
fn key_not_allowed_for_git_namespace_refused_by_both() {
    let r = Repo::new();
    let (key, public) = r.keygen("alice", "ed25519");
    let id = r.commit(Some(&key), "ns");
    let signers = r.signers_file(&format!("alice namespaces=\"file\" {public}\n"));
    assert!(!r.git_accepts(&id, &signers));
    assert!(matches!(
        r.ours(&id, &signers, now()),
        Err(CommitSignatureError::Signature {
            source: SignatureError::NamespaceNotAllowedForKey { .. },
            ..
        })
    ));
}

#[test]
fn ecdsa_key_accepted_by_git_refused_by_us() {
    // Intentional disagreement: our policy is ed25519 only.
    let r = Repo::new();
    let (key, public) = r.keygen("alice", "ecdsa");
    let id = r.commit(Some(&key), "ecdsa");
    let signers = r.signers_file(&format!("alice {public}\n"));
    assert!(r.git_accepts(&id, &signers));
    let err = r.ours(&id, &signers, now()).expect_err("refused");
    assert!(
        matches!(
            err,
            CommitSignatureError::Signature {
                source: SignatureError::UnsupportedKeyAlgorithm { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn expired_key_is_judged_at_the_verifier_clock() {
    let r = Repo::new();
    let (key, public) = r.keygen("alice", "ed25519");
    let id = r.commit(Some(&key), "late");
    // The key expired in 2025. The commit claims today's date, so git (which judges by the commit's
    // date) refuses too; the point is that we refuse on our own clock, whatever the commit says.
    let signers = r.signers_file(&format!("alice valid-before=\"20250101\" {public}\n"));
    assert!(!r.git_accepts(&id, &signers));
    assert!(matches!(
        r.ours(&id, &signers, now()),
        Err(CommitSignatureError::Signature {
            source: SignatureError::KeyExpired { .. },
            ..
        })
    ));
    // A backdated commit: git accepts it (its date is inside the window); at our clock it is refused.
    std::fs::write(r.work.join("g.txt"), "backdated").expect("write");
    r.git(&["add", "-A"]);
    ok(r.cmd()
        .env("GIT_COMMITTER_DATE", "2024-06-01T00:00:00Z")
        .env("GIT_AUTHOR_DATE", "2024-06-01T00:00:00Z")
        .arg("-c")
        .arg(format!("user.signingkey={}", key.display()))
        .args(["commit", "-q", "-S", "-m", "backdated"]));
    let backdated = r.git(&["rev-parse", "HEAD"]);
    assert!(r.git_accepts(&backdated, &signers));
    assert!(matches!(
        r.ours(&backdated, &signers, now()),
        Err(CommitSignatureError::Signature {
            source: SignatureError::KeyExpired { .. },
            ..
        })
    ));
    // At a clock inside the window we accept, as git does.
    let inside: jiff::Timestamp = "2024-06-02T00:00:00Z".parse().expect("ts");
    assert!(r.ours(&backdated, &signers, inside).is_ok());
}

#[test]
fn not_yet_valid_key_refused_by_both() {
    let r = Repo::new();
    let (key, public) = r.keygen("alice", "ed25519");
    let id = r.commit(Some(&key), "early");
    let signers = r.signers_file(&format!("alice valid-after=\"20990101\" {public}\n"));
    assert!(!r.git_accepts(&id, &signers));
    assert!(matches!(
        r.ours(&id, &signers, now()),
        Err(CommitSignatureError::Signature {
            source: SignatureError::KeyNotYetValid { .. },
            ..
        })
    ));
}

#[test]
fn our_commit_signature_is_accepted_by_git() {
    let r = Repo::new();
    let (key_path, public) = r.keygen("alice", "ed25519");
    r.commit(None, "base");
    let tree = r.git(&["rev-parse", "HEAD^{tree}"]);
    let raw = format!(
        "tree {tree}\nauthor A <a@example.org> 1700000000 +0000\ncommitter A <a@example.org> 1700000000 +0000\n\nsigned by us\n"
    );
    let key = ssh_key::PrivateKey::read_openssh_file(&key_path).expect("key");
    let signed = commit_signature::sign_commit(raw.as_bytes(), &key).expect("sign");
    let id = r.write_object(&signed);
    let signers = r.signers_file(&format!("alice {public}\n"));
    assert!(r.git_accepts(&id, &signers));
    assert_eq!(r.ours(&id, &signers, now()).expect("ours"), "alice");
}

#[test]
fn release_signatures_interoperate_with_ssh_keygen() {
    let r = Repo::new();
    let (key_path, public) = r.keygen("alice", "ed25519");
    let signers_path = r.signers_file(&format!(
        "alice namespaces=\"vworkspace-release\" {public}\n"
    ));
    let signers =
        AllowedSigners::parse(&std::fs::read_to_string(&signers_path).expect("read"), "s")
            .expect("parse");
    let manifest = r.root.join("release.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: gitops.vworkspace.io/v1alpha1\nkind: Release\n",
    )
    .expect("write");
    let message = std::fs::read(&manifest).expect("read");

    // ssh-keygen signs, we verify.
    ok(Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "vworkspace-release", "-f"])
        .arg(&key_path)
        .arg(&manifest));
    let theirs = std::fs::read(manifest.with_extension("yaml.sig")).expect("sig");
    assert_eq!(
        sshsig::verify(&theirs, &message, "vworkspace-release", &signers, now())
            .expect("ours accepts")
            .principal,
        "alice"
    );
    assert!(matches!(
        sshsig::verify(&theirs, &message, "git", &signers, now()),
        Err(SignatureError::WrongNamespace { .. })
    ));

    // We sign, ssh-keygen verifies; and refuses under another namespace, as we do.
    let key = ssh_key::PrivateKey::read_openssh_file(&key_path).expect("key");
    let ours = sshsig::sign(&message, "vworkspace-release", &key).expect("sign");
    let sig_path = r.root.join("ours.sig");
    std::fs::write(&sig_path, &ours).expect("write");
    let keygen_verify = |namespace: &str| {
        let mut child = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-I", "alice", "-n", namespace, "-f"])
            .arg(&signers_path)
            .arg("-s")
            .arg(&sig_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-keygen");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&message)
            .expect("write");
        child.wait().expect("wait").success()
    };
    assert!(keygen_verify("vworkspace-release"));
    assert!(!keygen_verify("git"));
    let other = sshsig::sign(&message, "git", &key).expect("sign");
    assert!(matches!(
        sshsig::verify(
            other.as_bytes(),
            &message,
            "vworkspace-release",
            &signers,
            now()
        ),
        Err(SignatureError::WrongNamespace { .. })
    ));
}
