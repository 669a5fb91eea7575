//! The adversarial corpus: hostile intent repositories, each refused with its specific error and
//! nothing applied.
//!
//! Every case starts from the shared fixture (`tests/it/common.rs`: a real repository, commits
//! signed by the real `git commit -S`, a 2-of-2 release written by our `release` and co-signed by
//! `ssh-keygen -Y sign`, values encrypted by the real `age`), makes one hostile change, and runs the
//! pass twice with the same flags: through the library (`cli::trust_config` +
//! `pipeline::verify_ref`), where it asserts the exact error variant, and through the binary's `plan`,
//! which must exit 1 with an empty stdout (nothing to apply) and print exactly the library's
//! refusals. A pass that returns `Err` builds no `VerifiedIntent`, and the planner accepts nothing
//! else, so no case can reach apply or prune.
//!
//! Where a hostile change needs a tree that `git add` cannot make (a `..` entry, 100,000 entries),
//! the tree is written with `git mktree` and committed, signed, with `git commit-tree -S`: what a
//! trusted signer tricked into it, or a hostile server, could serve. Where a case must get past the
//! release check to reach the check it is about, the release lists the hostile file and both trusted
//! release keys sign it: the refusal then holds even against an attacker with the threshold.
//!
//! | case (test) | refused by |
//! |---|---|
//! | `untouched_fixture_passes_the_same_checks` | (control: the same flags accept the fixture) |
//! | `symlink_out_of_the_tree` | `ReleaseError::Files` (unlisted: "present but not listed"; listed and signed: "listed but is a symlink") |
//! | `dot_dot_segment_in_a_path` | `IntentErrorKind::InvalidName` (namespace `..`) |
//! | `name_other_than_the_file_name` | `IntentErrorKind::NameMismatch` |
//! | `file_over_the_size_limit` | `GitError::FileTooLarge` (path, size, limit 262144) |
//! | `a_hundred_thousand_files` | `GitError::TooManyFiles` (limit 50000) |
//! | `yaml_alias_bomb` | `YamlError::AliasBudget` |
//! | `deep_nesting` | `YamlError::TooDeep` (limit 64) |
//! | `duplicate_keys` | `YamlError::DuplicateKey` (`kind` twice) |
//! | `two_documents_in_one_file` | `YamlError::MultipleDocuments` |
//! | `non_utf8_bytes` | `YamlError::NotUtf8` (offset of the first bad byte) |
//! | `cluster_role_binding_declared` | `IntentErrorKind::WrongKind` |
//! | `secret_declared` | `IntentErrorKind::WrongKind` |
//! | `namespace_declared` | `IntentErrorKind::WrongKind` |
//! | `metadata_namespace_elsewhere` | `IntentErrorKind::NamespaceMismatch` |
//! | `valid_release_for_another_cluster` | `ReleaseError::WrongCluster` |
//! | `expired_release` | `ReleaseError::Expired` (verifier clock from `--now`) |
//! | `replayed_older_serial` | `ReleaseError::Rollback`; with the last applied commit known, `HistoryError::NotDescendant` first |
//! | `release_signed_twice_by_one_key` | `ReleaseError::BelowThreshold` (1 of 2) |
//! | `commit_by_a_removed_key` | `CommitSignatureError::Signature` / `SignatureError::UnknownKey` |
//! | `commit_by_a_key_past_valid_before` | `CommitSignatureError::Signature` / `SignatureError::KeyExpired` |
//! | `value_encrypted_to_another_cluster` | `ValueErrorKind::Secrets(SecretsError::NoMatchingIdentity)` |
//! | `value_bound_to_another_cluster` | `ValueErrorKind::BindingMismatch` (field `cluster`) |
//! | `literal_credential_in_values` | `ValueErrorKind::LiteralCredential` (the webhook's rule, applied by the pass) |
//! | `tree_bomb_of_shared_directories` | `GitError::TooManyFiles`: directories count against the entry limit |

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;
use clap::Parser as _;
use vworkspace_core::Error;
use vworkspace_core::intent::IntentErrorKind;
use vworkspace_core::limits::Limits;
use vworkspace_core::pipeline::{self};
use vworkspace_core::reasons as reason;
use vworkspace_core::repository::{GitError, GitRef, LocalRepository};
use vworkspace_core::secrets::{SecretsError, ValueError, ValueErrorKind};
use vworkspace_core::trust::commit_signature::CommitSignatureError;
use vworkspace_core::trust::history::HistoryError;
use vworkspace_core::trust::release::{self, ReleaseError};
use vworkspace_core::trust::sshsig::SignatureError;
use vworkspace_core::yaml::YamlError;

