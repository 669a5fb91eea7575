//! [`IntentRepo`]: keys, signer lists, an age identity and a signed git repository of one cluster.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::generate::Scale;
use crate::tools::{age_encrypt, age_keygen, run, run_with_stdin, ssh_keygen, stdout};

/// What `release` reads the files it hashes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReleaseFrom {
    /// Git's index (what the next commit holds), as an author runs it: the intent is staged first.
    #[default]
    Index,
    /// The work tree, with `.git` moved aside: `release` reading the index took more than 9 minutes
    /// at 5,000 files on the development machine (1 s at 1,000), a cost of authoring, not of the
    /// operator.
    WorkTree,
}

/// How an [`IntentRepo`] is made; [`IntentRepo::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    operator: PathBuf,
    cluster: String,
    untrusted_key: bool,
    unchecked: bool,
    release_from: ReleaseFrom,
    scale: Option<Scale>,
}

impl Builder {
    /// Also makes a key nobody trusts (`rogue`): commits it signs must be refused.
    pub fn untrusted_key(mut self) -> Builder {
        self.untrusted_key = true;
        self
    }

    /// Releases with `--unchecked`: signs whatever the directory holds (the tests of the verifier's
    /// refusals need signed hostile intent).
    pub fn unchecked_release(mut self) -> Builder {
        self.unchecked = true;
        self
    }

    /// Where `release` reads the files it hashes ([`ReleaseFrom::Index`] unless told).
    pub fn release_from(mut self, from: ReleaseFrom) -> Builder {
        self.release_from = from;
        self
    }

    /// Generates an intent of this size, released and committed ("generated") by `build`.
    pub fn generated(mut self, scale: Scale) -> Builder {
        self.scale = Some(scale);
        self
    }

    /// Keys, signer lists, an age identity and a repository holding a README (uncommitted), or, with
    /// [`Builder::generated`], the generated intent released and committed.
    pub fn build(self) -> IntentRepo {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let repo = root.join("repo");
        std::fs::create_dir_all(&repo).expect("mkdir");
        let committer = ssh_keygen(&root.join("committer"), "odoo@example.org", "ed25519");
        if self.untrusted_key {
            ssh_keygen(&root.join("rogue"), "mallory@example.org", "ed25519");
        }
        let odoo = ssh_keygen(&root.join("release-odoo"), "odoo-release", "ed25519");
        let engineer = ssh_keygen(&root.join("release-engineer"), "alice", "ed25519");
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
        let recipient = age_keygen(&root.join("cluster.agekey"));
        let mut intent = IntentRepo {
            _dir: dir,
            root,
            repo,
            recipient,
            cluster: self.cluster,
            operator: self.operator,
            unchecked: self.unchecked,
            release_from: self.release_from,
            armored: Vec::new(),
            namespaces: Vec::new(),
        };
        intent.git(&["init", "-q", "-b", "main"]);
        intent.write("README.md", "intent\n");
        if let Some(scale) = self.scale {
            let generated = scale.intent(&intent.cluster, &intent.recipient);
            for (path, contents) in &generated.files {
                intent.write(path, contents);
            }
            intent.namespaces = generated.namespaces;
            intent.armored = generated.armored;
            intent.release(&[]);
            intent.commit("generated");
        }
        intent
    }
}

/// One cluster's signed intent repository, under a temporary directory deleted on drop. The files
/// under [`IntentRepo::root`]: `committer`, `release-odoo`, `release-engineer` (and `rogue` when
/// asked) with their `.pub`, `commit_signers`, `release_signers` and `cluster.agekey`.
pub struct IntentRepo {
    _dir: tempfile::TempDir,
    /// The directory of the keys, signer lists and identity.
    pub root: PathBuf,
    /// The work tree of the repository.
    pub repo: PathBuf,
    /// The age recipient of `cluster.agekey`.
    pub recipient: String,
    /// The cluster id the repository declares (`clusters/<cluster>/`).
    pub cluster: String,
    operator: PathBuf,
    unchecked: bool,
    release_from: ReleaseFrom,
    armored: Vec<String>,
    namespaces: Vec<String>,
}

impl IntentRepo {
    /// An intent repository of `cluster`, made with the `vworkspace-operator` binary at `operator`
    /// (`env!("CARGO_BIN_EXE_vworkspace-operator")`).
    pub fn builder(operator: impl Into<PathBuf>, cluster: &str) -> Builder {
        Builder {
            operator: operator.into(),
            cluster: cluster.to_owned(),
            untrusted_key: false,
            unchecked: false,
            release_from: ReleaseFrom::Index,
            scale: None,
        }
    }

