//! The inputs of `verify`, `plan` and `diff`: the flags, the trust configuration they build (from
//! files; never from the repository under review), and the pass on the repository they name.

use std::path::{Path, PathBuf};

use clap::Args;

use super::CliError;
use super::duration;
use super::report::Refusal;

use vworkspace_core::crd::HistoryPolicy;
use vworkspace_core::limits::Limits;
use vworkspace_core::pipeline::{self, TrustConfig};
use vworkspace_core::repository::{GitRef, LocalRepository};
use vworkspace_core::secrets::Identities;
use vworkspace_core::trust::release::AppliedRelease;
use vworkspace_core::trust::signers::AllowedSigners;

/// How `verify` and `plan` print their result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Lines for people (`ok`, `refused`, `note`); YAML for `plan`.
    Text,
    /// One JSON document (schema in docs/cli-output.md).
    Json,
    /// `diff --base` only: a pull-request comment (docs/reviewing.md).
    Markdown,
    /// `diff --base` only: GitHub Actions annotations, one `::error file=...,line=...::` a finding.
    Github,
    /// `diff --base` only: GitLab's code-quality report (JSON).
    Gitlab,
}

/// Inputs shared by `verify` and `plan`.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The repository: a path inside a work tree (git's upward discovery finds its root) or a bare
    /// repository, or a file://, git://, http://, https:// or ssh:// URL (fetched into --cache-dir).
    #[arg(long, default_value = ".")]
    pub repo: String,
    /// Where fetched repositories are cached between runs (default: a temporary directory, so every
    /// run clones afresh).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Credentials for an http(s) URL: a file of key=value lines, `username` and `password`, or
    /// `bearerToken` (the keys of the Cluster's auth Secret).
    #[arg(long)]
    pub auth_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust for an https URL.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// The deploy key for an ssh:// URL: an OpenSSH ed25519 private key file (the Secret's
    /// `identity`).
    #[arg(long, requires = "known_hosts", conflicts_with = "auth_file")]
    pub ssh_key: Option<PathBuf>,
    /// The host keys an ssh:// server may present, in known_hosts format (the Secret's
    /// `known_hosts`); any other key is refused and nothing is fetched.
    #[arg(long, requires = "ssh_key")]
    pub known_hosts: Option<PathBuf>,
    /// A file holding the passphrase of an encrypted --ssh-key (the Secret's `password`).
    #[arg(long, requires = "ssh_key")]
    pub ssh_key_passphrase_file: Option<PathBuf>,
    /// Time limit of the whole fetch: a duration such as 120s or 2m (a bare number is seconds).
    #[arg(long, value_parser = duration::seconds_flag, default_value = "120s")]
    pub fetch_timeout: std::time::Duration,
    /// Largest pack a fetch may receive, in bytes.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub max_fetch_bytes: u64,
    /// The last applied commit: the ref must descend from it.
    #[arg(long)]
    pub last_commit: Option<String>,
    /// `head`: only the checked commit must be signed; `all`: every commit since --last-commit too.
    #[arg(long, value_enum, default_value = "head")]
    pub history: HistoryArg,
    /// Accept a ref that does not descend from --last-commit.
    #[arg(long)]
    pub allow_history_rewrite: bool,
    /// The ref to check: a branch, tag or commit (default: HEAD).
    #[arg(long = "ref", default_value = "HEAD")]
    pub git_ref: String,
    /// This cluster's id (the directory clusters/<id>/); with `diff --base`, omit it to review every
    /// cluster.
    #[arg(
        long,
        required_unless_present = "base",
        default_value = "",
        hide_default_value = true
    )]
    pub cluster: String,
    /// Trusted commit signers, git's allowed_signers format. In a pull request's CI take it from the
    /// base branch or the cluster, never from the checkout under review (docs/signatures.md).
    #[arg(long, required_unless_present_any = ["worktree", "from_cluster", "base"])]
    pub allowed_signers: Option<PathBuf>,
    /// Trusted release keys, allowed_signers format with namespaces="vworkspace-release"; from the
    /// base branch or the cluster, like --allowed-signers.
    #[arg(long, required_unless_present_any = ["worktree", "from_cluster", "base"])]
    pub release_signers: Option<PathBuf>,
    /// How many distinct trusted release keys must sign.
    #[arg(long, default_value_t = 1)]
    pub threshold: usize,
    /// The cluster's age identity file; repeat for rotation. Without it values are checked for form only.
    #[arg(long)]
    pub identity: Vec<PathBuf>,
    /// The last applied serial: the release must exceed it.
    #[arg(long)]
    pub last_serial: Option<u64>,
    /// The longest a release may be valid, in days from the verifier's clock to its expires (as the
    /// Cluster's spec.policy.maxReleaseValidityDays).
    #[arg(long, default_value_t = vworkspace_core::trust::release::DEFAULT_MAX_VALIDITY_DAYS)]
    pub max_release_validity_days: u32,
    /// Refuse encrypted values that are not bound to where they are found. Needs --identity: a
    /// binding is sealed inside the ciphertext, so only the cluster's key can check it.
    #[arg(long)]
    pub require_bound_values: bool,
    /// Refuse any ApplicationInstance whose chart is not pinned by an OCI digest (as the Cluster's
    /// spec.policy.requireChartDigests; an https:// Helm repository is refused).
    #[arg(long)]
    pub require_chart_digests: bool,
    /// The verifier's clock, RFC 3339 (default: now).
    #[arg(long)]
    pub now: Option<String>,
    /// Check the working tree as it is, before anything is committed or signed: every check that
    /// needs no key (layout, names, kinds, schema, literal credentials, the form of encrypted
    /// values). For pre-commit hooks; signatures, history and decryption are not checked.
    #[arg(long, conflicts_with_all = ["identity", "last_commit", "last_serial", "require_bound_values", "allow_history_rewrite", "cache_dir", "auth_file", "ca_file", "ssh_key"])]
    pub worktree: bool,
    /// Warn (still exit 0) when the release expires within this duration, e.g. 7d.
    #[arg(long, value_parser = duration::duration_flag)]
    pub warn_expiry: Option<jiff::SignedDuration>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Read the trust inputs (signers, threshold, identity, value policy, last applied commit and
    /// release) from this Cluster object and the ConfigMaps and Secret it names, with your
    /// kubeconfig, instead of from flags: judge as the operator will.
    #[arg(long, conflicts_with_all = ["allowed_signers", "release_signers", "threshold", "identity", "last_serial", "last_commit", "require_bound_values", "worktree"])]
    pub from_cluster: Option<String>,
    /// `diff` only: review without the cluster, this base ref (`origin/main`) against `--ref`, judged
    /// with the base's trust files (or the flags), never the head's; without `--cluster`, every
    /// cluster. `-o markdown|github|gitlab|json` for CI (docs/reviewing.md).
    #[arg(long, conflicts_with_all = ["from_cluster", "worktree"])]
    pub base: Option<String>,
    /// Where the operator's ConfigMaps and Secrets live (for --from-cluster).
    #[arg(long, default_value = vworkspace_controller::cluster::rbac::OPERATOR_NAMESPACE)]
    pub operator_namespace: String,
}

