//! The steps that judge the source: trust inputs, fetch and verification, the serial floor. Nothing
//! here reads or writes the cluster's objects; a refusal ends the pass with `SourceVerified=False`.

use std::sync::Arc;

use vworkspace_core::crd::{Cluster, ClusterSpec, GitSourceRef};
use vworkspace_core::pipeline::VerifiedIntent;
use vworkspace_core::repository::GitRef;

use super::settled::PendingIntent;
use super::{PassState, StepResult};
use crate::cluster::conditions::StepOutcome;
use crate::cluster::{Context, apply, status_guard, trust};
use crate::error::Error;

/// [`super::Step::ReadTrust`].
pub(super) async fn read_trust(
    ctx: &Context,
    cluster: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    let spec = &cluster.spec;
    if let Some(e) = status_guard::unreadable(&state.name, cluster.status.as_ref()) {
        return StepResult::Refused(e);
    }
    let inputs = match trust::read_inputs(&ctx.client, &ctx.settings.namespace, spec).await {
        Ok(inputs) => inputs,
        Err(e) => return StepResult::Refused(e),
    };
    // A floor the status lost is taken from this source's live objects, not dropped.
    let status = cluster.status.as_ref();
    // A read that fails here is not fatal: the same read in `ReadLive` ends the pass before
    // anything is written, and the serial floor of the live objects is checked there.
    let restored =
        match status_guard::restored_floor(&ctx.client, spec, status, ctx.live.get()).await {
            Ok(restored) => restored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the live objects to restore a lost floor");
                None
            }
        };
    let previous = restored.as_ref().or(status);
    match trust::trust_config(spec, previous, &inputs, (ctx.clock)(), &ctx.settings.limits) {
        Ok(trust) => {
            // Published even when verification fails: a new Cluster's authors need the recipient
            // first.
            state.recipients = trust.config.identities.as_ref().map(|i| i.recipients());
            state.trust = Some(trust);
            StepResult::Next
        }
        Err(e) => StepResult::Refused(e),
    }
}

/// [`super::Step::FetchAndVerify`].
pub(super) async fn fetch_and_verify(
    ctx: &Context,
    cluster: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    let Some(trust) = state.trust.take() else {
        return super::out_of_order(super::Step::ReadTrust);
    };
    state.progress.set_fetching(true);
    let last_applied = cluster
        .status
        .as_ref()
        .and_then(|s| s.last_applied_commit.as_deref());
    let settled = cluster.status.as_ref().is_some_and(|s| s.settled.is_some());
    let (judged, took) =
        fetch_then_verify(ctx, state, &cluster.spec, trust, last_applied, settled).await;
    ctx.metrics.fetch_duration.observe(took.as_secs_f64());
    state.progress.set_fetching(false);
    match judged {
        Ok(Judged::Intent(verified)) => {
            super::log_values_checked(&verified);
            state.attempted_commit = Some(verified.commit().id().to_string());
            state.verified = Some(verified);
            StepResult::Next
        }
        Ok(Judged::Pending(pending)) => {
            state.attempted_commit = Some(pending.release.commit().id().to_string());
            state.pending = Some(*pending);
            StepResult::Next
        }
        Err((e, commit)) => {
            state.attempted_commit = commit;
            StepResult::Refused(e)
        }
    }
}

/// [`super::Step::CheckSerialFloor`]: the floor the owner pinned in the spec holds even when the
/// status lost its own (a re-created Cluster, a restored etcd backup). On success the report says
/// the source is verified.
pub(super) async fn check_serial_floor(
    _: &Context,
    cluster: &Cluster,
    state: &mut PassState<'_>,
) -> StepResult {
    let Some(release) = state.release() else {
        return super::out_of_order(super::Step::FetchAndVerify);
    };
    let (serial, expires) = (release.serial(), release.expires());
    if let Err(e) = vworkspace_core::trust::release::check_floor(
        &cluster.spec.cluster_id,
        serial,
        cluster.spec.release.min_serial,
    ) {
        // As before the pass became steps: this refusal does not publish the recipients.
        state.recipients = None;
        return StepResult::Refused(Error::from(e));
    }
    // A pending release's values are judged when it is parsed (the status keeps its verdict).
    let values = state
        .verified
        .as_ref()
        .and_then(|v| v.values_verdict().map(str::to_owned));
    state.report = verified_report(state, serial, expires, values);
    StepResult::Next
}

