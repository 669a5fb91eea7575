//! `recipient --cluster NAME`: the age recipient(s) a Cluster publishes in its status, read with the
//! caller's kubeconfig (like `kubeseal --fetch-cert`): what `encrypt --recipient` takes. Stderr says
//! where they come from ([`provenance`]); stdout holds only the recipients.

use std::io::Write;

use clap::Args;
use kube::{Api, Client};

use super::inputs::io_error;
use super::{CliError, ExitCode};
use vworkspace_core::crd::Cluster;

/// `recipient` arguments.
#[derive(Debug, Args)]
pub struct RecipientArgs {
    /// The Cluster object (`kubectl get vwc`).
    #[arg(long)]
    pub cluster: String,
}

/// `recipient`: builds a client from the caller's kubeconfig and runs [`recipient_with_client`].
pub fn recipient(args: &RecipientArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_error)?;
    runtime.block_on(async {
        let client = Client::try_default().await.map_err(|e| {
            CliError::Io(format!(
                "cannot reach the cluster with your kubeconfig: {e}"
            ))
        })?;
        recipient_with_client(args, client, out).await
    })
}

/// Where the printed recipients come from, for stderr: the Cluster's status, which the operator
/// derives on every pass from the identity Secret the spec names (never from the status it read
/// back), and which only the operator may write.
pub fn provenance(cluster: &Cluster) -> String {
    let reference = &cluster.spec.decryption.identity_secret_ref;
    format!(
        "recipients of Cluster {}: read from its status.recipients, which the operator derives on each pass from Secret {} key {} in its own namespace (spec.decryption.identitySecretRef) and which only the operator may write; when in doubt, ask the key's holder for `age-keygen -y` of it",
        kube::ResourceExt::name_any(cluster),
        reference.name,
        reference.key_or_default()
    )
}

/// Prints the recipients `Cluster <name>` publishes, one a line (the first is the current key).
pub async fn recipient_with_client(
    args: &RecipientArgs,
    client: Client,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let clusters: Api<Cluster> = Api::all(client);
    let cluster = clusters
        .get(&args.cluster)
        .await
        .map_err(|e| CliError::Io(format!("read Cluster {}: {e}", args.cluster)))?;
    eprintln!("{}", provenance(&cluster));
    let recipients = cluster.status.map(|s| s.recipients).unwrap_or_default();
    if recipients.is_empty() {
        return Err(CliError::Io(format!(
            "Cluster {} publishes no recipient yet: the operator writes status.recipients once it has read the identity Secret (see `kubectl describe vwc {}`)",
            args.cluster, args.cluster
        )));
    }
    for r in recipients {
        // Only what parses as a recipient is printed: the status is public, but never trust it
        // to hold only what it should.
        if vworkspace_core::secrets::parse_recipient(&r).is_ok() {
            writeln!(out, "{r}").map_err(io_error)?;
        }
    }
    Ok(0)
}
