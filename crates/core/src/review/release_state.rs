//! Where a release stands while it is being reviewed: who signed, who must still sign, its serial and
//! expiry, and every problem, collected instead of stopping at the first (a pull request is often
//! half-signed on purpose: the second key holder signs after reading the review).
//!
//! [`crate::trust::release::verify`] remains the only way to a verified release; this is a report.

use std::collections::BTreeSet;

use ssh_key::HashAlg;

use crate::limits::Limits;
use crate::repository::{ClusterTree, TreeEntry};
use crate::trust::release::{
    self, MANIFEST_FILE, ReleaseError, ReleaseManifest, ReleasePolicy, SIGNATURE_NAMESPACE,
    SIGNATURES_DIR,
};
use crate::trust::sshsig::{self, SignatureError, Signer};

/// Whether a problem refuses the head outright or only blocks merging until someone acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// No signature can fix it: the author must change the release (malformed, another cluster's,
    /// a rollback, a signature file that is not one).
    Refused,
    /// Merging waits: signatures to collect, a stale or expired release to write afresh.
    Blocking,
}

/// The release of one commit, as far as it can be judged.
#[derive(Debug)]
pub struct ReleaseState {
    /// The manifest, when it parses.
    pub manifest: Option<ReleaseManifest>,
    /// SHA-256 of `release.yaml`, when present.
    pub digest: Option<String>,
    /// The manifest's expiry, when it parses.
    pub expires: Option<jiff::Timestamp>,
    /// The distinct trusted keys whose signature verifies, in signature-file order.
    pub signed_by: Vec<Signer>,
    /// The first principal of every trusted release key that has not signed, in file order.
    pub missing: Vec<String>,
    /// How many distinct keys must sign.
    pub threshold: usize,
    /// Signature files by keys the policy does not trust.
    pub ignored: Vec<String>,
    /// Every problem found, with its severity.
    pub problems: Vec<(Severity, ReleaseError)>,
}

