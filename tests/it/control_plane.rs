//! The operator against a real Kubernetes control plane: kube-apiserver 1.36 + etcd +
//! kube-controller-manager built from Go modules and started by scripts/control-plane.sh (which
//! scripts/test.sh runs; it passes the admin kubeconfig as VWS_TEST_KUBECONFIG and the audit log as
//! VWS_TEST_AUDIT_LOG). Without it every test here prints one line saying why, and returns.
//!
//! Installed once per test binary, as the cluster admin, with server-side apply: crds/, every file
//! of deploy/kustomization.yaml (the webhook pointed by URL at a `run` replica of the test, with the
//! test's CA as caBundle), and the third-party CRDs of ../shared/thirdparty-crds where present. The
//! operator then runs as its own ServiceAccount (a TokenRequest token, so exactly deploy/'s rights)
//! against a real repository over file://. Write requests are counted in the API server's audit log.
//!
//! The tests share one API server and the cluster-scoped Cluster kind (`run --once` reconciles every
//! Cluster), so they run one at a time (a lock); each uses its own cluster id and namespaces and
//! deletes what it created, also when it fails.

mod api_burst;
mod chart_server;
mod delivery;
mod delivery_bench;
mod faults;
mod fixture;
mod forge;
mod gitea;
mod monitoring;
mod operations_run;
mod scale;
mod server;

// The shared install, one test at a time.
mod setup;
// A test's scope, the scenario around a test body, and the operator processes.
mod scope;

// The tests, by topic.
mod admission;
mod apply;
mod children;
mod deletion;
mod guardrails;
mod install;
mod leader;
mod ownership;
mod policies;
mod provenance;
mod templates;

// What the test files use, by `super::…` or `use super::*` (a new test file finds the same names).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};

use crate::support::{AI, OPS};
use fixture::{BIN, Intent};
use scope::{
    Scope, exists, inventory_names, object_writes, operator_cmd, operator_cmd_for, scenario,
    scope_selector, test_name, webhook_replica,
};
use server::*;
use setup::{Env, SYSTEM, env, operator_binding, root, webhook_configuration};
// Not used by the files here; reachable for new ones.
#[allow(unused_imports)]
use scope::{Scenario, TEMPLATES};
#[allow(unused_imports)]
use setup::{STANDBY, Shared, thirdparty_dir};
