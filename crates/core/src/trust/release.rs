//! The signed release manifest: `clusters/<id>/release.yaml` and its k-of-n signatures.
//!
//! A release binds the exact file set of the cluster directory (SHA-256 per file) to a cluster id,
//! a strictly increasing serial and an expiry, and is signed by `k` distinct trusted release keys
//! (namespace `vworkspace-release`). [`verify`] is the only way to build a [`VerifiedRelease`], and
//! the planner accepts nothing else.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limits::Limits;
use crate::repository::{ClusterTree, TreeEntry};
use crate::trust::commit_signature::VerifiedCommit;
use crate::trust::signers::AllowedSigners;
use crate::trust::sshsig::{self, SignatureError, Signer};

pub use crate::layout::{MANIFEST_FILE, SIGNATURES_DIR};
/// The SSHSIG namespace of release signatures.
pub const SIGNATURE_NAMESPACE: &str = "vworkspace-release";
/// The manifest's `apiVersion`.
pub const API_VERSION: &str = "gitops.vworkspace.io/v1alpha1";
/// The manifest's `kind`.
pub const KIND: &str = "Release";
/// The longest a release may be valid, from the verifier's clock to its `expires`, when the `Cluster`
/// does not set `spec.policy.maxReleaseValidityDays`.
pub const DEFAULT_MAX_VALIDITY_DAYS: u32 = 90;

/// `release.yaml`, as written by `vworkspace-operator release` and by Odoo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReleaseManifest {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be [`KIND`].
    pub kind: String,
    /// The cluster id this release is for.
    pub cluster: String,
    /// Strictly increasing per cluster.
    pub serial: u64,
    /// RFC 3339 instant after which the release is refused.
    pub expires: String,
    /// The commit this release was made from, if the author recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Every file of the cluster directory but the manifest and its signatures: path -> `sha256:<hex>`.
    pub files: BTreeMap<String, String>,
}

/// What the cluster side knows and decides about releases.
#[derive(Debug, Clone)]
pub struct ReleasePolicy {
    /// This cluster's id.
    pub cluster: String,
    /// Trusted release keys (`allowed_signers` format).
    pub signers: AllowedSigners,
    /// How many distinct trusted keys must have signed (at least one, by its type).
    pub threshold: std::num::NonZeroUsize,
    /// The release last applied to this cluster, if any.
    pub last_applied: Option<AppliedRelease>,
    /// The longest a release may still be valid at the verifier's clock (`expires - now`): a release
    /// that never expires would let a Git host freeze the cluster on it. Default
    /// [`DEFAULT_MAX_VALIDITY_DAYS`].
    pub max_validity: jiff::SignedDuration,
}

impl ReleasePolicy {
    /// `days` as a [`ReleasePolicy::max_validity`].
    pub fn validity_days(days: u32) -> jiff::SignedDuration {
        jiff::SignedDuration::from_hours(i64::from(days) * 24)
    }
}

/// The highest serial a release may have: 2^53 - 1, the largest integer every JSON reader keeps
/// exactly (and far inside Kubernetes' int64). A bound keeps one signed release from taking the
/// last serial there is: a release at `u64::MAX` would leave no greater serial, and so block every
/// later release of the cluster. Counting one release a second, the bound lasts 285 million years.
pub const MAX_SERIAL: u64 = (1 << 53) - 1;

/// Refuses a release whose serial is below the floor an owner pinned (`spec.release.minSerial`); a
/// serial equal to the floor is accepted (the release the floor was copied from can be applied again).
pub fn check_floor(cluster: &str, serial: u64, floor: Option<u64>) -> Result<(), ReleaseError> {
    match floor {
        Some(floor) if serial < floor => Err(ReleaseError::BelowFloor {
            cluster: cluster.to_owned(),
            serial,
            floor,
        }),
        _ => Ok(()),
    }
}

/// The identity of an applied release: enough to refuse a rollback and to recognize a re-verification
/// of the very same release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRelease {
    /// Its serial.
    pub serial: u64,
    /// SHA-256 of its `release.yaml` (`sha256:<hex>`), when known. With it, the same release can be
    /// verified again (a periodic pass on an unchanged commit); without it, the serial must grow.
    pub digest: Option<String>,
}

