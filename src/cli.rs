//! The command line: `kubectl`/`flux`-style subcommands over the library.
//!
//! Exit codes: 0 when the checked ref passes, 1 when it is refused (each finding on its own line),
//! 2 on usage errors (bad flags, unreadable inputs).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::authoring::keygen::KeygenArgs;
use crate::authoring::release::ReleaseArgs;
use crate::authoring::report::{Refusal, report_pass, report_refusal};
pub use crate::authoring::{CliError, ExitCode};

use vworkspace_core::crd::HistoryPolicy;
use vworkspace_core::limits::Limits;
use vworkspace_core::pipeline::{self, TrustConfig};
use vworkspace_core::repository::{GitRef, LocalRepository};
use vworkspace_core::secrets::Identities;
use vworkspace_core::trust::history::HistoryCheck;
use vworkspace_core::trust::release::{AppliedRelease, ReleasePolicy};
use vworkspace_core::trust::signers::AllowedSigners;

/// vworkspace-operator, GitOps mode: verify signed intent from Git and reconcile it into a cluster.
#[derive(Debug, Parser)]
#[command(name = "vworkspace-operator", version, about, long_about = None)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a ref: commit signature, release, schema and decryptability. Exit 0 pass, 1 refused.
    Verify(TrustArgs),
    /// Show the objects a pass would apply, as multi-document YAML (secret values redacted).
    Plan(TrustArgs),
    /// Write clusters/<id>/release.yaml (hashes, next serial) and sign it.
    Release(ReleaseArgs),
    /// Encrypt a value (stdin) to a cluster's age recipient, optionally bound to where it is used.
    Encrypt(EncryptArgs),
    /// Generate an age identity (cluster key) or an ed25519 SSH key pair (signing key).
    Keygen(KeygenArgs),
    /// Print the CustomResourceDefinitions, or write them into a directory.
    Crdgen(CrdgenArgs),
    /// Run the whole pipeline on the embedded example with throwaway keys; no cluster needed.
    Demo(DemoArgs),
    /// Run the operator: reconcile every Cluster resource into this cluster (KUBECONFIG, then
    /// in-cluster). Logs JSON to stderr.
    Run(RunArgs),
}

/// Flags of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The operator's namespace: the Secrets and ConfigMaps a Cluster names, and the leader Lease.
    #[arg(long, default_value = vworkspace_controller::cluster::rbac::OPERATOR_NAMESPACE)]
    pub namespace: String,
    /// Where Git caches live (an emptyDir in the pod).
    #[arg(long, default_value = "/var/cache/vworkspace")]
    pub cache_dir: PathBuf,
    /// Address of /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Address of /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub health_addr: std::net::SocketAddr,
    /// Hold the Lease `vworkspace-app-operator` before reconciling (two replicas, one active).
    #[arg(long)]
    pub leader_election: bool,
    /// Reconcile every Cluster once and exit: 0 if all passed, 1 otherwise.
    #[arg(long)]
    pub once: bool,
    /// Time limit of one fetch, in seconds.
    #[arg(long, default_value_t = 120)]
    pub fetch_timeout: u64,
    /// Largest pack one fetch may receive, in bytes.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub max_fetch_bytes: u64,
    /// Where Velero runs: Backups and Restores of Operations are created there.
    #[arg(long, default_value = "velero")]
    pub velero_namespace: String,
    /// Serve the validating admission webhook with `tls.crt` and `tls.key` from this directory (a
    /// mounted Secret; re-read when it changes).
    #[arg(long)]
    pub webhook_cert_dir: Option<PathBuf>,
    /// Address of the admission webhook (HTTPS).
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub webhook_addr: std::net::SocketAddr,
}

/// Inputs shared by `verify` and `plan`.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The repository: a path to a work tree or bare repository, or a file://, git://, http:// or
    /// https:// URL (fetched into --cache-dir).
    #[arg(long)]
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
    /// Time limit of the whole fetch, in seconds.
    #[arg(long, default_value_t = 120)]
    pub fetch_timeout: u64,
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
    /// This cluster's id (the directory clusters/<id>/).
    #[arg(long)]
    pub cluster: String,
    /// Trusted commit signers, git's allowed_signers format.
    #[arg(long)]
    pub allowed_signers: PathBuf,
    /// Trusted release keys, allowed_signers format with namespaces="vworkspace-release".
    #[arg(long)]
    pub release_signers: PathBuf,
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
    /// Refuse encrypted values that are not bound to where they are found.
    #[arg(long)]
    pub require_bound_values: bool,
    /// The verifier's clock, RFC 3339 (default: now).
    #[arg(long)]
    pub now: Option<String>,
}

