//! Judging a change: the base under its own trust inputs, the head by every check that needs no
//! key and by where its signatures stand, and what it changes, cluster by cluster.

use vworkspace_core::intent::Intent;
use vworkspace_core::limits::Limits;
use vworkspace_core::pipeline::{self, TrustConfig};
use vworkspace_core::repository::{ClusterTree, FetchedCommit, LocalRepository, TreeEntry};
use vworkspace_core::review::intent_diff::{self, ValueChangeKind};
use vworkspace_core::review::release_state::{self, ReleaseState};
use vworkspace_core::secrets::Identities;
use vworkspace_core::trust::release::{AppliedRelease, MANIFEST_FILE};

use super::locate;
use super::model::{BaseVerdict, ClusterReview, CommitState, Finding, Level};

/// The two commits under review and how to judge them.
pub struct Judge<'a> {
    /// The repository.
    pub repo: &'a LocalRepository,
    /// The base commit.
    pub base: &'a FetchedCommit,
    /// The head commit.
    pub head: &'a FetchedCommit,
    /// Builds the trust configuration for a cluster id (the base's trust inputs).
    pub config: &'a dyn Fn(&str) -> TrustConfig,
    /// The cluster's identities, to show each changed value's binding (`--identity`).
    pub identities: Option<&'a Identities>,
}

/// The head commit's own signature, judged with the base's commit signers.
pub fn commit_state(head: &FetchedCommit, config: &TrustConfig) -> CommitState {
    use vworkspace_core::trust::commit_signature::{CommitSignatureError, verify_commit};
    match verify_commit(head, &config.commit_signers, config.now) {
        Ok(verified) => CommitState::Signed {
            principal: verified.signer().principal.clone(),
            fingerprint: verified.signer().fingerprint.clone(),
        },
        Err(CommitSignatureError::Unsigned { .. }) => CommitState::Unsigned,
        Err(e) => CommitState::NotTrusted(e.to_string()),
    }
}

/// The base's release as the floor the head must exceed: its serial and digest.
fn applied(tree: Option<&ClusterTree>, cluster: &str) -> Option<AppliedRelease> {
    let Some(TreeEntry::File(bytes)) = tree?.entries().get(MANIFEST_FILE) else {
        return None;
    };
    let manifest =
        vworkspace_core::trust::release::parse_manifest(bytes, cluster, &Limits::default()).ok()?;
    Some(AppliedRelease {
        serial: manifest.serial,
        digest: Some(vworkspace_core::trust::release::sha256_digest(bytes)),
    })
}

impl Judge<'_> {
    fn read(
        &self,
        commit: &FetchedCommit,
        cluster: &str,
        limits: &Limits,
    ) -> Result<Option<ClusterTree>, String> {
        vworkspace_core::review::read_tree_for_review(self.repo, commit, cluster, limits)
            .map_err(|e| e.to_string())
    }

    fn base_verdict(&self, tree: Option<&ClusterTree>, config: &TrustConfig) -> BaseVerdict {
        if tree.is_none() {
            return BaseVerdict::Absent;
        }
        match pipeline::verify_commit_id(self.repo, self.base.id().as_str(), config) {
            Ok(verified) => BaseVerdict::Verified {
                serial: verified.release().serial(),
            },
            Err(e) => BaseVerdict::Refused {
                reason: e.reason(),
                findings: e.findings(),
            },
        }
    }

    /// One cluster: its review and its findings.
    pub fn cluster(&self, cluster: &str) -> (ClusterReview, Vec<Finding>) {
        let config = (self.config)(cluster);
        let limits = config.limits.clone();
        let mut findings = Vec::new();
        let base_tree = self.read(self.base, cluster, &limits).unwrap_or(None);
        let base_intent = base_tree
            .as_ref()
            .and_then(|t| pipeline::check_unsigned(t, &limits).ok())
            .map(|c| c.intent)
            .unwrap_or_default();
        let floor = applied(base_tree.as_ref(), cluster);
        let mut review = ClusterReview {
            cluster: cluster.to_owned(),
            base: self.base_verdict(base_tree.as_ref(), &config),
            base_serial: floor.as_ref().map(|f| f.serial),
            release: None,
            checks_passed: false,
            diff: Default::default(),
            bindings: Vec::new(),
        };
        let head_tree = match self.read(self.head, cluster, &limits) {
            Ok(tree) => tree,
            Err(e) => {
                findings.push(locate::from_refusal_line(
                    Level::Refused,
                    vworkspace_core::reasons::TREE_INVALID,
                    &e,
                    cluster,
                    None,
                ));
                return (review, findings);
            }
        };
        let Some(head_tree) = head_tree else {
            if base_tree.is_some() {
                findings.push(cluster_removed(cluster));
            }
            return (review, findings);
        };
        let mut policy = config.release.clone();
        policy.last_applied = floor;
        let release = release_state::inspect(&head_tree, &policy, config.now, &limits);
        findings.extend(release_findings(&release, cluster, &head_tree));
        review.release = Some(release);
        self.judge_intent(
            &mut review,
            &base_intent,
            &head_tree,
            &limits,
            &mut findings,
        );
        (review, findings)
    }

    /// The head's key-free checks and, when they pass, what it changes against the base.
    fn judge_intent(
        &self,
        review: &mut ClusterReview,
        base: &Intent,
        head: &ClusterTree,
        limits: &Limits,
        findings: &mut Vec<Finding>,
    ) {
        let cluster = review.cluster.clone();
        match pipeline::check_unsigned(head, limits) {
            Ok(check) => {
                review.checks_passed = true;
                review.diff = intent_diff::compare(base, &check.intent);
                findings.extend(value_findings(&review.diff, &cluster, head));
                if let Some(identities) = self.identities {
                    review.bindings = bindings(&review.diff, &check.intent, identities, limits);
                }
            }
            Err(e) => {
                for line in e.findings() {
                    findings.push(locate::from_refusal_line(
                        Level::Refused,
                        e.reason(),
                        &line,
                        &cluster,
                        Some(head),
                    ));
                }
            }
        }
    }
}

