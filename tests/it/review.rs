//! `diff --base`: a pull request reviewed without the cluster, on real repositories (real `git commit
//! -S`, keys from `ssh-keygen`, values from `encrypt` and `age`), against golden outputs in
//! `tests/golden/review/` (regenerate with `UPDATE_GOLDEN=1 cargo test --test it review::` and read
//! the diff). Commit ids, key fingerprints, digests and expiry instants are replaced by names first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{self, BIN, Fixture, run, stdout};

/// The base: the fixture's 2-of-2 release of `demo`, and the trust files the base branch carries.
pub fn base_repo() -> Fixture {
    let f = common::fixture();
    for name in ["commit_signers", "release_signers"] {
        let text = std::fs::read_to_string(f.path(name)).expect("signers");
        f.write(&format!("trust/{name}"), &text);
    }
    f.write("trust/threshold", "2\n");
    f.commit("trust inputs");
    f
}

/// Writes a fresh release signed by odoo's key only (half-signed: the engineer signs later).
pub fn release_odoo_only(f: &Fixture) {
    f.git(&["add", "-A"]);
    run(Command::new(BIN)
        .args(["release", "--force", "--repo"])
        .arg(&f.repo)
        .args(["--cluster", "demo", "--key"])
        .arg(f.path("release-odoo")));
}

const INSTANCES: &str = "clusters/demo/namespaces";

/// Created, changed (a chart version and a rotated value), removed, an Operation that runs;
/// released 2-of-2 and signed.
pub fn pr_changes(f: &Fixture) {
    f.git(&["checkout", "-q", "-b", "pr-changes", "main"]);
    let smtp = f.bound_encrypt_for(
        "demo",
        "a-new-password",
        "org-myteam",
        "nextcloud",
        "nextcloud.mail.smtp.password",
    );
    let nextcloud = common::nextcloud(&smtp).replace("version: 6.6.4", "version: 6.6.5");
    f.write(
        &format!("{INSTANCES}/org-myteam/applicationinstances/nextcloud.yaml"),
        &nextcloud,
    );
    f.write(
        &format!("{INSTANCES}/org-wiki/applicationinstances/wiki.yaml"),
        "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: wiki\nspec:\n  chart:\n    repository: https://charts.example.org/\n    name: wiki\n    version: 1.2.3\n",
    );
    std::fs::remove_file(
        f.repo
            .join(format!("{INSTANCES}/org-myteam/operations/nightly.yaml")),
    )
    .expect("remove");
    f.write(
        &format!("{INSTANCES}/org-myteam/operations/weekly.yaml"),
        &common::BACKUP.replace("name: nightly", "name: weekly"),
    );
    f.release(&[]);
    f.commit("nextcloud 6.6.5, wiki, weekly backup");
}

/// A chart bump released by odoo alone, and vaultwarden's token replaced by nextcloud's ciphertext.
pub fn pr_half_signed(f: &Fixture) {
    f.git(&["checkout", "-q", "-b", "pr-half", "main"]);
    let path = f.repo.join(format!(
        "{INSTANCES}/org-myteam/applicationinstances/nextcloud.yaml"
    ));
    let nextcloud = std::fs::read_to_string(&path).expect("nextcloud");
    let smtp: String = nextcloud
        .lines()
        .skip_while(|l| !l.contains("BEGIN AGE"))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    f.write(
        &format!("{INSTANCES}/org-vault/applicationinstances/vaultwarden.yaml"),
        &common::vaultwarden(&smtp).replace("0.31.8", "0.32.0"),
    );
    release_odoo_only(f);
    f.commit("vaultwarden 0.32.0");
}

/// trust/: a new release key and a lower threshold; nothing else.
pub fn pr_trust(f: &Fixture) -> String {
    f.git(&["checkout", "-q", "-b", "pr-trust", "main"]);
    let mallory = common::ssh_keygen(&f.path("release-mallory"), "mallory", "ed25519");
    let mut signers = std::fs::read_to_string(f.repo.join("trust/release_signers")).expect("read");
    signers.push_str(&format!(
        "mallory namespaces=\"vworkspace-release\" {mallory}\n"
    ));
    f.write("trust/release_signers", &signers);
    f.write("trust/threshold", "1\n");
    f.commit("trust: add mallory, threshold 1");
    mallory
}

