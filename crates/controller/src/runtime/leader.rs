//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: the holder renews the
//! Lease every [`RETRY`]; another replica takes it over once it has not been renewed for
//! [`LEASE_DURATION`]. Writes use the Lease's resourceVersion, so two replicas racing for an expired
//! Lease cannot both win. The decision is the pure [`decide`]; [`Elector`] does the I/O.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::error::Error;

/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews and a follower retries.
pub const RETRY: Duration = Duration::from_secs(2);
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

/// Decides from the Lease's spec (`None` when the Lease does not exist yet).
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: jiff::Timestamp) -> Decision {
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
        .map(|s| i64::from(s.max(1)))
        .unwrap_or(LEASE_DURATION.as_secs() as i64);
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(at) if at.as_second().saturating_add(duration) > now.as_second() => {
            Decision::Follow { holder }
        }
        _ => Decision::Acquire,
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
}

impl Elector {
    /// An elector for the Lease in `namespace`, identified as `me` (the pod name).
    pub fn new(client: Client, namespace: &str, me: String) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            me,
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
        match decide(spec, &self.me, now) {
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
        assert_eq!(decide(None, "a", at(100)), Decision::Acquire);
        assert_eq!(
            decide(Some(&held_by("a", 99)), "a", at(100)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held_by("b", 90)), "a", at(100)),
            Decision::Follow { holder: "b".into() }
        );
        // Not renewed for 15 s: the other replica takes over.
        assert_eq!(
            decide(Some(&held_by("b", 85)), "a", at(100)),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", at(100)),
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
