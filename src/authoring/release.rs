//! `release`: write `clusters/<id>/release.yaml` (hashes, next serial, expiry, parent) and sign it.

use std::io::Write;
use std::path::Path;

use clap::Args;
use std::path::PathBuf;

use super::{CliError, ExitCode};
use vworkspace_core::limits::Limits;
use vworkspace_core::repository::{ClusterTree, TreeEntry};
use vworkspace_core::trust::release::{self, MANIFEST_FILE, SIGNATURE_NAMESPACE, SIGNATURES_DIR};

/// `release` arguments.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The checkout (work tree) to release from; git's upward discovery finds its root.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The cluster id.
    #[arg(long)]
    pub cluster: String,
    /// The ed25519 key to sign with: an unencrypted OpenSSH private key, or (through ssh-agent,
    /// SSH_AUTH_SOCK) a passphrase-protected one or its public key (.pub).
    #[arg(long)]
    pub key: PathBuf,
    /// How long the release stays valid: a duration such as 30d, 12h, 90m or 1h30m.
    #[arg(long, default_value = "30d")]
    pub expires: String,
    /// The serial to write (default: one more than the current release.yaml, or 1).
    #[arg(long)]
    pub serial: Option<u64>,
    /// The signature file name, release.sigs/<name>.sig (default: the key's comment or fingerprint).
    #[arg(long)]
    pub name: Option<String>,
    /// Add a signature to the existing release.yaml without rewriting it (a co-signer).
    #[arg(long)]
    pub sign_only: bool,
    /// Rewrite a release that already carries other valid signatures over the same files (they are
    /// removed); without it such a release is only co-signed with --sign-only.
    #[arg(long, conflicts_with = "sign_only")]
    pub force: bool,
    /// Skip the key-free checks and sign whatever the directory holds. Only for building releases
    /// the operator must refuse (its own tests); it refuses them anyway.
    #[arg(long, hide = true)]
    pub unchecked: bool,
}

fn usage(what: impl std::fmt::Display) -> CliError {
    CliError::Usage(what.to_string())
}

fn io(what: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Io(format!("{}: {e}", what.display()))
}

/// Parses a duration such as `30d`, `12h`, `90m` or `1h30m` (see [`super::duration`]).
pub fn parse_duration(text: &str) -> Result<jiff::SignedDuration, CliError> {
    super::duration::parse("--expires", text, false)
}

/// Reads an unencrypted ed25519 OpenSSH private key (the benches and tools that sign directly).
pub fn read_signing_key(path: &Path) -> Result<ssh_key::PrivateKey, CliError> {
    match read_signer(path, None)? {
        SigningKey::File(key) => Ok(*key),
        SigningKey::Agent { .. } => Err(usage(format!(
            "--key {}: needs ssh-agent; give an unencrypted private key here",
            path.display()
        ))),
    }
}

/// What signs a release: a private key read from its file, or a key held by ssh-agent.
#[derive(Debug)]
pub enum SigningKey {
    /// An unencrypted private key.
    File(Box<ssh_key::PrivateKey>),
    /// A key in ssh-agent (a passphrase-protected key, or `--key` naming a public key).
    Agent {
        /// The agent.
        agent: super::agent::Agent,
        /// The key's public half.
        public: ssh_key::PublicKey,
        /// The agent's comment for it.
        comment: String,
    },
}

impl SigningKey {
    /// The public key.
    pub fn public_key(&self) -> &ssh_key::PublicKey {
        match self {
            SigningKey::File(key) => key.public_key(),
            SigningKey::Agent { public, .. } => public,
        }
    }

    /// The key's comment (the principal people know it by), possibly empty.
    pub fn comment(&self) -> &str {
        match self {
            SigningKey::File(key) => key.comment(),
            SigningKey::Agent {
                public, comment, ..
            } if public.comment().is_empty() => comment,
            SigningKey::Agent { public, .. } => public.comment(),
        }
    }

    /// An armored SSHSIG over `message` for `namespace`.
    pub fn sign(&self, message: &[u8], namespace: &str) -> Result<String, CliError> {
        match self {
            SigningKey::File(key) => {
                vworkspace_core::trust::sshsig::sign(message, namespace, key).map_err(usage)
            }
            SigningKey::Agent { agent, public, .. } => agent
                .sign_sshsig(public, namespace, message)
                .map_err(|e| usage(format!("--key: {e}"))),
        }
    }
}