/// The `--history` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HistoryArg {
    /// Only the checked commit must be signed.
    Head,
    /// Every commit since the last applied one must be signed.
    All,
}

/// `encrypt` arguments.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// The cluster's age recipient (age1...).
    #[arg(long)]
    pub recipient: String,
    /// Bind to this cluster id (all four binding flags go together).
    #[arg(long, requires_all = ["namespace", "instance", "path"])]
    pub cluster: Option<String>,
    /// Bind to this namespace.
    #[arg(long, requires = "cluster")]
    pub namespace: Option<String>,
    /// Bind to this ApplicationInstance.
    #[arg(long, requires = "cluster")]
    pub instance: Option<String>,
    /// Bind to this value path inside spec.values (e.g. nextcloud.mail.smtp.password).
    #[arg(long, requires = "cluster")]
    pub path: Option<String>,
}

/// `crdgen` arguments.
#[derive(Debug, Args)]
pub struct CrdgenArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// `demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo repository in this directory instead of a temporary one.
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

fn usage(what: impl std::fmt::Display) -> CliError {
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

/// Builds the cluster-side trust inputs from `verify`/`plan` flags.
pub fn trust_config(args: &TrustArgs) -> Result<TrustConfig, CliError> {
    let source = args.allowed_signers.display().to_string();
    let commit_signers = AllowedSigners::parse(
        &read_text(&args.allowed_signers, "--allowed-signers")?,
        &source,
    )
    .map_err(usage)?;
    let source = args.release_signers.display().to_string();
    let release_signers = AllowedSigners::parse(
        &read_text(&args.release_signers, "--release-signers")?,
        &source,
    )
    .map_err(usage)?;
    if let Some(c) = &args.last_commit
        && !(c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(usage(format!(
            "--last-commit {c:?}: give the full 40-hex commit id"
        )));
    }
    if args.threshold == 0 {
        return Err(usage("--threshold must be at least 1"));
    }
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
    Ok(TrustConfig {
        cluster: args.cluster.clone(),
        commit_signers,
        release: ReleasePolicy {
            cluster: args.cluster.clone(),
            signers: release_signers,
            threshold: args.threshold,
            last_applied: args.last_serial.map(|serial| AppliedRelease {
                serial,
                digest: None,
            }),
            max_validity: ReleasePolicy::validity_days(args.max_release_validity_days),
        },
        identities,
        require_bound_values: args.require_bound_values,
        history: HistoryCheck {
            last_commit: args.last_commit.as_ref().map(|c| c.to_ascii_lowercase()),
            policy: match args.history {
                HistoryArg::Head => HistoryPolicy::Head,
                HistoryArg::All => HistoryPolicy::All,
            },
            allow_rewrite: args.allow_history_rewrite,
        },
        now,
        limits: Limits::default(),
    })
}

fn parse_ref(text: &str) -> GitRef {
    if text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        GitRef::Commit(text.to_ascii_lowercase())
    } else {
        GitRef::Revision(text.to_owned())
    }
}

/// Runs a parsed command line, writing its report to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Verify(args) => verify(&args, out),
        Command::Plan(args) => plan(&args, out),
        Command::Release(args) => crate::authoring::release::release(&args, out),
        Command::Encrypt(args) => encrypt(&args, out),
        Command::Keygen(args) => crate::authoring::keygen::keygen(&args, out),
        Command::Crdgen(args) => crdgen(&args, out),
        Command::Demo(args) => crate::authoring::demo::run(args.keep.as_deref(), out),
        Command::Run(args) => run_operator(&args),
    }
}

