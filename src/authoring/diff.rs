//! `diff`: what a pass would change in a live cluster, read with the caller's kubeconfig, like
//! `kubectl diff` and `flux diff`: create / update (field by field) / prune / unchanged / not applied.
//! Secret values are never shown: an encrypted value that changed is reported as `<redacted> (changed)`.
//!
//! Exit codes as `kubectl diff`: 0 no changes, 1 changes, 2 usage, 3 the ref was refused or the
//! cluster could not be read.

use std::collections::BTreeSet;
use std::io::Write;

use clap::Args;
use kube::{Api, Client};
use serde_json::Value;

use super::inputs::{OutputFormat, TrustArgs, io_error};
use super::report::{self, Refusal};
use super::{CliError, ExitCode};
use vworkspace_core::crd::{Cluster, InventoryEntry};
use vworkspace_core::plan::DesiredObject;
use vworkspace_core::plan::diff::{Keep, LiveObject, Skip};
use vworkspace_core::secrets::REDACTED;

/// Exit code of `diff` when the ref is refused or the cluster cannot be read.
pub const EXIT_ERROR: ExitCode = 3;

/// `diff` arguments.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The repository and trust inputs, as for `verify` (`--from-cluster NAME` reads them from
    /// the Cluster object).
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// One changed field of an object to update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// The field, e.g. `spec.chart.version`.
    pub path: String,
    /// The live value (JSON, secrets redacted), `None` when the field is added.
    pub from: Option<String>,
    /// The declared value, `None` when the field is removed.
    pub to: Option<String>,
}

/// `diff`: builds a client from the caller's kubeconfig and runs [`diff_with_client`].
pub fn diff(args: &DiffArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_error)?;
    runtime.block_on(async {
        let client = match Client::try_default().await {
            Ok(client) => client,
            Err(e) => {
                writeln!(
                    out,
                    "error   cannot reach the cluster with your kubeconfig: {e}"
                )
                .map_err(io_error)?;
                return Ok(EXIT_ERROR);
            }
        };
        diff_with_client(args, client, out).await
    })
}

fn api_failed(
    out: &mut dyn Write,
    what: &str,
    e: impl std::fmt::Display,
) -> Result<ExitCode, CliError> {
    writeln!(out, "error   {what}: {e}").map_err(io_error)?;
    Ok(EXIT_ERROR)
}

/// `diff` against the cluster `client` talks to.
pub async fn diff_with_client(
    args: &DiffArgs,
    client: Client,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let (object, config) = match &args.trust.from_cluster {
        Some(name) => match super::inputs::cluster_config(&client, &args.trust, name).await {
            Ok((object, config)) => (Some(object), config),
            Err(e) => return api_failed(out, "--from-cluster", e),
        },
        None => (
            readable_cluster(&client, &args.trust.cluster).await,
            super::inputs::trust_config(&args.trust)?,
        ),
    };
    let Some(verified) = verify_or_report(args, &config, out)? else {
        return Ok(EXIT_ERROR);
    };
    let plan = vworkspace_core::plan::desired(&verified)
        .map_err(|e| CliError::Operator(format!("diff: {e}")))?;
    let live =
        match vworkspace_controller::cluster::apply::list_live(&client, &args.trust.cluster, None)
            .await
        {
            Ok(live) => live,
            Err(e) => return api_failed(out, "list the live objects", e),
        };
    let managed = match vworkspace_controller::cluster::namespaces::list_managed(&client).await {
        Ok(m) => m,
        Err(e) => return api_failed(out, "list the managed namespaces", e),
    };
    let managed: BTreeSet<String> = managed.into_iter().map(|m| m.name).collect();
    let inventory: Vec<InventoryEntry> = object
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let changes =
        vworkspace_core::plan::diff::diff(&plan, &live, &inventory, &managed, &args.trust.cluster);
    let updates = updates(&changes, &live);
    let changed =
        !changes.create.is_empty() || !changes.update.is_empty() || !changes.prune.is_empty();
    let shown = Shown {
        cluster: &args.trust.cluster,
        verified: &verified,
        changes: &changes,
        updates: &updates,
        changed,
    };
    if args.trust.output == OutputFormat::Json {
        shown.json(out)?;
    } else {
        shown.text(out)?;
    }
    Ok(if changed { 1 } else { 0 })
}

