//! The compact form of a `Cluster`'s inventory in its status (`status.compactInventory`), so that the
//! Cluster object stays far below etcd's request limit (1.5 MiB by default) at 50,000 declared
//! objects: the entries, sorted and grouped (a line per kind, per namespace, per name), zlib
//! compressed and base64 encoded, with their count and uncompressed size to check on read.
//!
//! ```text
//! @apps.vworkspace.io/v1alpha1 ApplicationInstance
//! #team-a
//! nextcloud
//! wiki
//! #team-b
//! ...
//! ```
//!
//! Reading also accepts the former form (a JSON list of entries under `status.inventory`).

use std::io::Write;

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::InventoryEntry;

/// The format name written in [`CompactInventory::format`].
pub const FORMAT: &str = "zlib-lines-v1";

/// The most bytes an inventory may take uncompressed (about 20x what 50,000 entries need): a status
/// claiming more is refused, never allocated.
pub const MAX_UNCOMPRESSED_BYTES: usize = 64 << 20;

/// The inventory as the status holds it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompactInventory {
    /// The encoding: `zlib-lines-v1`.
    pub format: String,
    /// How many objects.
    pub count: u64,
    /// The uncompressed size of the lines, in bytes.
    pub size: u64,
    /// The lines, zlib-compressed, base64 (standard alphabet, padded).
    pub data: String,
}

/// Why a compact inventory could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum InventoryError {
    /// Unknown `format`.
    #[error("unknown inventory format {0:?}")]
    Format(String),
    /// `size` exceeds [`MAX_UNCOMPRESSED_BYTES`].
    #[error("inventory of {0} bytes exceeds the limit")]
    TooLarge(u64),
    /// The data is not base64, not zlib, not UTF-8, or not the size or count it claims.
    #[error("inventory data is corrupt: {0}")]
    Corrupt(&'static str),
}

/// The lines of `entries` (sorted here; duplicates written once).
fn lines(entries: &[InventoryEntry]) -> (String, u64) {
    let mut sorted: Vec<&InventoryEntry> = entries.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut out = String::with_capacity(entries.len() * 12);
    let mut kind: Option<(&str, &str)> = None;
    let mut namespace: Option<&str> = None;
    for e in &sorted {
        if kind != Some((&e.api_version, &e.kind)) {
            kind = Some((&e.api_version, &e.kind));
            namespace = None;
            out.push_str(&format!("@{} {}\n", e.api_version, e.kind));
        }
        if namespace != Some(&e.namespace) {
            namespace = Some(&e.namespace);
            out.push_str(&format!("#{}\n", e.namespace));
        }
        out.push_str(&e.name);
        out.push('\n');
    }
    (out, sorted.len() as u64)
}

/// Encodes `entries`.
pub fn encode(entries: &[InventoryEntry]) -> CompactInventory {
    let (text, count) = lines(entries);
    let mut z = gix_zlib::stream::deflate::Write::new(Vec::new(), gix_zlib::Compression::BEST);
    // Writing to a Vec cannot fail.
    let _ = z.write_all(text.as_bytes()).and_then(|()| z.flush());
    CompactInventory {
        format: FORMAT.to_owned(),
        count,
        size: text.len() as u64,
        data: base64::engine::general_purpose::STANDARD.encode(z.into_inner()),
    }
}

/// Decodes a compact inventory, checking its size and count.
pub fn decode(compact: &CompactInventory) -> Result<Vec<InventoryEntry>, InventoryError> {
    if compact.format != FORMAT {
        return Err(InventoryError::Format(compact.format.clone()));
    }
    let size = usize::try_from(compact.size)
        .ok()
        .filter(|s| *s <= MAX_UNCOMPRESSED_BYTES)
        .ok_or(InventoryError::TooLarge(compact.size))?;
    let zipped = base64::engine::general_purpose::STANDARD
        .decode(&compact.data)
        .map_err(|_| InventoryError::Corrupt("not base64"))?;
    // One byte more than claimed: a stream that is longer than it says is caught.
    let mut out = vec![0u8; size + 1];
    let mut z = gix_zlib::Decompress::new();
    let status = z
        .decompress(&zipped, &mut out, gix_zlib::FlushDecompress::Finish)
        .map_err(|_| InventoryError::Corrupt("not a zlib stream"))?;
    if status != gix_zlib::Status::StreamEnd || z.total_out() != compact.size {
        return Err(InventoryError::Corrupt("not the size it claims"));
    }
    out.truncate(size);
    let text = String::from_utf8(out).map_err(|_| InventoryError::Corrupt("not UTF-8"))?;
    let mut entries = Vec::with_capacity(usize::try_from(compact.count).unwrap_or(0).min(1 << 20));
    let mut kind: Option<(&str, &str)> = None;
    let mut namespace: Option<&str> = None;
    for line in text.lines() {
        if let Some(k) = line.strip_prefix('@') {
            let (api_version, kind_name) = k
                .split_once(' ')
                .ok_or(InventoryError::Corrupt("a kind line without a kind"))?;
            kind = Some((api_version, kind_name));
            namespace = None;
        } else if let Some(ns) = line.strip_prefix('#') {
            namespace = Some(ns);
        } else {
            let ((api_version, kind_name), ns) = kind.zip(namespace).ok_or(
                InventoryError::Corrupt("a name before its kind or namespace"),
            )?;
            entries.push(InventoryEntry {
                api_version: api_version.to_owned(),
                kind: kind_name.to_owned(),
                namespace: ns.to_owned(),
                name: line.to_owned(),
            });
        }
    }
    if entries.len() as u64 != compact.count {
        return Err(InventoryError::Corrupt("not the count it claims"));
    }
    Ok(entries)
}

