//! One pass of the offline pipeline, as an ordered list of steps:
//!
//! ```text
//! resolve + read commit -> verify commit signature -> read cluster tree -> verify release
//!   -> parse + validate intent -> check every age value decrypts
//! ```
//!
//! Each step either hands a stronger value to the next or stops the pass with a [`PassError`] that
//! names the step (its [`reason`]) and every finding. Nothing here writes anywhere: a pass that fails
//! before [`crate::plan`] leaves the cluster exactly as it was.

use crate::error::{Error, ValueErrors};
use crate::intent::Intent;
use crate::limits::Limits;
use crate::repository::{GitRef, LocalRepository};
use crate::secrets::ValueError;
use crate::secrets::{self, Identities};
use crate::trust::commit_signature::{self, VerifiedCommit};
use crate::trust::history::HistoryCheck;
use crate::trust::release::{self, AppliedRelease, ReleasePolicy, VerifiedRelease};
use crate::trust::signers::AllowedSigners;

/// Everything the cluster side supplies to judge a commit. None of it comes from the repository.
#[derive(Debug, Clone)]
pub struct TrustConfig {
    /// This cluster's id (`clusters/<id>/`).
    pub cluster: String,
    /// Trusted commit signers (`allowed_signers`).
    pub commit_signers: AllowedSigners,
    /// Trusted release keys, threshold and the last applied release.
    pub release: ReleasePolicy,
    /// The cluster's age identities; without them values are checked for form only.
    pub identities: Option<Identities>,
    /// Refuse values that are not bound to where they are found.
    pub require_bound_values: bool,
    /// Refuse an ApplicationInstance whose chart is not pinned by an OCI digest (the owner's
    /// `spec.policy.requireChartDigests`; intent can never relax it).
    pub require_chart_digests: bool,
    /// The last applied commit and the history policy.
    pub history: HistoryCheck,
    /// The verifier's clock (injected so tests and `--now` can move it).
    pub now: jiff::Timestamp,
    /// Bounds on what the repository can make the pass do.
    pub limits: Limits,
    /// The verdict a pass recorded on values that all decrypted and were bound where they are
    /// ([`crate::secrets::verdict::values_digest`]): values that give the same digest are not
    /// decrypted again. Trust it only from where no one but the verifier writes.
    pub values_verified: Option<String>,
}

/// A pass that stopped: the commit it was judging and why. Its [`reason`](PassError::reason) is the
/// step's bounded reason; its [`findings`](PassError::findings) are one refusal a line, never a
/// plaintext value.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", .error.reason())]
pub struct PassError {
    /// The commit the pass was judging, when it got that far.
    pub commit: Option<String>,
    /// Why it stopped.
    pub error: Box<Error>,
}

impl PassError {
    fn at(commit: &str) -> impl Fn(Error) -> PassError + '_ {
        move |error| PassError {
            commit: Some(commit.to_owned()),
            error: Box::new(error),
        }
    }

    /// The step's reason (see [`reason`]).
    pub fn reason(&self) -> &'static str {
        self.error.reason()
    }

    /// One refusal a line.
    pub fn findings(&self) -> Vec<String> {
        self.error.findings()
    }
}

/// Intent that passed every step: read from a verified release, validated, values checked.
/// Only [`verify_commit_id`] builds one; the planner accepts nothing else.
#[derive(Debug)]
pub struct VerifiedIntent {
    release: VerifiedRelease,
    intent: Intent,
    notes: Vec<String>,
    values: ValuesChecked,
}

/// What the values step concluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ValuesChecked {
    /// How many values there are.
    count: usize,
    /// The digest to record, when every value decrypted and was bound where it is.
    verdict: Option<String>,
    /// Whether the recorded verdict was reused instead of decrypting.
    reused: bool,
}