/// Reads `--key`: an unencrypted private key signs directly; a passphrase-protected private key, or
/// a public key (`.pub`), signs through ssh-agent (`SSH_AUTH_SOCK`) when the agent holds it.
pub fn read_signer(
    path: &Path,
    agent: Option<super::agent::Agent>,
) -> Result<SigningKey, CliError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| usage(format!("--key {shown}: {e}")))?;
    let agent = agent.or_else(super::agent::Agent::from_env);
    let (public, why) = if text.trim_start().starts_with("-----BEGIN") {
        let key = ssh_key::PrivateKey::from_openssh(&text)
            .map_err(|e| usage(format!("--key {shown}: not an OpenSSH private key: {e}")))?;
        if key.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(usage(format!(
                "--key {shown}: only ed25519 keys sign releases"
            )));
        }
        if !key.is_encrypted() {
            return Ok(SigningKey::File(Box::new(key)));
        }
        (key.public_key().clone(), "the key is passphrase-protected")
    } else {
        let public = ssh_key::PublicKey::from_openssh(text.trim()).map_err(|_| {
            usage(format!(
                "--key {shown}: neither an OpenSSH private key nor a public key (ssh-ed25519 AAAA...)"
            ))
        })?;
        (
            public,
            "this is a public key, so the private key must be in ssh-agent",
        )
    };
    if public.algorithm() != ssh_key::Algorithm::Ed25519 {
        return Err(usage(format!(
            "--key {shown}: only ed25519 keys sign releases"
        )));
    }
    let fingerprint = public.fingerprint(ssh_key::HashAlg::Sha256);
    let Some(agent) = agent else {
        return Err(usage(format!(
            "--key {shown}: {why}; release signs with it through ssh-agent, and SSH_AUTH_SOCK is not set: start one (`eval $(ssh-agent)`), `ssh-add {shown}`, then run release again"
        )));
    };
    match agent
        .holds(&public)
        .map_err(|e| usage(format!("--key {shown}: {e}")))?
    {
        Some(comment) => Ok(SigningKey::Agent {
            agent,
            public,
            comment,
        }),
        None => Err(usage(format!(
            "--key {shown}: {why}, and ssh-agent ({}) does not hold it ({fingerprint}): `ssh-add {shown}` (it asks for the passphrase once), then run release again",
            agent.socket().display()
        ))),
    }
}

/// The file name a key's signature is written under: its comment, reduced to safe characters, or its
/// fingerprint.
fn signature_name(key: &SigningKey, explicit: Option<&str>) -> Result<String, CliError> {
    let raw = match explicit {
        Some(name) => name.to_owned(),
        None if !key.comment().is_empty() => key.comment().to_owned(),
        None => {
            let fp = key
                .public_key()
                .fingerprint(ssh_key::HashAlg::Sha256)
                .to_string();
            format!(
                "key-{}",
                fp.trim_start_matches("SHA256:")
                    .chars()
                    .take(12)
                    .collect::<String>()
            )
        }
    };
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(|c| c == '-' || c == '.').to_owned();
    if name.is_empty() || name.len() > 100 {
        return Err(usage(format!(
            "signature name {raw:?} is unusable: pass --name"
        )));
    }
    Ok(name)
}

/// Reads `clusters/<cluster>/` of a work tree. A missing directory is a usage error that lists the
/// cluster directories there are (a `--cluster` typo).
pub fn read_worktree(root: &Path, cluster: &str, limits: &Limits) -> Result<ClusterTree, CliError> {
    cluster_directory(root, cluster)?;
    super::checkout::read_cluster_directory(root, cluster, limits).map_err(usage)
}