fn cluster_removed(cluster: &str) -> Finding {
    Finding {
        level: Level::Refused,
        title: "Cluster removed".to_owned(),
        file: format!("clusters/{cluster}"),
        line: None,
        message: format!(
            "the head has no directory clusters/{cluster}/: the operator of cluster {cluster} refuses such a commit and prunes nothing; to empty a cluster, remove its namespaces and keep a signed release"
        ),
    }
}

/// "release signatures 1 of 2 (odoo-release); waiting for alice".
pub fn signature_summary(release: &ReleaseState) -> String {
    let signed: Vec<&str> = release
        .signed_by
        .iter()
        .map(|s| s.principal.as_str())
        .collect();
    let mut text = format!(
        "release signatures {} of {}",
        signed.len(),
        release.threshold
    );
    if !signed.is_empty() {
        text.push_str(&format!(" ({})", signed.join(", ")));
    }
    if signed.len() < release.threshold && !release.missing.is_empty() {
        text.push_str(&format!("; waiting for {}", release.missing.join(" or ")));
    }
    text
}

fn release_findings(release: &ReleaseState, cluster: &str, tree: &ClusterTree) -> Vec<Finding> {
    let waiting = format!(
        "clusters/{cluster}/release.yaml: {}; each key holder runs `vworkspace-operator release --cluster {cluster} --key <their key> --sign-only`",
        signature_summary(release)
    );
    release
        .problems
        .iter()
        .flat_map(|(severity, problem)| {
            locate::from_release_problem(*severity, problem, cluster, Some(tree), &waiting)
        })
        .collect()
}

fn value_findings(
    diff: &intent_diff::IntentDiff,
    cluster: &str,
    tree: &ClusterTree,
) -> Vec<Finding> {
    diff.values
        .iter()
        .filter(|v| v.kind != ValueChangeKind::Removed)
        .filter_map(|v| {
            let from = v.copied_from.as_ref()?;
            let field = format!("spec.values.{}", v.at.path);
            Some(Finding {
                level: Level::Warning,
                title: "Copied value".to_owned(),
                file: format!("clusters/{cluster}/{}", v.source_path),
                line: locate::field_line(Some(tree), &v.source_path, &field),
                message: format!(
                    "{field}: the same ciphertext as {from}: a bound value is refused here, an unbound one hands over the other place's secret; encrypt this value for this place"
                ),
            })
        })
        .collect()
}

/// Each added or rotated value's binding, read with the cluster's key; the plaintext is dropped
/// (zeroized) at once and never shown.
fn bindings(
    diff: &intent_diff::IntentDiff,
    intent: &Intent,
    identities: &Identities,
    limits: &Limits,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for change in diff
        .values
        .iter()
        .filter(|v| v.kind != ValueChangeKind::Removed)
    {
        let armored = intent
            .application_instances
            .iter()
            .find(|i| i.namespace == change.at.namespace && i.name == change.at.instance)
            .and_then(|i| i.resource.get().ok()?.spec.values)
            .and_then(|values| {
                let mut found = None;
                vworkspace_core::secrets::for_each_armored(&values, &mut |path, armored| {
                    if path == change.at.path {
                        found = Some(armored.to_owned());
                    }
                });
                found
            });
        let Some(armored) = armored else { continue };
        let binding = match vworkspace_core::secrets::decrypt(&armored, identities, limits) {
            Ok((Some(b), _)) => format!(
                "bound to {}/{}/{} spec.values.{}",
                b.cluster, b.namespace, b.instance, b.path
            ),
            Ok((None, _)) => "unbound (plain age)".to_owned(),
            Err(e) => format!("does not decrypt: {e}"),
        };
        out.push((change.at.to_string(), binding));
    }
    out
}
