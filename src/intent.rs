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

use crate::crd::{ApplicationInstance, Operation};
use crate::git::{ClusterTree, TreeEntry};
use crate::limits::Limits;
use crate::release::{MANIFEST_FILE, SIGNATURES_DIR};

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
    /// The typed object, `metadata.namespace` set: what is applied. (Only this representation is
    /// kept: the parsed YAML is dropped once typed, which keeps a pass's memory to one copy.)
    pub resource: T,
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
    /// The YAML loader refused the file.
    Yaml(String),
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
    /// The spec does not match the schema.
    InvalidSpec(String),
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
        IntentErrorKind::Yaml(m) => m.clone(),
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
        IntentErrorKind::InvalidSpec(m) => format!("spec: {m}"),
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

/// Parses and validates every intent file of `tree`.
pub fn parse_tree(tree: &ClusterTree, limits: &Limits) -> Result<Intent, IntentErrors> {
    let files: Vec<(&String, &TreeEntry)> = tree
        .entries
        .iter()
        .filter(|(path, _)| *path != MANIFEST_FILE && !path.starts_with(SIGNATURES_DIR))
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
    // BTreeMap order is path order, which is (namespace, name) order per kind.
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
            "file name {name:?} is not a DNS-1123 subdomain (lowercase letters, digits, '-', '.')"
        )));
    }
    let file_label = format!("clusters/{cluster}/{path}");
    let object = parse_object(bytes, &file_label, namespace, name, &kind, limits)?;
    Ok(match kind {
        Kind::ApplicationInstance => {
            Parsed::ApplicationInstance(item(path, namespace, name, object)?)
        }
        Kind::Operation => Parsed::Operation(item(path, namespace, name, object)?),
    })
}

/// The typed object: the spec types refuse unknown fields, so a typo fails here.
fn item<T: serde::de::DeserializeOwned>(
    path: &str,
    namespace: &str,
    name: &str,
    object: Value,
) -> Result<Item<T>, IntentErrorKind> {
    let resource =
        T::deserialize(&object).map_err(|e| IntentErrorKind::InvalidSpec(e.to_string()))?;
    Ok(Item {
        source_path: path.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        resource,
    })
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
    let mut value = crate::yaml::parse_document(bytes, file, limits).map_err(|e| {
        // The loader's message names the file already; keep only what follows it.
        let text = e.to_string();
        IntentErrorKind::Yaml(
            text.strip_prefix(&format!("{file}: "))
                .unwrap_or(&text)
                .to_owned(),
        )
    })?;
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
        .ok_or_else(|| IntentErrorKind::InvalidSpec("metadata must be a mapping".into()))?;
    for key in metadata.keys() {
        if !matches!(
            key.as_str(),
            "name" | "namespace" | "labels" | "annotations"
        ) {
            return Err(IntentErrorKind::DisallowedMetadata(key.clone()));
        }
    }
    for map in ["labels", "annotations"] {
        if let Some(v) = metadata.get(map)
            && !v
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
        {
            return Err(IntentErrorKind::InvalidSpec(format!(
                "metadata.{map} must map strings to strings"
            )));
        }
    }
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
        return Err(IntentErrorKind::InvalidSpec("missing".into()));
    }
    Ok(value)
}
