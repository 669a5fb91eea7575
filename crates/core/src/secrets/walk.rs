//! Walking `spec.values`: the armored leaves and their dotted paths, replacing and redacting them.

use serde_json::Value;

use super::armor::is_armored;
use super::value_error::{ValueContext, ValueError, ValueErrorKind};
use super::{REDACTED, SecretsError};
use crate::limits::Limits;

/// Calls `f(path, armored)` for every armored string leaf under `values`, in document order.
///
/// The value path joins map keys and array indices with `.`: `nextcloud.mail.smtp.password`,
/// `users.0.token`. A key that itself contains a `.` makes the path ambiguous: such leaves are
/// reported by [`decrypt_values`] as [`ValueErrorKind::UnaddressablePath`].
pub fn for_each_armored(values: &Value, f: &mut dyn FnMut(&str, &str)) {
    fn walk(value: &Value, path: &mut Vec<String>, f: &mut dyn FnMut(&str, &str)) {
        match value {
            Value::String(s) if is_armored(s) => f(&path.join("."), s),
            Value::Object(map) => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, f);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    walk(v, path, f);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    walk(values, &mut Vec::new(), f);
}

fn path_is_addressable(values: &Value, path: &str) -> bool {
    // Re-walk the dotted path: it must lead back to an armored leaf; a key holding a '.' breaks it.
    let mut node = values;
    for segment in path.split('.') {
        node = match node {
            Value::Object(map) => match map.get(segment) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(items) => match segment.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    matches!(node, Value::String(s) if is_armored(s))
}

/// Replaces the leaf at `path` (dotted, as [`for_each_armored`] reports it).
pub fn set_leaf(values: &mut Value, path: &str, new: Value) -> Result<(), SecretsError> {
    let mut node = values;
    for segment in path.split('.') {
        node = match node {
            Value::Object(map) => map.get_mut(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| SecretsError::NoSuchPath(path.to_owned()))?;
    }
    *node = new;
    Ok(())
}

/// A copy of `values` with every armored leaf replaced by `<redacted>`.
pub fn redact_values(values: &Value) -> Value {
    match values {
        Value::String(s) if is_armored(s) => Value::String(REDACTED.to_owned()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact_values(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_values).collect()),
        other => other.clone(),
    }
}

/// Every armored leaf as `(dotted path, armor, addressable)`. A leaf is addressable only when no key
/// on its path contains a `.` (and the dotted path leads back to it): a bound value at
/// `values["a.b"]` names the path `a.b`, which a copy at `values.a.b` would also answer to.
pub(super) fn collect_leaves(
    values: &Value,
    at: &ValueContext,
    limits: &Limits,
) -> Result<Vec<(String, String, bool)>, Vec<ValueError>> {
    fn walk(
        value: &Value,
        path: &mut Vec<String>,
        dotted: bool,
        out: &mut Vec<(String, String, bool)>,
    ) {
        match value {
            Value::String(s) if is_armored(s) => out.push((path.join("."), s.clone(), !dotted)),
            Value::Object(map) => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, dotted || k.contains('.'), out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    walk(v, path, dotted, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut leaves = Vec::new();
    walk(values, &mut Vec::new(), false, &mut leaves);
    for leaf in &mut leaves {
        leaf.2 = leaf.2 && path_is_addressable(values, &leaf.0);
    }
    if leaves.len() > limits.max_secret_values {
        return Err(vec![ValueError {
            cluster: at.cluster.clone(),
            namespace: at.namespace.clone(),
            instance: at.instance.clone(),
            path: String::new(),
            kind: ValueErrorKind::TooManyValues(limits.max_secret_values),
        }]);
    }
    Ok(leaves)
}
