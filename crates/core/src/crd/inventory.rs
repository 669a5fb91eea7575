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
use serde::{Deserialize, Serialize, Serializer};

use super::InventoryEntry;

/// The format name written in [`CompactInventory::format`].
pub const FORMAT: &str = "zlib-lines-v1";

/// The most bytes an inventory may take uncompressed (about ten times what 50,000 entries need): a
/// status claiming more is refused before anything is inflated.
pub const MAX_UNCOMPRESSED_BYTES: usize = 16 << 20;

/// The most base64 characters `data` may hold (etcd refuses a larger object anyway): checked before
/// it is decoded.
pub const MAX_ENCODED_BYTES: usize = 2 << 20;

/// The most entries an inventory may hold (twice the 50,000 objects the design plans for): a status
/// claiming more is refused before any entry is allocated, and parsing stops at the claimed count.
pub const MAX_ENTRIES: u64 = 100_000;

/// The most an inventory may inflate, uncompressed bytes per compressed byte. Real inventories
/// compress about 5 to 10 times (the 50,000-entry estate of the tests: see its test); a stream built
/// to inflate (a few KiB to many MiB) is refused before it is inflated.
pub const MAX_INFLATE_RATIO: u64 = 64;

/// The longest line: a kind line (`@<apiVersion> <kind>`), a namespace line (`#<namespace>`) or a
/// name (Kubernetes names are at most 253 characters).
pub const MAX_LINE_BYTES: usize = 320;

/// How much is inflated at a time.
const INFLATE_CHUNK: usize = 64 << 10;

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
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum InventoryError {
    /// Unknown `format`.
    #[error("unknown inventory format {0:?}")]
    Format(String),
    /// `size` exceeds [`MAX_UNCOMPRESSED_BYTES`].
    #[error("inventory of {0} bytes exceeds the limit of {MAX_UNCOMPRESSED_BYTES}")]
    TooLarge(u64),
    /// `data` exceeds [`MAX_ENCODED_BYTES`].
    #[error("inventory data of {0} bytes exceeds the limit of {MAX_ENCODED_BYTES}")]
    EncodedTooLarge(usize),
    /// `count` exceeds [`MAX_ENTRIES`].
    #[error("inventory of {0} entries exceeds the limit of {MAX_ENTRIES}")]
    TooManyEntries(u64),
    /// `size` is more than [`MAX_INFLATE_RATIO`] times the compressed data.
    #[error(
        "inventory claims {size} bytes from {compressed} compressed bytes: over the inflate ratio of {MAX_INFLATE_RATIO}"
    )]
    Ratio {
        /// The claimed uncompressed size.
        size: u64,
        /// The compressed size.
        compressed: usize,
    },
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

/// Checks what a compact inventory claims against the limits, before anything is decoded.
fn check_claims(compact: &CompactInventory) -> Result<usize, InventoryError> {
    if compact.format != FORMAT {
        return Err(InventoryError::Format(compact.format.clone()));
    }
    if compact.count > MAX_ENTRIES {
        return Err(InventoryError::TooManyEntries(compact.count));
    }
    if compact.data.len() > MAX_ENCODED_BYTES {
        return Err(InventoryError::EncodedTooLarge(compact.data.len()));
    }
    usize::try_from(compact.size)
        .ok()
        .filter(|s| *s <= MAX_UNCOMPRESSED_BYTES)
        .ok_or(InventoryError::TooLarge(compact.size))
}

/// Inflates `zipped`, never more than `size` bytes: the output grows chunk by chunk as the stream
/// produces it (not by what the status claims), and a stream longer than it claims stops one chunk
/// past `size`.
fn inflate(zipped: &[u8], size: usize) -> Result<Vec<u8>, InventoryError> {
    let mut z = gix_zlib::Decompress::new();
    let mut out = Vec::new();
    let mut chunk = vec![0u8; INFLATE_CHUNK];
    loop {
        let consumed = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
        let input = zipped.get(consumed..).unwrap_or_default();
        let before = z.total_out();
        let status = z
            .decompress(input, &mut chunk, gix_zlib::FlushDecompress::Finish)
            .map_err(|_| InventoryError::Corrupt("not a zlib stream"))?;
        let produced = usize::try_from(z.total_out() - before).unwrap_or(usize::MAX);
        if out.len().saturating_add(produced) > size {
            return Err(InventoryError::Corrupt("not the size it claims"));
        }
        out.extend_from_slice(chunk.get(..produced).unwrap_or_default());
        match status {
            gix_zlib::Status::StreamEnd => break,
            // No progress: the stream ends before its end marker.
            _ if produced == 0 && z.total_in() as usize == consumed => {
                return Err(InventoryError::Corrupt("a truncated zlib stream"));
            }
            _ => {}
        }
    }
    if out.len() != size {
        return Err(InventoryError::Corrupt("not the size it claims"));
    }
    Ok(out)
}

/// Decodes a compact inventory under bounds: the claims (format, count, size, encoded size, inflate
/// ratio) are checked before anything is decoded, the stream is inflated no further than it claims,
/// and lines longer than [`MAX_LINE_BYTES`] or more entries than claimed stop the parse.
pub fn decode(compact: &CompactInventory) -> Result<Vec<InventoryEntry>, InventoryError> {
    let size = check_claims(compact)?;
    let zipped = base64::engine::general_purpose::STANDARD
        .decode(&compact.data)
        .map_err(|_| InventoryError::Corrupt("not base64"))?;
    if compact.size > (zipped.len() as u64).saturating_mul(MAX_INFLATE_RATIO) {
        return Err(InventoryError::Ratio {
            size: compact.size,
            compressed: zipped.len(),
        });
    }
    let out = inflate(&zipped, size)?;
    drop(zipped);
    let text = String::from_utf8(out).map_err(|_| InventoryError::Corrupt("not UTF-8"))?;
    parse_lines(&text, compact.count)
}