/// The report of a verified source, before anything is applied.
fn verified_report(
    state: &mut PassState<'_>,
    serial: u64,
    expires: jiff::Timestamp,
    values_verified: Option<String>,
) -> crate::cluster::status::PassReport {
    crate::cluster::status::PassReport {
        verify: StepOutcome::Succeeded,
        apply: StepOutcome::NotRun,
        attempted_commit: state.attempted_commit.clone(),
        applied: None,
        inventory: None,
        managed_namespaces: None,
        namespace_rbac: None,
        values_verified,
        settled: None,
        writes: (0, 0),
        recipients: state.recipients.take(),
        release_expires: Some((serial, expires)),
        guardrails: None,
    }
}

pub(crate) fn git_ref(reference: &GitSourceRef) -> GitRef {
    match reference {
        GitSourceRef::Branch(b) => GitRef::Branch(b.clone()),
        GitSourceRef::Tag(t) => GitRef::Tag(t.clone()),
        GitSourceRef::Commit(c) => GitRef::Commit(c.to_ascii_lowercase()),
    }
}

/// Writes the CA bundle a `Cluster` names to a file (public material; a file keeps
/// `FetchOptions` what the CLI uses), on the blocking pool as tokio::fs does: a slow disk must not
/// hold a runtime worker.
async fn write_ca_bundle(
    ctx: &Context,
    name: &str,
    bundle: &[u8],
) -> Result<std::path::PathBuf, Error> {
    let cache_dir = ctx.settings.cache_dir.clone();
    let path = cache_dir.join(format!("{name}.ca.pem"));
    let (file, bundle) = (path.clone(), bundle.to_vec());
    let written = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&cache_dir).and_then(|()| std::fs::write(&file, bundle))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    written.map_err(|e| Error::Io {
        what: format!("write the CA bundle of {name} to {}", path.display()),
        source: e,
    })?;
    Ok(path)
}

/// Whether a pass lists its live objects while it verifies the `fetched` commit: only in a process
/// without watch stores (`stores`: they hold the objects already), and only for the commit the
/// status records as applied last (a commit this operator verified before).
pub(super) fn lists_while_verifying(
    stores: bool,
    last_applied: Option<&str>,
    fetched: &str,
) -> bool {
    !stores && last_applied.is_some_and(|c| c.eq_ignore_ascii_case(fetched))
}

/// What [`fetch_then_verify`] concluded of a verified source.
enum Judged {
    /// Parsed and validated, values checked.
    Intent(Arc<VerifiedIntent>),
    /// The release verified, its intent not parsed yet ([`super::Step::ReuseSettled`]).
    Pending(Box<PendingIntent>),
}

