//! The names of the intent repository's layout (`clusters/<id>/release.yaml`, `release.sigs/`),
//! shared by the repository reader (which bounds the manifest's size) and the release verifier.

/// The manifest's file name inside `clusters/<id>/`.
pub const MANIFEST_FILE: &str = "release.yaml";
/// The directory of release signatures inside `clusters/<id>/`.
pub const SIGNATURES_DIR: &str = "release.sigs/";
