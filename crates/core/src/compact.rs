//! A declared object kept as its compact JSON: what a verified intent holds of each object once it
//! is parsed and checked.
//!
//! A long-running process keeps the last verified intent of every `Cluster` (a pass over an
//! unchanged commit reuses it instead of parsing every file again) and shares its objects with the
//! declared set the child controllers read. Typed, an `ApplicationInstance` with one encrypted value
//! costs about 3.1 KiB (serde_json's maps allocate a B-tree node of eleven slots for two keys, and
//! `ObjectMeta` is wide); as JSON text about a third of that. At 10,000 instances the difference is
//! about 20 MiB, a sixth of the process at rest. The typed object is rebuilt when it is read: when a
//! child is built, an object written or a value checked, a few microseconds each.
//!
//! The JSON is written by this crate from the typed object, so reading it back gives that object
//! again: serde_json's `float_roundtrip` feature (enabled for the workspace) makes every float read
//! back bit for bit. Reading back can still fail only on a defect; it is an error, never a panic.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// An object of type `T` kept as compact JSON; cloning shares it.
pub struct Compact<T> {
    json: Arc<str>,
    kind: PhantomData<fn() -> T>,
}

/// A compact object that did not serialize or read back (a defect, not bad input: the JSON was
/// written from the typed object).
#[derive(Debug, thiserror::Error)]
#[error("the declared object could not be {action}: {source}")]
pub struct CompactError {
    action: &'static str,
    #[source]
    source: serde_json::Error,
}

impl<T: Serialize + DeserializeOwned> Compact<T> {
    /// Keeps `object` as compact JSON.
    pub fn new(object: &T) -> Result<Compact<T>, CompactError> {
        let json = serde_json::to_string(object).map_err(|source| CompactError {
            action: "serialized",
            source,
        })?;
        Ok(Compact {
            json: json.into(),
            kind: PhantomData,
        })
    }

    /// The typed object, read back.
    pub fn get(&self) -> Result<T, CompactError> {
        self.part()
    }

    /// The object as a JSON value.
    pub fn value(&self) -> Result<Value, CompactError> {
        self.part()
    }

    /// The JSON read as another type: a view of some of its fields (unknown fields are skipped
    /// unless `P` refuses them).
    pub fn part<P: DeserializeOwned>(&self) -> Result<P, CompactError> {
        serde_json::from_str(&self.json).map_err(|source| CompactError {
            action: "read back",
            source,
        })
    }

    /// One top-level field as a JSON value (`Null` when absent): the spec without the rest.
    pub fn field(&self, name: &str) -> Result<Value, CompactError> {
        Ok(match self.value()? {
            Value::Object(mut fields) => fields.remove(name).unwrap_or(Value::Null),
            _ => Value::Null,
        })
    }
}

impl<T> Compact<T> {
    /// Any text, unchecked: for tests of what a read-back failure does.
    #[cfg(test)]
    pub(crate) fn from_json_unchecked(json: &str) -> Compact<T> {
        Compact {
            json: json.into(),
            kind: PhantomData,
        }
    }

    /// The compact JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }
}

impl<T> Clone for Compact<T> {
    fn clone(&self) -> Self {
        Compact {
            json: self.json.clone(),
            kind: PhantomData,
        }
    }
}

/// Equal when the JSON is: serde_json writes maps in key order, so equal objects write equal text.
impl<T> PartialEq for Compact<T> {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

/// The JSON as it is: the declared intent holds ciphertexts, never a plaintext value.
impl<T> std::fmt::Debug for Compact<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Compact").field(&&*self.json).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ApplicationInstance, ApplicationInstanceSpec, ChartRef};

    fn instance(values: Value) -> ApplicationInstance {
        let mut object = ApplicationInstance::new(
            "app",
            ApplicationInstanceSpec {
                chart: ChartRef {
                    repository: "https://charts.example.org/".into(),
                    name: "app".into(),
                    version: "1.2.3".into(),
                    digest: None,
                },
                release_name: None,
                values: Some(values),
                suspend: None,
            },
        );
        object.metadata.namespace = Some("ns-a".into());
        object
    }

    #[test]
    fn an_object_reads_back_as_it_was_floats_bit_for_bit() {
        // Floats at the edges, and two that serde_json's default (best-effort) parser reads back
        // one unit off (found by a search over random doubles; `float_roundtrip` reads them right).
        let values = serde_json::json!({
            "offByOne": 1.0715660391465826e-75, "offByOneLarge": -1.603964615428183e143,
            "ratio": 0.1, "tiny": 5e-324, "near": 2.225_073_858_507_201e-308,
            "big": 1.7976931348623157e308, "third": 0.333_333_333_333_333_3,
            "pi": std::f64::consts::PI, "negativeZero": -0.0,
            "count": 3, "large": u64::MAX, "negative": i64::MIN,
            "nested": {"list": [1, 2.5, "x", null, true]},
        });
        let object = instance(values);
        let compact = Compact::new(&object).expect("compact");
        let back = compact.get().expect("read back");
        assert_eq!(back, object);
        let (Some(a), Some(b)) = (&back.spec.values, &object.spec.values) else {
            panic!("values")
        };
        for key in [
            "offByOne",
            "offByOneLarge",
            "ratio",
            "tiny",
            "near",
            "big",
            "third",
            "pi",
            "negativeZero",
        ] {
            let (x, y) = (a[key].as_f64().expect("f64"), b[key].as_f64().expect("f64"));
            assert_eq!(x.to_bits(), y.to_bits(), "{key}");
        }
        assert_eq!(
            compact.field("spec").expect("spec"),
            serde_json::to_value(&object.spec).expect("value")
        );
        assert_eq!(compact.field("absent").expect("absent"), Value::Null);
    }

    #[test]
    fn it_is_the_objects_json_and_compares_as_that_text() {
        let object = instance(serde_json::json!({"host": "a.example.org", "replicas": 2}));
        let compact = Compact::new(&object).expect("compact");
        assert_eq!(
            compact.json(),
            serde_json::to_string(&object).expect("json")
        );
        assert_eq!(compact, Compact::new(&object).expect("again"));
        let other = instance(serde_json::json!({"host": "b.example.org", "replicas": 2}));
        assert_ne!(compact, Compact::new(&other).expect("other"));
        assert!(format!("{compact:?}").contains("a.example.org"));
    }
}
