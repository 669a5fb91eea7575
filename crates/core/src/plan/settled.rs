//! The settled record: proof, from the live objects' metadata alone, that they are still as the
//! operator's last complete pass left them.
//!
//! A fresh process (`run --once`, a restart) has no memory of the last pass. To find that nothing
//! changed it used to parse every file of the release again and read every live object whole: at
//! 10,000 instances, about 0.6 s of parsing and the encoding and decoding of 10,000 objects. Yet
//! the API server already says whether an object's spec changed: `metadata.generation` moves on
//! every change to it (and when its deletion starts), and `metadata.uid` changes when the object
//! is deleted and made again. So a pass that found, or made, every declared object as declared
//! records one digest over:
//!
//! - what it judged with ([`SettledKey`]): the commit and release, the `Cluster`'s spec, the
//!   managed namespaces, the identities' recipients, the values verdict, the limits and this code's
//!   version;
//! - every labelled object after the pass ([`SettledObject`]): its identity, uid, generation,
//!   deletion, labels and annotations, as the apply's own answer or the comparing read gave them.
//!
//! A later pass on the same commit under the same key lists the objects' metadata only and
//! computes the same digest. Equal digests mean every object still has the generation the pass
//! saw while its spec was as declared, so nothing needs planning, reading or writing. Any
//! difference (an edit by hand, a deleted object, a new labelled one, a rotated identity, an
//! upgraded operator) gives another digest and the whole pass runs.
//!
//! The record is only as good as where it is kept: the reconciler keeps it in the `Cluster`'s
//! status, which only the operator may write (docs/security.md).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::crd::InventoryEntry;
use crate::limits::Limits;

/// Which version of an object's spec a live object carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// `metadata.uid`: another object after a delete and a re-create.
    pub uid: String,
    /// `metadata.generation`: moves on every change of the spec.
    pub generation: i64,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

/// One labelled object as the record covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledObject {
    /// Its identity.
    pub id: InventoryEntry,
    /// Its uid and generation.
    pub version: ObjectVersion,
    /// `metadata.labels`, all of them.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`, all of them.
    pub annotations: BTreeMap<String, String>,
}

/// One object as the record covers it, borrowed from wherever the pass holds it (a pass over 10,000
/// objects hashes them without a copy of their labels and annotations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettledRef<'a> {
    /// Its identity.
    pub id: &'a InventoryEntry,
    /// Its uid and generation.
    pub version: &'a ObjectVersion,
    /// `metadata.labels`, all of them.
    pub labels: &'a BTreeMap<String, String>,
    /// `metadata.annotations`, all of them.
    pub annotations: &'a BTreeMap<String, String>,
}

impl SettledObject {
    /// The object, borrowed.
    pub fn as_ref(&self) -> SettledRef<'_> {
        SettledRef {
            id: &self.id,
            version: &self.version,
            labels: &self.labels,
            annotations: &self.annotations,
        }
    }
}

/// What a pass judged its objects with, besides the objects.
#[derive(Debug, Clone, Copy)]
pub struct SettledKey<'a> {
    /// The applied commit.
    pub commit: &'a str,
    /// The applied release manifest's digest.
    pub release_digest: &'a str,
    /// The `Cluster`'s spec, as JSON: its policies, namespaces and id.
    pub cluster_spec: &'a [u8],
    /// The managed namespaces' names.
    pub managed_namespaces: &'a [String],
    /// The recipients of the identities the values are decrypted with.
    pub recipients: &'a [String],
    /// The verdict on the values the pass recorded or reused.
    pub values_verified: Option<&'a str>,
    /// The limits the release was checked under.
    pub limits: &'a Limits,
}