const APPS: &str = "clusters/demo/namespaces/org-myteam/applicationinstances";

/// The verifier's clock for both runs of a pass, fixed once so that the library's and the binary's
/// messages are byte-for-byte comparable.
fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .expect("round")
        .to_string()
}

/// The flags of one pass: the fixture's trust inputs (2-of-2 release keys, the cluster identity),
/// then `extra`. `--cluster` and `--now` are added unless `extra` has them.
fn flags(f: &Fixture, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["--repo".into(), f.repo.display().to_string()];
    if !extra.contains(&"--cluster") {
        args.extend(["--cluster".into(), "demo".into()]);
    }
    if !extra.contains(&"--now") {
        args.extend(["--now".into(), now()]);
    }
    for (flag, file) in [
        ("--allowed-signers", "commit_signers"),
        ("--release-signers", "release_signers"),
        ("--identity", "cluster.agekey"),
    ] {
        args.extend([flag.into(), f.path(file).display().to_string()]);
    }
    args.extend(["--threshold".into(), "2".into()]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// The library's pass with `args`, configured exactly as `verify`/`plan` configure it.
fn library_pass(
    args: &[String],
) -> (
    String,
    Result<pipeline::VerifiedIntent, pipeline::PassError>,
) {
    library_pass_with(args, None)
}

/// [`library_pass`] with a values verdict recorded by an earlier pass, as the reconciler passes the
/// one in the Cluster's status.
fn library_pass_with(
    args: &[String],
    values_verified: Option<String>,
) -> (
    String,
    Result<pipeline::VerifiedIntent, pipeline::PassError>,
) {
    let cli = vworkspace_operator::cli::Cli::parse_from(
        ["vworkspace-operator".to_owned(), "verify".to_owned()]
            .into_iter()
            .chain(args.iter().cloned()),
    );
    let vworkspace_operator::cli::Command::Verify(trust) = cli.command else {
        panic!("parsed as verify")
    };
    let mut config = vworkspace_operator::cli::trust_config(&trust).expect("trust inputs load");
    config.values_verified = values_verified;
    let repo = LocalRepository::open(std::path::Path::new(&trust.repo)).expect("open repository");
    // As the command line does: a full id pins a commit, anything else is a revision.
    let reference = if trust.git_ref.len() == 40 {
        GitRef::Commit(trust.git_ref.clone())
    } else {
        GitRef::Revision(trust.git_ref.clone())
    };
    let id = repo.resolve(&reference).expect("the ref resolves");
    (id, pipeline::verify_ref(&repo, &reference, &config))
}

/// Runs the pass with `extra` flags through the library and through `plan`; asserts both refuse,
/// alike, at the commit under test, and that `plan` has nothing to apply. Returns the library's error.
fn refusal(f: &Fixture, extra: &[&str]) -> Error {
    let args = flags(f, extra);
    let (id, outcome) = library_pass(&args);
    let refused = match outcome {
        Ok(_) => panic!("the hostile repository passed: {args:?}"),
        Err(refused) => refused,
    };
    assert_eq!(refused.commit.as_deref(), Some(id.as_str()), "{refused}");
    let expected: String = refused
        .findings()
        .iter()
        .map(|line| format!("refused {}: {line}\n", refused.reason()))
        .collect();
    let out = Command::new(BIN)
        .arg("plan")
        .args(&args)
        .output()
        .expect("plan runs");
    assert_eq!(out.status.code(), Some(1), "plan must refuse: {expected}");
    assert!(
        out.stdout.is_empty(),
        "a refused pass plans nothing: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
    *refused.error
}

/// The one refused intent file of `error`: its path (relative to `clusters/demo/`) and why.
fn intent_refusal(error: Error) -> (String, IntentErrorKind) {
    assert_eq!(error.reason(), reason::INTENT_INVALID);
    let Error::Intent(errors) = error else {
        panic!("expected an intent refusal, got {error:?}")
    };
    assert_eq!(errors.errors.len(), 1, "{errors}");
    let e = errors.errors.into_iter().next().expect("one refusal");
    assert_eq!(e.cluster, "demo");
    (e.path, e.kind)
}

/// The loader's refusal of the one refused intent file, which must be `path`.
fn yaml_refusal(error: Error, path: &str) -> YamlError {
    match intent_refusal(error) {
        (p, IntentErrorKind::Yaml(e)) if p == path => {
            assert_eq!(e.file(), format!("clusters/demo/{path}"));
            *e
        }
        other => panic!("expected a YAML refusal of {path}, got {other:?}"),
    }
}

/// The one refused value of `error`.
fn value_refusal(error: Error) -> ValueError {
    assert_eq!(error.reason(), reason::VALUES_INVALID);
    let Error::Values(values) = error else {
        panic!("expected a value refusal, got {error:?}")
    };
    assert_eq!(values.0.len(), 1, "{values}");
    values.0.into_iter().next().expect("one refusal")
}

/// The release refusal of `error`.
fn release_refusal(error: Error) -> ReleaseError {
    assert_eq!(error.reason(), reason::RELEASE_INVALID);
    match error {
        Error::Release(e) => e,
        other => panic!("expected a release refusal, got {other:?}"),
    }
}

/// The tree-reading refusal of `error`.
fn tree_refusal(error: Error) -> GitError {
    assert_eq!(error.reason(), reason::TREE_INVALID);
    match error {
        Error::Tree(e) => e,
        other => panic!("expected a tree refusal, got {other:?}"),
    }
}

/// The commit-signature refusal of `error`, as the SSH signature error.
fn signature_refusal(error: Error) -> SignatureError {
    assert_eq!(error.reason(), reason::COMMIT_SIGNATURE_INVALID);
    match error {
        Error::CommitSignature(CommitSignatureError::Signature { source, .. }) => source,
        other => panic!("expected a refused commit signature, got {other:?}"),
    }
}

/// An ApplicationInstance named `name` whose `spec.values` are `values` (indented four spaces).
fn app(name: &str, values: &str) -> String {
    format!(
        "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: {name}\nspec:\n  chart:\n    repository: https://charts.example.org\n    name: app\n    version: 1.0.0\n  values:\n{values}"
    )
}

/// Writes `contents` at `rel`, cuts a release with our `release` (co-signed), commits it signed.
fn release_with(f: &Fixture, rel: &str, contents: &[u8]) -> String {
    let path = f.repo.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, contents).expect("write");
    f.release(&[]);
    f.commit("hostile release")
}

/// `git` in the fixture's repository, isolated from the machine's configuration, with `input` on
/// stdin; the raw stdout.
fn git_in(f: &Fixture, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("git")
        .current_dir(&f.repo)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("git prints UTF-8 here")
}

/// `tree` with `entry` (a `git mktree` record, `<mode> <type> <id>\t<name>`) added in the directory
/// `dir` below it, every tree on the way rewritten by `git mktree`. The index refuses names such as
/// `..`; `mktree` writes any tree a hostile server could serve.
fn with_entry(f: &Fixture, tree: &str, dir: &[&str], entry: &str) -> String {
    let listing = git_in(f, &["ls-tree", "-z", tree], b"");
    let mut records: Vec<String> = listing
        .split('\0')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    match dir.split_first() {
        None => records.push(entry.to_owned()),
        Some((first, rest)) => {
            let suffix = format!("\t{first}");
            let sub = match records.iter().position(|r| r.ends_with(&suffix)) {
                Some(i) => records
                    .remove(i)
                    .split([' ', '\t'])
                    .nth(2)
                    .expect("ls-tree record has an id")
                    .to_owned(),
                None => git_in(f, &["mktree", "-z"], b"").trim().to_owned(),
            };
            let grafted = with_entry(f, &sub, rest, entry);
            records.push(format!("040000 tree {grafted}\t{first}"));
        }
    }
    let input: String = records.iter().map(|r| format!("{r}\0")).collect();
    git_in(f, &["mktree", "-z"], input.as_bytes())
        .trim()
        .to_owned()
}

/// Commits `tree` on top of HEAD, signed by the trusted committer (`git commit-tree -S`), and moves
/// the branch to it.
fn commit_tree(f: &Fixture, tree: &str, message: &str) -> String {
    let id = f.git(&["commit-tree", "-S", tree, "-p", "HEAD", "-m", message]);
    f.git(&["update-ref", "refs/heads/main", &id]);
    id
}

/// A blob holding `contents`.
fn blob(f: &Fixture, contents: &[u8]) -> String {
    git_in(f, &["hash-object", "-w", "--stdin"], contents)
        .trim()
        .to_owned()
}

/// Adds `path` with `digest` to `clusters/demo/release.yaml` and has both trusted release keys sign
/// the result with `ssh-keygen -Y sign`: a release that vouches for the hostile file.
fn list_and_sign(f: &Fixture, path: &str, contents: &[u8]) {
    let manifest_path = f.repo.join("clusters/demo/release.yaml");
    let bytes = std::fs::read(&manifest_path).expect("read release.yaml");
    let mut manifest =
        release::parse_manifest(&bytes, "demo", &Limits::default()).expect("fixture manifest");
    manifest
        .files
        .insert(path.to_owned(), release::sha256_digest(contents));
    std::fs::write(&manifest_path, release::render_manifest(&manifest)).expect("write manifest");
    for (key, name) in [
        ("release-odoo", "odoo-release.sig"),
        ("release-engineer", "engineer.sig"),
    ] {
        sign_manifest(f, key, name);
    }
}

/// `ssh-keygen -Y sign -n vworkspace-release` of `release.yaml` with `key`, as `release.sigs/<name>`.
fn sign_manifest(f: &Fixture, key: &str, name: &str) {
    let manifest = f.repo.join("clusters/demo/release.yaml");
    run(Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "vworkspace-release", "-f"])
        .arg(f.path(key))
        .arg(&manifest));
    std::fs::rename(
        manifest.with_extension("yaml.sig"),
        f.repo.join("clusters/demo/release.sigs").join(name),
    )
    .expect("move signature");
}