/// A literal credential in nextcloud's values, no fresh release, an unsigned commit.
pub fn pr_refused(f: &Fixture) {
    f.git(&["checkout", "-q", "-b", "pr-refused", "main"]);
    let path = format!("{INSTANCES}/org-myteam/applicationinstances/nextcloud.yaml");
    let text = std::fs::read_to_string(f.repo.join(&path)).expect("read");
    let text = text.replace(
        "      host: cloud.example.org\n",
        "      host: cloud.example.org\n      admin:\n        password: hunter2-literal\n",
    );
    f.write(&path, &text);
    f.git(&["add", "-A"]);
    f.git(&[
        "commit",
        "-q",
        "--no-gpg-sign",
        "-m",
        "nextcloud admin password",
    ]);
}

pub fn review(f: &Fixture, head: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["diff", "--base", "main", "--ref", head, "--repo"])
        .arg(&f.repo)
        .args(extra)
        .output()
        .expect("diff --base runs")
}

fn fingerprint(public_key: &Path) -> String {
    let out = stdout(&run(Command::new("ssh-keygen").arg("-lf").arg(public_key)));
    out.split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned()
}

/// Replaces what changes from run to run by names: commit ids, fingerprints, digests, expiry.
pub fn normalize(f: &Fixture, text: &str) -> String {
    let mut text = text.to_owned();
    for (branch, name) in [
        ("main", "<base>"),
        ("pr-changes", "<head>"),
        ("pr-half", "<head>"),
        ("pr-trust", "<head>"),
        ("pr-refused", "<head>"),
    ] {
        let Ok(out) = Command::new("git")
            .current_dir(&f.repo)
            .args(["rev-parse", "--verify", "-q", branch])
            .output()
        else {
            continue;
        };
        let id = stdout(&out).trim().to_owned();
        if id.len() == 40 {
            text = text.replace(&id, name).replace(&id[..12], name);
        }
    }
    for key in [
        "committer",
        "release-odoo",
        "release-engineer",
        "release-mallory",
    ] {
        let public = f.path(key).with_extension("pub");
        if public.exists() {
            text = text.replace(&fingerprint(&public), &format!("<fp:{key}>"));
        }
    }
    // A head that keeps the base's release shows the base's expiry; a new release made in the same
    // second as the base's shares its expiry, which then reads as the head's.
    let manifest = |branch: &str| f.git(&["show", &format!("{branch}:clusters/demo/release.yaml")]);
    let branches: &[&str] = if manifest("HEAD") == manifest("main") {
        &["main"]
    } else {
        &["HEAD", "main"]
    };
    for branch in branches {
        if let Some(expires) = manifest(branch)
            .lines()
            .find_map(|l| l.strip_prefix("expires: "))
        {
            let expires = expires.trim_matches(['"', '\'']);
            text = text.replace(expires, &format!("<expires:{branch}>"));
        }
    }
    hide_sha256(&text)
}

/// `sha256:<64 hex>` -> `sha256:<hex>`.
fn hide_sha256(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sha256:") {
        out.push_str(&rest[..at + 7]);
        rest = &rest[at + 7..];
        let hex = rest.bytes().take_while(|b| b.is_ascii_hexdigit()).count();
        if hex == 64 {
            out.push_str("<hex>");
            rest = &rest[64..];
        }
    }
    out.push_str(rest);
    out
}

pub fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/review")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

fn outputs(f: &Fixture, head: &str, stem: &str, formats: &[&str]) -> i32 {
    let mut code = None;
    for format in formats {
        let out = review(f, head, &["-o", format]);
        let this = out.status.code().expect("exit code");
        assert!(
            code.is_none_or(|c| c == this),
            "every format exits alike: {format} {this}"
        );
        code = Some(this);
        assert!(
            !stdout(&out).contains(common::SMTP_PASSWORD) && !stdout(&out).contains("BEGIN AGE"),
            "no plaintext, no ciphertext"
        );
        let ext = match *format {
            "markdown" => "md",
            "github" => "github.txt",
            "gitlab" => "gitlab.json",
            other => other,
        };
        golden(&format!("{stem}.{ext}"), &normalize(f, &stdout(&out)));
    }
    code.expect("a format")
}

#[test]
fn added_changed_removed_and_a_rotated_value() {
    let f = base_repo();
    pr_changes(&f);
    let code = outputs(
        &f,
        "pr-changes",
        "changes",
        &["markdown", "github", "json", "text"],
    );
    assert_eq!(code, 1, "changes, nothing blocks");
    let json: serde_json::Value =
        serde_json::from_slice(&review(&f, "pr-changes", &["-o", "json"]).stdout).expect("json");
    assert_eq!(json["result"], "ready");
    let cluster = &json["clusters"][0];
    // Namespace, kind, name order.
    assert_eq!(
        cluster["create"][0]["object"],
        "Operation org-myteam/weekly"
    );
    assert_eq!(
        cluster["create"][1]["object"],
        "ApplicationInstance org-wiki/wiki"
    );
    assert_eq!(
        cluster["prune"][0]["object"],
        "Operation org-myteam/nightly"
    );
    assert_eq!(cluster["run"][0], "Operation org-myteam/weekly");
    assert_eq!(cluster["values"][0]["change"], "rotated");
    assert_eq!(cluster["head"]["release"]["complete"], true);
}