/// Why a release was refused. File problems are collected: one refusal lists every bad file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// `release.yaml` is absent, or is not a regular file (a symlink or a submodule).
    #[error(
        "clusters/{cluster}/release.yaml is missing or not a regular file: every cluster directory needs a signed release manifest"
    )]
    MissingManifest {
        /// The cluster id.
        cluster: String,
    },
    /// The tree handed to the verifier was not read from the verified commit (a checkout, a tree
    /// built in memory, or another commit's): what is verified must be what was signed.
    #[error(
        "clusters/{cluster}/: the tree to verify was not read from commit {commit}; only a verified commit's own tree can be verified"
    )]
    TreeNotFromCommit {
        /// The cluster id.
        cluster: String,
        /// The verified commit.
        commit: String,
    },
    /// `release.yaml` is not a valid manifest.
    #[error("clusters/{cluster}/release.yaml: {message}")]
    Malformed {
        /// The cluster id.
        cluster: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The manifest is for another cluster (a replay).
    #[error(
        "clusters/{cluster}/release.yaml: field cluster is {found:?}, expected {cluster:?} (a release for another cluster is never applied)"
    )]
    WrongCluster {
        /// This cluster's id.
        cluster: String,
        /// The id in the manifest.
        found: String,
    },
    /// The serial does not exceed the last applied one (a rollback or a replay).
    #[error(
        "clusters/{cluster}/release.yaml: serial {serial} is not greater than the last applied serial {last} (rollback refused)"
    )]
    Rollback {
        /// The cluster id.
        cluster: String,
        /// The manifest's serial.
        serial: u64,
        /// The last applied serial.
        last: u64,
    },
    /// The release's serial is below the floor the owner pinned (`spec.release.minSerial`).
    #[error(
        "clusters/{cluster}/release.yaml: serial {serial} is below spec.release.minSerial {floor} (rollback refused)"
    )]
    BelowFloor {
        /// The cluster id.
        cluster: String,
        /// The manifest's serial.
        serial: u64,
        /// `spec.release.minSerial`.
        floor: u64,
    },
    /// The release has expired (a freeze).
    #[error(
        "clusters/{cluster}/release.yaml: expired at {expires}, now is {now} (publish a fresh release)"
    )]
    Expired {
        /// The cluster id.
        cluster: String,
        /// The manifest's expiry.
        expires: jiff::Timestamp,
        /// The verifier's clock.
        now: jiff::Timestamp,
    },
    /// `expires` is further from the verifier's clock than the cluster allows.
    #[error(
        "clusters/{cluster}/release.yaml: field expires {expires} is more than {max_days} days after now ({now}); this cluster allows releases valid for at most {max_days} days (Cluster spec.policy.maxReleaseValidityDays)"
    )]
    ValidityTooLong {
        /// The cluster id.
        cluster: String,
        /// The manifest's expiry.
        expires: jiff::Timestamp,
        /// The verifier's clock.
        now: jiff::Timestamp,
        /// The limit, in days.
        max_days: i64,
    },
    /// The listed files do not match the directory.
    #[error("clusters/{cluster}/: the release does not match the directory:\n{}", .problems.join("\n"))]
    Files {
        /// The cluster id.
        cluster: String,
        /// One line per file: unlisted, missing, or different.
        problems: Vec<String>,
    },
    /// A signature file failed verification for a reason other than an unknown key.
    #[error("clusters/{cluster}/{file}: {source}")]
    Signature {
        /// The cluster id.
        cluster: String,
        /// The signature file.
        file: String,
        /// Why it was refused.
        source: Box<SignatureError>,
    },
    /// Something other than `<name>.sig` files under `release.sigs/`, or too many signatures.
    #[error("clusters/{cluster}/{file}: {message}")]
    SignatureFile {
        /// The cluster id.
        cluster: String,
        /// The offending path.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// Fewer distinct trusted keys signed than the threshold requires.
    #[error(
        "clusters/{cluster}/release.yaml: signed by {found} distinct trusted key(s){signers}, {threshold} required"
    )]
    BelowThreshold {
        /// The cluster id.
        cluster: String,
        /// Distinct trusted keys that signed.
        found: usize,
        /// The threshold.
        threshold: usize,
        /// Who signed, for the message.
        signers: String,
    },
}

/// A release whose manifest, signatures and file set were verified against a verified commit.
/// Only [`verify`] builds one. Not `Clone`: [`crate::pipeline::read_intent`] takes one by value, and
/// a copy of the release a [`crate::pipeline::VerifiedIntent`] holds (its files taken) would parse
/// as an empty intent.
#[derive(Debug)]
pub struct VerifiedRelease {
    commit: VerifiedCommit,
    tree: ClusterTree,
    manifest: ReleaseManifest,
    expires: jiff::Timestamp,
    digest: String,
    signers: Vec<Signer>,
    ignored_signatures: Vec<String>,
}