/// The Cluster object `--from-cluster` names and the trust configuration it makes, read with
/// `client`: the same inputs and the same pure function as the operator's pass.
pub async fn cluster_config(
    client: &kube::Client,
    args: &TrustArgs,
    name: &str,
) -> Result<(vworkspace_core::crd::Cluster, TrustConfig), String> {
    let clusters: kube::Api<vworkspace_core::crd::Cluster> = kube::Api::all(client.clone());
    let cluster = clusters
        .get(name)
        .await
        .map_err(|e| format!("read Cluster {name}: {e}"))?;
    if cluster.spec.cluster_id != args.cluster {
        return Err(format!(
            "--from-cluster {name} is for clusterId {:?}, not --cluster {:?}",
            cluster.spec.cluster_id, args.cluster
        ));
    }
    let inputs = vworkspace_controller::cluster::trust::read_inputs(
        client,
        &args.operator_namespace,
        &cluster.spec,
    )
    .await
    .map_err(|e| format!("read the trust inputs of Cluster {name}: {e}"))?;
    let now = match &args.now {
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .map_err(|e| format!("--now {text:?}: not an RFC 3339 instant: {e}"))?,
        None => jiff::Timestamp::now(),
    };
    let trust = vworkspace_controller::cluster::trust::trust_config(
        &cluster.spec,
        cluster.status.as_ref(),
        &inputs,
        now,
        &Limits::default(),
    )
    .map_err(|e| format!("the trust inputs of Cluster {name}: {e}"))?;
    Ok((cluster, trust.config))
}

/// The trust configuration of `verify` and `plan`: from the flags, or from the Cluster object
/// (`--from-cluster`, read with the caller's kubeconfig).
pub fn config_for(args: &TrustArgs) -> Result<TrustConfig, CliError> {
    let Some(name) = &args.from_cluster else {
        return trust_config(args);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_error)?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            CliError::Io(format!(
                "--from-cluster {name}: cannot reach the cluster with your kubeconfig: {e}"
            ))
        })?;
        cluster_config(&client, args, name)
            .await
            .map(|(_, config)| config)
            .map_err(CliError::Io)
    })
}

