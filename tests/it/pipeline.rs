//! End-to-end tests of `verify` and `plan`: a real repository, commits signed by the real
//! `git commit -S` (gpg.format=ssh), keys from `ssh-keygen`, values from the real `age`, releases
//! written by our `release` and co-signed by `ssh-keygen -Y sign`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::common::*;

fn refusals(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter(|l| l.starts_with("refused "))
        .map(str::to_owned)
        .collect()
}

fn assert_no_plaintext(out: &Output) {
    for text in [
        stdout(out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ] {
        assert!(
            !text.contains("hunter2-PLAINTEXT-MARKER"),
            "plaintext leaked: {text}"
        );
    }
}

#[test]
fn signed_release_verifies_and_plans() {
    let f = fixture();
    let out = f.verify(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("ok      commit"), "{text}");
    assert!(text.contains("signed by 2 of 2 required keys"), "{text}");
    assert!(text.contains("2 encrypted value(s) decrypt"), "{text}");
    // The plain `age -a` value is accepted and reported as unbound.
    assert!(text.contains("adminToken.value"), "{text}");
    assert_no_plaintext(&out);

    let plan = f.verify_cmd("plan", "demo", &[]).output().expect("plan");
    assert_eq!(plan.status.code(), Some(0));
    let yaml = stdout(&plan);
    assert_eq!(
        yaml.matches("\n---\n").count() + usize::from(yaml.starts_with("---\n")),
        3,
        "{yaml}"
    );
    assert!(
        yaml.contains("app.vworkspace.io/managed-by: vworkspace"),
        "{yaml}"
    );
    assert!(
        yaml.contains("gitops.vworkspace.io/cluster: demo"),
        "{yaml}"
    );
    assert!(yaml.contains("gitops.vworkspace.io/source-path: clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml"), "{yaml}");
    assert!(
        yaml.contains(&format!(
            "gitops.vworkspace.io/commit: {}",
            f.git(&["rev-parse", "HEAD"])
        )),
        "{yaml}"
    );
    assert!(yaml.contains("<redacted>"), "{yaml}");
    assert!(!yaml.contains("BEGIN AGE ENCRYPTED FILE"), "{yaml}");
    assert_no_plaintext(&plan);
}

#[test]
fn tampered_commit_is_refused() {
    let f = fixture();
    let raw = f.git(&["cat-file", "commit", "HEAD"]) + "\n";
    let tampered = raw.replace("release 1", "release 2");
    let mut child = Command::new("git")
        .current_dir(&f.repo)
        .args(["hash-object", "-t", "commit", "-w", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("git");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(tampered.as_bytes())
        .expect("write");
    let id = stdout(&child.wait_with_output().expect("hash-object"))
        .trim()
        .to_owned();
    let out = f.verify(&["--ref", &id]);
    assert_eq!(out.status.code(), Some(1));
    let lines = refusals(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("refused CommitSignatureInvalid:"),
        "{lines:?}"
    );
}

#[test]
fn unsigned_commit_is_refused() {
    let f = fixture();
    f.write(
        "clusters/demo/namespaces/org-myteam/operations/extra.yaml",
        &BACKUP.replace("nightly", "extra"),
    );
    f.git(&["add", "-A"]);
    f.git(&["commit", "-q", "--no-gpg-sign", "-m", "unsigned"]);
    let out = f.verify(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        refusals(&out)[0].starts_with("refused CommitSignatureInvalid:"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn rolled_back_release_is_refused() {
    let f = fixture();
    let out = f.verify(&["--last-serial", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let lines = refusals(&out);
    assert!(lines[0].starts_with("refused ReleaseInvalid:"), "{lines:?}");
    assert!(
        lines[0].contains("serial 1 is not greater than the last applied serial 1"),
        "{lines:?}"
    );
    assert_eq!(f.verify(&["--last-serial", "0"]).status.code(), Some(0));
}

#[test]
fn expired_release_is_refused() {
    let f = fixture();
    let out = f.verify(&["--now", "2099-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("refused ReleaseInvalid:") && text.contains("expired at"),
        "{text}"
    );
}

#[test]
fn release_for_another_cluster_is_refused() {
    let f = fixture();
    // clusters/prod is a byte-for-byte copy of demo's valid release: a replay to another cluster.
    run(Command::new("cp")
        .arg("-r")
        .arg(f.repo.join("clusters/demo"))
        .arg(f.repo.join("clusters/prod")));
    f.commit("copy");
    let out = f
        .verify_cmd("verify", "prod", &[])
        .output()
        .expect("verify");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("field cluster is \"demo\", expected \"prod\""),
        "{text}"
    );
}

#[test]
fn file_added_after_release_is_refused() {
    let f = fixture();
    f.write(
        "clusters/demo/namespaces/org-myteam/operations/sneaky.yaml",
        &BACKUP.replace("nightly", "sneaky"),
    );
    f.commit("unreleased change");
    let out = f.verify(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("namespaces/org-myteam/operations/sneaky.yaml: present but not listed"),
        "{text}"
    );
}

#[test]
fn threshold_counts_distinct_keys() {
    let f = fixture();
    // Replace the engineer's signature by a second copy of Odoo's: one key, two files.
    let sigs = f.repo.join("clusters/demo/release.sigs");
    std::fs::copy(sigs.join("odoo-release.sig"), sigs.join("engineer.sig")).expect("copy");
    f.commit("same key twice");
    let out = f.verify(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("signed by 1 distinct trusted key(s)") && text.contains("2 required"),
        "{text}"
    );
}

#[test]
fn value_for_another_cluster_is_refused() {
    let f = fixture();
    let smtp = f.bound_encrypt_for(
        "prod",
        SMTP_PASSWORD,
        "org-myteam",
        "nextcloud",
        "nextcloud.mail.smtp.password",
    );
    f.write(
        "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml",
        &nextcloud(&smtp),
    );
    f.release(&[]);
    f.commit("release 2 with a value bound to prod");
    let out = f.verify(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("refused ValuesInvalid:") && text.contains("nextcloud.mail.smtp.password"),
        "{text}"
    );
    assert_no_plaintext(&out);
}

#[test]
fn bound_values_can_be_required() {
    let f = fixture();
    let out = f.verify(&["--require-bound-values"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("refused ValuesInvalid:") && text.contains("adminToken.value"),
        "{text}"
    );
    assert_no_plaintext(&out);
}

#[test]
fn usage_errors_exit_2() {
    let f = fixture();
    let out = Command::new(BIN)
        .args(["verify", "--repo"])
        .arg(&f.repo)
        .args([
            "--cluster",
            "demo",
            "--allowed-signers",
            "/nonexistent",
            "--release-signers",
            "/nonexistent",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent"));
    let out = Command::new(BIN)
        .args(["verify", "--bogus"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn second_release_increments_serial_and_passes_after_first() {
    let f = fixture();
    f.write(
        "clusters/demo/namespaces/org-myteam/operations/weekly.yaml",
        &BACKUP.replace("nightly", "weekly"),
    );
    f.release(&[]);
    f.commit("release 2");
    let manifest =
        std::fs::read_to_string(f.repo.join("clusters/demo/release.yaml")).expect("manifest");
    assert!(manifest.contains("serial: 2\n"), "{manifest}");
    assert_eq!(f.verify(&["--last-serial", "1"]).status.code(), Some(0));
}

#[test]
fn demo_runs_end_to_end() {
    let out = Command::new(BIN).arg("demo").output().expect("demo runs");
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("refused CommitSignatureInvalid:"), "{text}");
    assert!(
        text.contains("refused ReleaseInvalid:") && text.contains("rollback refused"),
        "{text}"
    );
    assert!(text.contains("demo passed"), "{text}");
}

#[test]
fn unchanged_commit_reuses_the_verdict_until_it_runs_out() {
    use vworkspace_core::pipeline::PassMemo;
    use vworkspace_core::repository::{GitRef, LocalRepository};
    let f = fixture();
    let args = [
        "verify".to_owned(),
        "--repo".to_owned(),
        f.repo.display().to_string(),
        "--cluster".to_owned(),
        "demo".to_owned(),
        "--allowed-signers".to_owned(),
        f.path("commit_signers").display().to_string(),
        "--release-signers".to_owned(),
        f.path("release_signers").display().to_string(),
        "--threshold".to_owned(),
        "2".to_owned(),
    ];
    use clap::Parser as _;
    let cli =
        vworkspace_operator::cli::Cli::parse_from(std::iter::once("x".to_owned()).chain(args));
    let vworkspace_operator::cli::Command::Verify(trust) = cli.command else {
        panic!("verify")
    };
    let mut config = vworkspace_operator::cli::trust_config(&trust).expect("config");
    let repo = LocalRepository::open(&f.repo).expect("open");
    let mut memo = PassMemo::default();
    let main = GitRef::Branch("main".into());
    let first = memo.verify_ref(&repo, &main, &config).expect("first pass");
    let again = memo.verify_ref(&repo, &main, &config).expect("second pass");
    assert!(
        std::sync::Arc::ptr_eq(&first, &again),
        "the unchanged commit reused the verdict"
    );
    // A changed trust input re-verifies.
    config.release.threshold = std::num::NonZeroUsize::new(3).expect("3");
    assert!(memo.verify_ref(&repo, &main, &config).is_err());
    config.release.threshold = std::num::NonZeroUsize::new(2).expect("2");
    let fresh = memo.verify_ref(&repo, &main, &config).expect("re-verified");
    assert!(!std::sync::Arc::ptr_eq(&first, &fresh));
    // Once the release has expired, the remembered verdict is not reused.
    config.now = "2099-01-01T00:00:00Z".parse().expect("ts");
    assert!(
        memo.verify_ref(&repo, &main, &config).is_err(),
        "expired release refused, not remembered"
    );
}

#[test]
fn a_literal_credential_in_values_is_refused_before_the_webhook_would() {
    let f = fixture();
    f.write(
        "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml",
        &nextcloud("hunter2-PLAINTEXT-MARKER-literal"),
    );
    f.release(&[]);
    f.commit("a literal password");
    let out = f.verify(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let refused = refusals(&out);
    assert!(
        refused.iter().any(|l| l.contains(
            "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml: spec.values.nextcloud.mail.smtp.password: a literal credential"
        )),
        "{refused:?}"
    );
    assert_no_plaintext(&out);
}