impl VerifiedRelease {
    /// The verified commit the release was read from.
    pub fn commit(&self) -> &VerifiedCommit {
        &self.commit
    }
    /// The cluster directory, every file of which the manifest vouches for. Empty in the release
    /// of a [`crate::pipeline::VerifiedIntent`]: the pass took the files to parse them
    /// ([`VerifiedRelease::take_tree`]).
    pub fn tree(&self) -> &ClusterTree {
        &self.tree
    }

    /// Takes the cluster directory's files out (leaving the tree empty, stamped with the same
    /// commit): the pass parses them once into the intent, and a remembered verdict would otherwise
    /// keep every file's bytes besides the objects made from them.
    pub(crate) fn take_tree(&mut self) -> ClusterTree {
        let empty = ClusterTree {
            cluster: self.tree.cluster.clone(),
            commit: self.tree.commit.clone(),
            entries: Default::default(),
        };
        std::mem::replace(&mut self.tree, empty)
    }
    /// The manifest.
    pub fn manifest(&self) -> &ReleaseManifest {
        &self.manifest
    }
    /// The manifest's serial.
    pub fn serial(&self) -> u64 {
        self.manifest.serial
    }
    /// The manifest's expiry.
    pub fn expires(&self) -> jiff::Timestamp {
        self.expires
    }
    /// SHA-256 of `release.yaml`, `sha256:<hex>`.
    pub fn digest(&self) -> &str {
        &self.digest
    }
    /// The distinct trusted keys that signed, in signature-file order.
    pub fn signers(&self) -> &[Signer] {
        &self.signers
    }
    /// Signature files by keys this cluster does not trust: ignored, reported by `verify`.
    pub fn ignored_signatures(&self) -> &[String] {
        &self.ignored_signatures
    }
    /// The identity to record once this release is applied.
    pub fn applied(&self) -> AppliedRelease {
        AppliedRelease {
            serial: self.manifest.serial,
            digest: Some(self.digest.clone()),
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn is_signature_path(path: &str) -> bool {
    path.starts_with(SIGNATURES_DIR)
}

/// Parses `release.yaml`, checking its shape but not its signatures or files.
pub fn parse_manifest(
    bytes: &[u8],
    cluster: &str,
    limits: &Limits,
) -> Result<ReleaseManifest, ReleaseError> {
    let malformed = |message: String| ReleaseError::Malformed {
        cluster: cluster.to_owned(),
        message,
    };
    let file = format!("clusters/{cluster}/{MANIFEST_FILE}");
    // The manifest lists every file: its bounds follow the file-count limit, not an intent file's.
    let manifest_limits = Limits {
        max_file_bytes: limits.max_manifest_bytes,
        max_yaml_nodes: limits.max_files.saturating_mul(2).saturating_add(64),
        ..limits.clone()
    };
    let value = crate::yaml::parse_document(bytes, &file, &manifest_limits)
        .map_err(|e| malformed(e.to_string()))?;
    let manifest: ReleaseManifest =
        serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
    if manifest.api_version != API_VERSION {
        return Err(malformed(format!(
            "field apiVersion must be {API_VERSION:?}, found {:?}",
            manifest.api_version
        )));
    }
    if manifest.kind != KIND {
        return Err(malformed(format!(
            "field kind must be {KIND:?}, found {:?}",
            manifest.kind
        )));
    }
    if manifest.serial == 0 {
        return Err(malformed("field serial must be at least 1".into()));
    }
    if manifest.serial > MAX_SERIAL {
        return Err(malformed(format!(
            "field serial {} is above the highest serial {MAX_SERIAL} (2^53 - 1)",
            manifest.serial
        )));
    }
    if let Some(parent) = &manifest.parent
        && let Err(e) = crate::repository::CommitId::parse(parent)
    {
        return Err(malformed(format!("field parent: {e}")));
    }
    for (path, digest) in &manifest.files {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(malformed(format!(
                "files.{path}: expected sha256:<64 lowercase hex>, found {digest:?}"
            )));
        }
        if path == MANIFEST_FILE || is_signature_path(path) {
            return Err(malformed(format!(
                "files.{path}: the manifest and its signatures are not listed"
            )));
        }
    }
    Ok(manifest)
}

/// Verifies the release in `tree` (read from `commit`) against `policy` at the verifier's clock `now`.
pub fn verify(
    commit: VerifiedCommit,
    tree: ClusterTree,
    policy: &ReleasePolicy,
    now: jiff::Timestamp,
    limits: &Limits,
) -> Result<VerifiedRelease, ReleaseError> {
    let cluster = policy.cluster.clone();
    if tree.commit() != Some(commit.id()) {
        return Err(ReleaseError::TreeNotFromCommit {
            cluster,
            commit: commit.id().to_string(),
        });
    }
    let Some(TreeEntry::File(manifest_bytes)) = tree.entries.get(MANIFEST_FILE) else {
        return Err(ReleaseError::MissingManifest { cluster });
    };
    let manifest = parse_manifest(manifest_bytes, &cluster, limits)?;
    if manifest.cluster != cluster {
        return Err(ReleaseError::WrongCluster {
            cluster,
            found: manifest.cluster,
        });
    }
    let expires = parse_rfc3339(&manifest.expires).map_err(|e| ReleaseError::Malformed {
        cluster: cluster.clone(),
        message: format!(
            "field expires: {:?} is not an RFC 3339 instant: {e}",
            manifest.expires
        ),
    })?;
    // Signatures first: nothing else in the manifest means anything until k trusted keys vouch for it.
    let (signers, ignored_signatures) =
        verify_signatures(&tree, manifest_bytes, policy, now, limits)?;
    let digest = sha256_digest(manifest_bytes);
    if let Some(last) = &policy.last_applied {
        let same_release = last.digest.as_deref() == Some(digest.as_str());
        if manifest.serial < last.serial || (manifest.serial == last.serial && !same_release) {
            return Err(ReleaseError::Rollback {
                cluster,
                serial: manifest.serial,
                last: last.serial,
            });
        }
    }
    if expires <= now {
        return Err(ReleaseError::Expired {
            cluster,
            expires,
            now,
        });
    }
    if expires.duration_since(now) > policy.max_validity {
        return Err(ReleaseError::ValidityTooLong {
            cluster,
            expires,
            now,
            max_days: policy.max_validity.as_hours() / 24,
        });
    }
    check_files(&tree, &manifest, &cluster)?;
    Ok(VerifiedRelease {
        commit,
        tree,
        manifest,
        expires,
        digest,
        signers,
        ignored_signatures,
    })
}

/// Parses an RFC 3339 instant strictly: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` (`T` and `Z`
/// in either case, as RFC 3339 allows), a four-digit year from 1970 to 9999. No bracketed time zone
/// suffix (`[Europe/Paris]`, RFC 9557), no space for `T`, no other shapes a lenient parser accepts.
pub fn parse_rfc3339(text: &str) -> Result<jiff::Timestamp, String> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
    };
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return Err(
            "expected YYYY-MM-DDTHH:MM:SS followed by Z or an offset such as +02:00".into(),
        );
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return Err("a fraction of a second needs 1 to 9 digits".into());
        }
        rest = &fraction[n..];
    }
    let offset_ok = matches!(rest, b"Z" | b"z")
        || (rest.len() == 6
            && matches!(rest[0], b'+' | b'-')
            && rest[1..3].iter().all(u8::is_ascii_digit)
            && rest[3] == b':'
            && rest[4..6].iter().all(u8::is_ascii_digit));
    if !offset_ok {
        return Err(
            "the time must end in Z or an offset such as +02:00 (no time zone name or [suffix])"
                .into(),
        );
    }
    let year: u32 = text[..4].parse().map_err(|_| "bad year".to_owned())?;
    if !(1970..=9999).contains(&year) {
        return Err(format!("year {year} is out of range (1970 to 9999)"));
    }
    text.parse::<jiff::Timestamp>().map_err(|e| e.to_string())
}

