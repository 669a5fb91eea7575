//! The validating admission webhook's decisions (pure): an `admission.k8s.io/v1` AdmissionReview in,
//! the AdmissionReview response out. For ApplicationInstance: no inline credentials in `spec.values`
//! (a key that names a credential with a literal value, unless it is an age-armored value or a
//! `secretRef`). For Operation: the template must be allowed in the namespace
//! (`Cluster.status.managedNamespaces[].allowedOperationTemplates`). Every denial says what to do
//! instead. The HTTPS side is [`crate::webhook_server`].

use serde_json::{Value, json};

use crate::operations::{TEMPLATE_NOT_ALLOWED, check_template};
use crate::secrets::is_armored;

/// Largest AdmissionReview body accepted (the API server's own request limit is 3 MiB).
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;
/// Reason of a denial for inline credentials.
pub const INLINE_CREDENTIAL: &str = "InlineCredentialInValues";
/// How deep `spec.values` is walked (deeper values are refused: nobody writes Helm values 64 deep).
pub const MAX_VALUES_DEPTH: usize = 64;

/// What the webhook knows of the cluster: the templates each managed namespace may run.
pub trait TemplatePolicy {
    /// The allowed templates of `namespace`, or `None` when no `Cluster` records it as managed.
    fn allowed_templates(&self, namespace: &str) -> Option<Vec<String>>;
}

impl<F: Fn(&str) -> Option<Vec<String>>> TemplatePolicy for F {
    fn allowed_templates(&self, namespace: &str) -> Option<Vec<String>> {
        self(namespace)
    }
}

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

/// The decision on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Admitted.
    Allow,
    /// Refused, with a reason and a message that says what to do instead.
    Deny {
        /// The bounded reason.
        reason: &'static str,
        /// The message shown to the user by kubectl.
        message: String,
    },
}

fn deny(reason: &'static str, message: String) -> Decision {
    Decision::Deny { reason, message }
}

/// Decides on the `request` of an AdmissionReview.
pub fn decide(request: &Value, policy: &dyn TemplatePolicy) -> Decision {
    if request["operation"] == "DELETE" {
        return Decision::Allow;
    }
    let object = &request["object"];
    let namespace = request["namespace"]
        .as_str()
        .or_else(|| object["metadata"]["namespace"].as_str())
        .unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or("(unnamed)");
    match request["kind"]["kind"].as_str() {
        Some("ApplicationInstance") => {
            let values = &object["spec"]["values"];
            match inline_credentials(values) {
                Err(message) => deny(INLINE_CREDENTIAL, message),
                Ok(found) if found.is_empty() => Decision::Allow,
                Ok(found) => deny(
                    INLINE_CREDENTIAL,
                    format!(
                        "ApplicationInstance {namespace}/{name}: spec.values holds literal credentials at {}; encrypt each with `vworkspace-operator encrypt --recipient <cluster recipient> --cluster <id> --namespace {namespace} --instance {name} --path <path>` and commit the armored value, or reference an existing Secret with secretRef",
                        found
                            .iter()
                            .map(|p| format!("spec.values.{p}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            }
        }
        Some("Operation") => {
            let template = object["spec"]["template"].as_str().unwrap_or_default();
            match policy.allowed_templates(namespace) {
                None => deny(
                    TEMPLATE_NOT_ALLOWED,
                    format!(
                        "Operation {namespace}/{name}: namespace {namespace} is not recorded as managed by any Cluster yet; label it app.vworkspace.io/managed-by=vworkspace and wait for the next pass"
                    ),
                ),
                Some(allowed) => match check_template(template, namespace, &allowed) {
                    Ok(()) => Decision::Allow,
                    Err(e) => deny(
                        TEMPLATE_NOT_ALLOWED,
                        format!("Operation {namespace}/{name}: {e}"),
                    ),
                },
            }
        }
        // The webhook is registered for the two kinds only; anything else is not its business.
        _ => Decision::Allow,
    }
}

/// Answers an AdmissionReview body (bytes as the API server sends them) with the response body.
pub fn review(body: &[u8], policy: &dyn TemplatePolicy) -> Value {
    let refuse = |uid: &Value, message: String| {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": false, "status": {"code": 400, "message": message}},
        })
    };
    if body.len() > MAX_REVIEW_BYTES {
        return refuse(&Value::Null, "AdmissionReview larger than 3 MiB".into());
    }
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return refuse(&Value::Null, format!("not an AdmissionReview: {e}")),
    };
    let request = &parsed["request"];
    let uid = request["uid"].clone();
    if parsed["apiVersion"] != "admission.k8s.io/v1" || !uid.is_string() {
        return refuse(
            &uid,
            "expected an admission.k8s.io/v1 AdmissionReview with request.uid".into(),
        );
    }
    let response = match decide(request, policy) {
        Decision::Allow => json!({"uid": uid, "allowed": true}),
        Decision::Deny { reason, message } => json!({
            "uid": uid,
            "allowed": false,
            "status": {"code": 403, "reason": reason, "message": message},
        }),
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

#[cfg(test)]
mod tests {
    use super::*;

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
