//! The command line: `kubectl`/`flux`-style subcommands over the library.
//!
//! Exit codes: 0 when the checked ref passes, 1 when it is refused (each finding on its own line),
//! 2 on usage errors (bad flags, unreadable inputs).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::authoring::duration;
use crate::authoring::encrypt::EncryptArgs;
pub use crate::authoring::inputs::{
    HistoryArg, OutputFormat, TrustArgs, discover, open_source, parse_ref, pass, trust_config,
};
use crate::authoring::inputs::{io_error, usage};
use crate::authoring::keygen::KeygenArgs;
use crate::authoring::release::ReleaseArgs;
use crate::authoring::report::{self, Refusal, report_pass, report_refusal};
pub use crate::authoring::{CliError, ExitCode};

use vworkspace_core::limits::Limits;
use vworkspace_core::pipeline::{self, TrustConfig};

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
    /// What a pass would change in the live cluster (your kubeconfig): create, update field by
    /// field, prune. Exit 0 no changes, 1 changes, 2 usage, 3 refused or unreachable (kubectl diff).
    Diff(crate::authoring::diff::DiffArgs),
    /// Write clusters/<id>/release.yaml (hashes, next serial) and sign it.
    Release(ReleaseArgs),
    /// Encrypt a value (stdin) to a cluster's age recipient, optionally bound to where it is used.
    Encrypt(EncryptArgs),
    /// Print the age recipient(s) a Cluster publishes in its status (your kubeconfig): what
    /// `encrypt --recipient` takes.
    Recipient(crate::authoring::recipient::RecipientArgs),
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
    /// Preflight and health (like `flux check --pre`): Kubernetes version, CRDs, the operator's
    /// rights, the webhook, each Cluster's trust inputs and Git source. One line a check; exit 1
    /// when something needed is missing.
    Check(crate::check::CheckArgs),
    /// Ask the operator for a pass of a Cluster now (annotation `reconcile.fluxcd.io/requestedAt`,
    /// like `flux reconcile`); with --wait, wait for it and exit 0 only when it succeeded.
    Reconcile(crate::reconcile::ReconcileArgs),
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
    /// Reconcile only the Clusters whose labels match this selector (and their children), e.g.
    /// `sharding.vworkspace.io/key=shard1`: several operators, each with its own selector, share
    /// one cluster (Flux's sharding flag). Every Cluster by default.
    #[arg(long, value_name = "SELECTOR")]
    pub watch_label_selector: Option<String>,
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
    #[arg(long, conflicts_with = "webhook_cert_secret")]
    pub webhook_cert_dir: Option<PathBuf>,
    /// Serve the validating admission webhook with a certificate the operator makes itself: its own
    /// CA and serving certificate in this Secret of `--namespace` (created when missing, renewed
    /// before expiry), and the CA set as caBundle of `--webhook-configuration`.
    #[arg(long)]
    pub webhook_cert_secret: Option<String>,
    /// The ValidatingWebhookConfiguration whose caBundle `--webhook-cert-secret` sets.
    #[arg(long, default_value = "vworkspace-app-operator")]
    pub webhook_configuration: String,
    /// The webhook's Service: the serving certificate is valid for `<service>.<namespace>.svc`.
    #[arg(long, default_value = "vworkspace-app-operator-webhook")]
    pub webhook_service: String,
    /// A further name (DNS name or IP address) the serving certificate is valid for; repeatable.
    #[arg(long)]
    pub webhook_dns_name: Vec<String>,
    /// Address of the admission webhook (HTTPS).
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub webhook_addr: std::net::SocketAddr,
    /// Serve the push receiver (forge webhooks that start a pass now) on this address; off unless
    /// given. Needs --receiver-token-file.
    #[arg(long, requires = "receiver_token_file")]
    pub receiver_addr: Option<std::net::SocketAddr>,
    /// The receiver's shared secret (a mounted Secret's key): the forges' webhook secret, and what
    /// the path `/hook/<sha256>` is derived from (at least 20 bytes).
    #[arg(long, requires = "receiver_addr")]
    pub receiver_token_file: Option<PathBuf>,
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

/// Runs a parsed command line, writing its report to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    match &cli.command {
        Command::Verify(a) | Command::Plan(a) => crate::authoring::review::check_flags(a, false)?,
        Command::Diff(a) => crate::authoring::review::check_flags(&a.trust, true)?,
        _ => {}
    }
    match cli.command {
        Command::Diff(args) if args.trust.base.is_some() => {
            crate::authoring::review::diff_base(&args.trust, out)
        }
        Command::Verify(args) if args.worktree => verify_worktree(&args, out),
        Command::Verify(args) => verify(&args, out),
        Command::Plan(args) => plan(&args, out),
        Command::Diff(args) if args.trust.worktree => Err(usage(
            "--worktree is for verify: diff shows what a verified release would change",
        )),
        Command::Diff(args) => crate::authoring::diff::diff(&args, out),
        Command::Release(args) => crate::authoring::release::release(&args, out),
        Command::Encrypt(args) => crate::authoring::encrypt::encrypt(&args, out),
        Command::Recipient(args) => crate::authoring::recipient::recipient(&args, out),
        Command::Reencrypt(args) => crate::authoring::encrypt::reencrypt(&args, out),
        Command::Keygen(args) => crate::authoring::keygen::keygen(&args, out),
        Command::Crdgen(args) => crdgen(&args, out),
        Command::Demo(args) => crate::authoring::demo::run(args.keep.as_deref(), out),
        Command::Run(args) => run_operator(&args),
        Command::Check(args) => crate::check::check(&args, out),
        Command::Reconcile(args) => crate::reconcile::reconcile(&args, out),
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

/// The receiver's address and token, read from `--receiver-token-file` (one trailing newline,
/// as `kubectl create secret --from-file` keeps it, is not part of the token).
fn receiver_option(
    args: &RunArgs,
) -> Result<Option<(std::net::SocketAddr, vworkspace_core::secrets::SecretValue)>, CliError> {
    let (Some(addr), Some(path)) = (args.receiver_addr, &args.receiver_token_file) else {
        return Ok(None);
    };
    let mut token =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| {
            CliError::Usage(format!("--receiver-token-file {}: {e}", path.display()))
        })?);
    while token.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        token.pop();
    }
    if token.len() < vworkspace_controller::receiver::MIN_TOKEN_LEN {
        return Err(CliError::Usage(format!(
            "--receiver-token-file {}: the token must be at least {} bytes",
            path.display(),
            vworkspace_controller::receiver::MIN_TOKEN_LEN
        )));
    }
    Ok(Some((
        addr,
        vworkspace_core::secrets::SecretValue::new(token.to_vec()),
    )))
}

fn run_operator(args: &RunArgs) -> Result<ExitCode, CliError> {
    let receiver = receiver_option(args)?;
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
        webhook_self_managed: args.webhook_cert_secret.clone().map(|secret| {
            let service = format!("{}.{}.svc", args.webhook_service, args.namespace);
            let mut dns_names = vec![service.clone(), format!("{service}.cluster.local")];
            dns_names.extend(args.webhook_dns_name.iter().cloned());
            (
                args.webhook_addr,
                vworkspace_controller::runtime::certs::CertOptions {
                    namespace: args.namespace.clone(),
                    secret,
                    webhook_configuration: args.webhook_configuration.clone(),
                    dns_names,
                },
            )
        }),
        receiver,
        cluster_selector: args.watch_label_selector.clone(),
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
            let plan = vworkspace_core::plan::desired(&verified)
                .map_err(|e| CliError::Operator(format!("plan: {e}")))?;
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
