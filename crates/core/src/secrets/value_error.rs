//! [`ValueError`]: one refused value, named by its file and value path (its [`ValueContext`]), with
//! the command that fixes it.

use super::SecretsError;

/// Where values are being checked: the instance whose `spec.values` they sit in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueContext {
    /// The cluster id.
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// The ApplicationInstance name.
    pub instance: String,
}

/// What is wrong with one value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueErrorKind {
    /// Decryption or form failed.
    Secrets(SecretsError),
    /// A bound value found somewhere it was not bound to.
    BindingMismatch {
        /// Which field differs: `cluster`, `namespace`, `instance` or `path`.
        field: &'static str,
        /// What the binding says.
        bound_to: String,
    },
    /// The cluster requires bound values and this one is not.
    UnboundValueNotAllowed,
    /// A key on the path contains a `.`, so the value cannot be bound unambiguously.
    UnaddressablePath,
    /// More encrypted values than the limit.
    TooManyValues(usize),
    /// A key that names a credential holds a literal, not an encrypted value (the admission webhook
    /// would refuse the object; `verify` refuses the commit first).
    LiteralCredential,
    /// `spec.values` is nested too deep to be checked (fails closed).
    TooDeep,
    /// The declared object could not be read back from its compact form (a defect; fails closed).
    Unreadable(String),
}

/// One refused value, named by its file (relative to the repository) and value path:
/// `clusters/<id>/namespaces/<ns>/applicationinstances/<instance>.yaml: spec.values.<path>: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The cluster id (empty when not known: the file is then named relative to the cluster
    /// directory).
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// The ApplicationInstance.
    pub instance: String,
    /// The value path.
    pub path: String,
    /// What is wrong.
    pub kind: ValueErrorKind,
}

impl ValueError {
    /// The file the value sits in, relative to the repository (relative to the cluster directory
    /// when the cluster is not known); empty for a refusal of the whole release.
    pub fn file(&self) -> String {
        if self.namespace.is_empty() || self.instance.is_empty() {
            return String::new();
        }
        let relative = format!(
            "namespaces/{}/applicationinstances/{}.yaml",
            self.namespace, self.instance
        );
        if self.cluster.is_empty() {
            relative
        } else {
            format!("clusters/{}/{relative}", self.cluster)
        }
    }
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self.file();
        match (file.is_empty(), self.path.is_empty()) {
            (true, _) if self.cluster.is_empty() => write!(f, "{}", describe(&self.kind)),
            (true, _) => write!(f, "clusters/{}/: {}", self.cluster, describe(&self.kind)),
            (false, true) => write!(f, "{file}: spec.values: {}", describe(&self.kind)),
            (false, false) => write!(
                f,
                "{file}: spec.values.{}: {}",
                self.path,
                describe(&self.kind)
            ),
        }?;
        match self.fix_command() {
            Some(command) => write!(f, " (`{command}`)"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ValueError {}

fn describe(kind: &ValueErrorKind) -> String {
    match kind {
        ValueErrorKind::Secrets(e) => e.to_string(),
        ValueErrorKind::BindingMismatch { field, bound_to } => format!(
            "value is bound to {field} {bound_to:?}, not to this one (copied from another place?); re-encrypt it for this place"
        ),
        ValueErrorKind::TooDeep => "values are nested too deep to be checked".into(),
        ValueErrorKind::Unreadable(reason) => reason.clone(),
        ValueErrorKind::LiteralCredential => {
            "a literal credential; encrypt it, or reference a Secret with secretRef".into()
        }
        ValueErrorKind::UnboundValueNotAllowed => {
            "value is not bound and this cluster requires bound values; re-encrypt it bound".into()
        }
        ValueErrorKind::UnaddressablePath => {
            "a key on this path contains '.', so the value cannot be bound; rename the key".into()
        }
        ValueErrorKind::TooManyValues(limit) => format!("more than {limit} encrypted values"),
    }
}

impl ValueError {
    /// The command that writes a correct value here, when one does.
    pub fn fix_command(&self) -> Option<String> {
        let file = self.file();
        match self.kind {
            ValueErrorKind::BindingMismatch { .. }
            | ValueErrorKind::LiteralCredential
            | ValueErrorKind::UnboundValueNotAllowed
                if !file.is_empty() && !self.path.is_empty() =>
            {
                Some(format!(
                    "vworkspace-operator encrypt --recipient <the cluster's age1... recipient> --in-place {file} --path {}",
                    self.path
                ))
            }
            _ => None,
        }
    }
}
