//! Deleting a `Cluster`: a finalizer keeps it until the operator has done what
//! `spec.deletionPolicy` says (`Orphan`, the default: leave what it applied; `Delete`: prune its
//! inventory) and dropped its per-`Cluster` memory (verified intent, declared set entry, caches).
//!
//! The finalizer is written by server-side apply with the operator's field manager, holding only
//! `metadata.finalizers` (a set: other controllers' finalizers are untouched); applying without it
//! removes it.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};

use crate::cluster::{apply, namespaces};
use crate::error::Error;
use vworkspace_core::crd::{Cluster, DeletionPolicy, InventoryEntry};

pub use vworkspace_core::labels::FINALIZER;

/// Whether the `Cluster` carries [`FINALIZER`].
pub fn has_finalizer(cluster: &Cluster) -> bool {
    cluster.finalizers().iter().any(|f| f == FINALIZER)
}

async fn apply_finalizers(client: &Client, name: &str, finalizers: &[&str]) -> Result<(), Error> {
    let api: Api<Cluster> = Api::all(client.clone());
    let mut metadata = serde_json::json!({ "name": name });
    if !finalizers.is_empty() {
        metadata["finalizers"] = serde_json::json!(finalizers);
    }
    let body = serde_json::json!({
        "apiVersion": Cluster::api_version(&()),
        "kind": Cluster::kind(&()),
        "metadata": metadata,
    });
    api.patch(
        name,
        &PatchParams::apply(apply::FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::Kube {
        action: format!(
            "{} the finalizer of Cluster {name}",
            if finalizers.is_empty() {
                "remove"
            } else {
                "add"
            }
        ),
        source,
    })?;
    Ok(())
}

/// Adds [`FINALIZER`] (before the first write a pass makes).
pub async fn add(client: &Client, name: &str) -> Result<(), Error> {
    apply_finalizers(client, name, &[FINALIZER]).await
}

/// Removes [`FINALIZER`]: the API server then deletes the `Cluster` (if nothing else holds it).
pub async fn remove(client: &Client, name: &str) -> Result<(), Error> {
    apply_finalizers(client, name, &[]).await
}

/// What `Delete` removes: the inventory objects that still carry this source's labels, in
/// namespaces still managed (the same rule as a prune of a release that declares nothing).
pub async fn deletable(client: &Client, cluster: &Cluster) -> Result<Vec<InventoryEntry>, Error> {
    let managed = namespaces::list_managed(client).await?;
    let managed: std::collections::BTreeSet<String> = managed.into_iter().map(|m| m.name).collect();
    let live = apply::list_live(client, &cluster.spec.cluster_id, None).await?;
    let inventory = cluster
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let nothing = vworkspace_core::plan::Plan::default();
    Ok(vworkspace_core::plan::diff::diff(
        &nothing,
        &live,
        &inventory,
        &managed,
        &cluster.spec.cluster_id,
    )
    .prune)
}

/// Does what `spec.deletionPolicy` says, then removes the finalizer. Returns how many objects
/// were deleted. An error leaves the finalizer: the next attempt starts again (a delete of an
/// object already gone counts as done).
pub async fn finalize(client: &Client, cluster: &Cluster) -> Result<usize, Error> {
    let name = cluster.name_any();
    let mut deleted = 0;
    if cluster.spec.deletion_policy == DeletionPolicy::Delete {
        let doomed = deletable(client, cluster).await?;
        let deletes: Vec<futures::future::BoxFuture<'_, Result<(), Error>>> = doomed
            .iter()
            .map(|id| -> futures::future::BoxFuture<'_, _> {
                Box::pin(apply::prune_one(client, id))
            })
            .collect();
        let (done, error) = apply::bounded(deletes, apply::WRITE_CONCURRENCY).await;
        if let Some(error) = error {
            return Err(error);
        }
        deleted = done.len();
    }
    remove(client, &name).await?;
    Ok(deleted)
}