/// Fetches and verifies on the blocking pool: the network and the CPU-heavy verification never run
/// on the async runtime's workers. The error comes with the commit it concerns, when known; the
/// duration is the fetch's and the verification's alone.
///
/// When the fetched commit is the one this source last applied (the status says so, and only the
/// operator writes it) and the process has no watch stores (`run --once`), this source's live
/// objects are listed while the commit is verified: the list waits on the API server while the
/// verification keeps this process's cores busy. A new commit is verified first and its pass reads
/// nothing of the declared kinds before: a commit no one verified yet (one pushed by anyone who can
/// push) never makes the operator list the estate.
///
/// When the status also holds a settled record (`settled`), that commit's release is verified
/// (signatures, history, every file's digest) but not parsed, and the objects are listed from their
/// metadata alone: [`super::Step::ReuseSettled`] compares the two with the record, and parses the
/// release only when they differ. Otherwise [`super::Step::ReadLive`] takes the whole objects.
async fn fetch_then_verify(
    ctx: &Context,
    state: &mut PassState<'_>,
    spec: &ClusterSpec,
    trust: trust::SourceTrust,
    last_applied: Option<&str>,
    settled: bool,
) -> (Result<Judged, (Error, Option<String>)>, std::time::Duration) {
    let started = std::time::Instant::now();
    let url = spec.source.url.clone();
    let reference = git_ref(&spec.source.git_ref);
    let cache_dir = ctx.settings.cache_dir.clone();
    let mut options = ctx.settings.fetch.clone();
    options.auth = trust.auth.clone();
    if let Some(ca) = &trust.ca_bundle {
        match write_ca_bundle(ctx, &state.name, ca).await {
            Ok(path) => options.ca_bundle = Some(path),
            Err(e) => return (Err((e, None)), started.elapsed()),
        }
    }
    let name = state.name.clone();
    let mut memo = ctx.with_state(&name, |s| s.memo.take()).unwrap_or_default();
    let config = trust.config;
    let stores = ctx.live.get().is_some();
    let last = last_applied.map(str::to_owned);
    let (fetched_tx, fetched_rx) = tokio::sync::oneshot::channel::<String>();
    let job = tokio::task::spawn_blocking(move || {
        let outcome = match crate::source::fetch(&url, &reference, &cache_dir, &options) {
            Ok(fetched) => {
                let _ = fetched_tx.send(fetched.commit.clone());
                // The same condition as the listing's below: a pending release is always
                // listed beside, from metadata.
                if settled && lists_while_verifying(stores, last.as_deref(), &fetched.commit) {
                    vworkspace_core::pipeline::verify_release_of(
                        &fetched.repo,
                        &fetched.commit,
                        &config,
                    )
                    .map(|release| Judged::Pending(Box::new(PendingIntent { release, config })))
                    .map_err(|e| (Error::Pass(*e.error), e.commit))
                } else {
                    memo.verify_ref(&fetched.repo, &GitRef::Commit(fetched.commit), &config)
                        .map(Judged::Intent)
                        .map_err(|e| (Error::Pass(*e.error), e.commit))
                }
            }
            Err(e) => Err((Error::Source(e), None)),
        };
        (memo, outcome, started.elapsed())
    });
    let client = &ctx.client;
    let listing = async {
        // The fetched commit (a failed fetch drops the sender: nothing is listed).
        match fetched_rx.await {
            Ok(commit) if lists_while_verifying(stores, last_applied, &commit) => {
                Some(if settled {
                    Listed::Settled(apply::list_settled(client, &spec.cluster_id).await)
                } else {
                    Listed::Live(apply::list_live(client, &spec.cluster_id, None).await)
                })
            }
            _ => None,
        }
    };
    let (joined, listed) = futures::join!(job, listing);
    match listed {
        Some(Listed::Settled(objects)) => state.prefetched_settled = Some(objects),
        Some(Listed::Live(objects)) => state.prefetched_live = Some(objects),
        None => {}
    }
    match joined {
        Ok((memo, outcome, took)) => {
            ctx.with_state(&name, |s| s.memo = Some(memo));
            (outcome, took)
        }
        Err(e) => (Err((Error::Task(e), None)), started.elapsed()),
    }
}

/// What the listing beside the verification returned.
enum Listed {
    /// The objects' metadata, for the settled record.
    Settled(Result<Vec<vworkspace_core::plan::settled::SettledObject>, Error>),
    /// The whole objects, for [`super::Step::ReadLive`].
    Live(Result<Vec<vworkspace_core::plan::diff::LiveObject>, Error>),
}