/// `root/clusters/<cluster>/`, or a usage error that lists the cluster directories there are.
fn cluster_directory(root: &Path, cluster: &str) -> Result<std::path::PathBuf, CliError> {
    let dir = root.join("clusters").join(cluster);
    if cluster.is_empty() || cluster.contains('/') || !dir.is_dir() {
        let mut existing: Vec<String> = std::fs::read_dir(root.join("clusters"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        existing.sort();
        return Err(usage(if existing.is_empty() {
            format!(
                "clusters/{cluster}/ does not exist in {} (no clusters/ directory: is --repo the intent repository?)",
                root.display()
            )
        } else {
            format!(
                "clusters/{cluster}/ does not exist in {}; the cluster directories are: {} (check --cluster)",
                root.display(),
                existing.join(", ")
            )
        }));
    }
    Ok(dir)
}

/// Reads what `release` hashes and signs: in a git work tree, what git will commit (the index:
/// after `core.autocrlf`, tracked files only; untracked or unstaged files under the cluster
/// directory are refused, naming each), elsewhere the directory as it is. `release.yaml` is the one
/// on disk, staged or not (release writes it).
pub fn read_for_release(
    root: &Path,
    cluster: &str,
    limits: &Limits,
) -> Result<ClusterTree, CliError> {
    let dir = cluster_directory(root, cluster)?;
    // The directory is read only where there is no index: reading both would read every file twice.
    let mut tree = match super::checkout::read_cluster_index(root, cluster, limits)
        .map_err(usage)?
    {
        Some(index) => index,
        None => super::checkout::read_cluster_directory(root, cluster, limits).map_err(usage)?,
    };
    if let Ok(bytes) = std::fs::read(dir.join(MANIFEST_FILE)) {
        tree.insert(MANIFEST_FILE, TreeEntry::File(bytes));
    }
    Ok(tree)
}

/// Whether the tree's `release.yaml` no longer covers its files: a note naming the files and the
/// command that fixes it, or `None` when the manifest matches.
pub fn stale_release(tree: &ClusterTree, limits: &Limits) -> Option<String> {
    let cluster = tree.cluster();
    let fix = format!(
        "run `vworkspace-operator release --cluster {cluster} --key <your release key>` before committing"
    );
    let current = match tree.entries().get(MANIFEST_FILE) {
        Some(TreeEntry::File(bytes)) => release::parse_manifest(bytes, cluster, limits).ok(),
        _ => None,
    };
    let Some(current) = current else {
        return Some(format!(
            "clusters/{cluster}/release.yaml is missing or unreadable; {fix}"
        ));
    };
    let now = jiff::Timestamp::now();
    let wanted = release::build_manifest(tree, current.serial, now, None).ok()?;
    let changed: Vec<&String> = wanted
        .files
        .iter()
        .filter(|(path, digest)| current.files.get(*path) != Some(digest))
        .map(|(path, _)| path)
        .chain(
            current
                .files
                .keys()
                .filter(|p| !wanted.files.contains_key(*p)),
        )
        .collect();
    if changed.is_empty() {
        return None;
    }
    let shown: Vec<String> = changed
        .iter()
        .take(5)
        .map(|p| format!("clusters/{cluster}/{p}"))
        .collect();
    Some(format!(
        "clusters/{cluster}/release.yaml does not cover {} changed file(s) ({}{}); {fix}",
        changed.len(),
        shown.join(", "),
        if changed.len() > 5 { ", ..." } else { "" }
    ))
}

/// The signatures in `release.sigs/` that verify over `manifest` (by any key): `(file, fingerprint)`.
fn valid_signatures(tree: &ClusterTree, manifest: &[u8]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, entry) in tree.entries() {
        let TreeEntry::File(bytes) = entry else {
            continue;
        };
        if !(path.starts_with(SIGNATURES_DIR) && path.ends_with(".sig")) {
            continue;
        }
        let Ok(signature) = ssh_key::SshSig::from_pem(bytes) else {
            continue;
        };
        let key = ssh_key::PublicKey::from(signature.public_key().clone());
        if key
            .verify(SIGNATURE_NAMESPACE, manifest, &signature)
            .is_ok()
        {
            found.push((
                path.clone(),
                key.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
            ));
        }
    }
    found
}

/// What a co-signer signs, shown before the signature is made: the cluster, serial, expiry, parent
/// (and whether it is this checkout's HEAD) and every file with its digest.
fn show_cosigned(
    manifest: &release::ReleaseManifest,
    root: &Path,
    manifest_rel: &str,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let head = vworkspace_core::repository::LocalRepository::open(root)
        .and_then(|repo| {
            repo.resolve(&vworkspace_core::repository::GitRef::Revision(
                "HEAD".into(),
            ))
        })
        .ok()
        .map(|c| c.to_string());
    let parent = match (&manifest.parent, &head) {
        (None, _) => "none recorded".to_owned(),
        (Some(p), Some(h)) if p == h => format!("{p} (this checkout's HEAD)"),
        (Some(p), Some(h)) => {
            format!("{p} (NOT this checkout's HEAD {h}: check what it was made from)")
        }
        (Some(p), None) => p.clone(),
    };
    writeln!(out, "co-signing {manifest_rel}:")?;
    writeln!(out, "  cluster: {}", manifest.cluster)?;
    writeln!(out, "  serial:  {}", manifest.serial)?;
    writeln!(out, "  expires: {}", manifest.expires)?;
    writeln!(out, "  parent:  {parent}")?;
    writeln!(out, "  files:   {}", manifest.files.len())?;
    for (path, digest) in &manifest.files {
        writeln!(out, "    {path} {digest}")?;
    }
    Ok(())
}

/// `release`: writes `clusters/<id>/release.yaml` and signs it, or (`--sign-only`) adds a signature.
///
/// Before anything is written or signed, every check `verify` runs without a key runs on exactly
/// the files the manifest will list; a refusal (exit 1) leaves the directory untouched.
pub fn release(args: &ReleaseArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let key = read_signer(&args.key, None)?;
    let at = Releasing::new(args, &key)?;
    let tree = read_for_release(&at.root, &args.cluster, &at.limits)?;
    // The same key-free checks as verify, on exactly what is about to be hashed and signed.
    if !args.unchecked
        && let Err(refused) = vworkspace_core::pipeline::check_unsigned(&tree, &at.limits)
    {
        let refusal = super::report::Refusal::from(&refused);
        super::report::report_refusal(&refusal, out).map_err(|e| io(&at.manifest_path, e))?;
        writeln!(
            out,
            "nothing was written or signed: fix the files above, then run release again"
        )
        .map_err(|e| io(&at.manifest_path, e))?;
        return Ok(1);
    }
    let manifest_bytes = if args.sign_only {
        at.signed_manifest(&tree, out)?
    } else {
        at.new_manifest(&tree, out)?
    };
    let armored = key.sign(&manifest_bytes, SIGNATURE_NAMESPACE)?;
    std::fs::create_dir_all(&at.sigs_dir).map_err(|e| io(&at.sigs_dir, e))?;
    let name = &at.name;
    let sig_path = at.sigs_dir.join(format!("{name}.sig"));
    std::fs::write(&sig_path, armored).map_err(|e| io(&sig_path, e))?;
    let (cluster, manifest_rel) = (&args.cluster, &at.manifest_rel);
    writeln!(
        out,
        "signed {manifest_rel} as clusters/{cluster}/{SIGNATURES_DIR}{name}.sig ({})",
        at.my_fingerprint
    )
    .map_err(|e| io(&sig_path, e))?;
    Ok(0)
}

/// One run of `release`: where its files are, who signs.
struct Releasing<'a> {
    args: &'a ReleaseArgs,
    /// The signature's file name (without `.sig`).
    name: String,
    expires_in: jiff::SignedDuration,
    root: PathBuf,
    manifest_path: PathBuf,
    /// `clusters/<id>/release.yaml`.
    manifest_rel: String,
    sigs_dir: PathBuf,
    limits: Limits,
    my_fingerprint: String,
}

