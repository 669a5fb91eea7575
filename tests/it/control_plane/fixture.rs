//! The intent repository of a real-server test: a real git repository whose commits are signed by the
//! real `git commit -S` (gpg.format=ssh) with keys from `ssh-keygen`, values encrypted by our
//! `encrypt` (bound) to an identity from `age-keygen`, and a 2-of-2 release written by our `release`
//! and co-signed by `ssh-keygen -Y sign`. The pattern of tests/it/common.rs, with the cluster id and
//! namespaces chosen by the test (tests share one API server).

use std::path::{Path, PathBuf};
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_vworkspace-operator");

pub use crate::common::run;

fn ssh_keygen(path: &Path, comment: &str) -> String {
    crate::common::ssh_keygen(path, comment, "ed25519")
}

pub struct Intent {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub recipient: String,
    pub cluster: String,
}

impl Intent {
    /// Keys, signer lists, an age identity and an empty repository for cluster `cluster`.
    pub fn new(cluster: &str) -> Intent {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let repo = root.join("repo");
        std::fs::create_dir_all(&repo).expect("mkdir");
        let committer = ssh_keygen(&root.join("committer"), "odoo@example.org");
        // A key nobody trusts: commits it signs must be refused.
        ssh_keygen(&root.join("rogue"), "mallory@example.org");
        let odoo = ssh_keygen(&root.join("release-odoo"), "odoo-release");
        let engineer = ssh_keygen(&root.join("release-engineer"), "alice");
        std::fs::write(
            root.join("commit_signers"),
            format!("odoo@example.org namespaces=\"git\" {committer}\n"),
        )
        .expect("write");
        std::fs::write(
            root.join("release_signers"),
            format!(
                "odoo namespaces=\"vworkspace-release\" {odoo}\nalice namespaces=\"vworkspace-release\" {engineer}\n"
            ),
        )
        .expect("write");
        let recipient = crate::common::age_keygen(&root.join("cluster.agekey"));
        let intent = Intent {
            _dir: dir,
            root,
            repo,
            recipient,
            cluster: cluster.to_owned(),
        };
        intent.git(&["init", "-q", "-b", "main"]);
        intent.write("README.md", "intent\n");
        intent
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read")
    }

    /// The URL the Cluster resource names.
    pub fn url(&self) -> String {
        format!("file://{}", self.repo.display())
    }

    fn git_with_key(&self, key: &str, args: &[&str]) -> String {
        let out = run(Command::new("git")
            .current_dir(&self.repo)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &self.root)
            .args(["-c", "user.name=Odoo", "-c", "user.email=odoo@example.org"])
            .args(["-c", "gpg.format=ssh"])
            .arg("-c")
            .arg(format!("user.signingkey={}", self.path(key).display()))
            .args(args));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn git(&self, args: &[&str]) -> String {
        self.git_with_key("committer", args)
    }

    /// Commits everything, signed by the trusted committer key.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-S", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Commits everything, signed by a key nobody trusts.
    pub fn commit_signed_by_rogue(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git_with_key("rogue", &["commit", "-q", "-S", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.repo.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.repo.join(rel)).expect("remove");
    }

    /// Our `encrypt`, bound to where the value is used.
    pub fn bound_encrypt(&self, plaintext: &str, ns: &str, instance: &str, path: &str) -> String {
        crate::common::bound_encrypt(
            &self.recipient,
            plaintext,
            &self.cluster,
            ns,
            instance,
            path,
        )
    }

    fn instance_rel(ns: &str, name: &str) -> String {
        format!("namespaces/{ns}/applicationinstances/{name}.yaml")
    }

    /// Declares an ApplicationInstance with one encrypted (bound) value at `mail.password`.
    pub fn add_instance(&self, ns: &str, name: &str, password: &str) {
        let armored = self.bound_encrypt(password, ns, name, "mail.password");
        let indented: String = armored.lines().map(|l| format!("        {l}\n")).collect();
        self.write(
            &format!("clusters/{}/{}", self.cluster, Self::instance_rel(ns, name)),
            &format!(
                "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: {name}\nspec:\n  chart:\n    repository: https://charts.example.org/\n    name: nextcloud\n    version: 6.6.4\n  values:\n    host: {name}.example.org\n    mail:\n      password: |\n{indented}"
            ),
        );
    }

    pub fn remove_instance(&self, ns: &str, name: &str) {
        self.remove(&format!(
            "clusters/{}/{}",
            self.cluster,
            Self::instance_rel(ns, name)
        ));
    }

    /// Declares a Velero Backup Operation of instance `target`.
    pub fn add_backup(&self, ns: &str, name: &str, target: &str) {
        self.write(
            &format!("clusters/{}/namespaces/{ns}/operations/{name}.yaml", self.cluster),
            &format!(
                "apiVersion: ops.vworkspace.io/v1alpha1\nkind: Operation\nmetadata:\n  name: {name}\nspec:\n  type: Backup\n  template: velero-namespace-backup\n  target:\n    applicationInstance: {target}\n"
            ),
        );
    }

    /// Declares an Operation with a free-form `spec` (YAML, indented by four spaces under `spec:`).
    pub fn add_operation(&self, ns: &str, name: &str, spec: &str) {
        self.write(
            &format!("clusters/{}/namespaces/{ns}/operations/{name}.yaml", self.cluster),
            &format!(
                "apiVersion: ops.vworkspace.io/v1alpha1\nkind: Operation\nmetadata:\n  name: {name}\nspec:\n{spec}"
            ),
        );
    }

    /// Our `release` (next serial, or `extra` such as `--serial 1`), co-signed by `ssh-keygen -Y sign`.
    pub fn release(&self, extra: &[&str]) {
        // `release` hashes what git will commit (the index): stage the intent first. A re-release
        // of unchanged files is a new serial on purpose here (--force).
        self.git(&["add", "-A"]);
        run(Command::new(BIN)
            .args(["release", "--force", "--repo"])
            .arg(&self.repo)
            .args(["--cluster", &self.cluster, "--key"])
            .arg(self.path("release-odoo"))
            .args(extra));
        let manifest = self
            .repo
            .join(format!("clusters/{}/release.yaml", self.cluster));
        run(Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", "vworkspace-release", "-f"])
            .arg(self.path("release-engineer"))
            .arg(&manifest));
        std::fs::rename(
            manifest.with_extension("yaml.sig"),
            self.repo.join(format!(
                "clusters/{}/release.sigs/engineer.sig",
                self.cluster
            )),
        )
        .expect("move signature");
    }
}
