//! End-to-end tests of `verify` and `plan`: a real repository, commits signed by the real
//! `git commit -S` (gpg.format=ssh), keys from `ssh-keygen`, values from the real `age`, releases
//! written by our `release` and co-signed by `ssh-keygen -Y sign`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_vworkspace-operator");
const SMTP_PASSWORD: &str = "hunter2-PLAINTEXT-MARKER-smtp";
const ADMIN_TOKEN: &str = "hunter2-PLAINTEXT-MARKER-admin";

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    recipient: String,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn git(&self, args: &[&str]) -> String {
        let out = run(Command::new("git")
            .current_dir(&self.repo)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &self.root)
            .args(["-c", "user.name=Odoo", "-c", "user.email=odoo@example.org"])
            .args(["-c", "gpg.format=ssh"])
            .arg("-c")
            .arg(format!(
                "user.signingkey={}",
                self.path("committer").display()
            ))
            .args(args));
        stdout(&out).trim().to_owned()
    }

    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-S", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn write(&self, rel: &str, contents: &str) {
        let path = self.repo.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }

    /// `age -a -r <recipient>`, the stock tool.
    fn age_encrypt(&self, plaintext: &str) -> String {
        let mut child = Command::new("age")
            .args(["-a", "-r", &self.recipient])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("age runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(plaintext.as_bytes())
            .expect("write");
        stdout(&child.wait_with_output().expect("age"))
    }

    /// Our `encrypt`, bound to where the value is used.
    fn bound_encrypt(
        &self,
        plaintext: &str,
        ns: &str,
        instance: &str,
        path: &str,
        cluster: &str,
    ) -> String {
        let mut child = Command::new(BIN)
            .args([
                "encrypt",
                "--recipient",
                &self.recipient,
                "--cluster",
                cluster,
                "--namespace",
                ns,
            ])
            .args(["--instance", instance, "--path", path])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("encrypt runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(plaintext.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("encrypt");
        assert!(out.status.success());
        stdout(&out)
    }

    /// Our `release`, then a co-signature by `ssh-keygen -Y sign` with the second key.
    fn release(&self, cluster: &str, extra: &[&str]) {
        run(Command::new(BIN)
            .args(["release", "--repo"])
            .arg(&self.repo)
            .args(["--cluster", cluster, "--key"])
            .arg(self.path("release-odoo"))
            .args(extra));
        let manifest = self.repo.join(format!("clusters/{cluster}/release.yaml"));
        run(Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", "vworkspace-release", "-f"])
            .arg(self.path("release-engineer"))
            .arg(&manifest));
        std::fs::rename(
            manifest.with_extension("yaml.sig"),
            self.repo
                .join(format!("clusters/{cluster}/release.sigs/engineer.sig")),
        )
        .expect("move signature");
    }

    fn verify_cmd(&self, sub: &str, cluster: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg(sub)
            .arg("--repo")
            .arg(&self.repo)
            .args([
                "--cluster",
                cluster,
                "--threshold",
                "2",
                "--allowed-signers",
            ])
            .arg(self.path("commit_signers"))
            .arg("--release-signers")
            .arg(self.path("release_signers"))
            .arg("--identity")
            .arg(self.path("cluster.agekey"))
            .args(extra);
        cmd
    }

    fn verify(&self, extra: &[&str]) -> Output {
        self.verify_cmd("verify", "demo", extra)
            .output()
            .expect("verify runs")
    }
}

fn ssh_keygen(path: &Path, comment: &str, kind: &str) -> String {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", comment, "-f"])
        .arg(path));
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_owned()
}

fn nextcloud(password: &str) -> String {
    let indented: String = password
        .lines()
        .map(|l| format!("            {l}\n"))
        .collect();
    format!(
        "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: nextcloud\nspec:\n  chart:\n    repository: https://nextcloud.github.io/helm/\n    name: nextcloud\n    version: 6.6.4\n  values:\n    nextcloud:\n      host: cloud.example.org\n      mail:\n        smtp:\n          password: |\n{indented}"
    )
}

fn vaultwarden(token: &str) -> String {
    let indented: String = token.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: vaultwarden\n  namespace: org-vault\nspec:\n  chart:\n    repository: oci://ghcr.io/guerzon/charts\n    name: vaultwarden\n    version: 0.31.8\n  values:\n    adminToken:\n      value: |\n{indented}"
    )
}

const BACKUP: &str = "apiVersion: ops.vworkspace.io/v1alpha1\nkind: Operation\nmetadata:\n  name: nightly\nspec:\n  type: Backup\n  template: velero-namespace-backup\n  target:\n    applicationInstance: nextcloud\n";

/// A repository with one signed commit holding a 2-of-2 release (serial 1) of cluster `demo`.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_owned();
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    let committer = ssh_keygen(&root.join("committer"), "odoo@example.org", "ed25519");
    let odoo = ssh_keygen(&root.join("release-odoo"), "odoo-release", "ed25519");
    let engineer = ssh_keygen(&root.join("release-engineer"), "alice", "ed25519");
    std::fs::write(
        root.join("commit_signers"),
        format!("odoo@example.org namespaces=\"git\" {committer}\n"),
    )
    .expect("write");
    std::fs::write(
        root.join("release_signers"),
        format!("odoo namespaces=\"vworkspace-release\" {odoo}\nalice namespaces=\"vworkspace-release\" {engineer}\n"),
    )
    .expect("write");
    run(Command::new("age-keygen")
        .arg("-o")
        .arg(root.join("cluster.agekey")));
    let key = std::fs::read_to_string(root.join("cluster.agekey")).expect("identity");
    let recipient = key
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("recipient")
        .to_owned();
    let f = Fixture {
        _dir: dir,
        root,
        repo,
        recipient,
    };
    f.git(&["init", "-q", "-b", "main"]);
    let smtp = f.bound_encrypt(
        SMTP_PASSWORD,
        "org-myteam",
        "nextcloud",
        "nextcloud.mail.smtp.password",
        "demo",
    );
    f.write(
        "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml",
        &nextcloud(&smtp),
    );
    let token = f.age_encrypt(ADMIN_TOKEN);
    f.write(
        "clusters/demo/namespaces/org-vault/applicationinstances/vaultwarden.yaml",
        &vaultwarden(&token),
    );
    f.write(
        "clusters/demo/namespaces/org-myteam/operations/nightly.yaml",
        BACKUP,
    );
    f.write("README.md", "intent\n");
    f.release("demo", &[]);
    f.commit("release 1");
    f
}

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
    let smtp = f.bound_encrypt(
        SMTP_PASSWORD,
        "org-myteam",
        "nextcloud",
        "nextcloud.mail.smtp.password",
        "prod",
    );
    f.write(
        "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml",
        &nextcloud(&smtp),
    );
    f.release("demo", &[]);
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
    f.release("demo", &[]);
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