impl<'a> Releasing<'a> {
    fn new(args: &'a ReleaseArgs, key: &SigningKey) -> Result<Self, CliError> {
        let name = signature_name(key, args.name.as_deref())?;
        let expires_in = parse_duration(&args.expires)?;
        let root = super::inputs::discover(&args.repo);
        let cluster = &args.cluster;
        let dir = root.join("clusters").join(cluster);
        Ok(Releasing {
            args,
            name,
            expires_in,
            manifest_path: dir.join(MANIFEST_FILE),
            manifest_rel: format!("clusters/{cluster}/{MANIFEST_FILE}"),
            sigs_dir: dir.join(SIGNATURES_DIR.trim_end_matches('/')),
            root,
            limits: Limits::default(),
            my_fingerprint: key
                .public_key()
                .fingerprint(ssh_key::HashAlg::Sha256)
                .to_string(),
        })
    }

    /// `--sign-only`: the manifest as it is, refused when it no longer matches the files.
    fn signed_manifest(
        &self,
        tree: &ClusterTree,
        out: &mut dyn Write,
    ) -> Result<Vec<u8>, CliError> {
        let bytes = match tree.entries().get(MANIFEST_FILE) {
            Some(TreeEntry::File(bytes)) => bytes.clone(),
            _ => {
                return Err(usage(format!(
                    "{} does not exist: run release without --sign-only first",
                    self.manifest_rel
                )));
            }
        };
        // A co-signature over a manifest that no longer matches the files would be refused.
        if let Some(stale) = stale_release(tree, &self.limits) {
            return Err(usage(format!(
                "{stale} (co-signing it would sign a release the operator refuses)"
            )));
        }
        let manifest =
            release::parse_manifest(&bytes, &self.args.cluster, &self.limits).map_err(|e| {
                usage(format!(
                    "{e} (co-signing it would sign a release the operator refuses)"
                ))
            })?;
        show_cosigned(&manifest, &self.root, &self.manifest_rel, out)
            .map_err(|e| io(&self.manifest_path, e))?;
        Ok(bytes)
    }

