//! Intent: the `ApplicationInstance` and `Operation` objects of a cluster directory, parsed and
//! validated against the repository rules (see `docs/intent.md`).
//!
//! ```text
//! clusters/<id>/namespaces/<namespace>/applicationinstances/<name>.yaml
//! clusters/<id>/namespaces/<namespace>/operations/<name>.yaml
//! ```
//!
//! Every file is checked and every refusal collected, so one run reports all of them.

use serde_json::Value;

use crate::compact::Compact;
use crate::crd::{ApplicationInstance, ApplicationInstanceSpec, Operation, OperationSpec};
use crate::limits::Limits;
use crate::repository::{ClusterTree, TreeEntry};
use crate::trust::release::{MANIFEST_FILE, SIGNATURES_DIR};
use crate::yaml::YamlError;

pub mod chart;

/// The `apiVersion` of an ApplicationInstance.
pub const APPLICATION_INSTANCE_API_VERSION: &str = "apps.vworkspace.io/v1alpha1";
/// The `apiVersion` of an Operation.
pub const OPERATION_API_VERSION: &str = "ops.vworkspace.io/v1alpha1";

/// A validated object and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<T> {
    /// Its file, relative to `clusters/<id>/`.
    pub source_path: String,
    /// The namespace (from the path).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The typed object, `metadata.namespace` set: what is applied, kept as compact JSON
    /// ([`Compact`]: a third of the typed object's memory). Only this representation is kept: the
    /// parsed YAML is dropped once typed and checked; it is shared, not copied, with the declared
    /// set the child controllers read.
    pub resource: Compact<T>,
}

/// Every object of a cluster directory.
#[derive(Debug, Clone, Default)]
pub struct Intent {
    /// ApplicationInstances, sorted by namespace and name.
    pub application_instances: Vec<Item<ApplicationInstance>>,
    /// Operations, sorted by namespace and name.
    pub operations: Vec<Item<Operation>>,
}

impl Intent {
    /// The namespaces that hold at least one object, sorted.
    pub fn namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .application_instances
            .iter()
            .map(|i| i.namespace.clone())
            .chain(self.operations.iter().map(|o| o.namespace.clone()))
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// What is wrong with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IntentErrorKind {
    /// A path outside the layout.
    OutsideLayout,
    /// A symlink.
    Symlink,
    /// A submodule.
    Submodule,
    /// A namespace or name that is not a DNS-1123 label / subdomain.
    InvalidName(String),
    /// The YAML loader refused the file (boxed: it is the largest refusal).
    Yaml(Box<YamlError>),
    /// The document is not a mapping.
    NotAnObject,
    /// A kind other than the one the directory holds.
    WrongKind {
        /// What the file says.
        api_version: String,
        /// What the file says.
        kind: String,
    },
    /// `metadata.name` differs from the file name.
    NameMismatch(String),
    /// `metadata.namespace` differs from the path.
    NamespaceMismatch(String),
    /// A `metadata` field that intent may not set.
    DisallowedMetadata(String),
    /// A `status` section.
    StatusPresent,
    /// A top-level field other than apiVersion, kind, metadata, spec.
    UnknownField(String),
    /// The object does not match its CRD type (unknown field, wrong type, missing field).
    InvalidSpec(String),
    /// A field that matches the type but breaks a rule the type cannot express.
    InvalidField {
        /// The field, e.g. `spec.chart.repository`.
        field: String,
        /// Why.
        reason: String,
    },
}

/// One refused file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("clusters/{cluster}/{path}: {}", describe(.kind))]
pub struct IntentError {
    /// The cluster id.
    pub cluster: String,
    /// The file, relative to `clusters/<id>/`.
    pub path: String,
    /// What is wrong.
    pub kind: IntentErrorKind,
}

