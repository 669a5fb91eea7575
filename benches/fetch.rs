//! First clone and incremental fetch of the Git source, side by side with `git clone` / `git fetch`
//! of the same repository over the same transport, as medians and ratios (ours / git).
//!
//! `cargo bench --bench fetch` runs the full size (2,000 files, 50 changed on the incremental
//! step, 7 runs per measure); without `--bench` (as `cargo test --all-targets` runs it) a small smoke
//! size runs once, so the bench cannot rot.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vworkspace_controller::source::{self, FetchOptions};
use vworkspace_core::repository::GitRef;

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args([
            "-c",
            "user.name=B",
            "-c",
            "user.email=b@example.org",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut(usize) -> Duration) -> Duration {
    median((0..runs).map(&mut f).collect())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (files, changed, runs) = if full { (2_000, 50, 7) } else { (50, 5, 1) };
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    for i in 0..files {
        let path = work.join(format!(
            "clusters/demo/namespaces/ns-{}/applicationinstances/app-{i}.yaml",
            i % 100
        ));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, format!("apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: app-{i}\nspec:\n  chart:\n    repository: https://charts.example.org\n    name: app\n    version: 1.0.{i}\n")).expect("write");
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "base"]);
    git(&work, &["tag", "base"]);
    for i in 0..changed {
        let path = work.join(format!(
            "clusters/demo/namespaces/ns-{}/applicationinstances/app-{i}.yaml",
            i % 100
        ));
        std::fs::write(&path, format!("apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: app-{i}\nspec:\n  chart:\n    repository: https://charts.example.org\n    name: app\n    version: 2.0.{i}\n")).expect("write");
    }
    git(&work, &["commit", "-q", "-am", "update"]);
    let served = dir.path().join("served.git");
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().expect("utf8"),
            served.to_str().expect("utf8"),
        ],
    );
    let url = format!("file://{}", served.display());
    let scratch = dir.path().join("scratch");
    let options = FetchOptions::default();
    let main_ref = GitRef::Branch("main".into());

    let ours_clone = time(runs, |i| {
        let cache = scratch.join(format!("ours-clone-{i}"));
        let start = Instant::now();
        source::fetch(&url, &main_ref, &cache, &options).expect("clone");
        start.elapsed()
    });
    let git_clone = time(runs, |i| {
        let target = scratch.join(format!("git-clone-{i}"));
        std::fs::create_dir_all(&scratch).expect("mkdir");
        let start = Instant::now();
        git(
            &scratch,
            &[
                "clone",
                "-q",
                "--bare",
                "--no-local",
                &url,
                target.to_str().expect("utf8"),
            ],
        );
        start.elapsed()
    });
    let ours_fetch = time(runs, |i| {
        let cache = scratch.join(format!("ours-inc-{i}"));
        source::fetch(&url, &GitRef::Tag("base".into()), &cache, &options).expect("base");
        let start = Instant::now();
        source::fetch(&url, &main_ref, &cache, &options).expect("fetch");
        start.elapsed()
    });
    let git_fetch = time(runs, |i| {
        let target = scratch.join(format!("git-inc-{i}"));
        std::fs::create_dir_all(&target).expect("mkdir");
        git(&target, &["init", "-q", "--bare"]);
        git(
            &target,
            &[
                "fetch",
                "-q",
                "--no-tags",
                &url,
                "+refs/tags/base:refs/tags/base",
            ],
        );
        let start = Instant::now();
        git(
            &target,
            &[
                "fetch",
                "-q",
                "--no-tags",
                &url,
                "+refs/heads/main:refs/remotes/origin/main",
            ],
        );
        start.elapsed()
    });
    println!(
        "fetch benchmark: {files} files, {changed} changed on the incremental step, median of {runs} run(s), file:// transport"
    );
    println!(
        "{:<22} {:>12} {:>12} {:>14}",
        "measure", "ours", "git", "ours / git"
    );
    for (name, ours, theirs) in [
        ("first clone", ours_clone, git_clone),
        ("incremental fetch", ours_fetch, git_fetch),
    ] {
        println!(
            "{:<22} {:>10.1}ms {:>10.1}ms {:>14.2}",
            name,
            ours.as_secs_f64() * 1e3,
            theirs.as_secs_f64() * 1e3,
            ours.as_secs_f64() / theirs.as_secs_f64()
        );
    }
}
