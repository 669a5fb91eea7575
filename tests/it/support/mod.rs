//! Test support shared by the modules: the recording fake API server, the RBAC evaluator over deploy/,
//! and throwaway TLS certificates.
#![allow(dead_code)]

pub mod declare;
pub mod fake_api;
pub mod rbac_check;
pub mod tls;
