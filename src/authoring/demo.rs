//! `demo`: the whole pipeline on the embedded example repository, with throwaway keys and no cluster.
//!
//! It builds a fresh Git repository from `examples/repo-layout`, re-encrypts the example's secret
//! values to a throwaway cluster key (bound to where they are used), signs a commit and a 2-of-2
//! release, runs verify and plan, and then shows a tampered commit and a rolled-back release refused.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::release::ReleaseArgs;
use super::{CliError, ExitCode};
use vworkspace_core::limits::Limits;
use vworkspace_core::pipeline::{self, TrustConfig};
use vworkspace_core::repository::{GitRef, LocalRepository};
use vworkspace_core::secrets::{Binding, Identities};
use vworkspace_core::trust::release::AppliedRelease;
use vworkspace_core::trust::signers::AllowedSigners;

/// The example's files, relative to `examples/repo-layout/`, embedded so the demo needs no checkout.
const EXAMPLE_FILES: &[(&str, &str)] = &[
    (
        "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml",
        include_str!(
            "../../examples/repo-layout/clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml"
        ),
    ),
    (
        "clusters/demo/namespaces/org-myteam/operations/nextcloud-nightly-backup.yaml",
        include_str!(
            "../../examples/repo-layout/clusters/demo/namespaces/org-myteam/operations/nextcloud-nightly-backup.yaml"
        ),
    ),
    (
        "clusters/demo/namespaces/org-vault/applicationinstances/vaultwarden.yaml",
        include_str!(
            "../../examples/repo-layout/clusters/demo/namespaces/org-vault/applicationinstances/vaultwarden.yaml"
        ),
    ),
    (
        "clusters/demo/namespaces/org-vault/operations/vaultwarden-restore.yaml",
        include_str!(
            "../../examples/repo-layout/clusters/demo/namespaces/org-vault/operations/vaultwarden-restore.yaml"
        ),
    ),
];

/// The example's demo-only age identity (public on purpose; see the file's header).
const EXAMPLE_IDENTITY: &str =
    include_str!("../../examples/repo-layout/DEMO-ONLY-age-identity.txt");

const CLUSTER: &str = "demo";

fn fail(what: impl std::fmt::Display) -> CliError {
    CliError::Io(format!("demo: {what}"))
}