#[test]
fn untouched_fixture_passes_the_same_checks() {
    let f = fixture();
    let args = flags(&f, &[]);
    let (_, outcome) = library_pass(&args);
    let verified = outcome.expect("the fixture passes");
    assert_eq!(verified.intent().application_instances.len(), 2);
    assert_eq!(verified.values_checked(), 2);
    let out = Command::new(BIN)
        .arg("plan")
        .args(&args)
        .output()
        .expect("plan runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("kind: ApplicationInstance"));
}

#[test]
fn symlink_out_of_the_tree() {
    let f = fixture();
    let rel = "namespaces/org-myteam/applicationinstances/passwd.yaml";
    let target = "../../../../../../etc/passwd";
    std::os::unix::fs::symlink(target, f.repo.join("clusters/demo").join(rel)).expect("symlink");
    f.commit("a link out of the tree");
    // Not in the release: the file set does not match.
    match release_refusal(refusal(&f, &[])) {
        ReleaseError::Files { problems, .. } => {
            assert_eq!(
                problems,
                [format!("{rel}: present but not listed in release.yaml")]
            );
        }
        other => panic!("expected a file-set refusal, got {other:?}"),
    }
    // Listed (with the digest of the link's blob) and signed by both trusted release keys: still
    // refused, because a listed path must be a regular file.
    list_and_sign(&f, rel, target.as_bytes());
    f.commit("a signed release listing the link");
    match release_refusal(refusal(&f, &[])) {
        ReleaseError::Files { problems, .. } => {
            assert_eq!(
                problems,
                [format!(
                    "{rel}: listed but is a symlink or submodule, not a file"
                )]
            );
        }
        other => panic!("expected a file-set refusal, got {other:?}"),
    }
}

#[test]
fn dot_dot_segment_in_a_path() {
    let f = fixture();
    // clusters/demo/namespaces/../applicationinstances/evil.yaml: a tree entry named "..", which
    // `git add` cannot make. The release lists it and both trusted keys sign.
    let rel = "namespaces/../applicationinstances/evil.yaml";
    let contents = app("evil", "    a: 1\n");
    list_and_sign(&f, rel, contents.as_bytes());
    f.git(&["add", "-A"]);
    let base = f.git(&["write-tree"]);
    let entry = format!("100644 blob {}\tevil.yaml", blob(&f, contents.as_bytes()));
    let tree = with_entry(
        &f,
        &base,
        &[
            "clusters",
            "demo",
            "namespaces",
            "..",
            "applicationinstances",
        ],
        &entry,
    );
    commit_tree(&f, &tree, "a .. path segment");
    // A ".." tree entry is what `git fsck` reports as hasDotdot: the tree walk refuses the tree
    // itself (issue 17), before any path reaches the intent validator.
    let e = tree_refusal(refusal(&f, &[]));
    assert!(
        matches!(&e, GitError::MalformedTree { path, message, .. }
            if path == "clusters/demo/namespaces/" && message.contains("\"..\"")),
        "{e}"
    );
}

#[test]
fn name_other_than_the_file_name() {
    let f = fixture();
    let name = "../../kube-system/evil";
    let contents = app("x", "    a: 1\n").replace("name: x\n", &format!("name: {name:?}\n"));
    release_with(&f, &format!("{APPS}/evil.yaml"), contents.as_bytes());
    let (path, kind) = intent_refusal(refusal(&f, &[]));
    assert_eq!(path, "namespaces/org-myteam/applicationinstances/evil.yaml");
    assert_eq!(kind, IntentErrorKind::NameMismatch(name.into()));
}

#[test]
fn file_over_the_size_limit() {
    let f = fixture();
    let limit = Limits::default().max_file_bytes;
    let size = limit + 1;
    let mut contents = app("big", "    padding: |\n").into_bytes();
    contents.resize(usize::try_from(size).expect("fits"), b'x');
    // `release` refuses to hash it (same limit on the checkout), so the file is committed unreleased:
    // the tree reader refuses it by its header size before the release is even looked at.
    let rel = format!("{APPS}/big.yaml");
    std::fs::write(f.repo.join(&rel), &contents).expect("write");
    f.commit("an oversized file");
    match tree_refusal(refusal(&f, &[])) {
        GitError::FileTooLarge {
            cluster,
            path,
            size: s,
            limit: l,
        } => {
            assert_eq!(cluster, "demo");
            assert_eq!(path, "namespaces/org-myteam/applicationinstances/big.yaml");
            assert_eq!((s, l), (size, limit));
        }
        other => panic!("expected FileTooLarge, got {other:?}"),
    }
}

#[test]
fn a_hundred_thousand_files() {
    let f = fixture();
    // One blob referenced by 100,000 entries of one directory: a 4 MB tree, written in one
    // `git mktree`, under clusters/demo/namespaces/org-flood/applicationinstances/.
    let id = blob(&f, app("x", "    a: 1\n").as_bytes());
    let records: String = (0..100_000)
        .map(|i| format!("100644 blob {id}\tapp-{i}.yaml\0"))
        .collect();
    let flood = git_in(&f, &["mktree", "-z"], records.as_bytes())
        .trim()
        .to_owned();
    let base = f.git(&["rev-parse", "HEAD^{tree}"]);
    let tree = with_entry(
        &f,
        &base,
        &["clusters", "demo", "namespaces", "org-flood"],
        &format!("040000 tree {flood}\tapplicationinstances"),
    );
    commit_tree(&f, &tree, "100,000 files");
    // Packed, as a fetched repository is: the pass reads the one blob from the pack.
    f.git(&["repack", "-a", "-d", "-q"]);
    let limit = Limits::default().max_files;
    let error = tree_refusal(refusal(&f, &[]));
    assert!(
        matches!(&error, GitError::TooManyFiles { cluster, limit: l } if cluster == "demo" && *l == limit),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("clusters/demo/ holds more than {limit} entries (files and directories)")
    );
}

#[test]
fn yaml_alias_bomb() {
    let f = fixture();
    // Billion laughs inside spec.values: ten levels of ten aliases, 10^10 nodes once expanded.
    let mut values = String::from(
        "    a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n",
    );
    let mut prev = 'a';
    for name in ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'] {
        let refs = vec![format!("*{prev}"); 10].join(", ");
        values.push_str(&format!("    {name}: &{name} [{refs}]\n"));
        prev = name;
    }
    let rel = "namespaces/org-myteam/applicationinstances/lol.yaml";
    release_with(
        &f,
        &format!("clusters/demo/{rel}"),
        app("lol", &values).as_bytes(),
    );
    let error = yaml_refusal(refusal(&f, &[]), rel);
    assert!(matches!(error, YamlError::AliasBudget { .. }), "{error:?}");
}

