//! The verifying core of vworkspace-operator's GitOps mode.
//!
//! The pipeline, one pass per cluster source (see `docs/` and DESIGN.md):
//!
//! ```text
//! repository (read a commit) -> trust (commit signature, history, release k-of-n)
//!   -> intent (layout, YAML, schema) -> secrets (every age value decrypts) -> plan
//! ```
//!
//! Every module here decides: it takes bytes and values and returns values. This crate depends on
//! no Kubernetes client, no async runtime and no HTTP stack, so the compiler keeps I/O out of the
//! verifier (fetching lives in the controller crate). Types carry the rules: a
//! [`trust::commit_signature::VerifiedCommit`] and a [`trust::release::VerifiedRelease`] can only be
//! built by their verifiers, and the planner accepts nothing else.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod compact;
pub mod crd;
pub mod error;
pub mod guardrails;
pub mod intent;
pub mod labels;
pub mod layout;
pub mod limits;
pub(crate) mod parallel;
pub mod pipeline;
pub mod plan;
pub mod reasons;
pub mod repository;
pub mod review;
pub mod secrets;
pub mod spec_digest;
pub mod trust;
pub mod yaml;

pub use error::{Error, Result};
