//! The shared fixture of the end-to-end tests: a real repository whose commits are signed by the real
//! `git commit -S` (gpg.format=ssh), keys from `ssh-keygen`, values from the real `age` and from our
//! `encrypt`, releases written by our `release` and co-signed by `ssh-keygen -Y sign`.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_vworkspace-operator");
pub const SMTP_PASSWORD: &str = "hunter2-PLAINTEXT-MARKER-smtp";
pub const ADMIN_TOKEN: &str = "hunter2-PLAINTEXT-MARKER-admin";

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub recipient: String,
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` with `input` on its standard input; it must succeed.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} runs: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `age -a -r <recipient>`, the stock tool.
pub fn age_encrypt(recipient: &str, plaintext: &str) -> String {
    stdout(&run_with_stdin(
        Command::new("age").args(["-a", "-r", recipient]),
        plaintext.as_bytes(),
    ))
}

/// Our `encrypt`, bound to where the value is used.
pub fn bound_encrypt(
    recipient: &str,
    plaintext: &str,
    cluster: &str,
    ns: &str,
    instance: &str,
    path: &str,
) -> String {
    stdout(&run_with_stdin(
        Command::new(BIN)
            .args(["encrypt", "--recipient", recipient, "--cluster", cluster])
            .args(["--namespace", ns, "--instance", instance, "--path", path]),
        plaintext.as_bytes(),
    ))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Fixture {
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn git(&self, args: &[&str]) -> String {
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

    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-S", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.repo.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }

    /// `age -a -r <recipient>`, the stock tool.
    pub fn age_encrypt(&self, plaintext: &str) -> String {
        age_encrypt(&self.recipient, plaintext)
    }

    /// Our `encrypt`, bound to where the value is used.
    pub fn bound_encrypt(
        &self,
        plaintext: &str,
        ns: &str,
        instance: &str,
        path: &str,
        cluster: &str,
    ) -> String {
        bound_encrypt(&self.recipient, plaintext, cluster, ns, instance, path)
    }

    /// Our `release`, then a co-signature by `ssh-keygen -Y sign` with the second key. It signs
    /// whatever the directory holds (`--unchecked`: the tests of `verify`'s refusals need signed
    /// hostile intent) and re-signs an unchanged directory (`--force`).
    pub fn release(&self, cluster: &str, extra: &[&str]) {
        // `release` hashes what git will commit (the index): stage the intent first.
        self.git(&["add", "-A"]);
        run(Command::new(BIN)
            .args(["release", "--unchecked", "--force", "--repo"])
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

    pub fn verify_cmd(&self, sub: &str, cluster: &str, extra: &[&str]) -> Command {
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

    pub fn verify(&self, extra: &[&str]) -> Output {
        self.verify_cmd("verify", "demo", extra)
            .output()
            .expect("verify runs")
    }
}

/// `age-keygen -o path`: writes an identity, returns its recipient.
pub fn age_keygen(path: &Path) -> String {
    run(Command::new("age-keygen")
        .arg("-o")
        .arg(path)
        .stderr(Stdio::null()));
    let key = std::fs::read_to_string(path).expect("identity");
    key.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("recipient")
        .to_owned()
}

pub fn ssh_keygen(path: &Path, comment: &str, kind: &str) -> String {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", comment, "-f"])
        .arg(path));
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_owned()
}

pub fn nextcloud(password: &str) -> String {
    let indented: String = password
        .lines()
        .map(|l| format!("            {l}\n"))
        .collect();
    format!(
        "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: nextcloud\nspec:\n  chart:\n    repository: https://nextcloud.github.io/helm/\n    name: nextcloud\n    version: 6.6.4\n  values:\n    nextcloud:\n      host: cloud.example.org\n      mail:\n        smtp:\n          password: |\n{indented}"
    )
}

pub fn vaultwarden(token: &str) -> String {
    let indented: String = token.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: vaultwarden\n  namespace: org-vault\nspec:\n  chart:\n    repository: oci://ghcr.io/guerzon/charts\n    name: vaultwarden\n    version: 0.31.8\n  values:\n    adminToken:\n      value: |\n{indented}"
    )
}

pub const BACKUP: &str = "apiVersion: ops.vworkspace.io/v1alpha1\nkind: Operation\nmetadata:\n  name: nightly\nspec:\n  type: Backup\n  template: velero-namespace-backup\n  target:\n    applicationInstance: nextcloud\n";

/// A repository with one signed commit holding a 2-of-2 release (serial 1) of cluster `demo`.
pub fn fixture() -> Fixture {
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
    let recipient = age_keygen(&root.join("cluster.agekey"));
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