    /// A file under [`IntentRepo::root`].
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The text of a file under [`IntentRepo::root`].
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read")
    }

    /// The URL a Cluster resource names.
    pub fn url(&self) -> String {
        format!("file://{}", self.repo.display())
    }

    /// The generated values (armored), in instance order; empty unless [`Builder::generated`].
    pub fn generated_values(&self) -> &[String] {
        &self.armored
    }

    /// The generated namespaces; empty unless [`Builder::generated`].
    pub fn generated_namespaces(&self) -> &[String] {
        &self.namespaces
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
        stdout(&out).trim().to_owned()
    }

    /// `git <args>` in the repository, signing with the trusted committer key; its trimmed output.
    pub fn git(&self, args: &[&str]) -> String {
        self.git_with_key("committer", args)
    }

    /// Commits everything, signed by the trusted committer key; the new commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-S", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Commits everything, signed by a key nobody trusts ([`Builder::untrusted_key`]).
    pub fn commit_signed_by_rogue(&self, message: &str) -> String {
        assert!(
            self.path("rogue").is_file(),
            "built without untrusted_key()"
        );
        self.git(&["add", "-A"]);
        self.git_with_key("rogue", &["commit", "-q", "-S", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Writes `contents` at `rel` in the work tree (directories made).
    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.repo.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }

    /// Removes the file `rel` from the work tree.
    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.repo.join(rel)).expect("remove");
    }

    /// `age -a -r <recipient>`, the stock tool: a plain value.
    pub fn age_encrypt(&self, plaintext: &str) -> String {
        age_encrypt(&self.recipient, plaintext)
    }

    /// Our `encrypt`, bound to where the value is used in this cluster.
    pub fn bound_encrypt(&self, plaintext: &str, ns: &str, instance: &str, path: &str) -> String {
        self.bound_encrypt_for(&self.cluster, plaintext, ns, instance, path)
    }

    /// Our `encrypt`, bound to where the value is used in cluster `cluster`.
    pub fn bound_encrypt_for(
        &self,
        cluster: &str,
        plaintext: &str,
        ns: &str,
        instance: &str,
        path: &str,
    ) -> String {
        stdout(&run_with_stdin(
            Command::new(&self.operator)
                .args([
                    "encrypt",
                    "--recipient",
                    &self.recipient,
                    "--cluster",
                    cluster,
                ])
                .args(["--namespace", ns, "--instance", instance, "--path", path]),
            plaintext.as_bytes(),
        ))
    }

    /// `clusters/<cluster>/namespaces/<ns>/<kind>/<name>.yaml`.
    pub fn object_path(&self, ns: &str, kind: &str, name: &str) -> String {
        format!(
            "clusters/{}/namespaces/{ns}/{kind}/{name}.yaml",
            self.cluster
        )
    }

    /// Declares an ApplicationInstance with one encrypted (bound) value at `mail.password`.
    pub fn add_instance(&self, ns: &str, name: &str, password: &str) {
        let armored = self.bound_encrypt(password, ns, name, "mail.password");
        let indented: String = armored.lines().map(|l| format!("        {l}\n")).collect();
        self.write(
            &self.object_path(ns, "applicationinstances", name),
            &format!(
                "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: {name}\nspec:\n  chart:\n    repository: https://charts.example.org/\n    name: nextcloud\n    version: 6.6.4\n  values:\n    host: {name}.example.org\n    mail:\n      password: |\n{indented}"
            ),
        );
    }

    /// Removes the ApplicationInstance `ns/name` from the work tree.
    pub fn remove_instance(&self, ns: &str, name: &str) {
        self.remove(&self.object_path(ns, "applicationinstances", name));
    }

    /// Declares a Velero Backup Operation of instance `target`.
    pub fn add_backup(&self, ns: &str, name: &str, target: &str) {
        self.add_operation(
            ns,
            name,
            &format!(
                "  type: Backup\n  template: velero-namespace-backup\n  target:\n    applicationInstance: {target}\n"
            ),
        );
    }

    /// Declares an Operation with a free-form `spec` (YAML, indented by two spaces under `spec:`).
    pub fn add_operation(&self, ns: &str, name: &str, spec: &str) {
        self.write(
            &self.object_path(ns, "operations", name),
            &format!(
                "apiVersion: ops.vworkspace.io/v1alpha1\nkind: Operation\nmetadata:\n  name: {name}\nspec:\n{spec}"
            ),
        );
    }

    /// Our `release` (next serial, or `extra` such as `--serial 1`) with the key `release-odoo`, then
    /// a co-signature by `ssh-keygen -Y sign` with `release-engineer`. A re-release of unchanged
    /// files is a new serial on purpose (`--force`).
    pub fn release(&self, extra: &[&str]) {
        let mut cmd = Command::new(&self.operator);
        cmd.arg("release");
        if self.unchecked {
            cmd.arg("--unchecked");
        }
        cmd.args(["--force", "--repo"])
            .arg(&self.repo)
            .args(["--cluster", &self.cluster, "--key"])
            .arg(self.path("release-odoo"))
            .args(extra);
        match self.release_from {
            // `release` hashes what git will commit (the index): stage the intent first.
            ReleaseFrom::Index => {
                self.git(&["add", "-A"]);
                run(&mut cmd);
            }
            ReleaseFrom::WorkTree => {
                self.without_git(|| run(&mut cmd));
            }
        }
        self.co_sign();
    }

    /// Runs `f` with the repository's `.git` moved aside (put back also when `f` fails).
    fn without_git<T>(&self, f: impl FnOnce() -> T) -> T {
        let git = self.repo.join(".git");
        let aside = self.root.join("git-aside");
        std::fs::rename(&git, &aside).expect("move .git aside");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        std::fs::rename(&aside, &git).expect("put .git back");
        result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// `ssh-keygen -Y sign` of the manifest with `release-engineer`, as release.sigs/engineer.sig.
    fn co_sign(&self) {
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

    /// `vworkspace-operator <sub>` (verify, plan, …) of `cluster` against this repository and its
    /// trust inputs (threshold 2), then `extra`.
    pub fn verify_cmd(&self, sub: &str, cluster: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(&self.operator);
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

    /// `vworkspace-operator verify` of this repository's cluster, run to its end.
    pub fn verify(&self, extra: &[&str]) -> Output {
        self.verify_cmd("verify", &self.cluster, extra)
            .output()
            .expect("verify runs")
    }
}
