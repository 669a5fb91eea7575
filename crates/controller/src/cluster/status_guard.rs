//! What a pass refuses to start from: a `Cluster` status it cannot read, and a rollback floor the
//! status lost or lowered ([`vworkspace_core::plan::floor`]). Both fail this Cluster's pass alone,
//! with a condition and the failure metric; the raw status is never logged or echoed (it is whatever
//! its last writer put there).

use vworkspace_core::crd::{ClusterSpec, ClusterStatus};
use vworkspace_core::plan::diff::LiveObject;

use crate::error::Error;

/// The refusal of a pass over a Cluster whose `status.compactInventory` did not decode under its
/// bounds (the status deserializer set [`ClusterStatus::inventory_unreadable`]). Nothing is applied
/// or pruned until the field is removed: without the inventory, nothing could be pruned safely.
pub fn unreadable(name: &str, status: Option<&ClusterStatus>) -> Option<Error> {
    let problem = status?.inventory_unreadable.clone()?;
    Some(Error::StatusUnreadable {
        cluster: name.to_owned(),
        problem,
    })
}

/// The status a pass verifies against: when `status` lost its floor, the live objects of this
/// source are read (from the watched stores when there are some) and their commit restores the
/// ancestry base ([`vworkspace_core::plan::floor::restore`]). `None`: use `status` as it is.
pub async fn restored_floor(
    client: &kube::Client,
    spec: &ClusterSpec,
    status: Option<&ClusterStatus>,
    stores: Option<&super::apply::LiveStores>,
) -> Result<Option<ClusterStatus>, Error> {
    if !vworkspace_core::plan::floor::status_lacks_floor(status) {
        return Ok(None);
    }
    let live = super::apply::list_live(client, &spec.cluster_id, stores).await?;
    Ok(vworkspace_core::plan::floor::restore(
        status,
        &live,
        &spec.cluster_id,
    ))
}

/// The refusal of a verified release that is below the serial this source's live objects carry,
/// whatever the status says ([`vworkspace_core::plan::floor::check`]).
pub fn floor(spec: &ClusterSpec, serial: u64, live: &[LiveObject]) -> Option<Error> {
    vworkspace_core::plan::floor::check(&spec.cluster_id, serial, live)
        .err()
        .map(Error::from)
}