fn describe(kind: &IntentErrorKind) -> String {
    match kind {
        IntentErrorKind::OutsideLayout => "not part of the layout: only namespaces/<namespace>/applicationinstances/<name>.yaml, namespaces/<namespace>/operations/<name>.yaml, release.yaml and release.sigs/<name>.sig belong here".into(),
        IntentErrorKind::Symlink => "is a symbolic link; links are never followed, commit the file itself".into(),
        IntentErrorKind::Submodule => "is a git submodule; submodules are not allowed in intent".into(),
        IntentErrorKind::InvalidName(m) => m.clone(),
        // The loader's message names the file already; keep what follows it.
        IntentErrorKind::Yaml(e) => {
            let text = e.to_string();
            match text.strip_prefix(e.file()).and_then(|t| t.strip_prefix(": ")) {
                Some(rest) => rest.to_owned(),
                None => text,
            }
        }
        IntentErrorKind::NotAnObject => "the document must be a mapping (a Kubernetes object)".into(),
        IntentErrorKind::WrongKind { api_version, kind } => format!(
            "kind {kind:?} (apiVersion {api_version:?}) is not accepted here; only apps.vworkspace.io/v1alpha1 ApplicationInstance under applicationinstances/ and ops.vworkspace.io/v1alpha1 Operation under operations/"
        ),
        IntentErrorKind::NameMismatch(n) => format!("metadata.name {n:?} must equal the file name"),
        IntentErrorKind::NamespaceMismatch(n) => {
            format!("metadata.namespace {n:?} must be absent or equal to the namespace in the path")
        }
        IntentErrorKind::DisallowedMetadata(f) => {
            format!("metadata.{f} may not be set in intent (only name, namespace, labels, annotations)")
        }
        IntentErrorKind::StatusPresent => "status may not be set in intent; the operator writes it".into(),
        IntentErrorKind::UnknownField(f) => format!("unknown top-level field {f:?}"),
        IntentErrorKind::InvalidSpec(m) => format!("does not match its CRD type: {m}"),
        IntentErrorKind::InvalidField { field, reason } => format!("{field}: {reason}"),
    }
}

/// Every refused file of one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct IntentErrors {
    /// The refusals, in path order.
    pub errors: Vec<IntentError>,
}

/// Whether `s` is a DNS-1123 label (namespaces): lowercase alphanumerics and '-', at most 63.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS-1123 subdomain (object names): labels joined by '.', at most 253. A name may
/// not be `.` or `..`, nor contain '/', so it never leaves its directory.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

enum Kind {
    ApplicationInstance,
    Operation,
}

/// Whether `path` is the release verifier's (`release.yaml`, `release.sigs/<name>.sig`) and a
/// regular file: those are judged by [`crate::trust::release`], not here. A link there is still refused.
fn belongs_to_release(path: &str, entry: &TreeEntry) -> bool {
    if !matches!(entry, TreeEntry::File(_)) {
        return false;
    }
    path == MANIFEST_FILE
        || path
            .strip_prefix(SIGNATURES_DIR)
            .and_then(|name| name.strip_suffix(".sig"))
            .is_some_and(|stem| !stem.is_empty() && !stem.contains('/'))
}

/// Parses and validates every intent file of `tree`.
///
/// Every file is judged, and every refusal returned: one run lists them all. The objects come back
/// in path order, which is (namespace, name) order per kind.
pub fn parse_tree(tree: &ClusterTree, limits: &Limits) -> Result<Intent, IntentErrors> {
    let files: Vec<(&String, &TreeEntry)> = tree
        .entries
        .iter()
        .filter(|(path, entry)| !belongs_to_release(path, entry))
        .collect();
    // Each file is judged on its own: parse them on every core, then assemble in path order.
    let parsed = crate::parallel::map(&files, |(path, entry)| {
        parse_file(&tree.cluster, path, entry, limits).map_err(|kind| IntentError {
            cluster: tree.cluster.clone(),
            path: (*path).clone(),
            kind,
        })
    });
    let mut intent = Intent::default();
    let mut errors = Vec::new();
    for result in parsed {
        match result {
            Ok(Parsed::ApplicationInstance(item)) => intent.application_instances.push(item),
            Ok(Parsed::Operation(item)) => intent.operations.push(item),
            Err(error) => errors.push(error),
        }
    }
    if !errors.is_empty() {
        return Err(IntentErrors { errors });
    }
    Ok(intent)
}