impl VerifiedIntent {
    /// The verified release the intent was read from.
    pub fn release(&self) -> &VerifiedRelease {
        &self.release
    }
    /// The validated objects.
    pub fn intent(&self) -> &Intent {
        &self.intent
    }
    /// The verified commit.
    pub fn commit(&self) -> &VerifiedCommit {
        self.release.commit()
    }
    /// Things a reviewer should know that do not refuse the pass (unbound values, ignored signatures).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
    /// How many encrypted values were checked (decrypted, or covered by a recorded verdict).
    pub fn values_checked(&self) -> usize {
        self.values.count
    }
    /// The verdict to record when every value decrypted and was bound where it is found
    /// ([`TrustConfig::values_verified`]); `None` when values were only checked for form or some
    /// are unbound (their notes must be produced again).
    pub fn values_verdict(&self) -> Option<&str> {
        self.values.verdict.as_deref()
    }
    /// Whether the values were covered by the recorded verdict instead of decrypted.
    pub fn values_reused(&self) -> bool {
        self.values.reused
    }

    /// Until when this verdict holds without re-verification: the release's expiry and the end of
    /// every signing key's validity window, whichever comes first.
    pub fn valid_until(&self) -> jiff::Timestamp {
        std::iter::once(self.release.expires())
            .chain(self.commit().signer().valid_before)
            .chain(self.release.signers().iter().filter_map(|s| s.valid_before))
            .min()
            .unwrap_or(self.release.expires())
    }
}

/// The last successful pass of one source, so that a pass on an unchanged commit under unchanged
/// trust inputs does no work: the verdict is reused until [`VerifiedIntent::valid_until`].
#[derive(Debug, Default)]
pub struct PassMemo {
    last: Option<(String, TrustConfig, std::sync::Arc<VerifiedIntent>)>,
}

impl PassMemo {
    /// Runs the pass on `reference`, or returns the remembered verdict when the ref still resolves to
    /// the same commit, the trust inputs are the same, and the verdict has not run out.
    pub fn verify_ref(
        &mut self,
        repo: &LocalRepository,
        reference: &GitRef,
        config: &TrustConfig,
    ) -> Result<std::sync::Arc<VerifiedIntent>, PassError> {
        let id = repo.resolve(reference).map_err(|e| PassError {
            commit: None,
            error: Box::new(Error::Fetch(e)),
        })?;
        if let Some((commit, remembered, verdict)) = &self.last
            && *commit == id
            && remembered.same_inputs(config)
            && config.now < verdict.valid_until()
        {
            return Ok(verdict.clone());
        }
        self.last = None;
        let verdict = std::sync::Arc::new(verify_commit_id(repo, &id, config)?);
        self.last = Some((id, config.clone(), verdict.clone()));
        Ok(verdict)
    }
}

impl TrustConfig {
    /// Starts the one way to build a configuration, shared by the command line and the reconciler:
    /// the cluster id, its trusted commit and release keys and the release threshold are required;
    /// everything else has the documented default (no last applied release or commit, `history:
    /// head`, values checked for form only, bound values required, a release valid for at most
    /// [`crate::trust::release::DEFAULT_MAX_VALIDITY_DAYS`] days, the default limits, the clock now).
    pub fn builder(
        cluster: impl Into<String>,
        commit_signers: AllowedSigners,
        release_signers: AllowedSigners,
        threshold: std::num::NonZeroUsize,
    ) -> TrustConfigBuilder {
        let cluster = cluster.into();
        TrustConfigBuilder {
            config: TrustConfig {
                cluster: cluster.clone(),
                commit_signers,
                release: ReleasePolicy {
                    cluster,
                    signers: release_signers,
                    threshold,
                    last_applied: None,
                    max_validity: ReleasePolicy::validity_days(
                        crate::trust::release::DEFAULT_MAX_VALIDITY_DAYS,
                    ),
                },
                identities: None,
                require_bound_values: true,
                require_chart_digests: false,
                history: HistoryCheck::default(),
                now: jiff::Timestamp::now(),
                limits: Limits::default(),
                values_verified: None,
            },
        }
    }