/// Runs `git` in `dir`, isolated from the user's configuration, and returns its trimmed stdout.
fn git(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<String, CliError> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args([
            "-c",
            "user.name=Demo",
            "-c",
            "user.email=demo@example.org",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot run git (is it installed?): {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).map_err(fail)?;
    }
    let output = child.wait_with_output().map_err(fail)?;
    if !output.status.success() {
        return Err(fail(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Writes a commit of the index (or of `tree`) signed by `key` with our own SSH signer, and moves
/// `main` to it. Returns the commit id.
fn commit_signed(
    dir: &Path,
    key: &ssh_key::PrivateKey,
    message: &str,
    tree: Option<&str>,
) -> Result<String, CliError> {
    let tree = match tree {
        Some(t) => t.to_owned(),
        None => git(dir, &["write-tree"], None)?,
    };
    let parent = git(dir, &["rev-parse", "--verify", "-q", "HEAD"], None).ok();
    let now = jiff::Timestamp::now().as_second();
    let mut raw = format!("tree {tree}\n");
    if let Some(p) = parent.filter(|p| !p.is_empty()) {
        raw.push_str(&format!("parent {p}\n"));
    }
    raw.push_str(&format!(
        "author Demo Control Plane <odoo@demo.example> {now} +0000\n"
    ));
    raw.push_str(&format!(
        "committer Demo Control Plane <odoo@demo.example> {now} +0000\n\n{message}\n"
    ));
    let signed =
        vworkspace_core::trust::commit_signature::sign_commit(raw.as_bytes(), key).map_err(fail)?;
    let id = git(
        dir,
        &["hash-object", "-t", "commit", "-w", "--stdin"],
        Some(&signed),
    )?;
    git(dir, &["update-ref", "refs/heads/main", &id], None)?;
    Ok(id)
}

/// Writes a private key with mode 0600, refusing to replace a file.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    file.write_all(contents).map_err(fail)
}

fn new_ssh_key(comment: &str) -> Result<ssh_key::PrivateKey, CliError> {
    let mut key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .map_err(fail)?;
    key.set_comment(comment);
    Ok(key)
}

fn signer_line(
    principal: &str,
    namespace: &str,
    key: &ssh_key::PrivateKey,
) -> Result<String, CliError> {
    let public = key.public_key().to_openssh().map_err(fail)?;
    Ok(format!("{principal} namespaces=\"{namespace}\" {public}\n"))
}

/// Re-encrypts every armored leaf of an ApplicationInstance's `spec.values` to `recipient`, bound to
/// where it is. Values are read with the example's demo identity.
fn reencrypt(
    file: &str,
    text: &str,
    example: &Identities,
    recipient: &str,
) -> Result<String, CliError> {
    let mut object =
        vworkspace_core::yaml::parse_document(text.as_bytes(), file, &Limits::default())
            .map_err(fail)?;
    let (namespace, instance) = match file.split('/').collect::<Vec<_>>().as_slice() {
        [
            "clusters",
            _,
            "namespaces",
            ns,
            "applicationinstances",
            name,
        ] => ((*ns).to_owned(), name.trim_end_matches(".yaml").to_owned()),
        _ => return Ok(text.to_owned()),
    };
    let Some(values) = object.pointer_mut("/spec/values") else {
        return Ok(text.to_owned());
    };
    let mut leaves = Vec::new();
    vworkspace_core::secrets::for_each_armored(values, &mut |path, armored| {
        leaves.push((path.to_owned(), armored.to_owned()))
    });
    for (path, armored) in leaves {
        let plaintext =
            vworkspace_core::secrets::decrypt_any(&armored, example, &Limits::default())
                .map_err(fail)?;
        let binding = Binding {
            cluster: CLUSTER.to_owned(),
            namespace: namespace.clone(),
            instance: instance.clone(),
            path: path.clone(),
        };
        let fresh =
            vworkspace_core::secrets::encrypt(plaintext.expose(), recipient, Some(&binding))
                .map_err(fail)?;
        vworkspace_core::secrets::set_leaf(values, &path, Value::String(fresh)).map_err(fail)?;
    }
    serde_saphyr::to_string(&object).map_err(fail)
}

struct DemoRepo {
    dir: PathBuf,
    keys: PathBuf,
    committer: ssh_key::PrivateKey,
    config: TrustConfig,
}

impl DemoRepo {
    fn release(&self, key: &str, sign_only: bool, out: &mut dyn Write) -> Result<(), CliError> {
        // `release` hashes what git will commit (the index): stage the intent first.
        git(&self.dir, &["add", "-A"], None)?;
        let args = ReleaseArgs {
            repo: self.dir.clone(),
            cluster: CLUSTER.to_owned(),
            key: self.keys.join(key),
            expires: "30d".to_owned(),
            serial: None,
            name: None,
            sign_only,
            force: false,
            unchecked: false,
        };
        crate::authoring::release::release(&args, out).map(|_| ())
    }

    fn commit_all(&self, message: &str) -> Result<String, CliError> {
        git(&self.dir, &["add", "-A"], None)?;
        commit_signed(&self.dir, &self.committer, message, None)
    }
}

/// Runs the demo, printing what it does to `out`. Exit code 0 when every step behaved as expected.
pub fn run(keep: Option<&Path>, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let temp;
    let root = match keep {
        Some(dir) => kept_root(dir)?,
        None => {
            temp = tempfile::tempdir().map_err(fail)?;
            temp.path().to_owned()
        }
    };
    let mut demo = set_up(&root, out)?;
    let (repo, first) = first_release(&mut demo, out)?;
    let refused_tamper = tampered_commit(&demo, &repo, &first, out)?;
    let (second, refused_rollback) = rolled_back_release(&mut demo, &repo, &first, out)?;
    say(
        out,
        "== 7. the same old commit, now judged against the last applied commit as well",
    )?;
    demo.config.history.last_commit = Some(second);
    let refused_history = expect_refusal(&repo, &first, &demo.config, out)?;

    let ok = refused_tamper == vworkspace_core::reasons::COMMIT_SIGNATURE_INVALID
        && refused_rollback == vworkspace_core::reasons::RELEASE_INVALID
        && refused_history == vworkspace_core::reasons::HISTORY_INVALID;
    say(
        out,
        if ok {
            "== demo passed: verified intent planned; tampering and rollback refused"
        } else {
            "== demo FAILED"
        },
    )?;
    if keep.is_some() {
        say_kept(&root, out)?;
    }
    Ok(if ok { 0 } else { 1 })
}

fn say(out: &mut dyn Write, line: &str) -> Result<(), CliError> {
    writeln!(out, "{line}").map_err(fail)
}

/// The `--keep` directory, new or empty: the demo never mixes into someone's files (or over a
/// previous run's keys).
fn kept_root(dir: &Path) -> Result<PathBuf, CliError> {
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(CliError::Usage(format!(
            "--keep {}: the directory is not empty; give a new or empty directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(fail)?;
    std::fs::canonicalize(dir).map_err(fail)
}

/// Steps 1 and 2: throwaway keys under `root/keys`, the intent repository under `root/intent`,
/// the trust inputs under `root/trust`.
fn set_up(root: &Path, out: &mut dyn Write) -> Result<DemoRepo, CliError> {
    let dir = root.join("intent");
    let keys = root.join("keys");
    std::fs::create_dir_all(&dir).map_err(fail)?;
    std::fs::create_dir_all(&keys).map_err(fail)?;
    say(
        out,
        "== 1. throwaway keys: a commit signer, two release keys (2-of-2), a cluster age identity",
    )?;
    let committer = new_ssh_key("odoo@demo")?;
    let odoo = new_ssh_key("odoo-release")?;
    let engineer = new_ssh_key("platform-engineer")?;
    for (name, key) in [
        ("odoo-commit", &committer),
        ("odoo-release", &odoo),
        ("platform-engineer", &engineer),
    ] {
        let private = key.to_openssh(ssh_key::LineEnding::LF).map_err(fail)?;
        write_private(&keys.join(name), private.as_bytes())?;
    }
    let (identities, recipient) = cluster_identity(&keys)?;
    say(out, &format!("   cluster recipient {recipient}"))?;
    say(
        out,
        "== 2. intent repository from examples/repo-layout, values re-encrypted and bound to where they are used",
    )?;
    write_example(&dir, &recipient)?;
    let commit_text = signer_line("odoo@demo", "git", &committer)?;
    let release_text = signer_line("odoo-release", "vworkspace-release", &odoo)?
        + &signer_line("platform-engineer", "vworkspace-release", &engineer)?;
    // The trust inputs live beside the repository, never in it (as the cluster keeps them).
    let trust = root.join("trust");
    std::fs::create_dir_all(&trust).map_err(fail)?;
    std::fs::write(trust.join("commit_signers"), &commit_text).map_err(fail)?;
    std::fs::write(trust.join("release_signers"), &release_text).map_err(fail)?;
    let commit_signers =
        AllowedSigners::parse(&commit_text, "demo commit signers").map_err(fail)?;
    let release_signers =
        AllowedSigners::parse(&release_text, "demo release signers").map_err(fail)?;
    Ok(DemoRepo {
        dir,
        keys,
        committer,
        config: TrustConfig::builder(
            CLUSTER,
            commit_signers,
            release_signers,
            std::num::NonZeroUsize::MIN.saturating_add(1),
        )
        .identities(Some(identities))
        .build(),
    })
}

/// A new cluster age identity, written to `keys/cluster.agekey`; its recipient.
fn cluster_identity(keys: &Path) -> Result<(Identities, String), CliError> {
    let (identity, recipient) = vworkspace_core::secrets::generate();
    write_private(
        &keys.join("cluster.agekey"),
        format!(
            "# public key: {recipient}\n{}\n",
            identity.expose_str().unwrap_or_default()
        )
        .as_bytes(),
    )?;
    let identities = Identities::parse(identity.expose_str().unwrap_or_default(), "demo identity")
        .map_err(fail)?;
    Ok((identities, recipient))
}

/// A new repository in `dir` with the example's files, their values re-encrypted to `recipient`.
fn write_example(dir: &Path, recipient: &str) -> Result<(), CliError> {
    let example = Identities::parse(
        EXAMPLE_IDENTITY,
        "examples/repo-layout/DEMO-ONLY-age-identity.txt",
    )
    .map_err(fail)?;
    git(dir, &["init", "-q"], None)?;
    for (file, text) in EXAMPLE_FILES {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        std::fs::write(&path, reencrypt(file, text, &example, recipient)?).map_err(fail)?;
    }
    Ok(())
}

/// Steps 3 and 4: release serial 1, signed twice, committed; verified and planned. The repository
/// and the first commit.
fn first_release(
    demo: &mut DemoRepo,
    out: &mut dyn Write,
) -> Result<(LocalRepository, String), CliError> {
    say(
        out,
        "== 3. release serial 1, signed by Odoo and by a platform engineer; signed commit",
    )?;
    demo.release("odoo-release", false, out)?;
    demo.release("platform-engineer", true, out)?;
    let first = demo.commit_all("Release 1: nextcloud and vaultwarden")?;
    let repo = LocalRepository::open(&demo.dir).map_err(fail)?;

    say(out, "== 4. verify + plan of main")?;
    let verified = match pipeline::verify_ref(&repo, &GitRef::Branch("main".into()), &demo.config) {
        Ok(v) => v,
        Err(refused) => {
            super::report::report_refusal(&(&refused).into(), out).map_err(fail)?;
            return Err(fail("the demo's own release was refused"));
        }
    };
    super::report::report_pass(&verified, &demo.config, out).map_err(fail)?;
    let plan = vworkspace_core::plan::desired(&verified).map_err(fail)?;
    out.write_all(plan.to_yaml().as_bytes()).map_err(fail)?;
    demo.config.release.last_applied = Some(verified.release().applied());
    Ok((repo, first))
}

/// Step 5: the signed commit's signature copied onto another tree; the refusal's reason.
fn tampered_commit(
    demo: &DemoRepo,
    repo: &LocalRepository,
    first: &str,
    out: &mut dyn Write,
) -> Result<&'static str, CliError> {
    say(
        out,
        "== 5. a tampered commit: the signed commit's signature copied onto another tree",
    )?;
    let good = repo.read_commit(first).map_err(fail)?;
    let path = demo.dir.join(EXAMPLE_FILES[0].0);
    let text = std::fs::read_to_string(&path).map_err(fail)?;
    std::fs::write(&path, text.replace("6.6.4", "6.6.5")).map_err(fail)?;
    git(&demo.dir, &["add", "-A"], None)?;
    let tree = git(&demo.dir, &["write-tree"], None)?;
    let raw = String::from_utf8_lossy(good.raw()).replacen(
        &format!("tree {}", good.tree()),
        &format!("tree {tree}"),
        1,
    );
    let tampered = git(
        &demo.dir,
        &["hash-object", "-t", "commit", "-w", "--stdin"],
        Some(raw.as_bytes()),
    )?;
    expect_refusal(repo, &tampered, &demo.config, out)
}

/// Step 6: release serial 2 applied, then the first commit served again; the second commit and the
/// refusal's reason.
fn rolled_back_release(
    demo: &mut DemoRepo,
    repo: &LocalRepository,
    first: &str,
    out: &mut dyn Write,
) -> Result<(String, &'static str), CliError> {
    say(
        out,
        "== 6. release serial 2 (nextcloud 6.6.5) is applied; then the old serial 1 is served again",
    )?;
    demo.release("odoo-release", false, out)?;
    demo.release("platform-engineer", true, out)?;
    let second = demo.commit_all("Release 2: nextcloud 6.6.5")?;
    let verified = pipeline::verify_commit_id(repo, &second, &demo.config).map_err(fail)?;
    say(
        out,
        &format!(
            "ok      commit {second}: release serial {} applied",
            verified.release().serial()
        ),
    )?;
    demo.config.release.last_applied = Some(AppliedRelease {
        serial: verified.release().serial(),
        digest: Some(verified.release().digest().to_owned()),
    });
    let refused = expect_refusal(repo, first, &demo.config, out)?;
    Ok((second, refused))
}

/// Where `--keep` left everything, and the command to verify it again.
fn say_kept(root: &Path, out: &mut dyn Write) -> Result<(), CliError> {
    say(
        out,
        &format!(
            "   kept in {}: intent/ (the repository), keys/ (mode 0600), trust/ (the signer files)",
            root.display()
        ),
    )?;
    say(out, "   verify it again with:")?;
    say(
        out,
        &format!(
            "   vworkspace-operator verify --repo {r}/intent --cluster demo --allowed-signers {r}/trust/commit_signers --release-signers {r}/trust/release_signers --threshold 2 --identity {r}/keys/cluster.agekey --require-bound-values",
            r = root.display()
        ),
    )
}

fn expect_refusal(
    repo: &LocalRepository,
    commit: &str,
    config: &TrustConfig,
    out: &mut dyn Write,
) -> Result<&'static str, CliError> {
    match pipeline::verify_commit_id(repo, commit, config) {
        Ok(_) => {
            writeln!(out, "UNEXPECTED: commit {commit} passed").map_err(fail)?;
            Ok("Passed")
        }
        Err(refused) => {
            super::report::report_refusal(&(&refused).into(), out).map_err(fail)?;
            Ok(refused.reason())
        }
    }
}