/// The entries of the lines, at most `count` of them.
fn parse_lines(text: &str, count: u64) -> Result<Vec<InventoryEntry>, InventoryError> {
    // `count` is at most MAX_ENTRIES here.
    let mut entries = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut kind: Option<(&str, &str)> = None;
    let mut namespace: Option<&str> = None;
    for line in text.lines() {
        if line.len() > MAX_LINE_BYTES {
            return Err(InventoryError::Corrupt("a line longer than any name"));
        }
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
            if entries.len() as u64 >= count {
                return Err(InventoryError::Corrupt("not the count it claims"));
            }
            entries.push(InventoryEntry {
                api_version: api_version.to_owned(),
                kind: kind_name.to_owned(),
                namespace: ns.to_owned(),
                name: line.to_owned(),
            });
        }
    }
    if entries.len() as u64 != count {
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

/// Reads an inventory in the compact form or the former list from the status as the API server sent
/// it, under the same bounds.
pub fn decode_any(raw: serde_json::Value) -> Result<Vec<InventoryEntry>, InventoryError> {
    match AnyForm::deserialize(raw) {
        Ok(AnyForm::Compact(compact)) => decode(&compact),
        Ok(AnyForm::List(list)) if list.len() as u64 > MAX_ENTRIES => {
            Err(InventoryError::TooManyEntries(list.len() as u64))
        }
        Ok(AnyForm::List(list)) => Ok(list),
        Err(_) => Err(InventoryError::Corrupt(
            "neither the compact form nor a list of entries",
        )),
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

    fn zlib(bytes: &[u8]) -> String {
        let mut z = gix_zlib::stream::deflate::Write::new(Vec::new(), gix_zlib::Compression::BEST);
        z.write_all(bytes)
            .and_then(|()| z.flush())
            .expect("deflate");
        base64::engine::general_purpose::STANDARD.encode(z.into_inner())
    }

    /// The issue's bomb: about 11 KB that inflate to 8 MiB of four million one-letter names.
    fn bomb() -> (String, u64, u64) {
        let mut text = String::from("@v1 K\n#ns\n");
        text.push_str(&"a\n".repeat(4 << 20));
        (zlib(text.as_bytes()), text.len() as u64, 4 << 20)
    }

    #[test]
    fn an_inflate_bomb_is_refused_before_it_is_inflated_whatever_it_claims() {
        let (data, size, count) = bomb();
        assert!(data.len() < 16 * 1024, "{} bytes", data.len());
        // Honest claims: too many entries.
        let honest = CompactInventory {
            format: FORMAT.into(),
            count,
            size,
            data: data.clone(),
        };
        assert_eq!(decode(&honest), Err(InventoryError::TooManyEntries(count)));
        // A count within bounds: the claimed size is far over the ratio.
        let few = CompactInventory {
            count: 10,
            ..honest.clone()
        };
        assert!(matches!(decode(&few), Err(InventoryError::Ratio { .. })));
        // Small claims: the stream is cut one chunk past what it claims.
        let lying = CompactInventory {
            count: 1,
            size: 12,
            ..honest
        };
        assert_eq!(
            decode(&lying),
            Err(InventoryError::Corrupt("not the size it claims"))
        );
    }

    #[test]
    fn over_long_lines_oversized_data_and_extra_names_are_refused() {
        let long = format!("@v1 K\n#ns\n{}\n", "n".repeat(MAX_LINE_BYTES + 1));
        let compact = CompactInventory {
            format: FORMAT.into(),
            count: 1,
            size: long.len() as u64,
            data: zlib(long.as_bytes()),
        };
        assert_eq!(
            decode(&compact),
            Err(InventoryError::Corrupt("a line longer than any name"))
        );
        let extra = "@v1 K\n#ns\na\nb\nc\n";
        let compact = CompactInventory {
            format: FORMAT.into(),
            count: 2,
            size: extra.len() as u64,
            data: zlib(extra.as_bytes()),
        };
        assert_eq!(
            decode(&compact),
            Err(InventoryError::Corrupt("not the count it claims"))
        );
        let oversized = CompactInventory {
            data: "A".repeat(MAX_ENCODED_BYTES + 4),
            ..compact
        };
        assert_eq!(
            decode(&oversized),
            Err(InventoryError::EncodedTooLarge(MAX_ENCODED_BYTES + 4))
        );
        let truncated = encode(&[entry("v1", "K", "ns", "a")]);
        let mut zipped = base64::engine::general_purpose::STANDARD
            .decode(&truncated.data)
            .expect("base64");
        zipped.truncate(zipped.len() - 6);
        let truncated = CompactInventory {
            data: base64::engine::general_purpose::STANDARD.encode(zipped),
            ..truncated
        };
        assert!(matches!(
            decode(&truncated),
            Err(InventoryError::Corrupt(_))
        ));
    }

    #[test]
    fn the_planned_estate_inflates_well_within_the_ratio() {
        let compact = encode(&estate());
        let zipped = base64::engine::general_purpose::STANDARD
            .decode(&compact.data)
            .expect("base64");
        let ratio = compact.size / zipped.len() as u64;
        println!(
            "50,000 entries: {} bytes of lines, {} compressed: ratio {ratio}",
            compact.size,
            zipped.len()
        );
        assert!(ratio * 2 < MAX_INFLATE_RATIO, "ratio {ratio}");
        assert!(compact.size * 4 < MAX_UNCOMPRESSED_BYTES as u64);
        assert_eq!(decode(&compact).expect("decodes").len(), 50_000);
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