#[test]
fn deep_nesting() {
    let f = fixture();
    let values = format!("    deep: {}x{}\n", "[".repeat(200), "]".repeat(200));
    let rel = "namespaces/org-myteam/applicationinstances/deep.yaml";
    release_with(
        &f,
        &format!("clusters/demo/{rel}"),
        app("deep", &values).as_bytes(),
    );
    let limit = Limits::default().max_yaml_depth;
    let error = yaml_refusal(refusal(&f, &[]), rel);
    assert!(
        matches!(error, YamlError::TooDeep { limit: l, .. } if l == limit),
        "{error:?}"
    );
}

#[test]
fn duplicate_keys() {
    let f = fixture();
    // A reviewer reads the first `kind`; a last-wins parser would apply the second.
    let contents = app("dup", "    a: 1\n").replace(
        "kind: ApplicationInstance\n",
        "kind: ApplicationInstance\nkind: ClusterRoleBinding\n",
    );
    let rel = "namespaces/org-myteam/applicationinstances/dup.yaml";
    release_with(&f, &format!("clusters/demo/{rel}"), contents.as_bytes());
    let error = yaml_refusal(refusal(&f, &[]), rel);
    assert!(
        matches!(&error, YamlError::DuplicateKey { key, at: Some(at), .. } if key == "kind" && at.line == 3),
        "{error:?}"
    );
}