    /// A new manifest (next serial, expiry, parent) written over the old one, whose signatures
    /// are removed; its bytes.
    fn new_manifest(&self, tree: &ClusterTree, out: &mut dyn Write) -> Result<Vec<u8>, CliError> {
        let current = match tree.entries().get(MANIFEST_FILE) {
            Some(TreeEntry::File(bytes)) => Some((
                release::parse_manifest(bytes, &self.args.cluster, &self.limits).map_err(|e| {
                    usage(format!(
                        "{e} (fix or delete {}, then run release again)",
                        self.manifest_rel
                    ))
                })?,
                bytes.clone(),
            )),
            _ => None,
        };
        if let Some((manifest, bytes)) = &current {
            self.refuse_replacing_cosigned(tree, manifest.serial, bytes)?;
        }
        let serial = self.next_serial(current.as_ref().map(|(m, _)| m.serial))?;
        let expires = jiff::Timestamp::now()
            .checked_add(self.expires_in)
            .and_then(|t| t.round(jiff::Unit::Second))
            .map_err(|e| usage(format!("--expires: {e}")))?;
        let parent = vworkspace_core::repository::LocalRepository::open(&self.root)
            .and_then(|repo| {
                repo.resolve(&vworkspace_core::repository::GitRef::Revision(
                    "HEAD".into(),
                ))
            })
            .ok();
        let manifest = release::build_manifest(tree, serial, expires, parent).map_err(usage)?;
        let text = release::render_manifest(&manifest);
        std::fs::write(&self.manifest_path, &text).map_err(|e| io(&self.manifest_path, e))?;
        let removed = self.remove_old_signatures()?;
        writeln!(
            out,
            "wrote {} (serial {serial}, expires {expires}, {} files)",
            self.manifest_rel,
            manifest.files.len()
        )
        .map_err(|e| io(&self.manifest_path, e))?;
        let cluster = &self.args.cluster;
        for path in removed {
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            writeln!(
                out,
                "removed clusters/{cluster}/{SIGNATURES_DIR}{file}: it signed the previous manifest; its signer co-signs again with `vworkspace-operator release --cluster {cluster} --key <their key> --sign-only`"
            )
            .map_err(|e| io(&path, e))?;
        }
        Ok(text.into_bytes())
    }

    /// A co-signer who forgot --sign-only would replace the release and drop the others'
    /// signatures: stopped unless the files changed, or --force says so.
    fn refuse_replacing_cosigned(
        &self,
        tree: &ClusterTree,
        serial: u64,
        bytes: &[u8],
    ) -> Result<(), CliError> {
        if self.args.force || stale_release(tree, &self.limits).is_some() {
            return Ok(());
        }
        let cluster = &self.args.cluster;
        let others: Vec<String> = valid_signatures(tree, bytes)
            .into_iter()
            .filter(|(_, fp)| *fp != self.my_fingerprint)
            .map(|(file, fp)| format!("clusters/{cluster}/{file} ({fp})"))
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        Err(usage(format!(
            "{} (serial {serial}) already lists exactly these files and is signed by {}; to co-sign it run `vworkspace-operator release --cluster {cluster} --key {} --sign-only`; to replace it anyway (a new serial, their signatures removed) add --force",
            self.manifest_rel,
            others.join(", "),
            self.args.key.display()
        )))
    }

    /// `--serial`, which must exceed the current one, or the current one plus one, or 1.
    fn next_serial(&self, current: Option<u64>) -> Result<u64, CliError> {
        match (self.args.serial, current) {
            (Some(s), Some(c)) if s <= c => Err(usage(format!(
                "--serial {s} must be greater than the current serial {c}"
            ))),
            (Some(s), _) => Ok(s),
            (None, Some(c)) => c.checked_add(1).ok_or_else(|| usage("serial overflow")),
            (None, None) => Ok(1),
        }
        .and_then(|serial| {
            if serial > release::MAX_SERIAL {
                return Err(usage(format!(
                    "serial {serial} is above the highest serial {} (2^53 - 1): the operator refuses it, so that no release can take the last serial there is",
                    release::MAX_SERIAL
                )));
            }
            Ok(serial)
        })
    }

    /// Removes every signature (they are over the old manifest: they can only fail now); the
    /// others' files, to say which went.
    fn remove_old_signatures(&self) -> Result<Vec<PathBuf>, CliError> {
        let mut removed = Vec::new();
        if !self.sigs_dir.is_dir() {
            return Ok(removed);
        }
        let own = format!("{}.sig", self.name);
        for entry in std::fs::read_dir(&self.sigs_dir).map_err(|e| io(&self.sigs_dir, e))? {
            let path = entry.map_err(|e| io(&self.sigs_dir, e))?.path();
            if path.extension().is_some_and(|e| e == "sig") {
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
                if path.file_name() != Some(std::ffi::OsStr::new(&own)) {
                    removed.push(path);
                }
            }
        }
        Ok(removed)
    }
}
