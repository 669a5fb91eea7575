//! The declared set: what the last verified, applied release of each `Cluster` declares, held in the
//! process and shared by the `Cluster` pass (the only writer) and the child controllers (readers).
//!
//! The child controllers act on an `ApplicationInstance` or `Operation` only when this set declares it,
//! and then with the *declared* spec: values are decrypted from the declared spec and children are
//! built from it, never from what the API server holds. An API writer can change the live object; it
//! cannot change this set, which is filled only from a [`Plan`], and a `Plan` is only built from a
//! [`VerifiedIntent`](crate::pipeline::VerifiedIntent) (signed commit, k-of-n release, validated
//! intent). The set starts empty in every process: after a restart nothing is acted on before the
//! Cluster's first verified pass ([`Verdict::Waiting`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::compact::Compact;
use crate::crd::{
    ApplicationInstance, ChartVerification, ClusterSpec, Decryption, InventoryEntry, Operation,
    WatchedInstance,
};
use crate::plan::{DeclaredResource, Plan};
use crate::spec_digest::SpecDigest;

pub use crate::reasons::{NOT_DECLARED, SPEC_DIFFERS, WAITING_FOR_RELEASE};

/// One declared object: the object the plan applied (ciphertext values included) and the digest
/// of its spec. Its spec as JSON, what a live spec is compared with, is made when a judgement needs
/// it rather than kept: at 10,000 instances a second copy of every spec costs tens of MiB.
#[derive(Debug, Clone)]
pub struct DeclaredObject<T> {
    /// The whole declared object, as the plan built it: the verified intent's own, shared and kept
    /// as compact JSON ([`Compact::get`] gives the typed object).
    pub object: Compact<T>,
    /// `sha256:<hex>` of the spec's JSON (shown in messages).
    pub digest: String,
    /// The spec's [`SpecDigest`], which a watched instance's is compared with (taken once, when the
    /// release is published, not on every reconcile).
    pub spec: Option<SpecDigest>,
}

/// What one verified, applied release of one `Cluster` declares, with the trust settings its pass
/// used.
#[derive(Debug)]
pub struct DeclaredRelease {
    /// The `Cluster`'s `spec.clusterId`.
    pub cluster_id: String,
    /// The release serial.
    pub serial: u64,
    /// The applied commit.
    pub commit: String,
    /// Where the cluster's age identities are (as the verifying pass read them).
    pub decryption: Decryption,
    /// Whether unbound values are refused (as the verifying pass judged them).
    pub require_bound_values: bool,
    /// Where the chart signing keys are, when the `Cluster` names them (as the pass read its spec).
    pub chart_verification: Option<ChartVerification>,
    instances: BTreeMap<(String, String), DeclaredObject<ApplicationInstance>>,
    operations: BTreeMap<(String, String), DeclaredObject<Operation>>,
    /// What the pass did not apply (sorted), so that publishing the same release again is seen.
    not_applied: Vec<InventoryEntry>,
}

