//! `reconcile --cluster NAME [--wait]`: ask the operator for a pass now, like `flux reconcile`. It
//! sets the annotation `reconcile.fluxcd.io/requestedAt` on the Cluster (a merge patch of that one
//! key, with the caller's kubeconfig); the running operator's watch sees the change and starts a
//! pass, which records the value in `status.lastHandledReconcileAt` when it ends. With `--wait` the
//! command polls the Cluster until then and reports the pass's outcome from the `Ready` condition.
//!
//! Exit codes: 0 the pass succeeded (or, without `--wait`, the request was recorded); 1 the pass
//! failed, the Cluster is suspended, or the wait timed out; 2 usage or the API server unreachable.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::authoring::duration;
use crate::authoring::inputs::io_error;
use crate::authoring::{CliError, ExitCode};
use vworkspace_core::crd::{Cluster, RECONCILE_REQUESTED_AT};

/// `reconcile` arguments.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The Cluster object (`kubectl get vwc`).
    #[arg(long)]
    pub cluster: String,
    /// Wait for the pass the request starts, and exit 0 only when it succeeded.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits: a duration such as 90s or 5m (a bare number is seconds).
    #[arg(long, value_parser = duration::seconds_flag, default_value = "5m")]
    pub timeout: Duration,
}

/// How often `--wait` reads the Cluster.
pub const POLL: Duration = Duration::from_secs(1);

/// `reconcile`: builds a client from the caller's kubeconfig and runs [`reconcile_with_client`].
pub fn reconcile(args: &ReconcileArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_error)?;
    // Two rustls providers are compiled in (kube's ring, reqwest's own): choose one, as `run` does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime.block_on(async {
        let client = Client::try_default().await.map_err(|e| {
            CliError::Io(format!(
                "cannot reach the cluster with your kubeconfig: {e}"
            ))
        })?;
        reconcile_with_client(args, client, out, jiff::Timestamp::now()).await
    })
}

/// Requests a pass of `Cluster <name>` at `now` and, with `--wait`, reports its outcome.
pub async fn reconcile_with_client(
    args: &ReconcileArgs,
    client: Client,
    out: &mut dyn Write,
    now: jiff::Timestamp,
) -> Result<ExitCode, CliError> {
    let clusters: Api<Cluster> = Api::all(client);
    let name = &args.cluster;
    let read = |e: kube::Error| CliError::Io(format!("read Cluster {name}: {e}"));
    let cluster = clusters.get(name).await.map_err(read)?;
    if cluster.spec.suspend == Some(true) {
        writeln!(
            out,
            "✗ Cluster {name} is suspended (spec.suspend); resume it first"
        )
        .map_err(io_error)?;
        return Ok(1);
    }
    let requested = now.to_string();
    writeln!(out, "► annotating Cluster {name}").map_err(io_error)?;
    let patch = serde_json::json!({
        "metadata": {"annotations": {RECONCILE_REQUESTED_AT: requested}}
    });
    clusters
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| CliError::Io(format!("annotate Cluster {name}: {e}")))?;
    writeln!(out, "✔ Cluster {name} annotated").map_err(io_error)?;
    if !args.wait {
        return Ok(0);
    }
    writeln!(out, "◎ waiting for Cluster {name} reconciliation").map_err(io_error)?;
    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        let cluster = clusters.get(name).await.map_err(read)?;
        let status = cluster.status.clone().unwrap_or_default();
        if status.last_handled_reconcile_at.as_deref() == Some(requested.as_str()) {
            return report(&cluster, out);
        }
        if tokio::time::Instant::now() + POLL > deadline {
            writeln!(
                out,
                "✗ Cluster {name}: no pass handled the request within {}s (is the operator running? `kubectl -n vworkspace-system logs deploy/vworkspace-app-operator`)",
                args.timeout.as_secs()
            )
            .map_err(io_error)?;
            return Ok(1);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The outcome of the pass that handled the request, from the `Ready` condition.
fn report(cluster: &Cluster, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let status = cluster.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    match ready {
        Some(c) if c.status == "True" => {
            writeln!(
                out,
                "✔ Cluster {name} reconciled: commit {} (release serial {})",
                status.last_applied_commit.as_deref().unwrap_or("none"),
                status
                    .last_applied_serial
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into())
            )
            .map_err(io_error)?;
            Ok(0)
        }
        Some(c) => {
            writeln!(out, "✗ Cluster {name}: {}: {}", c.reason, c.message).map_err(io_error)?;
            Ok(1)
        }
        None => {
            writeln!(
                out,
                "✗ Cluster {name}: the pass recorded no Ready condition"
            )
            .map_err(io_error)?;
            Ok(1)
        }
    }
}
