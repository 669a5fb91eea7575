//! Parser differentials (issue 17): the operator must read commits, trees, signature files,
//! `allowed_signers` and YAML exactly as the stock tools a reviewer uses (git, ssh-keygen, a YAML 1.2
//! core-schema reader), or refuse. Every test here builds the malformed or unusual input with the real
//! tool (or writes the raw object the tool would read), asks the tool for its reading, and asserts the
//! operator's decision next to it, in both directions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vworkspace_core::limits::Limits;
use vworkspace_core::repository::{GitError, LocalRepository, TreeEntry};
use vworkspace_core::trust::commit_signature;
use vworkspace_core::trust::signers::AllowedSigners;
use vworkspace_core::trust::sshsig;

// ---------------------------------------------------------------------------------------------
// Helpers: a scratch repository, the stock tools, raw objects.
// ---------------------------------------------------------------------------------------------

fn tool(program: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("TZ", "UTC")
        .stdin(Stdio::null());
    cmd
}

/// Runs a command with `input` on stdin and waits for it (the child is always reaped).
fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("tool starts");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        // A tool may exit before reading everything (a refusal): that is its answer, not an error.
        let _ = stdin.write_all(input);
    }
    child.wait_with_output().expect("tool finishes")
}

/// A scratch repository with an ed25519 key made by `ssh-keygen` and git's allowed-signers file.
struct Repo {
    _dir: tempfile::TempDir,
    root: PathBuf,
    key: PathBuf,
    allowed: PathBuf,
    signers: AllowedSigners,
}

impl Repo {
    fn new() -> Repo {
        Repo::with_init(&["init", "-q", "-b", "main", "repo"])
    }