impl DeclaredRelease {
    /// The declared ApplicationInstance `namespace/name`.
    pub fn instance(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<&DeclaredObject<ApplicationInstance>> {
        self.instances.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// The declared Operation `namespace/name`.
    pub fn operation(&self, namespace: &str, name: &str) -> Option<&DeclaredObject<Operation>> {
        self.operations
            .get(&(namespace.to_owned(), name.to_owned()))
    }

    /// How many objects the release declares (instances, operations).
    pub fn len(&self) -> (usize, usize) {
        (self.instances.len(), self.operations.len())
    }
}

/// The judgement of a live object against the declared set.
#[derive(Debug, Clone)]
pub enum Verdict<T> {
    /// A verified release declares it. The children follow `declared`; `altered` says the live
    /// spec differs (the next Cluster pass puts it back).
    Declared {
        /// The release that declares it.
        release: Arc<DeclaredRelease>,
        /// The declared object.
        declared: DeclaredObject<T>,
        /// Whether the live spec differs from the declared one.
        altered: bool,
    },
    /// A Cluster that could declare it has not had a verified pass in this process yet.
    Waiting {
        /// The `spec.clusterId`s awaited.
        clusters: Vec<String>,
    },
    /// Every Cluster that could declare it has verified a release, and none declares it.
    NotDeclared {
        /// The releases consulted: (`spec.clusterId`, serial).
        releases: Vec<(String, u64)>,
    },
}

/// The declared set of every `Cluster`, keyed by `spec.clusterId`.
#[derive(Debug, Default)]
pub struct DeclaredSet {
    releases: RwLock<HashMap<String, Arc<DeclaredRelease>>>,
    /// Moves each time what the set declares changes (see [`DeclaredSet::generation`]).
    generation: AtomicU64,
}

/// A spec as JSON; one that does not serialize is `null` (which compares as different).
fn spec_value<S: serde::Serialize>(spec: &S) -> Value {
    serde_json::to_value(spec).unwrap_or(Value::Null)
}

/// A declared object as the set keeps it: its message digest and its [`SpecDigest`] from one
/// reading of the spec (`None` for a spec that does not read back, which equals nothing).
fn declared_object<T>(object: &Compact<T>) -> DeclaredObject<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let spec = object.field("spec").ok();
    let bytes = serde_json::to_vec(spec.as_ref().unwrap_or(&Value::Null)).unwrap_or_default();
    DeclaredObject {
        object: object.clone(),
        digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        spec: spec.as_ref().map(SpecDigest::of),
    }
}

impl DeclaredSet {
    /// Records what a verified release applied for the Cluster `spec`: every object of `plan` except
    /// those the pass did not apply (`not_applied`: declared in namespaces that are not managed).
    /// Replaces the Cluster's previous release. Only the `Cluster` pass calls this, after its apply
    /// step succeeded.
    pub fn publish(
        &self,
        spec: &ClusterSpec,
        serial: u64,
        commit: &str,
        plan: &Plan,
        not_applied: &[InventoryEntry],
    ) {
        let mut not_applied_sorted = not_applied.to_vec();
        not_applied_sorted.sort();
        if let Some(current) = self.release(&spec.cluster_id)
            && current.serial == serial
            && current.commit == commit
            && current.decryption == spec.decryption
            && current.require_bound_values == spec.policy.require_bound_values
            && current.chart_verification == spec.chart_verification
            && current.not_applied == not_applied_sorted
        {
            // The same release applied again (an unchanged pass): nothing to rebuild.
            return;
        }
        let skipped: BTreeSet<(&str, &str, &str)> = not_applied
            .iter()
            .map(|e| (e.kind.as_str(), e.namespace.as_str(), e.name.as_str()))
            .collect();
        let mut instances = BTreeMap::new();
        let mut operations = BTreeMap::new();
        for desired in plan.objects() {
            if skipped.contains(&(
                desired.kind.as_str(),
                desired.namespace.as_str(),
                desired.name.as_str(),
            )) {
                continue;
            }
            let key = (desired.namespace.clone(), desired.name.clone());
            // The intent's own object (shared with the pass memo), not a copy: its spec is the
            // plan's; only the stamped metadata differs, which the children do not read.
            match &desired.declared {
                DeclaredResource::ApplicationInstance(object) => {
                    instances.insert(key, declared_object(object));
                }
                DeclaredResource::Operation(object) => {
                    operations.insert(key, declared_object(object));
                }
            }
        }
        let release = Arc::new(DeclaredRelease {
            cluster_id: spec.cluster_id.clone(),
            serial,
            commit: commit.to_owned(),
            decryption: spec.decryption.clone(),
            require_bound_values: spec.policy.require_bound_values,
            chart_verification: spec.chart_verification.clone(),
            instances,
            operations,
            not_applied: not_applied_sorted,
        });
        let mut guard = match self.releases.write() {
            Ok(guard) => guard,
            // A panic while holding the lock cannot leave a half-written map (insert is one step).
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.insert(spec.cluster_id.clone(), release);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A number that moves each time a release is published or forgotten (never when the same
    /// release is published again): the child controllers look again at every object when it moves,
    /// rather than waiting for their requeue.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Forgets a Cluster's release (the Cluster is gone).
    pub fn forget(&self, cluster_id: &str) {
        let mut guard = match self.releases.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if guard.remove(cluster_id).is_some() {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Forgets the releases of every cluster id not in `keep` (their Clusters are gone).
    pub fn retain(&self, keep: &[String]) {
        let mut guard = match self.releases.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let before = guard.len();
        guard.retain(|id, _| keep.contains(id));
        if guard.len() != before {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The release last published for `cluster_id`.
    pub fn release(&self, cluster_id: &str) -> Option<Arc<DeclaredRelease>> {
        let guard = match self.releases.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.get(cluster_id).cloned()
    }

    /// Judges a live ApplicationInstance. `clusters` are the `spec.clusterId`s of the Clusters that
    /// exist now; `label` is the object's `gitops.vworkspace.io/cluster` label (a hint that only
    /// narrows which Cluster is awaited: it grants nothing).
    pub fn judge_instance(
        &self,
        live: &WatchedInstance,
        label: Option<&str>,
        clusters: &[String],
    ) -> Verdict<ApplicationInstance> {
        let namespace = live.metadata.namespace.as_deref().unwrap_or_default();
        let name = live.metadata.name.as_deref().unwrap_or_default();
        self.judge(
            label,
            clusters,
            |r| r.instance(namespace, name).cloned(),
            // Equal digests mean equal specs by value (`SpecDigest`).
            |declared| live.spec.is_none() || live.spec != declared.spec,
        )
    }

    /// Judges a live Operation (see [`DeclaredSet::judge_instance`]).
    pub fn judge_operation(
        &self,
        live: &Operation,
        label: Option<&str>,
        clusters: &[String],
    ) -> Verdict<Operation> {
        let namespace = live.metadata.namespace.as_deref().unwrap_or_default();
        let name = live.metadata.name.as_deref().unwrap_or_default();
        let live_spec = spec_value(&live.spec);
        self.judge(
            label,
            clusters,
            |r| r.operation(namespace, name).cloned(),
            // By value, numbers as the API server re-encodes them (`1.0` comes back as `1`).
            |declared| {
                let spec = declared.object.field("spec").unwrap_or(Value::Null);
                !crate::plan::diff::same_value(&spec, &live_spec)
            },
        )
    }

    fn judge<T>(
        &self,
        label: Option<&str>,
        clusters: &[String],
        pick: impl Fn(&DeclaredRelease) -> Option<DeclaredObject<T>>,
        altered: impl Fn(&DeclaredObject<T>) -> bool,
    ) -> Verdict<T> {
        let guard = match self.releases.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Only Clusters that exist count: a deleted Cluster's last release declares nothing.
        let labelled = label.filter(|l| clusters.iter().any(|c| c == l));
        let mut order: Vec<&String> = clusters.iter().collect();
        order.sort_by_key(|c| Some(c.as_str()) != labelled);
        for id in &order {
            if let Some(release) = guard.get(id.as_str())
                && let Some(declared) = pick(release)
            {
                let altered = altered(&declared);
                return Verdict::Declared {
                    release: release.clone(),
                    declared,
                    altered,
                };
            }
        }
        let candidates: Vec<&String> = match labelled {
            Some(l) => order.into_iter().filter(|c| c.as_str() == l).collect(),
            None => order,
        };
        let waiting: Vec<String> = candidates
            .iter()
            .filter(|c| !guard.contains_key(c.as_str()))
            .map(|c| (*c).clone())
            .collect();
        if candidates.is_empty() || !waiting.is_empty() {
            return Verdict::Waiting { clusters: waiting };
        }
        let mut releases: Vec<(String, u64)> = candidates
            .iter()
            .filter_map(|c| guard.get(c.as_str()))
            .map(|r| (r.cluster_id.clone(), r.serial))
            .collect();
        releases.sort();
        Verdict::NotDeclared { releases }
    }
}

/// The message of a [`Verdict::Waiting`].
pub fn waiting_message(clusters: &[String]) -> String {
    if clusters.is_empty() {
        "no Cluster exists yet: nothing is materialized or run before a verified release declares it"
            .to_owned()
    } else {
        format!(
            "waiting for the first verified pass of Cluster {} since the operator started: nothing is materialized or run before it",
            clusters.join(", ")
        )
    }
}

/// The message of a [`Verdict::NotDeclared`].
pub fn not_declared_message(kind: &str, releases: &[(String, u64)]) -> String {
    let consulted = releases
        .iter()
        .map(|(c, s)| format!("Cluster {c} serial {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "this {kind} is not declared by the verified release ({consulted}): an object written straight to the API in a managed namespace is never decrypted, materialized or run; declare it in Git and sign a release (`vworkspace-operator release ...`)"
    )
}

/// The message of an altered declared object.
pub fn spec_differs_message(kind: &str, release: &DeclaredRelease, digest: &str) -> String {
    format!(
        "the live spec of this {kind} differs from the one Cluster {} serial {} declares ({digest}): the changed spec is never decrypted, materialized or run; the children follow the declared spec and the next Cluster pass puts the declared spec back",
        release.cluster_id, release.serial
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ApplicationInstanceSpec;
    use crate::plan::{DesiredObject, DesiredResource};

    fn cluster_spec(id: &str) -> ClusterSpec {
        serde_json::from_value(serde_json::json!({
            "clusterId": id,
            "source": {"url": "https://git.example.org/intent.git", "ref": {"branch": "main"}},
            "commitSigners": {"configMapRef": {"name": "trust"}},
            "release": {"signersConfigMapRef": {"name": "trust"}, "threshold": 1},
            "decryption": {"identitySecretRef": {"name": "cluster-age"}}
        }))
        .expect("spec")
    }

    fn instance(namespace: &str, name: &str, version: &str) -> ApplicationInstance {
        let spec: ApplicationInstanceSpec = serde_json::from_value(serde_json::json!({
            "chart": {"repository": "https://example.org/charts/", "name": "app", "version": version}
        }))
        .expect("spec");
        let mut ai = ApplicationInstance::new(name, spec);
        ai.metadata.namespace = Some(namespace.into());
        ai
    }

    fn plan_of(instances: &[ApplicationInstance]) -> Plan {
        Plan::from_objects(
            instances
                .iter()
                .map(|ai| {
                    DesiredObject::from_resource(
                        "apps.vworkspace.io/v1alpha1",
                        "ApplicationInstance",
                        ai.metadata.namespace.as_deref().unwrap_or_default(),
                        ai.metadata.name.as_deref().unwrap_or_default(),
                        DesiredResource::ApplicationInstance(ai.clone()),
                    )
                    .expect("compact")
                })
                .collect(),
        )
    }

    #[test]
    fn a_restart_waits_then_the_release_decides() {
        let set = DeclaredSet::default();
        let declared = instance("org-a", "app", "1.0.0");
        let clusters = vec!["demo".to_owned()];
        // Nothing published yet: wait, whatever the live object claims.
        assert!(matches!(
            set.judge_instance(&WatchedInstance::of(&declared), Some("demo"), &clusters),
            Verdict::Waiting { clusters } if clusters == ["demo"]
        ));
        assert!(matches!(
            set.judge_instance(&WatchedInstance::of(&declared), None, &[]),
            Verdict::Waiting { clusters } if clusters.is_empty()
        ));
        set.publish(
            &cluster_spec("demo"),
            7,
            "abc",
            &plan_of(std::slice::from_ref(&declared)),
            &[],
        );
        match set.judge_instance(&WatchedInstance::of(&declared), Some("demo"), &clusters) {
            Verdict::Declared {
                release, altered, ..
            } => {
                assert_eq!(release.serial, 7);
                assert!(!altered);
            }
            other => panic!("declared expected: {other:?}"),
        }
        // The same name with another spec: declared, altered.
        let edited = instance("org-a", "app", "6.6.6");
        match set.judge_instance(&WatchedInstance::of(&edited), None, &clusters) {
            Verdict::Declared {
                declared, altered, ..
            } => {
                assert!(altered);
                assert_eq!(
                    declared.object.get().expect("read back").spec.chart.version,
                    "1.0.0"
                );
            }
            other => panic!("declared expected: {other:?}"),
        }
        // Another name, or another namespace: not declared, whatever its label says.
        for stranger in [
            instance("org-a", "other", "1.0.0"),
            instance("org-b", "app", "1.0.0"),
        ] {
            assert!(matches!(
                set.judge_instance(&WatchedInstance::of(&stranger), Some("demo"), &clusters),
                Verdict::NotDeclared { releases } if releases == [("demo".to_owned(), 7)]
            ));
        }
        // A deleted Cluster's release declares nothing.
        assert!(matches!(
            set.judge_instance(&WatchedInstance::of(&declared), Some("demo"), &[]),
            Verdict::Waiting { .. }
        ));
    }

    #[test]
    fn a_label_only_narrows_which_cluster_is_awaited() {
        let set = DeclaredSet::default();
        let clusters = vec!["a".to_owned(), "b".to_owned()];
        set.publish(&cluster_spec("a"), 1, "c1", &plan_of(&[]), &[]);
        let stranger = instance("org-a", "x", "1");
        // Labelled for the Cluster that has verified: refused now.
        assert!(matches!(
            set.judge_instance(&WatchedInstance::of(&stranger), Some("a"), &clusters),
            Verdict::NotDeclared { .. }
        ));
        // Unlabelled, or labelled for one still awaited: wait for it.
        assert!(matches!(
            set.judge_instance(&WatchedInstance::of(&stranger), None, &clusters),
            Verdict::Waiting { clusters } if clusters == ["b"]
        ));
        // A label naming no existing Cluster narrows nothing.
        assert!(matches!(
            set.judge_instance(&WatchedInstance::of(&stranger), Some("zzz"), &clusters),
            Verdict::Waiting { clusters } if clusters == ["b"]
        ));
        set.publish(&cluster_spec("b"), 4, "c2", &plan_of(&[]), &[]);
        assert!(matches!(
            set.judge_instance(&WatchedInstance::of(&stranger), None, &clusters),
            Verdict::NotDeclared { releases } if releases.len() == 2
        ));
    }

    #[test]
    fn objects_not_applied_are_not_declared() {
        let set = DeclaredSet::default();
        let declared = instance("org-unlabelled", "app", "1");
        let skipped = InventoryEntry {
            api_version: "apps.vworkspace.io/v1alpha1".into(),
            kind: "ApplicationInstance".into(),
            namespace: "org-unlabelled".into(),
            name: "app".into(),
        };
        set.publish(
            &cluster_spec("demo"),
            2,
            "c",
            &plan_of(std::slice::from_ref(&declared)),
            &[skipped],
        );
        assert!(matches!(
            set.judge_instance(&WatchedInstance::of(&declared), None, &["demo".to_owned()]),
            Verdict::NotDeclared { .. }
        ));
        assert_eq!(set.release("demo").map(|r| r.len()), Some((0, 0)));
        set.forget("demo");
        assert!(set.release("demo").is_none());
    }

    #[test]
    fn numbers_the_api_server_re_encodes_are_not_an_alteration() {
        let set = DeclaredSet::default();
        let mut declared = instance("org-a", "app", "1.0.0");
        declared.spec.values =
            Some(serde_json::json!({"replicas": 1.0, "big": 18446744073709551615u64}));
        set.publish(
            &cluster_spec("demo"),
            3,
            "c",
            &plan_of(std::slice::from_ref(&declared)),
            &[],
        );
        let mut live = declared.clone();
        live.spec.values = Some(
            serde_json::from_str(r#"{"replicas": 1, "big": 1.8446744073709552e19}"#).expect("json"),
        );
        match set.judge_instance(
            &WatchedInstance::of(&live),
            Some("demo"),
            &["demo".to_owned()],
        ) {
            Verdict::Declared { altered, .. } => assert!(!altered, "re-encoded, not altered"),
            other => panic!("declared expected: {other:?}"),
        }
        live.spec.values = Some(serde_json::json!({"replicas": 2, "big": 1.8446744073709552e19}));
        match set.judge_instance(
            &WatchedInstance::of(&live),
            Some("demo"),
            &["demo".to_owned()],
        ) {
            Verdict::Declared { altered, .. } => assert!(altered),
            other => panic!("declared expected: {other:?}"),
        }
    }
}
