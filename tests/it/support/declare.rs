//! Declares objects in a verified release, for the child controllers' tests, the way a `Cluster` pass
//! does: the objects are written to the fixture's repository, released by our `release` and
//! co-signed by `ssh-keygen -Y sign`, committed by `git commit -S`, verified by the real pipeline, and
//! the plan built from that verified intent is published into the [`DeclaredSet`]. There is no other
//! way to fill a `DeclaredSet`.
#![allow(dead_code)]

use serde_json::{Value, json};

use crate::common::Fixture;
use vworkspace_core::crd::ClusterSpec;
use vworkspace_core::pipeline::{self, TrustConfig};
use vworkspace_core::plan::declared::DeclaredSet;
use vworkspace_core::repository::{GitRef, LocalRepository};
use vworkspace_core::secrets::Identities;
use vworkspace_core::trust::signers::AllowedSigners;

/// The fixture's trust inputs, as a `Cluster` with `threshold: 2` reads them.
pub fn trust(f: &Fixture, require_bound_values: bool) -> TrustConfig {
    let read = |name: &str| std::fs::read_to_string(f.path(name)).expect("read");
    TrustConfig::builder(
        "demo",
        AllowedSigners::parse(&read("commit_signers"), "commit_signers").expect("commit signers"),
        AllowedSigners::parse(&read("release_signers"), "release_signers")
            .expect("release signers"),
        std::num::NonZeroUsize::MIN.saturating_add(1),
    )
    .identities(Some(
        Identities::parse(&read("cluster.agekey"), "cluster.agekey").expect("key"),
    ))
    .require_bound_values(require_bound_values)
    .build()
}

/// The file a live-shaped object is declared in, and the file's content (JSON is YAML).
fn file_of(object: &Value) -> (String, String) {
    let kind = object["kind"].as_str().expect("kind");
    let plural = match kind {
        "ApplicationInstance" => "applicationinstances",
        "Operation" => "operations",
        other => panic!("not a declared kind: {other}"),
    };
    let namespace = object["metadata"]["namespace"].as_str().expect("namespace");
    let name = object["metadata"]["name"].as_str().expect("name");
    let file = json!({
        "apiVersion": object["apiVersion"],
        "kind": kind,
        "metadata": {"name": name},
        "spec": object["spec"],
    });
    (
        format!("clusters/demo/namespaces/{namespace}/{plural}/{name}.yaml"),
        serde_json::to_string_pretty(&file).expect("json"),
    )
}

/// Makes `objects` (ApplicationInstances and Operations, shaped as the API holds them) the whole of
/// cluster `demo`'s next release, verifies it, and publishes it for `cluster` into `set`. Returns the
/// release serial.
pub fn declare(f: &Fixture, objects: &[Value], cluster: &ClusterSpec, set: &DeclaredSet) -> u64 {
    try_declare(f, objects, cluster, set).expect("the release verifies")
}

/// [`declare`], or the pipeline's refusal (then nothing is published).
pub fn try_declare(
    f: &Fixture,
    objects: &[Value],
    cluster: &ClusterSpec,
    set: &DeclaredSet,
) -> Result<u64, pipeline::PassError> {
    let namespaces = f.repo.join("clusters/demo/namespaces");
    if namespaces.exists() {
        std::fs::remove_dir_all(&namespaces).expect("clear");
    }
    for object in objects {
        let (path, content) = file_of(object);
        f.write(&path, &content);
    }
    f.release(&[]);
    f.commit("declare");
    let repo = LocalRepository::open(&f.repo).expect("open");
    let verified = pipeline::verify_ref(
        &repo,
        &GitRef::Branch("main".into()),
        &trust(f, cluster.policy.require_bound_values),
    )?;
    let plan = vworkspace_core::plan::desired(&verified).expect("plan");
    let serial = verified.release().serial();
    set.publish(cluster, serial, verified.commit().id(), &plan, &[]);
    Ok(serial)
}