/// The Cluster whose clusterId is `cluster`, if the caller may read it: its inventory says what
/// this source created, so what a pass would prune.
async fn readable_cluster(client: &Client, cluster: &str) -> Option<Cluster> {
    let clusters: Api<Cluster> = Api::all(client.clone());
    clusters
        .list(&Default::default())
        .await
        .ok()
        .and_then(|list| {
            list.items
                .into_iter()
                .find(|c| c.spec.cluster_id == cluster)
        })
}

/// The verified intent of the source `args` names, or `None` once the refusal is reported.
fn verify_or_report(
    args: &DiffArgs,
    config: &vworkspace_core::pipeline::TrustConfig,
    out: &mut dyn Write,
) -> Result<Option<vworkspace_core::pipeline::VerifiedIntent>, CliError> {
    let verified = match super::inputs::open_source(&args.trust)? {
        Ok((repo, reference, _temp)) => {
            vworkspace_core::pipeline::verify_ref(&repo, &reference, config)
                .map_err(|e| Refusal::from(&e).with_hints(&args.trust.cluster))
        }
        Err(refused) => Err(refused),
    };
    match verified {
        Ok(v) => Ok(Some(v)),
        Err(refused) => {
            if args.trust.output == OutputFormat::Json {
                let text = serde_json::to_string_pretty(&report::refusal_json(
                    &refused,
                    &args.trust.cluster,
                ))
                .map_err(|e| CliError::Io(e.to_string()))?;
                writeln!(out, "{text}").map_err(io_error)?;
            } else {
                report::report_refusal(&refused, out).map_err(io_error)?;
            }
            Ok(None)
        }
    }
}

/// Each object to update with the fields that change.
fn updates<'p>(
    changes: &vworkspace_core::plan::diff::Changes<'p>,
    live: &[LiveObject],
) -> Vec<(&'p DesiredObject, Vec<FieldChange>)> {
    changes
        .update
        .iter()
        .map(|desired| {
            let id = vworkspace_core::plan::diff::identity(desired);
            let fields = live
                .iter()
                .find(|l| l.id == id)
                .map(|l| field_changes(desired, l))
                .unwrap_or_default();
            (*desired, fields)
        })
        .collect()
}

fn name(id: &InventoryEntry) -> String {
    format!("{} {}/{}", id.kind, id.namespace, id.name)
}

fn desired_name(desired: &DesiredObject) -> String {
    name(&vworkspace_core::plan::diff::identity(desired))
}

fn skip_why(skip: &Skip) -> String {
    match skip {
        Skip::UnmanagedNamespace => {
            "its namespace lacks the label app.vworkspace.io/managed-by=vworkspace: not applied"
                .to_owned()
        }
        _ => "not applied".to_owned(),
    }
}

fn keep_why(keep: &Keep) -> &'static str {
    match keep {
        Keep::NotLabelled => "not declared, not created by this source: left alone",
        Keep::NotInInventory => "not declared, not in this source's inventory: left alone",
        Keep::UnmanagedNamespace => "its namespace is no longer managed: left alone",
        _ => "left alone",
    }
}

/// A field change as one line of the text output, `None` when nothing is shown.
fn field_line(f: &FieldChange) -> Option<String> {
    Some(match (&f.from, &f.to) {
        (Some(a), Some(b)) if a == b => format!("          ~ {}: {a} (changed)", f.path),
        (Some(a), Some(b)) => format!("          ~ {}: {a} -> {b}", f.path),
        (None, Some(b)) => format!("          + {}: {b}", f.path),
        (Some(a), None) => format!("          - {}: {a}", f.path),
        (None, None) => return None,
    })
}

/// What `diff` shows.
struct Shown<'a, 'p> {
    cluster: &'a str,
    verified: &'a vworkspace_core::pipeline::VerifiedIntent,
    changes: &'a vworkspace_core::plan::diff::Changes<'p>,
    updates: &'a [(&'p DesiredObject, Vec<FieldChange>)],
    changed: bool,
}