    fn with_init(init: &[&str]) -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let key = root.join("key");
        let public = ssh_keygen(&root, &key, "me");
        let allowed = root.join("allowed_signers");
        let line = format!("me namespaces=\"git,vworkspace-release\" {public}\n");
        std::fs::write(&allowed, &line).expect("allowed signers");
        let signers = AllowedSigners::parse(&line, "allowed_signers").expect("signers");
        let out = tool("git", &root).args(init).output().expect("git init");
        assert!(out.status.success(), "{out:?}");
        Repo {
            _dir: dir,
            root,
            key,
            allowed,
            signers,
        }
    }

    fn repo(&self) -> PathBuf {
        self.root.join("repo")
    }

    fn git_output(&self, args: &[&str]) -> Output {
        tool("git", &self.repo())
            .args(args)
            .output()
            .expect("git runs")
    }

    fn git(&self, args: &[&str]) -> String {
        let out = self.git_output(args);
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn git_stdin(&self, args: &[&str], input: &[u8]) -> String {
        let mut cmd = tool("git", &self.repo());
        cmd.args(args);
        let out = run_with_input(cmd, input);
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn blob(&self, contents: &[u8]) -> String {
        self.git_stdin(&["hash-object", "-w", "--stdin"], contents)
    }

    /// Writes a tree object with exactly these entries, in this order, unchecked (`--literally`):
    /// the way to make a tree git itself would never write.
    fn raw_tree(&self, entries: &[(&str, &[u8], &str)]) -> String {
        let mut raw = Vec::new();
        for (mode, name, id) in entries {
            raw.extend_from_slice(mode.as_bytes());
            raw.push(b' ');
            raw.extend_from_slice(name);
            raw.push(0);
            raw.extend_from_slice(&hex::decode(id).expect("hex id"));
        }
        self.git_stdin(
            &["hash-object", "-t", "tree", "-w", "--literally", "--stdin"],
            &raw,
        )
    }

    /// A root tree holding `clusters/demo/` = `cluster_tree`.
    fn root_for(&self, cluster_tree: &str) -> String {
        let clusters = self.raw_tree(&[("40000", b"demo", cluster_tree)]);
        self.raw_tree(&[("40000", b"clusters", &clusters)])
    }

    /// `ssh-keygen -Y sign -n <namespace>` over `message`: the armored signature.
    fn ssh_sign(&self, key: &Path, namespace: &str, message: &[u8]) -> String {
        let mut cmd = tool("ssh-keygen", &self.root);
        cmd.args(["-q", "-Y", "sign", "-n", namespace, "-f"])
            .arg(key);
        let out = run_with_input(cmd, message);
        assert!(
            out.status.success(),
            "ssh-keygen sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("armor is text")
    }

    /// Writes a commit object whose header block is `headers_stored` (a `{sig}` placeholder is
    /// replaced by a `gpgsig` header holding an SSHSIG over `signed`), unchecked.
    fn raw_commit(&self, raw: &[u8]) -> String {
        self.git_stdin(
            &[
                "hash-object",
                "-t",
                "commit",
                "-w",
                "--literally",
                "--stdin",
            ],
            raw,
        )
    }

    /// A commit of `tree` signed as `git commit -S` signs it (ssh-keygen over the unsigned object).
    fn signed_commit(&self, tree: &str, parents: &[&str]) -> String {
        self.signed_commit_by(tree, parents, &self.key, 1_700_000_000)
    }

    /// A commit signed by `key`, authored and committed at `epoch`.
    fn signed_commit_by(&self, tree: &str, parents: &[&str], key: &Path, epoch: i64) -> String {
        let mut unsigned = format!("tree {tree}\n");
        for p in parents {
            unsigned.push_str(&format!("parent {p}\n"));
        }
        unsigned.push_str(&AUTHOR.replace("1700000000", &epoch.to_string()));
        let body = format!("\nintent at {epoch}\n");
        let armor = self.ssh_sign(key, "git", format!("{unsigned}{body}").as_bytes());
        self.raw_commit(format!("{unsigned}{}{body}", gpgsig_header("gpgsig", &armor)).as_bytes())
    }

    /// `git verify-commit` with this repository's allowed signers: git's verdict.
    fn git_verify_commit(&self, id: &str) -> bool {
        let allowed = format!("gpg.ssh.allowedSignersFile={}", self.allowed.display());
        self.git_output(&["-c", "gpg.format=ssh", "-c", &allowed, "verify-commit", id])
            .status
            .success()
    }

    /// The operator's verdict on a commit: read from the object database, verified now.
    fn our_verify_commit(&self, id: &str) -> Result<(), String> {
        let repo = LocalRepository::open(&self.repo()).map_err(|e| e.to_string())?;
        let commit = repo.read_commit(id).map_err(|e| e.to_string())?;
        commit_signature::verify_commit(&commit, &self.signers, jiff::Timestamp::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The operator's reading of `clusters/demo/` at a commit it verified.
    fn our_tree(
        &self,
        id: &str,
    ) -> Result<std::collections::BTreeMap<String, TreeEntry>, GitError> {
        let repo = LocalRepository::open(&self.repo()).expect("open");
        let commit = repo.read_commit(id)?;
        let verified =
            commit_signature::verify_commit(&commit, &self.signers, jiff::Timestamp::now())
                .expect("the test commit is signed");
        verified
            .read_cluster_tree(&repo, "demo", &Limits::default())
            .map(|t| t.entries().clone())
    }

    /// `git fsck --strict` messages about `object` (its message ids, e.g. `duplicateEntries`).
    fn fsck_findings(&self, object: &str) -> Vec<String> {
        let out = self.git_output(&["fsck", "--strict", "--no-dangling", "--no-progress"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .filter(|l| l.contains(object))
            .filter_map(|l| {
                let after = l.split_once(&format!("{object}: "))?.1;
                Some(after.split(':').next()?.trim().to_owned())
            })
            .collect()
    }
}

const AUTHOR: &str =
    "author A <a@example.org> 1700000000 +0000\ncommitter A <a@example.org> 1700000000 +0000\n";

/// `<name> <first armor line>` then every further armor line prefixed by one space, as git writes it.
fn gpgsig_header(name: &str, armor: &str) -> String {
    let mut out = String::new();
    for (i, line) in armor.trim_end_matches('\n').split('\n').enumerate() {
        if i == 0 {
            out.push_str(&format!("{name} {line}\n"));
        } else {
            out.push_str(&format!(" {line}\n"));
        }
    }
    out
}

/// `ssh-keygen -t ed25519`; returns the public key line.
fn ssh_keygen(dir: &Path, path: &Path, comment: &str) -> String {
    let out = tool("ssh-keygen", dir)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs");
    assert!(out.status.success(), "{out:?}");
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. Tree entry modes.
// ---------------------------------------------------------------------------------------------

/// A subtree under `clusters/<id>/` is read only when git shows it as a directory with the same
/// content and `git fsck --strict` has nothing to say about it; `140000` (a submodule to git),
/// `100664` and a zero-padded `040000` are refused by name.
#[test]
fn tree_entry_modes_are_read_only_as_git_shows_them() {
    let mut seen_accept = false;
    let mut seen_refuse = false;
    for mode in ["40000", "140000", "040000", "100664", "100755", "100644"] {
        let r = Repo::new();
        let blob = r.blob(b"kind: Hidden\n");
        let sub = r.raw_tree(&[("100644", b"x.yaml", &blob)]);
        // A file mode points at a blob, a directory mode at the subtree.
        let target = if mode.starts_with('1') && mode != "140000" {
            &blob
        } else {
            &sub
        };
        let cluster = r.raw_tree(&[("100644", b"release.yaml", &blob), (mode, b"sub", target)]);
        let commit = r.signed_commit(&r.root_for(&cluster), &[]);

        // git's reading: what ls-tree shows for the entry, what `git show` returns, what fsck says.
        let listing = r.git(&["ls-tree", &format!("{commit}:clusters/demo")]);
        let shown = listing
            .lines()
            .find(|l| l.ends_with("\tsub"))
            .expect("git lists the entry")
            .to_owned();
        let git_shows_dir = shown.starts_with("040000 tree ");
        let git_shows_file = shown.starts_with("100644 blob ") || shown.starts_with("100755 blob ");
        let fsck = r.fsck_findings(&cluster);
        let git_show_sub = r.git_output(&["show", &format!("{commit}:clusters/demo/sub/x.yaml")]);

        let ours = r.our_tree(&commit);
        if (git_shows_dir || git_shows_file) && fsck.is_empty() {
            let entries = ours.unwrap_or_else(|e| panic!("mode {mode}: git shows {shown:?}: {e}"));
            if git_shows_dir {
                assert!(git_show_sub.status.success());
                assert_eq!(
                    entries.get("sub/x.yaml"),
                    Some(&TreeEntry::File(git_show_sub.stdout.clone())),
                    "mode {mode}"
                );
            } else {
                let git_bytes = r.git_output(&["show", &format!("{commit}:clusters/demo/sub")]);
                assert_eq!(
                    entries.get("sub"),
                    Some(&TreeEntry::File(git_bytes.stdout)),
                    "mode {mode}"
                );
            }
            seen_accept = true;
        } else {
            let err = ours.expect_err(&format!("mode {mode}: git shows {shown:?}, fsck {fsck:?}"));
            assert!(
                matches!(&err, GitError::BadEntryMode { path, mode: m, .. } if path == "sub" && m == mode),
                "mode {mode}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains("clusters/demo/sub") && text.contains(mode),
                "{text}"
            );
            seen_refuse = true;
        }
        if mode == "140000" {
            // The case of the issue: git shows a submodule, no content; the old walk planned it.
            assert!(!git_shows_dir, "{shown}");
            assert!(!git_show_sub.status.success());
        }
    }
    assert!(seen_accept && seen_refuse);
}

// ---------------------------------------------------------------------------------------------
// 2. Malformed trees.
// ---------------------------------------------------------------------------------------------

/// Trees `git fsck` calls malformed (duplicate names, `/` in a name, empty, `.`, `..`, out of order)
/// are refused wherever they sit on the way to or inside `clusters/<id>/`; a well-formed tree is
/// read with exactly the bytes `git show <commit>:<path>` returns.
#[test]
fn malformed_trees_are_refused_as_git_fsck_reports_them() {
    type Build = fn(&Repo, &str, &str, &str) -> (String, String);
    // Each case builds the cluster tree (or the clusters/ tree) and returns (root tree, bad tree).
    let cases: Vec<(&str, Build)> = vec![
        ("well formed", |r, a, b, _| {
            let t = r.raw_tree(&[("100644", b"a.yaml", a), ("100644", b"b.yaml", b)]);
            (r.root_for(&t), t)
        }),
        ("duplicate file names", |r, a, b, _| {
            let t = r.raw_tree(&[("100644", b"a.yaml", a), ("100644", b"a.yaml", b)]);
            (r.root_for(&t), t)
        }),
        ("a file and a directory of one name", |r, a, _, sub| {
            let t = r.raw_tree(&[("100644", b"a", a), ("40000", b"a", sub)]);
            (r.root_for(&t), t)
        }),
        ("a '/' in a name", |r, a, _, _| {
            let t = r.raw_tree(&[("100644", b"x/a.yaml", a)]);
            (r.root_for(&t), t)
        }),
        ("an empty name", |r, a, _, _| {
            let t = r.raw_tree(&[("100644", b"", a)]);
            (r.root_for(&t), t)
        }),
        ("'.'", |r, _, _, sub| {
            let t = r.raw_tree(&[("40000", b".", sub)]);
            (r.root_for(&t), t)
        }),
        ("'..'", |r, _, _, sub| {
            let t = r.raw_tree(&[("40000", b"..", sub)]);
            (r.root_for(&t), t)
        }),
        ("out of order", |r, a, b, _| {
            let t = r.raw_tree(&[("100644", b"b.yaml", b), ("100644", b"a.yaml", a)]);
            (r.root_for(&t), t)
        }),
        ("two clusters/demo entries", |r, a, b, _| {
            let first = r.raw_tree(&[("100644", b"a.yaml", a)]);
            let second = r.raw_tree(&[("100644", b"a.yaml", b)]);
            let clusters = r.raw_tree(&[("40000", b"demo", &first), ("40000", b"demo", &second)]);
            (r.raw_tree(&[("40000", b"clusters", &clusters)]), clusters)
        }),
    ];
    let mut refused = 0;
    for (name, build) in cases {
        let r = Repo::new();
        let a = r.blob(b"first: the one git shows\n");
        let b = r.blob(b"second: the one a walk kept\n");
        let sub = r.raw_tree(&[("100644", b"s.yaml", &a)]);
        let (root, bad) = build(&r, &a, &b, &sub);
        let commit = r.signed_commit(&root, &[]);
        let fsck = r.fsck_findings(&bad);
        let ours = r.our_tree(&commit);
        if fsck.is_empty() {
            let entries = ours.unwrap_or_else(|e| panic!("{name}: fsck is clean: {e}"));
            for (path, entry) in &entries {
                let shown = r.git_output(&["show", &format!("{commit}:clusters/demo/{path}")]);
                assert!(shown.status.success(), "{name}: git show {path}");
                assert_eq!(entry, &TreeEntry::File(shown.stdout), "{name}: {path}");
            }
        } else {
            let err = ours.expect_err(&format!("{name}: git fsck reports {fsck:?}"));
            assert!(
                matches!(&err, GitError::MalformedTree { tree, .. } if tree == &bad),
                "{name}: {err}"
            );
            refused += 1;
        }
        if name == "duplicate file names" {
            // The differential the issue found: git shows the first entry.
            let shown = r.git(&["show", &format!("{commit}:clusters/demo/a.yaml")]);
            assert_eq!(shown, "first: the one git shows");
            assert!(fsck.iter().any(|f| f == "duplicateEntries"), "{fsck:?}");
        }
    }
    assert_eq!(refused, 8, "every malformed shape is one git fsck reports");
}

// ---------------------------------------------------------------------------------------------
// 6. The signed payload of a commit.
// ---------------------------------------------------------------------------------------------

/// For each shape of extra header, the operator's verdict equals `git verify-commit`'s: git removes
/// every header line starting with `gpgsig` (and its continuation lines) from the signed payload, and
/// concatenates several `gpgsig` headers (whose first armor then counts).
#[test]
fn signed_payload_matches_git_verify_commit_for_every_gpgsig_header_shape() {
    let r = Repo::new();
    let other_key = r.root.join("other");
    ssh_keygen(&r.root, &other_key, "stranger");
    let tree = r.raw_tree(&[]);
    let base = format!("tree {tree}\n{AUTHOR}");
    let body = "\nintent\n";
    let sign =
        |headers: &str, key: &Path| r.ssh_sign(key, "git", format!("{headers}{body}").as_bytes());
    let good = sign(&base, &r.key);
    let stranger = sign(&base, &other_key);
    let extra = |name: &str| format!("{name} extra value\n continued\n");
    // (shape, headers that were signed, headers stored before the body)
    let mut cases: Vec<(String, String)> = vec![
        (
            "one gpgsig".into(),
            format!("{base}{}", gpgsig_header("gpgsig", &good)),
        ),
        (
            "two gpgsig, trusted first".into(),
            format!(
                "{base}{}{}",
                gpgsig_header("gpgsig", &good),
                gpgsig_header("gpgsig", &stranger)
            ),
        ),
        (
            "two gpgsig, untrusted first".into(),
            format!(
                "{base}{}{}",
                gpgsig_header("gpgsig", &stranger),
                gpgsig_header("gpgsig", &good)
            ),
        ),
        ("unsigned".into(), base.clone()),
    ];
    for name in ["gpgsig-sha256", "gpgsig-foo", "gpgsigfoo", "x-extra"] {
        // Added after signing: git ignores a gpgsig* header; any other header changes the payload.
        cases.push((
            format!("{name} added after signing"),
            format!("{base}{}{}", extra(name), gpgsig_header("gpgsig", &good)),
        ));
        cases.push((
            format!("{name} added after the gpgsig header"),
            format!("{base}{}{}", gpgsig_header("gpgsig", &good), extra(name)),
        ));
        // Signed over: git leaves a gpgsig* header out of the payload, so such a signature fails.
        let with = format!("{base}{}", extra(name));
        let over = sign(&with, &r.key);
        cases.push((
            format!("signature made over a {name} header"),
            format!("{with}{}", gpgsig_header("gpgsig", &over)),
        ));
    }
    let (mut good_seen, mut bad_seen) = (0, 0);
    for (shape, headers) in cases {
        let id = r.raw_commit(format!("{headers}{body}").as_bytes());
        let git = r.git_verify_commit(&id);
        let ours = r.our_verify_commit(&id);
        assert_eq!(
            ours.is_ok(),
            git,
            "{shape}: git verify-commit says {git}, we say {ours:?}"
        );
        if git {
            good_seen += 1;
        } else {
            bad_seen += 1;
        }
    }
    assert!(
        good_seen >= 4 && bad_seen >= 4,
        "{good_seen} good, {bad_seen} bad"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Object identity: replace refs, grafts, hashes.
// ---------------------------------------------------------------------------------------------

#[test]
fn replace_refs_and_grafts_are_never_followed_and_commit_bytes_hash_to_their_id() {
    let r = Repo::new();
    let reviewed = r.blob(b"reviewed: true\n");
    let hidden = r.blob(b"reviewed: false\n");
    let tree_a = r.root_for(&r.raw_tree(&[("100644", b"a.yaml", &reviewed)]));
    let tree_b = r.root_for(&r.raw_tree(&[("100644", b"a.yaml", &hidden)]));
    let a = r.signed_commit(&tree_a, &[]);
    let b = r.signed_commit(&tree_b, &[]);
    let c = r.signed_commit(&tree_a, &[&a]);
    r.git(&["update-ref", "refs/heads/main", &c]);

    // refs/replace/<A> makes git show B's bytes under A's id.
    r.git(&["replace", &a, &b]);
    let replaced = r.git(&["cat-file", "commit", &a]);
    let raw_a = r.git(&["--no-replace-objects", "cat-file", "commit", &a]);
    assert_ne!(replaced, raw_a, "git follows the replace ref");
    let repo = LocalRepository::open(&r.repo()).expect("open");
    let ours = repo.read_commit(&a).expect("commit A");
    assert_eq!(String::from_utf8_lossy(ours.raw()).trim(), raw_a);
    assert_eq!(ours.tree(), tree_a);
    assert_eq!(
        r.our_tree(&a).expect("tree")["a.yaml"],
        TreeEntry::File(b"reviewed: true\n".to_vec())
    );

    // info/grafts gives C another parent in git's history commands; the object says otherwise.
    std::fs::write(r.repo().join(".git/info/grafts"), format!("{c} {b}\n")).expect("grafts");
    let grafted = r.git(&["--no-replace-objects", "log", "-1", "--format=%P", &c]);
    let raw_c = r.git(&["--no-replace-objects", "cat-file", "commit", &c]);
    assert!(raw_c.contains(&format!("parent {a}\n")));
    let repo = LocalRepository::open(&r.repo()).expect("open");
    assert_eq!(repo.read_commit(&c).expect("C").parents(), vec![a.clone()]);
    assert!(repo.is_ancestor(&a, &c, 10).expect("walk"));
    if grafted == b {
        // git (up to 2.45) honours the graft; we do not.
        assert!(!repo.is_ancestor(&b, &c, 10).expect("walk"));
    }

    // A loose object whose bytes are another commit's: git's fsck reports a hash mismatch.
    let path = |id: &str| {
        r.repo()
            .join(format!(".git/objects/{}/{}", &id[..2], &id[2..]))
    };
    std::fs::remove_file(path(&a)).expect("remove A");
    std::fs::copy(path(&b), path(&a)).expect("forge A");
    let fsck = r.git_output(&["--no-replace-objects", "fsck", "--no-dangling"]);
    let fsck_text = String::from_utf8_lossy(&fsck.stderr).into_owned();
    assert!(fsck_text.contains("mismatch"), "{fsck_text}");
    let repo = LocalRepository::open(&r.repo()).expect("open");
    let err = repo.read_commit(&a).expect_err("forged object");
    assert!(
        matches!(&err, GitError::HashMismatch { id, actual } if id == &a && actual == &b),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 13. SHA-256 repositories.
// ---------------------------------------------------------------------------------------------

#[test]
fn sha256_repositories_are_refused_with_a_clear_message() {
    for format in ["sha1", "sha256"] {
        let r = Repo::with_init(&["init", "-q", "--object-format", format, "repo"]);
        std::fs::write(r.repo().join("f"), "x\n").expect("write");
        r.git(&["add", "f"]);
        r.git(&[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.org",
            "commit",
            "-q",
            "-m",
            "x",
        ]);
        let git_says = r.git(&["rev-parse", "--show-object-format"]);
        assert_eq!(git_says, format);
        match LocalRepository::open(&r.repo()) {
            Ok(repo) => {
                assert_eq!(git_says, "sha1");
                assert_eq!(
                    repo.resolve(&vworkspace_core::repository::GitRef::Revision(
                        "HEAD".into()
                    ))
                    .expect("HEAD"),
                    r.git(&["rev-parse", "HEAD"])
                );
            }
            Err(err) => {
                assert_eq!(git_says, "sha256");
                assert!(
                    matches!(&err, GitError::UnsupportedObjectFormat { format, .. } if format == "sha256"),
                    "{err}"
                );
                let text = err.to_string();
                assert!(
                    text.contains("sha256") && text.contains("not supported"),
                    "{text}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 10. SSHSIG files.
// ---------------------------------------------------------------------------------------------

fn ssh_keygen_verify(
    r: &Repo,
    allowed: &Path,
    namespace: &str,
    sig: &[u8],
    message: &[u8],
) -> bool {
    let file = r.root.join("candidate.sig");
    std::fs::write(&file, sig).expect("write sig");
    let mut cmd = tool("ssh-keygen", &r.root);
    cmd.args(["-Y", "verify", "-I", "me", "-n", namespace, "-f"])
        .arg(allowed)
        .arg("-s")
        .arg(&file);
    run_with_input(cmd, message).status.success()
}

#[test]
fn sshsig_armor_is_read_as_ssh_keygen_reads_it() {
    let r = Repo::new();
    let other = r.root.join("other");
    ssh_keygen(&r.root, &other, "other");
    let ns = "vworkspace-release";
    let message = b"apiVersion: gitops.vworkspace.io/v1alpha1\nkind: Release\n";
    let sig = r.ssh_sign(&r.key, ns, message);
    let stranger = r.ssh_sign(&other, ns, message);
    let lines: Vec<&str> = sig.trim_end().split('\n').collect();
    let body: String = lines[1..lines.len() - 1].concat();
    use base64::Engine as _;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(&body)
        .expect("base64");
    let rewrap = |b64: &str, width: usize| {
        let mut out = String::from("-----BEGIN SSH SIGNATURE-----\n");
        for chunk in b64.as_bytes().chunks(width) {
            out.push_str(std::str::from_utf8(chunk).expect("ascii"));
            out.push('\n');
        }
        out.push_str("-----END SSH SIGNATURE-----\n");
        out
    };
    let mut trailing = blob.clone();
    trailing.extend_from_slice(b"\0\0\0\0");
    let trailing = base64::engine::general_purpose::STANDARD.encode(&trailing);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("as written", sig.clone().into_bytes()),
        ("CRLF line ends", sig.replace('\n', "\r\n").into_bytes()),
        (
            "CRLF after the header line only",
            sig.replacen("-----\n", "-----\r\n", 1).into_bytes(),
        ),
        (
            "CRLF in the body only",
            format!(
                "{}\n{}\r\n{}\n",
                lines[0],
                lines[1..lines.len() - 1].join("\r\n"),
                lines[lines.len() - 1]
            )
            .into_bytes(),
        ),
        (
            "text before the armor",
            format!("hello\n{sig}").into_bytes(),
        ),
        (
            "a blank line before the armor",
            format!("\n{sig}").into_bytes(),
        ),
        ("a space before the armor", format!(" {sig}").into_bytes()),
        (
            "text after the END line",
            format!("{sig}trailing words\n").into_bytes(),
        ),
        ("no line feed after END", sig.trim_end().as_bytes().to_vec()),
        (
            "text on the END line",
            sig.replace(
                "-----END SSH SIGNATURE-----",
                "-----END SSH SIGNATURE----- x",
            )
            .into_bytes(),
        ),
        ("one base64 line", rewrap(&body, 100_000).into_bytes()),
        ("64 columns", rewrap(&body, 64).into_bytes()),
        (
            "indented base64 lines",
            rewrap(&body, 70)
                .replace("\n", "\n ")
                .replace(" -----END", "-----END")
                .into_bytes(),
        ),
        (
            "a tab inside the base64",
            rewrap(&body, 70).replacen('A', "\tA", 1).into_bytes(),
        ),
        (
            "padding removed",
            rewrap(body.trim_end_matches('='), 70).into_bytes(),
        ),
        (
            "a stray character",
            rewrap(&format!("{body}!"), 70).into_bytes(),
        ),
        (
            "a NUL inside",
            rewrap(&body, 70).replacen('A', "\0A", 1).into_bytes(),
        ),
        (
            "trailing bytes in the blob",
            rewrap(&trailing, 70).into_bytes(),
        ),
        (
            "two armors, trusted first",
            format!("{sig}{stranger}").into_bytes(),
        ),
        (
            "two armors, stranger first",
            format!("{stranger}{sig}").into_bytes(),
        ),
        (
            "no END line",
            sig.replace("-----END SSH SIGNATURE-----\n", "")
                .into_bytes(),
        ),
        (
            "lowercase header",
            sig.replacen("BEGIN SSH", "begin ssh", 1).into_bytes(),
        ),
    ];
    let (mut good, mut bad) = (0, 0);
    let now = jiff::Timestamp::now();
    for (shape, bytes) in cases {
        let stock = ssh_keygen_verify(&r, &r.allowed, ns, &bytes, message);
        let ours = sshsig::verify(&bytes, message, ns, &r.signers, now);
        assert_eq!(
            ours.is_ok(),
            stock,
            "{shape}: ssh-keygen -Y verify says {stock}, we say {ours:?}"
        );
        if stock {
            good += 1;
        } else {
            bad += 1;
        }
    }
    assert!(good >= 5 && bad >= 5, "{good} good, {bad} bad");
}

// ---------------------------------------------------------------------------------------------
// 5. allowed_signers options.
// ---------------------------------------------------------------------------------------------

#[test]
fn allowed_signers_lines_are_judged_as_ssh_keygen_judges_them() {
    let r = Repo::new();
    let public = std::fs::read_to_string(r.key.with_extension("pub")).expect("pub");
    let public = public.trim();
    let ns = "vworkspace-release";
    let message = b"release\n";
    let sig = r.ssh_sign(&r.key, ns, message);
    let lines = [
        "valid-before=\"20990101\"".to_owned(),
        "valid-before=\"20200101\"".to_owned(),
        "valid-before=\"20200101\",valid-before=\"20990101\"".to_owned(),
        "valid-before=\"20990101\",valid-before=\"20200101\"".to_owned(),
        "VALID-BEFORE=\"20200101\",valid-before=\"20990101\"".to_owned(),
        "valid-after=\"20200101\",valid-after=\"20990101\"".to_owned(),
        "valid-after=\"20200101\"".to_owned(),
        "namespaces=\"git\",namespaces=\"vworkspace-release\"".to_owned(),
        "namespaces=\"vworkspace-release\",namespaces=\"vworkspace-release\"".to_owned(),
        "namespaces=\"vworkspace-release\"".to_owned(),
        "namespaces=\"vworkspace-release\",valid-after=\"20200101\",valid-before=\"20990101\""
            .to_owned(),
    ];
    let (mut good, mut bad) = (0, 0);
    for options in lines {
        let text = format!("me {options} {public}\n");
        let file = r.root.join("candidate_signers");
        std::fs::write(&file, &text).expect("write");
        let stock = ssh_keygen_verify(&r, &file, ns, sig.as_bytes(), message);
        let ours = AllowedSigners::parse(&text, "candidate_signers")
            .map_err(|e| e.to_string())
            .and_then(|s| {
                sshsig::verify(sig.as_bytes(), message, ns, &s, jiff::Timestamp::now())
                    .map_err(|e| e.to_string())
            });
        assert_eq!(
            ours.is_ok(),
            stock,
            "{options}: ssh-keygen says {stock}, we say {ours:?}"
        );
        if stock {
            good += 1;
        } else {
            bad += 1;
        }
    }
    assert!(good >= 3 && bad >= 4, "{good} good, {bad} bad");
    // The refusal names the file, the line and the option.
    let err = AllowedSigners::parse(
        &format!("me valid-before=\"20200101\",valid-before=\"20990101\" {public}\n"),
        "release_signers",
    )
    .expect_err("repeated option");
    let text = err.to_string();
    assert!(
        text.starts_with("release_signers:1: ") && text.contains("valid-before"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. YAML: merge keys, and plain scalars as YAML 1.2's core schema reads them.
// ---------------------------------------------------------------------------------------------

/// A plain scalar's reading under the YAML 1.2 core schema (spec 1.2.2, section 10.3.2), written
/// down here independently of the loader: the oracle for the loader's scalars.
#[derive(Debug, Clone, PartialEq)]
enum Core {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str,
}

fn core_schema(s: &str) -> Core {
    fn all(s: &str, radix: u32) -> bool {
        !s.is_empty() && s.chars().all(|c| c.is_digit(radix))
    }
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Core::Null,
        "true" | "True" | "TRUE" => return Core::Bool(true),
        "false" | "False" | "FALSE" => return Core::Bool(false),
        ".nan" | ".NaN" | ".NAN" => return Core::Float(f64::NAN),
        _ => {}
    }
    // int: [-+]? [0-9]+ | 0o [0-7]+ | 0x [0-9a-fA-F]+
    if let Some(d) = s.strip_prefix("0o").filter(|d| all(d, 8)) {
        return i128::from_str_radix(d, 8).map_or(Core::Str, Core::Int);
    }
    if let Some(d) = s.strip_prefix("0x").filter(|d| all(d, 16)) {
        return i128::from_str_radix(d, 16).map_or(Core::Str, Core::Int);
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if all(unsigned, 10) {
        return s.parse::<i128>().map_or(Core::Str, Core::Int);
    }
    // float: [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? | [-+]? \.(inf|Inf|INF)
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return Core::Float(if s.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => all(frac, 10),
        Some((int, frac)) => all(int, 10) && (frac.is_empty() || all(frac, 10)),
        None => all(mantissa, 10),
    };
    let exponent_ok = exponent.is_none_or(|e| all(e.strip_prefix(['-', '+']).unwrap_or(e), 10));
    if mantissa_ok && exponent_ok {
        return s.parse::<f64>().map_or(Core::Str, Core::Float);
    }
    Core::Str
}

/// A decimal integer with a redundant leading zero (`0755`, `-007`): the documented exception, kept
/// as the string the reviewer read (YAML 1.1 readers take it as octal, YAML 1.2 as decimal).
fn leading_zero_decimal(s: &str) -> bool {
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    unsigned.len() > 1 && unsigned.starts_with('0') && unsigned.chars().all(|c| c.is_ascii_digit())
}

#[test]
fn plain_scalars_resolve_as_the_yaml_1_2_core_schema_or_are_refused() {
    use vworkspace_core::yaml::{YamlError, parse_document};
    let scalars = [
        // The forms: YAML 1.1 numbers, YAML 1.2 strings.
        "1_000",
        "0b101",
        "-0x10",
        "+0x10",
        "0X1F",
        "0O17",
        "0B1",
        "-0o17",
        "0b1_0",
        "1__0",
        "1_000.5", // Core integers and floats.
        "0x1F",
        "0o17",
        "12",
        "+12",
        "-12",
        "0",
        "-0",
        "1.5",
        ".5",
        "1.",
        "+.5",
        "1e3",
        "1E-3",
        "-1.5e+3",
        "18446744073709551615",
        "-9223372036854775808",
        // Leading zeros: the documented exception.
        "0755",
        "-007",
        "00", // Non-finite: refused.
        ".inf",
        "-.Inf",
        ".NaN", // Strings in the core schema.
        "inf",
        "nan",
        "1e",
        "0x",
        "0x1G",
        "0o8",
        "12:30",
        "190:20:30",
        "2026-01-01",
        "0.1.2",
        "1,000",
        "tRuE",
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "nULL",
        "0xffffffffffffffffff",
        // Booleans and nulls.
        "true",
        "True",
        "TRUE",
        "false",
        "FALSE",
        "null",
        "Null",
        "NULL",
        "~",
        "",
    ];
    let mut refused = Vec::new();
    for s in scalars {
        let doc = format!("v: {s}\n");
        let core = core_schema(s);
        match parse_document(doc.as_bytes(), "f.yaml", &Limits::default()) {
            Ok(value) => {
                let v = &value["v"];
                let agrees = match &core {
                    _ if leading_zero_decimal(s) => v == &serde_json::json!(s),
                    Core::Null => v.is_null(),
                    Core::Bool(b) => v == &serde_json::json!(b),
                    Core::Int(i) => {
                        v.as_i64().map(i128::from) == Some(*i)
                            || v.as_u64().map(i128::from) == Some(*i)
                    }
                    Core::Float(f) => v.as_f64() == Some(*f) && v.is_f64(),
                    Core::Str => v == &serde_json::json!(s),
                };
                assert!(
                    agrees,
                    "{s:?}: YAML 1.2 core reads {core:?}, the loader {v}"
                );
            }
            Err(e) => {
                // A refusal is allowed only where readers disagree or JSON cannot hold the value.
                let allowed = match &core {
                    Core::Float(f) => !f.is_finite(),
                    Core::Int(i) => i64::try_from(*i).is_err() && u64::try_from(*i).is_err(),
                    Core::Str => matches!(e, YamlError::AmbiguousScalar { .. }),
                    _ => false,
                };
                assert!(
                    allowed,
                    "{s:?}: YAML 1.2 core reads {core:?}, the loader refused: {e}"
                );
                refused.push(s);
            }
        }
    }
    // The three forms are never numbers.
    for s in ["1_000", "0b101", "-0x10"] {
        let v = parse_document(format!("v: {s}\n").as_bytes(), "f", &Limits::default());
        assert!(!matches!(&v, Ok(v) if v["v"].is_number()), "{s}: {v:?}");
    }
    // An ambiguous spelling is refused with its position, also as a key and in flow style.
    let err =
        parse_document(b"a:\n  b: [1, 0b101]\n", "f.yaml", &Limits::default()).expect_err("0b101");
    assert_eq!(
        err.to_string(),
        "f.yaml: plain scalar \"0b101\" at line 2, column 10 is a string in YAML 1.2 but a number to YAML 1.1 readers; quote it, or write the number in decimal"
    );
    assert!(refused.contains(&"0b101") && refused.contains(&"-0x10"));
    // Quoted, the same text is a string for every reader.
    let quoted =
        parse_document(b"v: '0b101'\nw: \"-0x10\"\n", "f", &Limits::default()).expect("quoted");
    assert_eq!(quoted, serde_json::json!({"v": "0b101", "w": "-0x10"}));
}

#[test]
fn merge_keys_are_refused_in_intent_and_in_the_release_manifest() {
    use vworkspace_core::yaml::{YamlError, parse_document};
    let shapes = [
        "base: &b {serial: 1}\nrelease:\n  <<: *b\n",
        "a: &a {serial: 1}\nb: &b {serial: 9}\nrelease:\n  <<: *a\n  <<: *b\n",
        "release:\n  <<: ~\n",
        "a: &a {x: 1}\nrelease:\n  !!merge <<: *a\n",
        "a: &a {x: 1}\nrelease:\n  <<: [*a]\n",
    ];
    for doc in shapes {
        let err = parse_document(doc.as_bytes(), "f.yaml", &Limits::default()).expect_err(doc);
        assert!(
            matches!(&err, YamlError::MergeKey { at: Some(_), .. }),
            "{doc:?}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with("f.yaml: merge key `<<` at line"),
            "{err}"
        );
    }
    // Quoted, `<<` is an ordinary key for YAML 1.1 and 1.2 readers alike.
    assert_eq!(
        parse_document(b"\"<<\": x\n", "f", &Limits::default()).expect("quoted key"),
        serde_json::json!({"<<": "x"})
    );
    // In release.yaml the refusal names the file: the serial and expiry are what signers signed.
    let manifest = "apiVersion: gitops.vworkspace.io/v1alpha1\nkind: Release\ncluster: demo\nold: &old {serial: 1}\n<<: *old\nserial: 7\nexpires: \"2026-07-01T00:00:00Z\"\nfiles: {}\n";
    let err = vworkspace_core::trust::release::parse_manifest(
        manifest.as_bytes(),
        "demo",
        &Limits::default(),
    )
    .expect_err("merge key in the manifest");
    assert!(
        err.to_string()
            .starts_with("clusters/demo/release.yaml: clusters/demo/release.yaml: merge key"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. history: all, at a date nobody can check.
// ---------------------------------------------------------------------------------------------

/// An intermediate commit is judged at the earlier of its committer date and the verifier's clock:
/// `git verify-commit` accepts a future-dated commit by a key whose `valid-after` is in the future
/// (it judges at the commit's own date); we refuse it. A past-dated commit by a key since rotated
/// out is accepted by both.
#[test]
fn history_all_judges_each_commit_at_the_earlier_of_its_date_and_the_clock() {
    use vworkspace_core::crd::HistoryPolicy;
    use vworkspace_core::trust::history::{self, HistoryCheck, HistoryError};
    let r = Repo::new();
    let old = r.root.join("old");
    let future = r.root.join("future");
    let me = std::fs::read_to_string(r.key.with_extension("pub")).expect("pub");
    let old_pub = ssh_keygen(&r.root, &old, "old");
    let future_pub = ssh_keygen(&r.root, &future, "future");
    let text = format!(
        "me namespaces=\"git\" {}\nold namespaces=\"git\",valid-before=\"20250101Z\" {old_pub}\nfuture namespaces=\"git\",valid-after=\"20990101Z\" {future_pub}\n",
        me.trim()
    );
    std::fs::write(&r.allowed, &text).expect("signers");
    let signers = AllowedSigners::parse(&text, "commit_signers").expect("parse");
    let tree = r.root_for(&r.raw_tree(&[]));
    let base = r.signed_commit_by(&tree, &[], &r.key, 1_700_000_000);
    let rotated = r.signed_commit_by(&tree, &[&base], &old, 1_710_000_000); // 2024, before valid-before
    let future_dated = r.signed_commit_by(&tree, &[&rotated], &future, 4_102_444_800 + 86_400); // 2100
    let head_ok = r.signed_commit_by(&tree, &[&rotated], &r.key, 1_750_000_000);
    let head_bad = r.signed_commit_by(&tree, &[&future_dated], &r.key, 1_750_000_000);

    // git judges each commit at its own date: both intermediate commits pass git verify-commit.
    assert!(r.git_verify_commit(&rotated));
    assert!(r.git_verify_commit(&future_dated));

    let repo = LocalRepository::open(&r.repo()).expect("open");
    let policy = HistoryCheck {
        last_commit: Some(base.clone()),
        policy: HistoryPolicy::All,
        allow_rewrite: false,
    };
    let now = jiff::Timestamp::now();
    history::check(&repo, &head_ok, &policy, &signers, now)
        .expect("a past-dated commit by a key valid at its date passes");
    let err = history::check(&repo, &head_bad, &policy, &signers, now)
        .expect_err("a future-dated commit by a not-yet-valid key");
    match &err {
        HistoryError::UnsignedHistory { problems, .. } => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].contains(&future_dated) && problems[0].contains("is not valid before"),
                "{problems:?}"
            );
        }
        other => panic!("{other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Bound values at dotted keys.
// ---------------------------------------------------------------------------------------------

#[test]
fn bound_values_under_a_dotted_key_are_refused_whatever_else_is_in_the_tree() {
    use vworkspace_core::limits::Limits;
    use vworkspace_core::secrets::{
        self, Binding, Identities, ValueContext, ValueErrorKind, ValuesPolicy,
    };
    let (secret, recipient) = secrets::generate();
    let ids = Identities::parse(secret.expose_str().expect("utf8"), "id").expect("identity");
    let at = ValueContext {
        cluster: "demo".into(),
        namespace: "org-a".into(),
        instance: "app".into(),
    };
    let bound = |path: &str| {
        secrets::encrypt(
            b"s3cret",
            &recipient,
            Some(&Binding {
                cluster: "demo".into(),
                namespace: "org-a".into(),
                instance: "app".into(),
                path: path.into(),
            }),
        )
        .expect("encrypt")
    };
    let v = bound("a.b");
    let check = |values: serde_json::Value| {
        secrets::decrypt_values(
            &values,
            &at,
            &ids,
            &ValuesPolicy::default(),
            &Limits::default(),
        )
        .map(|d| d.len())
    };
    // Nested as bound: accepted.
    assert_eq!(
        check(serde_json::json!({"a": {"b": v}})).expect("nested"),
        1
    );
    // Under the key "a.b" alone: refused.
    // Under "a.b" with a copy at a.b: the copy is fine, the dotted one is still refused.
    for values in [
        serde_json::json!({"a.b": v}),
        serde_json::json!({"a.b": v, "a": {"b": v}}),
        serde_json::json!({"x.y": {"a": {"b": v}}, "a": {"b": v}}),
    ] {
        let errors = check(values.clone()).expect_err("dotted key");
        assert_eq!(errors.len(), 1, "{values}: {errors:?}");
        assert_eq!(
            errors[0].kind,
            ValueErrorKind::UnaddressablePath,
            "{values}"
        );
        assert!(errors[0].to_string().contains("contains '.'"));
        let form = secrets::check_values_form(&values, &at, &Limits::default())
            .expect_err("form check refuses too");
        assert_eq!(form[0].kind, ValueErrorKind::UnaddressablePath);
    }
    // Plain values under dotted keys (annotations, ingress hosts) stay allowed.
    assert_eq!(
        check(serde_json::json!({
            "podAnnotations": {"prometheus.io/scrape": "true"},
            "a": {"b": v}
        }))
        .expect("plain dotted keys"),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// 12. expires: RFC 3339 strictly, and a sane range.
// ---------------------------------------------------------------------------------------------

/// Each shape's RFC 3339 verdict (section 5.6's grammar, written down per case) next to ours; every
/// instant we accept is the one GNU `date` reads from the same text.
#[test]
fn expires_is_read_as_rfc_3339_and_nothing_else() {
    use vworkspace_core::trust::release::parse_rfc3339;
    // (text, is it an RFC 3339 date-time with a year in 1970..=9999)
    let cases = [
        ("2026-12-22T00:00:00Z", true),
        ("2026-12-22T00:00:00.5Z", true),
        ("2026-12-22T00:00:00.123456789+02:00", true),
        ("2026-12-22t00:00:00z", true),
        ("2026-12-22T00:00:00-00:00", true),
        ("2026-12-22T00:00:00Z[Europe/Paris]", false),
        ("2026-12-22T00:00:00+01:00[Europe/Paris]", false),
        ("2026-12-22T00:00:00", false),
        ("2026-12-22 00:00:00Z", false),
        ("2026-12-22", false),
        ("2026-12-22T00:00Z", false),
        ("2026-12-22T00:00:00+0200", false),
        ("2026-12-22T00:00:00+02", false),
        ("+002026-12-22T00:00:00Z", false),
        ("20261222T000000Z", false),
        ("1969-12-31T23:59:59Z", false),
        ("0001-01-01T00:00:00Z", false),
        ("2026-12-22T00:00:00.Z", false),
        (" 2026-12-22T00:00:00Z", false),
        ("2026-12-22T00:00:00Z ", false),
    ];
    for (text, rfc3339) in cases {
        let ours = parse_rfc3339(text);
        assert_eq!(ours.is_ok(), rfc3339, "{text:?}: {ours:?}");
        if let Ok(ts) = ours {
            let out = tool("date", Path::new("/"))
                .args(["-u", "+%s.%N", "-d", text])
                .output()
                .expect("date runs");
            assert!(out.status.success(), "date -d {text:?}");
            let stock: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("seconds");
            let ours = ts.as_second() as f64 + f64::from(ts.subsec_nanosecond()) / 1e9;
            assert!(
                (stock - ours).abs() < 1e-6,
                "{text}: date says {stock}, we {ours}"
            );
        }
    }
    // The refusal says what is wrong with the shape.
    let err = parse_rfc3339("2026-12-22T00:00:00Z[Europe/Paris]").expect_err("suffix");
    assert!(err.contains("[suffix]"), "{err}");
    let err = parse_rfc3339("1969-12-31T23:59:59Z").expect_err("year");
    assert!(err.contains("1969"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 11. What `release` hashes.
// ---------------------------------------------------------------------------------------------

/// With `core.autocrlf=true` (Git for Windows' default) the work tree holds CRLF copies and git
/// stores LF: `release` lists exactly the blobs `git ls-files` tracks, each hashed as `git cat-file`
/// returns it, so the manifest matches the commit; untracked and ignored files are not listed, and
/// an unstaged change is refused by name.
#[test]
fn release_hashes_the_blobs_git_will_commit() {
    let r = Repo::new();
    let bin = env!("CARGO_BIN_EXE_vworkspace-operator");
    r.git(&["config", "core.autocrlf", "true"]);
    let dir = r
        .repo()
        .join("clusters/demo/namespaces/org-a/applicationinstances");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("app.yaml"),
        "kind: ApplicationInstance\r\nspec: {}\r\n",
    )
    .expect("app");
    std::fs::write(r.repo().join(".gitignore"), "*.tmp\n").expect("ignore");
    r.git(&["add", "-A"]);
    std::fs::write(dir.join("notes.tmp"), "ignored\n").expect("ignored");
    let release = |r: &Repo| {
        tool(bin, &r.root)
            .arg("release")
            // The intent here is a bare shape (what is hashed is the point, not the schema).
            .arg("--unchecked")
            .arg("--repo")
            .arg(r.repo())
            .args(["--cluster", "demo", "--key"])
            .arg(&r.key)
            .output()
            .expect("release runs")
    };
    let out = release(&r);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest =
        std::fs::read_to_string(r.repo().join("clusters/demo/release.yaml")).expect("manifest");
    let files = vworkspace_core::trust::release::parse_manifest(
        manifest.as_bytes(),
        "demo",
        &Limits::default(),
    )
    .expect("manifest parses")
    .files;
    // git's reading: the tracked files under the cluster directory and their stored bytes.
    let tracked = r.git(&["ls-files", "--", "clusters/demo/"]);
    let mut listed = 0;
    for path in tracked.lines() {
        let relative = path.trim_start_matches("clusters/demo/");
        if relative == "release.yaml" || relative.starts_with("release.sigs/") {
            continue;
        }
        let stored = r
            .git_output(&["cat-file", "blob", &format!(":{path}")])
            .stdout;
        assert!(!stored.contains(&b'\r'), "git stores LF");
        let digest = vworkspace_core::trust::release::sha256_digest(&stored);
        assert_eq!(
            files.get(relative),
            Some(&digest),
            "{relative}:\n{manifest}"
        );
        listed += 1;
    }
    assert_eq!(listed, 1);
    assert_eq!(
        files.len(),
        listed,
        "only tracked files are listed:\n{manifest}"
    );

    // An untracked file, or a change not staged, is refused by name.
    std::fs::write(dir.join("extra.yaml"), "x: 1\n").expect("untracked");
    let out = release(&r);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("extra.yaml: untracked"), "{stderr}");
    std::fs::remove_file(dir.join("extra.yaml")).expect("rm");
    std::fs::write(
        dir.join("app.yaml"),
        "kind: ApplicationInstance\r\nspec: {x: 1}\r\n",
    )
    .expect("edit");
    let out = release(&r);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("app.yaml: changed in the work tree but not staged"),
        "{stderr}"
    );
}

/// What `release` reads from the index, in the two shapes the first version got wrong (found when
/// `release`'s own checks met it): two files with the same contents (one blob, read for both) and a
/// staged rename (`git status -z` gives the source path as a field of its own).
#[test]
fn release_reads_shared_blobs_and_staged_renames_from_the_index() {
    use vworkspace_core::repository::TreeEntry;
    use vworkspace_operator::authoring::checkout::read_cluster_index;
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(repo)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    let ops = repo.join("clusters/demo/namespaces/a/operations");
    std::fs::create_dir_all(&ops).expect("dirs");
    std::fs::write(ops.join("one.yaml"), "same: contents\n").expect("one");
    std::fs::write(ops.join("two.yaml"), "same: contents\n").expect("two");
    std::fs::write(ops.join("old.yaml"), "moved: soon\n").expect("old");
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
    git(&[
        "mv",
        "clusters/demo/namespaces/a/operations/old.yaml",
        "clusters/demo/namespaces/a/operations/new.yaml",
    ]);
    let tree = read_cluster_index(repo, "demo", &Limits::default())
        .expect("the index reads")
        .expect("a git work tree");
    let file = |p: &str| match tree.entries().get(p) {
        Some(TreeEntry::File(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("{p}: {other:?}"),
    };
    assert_eq!(file("namespaces/a/operations/one.yaml"), "same: contents\n");
    assert_eq!(file("namespaces/a/operations/two.yaml"), "same: contents\n");
    assert_eq!(file("namespaces/a/operations/new.yaml"), "moved: soon\n");
    assert!(
        !tree
            .entries()
            .contains_key("namespaces/a/operations/old.yaml")
    );
    // git agrees on what the next commit holds.
    let listed = Command::new("git")
        .current_dir(repo)
        .args(["ls-files", "clusters/demo"])
        .output()
        .expect("ls-files");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.lines().count(), tree.entries().len(), "{listed}");
}

/// Many files: git's answers (several hundred KiB) outgrow the pipe while the names are still being
/// written to it (the first version wrote every name first, then read, and never finished).
#[test]
fn release_reads_an_index_larger_than_a_pipe() {
    use vworkspace_operator::authoring::checkout::read_cluster_index;
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(repo)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(args)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    let ops = repo.join("clusters/demo/namespaces/a/operations");
    std::fs::create_dir_all(&ops).expect("dirs");
    for i in 0..400 {
        let body = format!("n: {i}\npad: {}\n", "x".repeat(1024));
        std::fs::write(ops.join(format!("op-{i}.yaml")), body).expect("write");
    }
    git(&["add", "-A"]);
    let (done, finished) = std::sync::mpsc::channel();
    let root = repo.to_owned();
    std::thread::spawn(move || {
        let _ = done.send(
            read_cluster_index(&root, "demo", &Limits::default())
                .map(|t| t.map(|t| t.entries().len())),
        );
    });
    let read = finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the index is read (no deadlock)")
        .expect("read")
        .expect("a git work tree");
    assert_eq!(read, 400);
}
