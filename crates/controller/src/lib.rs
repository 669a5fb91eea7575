//! The in-cluster side of vworkspace-operator's GitOps mode: everything that talks to Git servers or
//! to the Kubernetes API. The deciding code it calls lives in `vworkspace_core`.
//!
//! ```text
//! runtime (run, leader election, probes)          top: wires the controllers
//!   children (instance and Operation controllers, builders, webhook)
//!     cluster (the Cluster reconcile: trust inputs, namespaces, RBAC, apply, prune, status)
//!       source (fetch, cache, auth)   metrics   telemetry   error
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access_lost;
pub mod children;
pub mod cluster;
pub mod commit_status;
pub mod error;
pub mod events;
pub mod fence;
pub mod metrics;
pub mod observed;
pub mod receiver;
pub mod runtime;
pub mod source;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod watch_clients;
pub mod watch_health;

pub use error::{Error, Result};