/// The `--history` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HistoryArg {
    /// Only the checked commit must be signed.
    Head,
    /// Every commit since the last applied one must be signed.
    All,
}

pub(crate) fn usage(what: impl std::fmt::Display) -> CliError {
    CliError::Usage(what.to_string())
}

fn read_text(path: &Path, what: &str) -> Result<String, CliError> {
    let meta =
        std::fs::metadata(path).map_err(|e| usage(format!("{what} {}: {e}", path.display())))?;
    // Key and signer files are small; refuse anything that is clearly not one.
    if meta.len() > 4 * 1024 * 1024 {
        return Err(usage(format!(
            "{what} {}: larger than 4 MiB",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| usage(format!("{what} {}: {e}", path.display())))
}

/// Reads a trusted-signers file. A public key file (`.pub`, `ssh-ed25519 AAAA... comment`) given
/// where an allowed_signers file belongs is named as such, with the line to write instead.
fn read_signers(path: &Path, flag: &str, namespace: &str) -> Result<AllowedSigners, CliError> {
    let text = read_text(path, flag)?;
    let first = text
        .lines()
        .enumerate()
        .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    if let Some((index, line)) = first {
        let word = line.split_whitespace().next().unwrap_or_default();
        if word.starts_with("ssh-") || word.starts_with("ecdsa-") || word.starts_with("sk-") {
            return Err(usage(format!(
                "{flag} {}:{}: this is a public key (a .pub file), not an allowed_signers file; each line starts with who signs, then the key: `alice@example.org namespaces=\"{namespace}\" {word} AAAA...` (`vworkspace-operator keygen ssh` prints these lines)",
                path.display(),
                index + 1
            )));
        }
    }
    AllowedSigners::parse(&text, &path.display().to_string()).map_err(usage)
}

/// git's upward discovery for a local `--repo`: the closest directory at or above `path` that holds
/// `.git` (a work tree), else `path` itself (a bare repository, or an error from the opener).
pub fn discover(path: &Path) -> PathBuf {
    let start = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut dir = Some(start.as_path());
    while let Some(d) = dir {
        if d.join(".git").exists() {
            return d.to_owned();
        }
        dir = d.parent();
    }
    path.to_owned()
}

/// Builds the cluster-side trust inputs from `verify`/`plan` flags.
pub fn trust_config(args: &TrustArgs) -> Result<TrustConfig, CliError> {
    let (Some(allowed), Some(release)) = (&args.allowed_signers, &args.release_signers) else {
        return Err(usage(
            "--allowed-signers and --release-signers are required (only --worktree runs without them)",
        ));
    };
    if args.require_bound_values && args.identity.is_empty() {
        return Err(usage(
            "--require-bound-values needs --identity: a binding is sealed inside the ciphertext, so only the cluster's key can check it. Without the key (a pull request's CI) drop the flag: the form of every value is still checked, and the operator checks every binding before it applies anything",
        ));
    }
    let commit_signers = read_signers(allowed, "--allowed-signers", "git")?;
    let release_signers = read_signers(release, "--release-signers", "vworkspace-release")?;
    let last_commit = match &args.last_commit {
        Some(c) => Some(
            vworkspace_core::repository::CommitId::parse(c)
                .map_err(|e| usage(format!("--last-commit: {e}")))?,
        ),
        None => None,
    };
    let threshold = std::num::NonZeroUsize::new(args.threshold)
        .ok_or_else(|| usage("--threshold must be at least 1"))?;
    let identities = if args.identity.is_empty() {
        None
    } else {
        let mut texts = Vec::new();
        for path in &args.identity {
            texts.push((path.display().to_string(), read_text(path, "--identity")?));
        }
        Some(Identities::parse_many(&texts).map_err(usage)?)
    };
    let now = match &args.now {
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .map_err(|e| usage(format!("--now {text:?}: not an RFC 3339 instant: {e}")))?,
        None => jiff::Timestamp::now(),
    };
    Ok(
        TrustConfig::builder(&args.cluster, commit_signers, release_signers, threshold)
            .last_applied(args.last_serial.map(|serial| AppliedRelease {
                serial,
                digest: None,
            }))
            .history(
                last_commit.map(String::from),
                match args.history {
                    HistoryArg::Head => HistoryPolicy::Head,
                    HistoryArg::All => HistoryPolicy::All,
                },
                args.allow_history_rewrite,
            )
            .identities(identities)
            .require_bound_values(args.require_bound_values)
            .require_chart_digests(args.require_chart_digests)
            .max_validity_days(args.max_release_validity_days)
            .now(now)
            .build(),
    )
}

/// A 40-hex argument pins a commit; anything else is a revision git resolves (`HEAD`, a branch).
pub fn parse_ref(text: &str) -> GitRef {
    match vworkspace_core::repository::CommitId::parse(text) {
        Ok(id) => GitRef::Commit(id.into()),
        Err(_) => GitRef::Revision(text.to_owned()),
    }
}

pub(crate) fn io_error(e: std::io::Error) -> CliError {
    CliError::Io(e.to_string())
}

/// A repository ready to verify, the ref to check in it, and the temporary cache to keep alive.
pub type OpenedSource = (LocalRepository, GitRef, Option<tempfile::TempDir>);

/// Opens the repository `--repo` names: a local path (found upward, as git does), a URL fetched
/// into the cache. A failed fetch is a refused pass (exit 1), not a usage error.
pub fn open_source(args: &TrustArgs) -> Result<Result<OpenedSource, Refusal>, CliError> {
    let reference = parse_ref(&args.git_ref);
    if !vworkspace_controller::source::is_url(&args.repo) {
        let root = discover(Path::new(&args.repo));
        let repo = LocalRepository::open(&root).map_err(usage)?;
        return Ok(Ok((repo, reference, None)));
    }
    let auth = match (&args.auth_file, &args.ssh_key) {
        (Some(path), _) => vworkspace_controller::source::Auth::parse(
            &read_text(path, "--auth-file")?,
            &path.display().to_string(),
        )
        .map_err(usage)?,
        (None, Some(key)) => ssh_auth(args, key)?,
        (None, None) => vworkspace_controller::source::Auth::None,
    };
    let options = vworkspace_controller::source::FetchOptions {
        auth,
        ca_bundle: args.ca_file.clone(),
        timeout: args.fetch_timeout.max(std::time::Duration::from_secs(1)),
        max_pack_bytes: args.max_fetch_bytes,
        ..Default::default()
    };
    let (cache, temp) = match &args.cache_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::tempdir().map_err(io_error)?;
            (temp.path().to_owned(), Some(temp))
        }
    };
    match vworkspace_controller::source::fetch(&args.repo, &reference, &cache, &options) {
        Ok(fetched) => Ok(Ok((fetched.repo, GitRef::Commit(fetched.commit), temp))),
        Err(vworkspace_controller::source::SourceError::Config { message }) => Err(usage(message)),
        Err(e) => Ok(Err(
            Refusal::from(&vworkspace_controller::Error::Source(e)).one_line()
        )),
    }
}

/// `--ssh-key`, `--known-hosts` and `--ssh-key-passphrase-file` as the Secret's `identity`,
/// `known_hosts` and `password`.
fn ssh_auth(args: &TrustArgs, key: &Path) -> Result<vworkspace_controller::source::Auth, CliError> {
    let identity = zeroize::Zeroizing::new(read_text(key, "--ssh-key")?);
    let known_hosts = match &args.known_hosts {
        Some(path) => read_text(path, "--known-hosts")?,
        None => return Err(usage("--ssh-key needs --known-hosts")),
    };
    let passphrase = match &args.ssh_key_passphrase_file {
        Some(path) => Some(zeroize::Zeroizing::new(read_text(
            path,
            "--ssh-key-passphrase-file",
        )?)),
        None => None,
    };
    let mut fields: Vec<(&str, &[u8])> = vec![
        ("identity", identity.as_bytes()),
        ("known_hosts", known_hosts.as_bytes()),
    ];
    if let Some(passphrase) = &passphrase {
        fields.push(("password", passphrase.trim_end_matches('\n').as_bytes()));
    }
    vworkspace_controller::source::Auth::from_fields("--ssh-key", fields).map_err(usage)
}

/// Runs the pass for `verify` and `plan`.
pub fn pass(
    args: &TrustArgs,
) -> Result<(TrustConfig, Result<pipeline::VerifiedIntent, Refusal>), CliError> {
    let config = config_for(args)?;
    let outcome = match open_source(args)? {
        Ok((repo, reference, _temp)) => pipeline::verify_ref(&repo, &reference, &config)
            .map_err(|e| Refusal::from(&e).with_hints(&args.cluster)),
        Err(refused) => Err(refused),
    };
    Ok((config, outcome))
}