    /// Whether two configurations judge alike (the clock aside).
    fn same_inputs(&self, other: &TrustConfig) -> bool {
        self.cluster == other.cluster
            && self.commit_signers == other.commit_signers
            && self.release.cluster == other.release.cluster
            && self.release.signers == other.release.signers
            && self.release.threshold == other.release.threshold
            && self.release.last_applied == other.release.last_applied
            && self.release.max_validity == other.release.max_validity
            && self.require_bound_values == other.require_bound_values
            && self.require_chart_digests == other.require_chart_digests
            && self.history == other.history
            && self.limits == other.limits
            && match (&self.identities, &other.identities) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same_keys(b),
                _ => false,
            }
    }
}

/// Builds a [`TrustConfig`]; see [`TrustConfig::builder`] for the defaults.
#[derive(Debug, Clone)]
#[must_use]
pub struct TrustConfigBuilder {
    config: TrustConfig,
}

impl TrustConfigBuilder {
    /// The release last applied to this cluster (the rollback floor).
    pub fn last_applied(mut self, release: Option<AppliedRelease>) -> Self {
        self.config.release.last_applied = release;
        self
    }
    /// The last applied commit, the history policy and whether a rewrite is accepted.
    pub fn history(
        mut self,
        last_commit: Option<String>,
        policy: crate::crd::HistoryPolicy,
        allow_rewrite: bool,
    ) -> Self {
        self.config.history = HistoryCheck {
            last_commit,
            policy,
            allow_rewrite,
        };
        self
    }
    /// The cluster's age identities (without them values are checked for form only).
    pub fn identities(mut self, identities: Option<Identities>) -> Self {
        self.config.identities = identities;
        self
    }
    /// Whether unbound encrypted values are refused.
    pub fn require_bound_values(mut self, require: bool) -> Self {
        self.config.require_bound_values = require;
        self
    }
    /// Whether every ApplicationInstance must pin its chart by an OCI digest.
    pub fn require_chart_digests(mut self, require: bool) -> Self {
        self.config.require_chart_digests = require;
        self
    }
    /// The longest a release may be valid, in days from the verifier's clock.
    pub fn max_validity_days(mut self, days: u32) -> Self {
        self.config.release.max_validity = ReleasePolicy::validity_days(days);
        self
    }
    /// The verifier's clock.
    pub fn now(mut self, now: jiff::Timestamp) -> Self {
        self.config.now = now;
        self
    }
    /// Bounds on what the repository can make the pass do.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }
    /// The verdict a pass recorded on the values ([`TrustConfig::values_verified`]).
    pub fn values_verified(mut self, verdict: Option<String>) -> Self {
        self.config.values_verified = verdict;
        self
    }
    /// The configuration.
    pub fn build(self) -> TrustConfig {
        self.config
    }
}

/// Runs the pass on `reference` of a local repository.
pub fn verify_ref(
    repo: &LocalRepository,
    reference: &GitRef,
    config: &TrustConfig,
) -> Result<VerifiedIntent, PassError> {
    let id = repo.resolve(reference).map_err(|e| PassError {
        commit: None,
        error: Box::new(Error::Fetch(e)),
    })?;
    verify_commit_id(repo, &id, config)
}

/// Runs the pass on the commit `id` of a local repository.
pub fn verify_commit_id(
    repo: &LocalRepository,
    id: &str,
    config: &TrustConfig,
) -> Result<VerifiedIntent, PassError> {
    read_intent(verify_release_of(repo, id, config)?, config)
}

/// The steps of the pass up to the release: the commit `id` read, its signature and history
/// checked, the cluster's tree read and the release verified (its signatures and every file's
/// digest). Nothing is parsed yet: [`read_intent`] goes on from here. A caller that already knows
/// what this commit's intent did (the settled record, [`crate::plan::settled`]) may stop here.
pub fn verify_release_of(
    repo: &LocalRepository,
    id: &str,
    config: &TrustConfig,
) -> Result<VerifiedRelease, PassError> {
    let fail = PassError::at(id);
    let fetched = repo.read_commit(id).map_err(|e| fail(Error::Fetch(e)))?;
    // The applied commit's key window is checked at the verifier's clock, not the commit's own date,
    // which the holder of an expired or stolen key could backdate.
    let commit = commit_signature::verify_commit(&fetched, &config.commit_signers, config.now)
        .map_err(|e| fail(e.into()))?;
    crate::trust::history::check(
        repo,
        commit.id(),
        &config.history,
        &config.commit_signers,
        config.now,
    )
    .map_err(|e| fail(e.into()))?;
    let tree = commit
        .read_cluster_tree(repo, &config.cluster, &config.limits)
        .map_err(|e| fail(Error::Tree(e)))?;
    release::verify(commit, tree, &config.release, config.now, &config.limits)
        .map_err(|e| fail(e.into()))
}