enum Parsed {
    ApplicationInstance(Item<ApplicationInstance>),
    Operation(Item<Operation>),
}

/// Judges one file of the cluster directory.
fn parse_file(
    cluster: &str,
    path: &str,
    entry: &TreeEntry,
    limits: &Limits,
) -> Result<Parsed, IntentErrorKind> {
    let bytes = match entry {
        TreeEntry::File(bytes) => bytes,
        TreeEntry::Symlink => return Err(IntentErrorKind::Symlink),
        TreeEntry::Submodule => return Err(IntentErrorKind::Submodule),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (namespace, kind, file) = match parts.as_slice() {
        ["namespaces", ns, "applicationinstances", file] => (*ns, Kind::ApplicationInstance, *file),
        ["namespaces", ns, "operations", file] => (*ns, Kind::Operation, *file),
        _ => return Err(IntentErrorKind::OutsideLayout),
    };
    let name = file
        .strip_suffix(".yaml")
        .ok_or(IntentErrorKind::OutsideLayout)?;
    if !is_dns1123_label(namespace) {
        return Err(IntentErrorKind::InvalidName(format!(
            "namespace {namespace:?} is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)"
        )));
    }
    if !is_dns1123_subdomain(name) {
        return Err(IntentErrorKind::InvalidName(format!(
            "file name {name:?} is not a DNS-1123 subdomain (lowercase letters, digits, '-', '.', at most 253)"
        )));
    }
    let file_label = format!("clusters/{cluster}/{path}");
    let object = parse_object(bytes, &file_label, namespace, name, &kind, limits)?;
    Ok(match kind {
        Kind::ApplicationInstance => {
            let typed: ApplicationInstance = typed(object).map_err(|e| number_hint(e, bytes))?;
            check_application_instance(&typed.spec)?;
            Parsed::ApplicationInstance(item(path, namespace, name, &typed)?)
        }
        Kind::Operation => {
            let typed: Operation = typed(object).map_err(|e| number_hint(e, bytes))?;
            check_operation(&typed.spec)?;
            Parsed::Operation(item(path, namespace, name, &typed)?)
        }
    })
}

/// YAML reads an unquoted `version: 2.10` as the number 2.1: when a string field got a number, find
/// the line that wrote it and say to quote it.
fn number_hint(error: IntentErrorKind, bytes: &[u8]) -> IntentErrorKind {
    let IntentErrorKind::InvalidSpec(message) = &error else {
        return error;
    };
    let number = ["invalid type: floating point `", "invalid type: integer `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split_once("`, expected a string"))
        .map(|(n, _)| n.to_owned());
    let Some(number) = number else {
        return unknown_field_line(error, bytes);
    };
    let text = String::from_utf8_lossy(bytes);
    for (index, line) in text.lines().enumerate() {
        let content = line.split(" #").next().unwrap_or(line);
        let Some((key, value)) = content.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let key = key.trim().trim_start_matches("- ");
        let same = value.parse::<f64>().ok().is_some_and(|v| {
            number
                .parse::<f64>()
                .is_ok_and(|n| n == v && value.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        });
        if same && !key.is_empty() {
            return IntentErrorKind::InvalidSpec(format!(
                "{message}; line {}: YAML reads `{key}: {value}` as the number {number}: quote it, `{key}: \"{value}\"`",
                index + 1
            ));
        }
    }
    IntentErrorKind::InvalidSpec(format!(
        "{message}; YAML reads an unquoted number (2.10 becomes 2.1): quote the value"
    ))
}

/// Adds the line of an unknown field (`unknown field \`chartt\``): the first line that writes it as a
/// key.
fn unknown_field_line(error: IntentErrorKind, bytes: &[u8]) -> IntentErrorKind {
    let IntentErrorKind::InvalidSpec(message) = &error else {
        return error;
    };
    let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    else {
        return error;
    };
    let text = String::from_utf8_lossy(bytes);
    let found = text.lines().enumerate().find_map(|(index, line)| {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let key = trimmed.split(':').next()?.trim().trim_matches(['"', '\'']);
        (key == field && trimmed.contains(':'))
            .then(|| (index + 1, line.len() - line.trim_start().len() + 1))
    });
    match found {
        Some((line, column)) => {
            IntentErrorKind::InvalidSpec(format!("{message} (line {line}, column {column})"))
        }
        None => error,
    }
}