impl Shown<'_, '_> {
    fn json(&self, out: &mut dyn Write) -> Result<(), CliError> {
        let changes = self.changes;
        let doc = serde_json::json!({
            "apiVersion": report::JSON_API_VERSION,
            "kind": "DiffResult",
            "cluster": self.cluster,
            "commit": self.verified.commit().id(),
            "serial": self.verified.release().serial(),
            "changed": self.changed,
            "create": changes.create.iter().map(|d| desired_name(d)).collect::<Vec<_>>(),
            "update": self.updates.iter().map(|(d, fields)| serde_json::json!({
                "object": desired_name(d),
                "fields": fields.iter().map(|f| serde_json::json!({"path": f.path, "from": f.from, "to": f.to})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "prune": changes.prune.iter().map(name).collect::<Vec<_>>(),
            "unchanged": changes.unchanged.len(),
            "notApplied": changes.skipped.iter().map(|(id, why)| serde_json::json!({"object": name(id), "why": skip_why(why)})).collect::<Vec<_>>(),
            "kept": changes.kept.iter().map(|(id, why)| serde_json::json!({"object": name(id), "why": keep_why(why)})).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| CliError::Io(e.to_string()))?;
        writeln!(out, "{text}").map_err(io_error)
    }

    fn text(&self, out: &mut dyn Write) -> Result<(), CliError> {
        let changes = self.changes;
        let mut lines = Vec::new();
        for d in &changes.create {
            lines.push(format!("create    {}", desired_name(d)));
        }
        for (d, fields) in self.updates {
            lines.push(format!("update    {}", desired_name(d)));
            lines.extend(fields.iter().filter_map(field_line));
        }
        for id in &changes.prune {
            lines.push(format!("prune     {}", name(id)));
        }
        for (id, why) in &changes.skipped {
            lines.push(format!("skipped   {}: {}", name(id), skip_why(why)));
        }
        for (id, why) in &changes.kept {
            lines.push(format!("kept      {}: {}", name(id), keep_why(why)));
        }
        lines.push(format!(
            "unchanged {} object(s); commit {}, release serial {}",
            changes.unchanged.len(),
            self.verified.commit().id(),
            self.verified.release().serial()
        ));
        for line in lines {
            writeln!(out, "{line}").map_err(io_error)?;
        }
        Ok(())
    }
}

/// A JSON value as one line, every encrypted value replaced by `<redacted>`.
fn render(value: &Value) -> String {
    let redacted = vworkspace_core::secrets::redact_values(value);
    match &redacted {
        Value::String(s) if s == REDACTED => REDACTED.to_owned(),
        other => other.to_string(),
    }
}

/// The fields in which `live` differs from what `desired` declares: the spec, and the labels the
/// plan sets. An encrypted value that changed shows as `<redacted>` on both sides.
pub fn field_changes(desired: &DesiredObject, live: &LiveObject) -> Vec<FieldChange> {
    let (spec, labels) = (desired.spec_json(), &desired.labels);
    let mut out = Vec::new();
    walk(
        "spec",
        live.spec.json().as_deref(),
        spec.as_ref().ok(),
        &mut out,
    );
    for (k, v) in labels.clone() {
        if live.labels.get(&k) != Some(&v) {
            out.push(FieldChange {
                path: format!("metadata.labels.{k}"),
                from: live.labels.get(&k).map(|l| format!("{l:?}")),
                to: Some(format!("{v:?}")),
            });
        }
    }
    out
}

fn walk(path: &str, live: Option<&Value>, desired: Option<&Value>, out: &mut Vec<FieldChange>) {
    let live = live.filter(|v| !v.is_null());
    let desired = desired.filter(|v| !v.is_null());
    match (live, desired) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                walk(&format!("{path}.{k}"), a.get(k), b.get(k), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(FieldChange {
            path: path.to_owned(),
            from: a.map(render),
            to: b.map(render),
        }),
    }
}
