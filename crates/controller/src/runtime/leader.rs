//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: the holder renews the
//! Lease every [`RETRY`]; another replica takes it over once it has not seen the Lease record change
//! for [`LEASE_DURATION`], judged by its *own* clock from the moment it observed the change (never by
//! comparing the holder's `renewTime` with the local clock: the two clocks may disagree). Writes use
//! the Lease's resourceVersion, so two replicas racing for an expired Lease cannot both win. The
//! decision is the pure [`decide`]; [`Elector`] does the I/O; [`keep`] renews and moves the
//! leader's write [`Fence`] (until the renewal's send time plus [`RENEW_DEADLINE`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::error::Error;
use crate::fence::Fence;

/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews and a follower retries.
pub const RETRY: Duration = Duration::from_secs(2);
/// How long after sending its last successful renewal the leader may still write: shorter than
/// [`LEASE_DURATION`], so that it stops before any follower can take over.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// The leader's timing: how often it renews, and for how long after a renewal it may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Between renewals.
    pub retry: Duration,
    /// The fence after a renewal (must stay below the Lease duration).
    pub renew_deadline: Duration,
}

/// [`RETRY`] and [`RENEW_DEADLINE`].
pub const TIMING: Timing = Timing {
    retry: RETRY,
    renew_deadline: RENEW_DEADLINE,
};
/// The Lease's name.
pub const LEASE_NAME: &str = "vworkspace-app-operator";

/// What a replica should do with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it and renews it.
    Follow {
        /// The holder's identity.
        holder: String,
    },
}

/// Decides from the Lease's spec (`None` when the Lease does not exist yet) and how long, by this
/// replica's clock, the record has been seen unchanged (`unchanged_for`). The holder's `renewTime`
/// is never compared with the local clock.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == me {
        return Decision::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s.max(1)).ok())
        .map(Duration::from_secs)
        .unwrap_or(LEASE_DURATION);
    if unchanged_for < duration {
        Decision::Follow { holder }
    } else {
        Decision::Acquire
    }
}

/// The spec this replica writes when it acquires or renews.
pub fn next_spec(previous: Option<&LeaseSpec>, me: &str, now: jiff::Timestamp) -> LeaseSpec {
    let ours = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(me));
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
        ..LeaseSpec::default()
    }
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    me: String,
    /// The Lease record last seen, and when (by this replica's clock) it was first seen so.
    observed: Mutex<Option<(Option<LeaseSpec>, jiff::Timestamp)>>,
}

impl Elector {
    /// An elector for the Lease in `namespace`, identified as `me` (the pod name).
    pub fn new(client: Client, namespace: &str, me: String) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            me,
            observed: Mutex::new(None),
        }
    }

    /// Records the record read at `now` (this replica's clock); returns for how long it has been
    /// seen unchanged.
    fn observe(&self, spec: Option<&LeaseSpec>, now: jiff::Timestamp) -> Duration {
        let mut observed = match self.observed.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match observed.as_ref() {
            Some((seen, since)) if seen.as_ref() == spec => {
                Duration::try_from(now.duration_since(*since)).unwrap_or(Duration::ZERO)
            }
            _ => {
                *observed = Some((spec.cloned(), now));
                Duration::ZERO
            }
        }
    }

    /// Reads the Lease and acquires or renews it if [`decide`] says so. Returns whether this replica
    /// holds the Lease afterwards. A lost race (409) is not an error: the other replica won.
    pub async fn try_hold(&self, now: jiff::Timestamp) -> Result<bool, Error> {
        let kube_error = |action: &str| {
            let action = format!("{action} Lease {LEASE_NAME}");
            move |source| Error::Kube { action, source }
        };
        let lease = self
            .api
            .get_opt(LEASE_NAME)
            .await
            .map_err(kube_error("get"))?;
        let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
        let unchanged_for = self.observe(spec, now);
        match decide(spec, &self.me, unchanged_for) {
            Decision::Follow { .. } => Ok(false),
            Decision::Acquire | Decision::Renew => {
                let body = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.to_owned()),
                        resource_version: lease
                            .as_ref()
                            .and_then(|l| l.metadata.resource_version.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(next_spec(spec, &self.me, now)),
                };
                let written = match lease {
                    None => self.api.create(&PostParams::default(), &body).await,
                    Some(_) => {
                        self.api
                            .replace(LEASE_NAME, &PostParams::default(), &body)
                            .await
                    }
                };
                match written {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                    Err(e) => Err(kube_error("write")(e)),
                }
            }
        }
    }
}

/// Waits until this replica holds the Lease (or `stop` resolves: `false`), then extends `fence`.
pub async fn acquire(
    elector: &Elector,
    fence: &Fence,
    timing: &Timing,
    stop: impl std::future::Future<Output = ()>,
) -> bool {
    tokio::pin!(stop);
    loop {
        let sent = Instant::now();
        match elector.try_hold(jiff::Timestamp::now()).await {
            Ok(true) => {
                fence.extend(sent + timing.renew_deadline);
                return true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election"),
        }
        tokio::select! {
            _ = tokio::time::sleep(timing.retry) => {}
            _ = &mut stop => return false,
        }
    }
}

/// Renews the Lease every `timing.retry`, extending `fence` to each successful renewal's send time
/// plus `timing.renew_deadline`. Returns when the Lease is lost (another replica holds it: the
/// fence is revoked) or was not renewed before the fence passed (a renewal still in flight is
/// abandoned): from then on this replica writes nothing, and should stop.
pub async fn keep(elector: &Elector, fence: &Fence, timing: &Timing) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(timing.retry) => {}
            _ = fence.lost() => {
                tracing::error!("leader Lease not renewed in time; stopping");
                return;
            }
        }
        let sent = Instant::now();
        let renewed = tokio::select! {
            biased;
            _ = fence.lost() => {
                tracing::error!("leader Lease not renewed in time; stopping");
                return;
            }
            renewed = elector.try_hold(jiff::Timestamp::now()) => renewed,
        };
        match renewed {
            Ok(true) => fence.extend(sent + timing.renew_deadline),
            Ok(false) => {
                fence.revoke();
                tracing::error!("lost the leader Lease; stopping");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the leader Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).expect("time")
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn one_holder_at_a_time() {
        let secs = Duration::from_secs;
        assert_eq!(decide(None, "a", secs(0)), Decision::Acquire);
        assert_eq!(
            decide(Some(&held_by("a", 99)), "a", secs(0)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held_by("b", 90)), "a", secs(10)),
            Decision::Follow { holder: "b".into() }
        );
        // Seen unchanged for 15 s by this replica's clock: the other replica takes over.
        assert_eq!(
            decide(Some(&held_by("b", 85)), "a", secs(15)),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", secs(0)),
            Decision::Acquire
        );
    }

    #[test]
    fn expiry_is_judged_by_local_observation_not_by_the_holders_clock() {
        // The holder's clock is an hour behind: its renewTime looks ancient to this replica, but the
        // record has just changed, so it is held.
        let skewed = held_by("b", -3600);
        assert_eq!(
            decide(Some(&skewed), "a", Duration::from_secs(1)),
            Decision::Follow { holder: "b".into() }
        );
        // An hour ahead: a record never renewed again expires 15 s after this replica saw it.
        let ahead = held_by("b", 3600);
        assert_eq!(
            decide(Some(&ahead), "a", Duration::from_secs(15)),
            Decision::Acquire
        );
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_keeps_acquire_time() {
        let taken = next_spec(Some(&held_by("b", 80)), "a", at(100));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(100))));
        let renewed = next_spec(Some(&taken), "a", at(102));
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(102))));
    }
}