/// The digest of `objects` (in any order) under `key`: `sha256:<hex>`.
pub fn settled_digest<'o>(
    key: &SettledKey<'_>,
    objects: impl IntoIterator<Item = SettledRef<'o>>,
) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        // Length-prefixed, so that no two sequences of fields hash alike.
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(b"vworkspace settled record v1");
    field(env!("CARGO_PKG_VERSION").as_bytes());
    field(key.commit.as_bytes());
    field(key.release_digest.as_bytes());
    field(key.cluster_spec);
    let mut managed: Vec<&String> = key.managed_namespaces.iter().collect();
    managed.sort_unstable();
    field(&(managed.len() as u64).to_be_bytes());
    for namespace in managed {
        field(namespace.as_bytes());
    }
    field(&(key.recipients.len() as u64).to_be_bytes());
    for recipient in key.recipients {
        field(recipient.as_bytes());
    }
    field(key.values_verified.unwrap_or("").as_bytes());
    field(&[u8::from(key.values_verified.is_some())]);
    field(format!("{:?}", key.limits).as_bytes());
    let mut objects: Vec<SettledRef<'_>> = objects.into_iter().collect();
    objects.sort_unstable_by(|a, b| a.id.cmp(b.id));
    field(&(objects.len() as u64).to_be_bytes());
    for object in objects {
        let id = &object.id;
        for part in [&id.api_version, &id.kind, &id.namespace, &id.name] {
            field(part.as_bytes());
        }
        field(object.version.uid.as_bytes());
        field(&object.version.generation.to_be_bytes());
        field(&[u8::from(object.version.deleting)]);
        for map in [object.labels, object.annotations] {
            field(&(map.len() as u64).to_be_bytes());
            for (k, v) in map {
                field(k.as_bytes());
                field(v.as_bytes());
            }
        }
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, generation: i64) -> SettledObject {
        SettledObject {
            id: InventoryEntry {
                api_version: "apps.vworkspace.io/v1alpha1".into(),
                kind: "ApplicationInstance".into(),
                namespace: "org-a".into(),
                name: name.into(),
            },
            version: ObjectVersion {
                uid: format!("uid-{name}"),
                generation,
                deleting: false,
            },
            labels: BTreeMap::from([("gitops.vworkspace.io/cluster".into(), "demo".into())]),
            annotations: BTreeMap::from([("gitops.vworkspace.io/commit".into(), "c1".into())]),
        }
    }

    #[test]
    fn every_input_of_the_record_changes_the_digest_and_order_does_not() {
        let limits = Limits::default();
        let other_limits = Limits {
            max_files: limits.max_files + 1,
            ..Limits::default()
        };
        let managed = vec!["org-a".to_owned(), "org-b".to_owned()];
        let recipients = vec!["age1aaa".to_owned()];
        let key = SettledKey {
            commit: "c1",
            release_digest: "sha256:r1",
            cluster_spec: br#"{"clusterId":"demo"}"#,
            managed_namespaces: &managed,
            recipients: &recipients,
            values_verified: Some("sha256:v1"),
            limits: &limits,
        };
        let objects = vec![object("wiki", 1), object("crm", 2)];
        let digest = settled_digest(&key, objects.iter().map(SettledObject::as_ref));
        assert!(digest.starts_with("sha256:"), "{digest}");
        let reversed: Vec<SettledObject> = objects.iter().rev().cloned().collect();
        assert_eq!(
            settled_digest(&key, reversed.iter().map(SettledObject::as_ref)),
            digest,
            "order is not an input"
        );
        let reordered = vec!["org-b".to_owned(), "org-a".to_owned()];
        assert_eq!(
            settled_digest(
                &SettledKey {
                    managed_namespaces: &reordered,
                    ..key
                },
                objects.iter().map(SettledObject::as_ref)
            ),
            digest,
            "namespace order is not an input"
        );

        let one_managed = vec!["org-a".to_owned()];
        let rotated = vec!["age1bbb".to_owned()];
        let keys = [
            (
                "commit",
                SettledKey {
                    commit: "c2",
                    ..key
                },
            ),
            (
                "release",
                SettledKey {
                    release_digest: "sha256:r2",
                    ..key
                },
            ),
            (
                "spec",
                SettledKey {
                    cluster_spec: br#"{"clusterId":"other"}"#,
                    ..key
                },
            ),
            (
                "namespaces",
                SettledKey {
                    managed_namespaces: &one_managed,
                    ..key
                },
            ),
            (
                "recipients",
                SettledKey {
                    recipients: &rotated,
                    ..key
                },
            ),
            (
                "values",
                SettledKey {
                    values_verified: Some("sha256:v2"),
                    ..key
                },
            ),
            (
                "no values verdict",
                SettledKey {
                    values_verified: None,
                    ..key
                },
            ),
            (
                "limits",
                SettledKey {
                    limits: &other_limits,
                    ..key
                },
            ),
        ];
        for (what, other) in keys {
            assert_ne!(
                settled_digest(&other, objects.iter().map(SettledObject::as_ref)),
                digest,
                "{what}"
            );
        }

        let mut edited = objects.clone();
        edited[0].version.generation = 2;
        let mut recreated = objects.clone();
        recreated[0].version.uid = "uid-other".into();
        let mut deleting = objects.clone();
        deleting[0].version.deleting = true;
        let mut relabelled = objects.clone();
        relabelled[0].labels.insert("team".into(), "x".into());
        let mut annotated = objects.clone();
        annotated[0].annotations.insert("note".into(), "x".into());
        let mut renamed = objects.clone();
        renamed[0].id.name = "wiki2".into();
        let mut moved_kind = objects.clone();
        moved_kind[0].id.kind = "Operation".into();
        let extra = [objects.clone(), vec![object("extra", 1)]].concat();
        let fewer = objects[..1].to_vec();
        // A label's value moved into its key must not hash alike.
        let mut shifted = objects.clone();
        shifted[0].labels =
            BTreeMap::from([("gitops.vworkspace.io/clusterdemo".into(), String::new())]);
        let changes = [
            ("generation", edited),
            ("uid", recreated),
            ("deletion", deleting),
            ("label", relabelled),
            ("annotation", annotated),
            ("name", renamed),
            ("kind", moved_kind),
            ("one more object", extra),
            ("one object less", fewer),
            ("label split", shifted),
        ];
        for (what, changed) in changes {
            assert_ne!(
                settled_digest(&key, changed.iter().map(SettledObject::as_ref)),
                digest,
                "{what}"
            );
        }
    }
}
