//! The command line: `kubectl`/`flux`-style subcommands over the library.
//!
//! Exit codes: 0 when the checked ref passes, 1 when it is refused (each finding on its own line),
//! 2 on usage errors (bad flags, unreadable inputs).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::authoring::duration;
use crate::authoring::encrypt::EncryptArgs;
use crate::authoring::keygen::KeygenArgs;
use crate::authoring::release::ReleaseArgs;
use crate::authoring::report::{self, Refusal, report_pass, report_refusal};
pub use crate::authoring::{CliError, ExitCode};

use vworkspace_core::crd::HistoryPolicy;
use vworkspace_core::limits::Limits;
use vworkspace_core::pipeline::{self, TrustConfig};
use vworkspace_core::repository::{GitRef, LocalRepository};
use vworkspace_core::secrets::Identities;
use vworkspace_core::trust::history::HistoryCheck;
use vworkspace_core::trust::release::{AppliedRelease, ReleasePolicy};
use vworkspace_core::trust::signers::AllowedSigners;

/// The version line: the crate version, the commit it was built from and the build date.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("VWORKSPACE_COMMIT"),
    ", built ",
    env!("VWORKSPACE_BUILD_DATE"),
    ")"
);

/// vworkspace-operator, GitOps mode: verify signed intent from Git and reconcile it into a cluster.
#[derive(Debug, Parser)]
#[command(name = "vworkspace-operator", version = VERSION, about, long_about = None)]
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
    /// Re-encrypt every value of a cluster directory to a new recipient with the old identity
    /// (rotation, like `sops updatekeys`).
    Reencrypt(crate::authoring::encrypt::ReencryptArgs),
    /// Generate an age identity (cluster key) or an ed25519 SSH key pair (signing key).
    Keygen(KeygenArgs),
    /// Print the CustomResourceDefinitions, or write them into a directory.
    Crdgen(CrdgenArgs),
    /// Run the whole pipeline on the embedded example with throwaway keys; no cluster needed.
    Demo(DemoArgs),
    /// Run the operator: reconcile every Cluster resource into this cluster (KUBECONFIG, then
    /// in-cluster). Logs JSON to stderr.
    Run(RunArgs),
    /// Print a shell completion script: `source <(vworkspace-operator completion bash)`.
    Completion(CompletionArgs),
}

/// `completion` arguments.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// How `verify` and `plan` print their result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Lines for people (`ok`, `refused`, `note`); YAML for `plan`.
    Text,
    /// One JSON document (schema in docs/cli-output.md).
    Json,
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
    /// Time limit of one fetch: a duration such as 120s or 2m (a bare number is seconds).
    #[arg(long, value_parser = duration::seconds_flag, default_value = "120s")]
    pub fetch_timeout: std::time::Duration,
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
    /// The repository: a path inside a work tree (git's upward discovery finds its root) or a bare
    /// repository, or a file://, git://, http:// or https:// URL (fetched into --cache-dir).
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
    /// This cluster's id (the directory clusters/<id>/).
    #[arg(long)]
    pub cluster: String,
    /// Trusted commit signers, git's allowed_signers format. In a pull request's CI take it from the
    /// base branch or the cluster, never from the checkout under review (docs/signatures.md).
    #[arg(long, required_unless_present = "worktree")]
    pub allowed_signers: Option<PathBuf>,
    /// Trusted release keys, allowed_signers format with namespaces="vworkspace-release"; from the
    /// base branch or the cluster, like --allowed-signers.
    #[arg(long, required_unless_present = "worktree")]
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
    /// Refuse encrypted values that are not bound to where they are found. Needs --identity: a
    /// binding is sealed inside the ciphertext, so only the cluster's key can check it.
    #[arg(long)]
    pub require_bound_values: bool,
    /// The verifier's clock, RFC 3339 (default: now).
    #[arg(long)]
    pub now: Option<String>,
    /// Check the working tree as it is, before anything is committed or signed: every check that
    /// needs no key (layout, names, kinds, schema, literal credentials, the form of encrypted
    /// values). For pre-commit hooks; signatures, history and decryption are not checked.
    #[arg(long, conflicts_with_all = ["identity", "last_commit", "last_serial", "require_bound_values", "allow_history_rewrite", "cache_dir", "auth_file", "ca_file"])]
    pub worktree: bool,
    /// Warn (still exit 0) when the release expires within this duration, e.g. 7d.
    #[arg(long, value_parser = duration::duration_flag)]
    pub warn_expiry: Option<jiff::SignedDuration>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// The `--history` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HistoryArg {
    /// Only the checked commit must be signed.
    Head,
    /// Every commit since the last applied one must be signed.
    All,
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
    /// Keep the demo in this directory (it must be empty or absent): the repository, the keys
    /// (mode 0600) and the trust files, with the `verify` command to run again.
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
        Command::Verify(args) if args.worktree => verify_worktree(&args, out),
        Command::Verify(args) => verify(&args, out),
        Command::Plan(args) => plan(&args, out),
        Command::Release(args) => crate::authoring::release::release(&args, out),
        Command::Encrypt(args) => crate::authoring::encrypt::encrypt(&args, out),
        Command::Reencrypt(args) => crate::authoring::encrypt::reencrypt(&args, out),
        Command::Keygen(args) => crate::authoring::keygen::keygen(&args, out),
        Command::Crdgen(args) => crdgen(&args, out),
        Command::Demo(args) => crate::authoring::demo::run(args.keep.as_deref(), out),
        Command::Run(args) => run_operator(&args),
        Command::Completion(args) => {
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "vworkspace-operator",
                &mut WriteAdapter(out),
            );
            Ok(0)
        }
    }
}