/// The rest of the pass after [`verify_release_of`]: the release's files parsed and validated, the
/// chart policy held, every value checked. `config` must be the one the release was verified with.
pub fn read_intent(
    mut release: VerifiedRelease,
    config: &TrustConfig,
) -> Result<VerifiedIntent, PassError> {
    let id = release.commit().id().to_owned();
    let fail = PassError::at(&id);
    let tree = release.take_tree();
    let intent = crate::intent::parse_tree(&tree, &config.limits).map_err(|e| fail(e.into()))?;
    drop(tree);
    crate::intent::chart::check_policy(&intent, &config.cluster, config.require_chart_digests)
        .map_err(|e| fail(e.into()))?;
    let mut notes: Vec<String> = release
        .ignored_signatures()
        .iter()
        .map(|f| {
            format!(
                "clusters/{}/{f}: signed by a key this cluster does not trust; ignored",
                config.cluster
            )
        })
        .collect();
    let values = check_values(&intent, &values_inputs(config), &mut notes)
        .map_err(|e| fail(ValueErrors(e).into()))?;
    Ok(VerifiedIntent {
        release,
        intent,
        notes,
        values,
    })
}

/// What the values step needs from the configuration.
struct ValuesInputs<'a> {
    cluster: &'a str,
    identities: Option<&'a Identities>,
    require_bound: bool,
    limits: &'a Limits,
    verified: Option<&'a str>,
}

fn values_inputs(config: &TrustConfig) -> ValuesInputs<'_> {
    ValuesInputs {
        cluster: &config.cluster,
        identities: config.identities.as_ref(),
        require_bound: config.require_bound_values,
        limits: &config.limits,
        verified: config.values_verified.as_deref(),
    }
}

/// What [`check_unsigned`] found in a tree that passed every key-free check.
#[derive(Debug)]
pub struct UnsignedCheck {
    /// The validated objects.
    pub intent: Intent,
    /// How many encrypted values were checked for form.
    pub values: usize,
}

/// Every check of a pass that needs neither a signature nor the cluster's key, on a cluster
/// directory as it is (a checkout before `release` signs it, or `verify --worktree`): the layout,
/// names, folders, kinds, schema, literal credentials, and the form of every encrypted value. The
/// release's own files (`release.yaml`, `release.sigs/`) are not judged here.
pub fn check_unsigned(
    tree: &crate::repository::ClusterTree,
    limits: &Limits,
) -> Result<UnsignedCheck, PassError> {
    let fail = |error: Error| PassError {
        commit: None,
        error: Box::new(error),
    };
    let intent = crate::intent::parse_tree(tree, limits).map_err(|e| fail(e.into()))?;
    let inputs = ValuesInputs {
        cluster: &tree.cluster,
        identities: None,
        require_bound: false,
        limits,
        verified: None,
    };
    let values = check_values(&intent, &inputs, &mut Vec::new())
        .map_err(|e| fail(ValueErrors(e).into()))?
        .count;
    Ok(UnsignedCheck { intent, values })
}

