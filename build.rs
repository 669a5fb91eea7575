//! Records the commit and the date the binary was built from, for `--version`.

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = std::env::var("VWORKSPACE_COMMIT")
        .ok()
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // SOURCE_DATE_EPOCH keeps reproducible builds reproducible.
    let date = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => output("date", &["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%d"]),
        Err(_) => output("date", &["-u", "+%Y-%m-%d"]),
    }
    .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=VWORKSPACE_COMMIT={commit}");
    println!("cargo:rustc-env=VWORKSPACE_BUILD_DATE={date}");
    println!("cargo:rerun-if-env-changed=VWORKSPACE_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    if let Some(head) = output("git", &["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(logs) = output("git", &["rev-parse", "--git-path", "logs/HEAD"]) {
        println!("cargo:rerun-if-changed={logs}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