fn verify_signatures(
    tree: &ClusterTree,
    manifest_bytes: &[u8],
    policy: &ReleasePolicy,
    now: jiff::Timestamp,
    limits: &Limits,
) -> Result<(Vec<Signer>, Vec<String>), ReleaseError> {
    let cluster = &policy.cluster;
    let mut signers: Vec<Signer> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut ignored = Vec::new();
    let mut count = 0usize;
    for (path, entry) in tree.entries.range(SIGNATURES_DIR.to_owned()..) {
        if !is_signature_path(path) {
            break;
        }
        let file_error = |message: &str| ReleaseError::SignatureFile {
            cluster: cluster.clone(),
            file: path.clone(),
            message: message.to_owned(),
        };
        let name = &path[SIGNATURES_DIR.len()..];
        if name.contains('/') || !name.ends_with(".sig") || name.len() <= ".sig".len() {
            return Err(file_error("only <name>.sig files belong in release.sigs/"));
        }
        let TreeEntry::File(armored) = entry else {
            return Err(file_error(
                "a signature must be a regular file (no symlinks or submodules)",
            ));
        };
        count += 1;
        if count > limits.max_release_signatures {
            return Err(file_error(&format!(
                "more than {} signature files",
                limits.max_release_signatures
            )));
        }
        match sshsig::verify(
            armored,
            manifest_bytes,
            SIGNATURE_NAMESPACE,
            &policy.signers,
            now,
        ) {
            Ok(signer) => {
                // The same key twice counts once: k-of-n means k distinct keys.
                if seen.insert(signer.fingerprint.clone()) {
                    signers.push(signer);
                }
            }
            Err(SignatureError::UnknownKey { .. }) => ignored.push(path.clone()),
            Err(source) => {
                return Err(ReleaseError::Signature {
                    cluster: cluster.clone(),
                    file: path.clone(),
                    source: Box::new(source),
                });
            }
        }
    }
    if signers.len() < policy.threshold.get() {
        let names: Vec<String> = signers
            .iter()
            .map(|s| format!("{} ({})", s.principal, s.fingerprint))
            .collect();
        return Err(ReleaseError::BelowThreshold {
            cluster: cluster.clone(),
            found: signers.len(),
            threshold: policy.threshold.get(),
            signers: if names.is_empty() {
                String::new()
            } else {
                format!(" [{}]", names.join(", "))
            },
        });
    }
    Ok((signers, ignored))
}