/// Checks every encrypted value of every ApplicationInstance: decrypts them all when the cluster's
/// identities are at hand (unless the recorded verdict covers exactly these values, judged alike:
/// [`secrets::verdict`]), checks their form otherwise.
fn check_values(
    intent: &Intent,
    config: &ValuesInputs<'_>,
    notes: &mut Vec<String>,
) -> Result<ValuesChecked, Vec<ValueError>> {
    let (instances, unreadable) = instances_with_values(intent, config.cluster);
    if !unreadable.is_empty() {
        return Err(unreadable);
    }
    // The budget on values is per release: count them all before decrypting any.
    let count = check_budget(&instances, config)?;
    let mut findings = literal_credentials(&instances, config);
    let verdict = config.identities.map(|identities| {
        let recipients = identities.recipients();
        let judge = secrets::verdict::Judge {
            cluster: config.cluster,
            recipients: &recipients,
            require_bound: config.require_bound,
            limits: config.limits,
        };
        secrets::verdict::values_digest(
            instances
                .iter()
                .map(|(item, values)| (item.namespace.as_str(), item.name.as_str(), values)),
            &judge,
        )
    });
    if findings.is_empty() && verdict.is_some() && verdict.as_deref() == config.verified {
        return Ok(ValuesChecked {
            count,
            verdict,
            reused: true,
        });
    }
    let (unbound, errors) = decrypt_or_check_form(&instances, config, notes);
    findings.extend(errors);
    if findings.is_empty() {
        Ok(ValuesChecked {
            count,
            // Unbound values leave notes that only decrypting finds again: no verdict to reuse.
            verdict: verdict.filter(|_| unbound == 0),
            reused: false,
        })
    } else {
        Err(findings)
    }
}

/// Decrypts every value (or checks its form without identities), on every core, and reports in
/// intent order: how many values are unbound (each with its note) and every refusal.
fn decrypt_or_check_form(
    instances: &WithValues<'_>,
    config: &ValuesInputs<'_>,
    notes: &mut Vec<String>,
) -> (usize, Vec<ValueError>) {
    let policy = secrets::ValuesPolicy {
        require_bound: config.require_bound,
    };
    let outcomes = crate::parallel::map(instances, |(item, values)| {
        let at = secrets::ValueContext {
            cluster: config.cluster.to_owned(),
            namespace: item.namespace.clone(),
            instance: item.name.clone(),
        };
        match config.identities {
            // Plaintext is dropped (and zeroized) inside: this step only proves every value decrypts.
            Some(identities) => {
                secrets::decrypt_values(values, &at, identities, &policy, config.limits)
                    .map(|decrypted| decrypted.unbound_paths())
            }
            None => secrets::check_values_form(values, &at, config.limits).map(|_| Vec::new()),
        }
    });
    let (mut unbound, mut findings) = (0, Vec::new());
    for ((item, _), outcome) in instances.iter().zip(outcomes) {
        match outcome {
            Ok(paths) => {
                unbound += paths.len();
                for path in paths {
                    notes.push(format!(
                        "clusters/{}/{}: spec.values.{path}: value is not bound to where it is used (plain age); bind it with `vworkspace-operator encrypt --recipient <the cluster's age1... recipient> --in-place clusters/{}/{} --path {path}`",
                        config.cluster, item.source_path, config.cluster, item.source_path
                    ));
                }
            }
            Err(errors) => findings.extend(errors),
        }
    }
    (unbound, findings)
}

/// An ApplicationInstance with values, and its values.
type WithValue<'i> = (
    &'i crate::intent::Item<crate::crd::ApplicationInstance>,
    serde_json::Value,
);

/// The ApplicationInstances with values, and their values.
type WithValues<'i> = [WithValue<'i>];

/// An ApplicationInstance read for its `spec.values` alone.
#[derive(serde::Deserialize)]
struct ValuesOnly {
    spec: SpecValuesOnly,
}

/// The `values` of an ApplicationInstance's spec.
#[derive(serde::Deserialize)]
struct SpecValuesOnly {
    #[serde(default)]
    values: Option<serde_json::Value>,
}

