//! The decision between a plan and the live cluster: what to create, update, leave alone and prune.
//!
//! Pure: it takes the [`Plan`] (which only verified intent can produce), the objects the API server
//! reported, the source's inventory and the managed namespaces, and returns the [`Changes`] to make.
//! Rules:
//!
//! - An object declared for a namespace that is not managed is not applied and is reported per object.
//! - An object is *unchanged* when its spec, and every label and annotation the plan sets, already match
//!   the live object, ignoring the commit and serial annotations: those record when an object last
//!   changed, so a new commit that touches one file rewrites one object, and a no-op pass writes nothing.
//! - Only objects that carry this source's labels (`app.vworkspace.io/managed-by=vworkspace` and
//!   `gitops.vworkspace.io/cluster=<id>`) *and* appear in its inventory are ever pruned. Anything else is
//!   left alone and reported.
//! - A declared object that exists but is not this source's (no `gitops.vworkspace.io/cluster=<id>`
//!   label and not in the inventory, or labelled for another cluster source) is never taken over: it
//!   is refused as a [`Conflict`] naming who holds it, the rest of the plan applies, and it is never
//!   pruned. The owner adopts such an object by annotating it [`ANNOTATION_ADOPT`]`=<cluster id>`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::spec_digest::SpecDigest;

use crate::crd::InventoryEntry;
use crate::plan::{
    ANNOTATION_ADOPT, ANNOTATION_COMMIT, ANNOTATION_SERIAL, DesiredObject, LABEL_CLUSTER,
    LABEL_MANAGED_BY, MANAGED_BY, Plan,
};

/// An object as the API server reports it (the fields the decision needs).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveObject {
    /// Its identity.
    pub id: InventoryEntry,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `spec`.
    pub spec: LiveSpec,
    /// The field managers of `metadata.managedFields` (who wrote it), for naming a holder.
    pub managers: Vec<String>,
    /// Its uid and generation, when the API server sent them (for the settled record:
    /// [`super::settled`]).
    pub version: Option<super::settled::ObjectVersion>,
}

/// A live object's spec: as JSON when it was listed or read, the typed object a watch store holds
/// (shared, not copied: converted to JSON one object at a time when it is compared, so a pass over
/// 10,000 watched objects never holds a second copy of the estate), or only the digest of it that
/// the ApplicationInstance watch store keeps ([`crate::crd::WatchedInstance`]).
#[derive(Debug, Clone, PartialEq)]
pub enum LiveSpec {
    /// The spec as the API server sent it.
    Json(Value),
    /// The digest of the spec ([`SpecDigest`]); `None` for one that did not serialize.
    Digest(Option<SpecDigest>),
    /// An Operation from a watch store.
    Operation(std::sync::Arc<crate::crd::Operation>),
}

impl LiveSpec {
    /// The spec as JSON (built for a typed one; a spec that does not serialize is `null`, which
    /// compares as different, so the pass applies the declared one again). `None` for a spec known
    /// by digest only.
    pub fn json(&self) -> Option<std::borrow::Cow<'_, Value>> {
        use std::borrow::Cow;
        match self {
            LiveSpec::Json(v) => Some(Cow::Borrowed(v)),
            LiveSpec::Digest(_) => None,
            LiveSpec::Operation(r) => Some(Cow::Owned(
                serde_json::to_value(&r.spec).unwrap_or(Value::Null),
            )),
        }
    }

    /// Whether this is `declared` ([`same_value`]; for a digest, equal digests, which imply it).
    pub fn is(&self, declared: &Value) -> bool {
        match self {
            LiveSpec::Digest(digest) => digest.is_some_and(|d| d == SpecDigest::of(declared)),
            other => other.json().is_some_and(|live| same_value(declared, &live)),
        }
    }
}

impl From<Value> for LiveSpec {
    fn from(value: Value) -> Self {
        LiveSpec::Json(value)
    }
}

/// Who holds a declared object that exists and is not this source's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The `gitops.vworkspace.io/cluster` label it carries, if any (another cluster source).
    pub cluster_label: Option<String>,
    /// The `app.vworkspace.io/managed-by` label it carries, if any.
    pub managed_by: Option<String>,
    /// Its field managers.
    pub managers: Vec<String>,
}