/// The typed object: the spec types refuse unknown fields, so a typo fails here.
fn typed<T: serde::de::DeserializeOwned>(object: Value) -> Result<T, IntentErrorKind> {
    T::deserialize(&object).map_err(|e| IntentErrorKind::InvalidSpec(e.to_string()))
}

/// The item of a typed, checked object, kept compact.
fn item<T: serde::Serialize + serde::de::DeserializeOwned>(
    path: &str,
    namespace: &str,
    name: &str,
    typed: &T,
) -> Result<Item<T>, IntentErrorKind> {
    let resource = Compact::new(typed).map_err(|e| IntentErrorKind::InvalidSpec(e.to_string()))?;
    Ok(Item {
        source_path: path.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        resource,
    })
}

fn invalid(field: &str, reason: impl Into<String>) -> IntentErrorKind {
    IntentErrorKind::InvalidField {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Rules of an ApplicationInstance the type cannot express.
fn check_application_instance(spec: &ApplicationInstanceSpec) -> Result<(), IntentErrorKind> {
    let repository = &spec.chart.repository;
    let scheme_ok = ["https://", "oci://"].iter().any(|scheme| {
        repository
            .strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty())
    });
    if !scheme_ok {
        return Err(invalid(
            "spec.chart.repository",
            format!(
                "{repository:?} must be an https:// Helm repository or an oci:// registry path"
            ),
        ));
    }
    if repository
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "spec.chart.repository",
            "may not contain whitespace or control characters",
        ));
    }
    if spec.chart.name.is_empty() || spec.chart.name.contains(['/', ' ']) {
        return Err(invalid(
            "spec.chart.name",
            format!(
                "{:?} must be a non-empty chart name without '/' or spaces",
                spec.chart.name
            ),
        ));
    }
    if spec.chart.version.is_empty() || spec.chart.version.contains(char::is_whitespace) {
        return Err(invalid(
            "spec.chart.version",
            format!(
                "{:?} must be a non-empty version without spaces",
                spec.chart.version
            ),
        ));
    }
    chart::check_chart(&spec.chart)?;
    if let Some(release) = &spec.release_name
        && !(is_dns1123_label(release) && release.len() <= 53)
    {
        return Err(invalid(
            "spec.releaseName",
            format!("{release:?} must be a DNS-1123 label of at most 53 characters (Helm's limit)"),
        ));
    }
    if let Some(values) = &spec.values
        && !values.is_object()
    {
        return Err(invalid("spec.values", "must be a mapping"));
    }
    Ok(())
}

/// Rules of an Operation the type cannot express.
fn check_operation(spec: &OperationSpec) -> Result<(), IntentErrorKind> {
    if !is_dns1123_subdomain(&spec.template) {
        return Err(invalid(
            "spec.template",
            format!(
                "{:?} must be a template name (a DNS-1123 subdomain)",
                spec.template
            ),
        ));
    }
    let target = &spec.target;
    for (field, value) in [
        (
            "spec.target.applicationInstance",
            &target.application_instance,
        ),
        (
            "spec.target.persistentVolumeClaim",
            &target.persistent_volume_claim,
        ),
        ("spec.target.backupName", &target.backup_name),
    ] {
        if let Some(value) = value
            && !is_dns1123_subdomain(value)
        {
            return Err(invalid(
                field,
                format!("{value:?} must be an object name (a DNS-1123 subdomain)"),
            ));
        }
    }
    Ok(())
}

/// Whether `key` is a valid label or annotation key: an optional DNS-1123 subdomain prefix and
/// `/`, then a name of at most 63 characters (alphanumerics, `-`, `_`, `.`, alphanumeric at both
/// ends).
pub fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_dns1123_subdomain) && is_label_value(name) && !name.is_empty()
}