/// Serializes an inventory in the compact form (serde `serialize_with`).
pub fn serialize<S: Serializer>(entries: &[InventoryEntry], s: S) -> Result<S::Ok, S::Error> {
    encode(entries).serialize(s)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AnyForm {
    Compact(CompactInventory),
    List(Vec<InventoryEntry>),
}

/// Reads an inventory in the compact form or the former list (serde `deserialize_with`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<InventoryEntry>, D::Error> {
    match AnyForm::deserialize(d)? {
        AnyForm::List(list) => Ok(list),
        AnyForm::Compact(compact) => decode(&compact).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(api_version: &str, kind: &str, namespace: &str, name: &str) -> InventoryEntry {
        InventoryEntry {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// 50,000 declared objects as an estate of that size might name them: 4,000 namespaces of ten
    /// instances named after their application (with a suffix on one in three) and 2.5 Operations.
    fn estate() -> Vec<InventoryEntry> {
        const APPS: [&str; 12] = [
            "nextcloud",
            "wiki",
            "gitea",
            "odoo",
            "keycloak",
            "grafana",
            "matomo",
            "mattermost",
            "wordpress",
            "discourse",
            "minio",
            "vaultwarden",
        ];
        let mut out = Vec::new();
        for n in 0..4000u32 {
            let ns = format!(
                "customer-{:05}-{}",
                n * 7919 % 100_000,
                APPS[n as usize % 12]
            );
            for i in 0..10u32 {
                let app = APPS[((n + i * 5) % 12) as usize];
                let name = if (n + i) % 3 == 0 {
                    format!("{app}-{}", (n * 31 + i * 17) % 1000)
                } else {
                    format!("{app}{i}")
                };
                out.push(entry(
                    "apps.vworkspace.io/v1alpha1",
                    "ApplicationInstance",
                    &ns,
                    &name,
                ));
            }
            for i in 0..(if n % 2 == 0 { 3 } else { 2 }) {
                out.push(entry(
                    "ops.vworkspace.io/v1alpha1",
                    "Operation",
                    &ns,
                    &format!("backup-{i}-{}", (n * 13 + i) % 97),
                ));
            }
        }
        out
    }

    #[test]
    fn fifty_thousand_objects_stay_far_below_the_etcd_limit_and_read_back() {
        let entries = estate();
        assert_eq!(entries.len(), 50_000);
        let status = crate::crd::ClusterStatus {
            inventory: entries.clone(),
            ..Default::default()
        };
        let json = serde_json::to_vec(&status).expect("serialize");
        let list = serde_json::to_vec(&entries).expect("serialize");
        println!(
            "50,000 entries: {} bytes in the status ({} as a JSON list)",
            json.len(),
            list.len()
        );
        assert!(
            json.len() < 256 * 1024,
            "{} bytes: over 256 KiB",
            json.len()
        );
        let back: crate::crd::ClusterStatus = serde_json::from_slice(&json).expect("deserialize");
        let mut sorted = entries;
        sorted.sort();
        assert_eq!(back.inventory, sorted);
    }

    #[test]
    fn the_former_list_is_still_read_and_an_empty_inventory_is_not_written() {
        let old = serde_json::json!({"inventory": [
            {"apiVersion": "apps.vworkspace.io/v1alpha1", "kind": "ApplicationInstance",
             "namespace": "a", "name": "x"}]});
        let status: crate::crd::ClusterStatus = serde_json::from_value(old).expect("former form");
        assert_eq!(status.inventory.len(), 1);
        let written = serde_json::to_value(&status).expect("serialize");
        assert!(written.get("inventory").is_none());
        assert_eq!(written["compactInventory"]["count"], 1);
        let empty = serde_json::to_value(crate::crd::ClusterStatus::default()).expect("serialize");
        assert!(empty.get("compactInventory").is_none());
    }

    #[test]
    fn corrupt_or_lying_inventories_are_refused() {
        let good = encode(&[entry("v1", "K", "ns", "a"), entry("v1", "K", "ns", "b")]);
        assert_eq!(decode(&good).expect("decodes").len(), 2);
        let wrong_count = CompactInventory {
            count: 3,
            ..good.clone()
        };
        assert!(matches!(
            decode(&wrong_count),
            Err(InventoryError::Corrupt(_))
        ));
        let wrong_size = CompactInventory {
            size: good.size - 1,
            ..good.clone()
        };
        assert!(matches!(
            decode(&wrong_size),
            Err(InventoryError::Corrupt(_))
        ));
        let huge = CompactInventory {
            size: u64::MAX,
            ..good.clone()
        };
        assert_eq!(decode(&huge), Err(InventoryError::TooLarge(u64::MAX)));
        let garbage = CompactInventory {
            data: "bm90IHpsaWI=".into(),
            ..good.clone()
        };
        assert!(matches!(decode(&garbage), Err(InventoryError::Corrupt(_))));
        let other = CompactInventory {
            format: "gzip".into(),
            ..good
        };
        assert!(matches!(decode(&other), Err(InventoryError::Format(_))));
    }
}
