//! The objects two intents declare, compared: created, changed field by field, removed; and every
//! encrypted value that was added, rotated, removed or copied from somewhere else.
//!
//! Compared are the objects as the authors wrote them (`metadata.labels`, `metadata.annotations`,
//! `spec`), not the plan: the plan stamps every object with the commit and serial, which change on
//! every release and would hide the change under review. Ciphertext is never shown: a value is
//! `<redacted>` on both sides, with whether its ciphertext changed.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::intent::{Intent, Item};
use crate::secrets::{self, REDACTED};

/// One declared object, ordered by namespace, kind and name (the order every report uses).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The namespace (from the path).
    pub namespace: String,
    /// `ApplicationInstance` or `Operation`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One changed field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// The field, e.g. `spec.chart.version`.
    pub path: String,
    /// The base's value as one line of JSON (values `<redacted>`), `None` when the field is added.
    pub from: Option<String>,
    /// The head's value, `None` when the field is removed.
    pub to: Option<String>,
    /// The field is an encrypted value whose ciphertext changed (both sides show `<redacted>`).
    pub secret: bool,
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectChange {
    /// Declared by the head only: a pass would create it (an Operation would run).
    Created,
    /// Declared by both, with these fields changed.
    Changed(Vec<FieldChange>),
    /// Declared by the base only: a pass would prune it.
    Removed,
}

/// One object that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDiff {
    /// The object.
    pub object: ObjectRef,
    /// Its file relative to `clusters/<id>/`: the head's, or the base's when it was removed.
    pub source_path: String,
    /// What changed.
    pub change: ObjectChange,
}

/// Where an encrypted value sits: an instance and its value path (`a.b.c`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValueLocation {
    /// The namespace.
    pub namespace: String,
    /// The ApplicationInstance.
    pub instance: String,
    /// The path inside `spec.values`.
    pub path: String,
}

impl std::fmt::Display for ValueLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} spec.values.{}",
            self.namespace, self.instance, self.path
        )
    }
}

/// What happened to one encrypted value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueChangeKind {
    /// A value where the base had none.
    Added,
    /// A new ciphertext where the base had another one (a rotation).
    Rotated,
    /// The base's value is gone.
    Removed,
}

/// One encrypted value that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueChange {
    /// Where it is (in the head; in the base when removed).
    pub at: ValueLocation,
    /// Its file relative to `clusters/<id>/`.
    pub source_path: String,
    /// What happened.
    pub kind: ValueChangeKind,
    /// The very same ciphertext sits elsewhere (in the base or the head): it was copied, so its
    /// binding, if it has one, names another place and the operator will refuse it; an unbound copy
    /// would hand one tenant's secret to another unseen.
    pub copied_from: Option<ValueLocation>,
}

/// Everything that differs between two intents, in (namespace, kind, name) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntentDiff {
    /// The objects that differ.
    pub objects: Vec<ObjectDiff>,
    /// How many objects both declare alike.
    pub unchanged: usize,
    /// Every encrypted value that changed, in location order.
    pub values: Vec<ValueChange>,
}

impl IntentDiff {
    /// Whether anything differs.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// The reviewable part of one object: labels, annotations, spec; and its file.
struct Reviewed {
    source_path: String,
    body: Value,
}

fn reviewable<T: serde::Serialize + serde::de::DeserializeOwned>(item: &Item<T>) -> Reviewed {
    // An object that does not read back (a defect) shows as `null`: a change the reviewer sees.
    let whole = item.resource.value().unwrap_or(Value::Null);
    let metadata = whole.get("metadata");
    let body = serde_json::json!({
        "metadata": {
            "labels": metadata.and_then(|m| m.get("labels")).cloned().unwrap_or(Value::Null),
            "annotations": metadata.and_then(|m| m.get("annotations")).cloned().unwrap_or(Value::Null),
        },
        "spec": whole.get("spec").cloned().unwrap_or(Value::Null),
    });
    Reviewed {
        source_path: item.source_path.clone(),
        body,
    }
}

fn index(intent: &Intent) -> BTreeMap<ObjectRef, Reviewed> {
    let key = |kind: &str, namespace: &str, name: &str| ObjectRef {
        namespace: namespace.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
    };
    let instances = intent.application_instances.iter().map(|item| {
        (
            key("ApplicationInstance", &item.namespace, &item.name),
            reviewable(item),
        )
    });
    let operations = intent.operations.iter().map(|item| {
        (
            key("Operation", &item.namespace, &item.name),
            reviewable(item),
        )
    });
    instances.chain(operations).collect()
}

/// Compares what `base` and `head` declare.
pub fn compare(base: &Intent, head: &Intent) -> IntentDiff {
    let before = index(base);
    let after = index(head);
    let keys: BTreeSet<&ObjectRef> = before.keys().chain(after.keys()).collect();
    let mut diff = IntentDiff::default();
    for key in keys {
        let change = match (before.get(key), after.get(key)) {
            (None, Some(new)) => Some((new, ObjectChange::Created)),
            (Some(old), None) => Some((old, ObjectChange::Removed)),
            (Some(old), Some(new)) => {
                let mut fields = Vec::new();
                walk("", Some(&old.body), Some(&new.body), &mut fields);
                if fields.is_empty() {
                    diff.unchanged += 1;
                    None
                } else {
                    Some((new, ObjectChange::Changed(fields)))
                }
            }
            (None, None) => None,
        };
        if let Some((reviewed, change)) = change {
            diff.objects.push(ObjectDiff {
                object: key.clone(),
                source_path: reviewed.source_path.clone(),
                change,
            });
        }
    }
    diff.values = value_changes(base, head);
    diff
}

/// A value as one line of JSON, encrypted values `<redacted>`.
fn render(value: &Value) -> String {
    match secrets::redact_values(value) {
        Value::String(s) if s == REDACTED => REDACTED.to_owned(),
        other => other.to_string(),
    }
}

fn is_secret(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::String(s)) if secrets::is_armored(s))
}

