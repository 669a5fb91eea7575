//! The integration tests, one binary: real `git`, `ssh-keygen` and `age`, git servers on loopback,
//! a recording fake API server for exact requests, and the CLI as users run it.

mod common;
mod support;

mod adversarial;
mod authoring;
mod chart;
mod children;
mod cli;
mod control_plane;
mod crds;
mod deploy;
mod differentials;
mod forge;
mod intent;
mod layers;
mod materialize;
mod monitoring;
mod pipeline;
mod reconcile;
mod review;
mod review_ci;
mod robustness;
mod sbom;
mod secrets;
mod signatures;
mod source;
mod ssh_source;
mod status_trust;
mod trust_closure;
mod webhook;