impl Conflict {
    /// Who holds the object, in words (`cluster source prod; field managers kubectl`).
    pub fn holder(&self) -> String {
        let mut parts = Vec::new();
        if let Some(cluster) = &self.cluster_label {
            parts.push(format!("cluster source {cluster}"));
        }
        if let Some(by) = &self.managed_by {
            parts.push(format!("managed-by {by}"));
        }
        if !self.managers.is_empty() {
            parts.push(format!("field managers {}", self.managers.join(", ")));
        }
        if parts.is_empty() {
            "an unlabelled object with no recorded field manager".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// Why a declared object is not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Skip {
    /// Its namespace is not labelled `app.vworkspace.io/managed-by=vworkspace`.
    UnmanagedNamespace,
}

/// Why a live object that is no longer declared is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Keep {
    /// It lacks this source's labels (created or relabelled by someone else).
    NotLabelled,
    /// It carries the labels but is not in this source's inventory.
    NotInInventory,
    /// Its namespace lost the managed label: it is no longer reconciled, and never deleted by the
    /// operator (the seed model leaves that to a human).
    UnmanagedNamespace,
}

/// What a pass should do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes<'p> {
    /// Declared, absent from the cluster.
    pub create: Vec<&'p DesiredObject>,
    /// Declared, present but different.
    pub update: Vec<&'p DesiredObject>,
    /// Declared and already as declared.
    pub unchanged: Vec<InventoryEntry>,
    /// Created by this source, no longer declared.
    pub prune: Vec<InventoryEntry>,
    /// Declared but not applied, with the reason.
    pub skipped: Vec<(InventoryEntry, Skip)>,
    /// Declared, but a same-named object exists that is not this source's: not applied, not pruned,
    /// not in the inventory.
    pub conflicts: Vec<(InventoryEntry, Conflict)>,
    /// Not declared, not pruned, with the reason.
    pub kept: Vec<(InventoryEntry, Keep)>,
    /// Inventory objects in namespaces that are not managed now: untouched, but still this source's,
    /// so that they are pruned or updated if the namespace is managed again.
    pub retained: Vec<InventoryEntry>,
    /// Updated objects whose live spec holds fields the release does not declare (another writer's,
    /// or left from before an adoption), with the JSON merge patch (`{"spec": ...}`, each such field
    /// `null`) that removes them: server-side apply removes only fields its own manager owned.
    pub undeclared: BTreeMap<InventoryEntry, Value>,
    /// Updated objects whose live spec was known by digest only ([`LiveSpec::Digest`]): whether it
    /// holds undeclared fields is learned from the apply's answer (the whole object after the
    /// write), and they are removed then, as [`Changes::undeclared`] says for the others.
    pub unread: BTreeSet<InventoryEntry>,
}

