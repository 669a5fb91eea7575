//! The rollback floor a pass holds to when the `Cluster` status lost or lowered its own.
//!
//! The floor (`status.lastAppliedSerial` / `lastAppliedCommit`) lives in a status that a restore tool,
//! an admin or a compromised controller can rewrite. A *missing* floor must not be a *lowered* one,
//! so whether this source has applied before is not read from the status: it is read from the live
//! objects that carry this source's labels and the serial and commit annotations the operator stamps
//! on every object it applies ([`ANNOTATION_SERIAL`], [`ANNOTATION_COMMIT`]). Only the operator writes
//! ApplicationInstances and Operations in managed namespaces (the admission policy of `deploy/`), so
//! those annotations are the operator's own record, kept apart from the status.
//!
//! - [`check`]: a release whose serial is below the highest serial the live objects carry is refused,
//!   whatever the status (or `spec.release.minSerial`) says; the same serial is accepted (the release
//!   those objects came from, applied again after a pass cut before its status was written).
//! - [`restore`]: a status without `lastAppliedCommit` gets the commit of the object with the highest
//!   serial as the base of the ancestry check, so that history is still checked. Objects keep the
//!   commit that last changed them, so that commit is the last applied one or an ancestor of it: the
//!   check is as strict as the record allows, never skipped.

use crate::crd::ClusterStatus;
use crate::plan::diff::LiveObject;
use crate::plan::{
    ANNOTATION_COMMIT, ANNOTATION_SERIAL, LABEL_CLUSTER, LABEL_MANAGED_BY, MANAGED_BY,
};

/// Why a release is refused by the floor of the live objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FloorError {
    /// The release serial is below what the live objects carry.
    #[error(
        "release serial {serial} of cluster {cluster} is below serial {floor} that {objects} live object(s) of this source carry ({ANNOTATION_SERIAL}): a rollback, refused whatever the Cluster status holds"
    )]
    BelowLiveObjects {
        /// The cluster id.
        cluster: String,
        /// The release's serial.
        serial: u64,
        /// The highest serial a live object carries.
        floor: u64,
        /// How many live objects are this source's.
        objects: usize,
    },
}

impl FloorError {
    /// The bounded reason of the refusal (a condition reason, a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            FloorError::BelowLiveObjects { .. } => crate::reasons::RELEASE_INVALID,
        }
    }
}

/// What the live objects of a source record about the last release applied to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFloor {
    /// The highest serial they carry.
    pub serial: u64,
    /// The commit annotation of an object with that serial.
    pub commit: Option<String>,
    /// How many objects are this source's.
    pub objects: usize,
}

/// The floor the live objects of `cluster` record: only objects with both of this source's labels
/// count, and an annotation that is not a number is none. `None` when no object carries one.
pub fn live_floor(live: &[LiveObject], cluster: &str) -> Option<LiveFloor> {
    let ours: Vec<&LiveObject> = live
        .iter()
        .filter(|l| {
            l.labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
                && l.labels.get(LABEL_CLUSTER).map(String::as_str) == Some(cluster)
        })
        .collect();
    let (serial, top) = ours
        .iter()
        .filter_map(|l| {
            Some((
                l.annotations.get(ANNOTATION_SERIAL)?.parse::<u64>().ok()?,
                *l,
            ))
        })
        .max_by_key(|(serial, _)| *serial)?;
    Some(LiveFloor {
        serial,
        commit: top.annotations.get(ANNOTATION_COMMIT).cloned(),
        objects: ours.len(),
    })
}

/// Checks a verified release's `serial` against the live objects of `cluster`.
pub fn check(cluster: &str, serial: u64, live: &[LiveObject]) -> Result<(), FloorError> {
    match live_floor(live, cluster) {
        Some(floor) if serial < floor.serial => Err(FloorError::BelowLiveObjects {
            cluster: cluster.to_owned(),
            serial,
            floor: floor.serial,
            objects: floor.objects,
        }),
        _ => Ok(()),
    }
}

/// The status to verify against when `status` has no `lastAppliedCommit` but the live objects record
/// one: a copy with that commit as the base of the ancestry check. `None` when nothing is to restore.
pub fn restore(
    status: Option<&ClusterStatus>,
    live: &[LiveObject],
    cluster: &str,
) -> Option<ClusterStatus> {
    if status.is_some_and(|s| s.last_applied_commit.is_some()) {
        return None;
    }
    let commit = live_floor(live, cluster)?.commit?;
    let mut restored = status.cloned().unwrap_or_default();
    restored.last_applied_commit = Some(commit);
    Some(restored)
}

/// Whether a status lacks a floor field, so that the live objects must be read before verification.
pub fn status_lacks_floor(status: Option<&ClusterStatus>) -> bool {
    status.is_none_or(|s| s.last_applied_commit.is_none() || s.last_applied_serial.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::InventoryEntry;
    use std::collections::BTreeMap;

    fn object(name: &str, cluster: &str, serial: &str, commit: &str) -> LiveObject {
        LiveObject {
            id: InventoryEntry {
                api_version: "apps.vworkspace.io/v1alpha1".into(),
                kind: "ApplicationInstance".into(),
                namespace: "team".into(),
                name: name.into(),
            },
            labels: BTreeMap::from([
                (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                (LABEL_CLUSTER.to_owned(), cluster.to_owned()),
            ]),
            annotations: BTreeMap::from([
                (ANNOTATION_SERIAL.to_owned(), serial.to_owned()),
                (ANNOTATION_COMMIT.to_owned(), commit.to_owned()),
            ]),
            spec: serde_json::Value::Null.into(),
            managers: vec![],
            version: None,
        }
    }

    #[test]
    fn a_missing_or_lowered_status_floor_is_not_a_lowered_floor() {
        let live = [
            object("a", "demo", "7", "c7"),
            object("b", "demo", "9", "c9"),
            object("c", "other", "50", "c50"),
            object("d", "demo", "not-a-number", "cx"),
        ];
        assert_eq!(
            live_floor(&live, "demo"),
            Some(LiveFloor {
                serial: 9,
                commit: Some("c9".into()),
                objects: 3
            })
        );
        // Whatever the status says, a release at 8 is a rollback; 9 (applied again) and 10 are not.
        assert!(matches!(
            check("demo", 8, &live),
            Err(FloorError::BelowLiveObjects {
                floor: 9,
                objects: 3,
                ..
            })
        ));
        assert_eq!(check("demo", 9, &live), Ok(()));
        assert_eq!(check("demo", 10, &live), Ok(()));
        // Nothing applied yet (no object of ours): nothing to hold to.
        assert_eq!(check("fresh", 1, &live), Ok(()));
        // A status without its commit gets the objects' commit as the ancestry base.
        let lost = ClusterStatus {
            last_applied_serial: Some(9),
            ..ClusterStatus::default()
        };
        assert!(status_lacks_floor(Some(&lost)) && status_lacks_floor(None));
        let restored = restore(Some(&lost), &live, "demo").expect("restored");
        assert_eq!(restored.last_applied_commit.as_deref(), Some("c9"));
        assert_eq!(restored.last_applied_serial, Some(9));
        assert_eq!(
            restore(None, &live, "demo").and_then(|s| s.last_applied_commit),
            Some("c9".into())
        );
        let whole = ClusterStatus {
            last_applied_commit: Some("c9".into()),
            last_applied_serial: Some(9),
            ..ClusterStatus::default()
        };
        assert!(!status_lacks_floor(Some(&whole)));
        assert_eq!(restore(Some(&whole), &live, "demo"), None);
        assert_eq!(restore(None, &live, "fresh"), None);
    }
}
