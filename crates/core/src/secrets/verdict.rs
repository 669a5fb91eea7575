//! The verdict on a release's encrypted values, as a digest that a later process can compare.
//!
//! Checking that every value decrypts and is bound where it is found costs an X25519 operation per
//! value: about 0.5 s at 10,000 values on two cores, paid again by every new process (a restart,
//! `run --once`) for values that have not changed. A pass that found every value good records this
//! digest (the reconciler keeps it in the Cluster's status, which only the operator may write); a
//! pass whose values, identities and policy give the same digest reaches the same verdict without
//! decrypting. Any change to a value, to where it is used, to the identities, to the binding
//! policy, to the limits or to this code's version gives another digest, and every value is
//! decrypted again.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::limits::Limits;

/// What judged the values, besides the values themselves.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    /// The cluster id.
    pub cluster: &'a str,
    /// The recipients (public keys) of the identities that decrypted.
    pub recipients: &'a [String],
    /// Whether unbound values are refused.
    pub require_bound: bool,
    /// The limits the values were checked under.
    pub limits: &'a Limits,
}

/// The digest of `instances` (namespace, name, `spec.values`, in intent order) as judged by
/// `judge`: `sha256:<hex>`. The whole `spec.values` is covered, not only its ciphertexts, so that a
/// value moved to another path (or to a path that cannot be addressed) changes the digest.
pub fn values_digest<'a>(
    instances: impl IntoIterator<Item = (&'a str, &'a str, &'a Value)>,
    judge: &Judge<'_>,
) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        // Length-prefixed, so that no two sequences of fields hash alike.
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(b"vworkspace values verdict v1");
    field(env!("CARGO_PKG_VERSION").as_bytes());
    field(judge.cluster.as_bytes());
    for recipient in judge.recipients {
        field(recipient.as_bytes());
    }
    field(&[u8::from(judge.require_bound)]);
    field(format!("{:?}", judge.limits).as_bytes());
    for (namespace, name, values) in instances {
        field(namespace.as_bytes());
        field(name.as_bytes());
        field(&serde_json::to_vec(values).unwrap_or_default());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_input_of_the_verdict_changes_the_digest() {
        let limits = Limits::default();
        let other_limits = Limits {
            max_secret_values: limits.max_secret_values + 1,
            ..Limits::default()
        };
        let recipients = vec!["age1aaa".to_owned()];
        let rotated = vec!["age1bbb".to_owned()];
        let judge = Judge {
            cluster: "demo",
            recipients: &recipients,
            require_bound: true,
            limits: &limits,
        };
        let values = json!({"smtp": {"password": "-----BEGIN AGE ENCRYPTED FILE-----\nA"}});
        let moved = json!({"smtp.password": "-----BEGIN AGE ENCRYPTED FILE-----\nA"});
        let changed = json!({"smtp": {"password": "-----BEGIN AGE ENCRYPTED FILE-----\nB"}});
        let digest = |ns, name, values: &Value, judge: &Judge<'_>| {
            values_digest([(ns, name, values)], judge)
        };
        // The same values, judged by another judge.
        let judged_by = |other: Judge<'_>| digest("org", "app", &values, &other);
        let base = digest("org", "app", &values, &judge);
        assert!(base.starts_with("sha256:") && base.len() == 7 + 64);
        assert_eq!(base, digest("org", "app", &values, &judge), "deterministic");
        let others = [
            digest("org", "app", &moved, &judge),
            digest("org", "app", &changed, &judge),
            digest("other", "app", &values, &judge),
            digest("org", "app2", &values, &judge),
            digest("or", "gapp", &values, &judge),
            judged_by(Judge {
                cluster: "prod",
                ..judge
            }),
            judged_by(Judge {
                recipients: &rotated,
                ..judge
            }),
            judged_by(Judge {
                require_bound: false,
                ..judge
            }),
            judged_by(Judge {
                limits: &other_limits,
                ..judge
            }),
            values_digest([], &judge),
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(&base, other, "input {i} must change the digest");
        }
    }
}