pub(crate) fn check_files(
    tree: &ClusterTree,
    manifest: &ReleaseManifest,
    cluster: &str,
) -> Result<(), ReleaseError> {
    let mut problems = Vec::new();
    for (path, entry) in &tree.entries {
        if path == MANIFEST_FILE || is_signature_path(path) {
            continue;
        }
        match (manifest.files.get(path), entry) {
            (None, _) => problems.push(format!("{path}: present but not listed in release.yaml")),
            (Some(_), TreeEntry::Symlink | TreeEntry::Submodule) => problems.push(format!(
                "{path}: listed but is a symlink or submodule, not a file"
            )),
            (Some(expected), TreeEntry::File(bytes)) => {
                let actual = sha256_digest(bytes);
                if &actual != expected {
                    problems.push(format!(
                        "{path}: content is {actual}, release.yaml lists {expected}"
                    ));
                }
            }
        }
    }
    for path in manifest.files.keys() {
        if !tree.entries.contains_key(path) {
            problems.push(format!("{path}: listed in release.yaml but absent"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ReleaseError::Files {
            cluster: cluster.to_owned(),
            problems,
        })
    }
}

/// Writes a manifest for `tree` (as read from a checkout): every file but the manifest and its
/// signatures, with its SHA-256.
pub fn build_manifest(
    tree: &ClusterTree,
    serial: u64,
    expires: jiff::Timestamp,
    parent: Option<String>,
) -> Result<ReleaseManifest, ReleaseError> {
    let mut files = BTreeMap::new();
    for (path, entry) in &tree.entries {
        if path == MANIFEST_FILE || is_signature_path(path) {
            continue;
        }
        match entry {
            TreeEntry::File(bytes) => {
                files.insert(path.clone(), sha256_digest(bytes));
            }
            TreeEntry::Symlink | TreeEntry::Submodule => {
                return Err(ReleaseError::Files {
                    cluster: tree.cluster.clone(),
                    problems: vec![format!(
                        "{path}: symlinks and submodules cannot be released"
                    )],
                });
            }
        }
    }
    Ok(ReleaseManifest {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        cluster: tree.cluster.clone(),
        serial,
        expires: expires.to_string(),
        parent,
        files,
    })
}

/// Renders a manifest as the canonical `release.yaml` text.
pub fn render_manifest(manifest: &ReleaseManifest) -> String {
    let mut out = String::new();
    out.push_str(&format!("apiVersion: {}\n", manifest.api_version));
    out.push_str(&format!("kind: {}\n", manifest.kind));
    out.push_str(&format!("cluster: {}\n", manifest.cluster));
    out.push_str(&format!("serial: {}\n", manifest.serial));
    out.push_str(&format!("expires: \"{}\"\n", manifest.expires));
    if let Some(parent) = &manifest.parent {
        out.push_str(&format!("parent: {parent}\n"));
    }
    // An empty cluster directory (every object removed) must still parse as a map.
    out.push_str(if manifest.files.is_empty() {
        "files: {}\n"
    } else {
        "files:\n"
    });
    for (path, digest) in &manifest.files {
        // Paths are validated layout paths (DNS-1123 names, '/', '.yaml'), but quote them anyway so
        // the output stays valid YAML whatever a checkout holds.
        out.push_str(&format!(
            "  {}: {digest}\n",
            serde_json::Value::String(path.clone())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::FetchedCommit;
    use crate::trust::commit_signature::{sign_commit, verify_commit};

    struct Keys {
        signers: AllowedSigners,
        a: ssh_key::PrivateKey,
        b: ssh_key::PrivateKey,
    }

    fn key() -> ssh_key::PrivateKey {
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .expect("key")
    }

    fn keys() -> Keys {
        let (a, b) = (key(), key());
        let line = |name: &str, k: &ssh_key::PrivateKey| {
            format!(
                "{name} namespaces=\"vworkspace-release\" {}\n",
                k.public_key().to_openssh().expect("pub")
            )
        };
        let signers = AllowedSigners::parse(&(line("a", &a) + &line("b", &b)), "release signers")
            .expect("signers");
        Keys { signers, a, b }
    }

    /// A VerifiedCommit for tests: a real signature over a synthetic commit object.
    fn commit() -> VerifiedCommit {
        let k = key();
        let raw = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@b> 1 +0000\ncommitter A <a@b> 1 +0000\n\nm\n";
        let signed = sign_commit(raw, &k).expect("sign");
        let fetched = FetchedCommit::from_raw(signed).expect("a commit object");
        let signers = AllowedSigners::parse(
            &format!("c {}\n", k.public_key().to_openssh().expect("pub")),
            "c",
        )
        .expect("signers");
        verify_commit(&fetched, &signers, jiff::Timestamp::now()).expect("verified")
    }

    fn now() -> jiff::Timestamp {
        "2026-06-01T00:00:00Z".parse().expect("ts")
    }

    const APP: &str = "namespaces/org-a/applicationinstances/app.yaml";

    /// A tree with one intent file, a manifest of `serial` for `cluster`, signed by `signers`.
    fn tree(cluster: &str, serial: u64, sign_with: &[(&str, &ssh_key::PrivateKey)]) -> ClusterTree {
        let mut entries = BTreeMap::new();
        entries.insert(APP.to_owned(), TreeEntry::File(b"app".to_vec()));
        let base = ClusterTree::from_entries("demo", entries.clone());
        let mut manifest = build_manifest(
            &base,
            serial,
            "2026-07-01T00:00:00Z".parse().expect("ts"),
            None,
        )
        .expect("manifest");
        manifest.cluster = cluster.to_owned();
        let text = render_manifest(&manifest);
        for (name, k) in sign_with {
            let sig = sshsig::sign(text.as_bytes(), SIGNATURE_NAMESPACE, k).expect("sign");
            entries.insert(
                format!("{SIGNATURES_DIR}{name}.sig"),
                TreeEntry::File(sig.into_bytes()),
            );
        }
        entries.insert(MANIFEST_FILE.to_owned(), TreeEntry::File(text.into_bytes()));
        ClusterTree::from_entries("demo", entries)
    }

    fn policy(keys: &Keys, threshold: usize, last: Option<AppliedRelease>) -> ReleasePolicy {
        let threshold =
            std::num::NonZeroUsize::new(threshold).expect("a test threshold is at least 1");
        ReleasePolicy {
            cluster: "demo".into(),
            signers: keys.signers.clone(),
            threshold,
            last_applied: last,
            max_validity: ReleasePolicy::validity_days(DEFAULT_MAX_VALIDITY_DAYS),
        }
    }

    fn check(t: ClusterTree, p: &ReleasePolicy) -> Result<VerifiedRelease, ReleaseError> {
        let commit = commit();
        let t = t.at_commit(commit.id());
        verify(commit, t, p, now(), &Limits::default())
    }

    #[test]
    fn only_the_verified_commits_own_tree_is_verified() {
        let k = keys();
        let p = policy(&k, 1, None);
        let t = tree("demo", 3, &[("a", &k.a)]);
        assert!(check(t.clone(), &p).is_ok());
        // Built in memory (a checkout): names no commit.
        assert!(matches!(
            verify(commit(), t.clone(), &p, now(), &Limits::default()),
            Err(ReleaseError::TreeNotFromCommit { .. })
        ));
        // Another commit's tree.
        let other = crate::repository::CommitId::parse(&"0".repeat(40)).expect("id");
        assert!(matches!(
            verify(
                commit(),
                t.clone().at_commit(&other),
                &p,
                now(),
                &Limits::default()
            ),
            Err(ReleaseError::TreeNotFromCommit { .. })
        ));
        // Changed after it was read: the stamp is gone.
        let c = commit();
        let mut changed = t.at_commit(c.id());
        assert_eq!(changed.commit(), Some(c.id()));
        changed.insert(
            "namespaces/x/applicationinstances/y.yaml",
            TreeEntry::File(Vec::new()),
        );
        assert_eq!(changed.commit(), None);
        assert!(matches!(
            verify(c, changed, &p, now(), &Limits::default()),
            Err(ReleaseError::TreeNotFromCommit { .. })
        ));
    }

    #[test]
    fn validity_beyond_the_cluster_maximum_is_refused() {
        let k = keys();
        // The fixture's release expires 2026-07-01, 30 days after now().
        let t = tree("demo", 3, &[("a", &k.a)]);
        let mut p = policy(&k, 1, None);
        assert!(check(t.clone(), &p).is_ok());
        p.max_validity = ReleasePolicy::validity_days(29);
        let err = check(t.clone(), &p).expect_err("30 days > 29");
        assert!(
            matches!(err, ReleaseError::ValidityTooLong { max_days: 29, .. }),
            "{err}"
        );
        assert!(
            err.to_string().starts_with(
                "clusters/demo/release.yaml: field expires 2026-07-01T00:00:00Z is more than 29 days"
            ),
            "{err}"
        );
        p.max_validity = ReleasePolicy::validity_days(30);
        assert!(check(t, &p).is_ok(), "exactly the maximum is allowed");
    }

    #[test]
    fn two_of_two_verifies_and_round_trips() {
        let k = keys();
        let t = tree("demo", 3, &[("a", &k.a), ("b", &k.b)]);
        let release = check(t.clone(), &policy(&k, 2, None)).expect("verified");
        assert_eq!(release.serial(), 3);
        assert_eq!(release.signers().len(), 2);
        let Some(TreeEntry::File(bytes)) = t.entries.get(MANIFEST_FILE).cloned() else {
            panic!("manifest")
        };
        let parsed = parse_manifest(&bytes, "demo", &Limits::default()).expect("parse");
        assert_eq!(render_manifest(&parsed).as_bytes(), &bytes[..]);
        // Re-verifying the very release last applied passes; another manifest with its serial does not.
        let applied = release.applied();
        assert!(check(t, &policy(&k, 2, Some(applied.clone()))).is_ok());
        let other = tree("demo", 3, &[("a", &k.a), ("b", &k.b)]);
        let mut other_entries = other.entries.clone();
        other_entries.insert(APP.to_owned(), TreeEntry::File(b"app".to_vec()));
        // Same serial, different digest (fresh signatures do not change the manifest; change expiry).
        let mut m = parse_manifest(&bytes, "demo", &Limits::default()).expect("parse");
        m.expires = "2026-07-02T00:00:00Z".into();
        let text = render_manifest(&m);
        other_entries.insert(
            MANIFEST_FILE.to_owned(),
            TreeEntry::File(text.clone().into_bytes()),
        );
        for (name, key) in [("a", &k.a), ("b", &k.b)] {
            let sig = sshsig::sign(text.as_bytes(), SIGNATURE_NAMESPACE, key).expect("sign");
            other_entries.insert(
                format!("{SIGNATURES_DIR}{name}.sig"),
                TreeEntry::File(sig.into_bytes()),
            );
        }
        assert!(matches!(
            check(
                ClusterTree::from_entries("demo", other_entries),
                &policy(&k, 2, Some(applied))
            ),
            Err(ReleaseError::Rollback {
                serial: 3,
                last: 3,
                ..
            })
        ));
    }

    #[test]
    fn refusals() {
        let k = keys();
        let p = policy(&k, 2, None);
        assert!(matches!(
            check(tree("prod", 1, &[("a", &k.a), ("b", &k.b)]), &p),
            Err(ReleaseError::WrongCluster { .. })
        ));
        assert!(matches!(
            check(
                tree("demo", 1, &[("a", &k.a), ("b", &k.b)]),
                &policy(
                    &k,
                    2,
                    Some(AppliedRelease {
                        serial: 2,
                        digest: None
                    })
                )
            ),
            Err(ReleaseError::Rollback {
                serial: 1,
                last: 2,
                ..
            })
        ));
        // The same key under two names counts once.
        assert!(matches!(
            check(tree("demo", 1, &[("a", &k.a), ("a-again", &k.a)]), &p),
            Err(ReleaseError::BelowThreshold {
                found: 1,
                threshold: 2,
                ..
            })
        ));
        // An unknown key's signature is ignored and reported, not counted.
        let stranger = key();
        let ok = check(
            tree("demo", 1, &[("a", &k.a), ("b", &k.b), ("x", &stranger)]),
            &p,
        )
        .expect("ok");
        assert_eq!(ok.ignored_signatures(), ["release.sigs/x.sig"]);
        assert!(matches!(
            check(tree("demo", 1, &[("a", &k.a), ("x", &stranger)]), &p),
            Err(ReleaseError::BelowThreshold { found: 1, .. })
        ));
        let expired_commit = commit();
        let expired = verify(
            expired_commit.clone(),
            tree("demo", 1, &[("a", &k.a), ("b", &k.b)]).at_commit(expired_commit.id()),
            &p,
            "2026-08-01T00:00:00Z".parse().expect("ts"),
            &Limits::default(),
        );
        assert!(matches!(expired, Err(ReleaseError::Expired { .. })));
        // A threshold of 0 cannot be written: ReleasePolicy::threshold is a NonZeroUsize.
        let mut no_manifest = tree("demo", 1, &[]);
        no_manifest.entries.remove(MANIFEST_FILE);
        assert!(matches!(
            check(no_manifest, &p),
            Err(ReleaseError::MissingManifest { .. })
        ));
    }

    #[test]
    fn file_set_must_match_exactly() {
        let k = keys();
        let p = policy(&k, 1, None);
        let base = tree("demo", 1, &[("a", &k.a)]);
        let mut added = base.clone();
        added.entries.insert(
            "namespaces/org-a/operations/x.yaml".into(),
            TreeEntry::File(b"x".to_vec()),
        );
        let mut changed = base.clone();
        changed
            .entries
            .insert(APP.into(), TreeEntry::File(b"app2".to_vec()));
        let mut removed = base.clone();
        removed.entries.remove(APP);
        let mut linked = base.clone();
        linked.entries.insert(APP.into(), TreeEntry::Symlink);
        for (t, expect) in [
            (added, "present but not listed"),
            (changed, "content is sha256:"),
            (removed, "listed in release.yaml but absent"),
            (linked, "symlink or submodule"),
        ] {
            match check(t, &p) {
                Err(ReleaseError::Files { problems, .. }) => {
                    assert_eq!(problems.len(), 1, "{problems:?}");
                    assert!(problems[0].contains(expect), "{problems:?}");
                }
                other => panic!("expected a file refusal, got {other:?}"),
            }
        }
        let mut stray = base;
        stray.entries.insert(
            "release.sigs/notes.txt".into(),
            TreeEntry::File(b"x".to_vec()),
        );
        assert!(matches!(
            check(stray, &p),
            Err(ReleaseError::SignatureFile { .. })
        ));
    }

    #[test]
    fn manifest_shape_is_strict() {
        let l = Limits::default();
        let good = "apiVersion: gitops.vworkspace.io/v1alpha1\nkind: Release\ncluster: demo\nserial: 1\nexpires: \"2026-07-01T00:00:00Z\"\nfiles: {}\n";
        assert!(parse_manifest(good.as_bytes(), "demo", &l).is_ok());
        for (bad, field) in [
            (good.replace("serial: 1", "serial: 0"), "serial"),
            (good.replace("serial: 1", "serial: 9007199254740992"), "serial 9007199254740992 is above"),
            (good.replace("serial: 1", "serial: 18446744073709551615"), "serial"),
            (good.replace("kind: Release", "kind: Other"), "kind"),
            (good.replace("files: {}", "files: {}\nextra: 1"), "extra"),
            (good.replace("files: {}", "files:\n  a.yaml: md5:abc"), "a.yaml"),
            (good.replace("files: {}", "files: {}\nparent: abc"), "parent"),
            (good.replace("files: {}", "files:\n  release.yaml: sha256:0000000000000000000000000000000000000000000000000000000000000000"), "release.yaml"),
        ] {
            let err = parse_manifest(bad.as_bytes(), "demo", &l).expect_err(field);
            assert!(err.to_string().contains(field), "{field}: {err}");
            assert!(err.to_string().starts_with("clusters/demo/release.yaml:"), "{err}");
        }
    }

    #[test]
    fn the_pinned_floor_refuses_lower_serials_only() {
        assert!(check_floor("demo", 4, None).is_ok());
        assert!(check_floor("demo", 5, Some(5)).is_ok());
        assert!(check_floor("demo", 6, Some(5)).is_ok());
        let refused = check_floor("demo", 4, Some(5)).expect_err("below the floor");
        assert!(matches!(
            refused,
            ReleaseError::BelowFloor {
                serial: 4,
                floor: 5,
                ..
            }
        ));
        assert_eq!(
            crate::Error::from(refused).reason(),
            crate::reasons::RELEASE_INVALID
        );
    }
}
