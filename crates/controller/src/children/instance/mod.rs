//! `ApplicationInstance` -> Flux source + HelmRelease + `<instance>-values` Secret, and the instance's
//! status mirrored from the HelmRelease's `Ready`. Decryption happens here, in memory, with the
//! identity of the `Cluster` whose verified release declares the instance, and only of the values
//! that release declares ([`super::declared`]): the live object's spec is compared with the declared
//! one, never decrypted. The plaintext leaves only into the values Secret.
//!
//! One entry, [`reconcile`], runs the ordered steps [`STEPS`] (one signature each:
//! `async fn(&ChildContext, &WatchedInstance, &mut InstanceState) -> Result<Flow, Error>`) and
//! then the summarize step that writes `Ready`, as the `Cluster` pass does
//! ([`crate::cluster::pass`], where the choice of an enum dispatched by one `match` is explained).

mod status;
mod steps;
mod values_secret;

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::ChildContext;
pub use super::Flow;
use super::declared::{self, DeclaredObject, DeclaredRelease};
use crate::children::flux::SplitValues;
use crate::error::Error;
use vworkspace_core::crd::{ApplicationInstance, ApplicationInstanceStatus, WatchedInstance};

pub use status::instance_status;
pub use vworkspace_core::reasons::VALUES_NOT_DECRYPTED;

/// The steps of an instance's reconcile, in order; the summarize step follows them.
pub const STEPS: [Step; 7] = [
    Step::CheckManaged,
    Step::JudgeDeclared,
    Step::DecryptValues,
    Step::BuildChildren,
    Step::EnsureValuesSecret,
    Step::EnsureSource,
    Step::EnsureHelmRelease,
];

/// One step of an instance's reconcile ([`STEPS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Stops at an instance being deleted (its children go with it) or in an unmanaged namespace.
    CheckManaged,
    /// Judges the instance against the verified releases: only a declared one goes on, with the
    /// declared spec.
    JudgeDeclared,
    /// Decrypts the declared values and splits them into inline values and the Secret's.
    DecryptValues,
    /// Builds the Flux source and the HelmRelease from the declared spec.
    BuildChildren,
    /// Brings the values Secret to the decrypted values (first: the HelmRelease must never miss it).
    EnsureValuesSecret,
    /// Brings the Flux source to what was built.
    EnsureSource,
    /// Brings the HelmRelease to what was built and reads its `Ready`.
    EnsureHelmRelease,
}

/// The declared object an instance's children are built from.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The release that declares it.
    pub release: Arc<DeclaredRelease>,
    /// The declared object.
    pub declared: DeclaredObject<ApplicationInstance>,
    /// Whether the live spec differs from the declared one.
    pub altered: bool,
    /// The live identity (name, uid for owner references) with the declared spec: an altered live
    /// spec is never read past the judgement.
    pub effective: Arc<ApplicationInstance>,
}

/// The Flux children built for an instance.
#[derive(Debug, Clone)]
pub struct Children {
    /// The source's plural (`helmrepositories`, `ocirepositories`).
    pub source_plural: &'static str,
    /// The Flux source.
    pub source: serde_json::Value,
    /// The HelmRelease.
    pub helm_release: serde_json::Value,
}

/// What the steps of one reconcile hand on to the next ones.
#[derive(Debug)]
pub struct InstanceState {
    /// The clock's reading at the start.
    pub now: jiff::Timestamp,
    /// From [`Step::JudgeDeclared`].
    pub judged: Option<Judged>,
    /// From [`Step::DecryptValues`] (the Secret's part zeroized on drop; dropped once written).
    pub values: Option<SplitValues>,
    /// From [`Step::BuildChildren`].
    pub children: Option<Children>,
    /// The HelmRelease's `Ready` (status, reason, message), from [`Step::EnsureHelmRelease`].
    pub ready: Option<(String, String, String)>,
    /// The children whose undeclared spec fields this reconcile removed (`<kind> <name>: <paths>`),
    /// from [`Step::EnsureSource`] and [`Step::EnsureHelmRelease`] (and the values Secret's extra
    /// keys, from [`Step::EnsureValuesSecret`]).
    pub removed: Vec<String>,
    /// source-controller's refusal of the chart artifact ([`crate::children::chart_source`]), from
    /// [`Step::EnsureSource`]: it speaks for the instance over the HelmRelease.
    pub chart_refused: Option<(String, String, String)>,
    /// The chart signing keys the declaring Cluster names, from [`Step::BuildChildren`] (empty
    /// without `spec.chartVerification` or for an `https://` chart).
    pub chart_keys: Vec<String>,
}

impl InstanceState {
    /// The state before the first step.
    pub fn new(now: jiff::Timestamp) -> Self {
        InstanceState {
            now,
            judged: None,
            values: None,
            children: None,
            ready: None,
            removed: Vec::new(),
            chart_refused: None,
            chart_keys: Vec::new(),
        }
    }
}

impl Step {
    /// Runs this step.
    pub async fn run(
        self,
        ctx: &ChildContext,
        instance: &WatchedInstance,
        state: &mut InstanceState,
    ) -> Result<Flow, Error> {
        match self {
            Step::CheckManaged => steps::check_managed(ctx, instance, state).await,
            Step::JudgeDeclared => steps::judge_declared(ctx, instance, state).await,
            Step::DecryptValues => steps::decrypt_values(ctx, instance, state).await,
            Step::BuildChildren => steps::build_children(ctx, instance, state).await,
            Step::EnsureValuesSecret => steps::ensure_values_secret(ctx, instance, state).await,
            Step::EnsureSource => steps::ensure_source(ctx, instance, state).await,
            Step::EnsureHelmRelease => steps::ensure_helm_release(ctx, instance, state).await,
        }
    }
}