#[test]
fn two_documents_in_one_file() {
    let f = fixture();
    // A valid object, then a smuggled second one.
    let contents = format!(
        "{}---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: two\n",
        app("two", "    a: 1\n")
    );
    let rel = "namespaces/org-myteam/applicationinstances/two.yaml";
    release_with(&f, &format!("clusters/demo/{rel}"), contents.as_bytes());
    let error = yaml_refusal(refusal(&f, &[]), rel);
    assert!(
        matches!(error, YamlError::MultipleDocuments { at: Some(_), .. }),
        "{error:?}"
    );
}

#[test]
fn non_utf8_bytes() {
    let f = fixture();
    // An overlong encoding of '/' (0xC0 0xAF), the classic filter bypass.
    let mut contents = app("bin", "    path: \"").into_bytes();
    let offset = contents.len();
    contents.extend_from_slice(b"\xc0\xaf\"\n");
    let rel = "namespaces/org-myteam/applicationinstances/bin.yaml";
    release_with(&f, &format!("clusters/demo/{rel}"), &contents);
    assert_eq!(
        yaml_refusal(refusal(&f, &[]), rel),
        YamlError::NotUtf8 {
            file: format!("clusters/demo/{rel}"),
            offset
        }
    );
}

/// Declares a foreign object under applicationinstances/ (the only place a kind is judged) and
/// asserts the kind refusal.
fn foreign_kind(name: &str, contents: &str, api_version: &str, kind: &str) {
    let f = fixture();
    let rel = format!("namespaces/org-myteam/applicationinstances/{name}.yaml");
    release_with(&f, &format!("clusters/demo/{rel}"), contents.as_bytes());
    let (path, refused) = intent_refusal(refusal(&f, &[]));
    assert_eq!(path, rel);
    assert_eq!(
        refused,
        IntentErrorKind::WrongKind {
            api_version: api_version.into(),
            kind: kind.into()
        }
    );
}