/// Whether `value` is a valid label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`,
/// alphanumeric at both ends.
pub fn is_label_value(value: &str) -> bool {
    let edge = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edge(value.chars().next())
        && edge(value.chars().last())
}

/// Checks `metadata.labels` / `metadata.annotations` as the API server would, so a pass is not
/// refused half-way through applying.
fn check_string_map(
    metadata: &serde_json::Map<String, Value>,
    map: &str,
) -> Result<(), IntentErrorKind> {
    let Some(value) = metadata.get(map) else {
        return Ok(());
    };
    let field = format!("metadata.{map}");
    let Some(entries) = value.as_object() else {
        return Err(invalid(&field, "must be a mapping of strings to strings"));
    };
    for (key, value) in entries {
        if !is_qualified_name(key) {
            return Err(invalid(
                &field,
                format!(
                    "key {key:?} is not a valid key ([prefix/]name: name at most 63 alphanumerics, '-', '_', '.')"
                ),
            ));
        }
        let Some(text) = value.as_str() else {
            return Err(invalid(
                &field,
                format!("value of {key:?} must be a string (quote it)"),
            ));
        };
        if map == "labels" && !is_label_value(text) {
            return Err(invalid(
                &field,
                format!(
                    "value {text:?} of {key:?} is not a valid label value (at most 63 alphanumerics, '-', '_', '.')"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the envelope of one object and returns it with `metadata.namespace` set.
fn parse_object(
    bytes: &[u8],
    file: &str,
    namespace: &str,
    name: &str,
    kind: &Kind,
    limits: &Limits,
) -> Result<Value, IntentErrorKind> {
    let mut value = crate::yaml::parse_document(bytes, file, limits)
        .map_err(|e| IntentErrorKind::Yaml(Box::new(e)))?;
    let Some(root) = value.as_object_mut() else {
        return Err(IntentErrorKind::NotAnObject);
    };
    let field = |root: &serde_json::Map<String, Value>, key: &str| {
        root.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind_name) = (field(root, "apiVersion"), field(root, "kind"));
    let expected = match kind {
        Kind::ApplicationInstance => (APPLICATION_INSTANCE_API_VERSION, "ApplicationInstance"),
        Kind::Operation => (OPERATION_API_VERSION, "Operation"),
    };
    if (api_version.as_str(), kind_name.as_str()) != expected {
        return Err(IntentErrorKind::WrongKind {
            api_version,
            kind: kind_name,
        });
    }
    for key in root.keys() {
        match key.as_str() {
            "apiVersion" | "kind" | "metadata" | "spec" => {}
            "status" => return Err(IntentErrorKind::StatusPresent),
            other => return Err(IntentErrorKind::UnknownField(other.to_owned())),
        }
    }
    let metadata = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(serde_json::Map::new()))
        .as_object_mut()
        .ok_or_else(|| invalid("metadata", "must be a mapping"))?;
    for key in metadata.keys() {
        if !matches!(
            key.as_str(),
            "name" | "namespace" | "labels" | "annotations"
        ) {
            return Err(IntentErrorKind::DisallowedMetadata(key.clone()));
        }
    }
    check_string_map(metadata, "labels")?;
    check_string_map(metadata, "annotations")?;
    match metadata.get("name").and_then(Value::as_str) {
        Some(n) if n == name => {}
        other => {
            return Err(IntentErrorKind::NameMismatch(
                other.unwrap_or_default().to_owned(),
            ));
        }
    }
    match metadata.get("namespace") {
        None => {}
        Some(Value::String(ns)) if ns == namespace => {}
        Some(other) => {
            return Err(IntentErrorKind::NamespaceMismatch(
                other
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| other.to_string()),
            ));
        }
    }
    metadata.insert("namespace".into(), Value::String(namespace.to_owned()));
    if !root.contains_key("spec") {
        return Err(invalid("spec", "is missing"));
    }
    Ok(value)
}