impl Changes<'_> {
    /// Whether the pass writes anything.
    pub fn is_noop(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.prune.is_empty()
    }

    /// The inventory after the pass: what this source then owns.
    pub fn inventory(&self) -> Vec<InventoryEntry> {
        let mut all: Vec<InventoryEntry> = self
            .create
            .iter()
            .chain(&self.update)
            .map(|d| identity(d))
            .chain(self.unchanged.iter().cloned())
            .chain(self.retained.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// The inventory after a pass that stopped part-way (an API error, its deadline): the previous
/// inventory, plus every object an apply was *sent* for (it may have reached the API server even if
/// no answer came back, and it carries this source's labels), minus every object whose delete
/// succeeded. An object recorded but never created costs nothing: a later prune of it finds it gone.
pub fn after_interruption(
    previous: &[InventoryEntry],
    sent: &[InventoryEntry],
    pruned: &[InventoryEntry],
) -> Vec<InventoryEntry> {
    let mut owned: BTreeSet<InventoryEntry> = previous.iter().cloned().collect();
    owned.extend(sent.iter().cloned());
    for p in pruned {
        owned.remove(p);
    }
    owned.into_iter().collect()
}

/// The inventory identity of a desired object.
pub fn identity(desired: &DesiredObject) -> InventoryEntry {
    InventoryEntry {
        api_version: desired.api_version.clone(),
        kind: desired.kind.clone(),
        namespace: desired.namespace.clone(),
        name: desired.name.clone(),
    }
}

/// Whether a live object that a plan declares is this source's to write: it carries this source's
/// cluster label (with no other source's), it lost its labels but is in the inventory *and* the
/// operator's field manager still owns fields of it (an inventory line alone, which whoever writes
/// the Cluster status could inject, never makes someone else's object ours), or the owner marked it
/// for adoption by this source. Otherwise the holder, for the refusal.
pub fn ownership(
    live: &LiveObject,
    inventory: &BTreeSet<&InventoryEntry>,
    cluster: &str,
) -> Result<(), Conflict> {
    let label = live.labels.get(LABEL_CLUSTER).map(String::as_str);
    let adopted = live.annotations.get(ANNOTATION_ADOPT).map(String::as_str) == Some(cluster);
    let ours = match label {
        Some(l) => l == cluster,
        None => {
            inventory.contains(&live.id)
                && live
                    .managers
                    .iter()
                    .any(|m| m == crate::labels::FIELD_MANAGER)
        }
    };
    if ours || adopted {
        return Ok(());
    }
    Err(Conflict {
        cluster_label: label.map(str::to_owned),
        managed_by: live.labels.get(LABEL_MANAGED_BY).cloned(),
        managers: live.managers.clone(),
    })
}

/// The declared objects in managed namespaces that `live` does not hold: the caller looks each up
/// by name (without a label selector) before [`diff`], so that a same-named object someone else
/// created is seen and not planned as a create. In a steady state (nothing new declared) it is empty.
pub fn unlisted(
    plan: &Plan,
    live: &[LiveObject],
    managed_namespaces: &BTreeSet<String>,
) -> Vec<InventoryEntry> {
    let listed: BTreeSet<&InventoryEntry> = live.iter().map(|l| &l.id).collect();
    plan.objects()
        .iter()
        .filter(|d| managed_namespaces.contains(&d.namespace))
        .map(identity)
        .filter(|id| !listed.contains(id))
        .collect()
}

/// Whether two numbers are the same value as the API server keeps it: two integers it keeps exactly
/// (int64) are equal, anything else is compared as the nearest floats. The API server re-encodes
/// `1.0` as `1`, and keeps an integer beyond int64 as a float64 that it writes back in plain digits
/// (`12345678901234567890` comes back as `12345678901234567000`, still an integer to serde_json,
/// so comparing two u64 exactly would see a change on every pass and write every time).
fn same_number(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// JSON equality with numbers compared by value ([`same_number`]).
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => same_number(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// The fields of `live` that `declared` does not hold, as a JSON merge patch that removes them
/// (each such field `null`, nested where both sides are objects); `None` when there are none. Values
/// are not compared: a field both hold is set by the apply itself; lists are atomic.
pub fn undeclared_fields(declared: &Value, live: &Value) -> Option<Value> {
    let (Value::Object(declared), Value::Object(live)) = (declared, live) else {
        return None;
    };
    let mut patch = serde_json::Map::new();
    for (key, value) in live {
        match declared.get(key) {
            None => {
                patch.insert(key.clone(), Value::Null);
            }
            Some(inner) => {
                if let Some(nested) = undeclared_fields(inner, value) {
                    patch.insert(key.clone(), nested);
                }
            }
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// Whether `live` already is what `desired` declares (commit and serial annotations aside), given
/// the declared spec as JSON.
fn matches(desired: &DesiredObject, spec: &Value, live: &LiveObject) -> bool {
    let volatile = [ANNOTATION_COMMIT, ANNOTATION_SERIAL];
    live.spec.is(spec)
        && desired
            .labels
            .iter()
            .all(|(k, v)| live.labels.get(k) == Some(v))
        && desired
            .annotations
            .iter()
            .filter(|(k, _)| !volatile.contains(&k.as_str()))
            .all(|(k, v)| live.annotations.get(k) == Some(v))
}

/// Decides what a pass does. `live` is every object of the two kinds in the managed namespaces.
pub fn diff<'p>(
    plan: &'p Plan,
    live: &[LiveObject],
    inventory: &[InventoryEntry],
    managed_namespaces: &BTreeSet<String>,
    cluster: &str,
) -> Changes<'p> {
    let live_by_id: BTreeMap<&InventoryEntry, &LiveObject> =
        live.iter().map(|l| (&l.id, l)).collect();
    let mut changes = Changes::default();
    let mut declared = BTreeSet::new();
    let inventory: BTreeSet<&InventoryEntry> = inventory.iter().collect();
    for desired in plan.objects() {
        let id = identity(desired);
        if !managed_namespaces.contains(&desired.namespace) {
            if inventory.contains(&id) {
                changes.retained.push(id.clone());
            }
            changes.skipped.push((id.clone(), Skip::UnmanagedNamespace));
            declared.insert(id);
            continue;
        }
        match live_by_id.get(&id) {
            None => changes.create.push(desired),
            Some(l) => match ownership(l, &inventory, cluster) {
                Err(conflict) => changes.conflicts.push((id.clone(), conflict)),
                Ok(()) => {
                    // A spec that does not serialize compares as different: the apply reports it.
                    let spec = desired.spec_json().unwrap_or(Value::Null);
                    if matches(desired, &spec, l) {
                        changes.unchanged.push(id.clone());
                        declared.insert(id);
                        continue;
                    }
                    match l.spec.json() {
                        Some(live) => {
                            if let Some(patch) = undeclared_fields(&spec, &live) {
                                changes
                                    .undeclared
                                    .insert(id.clone(), serde_json::json!({ "spec": patch }));
                            }
                        }
                        None => {
                            changes.unread.insert(id.clone());
                        }
                    }
                    changes.update.push(desired)
                }
            },
        }
        declared.insert(id);
    }
    for l in live {
        if declared.contains(&l.id) {
            continue;
        }
        let ours = l.labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
            && l.labels.get(LABEL_CLUSTER).map(String::as_str) == Some(cluster);
        if ours && !managed_namespaces.contains(&l.id.namespace) {
            if inventory.contains(&l.id) {
                changes.retained.push(l.id.clone());
            }
            changes.kept.push((l.id.clone(), Keep::UnmanagedNamespace));
            continue;
        }
        match (ours, inventory.contains(&l.id)) {
            (true, true) => changes.prune.push(l.id.clone()),
            (true, false) => changes.kept.push((l.id.clone(), Keep::NotInInventory)),
            (false, _) => {
                // Only what is ours is reported: other sources' objects are none of this pass's business.
                if inventory.contains(&l.id) {
                    changes.kept.push((l.id.clone(), Keep::NotLabelled));
                }
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Operation, OperationSpec, OperationTarget, OperationType};
    use crate::plan::DesiredObject;

    const CLUSTER: &str = "demo";

    fn op(ns: &str, name: &str, template: &str) -> DesiredObject {
        let mut resource = Operation::new(
            name,
            OperationSpec {
                operation_type: OperationType::Backup,
                template: template.to_owned(),
                target: OperationTarget::default(),
                parameters: BTreeMap::new(),
            },
        );
        resource.metadata.namespace = Some(ns.to_owned());
        resource.metadata.labels = Some(BTreeMap::from([
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (LABEL_CLUSTER.to_owned(), CLUSTER.to_owned()),
        ]));
        resource.metadata.annotations = Some(BTreeMap::from([
            (ANNOTATION_COMMIT.to_owned(), "c1".to_owned()),
            (ANNOTATION_SERIAL.to_owned(), "1".to_owned()),
            (
                "gitops.vworkspace.io/source-path".to_owned(),
                format!("clusters/demo/namespaces/{ns}/operations/{name}.yaml"),
            ),
        ]));
        DesiredObject::from_resource(
            "ops.vworkspace.io/v1alpha1",
            "Operation",
            ns,
            name,
            crate::plan::DesiredResource::Operation(resource),
        )
        .expect("compact")
    }

    /// The live object a previous pass would have left for `desired`, at another commit.
    fn live_of(desired: &DesiredObject, commit: &str) -> LiveObject {
        let spec = desired.spec_json().expect("spec");
        let labels = desired.labels.clone();
        let mut annotations = desired.annotations.clone();
        annotations.insert(ANNOTATION_COMMIT.to_owned(), commit.to_owned());
        LiveObject {
            id: identity(desired),
            labels,
            annotations,
            spec: spec.into(),
            managers: vec![],
            version: None,
        }
    }

    fn managed(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn create_update_unchanged() {
        let a = op("org-a", "a", "t1");
        let b = op("org-a", "b", "t1");
        let c = op("org-a", "c", "t1");
        let plan = Plan::from_objects(vec![a.clone(), b.clone(), c.clone()]);
        // a exists as declared (from an older commit: still unchanged); b differs; c is absent.
        let live = vec![live_of(&a, "c0"), live_of(&op("org-a", "b", "t2"), "c0")];
        let changes = diff(
            &plan,
            &live,
            &[identity(&a), identity(&b)],
            &managed(&["org-a"]),
            CLUSTER,
        );
        assert_eq!(changes.unchanged, [identity(&a)]);
        assert_eq!(
            changes
                .update
                .iter()
                .map(|d| identity(d))
                .collect::<Vec<_>>(),
            [identity(&b)]
        );
        assert_eq!(
            changes
                .create
                .iter()
                .map(|d| identity(d))
                .collect::<Vec<_>>(),
            [identity(&c)]
        );
        assert!(changes.prune.is_empty());
        assert_eq!(
            changes.inventory(),
            [identity(&a), identity(&b), identity(&c)]
        );
    }

    #[test]
    fn a_noop_pass_writes_nothing() {
        let a = op("org-a", "a", "t1");
        let plan = Plan::from_objects(vec![a.clone()]);
        let changes = diff(
            &plan,
            &[live_of(&a, "c1")],
            &[identity(&a)],
            &managed(&["org-a"]),
            CLUSTER,
        );
        assert!(changes.is_noop());
        // A label removed by hand is put back (the object is still ours: our field manager owns
        // its fields).
        let mut drifted = live_of(&a, "c1");
        drifted.labels.remove(LABEL_CLUSTER);
        drifted.managers = vec![crate::labels::FIELD_MANAGER.to_owned()];
        let changes = diff(
            &plan,
            &[drifted],
            &[identity(&a)],
            &managed(&["org-a"]),
            CLUSTER,
        );
        assert_eq!(changes.update.len(), 1);
    }

    #[test]
    fn prune_only_labelled_inventory_objects() {
        let gone = op("org-a", "gone", "t1");
        let foreign = {
            let mut l = live_of(&op("org-a", "foreign", "t1"), "c0");
            l.labels.clear();
            l
        };
        let other_cluster = {
            let mut l = live_of(&op("org-a", "other", "t1"), "c0");
            l.labels.insert(LABEL_CLUSTER.to_owned(), "prod".to_owned());
            l
        };
        let stray = live_of(&op("org-a", "stray", "t1"), "c0");
        let relabelled = {
            let mut l = live_of(&op("org-a", "relabelled", "t1"), "c0");
            l.labels.remove(LABEL_MANAGED_BY);
            l
        };
        let live = vec![
            live_of(&gone, "c0"),
            foreign.clone(),
            other_cluster.clone(),
            stray.clone(),
            relabelled.clone(),
        ];
        let inventory = vec![
            identity(&gone),
            other_cluster.id.clone(),
            relabelled.id.clone(),
        ];
        let plan = Plan::from_objects(vec![]);
        let changes = diff(&plan, &live, &inventory, &managed(&["org-a"]), CLUSTER);
        assert_eq!(changes.prune, [identity(&gone)]);
        assert!(
            changes
                .kept
                .contains(&(stray.id.clone(), Keep::NotInInventory))
        );
        assert!(
            changes
                .kept
                .contains(&(relabelled.id.clone(), Keep::NotLabelled))
        );
        assert!(
            changes
                .kept
                .contains(&(other_cluster.id.clone(), Keep::NotLabelled))
        );
        assert!(
            !changes.kept.iter().any(|(id, _)| *id == foreign.id),
            "others' objects are not ours to report"
        );
    }

    #[test]
    fn unmanaged_namespaces_are_skipped_per_object() {
        let a = op("org-a", "a", "t1");
        let x = op("kube-system", "x", "t1");
        let plan = Plan::from_objects(vec![a.clone(), x.clone()]);
        let changes = diff(&plan, &[], &[], &managed(&["org-a"]), CLUSTER);
        assert_eq!(changes.skipped, [(identity(&x), Skip::UnmanagedNamespace)]);
        assert_eq!(changes.create.len(), 1);
        assert!(!changes.inventory().contains(&identity(&x)));
    }

    #[test]
    fn a_namespace_that_lost_the_label_is_never_pruned_from() {
        // Declared and live in org-b, which lost the label: skipped, not pruned, still owned.
        let kept = op("org-b", "kept", "t1");
        // Not declared any more, live in org-b: kept, not pruned, still owned.
        let stale = op("org-b", "stale", "t1");
        let plan = Plan::from_objects(vec![kept.clone()]);
        let live = vec![live_of(&kept, "c0"), live_of(&stale, "c0")];
        let inventory = vec![identity(&kept), identity(&stale)];
        let changes = diff(&plan, &live, &inventory, &managed(&["org-a"]), CLUSTER);
        assert!(changes.prune.is_empty(), "{:?}", changes.prune);
        assert!(changes.is_noop());
        assert_eq!(
            changes.skipped,
            [(identity(&kept), Skip::UnmanagedNamespace)]
        );
        assert_eq!(changes.kept, [(identity(&stale), Keep::UnmanagedNamespace)]);
        assert_eq!(changes.inventory(), inventory);
    }

    #[test]
    fn a_same_named_object_that_is_not_ours_is_refused_never_taken_over_nor_pruned() {
        let a = op("org-a", "a", "t1");
        let b = op("org-a", "b", "t1");
        let c = op("org-a", "c", "t1");
        let plan = Plan::from_objects(vec![a.clone(), b.clone(), c.clone()]);
        // a: made by hand (no labels), b: another cluster source's; c: absent.
        let mut by_hand = live_of(&op("org-a", "a", "t9"), "c0");
        by_hand.labels.clear();
        by_hand.managers = vec!["kubectl-client-side-apply".into()];
        let mut other = live_of(&op("org-a", "b", "t9"), "c0");
        other
            .labels
            .insert(LABEL_CLUSTER.to_owned(), "prod".to_owned());
        assert_eq!(
            unlisted(&plan, &[other.clone()], &managed(&["org-a"])),
            [identity(&a), identity(&c)],
            "what the labelled list does not hold is looked up by name"
        );
        // Even when a stale inventory names b, another source's label wins.
        let inventory = vec![identity(&b)];
        let changes = diff(
            &plan,
            &[by_hand.clone(), other.clone()],
            &inventory,
            &managed(&["org-a"]),
            CLUSTER,
        );
        assert_eq!(
            changes
                .create
                .iter()
                .map(|d| identity(d))
                .collect::<Vec<_>>(),
            [identity(&c)]
        );
        assert!(changes.update.is_empty() && changes.prune.is_empty());
        let conflicts: Vec<_> = changes
            .conflicts
            .iter()
            .map(|(id, c)| (id.name.as_str(), c.holder()))
            .collect();
        assert_eq!(
            conflicts,
            [
                ("a", "field managers kubectl-client-side-apply".to_owned()),
                ("b", "cluster source prod; managed-by vworkspace".to_owned()),
            ]
        );
        assert_eq!(changes.inventory(), [identity(&c)], "never ours");
        // Not declared any more: still never pruned (not labelled for us).
        let empty = Plan::from_objects(vec![]);
        let changes = diff(
            &empty,
            &[by_hand.clone(), other],
            &inventory,
            &managed(&["org-a"]),
            CLUSTER,
        );
        assert!(changes.prune.is_empty());
        // The owner marks a for adoption by this source: updated (our labels land on it).
        by_hand
            .annotations
            .insert(ANNOTATION_ADOPT.to_owned(), CLUSTER.to_owned());
        let changes = diff(
            &plan,
            &[by_hand.clone()],
            &[],
            &managed(&["org-a"]),
            CLUSTER,
        );
        assert!(changes.conflicts.is_empty());
        assert_eq!(changes.update.len(), 1);
        // Marked for another source: still refused.
        by_hand
            .annotations
            .insert(ANNOTATION_ADOPT.to_owned(), "prod".to_owned());
        let changes = diff(&plan, &[by_hand], &[], &managed(&["org-a"]), CLUSTER);
        assert_eq!(changes.conflicts.len(), 1);
    }

    #[test]
    fn an_injected_inventory_line_never_makes_an_unlabelled_object_ours() {
        let a = op("org-a", "a", "t1");
        let plan = Plan::from_objects(vec![a.clone()]);
        // Someone else's unlabelled object of the same name, and an inventory line naming it (as
        // whoever can write the Cluster status could inject).
        let mut foreign = live_of(&op("org-a", "a", "t9"), "c0");
        foreign.labels.clear();
        foreign.managers = vec!["kubectl-edit".into()];
        let inventory = vec![identity(&a)];
        let changes = diff(
            &plan,
            std::slice::from_ref(&foreign),
            &inventory,
            &managed(&["org-a"]),
            CLUSTER,
        );
        assert!(changes.update.is_empty(), "not taken over");
        assert_eq!(changes.conflicts.len(), 1, "reported as OwnershipConflict");
        assert!(changes.inventory().is_empty());
        // Ours once its labels were stripped by hand: our field manager still owns its fields.
        let mut stripped = foreign;
        stripped
            .managers
            .push(crate::labels::FIELD_MANAGER.to_owned());
        let changes = diff(
            &plan,
            &[stripped],
            &inventory,
            &managed(&["org-a"]),
            CLUSTER,
        );
        assert!(changes.conflicts.is_empty());
        assert_eq!(changes.update.len(), 1, "relabelled by the next apply");
    }

    #[test]
    fn fields_the_release_does_not_declare_are_patched_away() {
        let declared = serde_json::json!({"chart": {"name": "c", "version": "1"},
                                          "values": {"host": "a", "mail": {"user": "u"}, "list": [1]}});
        assert_eq!(undeclared_fields(&declared, &declared), None);
        let live = serde_json::json!({"chart": {"name": "c", "version": "0"},
                                      "values": {"host": "b", "extra": "by-hand",
                                                 "mail": {"user": "u", "relay": {"x": 1}},
                                                 "list": [1, 2]},
                                      "suspend": true});
        assert_eq!(
            undeclared_fields(&declared, &live),
            Some(
                serde_json::json!({"values": {"extra": null, "mail": {"relay": null}}, "suspend": null})
            )
        );
        // In a diff: the update carries the patch; an object without extra fields does not.
        let a = op("org-a", "a", "t1");
        let b = op("org-a", "b", "t1");
        let plan = Plan::from_objects(vec![a.clone(), b.clone()]);
        let mut extra = live_of(&a, "c0");
        let mut spec = extra.spec.json().expect("listed").into_owned();
        spec["parameters"]["injected"] = serde_json::json!("x");
        extra.spec = spec.into();
        let changed = live_of(&op("org-a", "b", "t2"), "c0");
        let changes = diff(
            &plan,
            &[extra, changed],
            &[identity(&a), identity(&b)],
            &managed(&["org-a"]),
            CLUSTER,
        );
        assert_eq!(changes.update.len(), 2);
        assert_eq!(
            changes.undeclared,
            BTreeMap::from([(
                identity(&a),
                serde_json::json!({"spec": {"parameters": null}})
            )])
        );
    }

    /// Equal digests must mean `same_value` (else an edit could pass for unchanged); the converse
    /// holds for every value the API server gives back.
    #[test]
    fn the_spec_digest_agrees_with_same_value() {
        let parse = |text: &str| -> Value { serde_json::from_str(text).expect("test JSON") };
        for (declared, live) in [
            ("1.0", "1"),
            ("-0.0", "0"),
            ("1e300", "1e+300"),
            ("12345678901234567890", "12345678901234567000"),
            ("9007199254740993", "9007199254740993"),
            ("9007199254740993", "9007199254740992"),
            ("2", "3"),
            ("0.5", "0.25"),
            (r#"{"a": [1, {"b": 2.0}]}"#, r#"{"a": [1.0, {"b": 2}]}"#),
            (r#"{"a": [1, {"b": 2}]}"#, r#"{"a": [{"b": 2}, 1]}"#),
            (r#"{"a": null}"#, "{}"),
            (r#"{"a": "1"}"#, r#"{"a": 1}"#),
        ] {
            let (a, b) = (parse(declared), parse(live));
            assert_eq!(
                same_value(&a, &b),
                SpecDigest::of(&a) == SpecDigest::of(&b),
                "{declared} against {live}"
            );
        }
    }

    #[test]
    fn a_spec_known_by_digest_is_unchanged_when_equal_and_learned_from_the_apply_when_not() {
        let a = op("org-a", "a", "t1");
        let b = op("org-a", "b", "t1");
        let plan = Plan::from_objects(vec![a.clone(), b.clone()]);
        let by_digest = |desired: &DesiredObject| {
            let mut live = live_of(desired, "c0");
            let spec = live.spec.json().expect("listed").into_owned();
            live.spec = LiveSpec::Digest(Some(SpecDigest::of(&spec)));
            live
        };
        let mut unserializable = by_digest(&a);
        unserializable.spec = LiveSpec::Digest(None);
        for (live, unchanged) in [
            (by_digest(&a), true),
            (by_digest(&op("org-a", "a", "t2")), false),
            (unserializable, false),
        ] {
            let changes = diff(
                &plan,
                &[live, by_digest(&b)],
                &[identity(&a), identity(&b)],
                &managed(&["org-a"]),
                CLUSTER,
            );
            assert_eq!(changes.unchanged.contains(&identity(&a)), unchanged);
            assert!(changes.unchanged.contains(&identity(&b)));
            // No live fields to compare: the removal of undeclared ones waits for the answer.
            assert!(changes.undeclared.is_empty());
            let unread: Vec<_> = changes.unread.iter().cloned().collect();
            if unchanged {
                assert!(changes.is_noop() && unread.is_empty());
            } else {
                assert_eq!(changes.update.len(), 1);
                assert_eq!(unread, [identity(&a)]);
            }
        }
    }

    #[test]
    fn an_interrupted_pass_owns_what_it_sent_and_not_what_it_deleted() {
        let a = identity(&op("org-a", "a", "t1"));
        let b = identity(&op("org-a", "b", "t1"));
        let c = identity(&op("org-a", "c", "t1"));
        assert_eq!(
            after_interruption(
                &[a.clone(), b.clone()],
                std::slice::from_ref(&c),
                std::slice::from_ref(&a)
            ),
            [b, c]
        );
    }

    #[test]
    fn numbers_as_the_api_server_re_encodes_them_are_not_a_change() {
        let mut resource: crate::crd::ApplicationInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps.vworkspace.io/v1alpha1", "kind": "ApplicationInstance",
            "metadata": {"name": "wiki", "namespace": "org-a"},
            "spec": {"chart": {"repository": "https://charts.example.org", "name": "wiki", "version": "1.0.0"},
                     "values": {"replicas": 1.0, "ratio": 0.5, "big": 18446744073709551615u64,
                                "beyond": 9007199254740993u64, "unsigned": 12345678901234567890u64,
                                "list": [2.0, -3]}}
        }))
        .expect("instance");
        resource.metadata.labels = Some(BTreeMap::from([
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (LABEL_CLUSTER.to_owned(), CLUSTER.to_owned()),
        ]));
        let desired = DesiredObject::from_resource(
            "apps.vworkspace.io/v1alpha1",
            "ApplicationInstance",
            "org-a",
            "wiki",
            crate::plan::DesiredResource::ApplicationInstance(resource),
        )
        .expect("compact");
        let plan = Plan::from_objects(vec![desired.clone()]);
        // What the API server hands back: 1.0 as 1, 2^64-1 as the nearest float, 2^53+1 exact, an
        // integer beyond int64 as its nearest float in plain digits (seen on kube-apiserver 1.36).
        let reencoded: Value = serde_json::from_str(
            r#"{"chart": {"repository": "https://charts.example.org", "name": "wiki", "version": "1.0.0"},
                "values": {"replicas": 1, "ratio": 0.5, "big": 1.8446744073709552e19,
                           "beyond": 9007199254740993, "unsigned": 12345678901234567000,
                           "list": [2, -3.0]}}"#,
        )
        .expect("json");
        let mut live = live_of(&desired, "c1");
        live.spec = reencoded.clone().into();
        let changes = diff(
            &plan,
            &[live.clone()],
            &[identity(&desired)],
            &managed(&["org-a"]),
            CLUSTER,
        );
        assert!(
            changes.is_noop(),
            "no write on every pass: {:?}",
            changes.update.len()
        );
        // A real change is still one.
        for (pointer, other) in [
            ("/values/replicas", serde_json::json!(2)),
            ("/values/ratio", serde_json::json!(1)),
            ("/values/beyond", serde_json::json!(9007199254740992u64)),
        ] {
            let mut changed = live.clone();
            let mut spec = changed.spec.json().expect("listed").into_owned();
            *spec.pointer_mut(pointer).expect("pointer") = other;
            changed.spec = spec.into();
            let changes = diff(
                &plan,
                &[changed],
                &[identity(&desired)],
                &managed(&["org-a"]),
                CLUSTER,
            );
            assert_eq!(changes.update.len(), 1, "{pointer}");
        }
    }
}
