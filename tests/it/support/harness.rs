//! The reconciler's harness against the fake API server: cluster `demo`'s [`Fixture`] served over
//! file://, its trust inputs, namespaces and Cluster seeded, and a [`Context`] with a throwaway cache
//! (tests/it/reconcile.rs, robustness.rs).

use std::sync::Arc;

use http::Method;
use serde_json::{Value, json};

use super::fake_api::*;
use crate::common::*;
use vworkspace_controller::cluster::{self, Context, Settings};
use vworkspace_controller::metrics::Metrics;
use vworkspace_core::crd::{Cluster, ClusterStatus};

pub const FIELD_MANAGER: &str = "vworkspace-gitops";

pub struct Harness {
    pub fixture: Fixture,
    pub api: Arc<FakeApi>,
    pub ctx: Arc<Context>,
    _cache: tempfile::TempDir,
}

pub const CLUSTER_PATH: &str = "/apis/ops.vworkspace.io/v1alpha1/clusters/demo";
pub const CLUSTER_PATH_PATCH: &str = "PATCH /apis/ops.vworkspace.io/v1alpha1/clusters/demo";

pub fn namespace(name: &str, managed: bool) -> Value {
    let labels = if managed {
        json!({"app.vworkspace.io/managed-by": "vworkspace"})
    } else {
        json!({})
    };
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

pub fn harness() -> Harness {
    let fixture = fixture();
    let api = Arc::new(FakeApi::default());
    crate::support::seed_trust_inputs(&api, &fixture);
    for (name, managed) in [
        ("org-myteam", true),
        ("org-vault", true),
        ("kube-system", false),
    ] {
        api.put(
            &format!("/api/v1/namespaces/{name}"),
            namespace(name, managed),
        );
    }
    api.put(
        CLUSTER_PATH,
        json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Cluster",
               "metadata": {"name": "demo", "uid": "0f5a-uid", "generation": 1, "resourceVersion": "1"},
               "spec": {
                 "clusterId": "demo",
                 "source": {"url": format!("file://{}", fixture.repo.display()), "ref": {"branch": "main"}, "interval": "5m"},
                 "commitSigners": {"configMapRef": {"name": "trust", "key": "commit_signers"}},
                 "release": {"signersConfigMapRef": {"name": "trust", "key": "release_signers"}, "threshold": 2},
                 "decryption": {"identitySecretRef": {"name": "cluster-age"}},
                 // The fixture's vaultwarden token is a stock `age -a` value (interop).
                 "policy": {"requireBoundValues": false}
               }}),
    );
    let cache = tempfile::tempdir().expect("cache");
    let settings = Settings {
        namespace: "vworkspace-system".into(),
        cache_dir: cache.path().to_owned(),
        fetch: Default::default(),
        limits: Default::default(),
        pass_timeout: std::time::Duration::from_secs(60),
    };
    let ctx = Arc::new(Context::new(
        api.client(),
        settings,
        Arc::new(Metrics::default()),
    ));
    Harness {
        fixture,
        api,
        ctx,
        _cache: cache,
    }
}

impl Harness {
    pub fn cluster(&self) -> Cluster {
        serde_json::from_value(self.api.get(CLUSTER_PATH).expect("cluster")).expect("Cluster")
    }

    pub fn status(&self) -> ClusterStatus {
        self.cluster().status.expect("status written")
    }

    pub fn condition(&self, type_: &str) -> (String, String, String) {
        let status = self.status();
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    pub async fn pass(&self) -> Result<(), vworkspace_controller::Error> {
        self.api.clear();
        cluster::reconcile(Arc::new(self.cluster()), self.ctx.clone())
            .await
            .map(drop)
    }

    pub fn writes(&self) -> Vec<String> {
        self.api
            .requests()
            .iter()
            .filter(|r| r.is_write())
            .map(Recorded::line)
            .collect()
    }
}

/// The invariants of every pass: Secrets only ever read by name; every write is a server-side apply
/// with our field manager and force, or a delete, a status write or an Event.
pub fn assert_request_discipline(requests: &[Recorded]) {
    for r in requests {
        if r.path.contains("/secrets") {
            assert_eq!(r.method, Method::GET, "Secrets are only read: {}", r.line());
            let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
            assert_eq!(
                segments.len(),
                6,
                "a Secret is read by name, never listed: {}",
                r.line()
            );
            assert!(!r.query.contains("watch"), "no watch on Secrets");
        }
        if r.method == Method::PATCH && r.content_type == "application/merge-patch+json" {
            // The one merge patch: removing spec fields the release does not declare (nulls only).
            assert_eq!(
                query_param(&r.query, "fieldManager").as_deref(),
                Some(FIELD_MANAGER),
                "{}",
                r.line()
            );
            assert!(only_nulls(&r.body["spec"]), "{}: {}", r.line(), r.body);
            assert_eq!(r.body.as_object().map(|o| o.len()), Some(1), "{}", r.body);
        } else if r.method == Method::PATCH {
            assert_eq!(
                r.content_type,
                "application/apply-patch+yaml",
                "{}",
                r.line()
            );
            assert_eq!(
                query_param(&r.query, "fieldManager").as_deref(),
                Some(FIELD_MANAGER),
                "{}",
                r.line()
            );
            assert_eq!(query_param(&r.query, "force").as_deref(), Some("true"));
        }
        assert_ne!(r.method, Method::PUT, "no replace: {}", r.line());
    }
}

/// Whether a merge patch only removes fields (every leaf `null`).
fn only_nulls(patch: &Value) -> bool {
    match patch {
        Value::Null => true,
        Value::Object(map) => !map.is_empty() && map.values().all(only_nulls),
        _ => false,
    }
}