/// The `spec.values` of every ApplicationInstance that has them, read back from the intent's
/// compact objects, in intent order; and a refusal for each object that did not read back.
fn instances_with_values<'i>(
    intent: &'i Intent,
    cluster: &str,
) -> (Vec<WithValue<'i>>, Vec<ValueError>) {
    // Only `spec.values` is read back (the rest of each object is skipped), on every core.
    let read = crate::parallel::map(&intent.application_instances, |item| {
        item.resource
            .part::<ValuesOnly>()
            .map(|object| object.spec.values)
    });
    let (mut with_values, mut unreadable) = (Vec::new(), Vec::new());
    for (item, values) in intent.application_instances.iter().zip(read) {
        match values {
            Ok(Some(values)) => with_values.push((item, values)),
            Ok(None) => {}
            Err(e) => unreadable.push(ValueError {
                cluster: cluster.to_owned(),
                namespace: item.namespace.clone(),
                instance: item.name.clone(),
                path: String::new(),
                kind: secrets::ValueErrorKind::Unreadable(e.to_string()),
            }),
        }
    }
    (with_values, unreadable)
}

/// Refuses a release with more encrypted values than the limit, before any is decrypted; returns
/// how many there are.
fn check_budget(
    instances: &WithValues<'_>,
    config: &ValuesInputs<'_>,
) -> Result<usize, Vec<ValueError>> {
    let mut total = 0usize;
    for (_, values) in instances {
        secrets::for_each_armored(values, &mut |_, _| total += 1);
    }
    if total > config.limits.max_secret_values {
        return Err(vec![ValueError {
            cluster: config.cluster.to_owned(),
            namespace: String::new(),
            instance: String::new(),
            path: String::new(),
            kind: secrets::ValueErrorKind::TooManyValues(config.limits.max_secret_values),
        }]);
    }
    Ok(total)
}

/// Literal credentials: the same rule as the admission webhook, so that CI refuses the commit
/// instead of the webhook refusing the apply halfway through a pass.
fn literal_credentials(instances: &WithValues<'_>, config: &ValuesInputs<'_>) -> Vec<ValueError> {
    let mut findings = Vec::new();
    for (item, values) in instances {
        let error = |path: String, kind| ValueError {
            cluster: config.cluster.to_owned(),
            namespace: item.namespace.clone(),
            instance: item.name.clone(),
            path,
            kind,
        };
        match crate::secrets::values_policy::inline_credentials(values) {
            Ok(paths) => findings.extend(
                paths
                    .into_iter()
                    .map(|p| error(p, secrets::ValueErrorKind::LiteralCredential)),
            ),
            // Unchecked is refused, as the webhook refuses it.
            Err(_) => findings.push(error(String::new(), secrets::ValueErrorKind::TooDeep)),
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compact::Compact;
    use crate::intent::Item;

    #[test]
    fn an_object_that_does_not_read_back_is_refused_by_its_file_not_skipped() {
        let item = |name: &str, json: &str| Item {
            source_path: format!("namespaces/ns-a/applicationinstances/{name}.yaml"),
            namespace: "ns-a".into(),
            name: name.into(),
            resource: Compact::from_json_unchecked(json),
        };
        let intent = Intent {
            application_instances: vec![
                item(
                    "good",
                    r#"{"metadata":{"name":"good"},"spec":{"chart":{"repository":"https://c/","name":"a","version":"1"},"values":{"a":1}}}"#,
                ),
                item(
                    "plain",
                    r#"{"metadata":{"name":"plain"},"spec":{"chart":{"repository":"https://c/","name":"a","version":"1"}}}"#,
                ),
                item("broken", r#"{"spec":"#),
            ],
            operations: Vec::new(),
        };
        let (with_values, unreadable) = instances_with_values(&intent, "demo");
        let read: Vec<(&str, &serde_json::Value)> = with_values
            .iter()
            .map(|(item, values)| (item.name.as_str(), values))
            .collect();
        assert_eq!(read, [("good", &serde_json::json!({"a": 1}))]);
        assert_eq!(unreadable.len(), 1, "{unreadable:?}");
        let message = unreadable[0].to_string();
        assert!(
            message.starts_with(
                "clusters/demo/namespaces/ns-a/applicationinstances/broken.yaml: spec.values: the declared object could not be read back"
            ),
            "{message}"
        );
    }
}