fn walk(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<FieldChange>) {
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                walk(&join(k), a.get(k), b.get(k), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(FieldChange {
            path: path.to_owned(),
            from: a.map(render),
            to: b.map(render),
            secret: is_secret(a) && is_secret(b),
        }),
    }
}

/// Every armored leaf of every instance: location -> (ciphertext, file).
fn value_index(intent: &Intent) -> BTreeMap<ValueLocation, (String, String)> {
    let mut out = BTreeMap::new();
    for item in &intent.application_instances {
        // An object that does not read back shows as `null` in the object changes (`reviewable`).
        let Some(values) = item.resource.get().ok().and_then(|i| i.spec.values) else {
            continue;
        };
        secrets::for_each_armored(&values, &mut |path, armored| {
            out.insert(
                ValueLocation {
                    namespace: item.namespace.clone(),
                    instance: item.name.clone(),
                    path: path.to_owned(),
                },
                (armored.to_owned(), item.source_path.clone()),
            );
        });
    }
    out
}

fn value_changes(base: &Intent, head: &Intent) -> Vec<ValueChange> {
    let before = value_index(base);
    let after = value_index(head);
    // Where each ciphertext sits, on either side: the first location (in order) wins, so the
    // report is the same on every run.
    let mut seen: BTreeMap<&str, Vec<&ValueLocation>> = BTreeMap::new();
    for (at, (armored, _)) in before.iter().chain(after.iter()) {
        seen.entry(armored.as_str()).or_default().push(at);
    }
    let copied_from = |at: &ValueLocation, armored: &str| {
        seen.get(armored).and_then(|places| {
            places
                .iter()
                .filter(|p| **p != at)
                .min()
                .map(|p| (*p).clone())
        })
    };
    let mut out = Vec::new();
    let locations: BTreeSet<&ValueLocation> = before.keys().chain(after.keys()).collect();
    for at in locations {
        let (kind, armored, source_path) = match (before.get(at), after.get(at)) {
            (None, Some((new, file))) => (ValueChangeKind::Added, new, file),
            (Some((old, _)), Some((new, file))) if old != new => {
                (ValueChangeKind::Rotated, new, file)
            }
            (Some((old, file)), None) => (ValueChangeKind::Removed, old, file),
            _ => continue,
        };
        out.push(ValueChange {
            at: at.clone(),
            source_path: source_path.clone(),
            kind,
            copied_from: match kind {
                ValueChangeKind::Removed => None,
                _ => copied_from(at, armored),
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use crate::repository::{ClusterTree, TreeEntry};

    const ARMOR_A: &str =
        "-----BEGIN AGE ENCRYPTED FILE-----\nAAAA\n-----END AGE ENCRYPTED FILE-----\n";
    const ARMOR_B: &str =
        "-----BEGIN AGE ENCRYPTED FILE-----\nBBBB\n-----END AGE ENCRYPTED FILE-----\n";

    fn instance(name: &str, version: &str, secret: &str) -> String {
        let secret = secret.replace('\n', "\\n");
        format!(
            "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: {name}\nspec:\n  chart:\n    repository: https://charts.example.org/\n    name: app\n    version: {version}\n  values:\n    password: \"{secret}\"\n"
        )
    }

    fn intent(files: &[(&str, String)]) -> Intent {
        let entries = files
            .iter()
            .map(|(p, text)| (p.to_string(), TreeEntry::File(text.clone().into_bytes())))
            .collect();
        let tree = ClusterTree::from_entries("demo", entries);
        crate::intent::parse_tree(&tree, &Limits::default()).expect("valid intent")
    }

    const A: &str = "namespaces/ns-a/applicationinstances/app.yaml";
    const B: &str = "namespaces/ns-b/applicationinstances/app.yaml";

    #[test]
    fn created_changed_removed_in_order() {
        let base = intent(&[(A, instance("app", "1.0.0", ARMOR_A))]);
        let head = intent(&[(B, instance("app", "1.0.0", ARMOR_B))]);
        let diff = compare(&base, &head);
        let kinds: Vec<(&str, &ObjectChange)> = diff
            .objects
            .iter()
            .map(|o| (o.object.namespace.as_str(), &o.change))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("ns-a", &ObjectChange::Removed),
                ("ns-b", &ObjectChange::Created)
            ]
        );
        assert_eq!(diff.unchanged, 0);
    }

    #[test]
    fn fields_are_listed_and_values_redacted() {
        let base = intent(&[(A, instance("app", "1.0.0", ARMOR_A))]);
        let head = intent(&[(A, instance("app", "1.0.1", ARMOR_B))]);
        let diff = compare(&base, &head);
        let ObjectChange::Changed(fields) = &diff.objects[0].change else {
            panic!("changed expected: {diff:?}");
        };
        assert_eq!(
            fields,
            &vec![
                FieldChange {
                    path: "spec.chart.version".into(),
                    from: Some("\"1.0.0\"".into()),
                    to: Some("\"1.0.1\"".into()),
                    secret: false,
                },
                FieldChange {
                    path: "spec.values.password".into(),
                    from: Some(REDACTED.into()),
                    to: Some(REDACTED.into()),
                    secret: true,
                },
            ]
        );
        assert!(
            !format!("{diff:?}").contains("AAAA"),
            "no ciphertext in a diff"
        );
        assert_eq!(diff.values.len(), 1);
        assert_eq!(diff.values[0].kind, ValueChangeKind::Rotated);
        assert_eq!(diff.values[0].copied_from, None);
    }

    #[test]
    fn a_copied_ciphertext_names_where_it_came_from() {
        let base = intent(&[
            (A, instance("app", "1.0.0", ARMOR_A)),
            (B, instance("app", "1.0.0", ARMOR_B)),
        ]);
        let head = intent(&[
            (A, instance("app", "1.0.0", ARMOR_A)),
            (B, instance("app", "1.0.0", ARMOR_A)),
        ]);
        let diff = compare(&base, &head);
        assert_eq!(diff.values.len(), 1);
        let copied = diff.values[0].copied_from.as_ref().expect("copied");
        assert_eq!(copied.to_string(), "ns-a/app spec.values.password");
        assert_eq!(diff.values[0].at.namespace, "ns-b");
    }

    #[test]
    fn a_chart_digest_pinned_then_moved_is_shown_field_by_field() {
        const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        let oci = |digest: Option<&str>| {
            let digest = digest.map_or(String::new(), |d| format!("    digest: {d}\n"));
            format!(
                "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: app\nspec:\n  chart:\n    repository: oci://registry.example.org/charts\n    name: app\n    version: 1.0.0\n{digest}"
            )
        };
        let field = |from: Option<&str>, to: Option<&str>| FieldChange {
            path: "spec.chart.digest".into(),
            from: from.map(|d| format!("{d:?}")),
            to: to.map(|d| format!("{d:?}")),
            secret: false,
        };
        let cases = [
            (None, Some(D1), field(None, Some(D1))),
            (Some(D1), Some(D2), field(Some(D1), Some(D2))),
            (Some(D1), None, field(Some(D1), None)),
        ];
        for (from, to, expected) in cases {
            let diff = compare(&intent(&[(A, oci(from))]), &intent(&[(A, oci(to))]));
            assert_eq!(
                diff.objects[0].change,
                ObjectChange::Changed(vec![expected]),
                "{from:?} -> {to:?}"
            );
        }
        let same = intent(&[(A, oci(Some(D1)))]);
        assert!(compare(&same, &same.clone()).is_empty());
    }

    #[test]
    fn identical_intents_differ_in_nothing() {
        let base = intent(&[(A, instance("app", "1.0.0", ARMOR_A))]);
        let diff = compare(&base, &base.clone());
        assert!(diff.is_empty());
        assert_eq!(diff.unchanged, 1);
        assert!(diff.values.is_empty());
    }
}
