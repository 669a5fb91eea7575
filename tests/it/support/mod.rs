//! Test support shared by the modules: the recording fake API server, the RBAC evaluator over deploy/,
//! and throwaway TLS certificates.
#![allow(dead_code)]

pub mod declare;
pub mod fake_api;
pub mod go_tools;
pub mod rbac_check;
pub mod tls;

/// Puts the fixture's cluster-side trust inputs where a `Cluster` named by the tests finds them: the
/// ConfigMap `vworkspace-system/trust` (`commit_signers`, `release_signers`) and the identity Secret
/// `vworkspace-system/cluster-age` (`identity.agekey`).
pub fn seed_trust_inputs(api: &fake_api::FakeApi, f: &crate::common::Fixture) {
    use base64::Engine;
    let read = |name: &str| std::fs::read_to_string(f.path(name)).expect("read");
    api.put(
        "/api/v1/namespaces/vworkspace-system/configmaps/trust",
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "trust", "namespace": "vworkspace-system"},
               "data": {"commit_signers": read("commit_signers"), "release_signers": read("release_signers")}}),
    );
    let identity = base64::engine::general_purpose::STANDARD.encode(read("cluster.agekey"));
    api.put(
        "/api/v1/namespaces/vworkspace-system/secrets/cluster-age",
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cluster-age", "namespace": "vworkspace-system"},
               "data": {"identity.agekey": identity}}),
    );
}