/// `clap_complete` wants a sized writer.
struct WriteAdapter<'a>(&'a mut dyn Write);

impl Write for WriteAdapter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
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
            timeout: args.fetch_timeout.max(std::time::Duration::from_secs(1)),
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
    match runtime.block_on(vworkspace_controller::runtime::run(options)) {
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

/// Opens the repository `--repo` names: a local path (found upward, as git does), a URL fetched
/// into the cache. A failed fetch is a refused pass (exit 1), not a usage error.
fn open_source(args: &TrustArgs) -> Result<Result<OpenedSource, Refusal>, CliError> {
    let reference = parse_ref(&args.git_ref);
    if !vworkspace_controller::source::is_url(&args.repo) {
        let root = discover(Path::new(&args.repo));
        let repo = LocalRepository::open(&root).map_err(usage)?;
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

/// Runs the pass for `verify` and `plan`.
fn pass(
    args: &TrustArgs,
) -> Result<(TrustConfig, Result<pipeline::VerifiedIntent, Refusal>), CliError> {
    let config = trust_config(args)?;
    let outcome = match open_source(args)? {
        Ok((repo, reference, _temp)) => pipeline::verify_ref(&repo, &reference, &config)
            .map_err(|e| Refusal::from(&e).with_hints(&args.cluster)),
        Err(refused) => Err(refused),
    };
    Ok((config, outcome))
}

fn verify(args: &TrustArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let (config, outcome) = pass(args)?;
    let json = args.output == OutputFormat::Json;
    match outcome {
        Ok(verified) => {
            let warning = expiry_warning(&verified, &config, args.warn_expiry);
            if json {
                let mut doc = report::pass_json(&verified, &config);
                doc["warnings"] = serde_json::json!(warning.iter().collect::<Vec<_>>());
                write_json(out, &doc)?;
            } else {
                report_pass(&verified, &config, out).map_err(io_error)?;
                if let Some(w) = warning {
                    writeln!(out, "warning {w}").map_err(io_error)?;
                }
            }
            Ok(0)
        }
        Err(refused) => {
            if json {
                write_json(out, &report::refusal_json(&refused, &args.cluster))?;
            } else {
                report_refusal(&refused, out).map_err(io_error)?;
            }
            Ok(1)
        }
    }
}

/// The `--warn-expiry` warning, when the release (or a signing key) runs out within the window.
fn expiry_warning(
    verified: &pipeline::VerifiedIntent,
    config: &TrustConfig,
    window: Option<jiff::SignedDuration>,
) -> Option<String> {
    let window = window?;
    let until = verified.valid_until();
    let left = until.duration_since(config.now);
    (left <= window).then(|| {
        format!(
            "clusters/{}/release.yaml: this verdict runs out at {until} (release expiry or a signing key's valid-before), in {}h; publish a fresh release: `vworkspace-operator release --cluster {} --key <your release key>`",
            config.cluster,
            left.as_secs() / 3600,
            config.cluster
        )
    })
}

fn write_json(out: &mut dyn Write, doc: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| CliError::Io(e.to_string()))?;
    writeln!(out, "{text}").map_err(io_error)
}

/// `verify --worktree`: every key-free check on the files as they are on disk.
fn verify_worktree(args: &TrustArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    if vworkspace_controller::source::is_url(&args.repo) {
        return Err(usage(
            "--worktree checks a local work tree; --repo is a URL",
        ));
    }
    let root = discover(Path::new(&args.repo));
    let limits = Limits::default();
    let tree = crate::authoring::release::read_worktree(&root, &args.cluster, &limits)?;
    let json = args.output == OutputFormat::Json;
    match pipeline::check_unsigned(&tree, &limits) {
        Ok(check) => {
            let stale = crate::authoring::release::stale_release(&tree, &limits);
            if json {
                let mut doc = serde_json::json!({
                    "apiVersion": report::JSON_API_VERSION,
                    "kind": "VerifyResult",
                    "mode": "worktree",
                    "cluster": args.cluster,
                    "result": "passed",
                    "intent": {
                        "applicationInstances": check.intent.application_instances.len(),
                        "operations": check.intent.operations.len(),
                    },
                    "values": {"count": check.values, "decrypted": false},
                    "notes": stale.iter().collect::<Vec<_>>(),
                });
                doc["findings"] = serde_json::json!([]);
                write_json(out, &doc)?;
            } else {
                writeln!(
                    out,
                    "ok      worktree clusters/{}/: {} ApplicationInstance(s), {} Operation(s), {} encrypted value(s) well-formed",
                    args.cluster,
                    check.intent.application_instances.len(),
                    check.intent.operations.len(),
                    check.values
                )
                .map_err(io_error)?;
                writeln!(
                    out,
                    "skipped signatures, history and decryption: --worktree checks what needs no key"
                )
                .map_err(io_error)?;
                if let Some(note) = stale {
                    writeln!(out, "note    {note}").map_err(io_error)?;
                }
            }
            Ok(0)
        }
        Err(e) => {
            let refused = Refusal::from(&e).with_hints(&args.cluster);
            if json {
                write_json(out, &report::refusal_json(&refused, &args.cluster))?;
            } else {
                report_refusal(&refused, out).map_err(io_error)?;
            }
            Ok(1)
        }
    }
}

fn plan(args: &TrustArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    if args.worktree {
        return Err(usage(
            "--worktree is for verify: plan shows only what a verified release would apply",
        ));
    }
    let json = args.output == OutputFormat::Json;
    match pass(args)? {
        (_, Ok(verified)) => {
            let plan = vworkspace_core::plan::desired(&verified);
            if json {
                write_json(out, &plan.to_json())?;
            } else {
                out.write_all(plan.to_yaml().as_bytes()).map_err(io_error)?;
            }
            Ok(0)
        }
        (_, Err(refused)) => {
            // A refused ref plans nothing: say why on stderr, keep stdout empty for pipes (with
            // -o json, the refusal document goes to stdout, as verify prints it).
            if json {
                write_json(out, &report::refusal_json(&refused, &args.cluster))?;
            } else {
                // The findings only: a pipeline reads them; `verify` prints the fixes.
                let mut err = std::io::stderr();
                let findings = Refusal {
                    hints: Vec::new(),
                    ..refused
                };
                report_refusal(&findings, &mut err).map_err(io_error)?;
            }
            Ok(1)
        }
    }
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