/// Reconciles one instance: [`STEPS`], then [`summarize`].
#[tracing::instrument(skip_all, fields(namespace = instance.namespace().unwrap_or_default(), instance = %instance.name_any()))]
pub async fn reconcile(
    instance: Arc<WatchedInstance>,
    ctx: Arc<ChildContext>,
) -> Result<Action, Error> {
    let mut state = InstanceState::new((ctx.clock)());
    for step in STEPS {
        if let Flow::Done(action) = step.run(&ctx, &instance, &mut state).await? {
            return Ok(action);
        }
    }
    summarize(&ctx, &state).await
}

/// The summarize step: `Ready` from the HelmRelease's, unless the live spec was altered (then the
/// refusal `SpecDiffersFromRelease`: the children follow the declared spec, the live object says it
/// was changed).
pub async fn summarize(ctx: &ChildContext, state: &InstanceState) -> Result<Action, Error> {
    let (Some(judged), Some(ready)) = (&state.judged, &state.ready) else {
        return Err(steps::out_of_order(Step::EnsureHelmRelease));
    };
    let instance = judged.effective.as_ref();
    if judged.altered {
        let message = declared::spec_differs_message(
            "ApplicationInstance",
            &judged.release,
            &judged.declared.digest,
        );
        refuse(ctx, instance, declared::SPEC_DIFFERS, message, state.now).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let namespace = instance.namespace().unwrap_or_default();
    let ready = state.chart_refused.as_ref().unwrap_or(ready);
    let mut status = instance_status(
        instance.status.as_ref(),
        ready.clone(),
        instance.metadata.generation,
        Some(format!("{namespace}/{}", instance.name_any())),
        state.now,
    );
    if !state.removed.is_empty() {
        status::record_drift(&mut status, &state.removed, state.now);
    }
    write_status(ctx, instance, &status).await?;
    // An instance not Ready yet counts as watched only once its namespace's watch has listed: a
    // `Ready` reached before that list would not reach it, so until then it is polled. A Ready one
    // keeps the jittered resync (10,000 instances reconciled at start must not come back together).
    let ready_now = ready.0 == "True";
    let watched = ctx.caches.helm_releases.as_ref().is_some_and(|watches| {
        ready_now
            || watches.known(&namespace, &instance.name_any()) != super::watches::Known::Unknown
    });
    Ok(Action::requeue(next_look(ready_now, watched)))
}

/// What the status writes read of an instance: its identity and its status, from the watched
/// object (before the judgement) or the judged one (after it).
trait InstanceStatus:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
    fn status(&self) -> Option<&ApplicationInstanceStatus>;
}

impl InstanceStatus for ApplicationInstance {
    fn status(&self) -> Option<&ApplicationInstanceStatus> {
        self.status.as_ref()
    }
}

impl InstanceStatus for WatchedInstance {
    fn status(&self) -> Option<&ApplicationInstanceStatus> {
        self.status.as_ref()
    }
}

async fn write_status<K: InstanceStatus>(
    ctx: &ChildContext,
    instance: &K,
    status: &ApplicationInstanceStatus,
) -> Result<(), Error> {
    super::write_status(&ctx.client, instance, instance.status(), status).await
}

/// When an applied instance is looked at again. With the per-namespace HelmRelease watches
/// ([`super::watches`]) a change of `Ready` triggers the reconcile, so only the resync of what is
/// not watched remains ([`super::RESYNC_WITH_WATCH`], jittered so that 10,000 instances applied
/// together do not come back together); without them a HelmRelease that is not Ready yet is polled
/// every [`super::POLL_WITHOUT_WATCH`].
pub fn next_look(ready: bool, watched: bool) -> Duration {
    if watched {
        crate::cluster::retry::jittered(
            super::RESYNC_WITH_WATCH,
            crate::cluster::retry::random_jitter(),
        )
    } else if ready {
        super::RESYNC_WITH_WATCH
    } else {
        super::POLL_WITHOUT_WATCH
    }
}

/// Writes `Ready=False` with a refusal `reason`; counts it and records an Event when the instance was
/// not already refused for that reason (a requeue does not repeat the Event).
async fn refuse<K: InstanceStatus>(
    ctx: &ChildContext,
    instance: &K,
    reason: &'static str,
    message: String,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let already = instance
        .status()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.reason == reason && c.status == "False");
    let status = instance_status(
        instance.status(),
        ("False".into(), reason.into(), message.clone()),
        instance.meta().generation,
        None,
        now,
    );
    write_status(ctx, instance, &status).await?;
    if !already {
        super::refusal::record(ctx, instance, reason, &message, now).await;
    }
    Ok(())
}

/// Backs off on errors: 30 s.
#[tracing::instrument(skip_all, fields(namespace = instance.namespace().unwrap_or_default(), instance = %instance.name_any()))]
pub fn error_policy(
    instance: Arc<WatchedInstance>,
    error: &Error,
    ctx: Arc<ChildContext>,
) -> Action {
    tracing::warn!(reason = error.reason(), error = %error, "ApplicationInstance not reconciled");
    super::report_refusal(&ctx, instance.namespace().as_deref(), error);
    Action::requeue(Duration::from_secs(30))
}

#[cfg(test)]
mod tests;
