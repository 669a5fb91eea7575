//! Custom resource types. The Rust types are the source of truth; `crds/` is generated from them.
