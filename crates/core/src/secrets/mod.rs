//! age-encrypted values inside `ApplicationInstance.spec.values`.
//!
//! A string leaf that starts with `-----BEGIN AGE ENCRYPTED FILE-----` is a secret value: an
//! ASCII-armored age file encrypted to the cluster's X25519 recipient. Nothing else is secret.
//! Values written by `vworkspace-operator encrypt --cluster --namespace --instance --path` carry their
//! scope in a small text envelope inside the plaintext (see [`Binding`]); the operator refuses a bound
//! value found anywhere but where it was bound.
//!
//! Plaintext lives only in [`SecretValue`], which zeroizes on drop and prints as `<redacted>`.
//! Errors name value paths and reasons, never a value, never a key.

mod armor;
mod encryption;
mod envelope;
mod error;
mod identities;
mod secret_value;
mod value_error;
mod values;
pub mod values_policy;
pub mod verdict;
mod walk;

pub use armor::{ARMOR_BEGIN, is_armored};
pub use encryption::{decrypt, decrypt_any, encrypt};
pub use envelope::{Binding, ENVELOPE_MAGIC};
pub use error::SecretsError;
pub use identities::{Identities, generate, parse_recipient};
pub use secret_value::{REDACTED, SecretValue};
pub use value_error::{ValueContext, ValueError, ValueErrorKind};
pub use values::{DecryptedValues, check_values_form, decrypt_values};
pub use values_policy::ValuesPolicy;
pub use walk::{for_each_armored, redact_values, set_leaf};

#[cfg(test)]
mod tests;
