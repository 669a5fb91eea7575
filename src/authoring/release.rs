//! `release`: write `clusters/<id>/release.yaml` (hashes, next serial, expiry, parent) and sign it.

use std::io::Write;
use std::path::Path;

use clap::Args;
use std::path::PathBuf;

use super::{CliError, ExitCode};
use vworkspace_core::limits::Limits;
use vworkspace_core::repository::TreeEntry;
use vworkspace_core::trust::release::{self, MANIFEST_FILE, SIGNATURE_NAMESPACE, SIGNATURES_DIR};

/// `release` arguments.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The checkout (work tree) to release from.
    #[arg(long)]
    pub repo: PathBuf,
    /// The cluster id.
    #[arg(long)]
    pub cluster: String,
    /// The ed25519 SSH private key to sign with (OpenSSH format, unencrypted).
    #[arg(long)]
    pub key: PathBuf,
    /// How long the release stays valid: a duration such as 30d, 12h, 90m.
    #[arg(long, default_value = "30d")]
    pub expires: String,
    /// The serial to write (default: one more than the current release.yaml, or 1).
    #[arg(long)]
    pub serial: Option<u64>,
    /// The signature file name, release.sigs/<name>.sig (default: the key's comment or fingerprint).
    #[arg(long)]
    pub name: Option<String>,
    /// Add a signature to the existing release.yaml without rewriting it.
    #[arg(long)]
    pub sign_only: bool,
}

fn usage(what: impl std::fmt::Display) -> CliError {
    CliError::Usage(what.to_string())
}

fn io(what: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Io(format!("{}: {e}", what.display()))
}

/// Parses a duration such as `30d`, `12h`, `90m` or `3600s`.
pub fn parse_duration(text: &str) -> Result<jiff::SignedDuration, CliError> {
    let bad = || {
        usage(format!(
            "--expires {text:?}: expected a number and a unit (s, m, h, d), e.g. 30d"
        ))
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let total = n
        .checked_mul(seconds)
        .filter(|s| *s > 0 && *s <= 3650 * 86_400)
        .ok_or_else(bad)?;
    Ok(jiff::SignedDuration::from_secs(total))
}

/// Reads an ed25519 OpenSSH private key.
pub fn read_signing_key(path: &Path) -> Result<ssh_key::PrivateKey, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("--key {}: {e}", path.display())))?;
    let key = ssh_key::PrivateKey::from_openssh(&text).map_err(|e| {
        usage(format!(
            "--key {}: not an OpenSSH private key: {e}",
            path.display()
        ))
    })?;
    if key.is_encrypted() {
        return Err(usage(format!(
            "--key {}: the key is passphrase-protected; decrypt a copy with ssh-keygen -p, or sign with ssh-keygen -Y sign",
            path.display()
        )));
    }
    if key.algorithm() != ssh_key::Algorithm::Ed25519 {
        return Err(usage(format!(
            "--key {}: only ed25519 keys sign releases",
            path.display()
        )));
    }
    Ok(key)
}

/// The file name a key's signature is written under: its comment, reduced to safe characters, or its
/// fingerprint.
fn signature_name(key: &ssh_key::PrivateKey, explicit: Option<&str>) -> Result<String, CliError> {
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

/// `release`: writes `clusters/<id>/release.yaml` and signs it, or (`--sign-only`) adds a signature.
pub fn release(args: &ReleaseArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let key = read_signing_key(&args.key)?;
    let name = signature_name(&key, args.name.as_deref())?;
    let dir = args.repo.join("clusters").join(&args.cluster);
    let manifest_path = dir.join(MANIFEST_FILE);
    let sigs_dir = dir.join(SIGNATURES_DIR.trim_end_matches('/'));
    let limits = Limits::default();

    let manifest_bytes = if args.sign_only {
        std::fs::read(&manifest_path).map_err(|e| {
            usage(format!(
                "{}: {e} (run release without --sign-only first)",
                manifest_path.display()
            ))
        })?
    } else {
        // In a git work tree, what git will commit (the index: after core.autocrlf, tracked files
        // only); elsewhere, the directory as it is.
        let mut tree = match vworkspace_core::repository::checkout::read_cluster_index(
            &args.repo,
            &args.cluster,
            &limits,
        )
        .map_err(usage)?
        {
            Some(tree) => tree,
            None => vworkspace_core::repository::checkout::read_cluster_directory(
                &args.repo,
                &args.cluster,
                &limits,
            )
            .map_err(usage)?,
        };
        // The current serial is the last one written, staged or not.
        if let Ok(bytes) = std::fs::read(&manifest_path) {
            tree.insert(MANIFEST_FILE, TreeEntry::File(bytes));
        }
        let current = match tree.entries().get(MANIFEST_FILE) {
            Some(TreeEntry::File(bytes)) => Some(
                release::parse_manifest(bytes, &args.cluster, &limits)
                    .map_err(usage)?
                    .serial,
            ),
            _ => None,
        };
        let serial = match (args.serial, current) {
            (Some(s), Some(c)) if s <= c => {
                return Err(usage(format!(
                    "--serial {s} must be greater than the current serial {c}"
                )));
            }
            (Some(s), _) => s,
            (None, Some(c)) => c.checked_add(1).ok_or_else(|| usage("serial overflow"))?,
            (None, None) => 1,
        };
        let expires = jiff::Timestamp::now()
            .checked_add(parse_duration(&args.expires)?)
            .and_then(|t| t.round(jiff::Unit::Second))
            .map_err(|e| usage(format!("--expires: {e}")))?;
        let parent = vworkspace_core::repository::LocalRepository::open(&args.repo)
            .and_then(|repo| {
                repo.resolve(&vworkspace_core::repository::GitRef::Revision(
                    "HEAD".into(),
                ))
            })
            .ok();
        let manifest = release::build_manifest(&tree, serial, expires, parent).map_err(usage)?;
        let text = release::render_manifest(&manifest);
        std::fs::write(&manifest_path, &text).map_err(|e| io(&manifest_path, e))?;
        // Old signatures are over the old manifest: they can only fail now.
        if sigs_dir.is_dir() {
            for entry in std::fs::read_dir(&sigs_dir).map_err(|e| io(&sigs_dir, e))? {
                let path = entry.map_err(|e| io(&sigs_dir, e))?.path();
                if path.extension().is_some_and(|e| e == "sig") {
                    std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
                }
            }
        }
        writeln!(
            out,
            "wrote {} (serial {serial}, expires {expires}, {} files)",
            manifest_path.display(),
            manifest.files.len()
        )
        .map_err(|e| io(&manifest_path, e))?;
        text.into_bytes()
    };
    let armored = vworkspace_core::trust::sshsig::sign(&manifest_bytes, SIGNATURE_NAMESPACE, &key)
        .map_err(usage)?;
    std::fs::create_dir_all(&sigs_dir).map_err(|e| io(&sigs_dir, e))?;
    let sig_path = sigs_dir.join(format!("{name}.sig"));
    std::fs::write(&sig_path, armored).map_err(|e| io(&sig_path, e))?;
    writeln!(
        out,
        "signed {} as {} ({})",
        manifest_path.display(),
        sig_path.display(),
        key.public_key().fingerprint(ssh_key::HashAlg::Sha256)
    )
    .map_err(|e| io(&sig_path, e))?;
    Ok(0)
}