#[test]
fn half_signed_release_names_who_must_still_sign() {
    let f = base_repo();
    pr_half_signed(&f);
    let code = outputs(&f, "pr-half", "half-signed", &["markdown", "github"]);
    assert_eq!(
        code, 1,
        "pending signatures block merging, they do not refuse"
    );
    let text = stdout(&review(&f, "pr-half", &[]));
    assert!(
        text.contains("release signatures 1 of 2 (odoo); waiting for alice"),
        "{text}"
    );
    assert!(
        text.contains(
            "same ciphertext as org-myteam/nextcloud spec.values.nextcloud.mail.smtp.password"
        ),
        "the copied value is flagged: {text}"
    );
}

#[test]
fn trust_file_change_is_its_own_section_judged_by_the_base() {
    let f = base_repo();
    let mallory_key = pr_trust(&f);
    let code = outputs(&f, "pr-trust", "trust-change", &["markdown", "json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value =
        serde_json::from_slice(&review(&f, "pr-trust", &["-o", "json"]).stdout).expect("json");
    assert_eq!(json["trustFiles"].as_array().map(Vec::len), Some(2));
    // The head's threshold (1) and key (mallory) do not judge the head: the base's do.
    assert_eq!(json["approvers"]["threshold"], 2);
    assert!(!json.to_string().contains(&mallory_key));
}

#[test]
fn refused_head_exits_3_with_annotations_on_the_line() {
    let f = base_repo();
    pr_refused(&f);
    let code = outputs(
        &f,
        "pr-refused",
        "refused",
        &["github", "json", "markdown", "gitlab"],
    );
    assert_eq!(code, 3);
    let github = stdout(&review(&f, "pr-refused", &["-o", "github"]));
    // The literal sits on line 14 of nextcloud.yaml (`password:` under `admin:`).
    assert!(
        github.contains("::error file=clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml,line=14,"),
        "{github}"
    );
}

#[test]
fn no_change_exits_0_and_usage_errors_exit_2() {
    let f = base_repo();
    let out = review(&f, "main", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = review(&f, "no-such-branch", &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["verify", "--base", "main", "--cluster", "demo"])
        .arg("--repo")
        .arg(&f.repo)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "--base is for diff");
    let out = f.verify(&["-o", "markdown"]);
    assert_eq!(out.status.code(), Some(2), "-o markdown is for diff --base");
}

#[test]
fn shallow_ci_checkout_with_the_base_fetched_reviews_alike() {
    let f = base_repo();
    pr_half_signed(&f);
    f.git(&["update-ref", "refs/remotes/origin/main", "main"]);
    let full = Command::new(BIN)
        .args([
            "diff",
            "--base",
            "origin/main",
            "--ref",
            "pr-half",
            "-o",
            "markdown",
            "--repo",
        ])
        .arg(&f.repo)
        .output()
        .expect("runs");
    let shallow = f.root.join("shallow");
    let url = format!("file://{}", f.repo.display());
    run(Command::new("git")
        .args(["clone", "-q", "--depth", "1", "--branch", "pr-half", &url])
        .arg(&shallow));
    run(Command::new("git").current_dir(&shallow).args([
        "fetch",
        "-q",
        "--depth",
        "1",
        "origin",
        "main:refs/remotes/origin/main",
    ]));
    let out = Command::new(BIN)
        .current_dir(&shallow)
        .args(["diff", "--base", "origin/main", "-o", "markdown"])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout(&out),
        stdout(&full),
        "a shallow checkout reviews alike"
    );
}

#[test]
fn with_the_cluster_key_a_copied_value_shows_where_it_is_bound() {
    let f = base_repo();
    pr_half_signed(&f);
    let key = f.path("cluster.agekey");
    let out = review(
        &f,
        "pr-half",
        &["--identity", key.to_str().expect("utf-8 path")],
    );
    let text = stdout(&out);
    assert!(
        text.contains("org-vault/vaultwarden spec.values.adminToken.value: <redacted> rotated; same ciphertext as org-myteam/nextcloud spec.values.nextcloud.mail.smtp.password (copied); bound to demo/org-myteam/nextcloud spec.values.nextcloud.mail.smtp.password"),
        "{text}"
    );
    assert!(!text.contains(common::SMTP_PASSWORD), "never the plaintext");
}
