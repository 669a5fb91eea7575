//! Bounds on everything an attacker who controls the repository controls.
//!
//! The defaults are generous for real intent (thousands of instances) and small enough that a hostile
//! repository cannot exhaust the operator's memory or time. Every limit is checked before the work it
//! bounds is done, and a breach names the file and the limit.

/// Limits applied while reading a commit's tree and parsing its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest single file under `clusters/<id>/`, in bytes.
    pub max_file_bytes: u64,
    /// Largest `release.yaml`: it lists every file, so it grows with the release (about 130 bytes a
    /// file).
    pub max_manifest_bytes: u64,
    /// Most files (blobs) under `clusters/<id>/`, `release.yaml` and signatures included.
    pub max_files: usize,
    /// Largest sum of all file sizes under `clusters/<id>/`, in bytes.
    pub max_total_bytes: u64,
    /// Deepest nesting of YAML collections in one document.
    pub max_yaml_depth: usize,
    /// Most YAML nodes one file may produce, alias expansions included (stops alias bombs).
    pub max_yaml_nodes: usize,
    /// Most alias references one file may contain.
    pub max_yaml_aliases: usize,
    /// Largest armored age value, in bytes.
    pub max_secret_armored_bytes: usize,
    /// Largest decrypted secret value, in bytes.
    pub max_secret_plaintext_bytes: usize,
    /// Most encrypted values one release may carry.
    pub max_secret_values: usize,
    /// Most signatures in `release.sigs/`.
    pub max_release_signatures: usize,
    /// Deepest directory nesting under `clusters/<id>/`.
    pub max_tree_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 256 * 1024,
            max_manifest_bytes: 16 * 1024 * 1024,
            max_files: 50_000,
            max_total_bytes: 256 * 1024 * 1024,
            max_yaml_depth: 64,
            max_yaml_nodes: 100_000,
            max_yaml_aliases: 100,
            max_secret_armored_bytes: 64 * 1024,
            max_secret_plaintext_bytes: 32 * 1024,
            max_secret_values: 50_000,
            max_release_signatures: 16,
            max_tree_depth: 8,
        }
    }
}