#[test]
fn cluster_role_binding_declared() {
    foreign_kind(
        "admin",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: admin\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n  - kind: ServiceAccount\n    name: default\n    namespace: org-myteam\n",
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
    );
}

#[test]
fn secret_declared() {
    foreign_kind(
        "creds",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: org-myteam\nstringData:\n  password: hunter2\n",
        "v1",
        "Secret",
    );
}

#[test]
fn namespace_declared() {
    foreign_kind(
        "kube-evil",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kube-evil\n  labels:\n    app.vworkspace.io/managed-by: vworkspace\n",
        "v1",
        "Namespace",
    );
}

#[test]
fn metadata_namespace_elsewhere() {
    let f = fixture();
    let contents = app("escape", "    a: 1\n").replace(
        "  name: escape\n",
        "  name: escape\n  namespace: kube-system\n",
    );
    let rel = "namespaces/org-myteam/applicationinstances/escape.yaml";
    release_with(&f, &format!("clusters/demo/{rel}"), contents.as_bytes());
    let (path, kind) = intent_refusal(refusal(&f, &[]));
    assert_eq!(path, rel);
    assert_eq!(
        kind,
        IntentErrorKind::NamespaceMismatch("kube-system".into())
    );
}

#[test]
fn valid_release_for_another_cluster() {
    let f = fixture();
    // clusters/prod is a byte-for-byte copy of demo's valid, 2-of-2 signed release.
    run(Command::new("cp")
        .arg("-r")
        .arg(f.repo.join("clusters/demo"))
        .arg(f.repo.join("clusters/prod")));
    f.commit("demo's release replayed to prod");
    match release_refusal(refusal(&f, &["--cluster", "prod"])) {
        ReleaseError::WrongCluster { cluster, found } => {
            assert_eq!((cluster.as_str(), found.as_str()), ("prod", "demo"));
        }
        other => panic!("expected WrongCluster, got {other:?}"),
    }
}

#[test]
fn expired_release() {
    let f = fixture();
    // The fixture's release expires 30 days after it was cut; the verifier's clock is in 2099.
    let later = "2099-01-01T00:00:00Z";
    match release_refusal(refusal(&f, &["--now", later])) {
        ReleaseError::Expired { expires, now, .. } => {
            assert_eq!(now, later.parse::<jiff::Timestamp>().expect("ts"));
            assert!(expires < now, "{expires} < {now}");
        }
        other => panic!("expected Expired, got {other:?}"),
    }
}