fn run_operator(args: &RunArgs) -> Result<ExitCode, CliError> {
    let options = vworkspace_controller::runtime::RunOptions {
        namespace: args.namespace.clone(),
        cache_dir: args.cache_dir.clone(),
        metrics_addr: args.metrics_addr,
        health_addr: args.health_addr,
        leader_election: args.leader_election,
        once: args.once,
        fetch: vworkspace_controller::source::FetchOptions {
            timeout: std::time::Duration::from_secs(args.fetch_timeout.max(1)),
            max_pack_bytes: args.max_fetch_bytes,
            ..Default::default()
        },
        velero_namespace: args.velero_namespace.clone(),
        webhook: args
            .webhook_cert_dir
            .clone()
            .map(|dir| (args.webhook_addr, dir)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io_error)?;
    let outcome = runtime.block_on(vworkspace_controller::runtime::run(options));
    // A fetch stuck on the blocking pool must not keep the process past the Pod's grace.
    runtime.shutdown_timeout(vworkspace_controller::runtime::SHUTDOWN_RUNTIME_GRACE);
    match outcome {
        Ok(true) => Ok(0),
        Ok(false) => Ok(1),
        Err(e) => Err(CliError::Operator(e.to_string())),
    }
}

fn io_error(e: std::io::Error) -> CliError {
    CliError::Io(e.to_string())
}

/// A repository ready to verify, the ref to check in it, and the temporary cache to keep alive.
type OpenedSource = (LocalRepository, GitRef, Option<tempfile::TempDir>);

/// Opens the repository `--repo` names: a local path as is, a URL fetched into the cache. A failed
/// fetch is a refused pass (exit 1), not a usage error.
fn open_source(args: &TrustArgs) -> Result<Result<OpenedSource, Refusal>, CliError> {
    let reference = parse_ref(&args.git_ref);
    if !vworkspace_controller::source::is_url(&args.repo) {
        let repo = LocalRepository::open(Path::new(&args.repo)).map_err(usage)?;
        return Ok(Ok((repo, reference, None)));
    }
    let auth = match &args.auth_file {
        Some(path) => vworkspace_controller::source::Auth::parse(
            &read_text(path, "--auth-file")?,
            &path.display().to_string(),
        )
        .map_err(usage)?,
        None => vworkspace_controller::source::Auth::None,
    };
    let options = vworkspace_controller::source::FetchOptions {
        auth,
        ca_bundle: args.ca_file.clone(),
        timeout: std::time::Duration::from_secs(args.fetch_timeout.max(1)),
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
        Err(e) => Ok(Err(Refusal::from(&vworkspace_controller::Error::Source(e)))),
    }
}

/// Runs the pass for `verify` and `plan`.
fn pass(
    args: &TrustArgs,
) -> Result<(TrustConfig, Result<pipeline::VerifiedIntent, Refusal>), CliError> {
    let config = trust_config(args)?;
    let outcome = match open_source(args)? {
        Ok((repo, reference, _temp)) => {
            pipeline::verify_ref(&repo, &reference, &config).map_err(|e| Refusal::from(&e))
        }
        Err(refused) => Err(refused),
    };
    Ok((config, outcome))
}

fn verify(args: &TrustArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    match pass(args)? {
        (config, Ok(verified)) => {
            report_pass(&verified, &config, out).map_err(io_error)?;
            Ok(0)
        }
        (_, Err(refused)) => {
            report_refusal(&refused, out).map_err(io_error)?;
            Ok(1)
        }
    }
}

fn plan(args: &TrustArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    match pass(args)? {
        (_, Ok(verified)) => {
            let plan = vworkspace_core::plan::desired(&verified);
            out.write_all(plan.to_yaml().as_bytes()).map_err(io_error)?;
            Ok(0)
        }
        (_, Err(refused)) => {
            // A refused ref plans nothing: say why on stderr, keep stdout empty for pipes.
            let mut err = std::io::stderr();
            report_refusal(&refused, &mut err).map_err(io_error)?;
            Ok(1)
        }
    }
}

fn encrypt(args: &EncryptArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    // The same bound the operator applies when it decrypts: a value it would refuse is not written.
    let limit = Limits::default().max_secret_plaintext_bytes;
    let mut plaintext = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(limit as u64 + 1)
        .read_to_end(&mut plaintext)
        .map_err(io_error)?;
    if plaintext.len() > limit {
        return Err(usage(format!(
            "the value on stdin is larger than {limit} bytes"
        )));
    }
    let binding = match (&args.cluster, &args.namespace, &args.instance, &args.path) {
        (Some(cluster), Some(namespace), Some(instance), Some(path)) => {
            Some(vworkspace_core::secrets::Binding {
                cluster: cluster.clone(),
                namespace: namespace.clone(),
                instance: instance.clone(),
                path: path.clone(),
            })
        }
        (None, None, None, None) => None,
        _ => {
            return Err(usage(
                "--cluster, --namespace, --instance and --path go together",
            ));
        }
    };
    let armored = vworkspace_core::secrets::encrypt(&plaintext, &args.recipient, binding.as_ref())
        .map_err(usage)?;
    out.write_all(armored.as_bytes()).map_err(io_error)?;
    if !armored.ends_with('\n') {
        out.write_all(b"\n").map_err(io_error)?;
    }
    Ok(0)
}

fn crdgen(args: &CrdgenArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let crds = vworkspace_core::crd::render_all().map_err(|e| CliError::Io(e.to_string()))?;
    match &args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(io_error)?;
            for (name, yaml) in crds {
                std::fs::write(dir.join(&name), yaml).map_err(io_error)?;
                writeln!(out, "wrote {}", dir.join(&name).display()).map_err(io_error)?;
            }
        }
        None => {
            for (_, yaml) in crds {
                writeln!(out, "---").map_err(io_error)?;
                out.write_all(yaml.as_bytes()).map_err(io_error)?;
            }
        }
    }
    Ok(0)
}
