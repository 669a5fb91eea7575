//! Test support shared by the modules: the recording fake API server and the reconciler's harness
//! over it, the RBAC evaluator over deploy/, throwaway TLS certificates, and the names of the
//! operator's API groups.
#![allow(dead_code)]

pub mod declare;
pub mod fake_api;
pub mod fault_proxy;
pub mod go_tools;
pub mod harness;
pub mod rbac_check;
pub mod tls;

/// The API version of the ApplicationInstance group (`apiVersion`, and what the real-server tests
/// pass to the API).
pub const AI: &str = "apps.vworkspace.io/v1alpha1";
/// The API version of the Operation and Cluster group.
pub const OPS: &str = "ops.vworkspace.io/v1alpha1";
/// [`AI`]'s path on the API server (`/apis/<AI>`), as the fake API server records requests.
pub const AI_PATH: &str = "/apis/apps.vworkspace.io/v1alpha1";
/// [`OPS`]'s path on the API server (`/apis/<OPS>`).
pub const OPS_PATH: &str = "/apis/ops.vworkspace.io/v1alpha1";

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

/// A loopback port nothing listens on now, for a process the test starts to bind. Picked below the
/// kernel's ephemeral range (Linux: 32768 and up), from which `bind(0)` and every outgoing
/// connection take their ports: one taken from there and released was seen handed to another
/// process before source-controller could bind it ("address already in use", a test that waited for
/// a chart that never came). Distinct within this test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + (start + i * 7) % SPAN).expect("a port below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN);
}
