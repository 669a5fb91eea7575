//! The validating admission webhook's decisions (pure): an `admission.k8s.io/v1` AdmissionReview in,
//! the AdmissionReview response out. For ApplicationInstance: no inline credentials in `spec.values`
//! (a key that names a credential with a literal value, unless it is an age-armored value or a
//! `secretRef`). For Operation: the template must be allowed in the namespace
//! (`Cluster.status.managedNamespaces[].allowedOperationTemplates`). Every denial says what to do
//! instead. The HTTPS side is `vworkspace_controller::children::webhook_server`; this module is
//! pure so the fuzz target and the unit tests reach it without a server.

use serde_json::{Value, json};

pub use crate::reasons::{INLINE_CREDENTIAL, TEMPLATE_NOT_ALLOWED};
use crate::secrets::values_policy::inline_credentials;

/// Largest AdmissionReview body accepted (the API server's own request limit is 3 MiB).
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

/// An Operation's template that its namespace may not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "template {template:?} is not allowed in namespace {namespace}: allowed are [{allowed}]; add it to the namespace annotation app.vworkspace.io/allowed-operation-templates"
)]
pub struct TemplateNotAllowed {
    /// The template.
    pub template: String,
    /// The namespace.
    pub namespace: String,
    /// What is allowed, comma-separated.
    pub allowed: String,
}

/// Whether `namespace` may run `template`, given the templates it allows.
pub fn check_template(
    template: &str,
    namespace: &str,
    allowed: &[String],
) -> Result<(), TemplateNotAllowed> {
    if allowed.iter().any(|t| t == template) {
        Ok(())
    } else {
        Err(TemplateNotAllowed {
            template: template.to_owned(),
            namespace: namespace.to_owned(),
            allowed: allowed.join(", "),
        })
    }
}

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
