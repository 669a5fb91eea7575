//! The cluster's policies on `spec.values`: [`ValuesPolicy`] (whether values must be bound), and a
//! credential-named key must not hold a literal. The literal rule is applied by the pass (so `verify`
//! refuses the commit in CI) and by the admission webhook (so an API writer cannot slip one in).

use serde_json::Value;

use super::is_armored;

/// The cluster's policy for values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValuesPolicy {
    /// Refuse values that are not bound.
    pub require_bound: bool,
}

/// How deep `spec.values` is walked (deeper values are refused: nobody writes Helm values 64 deep).
pub const MAX_VALUES_DEPTH: usize = 64;

const CREDENTIAL_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "token",
    "apikey",
    "privatekey",
    "secretkey",
    "clientsecret",
    "accesskey",
    "credentials",
    "credential",
];

// Keys that name where a credential is, not the credential itself (`existingSecret`,
// `passwordSecretName`, `tokenFile`), or a switch (`passwordEnabled`).
const REFERENCE_SUFFIXES: &[&str] = &[
    "name",
    "ref",
    "file",
    "path",
    "enabled",
    "existingsecret",
    "secretname",
    "length",
    "policy",
];

/// Whether a values key names a credential.
pub fn names_credential(key: &str) -> bool {
    let normalized: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if REFERENCE_SUFFIXES.iter().any(|s| normalized.ends_with(s)) {
        return false;
    }
    normalized == "secret" || CREDENTIAL_WORDS.iter().any(|w| normalized.contains(w))
}

/// Every path under `values` where a credential-named key holds a literal (non-empty string or number
/// that is not age-armored), up to [`MAX_VALUES_DEPTH`].
pub fn inline_credentials(values: &Value) -> Result<Vec<String>, String> {
    fn walk(
        value: &Value,
        path: &mut Vec<String>,
        credential: bool,
        found: &mut Vec<String>,
    ) -> Result<(), String> {
        if path.len() > MAX_VALUES_DEPTH {
            return Err(format!(
                "spec.values is nested deeper than {MAX_VALUES_DEPTH} levels"
            ));
        }
        match value {
            Value::String(s) if credential && !s.is_empty() && !is_armored(s) => {
                found.push(path.join("."));
            }
            Value::Number(_) if credential => found.push(path.join(".")),
            Value::Object(map) => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, names_credential(k), found)?;
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    // A list under a credential key (`tokens: [...]`) holds credentials.
                    walk(v, path, credential, found)?;
                    path.pop();
                }
            }
            _ => {}
        }
        Ok(())
    }
    let mut found = Vec::new();
    walk(values, &mut Vec::new(), false, &mut found)?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credential_keys_and_references() {
        for key in [
            "password",
            "adminPassword",
            "smtp_passwd",
            "apiKey",
            "API-KEY",
            "token",
            "clientSecret",
            "secret",
            "privateKey",
            "awsAccessKeyId",
        ] {
            assert!(names_credential(key), "{key}");
        }
        for key in [
            "existingSecret",
            "passwordSecretName",
            "tokenFile",
            "secretRef",
            "passwordEnabled",
            "host",
            "username",
            "secretName",
            "passwordLength",
        ] {
            assert!(!names_credential(key), "{key}");
        }
    }

    #[test]
    fn literals_refused_armored_refs_and_empties_allowed() {
        let armored =
            "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n";
        let values = json!({
            "db": {"password": "hunter2", "host": "db"},
            "smtp": {"password": armored},
            "api": {"token": {"secretRef": {"name": "api", "key": "token"}}},
            "admin": {"password": ""},
            "pin": {"passphrase": 1234},
            "tokens": ["a", armored],
            "existingSecret": "nextcloud-db",
        });
        assert_eq!(
            inline_credentials(&values),
            Ok(vec![
                "db.password".into(),
                "pin.passphrase".into(),
                "tokens.0".into()
            ])
        );
        let mut deep = json!("x");
        for _ in 0..100 {
            deep = json!({"a": deep});
        }
        assert!(inline_credentials(&deep).is_err());
    }
}