impl ReleaseState {
    /// Whether a problem refuses the release outright.
    pub fn refused(&self) -> bool {
        self.problems.iter().any(|(s, _)| *s == Severity::Refused)
    }
    /// Whether the release would pass as it is.
    pub fn complete(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Judges the release in `tree` against `policy` at `now`, collecting every problem. The tree's
/// commit is not checked here (the commit's own signature is reported apart).
pub fn inspect(
    tree: &ClusterTree,
    policy: &ReleasePolicy,
    now: jiff::Timestamp,
    limits: &Limits,
) -> ReleaseState {
    let cluster = policy.cluster.clone();
    let mut state = ReleaseState {
        manifest: None,
        digest: None,
        expires: None,
        signed_by: Vec::new(),
        missing: Vec::new(),
        threshold: policy.threshold.get(),
        ignored: Vec::new(),
        problems: Vec::new(),
    };
    let Some(TreeEntry::File(bytes)) = tree.entries.get(MANIFEST_FILE) else {
        state.problems.push((
            Severity::Blocking,
            ReleaseError::MissingManifest { cluster },
        ));
        return state;
    };
    state.digest = Some(release::sha256_digest(bytes));
    let manifest = match release::parse_manifest(bytes, &cluster, limits) {
        Ok(m) => m,
        Err(e) => {
            state.problems.push((Severity::Refused, e));
            return state;
        }
    };
    if manifest.cluster != cluster {
        state.problems.push((
            Severity::Refused,
            ReleaseError::WrongCluster {
                cluster: cluster.clone(),
                found: manifest.cluster.clone(),
            },
        ));
    }
    match release::parse_rfc3339(&manifest.expires) {
        Ok(expires) => state.expires = Some(expires),
        Err(e) => state.problems.push((
            Severity::Refused,
            ReleaseError::Malformed {
                cluster: cluster.clone(),
                message: format!(
                    "field expires: {:?} is not an RFC 3339 instant: {e}",
                    manifest.expires
                ),
            },
        )),
    }
    signatures(tree, bytes, policy, now, limits, &mut state);
    rollback_and_expiry(&manifest, policy, now, &mut state);
    if let Err(e) = release::check_files(tree, &manifest, &cluster) {
        state.problems.push((Severity::Blocking, e));
    }
    state.manifest = Some(manifest);
    state
}

fn signatures(
    tree: &ClusterTree,
    manifest: &[u8],
    policy: &ReleasePolicy,
    now: jiff::Timestamp,
    limits: &Limits,
    state: &mut ReleaseState,
) {
    let cluster = &policy.cluster;
    let mut seen = BTreeSet::new();
    let mut count = 0usize;
    for (path, entry) in tree.entries.range(SIGNATURES_DIR.to_owned()..) {
        if !path.starts_with(SIGNATURES_DIR) {
            break;
        }
        let file_problem = |message: String| ReleaseError::SignatureFile {
            cluster: cluster.clone(),
            file: path.clone(),
            message,
        };
        let name = &path[SIGNATURES_DIR.len()..];
        let TreeEntry::File(armored) = entry else {
            state.problems.push((
                Severity::Refused,
                file_problem("a signature must be a regular file".into()),
            ));
            continue;
        };
        if name.contains('/') || !name.ends_with(".sig") || name.len() <= ".sig".len() {
            state.problems.push((
                Severity::Refused,
                file_problem("only <name>.sig files belong in release.sigs/".into()),
            ));
            continue;
        }
        count += 1;
        if count > limits.max_release_signatures {
            state.problems.push((
                Severity::Refused,
                file_problem(format!(
                    "more than {} signature files",
                    limits.max_release_signatures
                )),
            ));
            break;
        }
        match sshsig::verify(armored, manifest, SIGNATURE_NAMESPACE, &policy.signers, now) {
            Ok(signer) => {
                if seen.insert(signer.fingerprint.clone()) {
                    state.signed_by.push(signer);
                }
            }
            Err(SignatureError::UnknownKey { .. }) => state.ignored.push(path.clone()),
            // A signature over an older release.yaml: the signer signs again.
            Err(source) => state.problems.push((
                Severity::Blocking,
                ReleaseError::Signature {
                    cluster: cluster.clone(),
                    file: path.clone(),
                    source: Box::new(source),
                },
            )),
        }
    }
    missing_signers(policy, &seen, state);
    below_threshold(cluster, state);
}

/// Every trusted release signer who has not signed yet (by first principal, once per key).
fn missing_signers(policy: &ReleasePolicy, seen: &BTreeSet<String>, state: &mut ReleaseState) {
    let mut named = BTreeSet::new();
    for entry in policy.signers.entries() {
        if !entry.allows_namespace(SIGNATURE_NAMESPACE) {
            continue;
        }
        let fingerprint = entry.key.fingerprint(HashAlg::Sha256).to_string();
        let principal = entry.principals.first().cloned().unwrap_or_default();
        if !seen.contains(&fingerprint) && named.insert(fingerprint) {
            state.missing.push(principal);
        }
    }
}

/// Blocks the review while fewer distinct trusted keys than the threshold have signed.
fn below_threshold(cluster: &str, state: &mut ReleaseState) {
    if state.signed_by.len() < state.threshold {
        let names: Vec<String> = state
            .signed_by
            .iter()
            .map(|s| format!("{} ({})", s.principal, s.fingerprint))
            .collect();
        state.problems.push((
            Severity::Blocking,
            ReleaseError::BelowThreshold {
                cluster: cluster.to_owned(),
                found: state.signed_by.len(),
                threshold: state.threshold,
                signers: if names.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", names.join(", "))
                },
            },
        ));
    }
}

fn rollback_and_expiry(
    manifest: &ReleaseManifest,
    policy: &ReleasePolicy,
    now: jiff::Timestamp,
    state: &mut ReleaseState,
) {
    let cluster = policy.cluster.clone();
    if let Some(last) = &policy.last_applied {
        let same_release = last.digest.is_some() && last.digest == state.digest;
        if !same_release && manifest.serial <= last.serial {
            state.problems.push((
                Severity::Refused,
                ReleaseError::Rollback {
                    cluster: cluster.clone(),
                    serial: manifest.serial,
                    last: last.serial,
                },
            ));
        }
    }
    let Some(expires) = state.expires else {
        return;
    };
    if expires <= now {
        state.problems.push((
            Severity::Blocking,
            ReleaseError::Expired {
                cluster,
                expires,
                now,
            },
        ));
    } else if expires.duration_since(now) > policy.max_validity {
        state.problems.push((
            Severity::Blocking,
            ReleaseError::ValidityTooLong {
                cluster,
                expires,
                now,
                max_days: policy.max_validity.as_hours() / 24,
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::signers::AllowedSigners;
    use std::collections::BTreeMap;

    fn key(seed: u8) -> ssh_key::PrivateKey {
        let keypair = ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]);
        ssh_key::PrivateKey::from(keypair)
    }

    fn policy(keys: &[(&str, &ssh_key::PrivateKey)], threshold: usize) -> ReleasePolicy {
        let text: String = keys
            .iter()
            .map(|(name, k)| {
                format!(
                    "{name} namespaces=\"vworkspace-release\" {}\n",
                    k.public_key().to_openssh().expect("openssh")
                )
            })
            .collect();
        ReleasePolicy {
            cluster: "demo".into(),
            signers: AllowedSigners::parse(&text, "signers").expect("signers"),
            threshold: std::num::NonZeroUsize::new(threshold).expect("nonzero"),
            last_applied: None,
            max_validity: ReleasePolicy::validity_days(90),
        }
    }

    fn now() -> jiff::Timestamp {
        "2026-12-01T00:00:00Z".parse().expect("time")
    }

    fn tree(signers: &[&ssh_key::PrivateKey], extra_file: bool) -> ClusterTree {
        let file = b"apiVersion: x\n".to_vec();
        let mut entries = BTreeMap::new();
        entries.insert(
            "namespaces/a/applicationinstances/x.yaml".to_owned(),
            TreeEntry::File(file.clone()),
        );
        let mut files = BTreeMap::new();
        files.insert(
            "namespaces/a/applicationinstances/x.yaml".to_owned(),
            release::sha256_digest(&file),
        );
        let manifest = ReleaseManifest {
            api_version: release::API_VERSION.into(),
            kind: release::KIND.into(),
            cluster: "demo".into(),
            serial: 3,
            expires: "2026-12-20T00:00:00Z".into(),
            parent: None,
            files,
        };
        let bytes = serde_saphyr::to_string(&manifest)
            .expect("yaml")
            .into_bytes();
        for (i, k) in signers.iter().enumerate() {
            let sig = sshsig::sign(&bytes, SIGNATURE_NAMESPACE, k).expect("sign");
            entries.insert(
                format!("{SIGNATURES_DIR}{i}.sig"),
                TreeEntry::File(sig.into_bytes()),
            );
        }
        entries.insert(MANIFEST_FILE.to_owned(), TreeEntry::File(bytes));
        if extra_file {
            entries.insert(
                "namespaces/a/operations/y.yaml".to_owned(),
                TreeEntry::File(b"kind: x\n".to_vec()),
            );
        }
        ClusterTree::from_entries("demo", entries)
    }

    #[test]
    fn half_signed_names_who_must_still_sign() {
        let (odoo, alice) = (key(1), key(2));
        let policy = policy(&[("odoo-release", &odoo), ("alice", &alice)], 2);
        let state = inspect(&tree(&[&odoo], false), &policy, now(), &Limits::default());
        assert_eq!(state.signed_by.len(), 1);
        assert_eq!(state.signed_by[0].principal, "odoo-release");
        assert_eq!(state.missing, vec!["alice".to_owned()]);
        assert!(!state.refused());
        assert!(matches!(
            state.problems.as_slice(),
            [(
                Severity::Blocking,
                ReleaseError::BelowThreshold {
                    found: 1,
                    threshold: 2,
                    ..
                }
            )]
        ));
    }

    #[test]
    fn complete_release_has_no_problem() {
        let (odoo, alice) = (key(1), key(2));
        let policy = policy(&[("odoo-release", &odoo), ("alice", &alice)], 2);
        let state = inspect(
            &tree(&[&odoo, &alice], false),
            &policy,
            now(),
            &Limits::default(),
        );
        assert!(state.complete(), "{:?}", state.problems);
        assert!(state.missing.is_empty());
        assert_eq!(state.manifest.as_ref().map(|m| m.serial), Some(3));
    }

    #[test]
    fn stale_blocks_and_rollback_refuses() {
        let odoo = key(1);
        let mut policy = policy(&[("odoo-release", &odoo)], 1);
        policy.last_applied = Some(release::AppliedRelease {
            serial: 3,
            digest: Some("sha256:other".into()),
        });
        let state = inspect(&tree(&[&odoo], true), &policy, now(), &Limits::default());
        assert!(state.refused());
        assert!(
            state
                .problems
                .iter()
                .any(|(s, e)| *s == Severity::Blocking && matches!(e, ReleaseError::Files { .. }))
        );
        assert!(state.problems.iter().any(|(s, e)| *s == Severity::Refused
            && matches!(
                e,
                ReleaseError::Rollback {
                    serial: 3,
                    last: 3,
                    ..
                }
            )));
    }
}
