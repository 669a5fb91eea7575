//! What a finished pass tells the forge ([`crate::commit_status`] sends it): the commit it applied
//! (`success`), refused for good (`failure`) or will retry (`pending`), with the serial and the
//! reason only. Here, not in `commit_status`, so that the sender never depends on the pass.

use kube::ResourceExt;

use super::status::PassReport;
use crate::commit_status::request::{State, StatusUpdate};
use vworkspace_core::crd::Cluster;

/// The status a finished pass reports, if the Cluster asks for statuses and the pass reached a
/// commit. Permanent refusals are `failure`, transient ones `pending` (the pass will retry).
pub fn commit_status_update(cluster: &Cluster, report: &PassReport) -> Option<StatusUpdate> {
    let spec = cluster.spec.commit_status.clone()?;
    let serial = report.release_expires.map(|(serial, _)| serial);
    let (commit, state, description) = match (&report.applied, report.failure()) {
        (Some(applied), None) => (
            applied.commit.clone(),
            State::Success,
            format!("release serial {} applied", applied.serial),
        ),
        (_, Some(reason)) => {
            let commit = report.attempted_commit.clone()?;
            let at = serial
                .map(|s| format!("release serial {s}: "))
                .unwrap_or_default();
            if super::retry::is_permanent(reason) {
                (commit, State::Failure, format!("{at}refused ({reason})"))
            } else {
                (
                    commit,
                    State::Pending,
                    format!("{at}not applied yet ({reason}); retrying"),
                )
            }
        }
        (None, None) => return None,
    };
    Some(StatusUpdate {
        cluster: cluster.name_any(),
        context: format!("vworkspace/{}", cluster.spec.cluster_id),
        spec,
        source_url: cluster.spec.source.url.clone(),
        commit,
        state,
        description,
    })
}
