//! Tools built from Go modules by `scripts/go-tools.sh` (helm, promtool), found the way the tests
//! that use them share: `VWS_<TOOL>=<path>`, else the cached build under target/go-tools/, else the
//! tool on PATH. scripts/test.sh builds them and sets the variable, or, where Go or the module proxy
//! is missing, sets `VWS_<TOOL>_SKIP` to the one-line reason.

use std::path::{Path, PathBuf};

/// The tool's path, or why there is none.
pub fn tool(name: &str) -> Result<PathBuf, String> {
    let var = format!("VWS_{}", name.to_ascii_uppercase());
    if let Some(path) = std::env::var_os(&var).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let built =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/go-tools/{name}/bin/{name}"));
    if built.is_file() {
        return Ok(built);
    }
    let on_path = std::process::Command::new(name).arg("--help").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return Ok(PathBuf::from(name));
    }
    Err(std::env::var(format!("{var}_SKIP")).unwrap_or_else(|_| {
        format!("no {name} ({var}, scripts/go-tools.sh build {name}, or PATH)")
    }))
}

/// Says that a test did not run, and why, in the `SKIPPED <test>: <why>` line scripts/test.sh counts
/// (one direct write to stderr, which libtest does not capture).
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("SKIPPED {test}: {why}\n").as_bytes());
}
