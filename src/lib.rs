//! vworkspace-operator, GitOps mode.
//!
//! The pipeline, one pass per cluster source (see `docs/` and DESIGN.md):
//!
//! ```text
//! fetch (gix) -> verify commit (SSH/ed25519) -> verify release (signed manifest, k-of-n)
//!   -> parse + validate -> check every age value decrypts -> plan
//! ```
//!
//! Every module that decides is synchronous and pure: it takes bytes and values and returns values.
//! Types carry the rules: a [`commit_signature::VerifiedCommit`] and a [`release::VerifiedRelease`]
//! can only be built by their verifiers, and the planner accepts nothing else.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authoring;
pub mod checkout;
pub mod children;
pub mod cli;
pub mod commit_signature;
pub mod conditions;
pub mod crd;
pub mod demo;
pub mod diff;
pub mod error;
pub mod git;
pub mod history;
pub mod intent;
pub mod leader;
pub mod limits;
pub mod materialize;
pub mod metrics;
pub mod operations;
pub mod parallel;
pub mod pipeline;
pub mod plan;
pub mod rbac;
pub mod reconcile;
pub mod release;
pub mod run;
pub mod secrets;
pub mod server;
pub mod signers;
pub mod source;
pub mod sshsig;
pub mod telemetry;
pub mod webhook;
pub mod webhook_server;
pub mod yaml;

pub use error::{Error, Result};