#[test]
fn replayed_older_serial() {
    let f = fixture();
    let first = f.git(&["rev-parse", "HEAD"]);
    f.write(
        "clusters/demo/namespaces/org-myteam/operations/weekly.yaml",
        &BACKUP.replace("nightly", "weekly"),
    );
    f.release(&[]);
    let second = f.commit("release 2");
    // The server replays release 1 (validly signed, not expired) after release 2 was applied.
    match release_refusal(refusal(&f, &["--ref", &first, "--last-serial", "2"])) {
        ReleaseError::Rollback { serial, last, .. } => assert_eq!((serial, last), (1, 2)),
        other => panic!("expected Rollback, got {other:?}"),
    }
    // With the last applied commit known too, the commit graph refuses it first.
    let error = refusal(
        &f,
        &[
            "--ref",
            &first,
            "--last-serial",
            "2",
            "--last-commit",
            &second,
        ],
    );
    assert_eq!(error.reason(), reason::HISTORY_INVALID);
    match error {
        Error::History(HistoryError::NotDescendant { last, new }) => {
            assert_eq!((last, new), (second, first));
        }
        other => panic!("expected NotDescendant, got {other:?}"),
    }
}

#[test]
fn release_signed_twice_by_one_key() {
    let f = fixture();
    // Odoo's key signs again under the engineer's file name: two signature files, one key.
    sign_manifest(&f, "release-odoo", "engineer.sig");
    f.commit("one key, two signatures");
    match release_refusal(refusal(&f, &[])) {
        ReleaseError::BelowThreshold {
            found, threshold, ..
        } => assert_eq!((found, threshold), (1, 2)),
        other => panic!("expected BelowThreshold, got {other:?}"),
    }
}

#[test]
fn commit_by_a_removed_key() {
    let f = fixture();
    // The cluster side revoked the committer by replacing its line with a new key's.
    let new = ssh_keygen(&f.path("new-committer"), "new@example.org", "ed25519");
    std::fs::write(
        f.path("commit_signers"),
        format!("new@example.org namespaces=\"git\" {new}\n"),
    )
    .expect("write signers");
    let error = signature_refusal(refusal(&f, &[]));
    assert!(
        matches!(error, SignatureError::UnknownKey { .. }),
        "{error:?}"
    );
}

#[test]
fn commit_by_a_key_past_valid_before() {
    let f = fixture();
    // The cluster side revoked the committer by closing its window in 2020; the commit claims today.
    let key = std::fs::read_to_string(f.path("committer.pub")).expect("public key");
    std::fs::write(
        f.path("commit_signers"),
        format!(
            "odoo@example.org namespaces=\"git\",valid-before=\"20200101\" {}\n",
            key.trim()
        ),
    )
    .expect("write signers");
    match signature_refusal(refusal(&f, &[])) {
        SignatureError::KeyExpired {
            principal,
            valid_before,
            ..
        } => {
            assert_eq!(principal, "odoo@example.org");
            assert_eq!(
                valid_before,
                "2020-01-01T00:00:00Z"
                    .parse::<jiff::Timestamp>()
                    .expect("ts")
            );
        }
        other => panic!("expected KeyExpired, got {other:?}"),
    }
}

