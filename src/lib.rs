//! The `vworkspace-operator` command line: the authoring commands (`release`, `keygen`, `encrypt`,
//! `demo`) and the dispatch to the core (`verify`, `plan`) and the controller (`run`, `check`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authoring;
pub mod check;
pub mod cli;
pub mod reconcile;
