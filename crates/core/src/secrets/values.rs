//! Every value of one instance: decrypted, bindings and policy checked ([`decrypt_values`]), or only
//! their form checked without a key ([`check_values_form`]).

use serde_json::Value;

use super::armor::dearmor_and_check;
use super::encryption::decrypt;
use super::value_error::{ValueContext, ValueError, ValueErrorKind};
use super::values_policy::ValuesPolicy;
use super::walk::collect_leaves;
use super::{Identities, REDACTED, SecretValue};
use crate::limits::Limits;

/// Every value of one instance, decrypted. `Debug` prints paths only.
#[derive(Default)]
pub struct DecryptedValues {
    entries: Vec<(String, SecretValue, bool)>,
}

impl std::fmt::Debug for DecryptedValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|(p, _, bound)| format!("{p} (bound: {bound}) = {REDACTED}")),
            )
            .finish()
    }
}

impl DecryptedValues {
    /// How many values.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// The paths of values that are not bound (accepted, but reported).
    pub fn unbound_paths(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, _, b)| !b)
            .map(|(p, _, _)| p.clone())
            .collect()
    }
    /// `(path, value, bound)` for every value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretValue, bool)> {
        self.entries.iter().map(|(p, v, b)| (p.as_str(), v, *b))
    }
}

/// Decrypts every armored leaf of one instance's `spec.values`, checks bindings and policy, and
/// collects every refusal (one per bad leaf).
pub fn decrypt_values(
    values: &Value,
    at: &ValueContext,
    identities: &Identities,
    policy: &ValuesPolicy,
    limits: &Limits,
) -> Result<DecryptedValues, Vec<ValueError>> {
    let leaves = collect_leaves(values, at, limits)?;
    let mut errors = Vec::new();
    let mut decrypted = DecryptedValues::default();
    for (path, armored, addressable) in leaves {
        let error = |kind| ValueError {
            cluster: at.cluster.clone(),
            namespace: at.namespace.clone(),
            instance: at.instance.clone(),
            path: path.clone(),
            kind,
        };
        if !addressable {
            errors.push(error(ValueErrorKind::UnaddressablePath));
            continue;
        }
        match decrypt(&armored, identities, limits) {
            Err(e) => errors.push(error(ValueErrorKind::Secrets(e))),
            Ok((Some(binding), value)) => {
                let expected = [
                    ("cluster", &at.cluster),
                    ("namespace", &at.namespace),
                    ("instance", &at.instance),
                    ("path", &path),
                ];
                match binding
                    .fields()
                    .into_iter()
                    .zip(expected)
                    .find(|((_, bound), (_, here))| bound != here)
                {
                    Some(((field, bound_to), _)) => {
                        errors.push(error(ValueErrorKind::BindingMismatch {
                            field,
                            bound_to: bound_to.to_owned(),
                        }))
                    }
                    None => decrypted.entries.push((path.clone(), value, true)),
                }
            }
            Ok((None, value)) => {
                if policy.require_bound {
                    errors.push(error(ValueErrorKind::UnboundValueNotAllowed));
                } else {
                    decrypted.entries.push((path.clone(), value, false));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(decrypted)
    } else {
        Err(errors)
    }
}

/// Checks every armored leaf without identities (e.g. in a pull request's CI, which must not hold
/// the cluster's key): size, armor, header, X25519 stanzas only. Returns how many values there are.
pub fn check_values_form(
    values: &Value,
    at: &ValueContext,
    limits: &Limits,
) -> Result<usize, Vec<ValueError>> {
    let leaves = collect_leaves(values, at, limits)?;
    let mut errors = Vec::new();
    for (path, armored, addressable) in &leaves {
        let kind = if !addressable {
            Some(ValueErrorKind::UnaddressablePath)
        } else {
            dearmor_and_check(armored, limits)
                .err()
                .map(ValueErrorKind::Secrets)
        };
        if let Some(kind) = kind {
            errors.push(ValueError {
                cluster: at.cluster.clone(),
                namespace: at.namespace.clone(),
                instance: at.instance.clone(),
                path: path.clone(),
                kind,
            });
        }
    }
    if errors.is_empty() {
        Ok(leaves.len())
    } else {
        Err(errors)
    }
}
