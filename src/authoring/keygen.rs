//! `keygen`: an age identity (a cluster's key) or an ed25519 SSH key pair (a signing key).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{CliError, ExitCode};

/// `keygen` arguments.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// What to generate.
    #[arg(value_enum, default_value = "age")]
    pub kind: KeyKind,
    /// Write the private key here (mode 0600) instead of stdout; the public part goes to <out>.pub
    /// for SSH keys.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// The comment of an SSH key (e.g. your e-mail): it becomes the principal shown in signatures.
    #[arg(long, default_value = "vworkspace")]
    pub comment: String,
}

/// Kinds of key `keygen` makes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyKind {
    /// An age X25519 identity (a cluster's decryption key) and its recipient.
    Age,
    /// An ed25519 SSH key pair (commit or release signing).
    Ssh,
}

fn io(what: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Io(format!("{}: {e}", what.display()))
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))?;
    file.write_all(contents).map_err(|e| io(path, e))
}

/// `keygen`: an age identity or an ed25519 SSH key pair.
pub fn keygen(args: &KeygenArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let stdout = |e: std::io::Error| CliError::Io(e.to_string());
    match args.kind {
        KeyKind::Age => {
            let (identity, recipient) = vworkspace_core::secrets::generate();
            let text = zeroize::Zeroizing::new(format!(
                "# created: {}\n# public key: {recipient}\n{}\n",
                jiff::Timestamp::now(),
                identity.expose_str().unwrap_or_default()
            ));
            match &args.out {
                Some(path) => {
                    write_private(path, text.as_bytes())?;
                    writeln!(out, "{recipient}").map_err(stdout)?;
                }
                None => out.write_all(text.as_bytes()).map_err(stdout)?,
            }
        }
        KeyKind::Ssh => {
            let mut key =
                ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
                    .map_err(|e| CliError::Io(e.to_string()))?;
            key.set_comment(&args.comment);
            let private = key
                .to_openssh(ssh_key::LineEnding::LF)
                .map_err(|e| CliError::Io(e.to_string()))?;
            let public = key
                .public_key()
                .to_openssh()
                .map_err(|e| CliError::Io(e.to_string()))?;
            match &args.out {
                Some(path) => {
                    write_private(path, private.as_bytes())?;
                    let pub_path = path.with_extension("pub");
                    std::fs::write(&pub_path, format!("{public}\n"))
                        .map_err(|e| io(&pub_path, e))?;
                    writeln!(out, "wrote {} and {}", path.display(), pub_path.display())
                        .map_err(stdout)?;
                }
                None => out.write_all(private.as_bytes()).map_err(stdout)?,
            }
            writeln!(out, "# allowed_signers lines for this key:").map_err(stdout)?;
            writeln!(out, "{} namespaces=\"git\" {public}", args.comment).map_err(stdout)?;
            writeln!(
                out,
                "{} namespaces=\"vworkspace-release\" {public}",
                args.comment
            )
            .map_err(stdout)?;
        }
    }
    Ok(0)
}
