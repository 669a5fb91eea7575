//! A spec compared by digest: what the long-running process keeps of each watched
//! `ApplicationInstance` instead of its whole spec.
//!
//! The process compares every live instance with the declared one (the `Cluster` pass, to decide
//! what to write; the instance's own reconcile, to refuse a live spec that differs). Keeping the
//! whole typed spec of 10,000 watched instances for that cost about 1.9 KiB an instance (the
//! `values` maps and the armored secrets in them), a fifth of the memory at rest. A digest is 32
//! bytes, and the few objects whose digest differs are written anyway, so their live spec is then
//! learned from the write's own answer (`Changes::unread` in the plan's diff).
//!
//! The digest is taken over the spec as a JSON value, encoded so that **equal digests mean
//! `same_value` holds** (plan/diff.rs: the comparison the pass makes on whole specs):
//! object keys in order (serde_json's maps are sorted), every length and kind tagged, and numbers
//! as the API server keeps them: an integer that a float64 holds exactly is hashed as that float
//! (so a declared `1.0`, which the API server gives back as `1`, hashes as `1`), any other integer
//! as itself, and `-0.0` as `0.0`. Where `same_value` could still call two numbers equal that hash
//! apart (an integer beyond 2^53 that is not a float64's value, against a float near it), the
//! digest says "different": the object is written once more, never skipped.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The digest of one spec ([`SpecDigest::of`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpecDigest([u8; 32]);

impl std::fmt::Debug for SpecDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpecDigest({})", hex::encode(&self.0[..8]))
    }
}

impl SpecDigest {
    /// The digest of `spec`.
    pub fn of(spec: &Value) -> SpecDigest {
        let mut hasher = Sha256::new();
        feed(&mut hasher, spec);
        SpecDigest(hasher.finalize().into())
    }

    /// The digest of a typed spec, as its JSON; `None` for one that does not serialize (which then
    /// equals nothing).
    pub fn of_spec<S: serde::Serialize>(spec: &S) -> Option<SpecDigest> {
        serde_json::to_value(spec).ok().map(|v| SpecDigest::of(&v))
    }
}

fn feed(hasher: &mut Sha256, value: &Value) {
    match value {
        Value::Null => hasher.update(b"z"),
        Value::Bool(b) => hasher.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => feed_number(hasher, n),
        Value::String(s) => {
            hasher.update(b"s");
            feed_bytes(hasher, s.as_bytes());
        }
        Value::Array(items) => {
            hasher.update(b"a");
            hasher.update((items.len() as u64).to_be_bytes());
            for item in items {
                feed(hasher, item);
            }
        }
        Value::Object(map) => {
            hasher.update(b"o");
            hasher.update((map.len() as u64).to_be_bytes());
            for (key, item) in map {
                feed_bytes(hasher, key.as_bytes());
                feed(hasher, item);
            }
        }
    }
}

fn feed_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// Numbers as `same_value` (plan/diff.rs) compares them: two int64s exactly, anything else
/// as the nearest float64. An int64 that a float64 holds exactly is hashed as that float64, so it
/// meets the float it equals; one that no float64 holds keeps its own tag.
fn feed_number(hasher: &mut Sha256, n: &serde_json::Number) {
    let as_float = |f: f64| {
        // `-0.0 == 0.0` for the comparison.
        let f = if f == 0.0 { 0.0 } else { f };
        let mut tagged = [0u8; 9];
        tagged[0] = b'n';
        tagged[1..].copy_from_slice(&f.to_bits().to_be_bytes());
        tagged
    };
    if let Some(i) = n.as_i64() {
        let exact = (i as f64) as i128 == i128::from(i);
        if exact {
            hasher.update(as_float(i as f64));
        } else {
            hasher.update(b"i");
            hasher.update(i.to_be_bytes());
        }
    } else if let Some(f) = n.as_f64() {
        hasher.update(as_float(f));
    } else {
        // serde_json without arbitrary precision always gives one of the two.
        hasher.update(b"?");
        feed_bytes(hasher, n.to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON")
    }

    #[test]
    fn equal_digests_are_equal_values_and_every_change_moves_it() {
        let base = json!({"chart": {"name": "app", "version": "1.2.3"},
            "values": {"host": "a.example.org", "replicas": 2, "list": [1, "x", null, true]}});
        let same = [
            // Key order is not an input (the maps are sorted).
            parse(
                r#"{"values": {"replicas": 2, "list": [1, "x", null, true], "host": "a.example.org"}, "chart": {"version": "1.2.3", "name": "app"}}"#,
            ),
            // The API server gives a declared 2.0 back as 2.
            parse(
                r#"{"chart": {"name": "app", "version": "1.2.3"}, "values": {"host": "a.example.org", "replicas": 2.0, "list": [1.0, "x", null, true]}}"#,
            ),
        ];
        for other in &same {
            assert_eq!(SpecDigest::of(&base), SpecDigest::of(other), "{other}");
        }
        let different = [
            json!({"chart": {"name": "app", "version": "1.2.4"}, "values": {"host": "a.example.org", "replicas": 2, "list": [1, "x", null, true]}}),
            json!({"chart": {"name": "app", "version": "1.2.3"}, "values": {"host": "a.example.org", "replicas": 3, "list": [1, "x", null, true]}}),
            json!({"chart": {"name": "app", "version": "1.2.3"}, "values": {"host": "a.example.org", "replicas": "2", "list": [1, "x", null, true]}}),
            json!({"chart": {"name": "app", "version": "1.2.3"}, "values": {"host": "a.example.org", "replicas": 2, "list": [1, "x", true, null]}}),
            json!({"chart": {"name": "app", "version": "1.2.3"}, "values": {"host": "a.example.org", "replicas": 2, "list": [1, "x", null]}}),
            json!({"chart": {"name": "app", "version": "1.2.3"}, "values": {"host": "a.example.org", "replicas": 2, "list": [1, "x", null, true], "extra": null}}),
            json!({"chart": {"name": "app", "version": "1.2.3"}, "values": {"host": "a.example.org", "replicas": 2}}),
            json!({"chart": {"name": "app", "version": "1.2.3"}}),
            // A string that concatenates to the same bytes as a key and its value.
            json!({"chart": {"name": "app", "version": "1.2.3"}, "values": {"hosta.example.org": "", "replicas": 2, "list": [1, "x", null, true]}}),
        ];
        for other in &different {
            assert_ne!(SpecDigest::of(&base), SpecDigest::of(other), "{other}");
        }
    }

    #[test]
    fn numbers_hash_as_the_api_server_keeps_them() {
        // (declared, as the API server gives it back, equal by value)
        let pairs = [
            ("1.0", "1", true),
            ("-0.0", "0", true),
            ("1e300", "1e+300", true),
            // Beyond int64: kept as a float64, written back in plain digits.
            ("12345678901234567890", "12345678901234567000", true),
            // An int64 beyond 2^53 is kept exactly.
            ("9007199254740993", "9007199254740993", true),
            ("9007199254740993", "9007199254740992", false),
            ("2", "3", false),
            ("0.5", "0.25", false),
        ];
        for (declared, live, equal) in pairs {
            let (a, b) = (parse(declared), parse(live));
            assert_eq!(
                SpecDigest::of(&a) == SpecDigest::of(&b),
                equal,
                "{declared} {live}"
            );
        }
    }
}