#[test]
fn value_encrypted_to_another_cluster() {
    let f = fixture();
    // The stock `age -a` to another cluster's recipient.
    run(Command::new("age-keygen")
        .arg("-o")
        .arg(f.path("prod.agekey")));
    let prod = std::fs::read_to_string(f.path("prod.agekey")).expect("identity");
    let recipient = prod
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("recipient");
    let mut child = Command::new("age")
        .args(["-a", "-r", recipient])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("age runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(SMTP_PASSWORD.as_bytes())
        .expect("write");
    let armored = stdout(&child.wait_with_output().expect("age"));
    release_with(
        &f,
        &format!("{APPS}/nextcloud.yaml"),
        nextcloud(&armored).as_bytes(),
    );
    let error = value_refusal(refusal(&f, &[]));
    assert_eq!(
        (
            error.namespace.as_str(),
            error.instance.as_str(),
            error.path.as_str()
        ),
        ("org-myteam", "nextcloud", "nextcloud.mail.smtp.password")
    );
    assert_eq!(
        error.kind,
        ValueErrorKind::Secrets(SecretsError::NoMatchingIdentity)
    );
}

/// Releases nextcloud's SMTP password encrypted to this cluster's recipient but sealed for cluster
/// prod.
fn release_value_bound_to_prod(f: &Fixture) {
    let armored = f.bound_encrypt_for(
        "prod",
        SMTP_PASSWORD,
        "org-myteam",
        "nextcloud",
        "nextcloud.mail.smtp.password",
    );
    release_with(
        f,
        &format!("{APPS}/nextcloud.yaml"),
        nextcloud(&armored).as_bytes(),
    );
}

#[test]
fn value_bound_to_another_cluster() {
    let f = fixture();
    release_value_bound_to_prod(&f);
    let error = value_refusal(refusal(&f, &[]));
    assert_eq!(error.path, "nextcloud.mail.smtp.password");
    assert_eq!(
        error.kind,
        ValueErrorKind::BindingMismatch {
            field: "cluster",
            bound_to: "prod".into()
        }
    );
    assert!(!error.to_string().contains(SMTP_PASSWORD), "{error}");
}

#[test]
fn a_recorded_values_verdict_is_reused_for_the_same_values_alone() {
    let f = fixture();
    let args = flags(&f, &[]);
    let plain = library_pass(&args).1.expect("the fixture passes");
    assert_eq!(
        plain.values_verdict(),
        None,
        "a plain value's note is only found by decrypting: no verdict to reuse"
    );
    let token = f.bound_encrypt_for(
        "demo",
        ADMIN_TOKEN,
        "org-vault",
        "vaultwarden",
        "adminToken.value",
    );
    release_with(
        &f,
        "clusters/demo/namespaces/org-vault/applicationinstances/vaultwarden.yaml",
        vaultwarden(&token).as_bytes(),
    );
    let first = library_pass(&args).1.expect("every value bound");
    assert!(
        !first.values_reused(),
        "nothing recorded: every value is decrypted"
    );
    let verdict = first
        .values_verdict()
        .expect("every value bound: a verdict")
        .to_owned();
    // A new process with the verdict its predecessor recorded: the same values are not decrypted.
    let again = library_pass_with(&args, Some(verdict.clone()))
        .1
        .expect("passes");
    assert!(again.values_reused());
    assert_eq!(again.values_checked(), first.values_checked());
    assert_eq!(again.values_verdict(), Some(verdict.as_str()));
    // Another verdict (another release's, a forged one) covers nothing: every value is decrypted.
    let other = library_pass_with(&args, Some(format!("sha256:{}", "0".repeat(64))))
        .1
        .expect("passes");
    assert!(!other.values_reused());
    assert_eq!(other.values_verdict(), Some(verdict.as_str()));
    // A value changed after the verdict was recorded: a value bound to another cluster is refused
    // although the recorded verdict is passed along.
    release_value_bound_to_prod(&f);
    let refused = library_pass_with(&args, Some(verdict))
        .1
        .expect_err("a changed value is decrypted and refused");
    assert_eq!(refused.reason(), reason::VALUES_INVALID, "{refused}");
}

#[test]
fn literal_credential_in_values() {
    let f = fixture();
    // A password in plain text where an encrypted value belongs: reviewers and Git would see it.
    let literal = "hunter2-PLAINTEXT-MARKER-literal";
    release_with(
        &f,
        &format!("{APPS}/nextcloud.yaml"),
        nextcloud(literal).as_bytes(),
    );
    let error = value_refusal(refusal(&f, &[]));
    assert_eq!(
        (
            error.namespace.as_str(),
            error.instance.as_str(),
            error.path.as_str()
        ),
        ("org-myteam", "nextcloud", "nextcloud.mail.smtp.password")
    );
    assert_eq!(error.kind, ValueErrorKind::LiteralCredential);
    assert!(!error.to_string().contains(literal), "{error}");
}

/// A tree bomb: three directory levels of 100 entries each, every entry the same subtree, ending in
/// the empty tree. Four small objects make the walk visit 1,000,000 directories without reading a
/// file, so neither the file-count nor the byte limit ever trips; at the allowed depth (8) the same
/// few kilobytes would mean 100^8 visits. Ignored because it fails today: the pass accepts this
/// tree. The walk counts files only (`src/git.rs`, `TreeWalk::visit`); once directories count
/// against a limit, remove the `#[ignore]`.
#[test]
fn tree_bomb_of_shared_directories() {
    let f = fixture();
    let mut level = git_in(&f, &["mktree", "-z"], b"").trim().to_owned();
    for _ in 0..3 {
        let records: String = (0..100)
            .map(|i| format!("040000 tree {level}\td{i}\0"))
            .collect();
        level = git_in(&f, &["mktree", "-z"], records.as_bytes())
            .trim()
            .to_owned();
    }
    let base = f.git(&["rev-parse", "HEAD^{tree}"]);
    let tree = with_entry(
        &f,
        &base,
        &["clusters", "demo"],
        &format!("040000 tree {level}\tbomb"),
    );
    commit_tree(&f, &tree, "a million directories in four objects");
    let error = tree_refusal(refusal(&f, &[]));
    assert!(
        matches!(error, GitError::TooManyFiles { limit: 50_000, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("clusters/demo/"), "{error}");
}
