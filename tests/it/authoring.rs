//! Issue 15: authoring and review. The CLI as a new user meets it: what it refuses, what it says
//! (golden messages, with the temporary root replaced by `$ROOT`), and that it never echoes key
//! material or plaintext. Real git, ssh-keygen and age, as everywhere.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::*;

const NEXTCLOUD: &str = "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml";

fn bin(args: &[&str], dir: &Path, stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    if let Some(input) = stdin {
        // A command that refuses its flags exits before reading stdin.
        let _ = child.stdin.take().expect("stdin").write_all(input);
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stdout and stderr with the fixture's root replaced by `$ROOT`.
fn golden(out: &Output, root: &Path) -> (String, String) {
    let root = std::fs::canonicalize(root).expect("root");
    let fix = |t: String| t.replace(&root.display().to_string(), "$ROOT");
    (fix(stdout(out)), fix(stderr(out)))
}

fn assert_clean(out: &Output) {
    for text in [stdout(out), stderr(out)] {
        assert!(
            !text.contains("PLAINTEXT-MARKER"),
            "plaintext leaked: {text}"
        );
        assert!(!text.contains("AGE-SECRET-KEY-1"), "key leaked: {text}");
        assert!(!text.starts_with("Error:"), "anyhow-style error: {text}");
        assert!(!text.contains("stack backtrace"), "backtrace: {text}");
    }
}

/// The fixture's verify flags without --identity, as a pull request's CI runs it.
fn trust_flags(f: &Fixture) -> Vec<String> {
    vec![
        "--cluster".into(),
        "demo".into(),
        "--threshold".into(),
        "2".into(),
        "--allowed-signers".into(),
        f.path("commit_signers").display().to_string(),
        "--release-signers".into(),
        f.path("release_signers").display().to_string(),
    ]
}

fn with<'a>(head: &[&'a str], rest: &'a [String]) -> Vec<&'a str> {
    head.iter()
        .copied()
        .chain(rest.iter().map(String::as_str))
        .collect()
}

fn release_odoo(f: &Fixture, extra: &[&str]) -> Output {
    // `release` hashes what git will commit: stage the edits first, as an author does.
    f.git(&["add", "-A"]);
    let key = f.path("release-odoo").display().to_string();
    let mut args = vec!["release", "--cluster", "demo", "--key", key.as_str()];
    args.extend_from_slice(extra);
    bin(&args, &f.repo, None)
}

#[test]
fn encrypt_never_echoes_a_secret_key_given_as_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = "AGE-SECRET-KEY-1QQPQZUPSRY5LTP6KTGUPCR3AEZGT3KHKXYD4XU9SNCKAXSLZJD3QM2QXZ9";
    let out = bin(&["encrypt", "--recipient", key], dir.path(), Some(b"x"));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "error: the recipient given is an age secret key (AGE-SECRET-KEY-1...), not a recipient; it was not printed. Give the public recipient (age1...): `age-keygen -y IDENTITY_FILE` prints it. Treat the key as exposed if it went into a shared log or shell history\n"
    );
    assert!(!stderr(&out).contains("QQPQZUPSRY5"));
    // Lowercase, or buried in whitespace: the same.
    let out = bin(
        &[
            "encrypt",
            "--recipient",
            &format!("  {}\n", key.to_lowercase()),
        ],
        dir.path(),
        Some(b"x"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !stderr(&out).to_lowercase().contains("qqpqzupsry5"),
        "{}",
        stderr(&out)
    );
    // Something that is not a key at all is not echoed either; a mistyped age1 recipient (public) is.
    let out = bin(
        &["encrypt", "--recipient", "hunter2-PLAINTEXT-MARKER"],
        dir.path(),
        Some(b"x"),
    );
    assert_eq!(
        stderr(&out),
        "error: recipient (the 24 characters given, not shown) is not an age X25519 recipient (age1...)\n"
    );
    let out = bin(
        &["encrypt", "--recipient", "age1nope"],
        dir.path(),
        Some(b"x"),
    );
    assert_eq!(
        stderr(&out),
        "error: recipient \"age1nope\" is not an age X25519 recipient (age1...)\n"
    );
}

#[test]
fn require_bound_values_without_identity_is_a_usage_error() {
    let f = fixture();
    let flags = trust_flags(&f);
    let out = bin(
        &with(&["verify", "--require-bound-values"], &flags),
        &f.repo,
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "error: --require-bound-values needs --identity: a binding is sealed inside the ciphertext, so only the cluster's key can check it. Without the key (a pull request's CI) drop the flag: the form of every value is still checked, and the operator checks every binding before it applies anything\n"
    );
    // With the key it checks, and the fixture's plain `age -a` value is refused by name.
    let out = f.verify(&["--require-bound-values"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("refused ValuesInvalid: clusters/demo/namespaces/org-vault/applicationinstances/vaultwarden.yaml: spec.values.adminToken.value: value is not bound"),
        "{}",
        stdout(&out)
    );
    assert_clean(&out);
}

#[test]
fn release_refuses_before_signing_what_verify_would_refuse() {
    let f = fixture();
    let manifest = f.repo.join("clusters/demo/release.yaml");
    let before = std::fs::read(&manifest).expect("manifest");
    let sigs = |f: &Fixture| {
        let mut v: Vec<_> = std::fs::read_dir(f.repo.join("clusters/demo/release.sigs"))
            .expect("sigs")
            .map(|e| std::fs::read(e.expect("entry").path()).expect("sig"))
            .collect();
        v.sort();
        v
    };
    let sigs_before = sigs(&f);
    // A literal credential, a file outside the layout, a bad name and a wrong folder.
    f.write(NEXTCLOUD, &nextcloud("hunter2-PLAINTEXT-MARKER-literal"));
    f.write("clusters/demo/README.md", "notes\n");
    f.write("clusters/demo/.notes.yaml", "a: 1\n");
    f.write("clusters/demo/namespaces/Org_Bad/operations/x.yaml", BACKUP);
    f.write(
        "clusters/demo/namespaces/org-myteam/deployments/web.yaml",
        BACKUP,
    );
    let out = release_odoo(&f, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (text, err) = golden(&out, &f.root);
    assert_eq!(err, "");
    assert_eq!(
        text,
        "refused IntentInvalid: clusters/demo/.notes.yaml: not part of the layout: only namespaces/<namespace>/applicationinstances/<name>.yaml, namespaces/<namespace>/operations/<name>.yaml, release.yaml and release.sigs/<name>.sig belong here\n\
refused IntentInvalid: clusters/demo/README.md: not part of the layout: only namespaces/<namespace>/applicationinstances/<name>.yaml, namespaces/<namespace>/operations/<name>.yaml, release.yaml and release.sigs/<name>.sig belong here\n\
refused IntentInvalid: clusters/demo/namespaces/Org_Bad/operations/x.yaml: namespace \"Org_Bad\" is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)\n\
refused IntentInvalid: clusters/demo/namespaces/org-myteam/deployments/web.yaml: not part of the layout: only namespaces/<namespace>/applicationinstances/<name>.yaml, namespaces/<namespace>/operations/<name>.yaml, release.yaml and release.sigs/<name>.sig belong here\n\
nothing was written or signed: fix the files above, then run release again\n"
    );
    assert_eq!(std::fs::read(&manifest).expect("manifest"), before);
    assert_eq!(sigs(&f), sigs_before);
    // Layout fixed, the literal credential remains: refused too, naming the file and the fix.
    for p in [
        "clusters/demo/README.md",
        "clusters/demo/.notes.yaml",
        "clusters/demo/namespaces/Org_Bad/operations/x.yaml",
        "clusters/demo/namespaces/org-myteam/deployments/web.yaml",
    ] {
        std::fs::remove_file(f.repo.join(p)).expect("rm");
    }
    let out = release_odoo(&f, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        golden(&out, &f.root).0,
        "refused ValuesInvalid: clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml: spec.values.nextcloud.mail.smtp.password: a literal credential; encrypt it, or reference a Secret with secretRef (`vworkspace-operator encrypt --recipient <the cluster's age1... recipient> --in-place clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml --path nextcloud.mail.smtp.password`)\n\
nothing was written or signed: fix the files above, then run release again\n"
    );
    assert_eq!(std::fs::read(&manifest).expect("manifest"), before);
    assert_clean(&out);
    // The fix the message gives works: encrypted in place, released, committed, verified.
    let enc = bin(
        &[
            "encrypt",
            "--recipient",
            &f.recipient,
            "--in-place",
            NEXTCLOUD,
            "--path",
            "nextcloud.mail.smtp.password",
        ],
        &f.repo,
        Some(SMTP_PASSWORD.as_bytes()),
    );
    assert_eq!(enc.status.code(), Some(0), "{}", stderr(&enc));
    f.release(&[]);
    f.commit("encrypted");
    let out = f.verify(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_clean(&out);
}

#[test]
fn messages_say_what_was_wrong_in_one_line() {
    let f = fixture();
    let flags = trust_flags(&f);
    // version: 2.10 is read as 2.1: the line and the quoting are named.
    let text = std::fs::read_to_string(f.repo.join(NEXTCLOUD)).expect("read");
    f.write(NEXTCLOUD, &text.replace("version: 6.6.4", "version: 2.10"));
    let out = bin(&with(&["verify", "--worktree"], &flags[..2]), &f.repo, None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "refused IntentInvalid: clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml: does not match its CRD type: invalid type: floating point `2.1`, expected a string; line 9: YAML reads `version: 2.10` as the number 2.1: quote it, `version: \"2.10\"`\n"
    );
    // A typo in a field: named with its line and column.
    f.write(
        NEXTCLOUD,
        &text.replace("  chart:\n", "  chartt: 1\n  chart:\n"),
    );
    let out = bin(&with(&["verify", "--worktree"], &flags[..2]), &f.repo, None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "refused IntentInvalid: clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml: does not match its CRD type: unknown field `chartt`, expected one of `chart`, `releaseName`, `values`, `suspend` (line 6, column 3)\n"
    );
    f.write(NEXTCLOUD, &text);
    // --expires 0s
    let out = release_odoo(&f, &["--expires", "0s"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: --expires \"0s\": must be longer than zero (a zero duration is already over); for example 30s, 12h or 7d\n"
    );
    // --ref HEAD~5 on a one-commit history.
    let out = bin(&with(&["verify", "--ref", "HEAD~5"], &flags), &f.repo, None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "refused FetchFailed: revision HEAD~5 does not resolve to a commit: no commit \"HEAD~5\" in this repository (a branch, a tag, a commit id, or HEAD~N within the history; `git log --oneline` lists the commits)\n"
    );
    // A .pub file given as allowed_signers.
    let pubkey = f.path("committer.pub").display().to_string();
    let mut pub_flags = flags.clone();
    pub_flags[5] = pubkey;
    let out = bin(&with(&["verify"], &pub_flags), &f.repo, None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        golden(&out, &f.root).1,
        "error: --allowed-signers $ROOT/committer.pub:1: this is a public key (a .pub file), not an allowed_signers file; each line starts with who signs, then the key: `alice@example.org namespaces=\"git\" ssh-ed25519 AAAA...` (`vworkspace-operator keygen ssh` prints these lines)\n"
    );
    // A fetch error is one line, not the transport's Debug chain.
    let out = bin(
        &with(
            &["verify", "--repo", "http://127.0.0.1:1/intent.git"],
            &flags,
        ),
        &f.repo,
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "refused FetchFailed: fetching http://127.0.0.1:1/intent.git: Transport handshake failed: Connection refused\n"
    );
    // An I/O error: one `error:` line, exit 2, no `Error:` and no backtrace under RUST_BACKTRACE=1.
    let out = bin(&["keygen", "age", "--out", "/proc/version"], &f.repo, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: /proc/version: "),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert_clean(&out);
    // A --cluster typo lists the cluster directories.
    let out = bin(
        &["verify", "--worktree", "--cluster", "dmeo"],
        &f.repo,
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        golden(&out, &f.root).1,
        "error: clusters/dmeo/ does not exist in $ROOT/repo; the cluster directories are: demo (check --cluster)\n"
    );
}

#[test]
fn a_bound_value_moved_to_another_instance_is_refused_naming_the_file() {
    let f = fixture();
    let text = std::fs::read_to_string(f.repo.join(NEXTCLOUD)).expect("read");
    // The same ciphertext, copied into another tenant's instance: it reads fine in review.
    f.write(
        "clusters/demo/namespaces/org-myteam/applicationinstances/thief.yaml",
        &text.replace("name: nextcloud\nspec", "name: thief\nspec"),
    );
    f.release(&[]);
    f.commit("copy a value");
    let out = f.verify(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "refused ValuesInvalid: clusters/demo/namespaces/org-myteam/applicationinstances/thief.yaml: spec.values.nextcloud.mail.smtp.password: value is bound to instance \"nextcloud\", not to this one (copied from another place?); re-encrypt it for this place (`vworkspace-operator encrypt --recipient <the cluster's age1... recipient> --in-place clusters/demo/namespaces/org-myteam/applicationinstances/thief.yaml --path nextcloud.mail.smtp.password`)\n"
    );
    assert_clean(&out);
}

#[test]
fn verify_worktree_checks_without_keys_and_names_a_stale_release() {
    let f = fixture();
    // From a subdirectory: --repo defaults to `.`, found upward as git does.
    let sub = f.repo.join("clusters/demo/namespaces");
    let out = bin(&["verify", "--worktree", "--cluster", "demo"], &sub, None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        stdout(&out),
        "ok      worktree clusters/demo/: 2 ApplicationInstance(s), 1 Operation(s), 2 encrypted value(s) well-formed\n\
skipped signatures, history and decryption: --worktree checks what needs no key\n"
    );
    // An edit not yet released: still passes, with the command that fixes the release.
    let text = std::fs::read_to_string(f.repo.join(NEXTCLOUD)).expect("read");
    f.write(NEXTCLOUD, &text.replace("6.6.4", "6.6.5"));
    let out = bin(
        &["verify", "--worktree", "--cluster", "demo", "-o", "json"],
        &sub,
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["result"], "passed");
    assert_eq!(doc["mode"], "worktree");
    assert_eq!(
        doc["notes"][0],
        "clusters/demo/release.yaml does not cover 1 changed file(s) (clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml); run `vworkspace-operator release --cluster demo --key <your release key>` before committing"
    );
    // A literal credential in the work tree: refused before any commit.
    f.write(NEXTCLOUD, &nextcloud("hunter2-PLAINTEXT-MARKER-x"));
    let out = bin(&["verify", "--worktree", "--cluster", "demo"], &sub, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("refused ValuesInvalid: clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml: spec.values.nextcloud.mail.smtp.password: a literal credential"), "{}", stdout(&out));
    assert_clean(&out);
}

#[test]
fn encrypt_in_place_keeps_the_file_and_binds_from_its_place() {
    let f = fixture();
    let file = "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml";
    let text = std::fs::read_to_string(f.repo.join(file)).expect("read");
    let commented = text.replace(
        "    nextcloud:\n",
        "    # the app's own settings\n    nextcloud:\n",
    );
    f.write(file, &commented);
    let out = bin(
        &[
            "encrypt",
            "--recipient",
            &f.recipient,
            "--in-place",
            file,
            "--path",
            "nextcloud.mail.smtp.user",
        ],
        &f.repo,
        Some(b"mailer\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "warning: the value on stdin ends with a newline, which is encrypted with it (echo adds one; printf %s does not)\n"
    );
    assert_eq!(
        stdout(&out),
        format!(
            "wrote spec.values.nextcloud.mail.smtp.user of {file} (bound to cluster demo, namespace org-myteam, instance nextcloud)\nnext: `vworkspace-operator release --cluster demo --key <your release key>`, then commit\n"
        )
    );
    let edited = std::fs::read_to_string(f.repo.join(file)).expect("read");
    assert!(edited.starts_with(&commented), "{edited}");
    assert!(edited.contains("    # the app's own settings\n"));
    assert!(
        edited.contains("          user: |\n            -----BEGIN AGE ENCRYPTED FILE-----\n"),
        "{edited}"
    );
    f.release(&[]);
    f.commit("a bound user");
    let out = f.verify(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("3 encrypted value(s) decrypt"),
        "{}",
        stdout(&out)
    );
    // spec.values. in --path, an empty value, a file outside the layout.
    let out = bin(
        &[
            "encrypt",
            "--recipient",
            &f.recipient,
            "--in-place",
            file,
            "--path",
            "spec.values.a.b",
        ],
        &f.repo,
        Some(b"x"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: --path \"spec.values.a.b\": the path is relative to spec.values; give \"a.b\"\n"
    );
    let out = bin(
        &["encrypt", "--recipient", &f.recipient],
        &f.repo,
        Some(b""),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stderr(&out),
        "warning: the value on stdin is empty; encrypting an empty value\n"
    );
    let out = bin(
        &[
            "encrypt",
            "--recipient",
            &f.recipient,
            "--in-place",
            "README.md",
            "--path",
            "a",
        ],
        &f.repo,
        Some(b"x"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(
            "error: --in-place README.md: not an ApplicationInstance file of the layout"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn encrypt_in_place_refuses_a_symlink_and_leaves_it_a_link() {
    let f = fixture();
    let target = "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml";
    let link = "clusters/demo/namespaces/org-myteam/applicationinstances/linked.yaml";
    std::os::unix::fs::symlink("nextcloud.yaml", f.repo.join(link)).expect("symlink");
    let before = std::fs::read(f.repo.join(target)).expect("read");
    let out = bin(
        &[
            "encrypt",
            "--recipient",
            &f.recipient,
            "--in-place",
            link,
            "--path",
            "nextcloud.mail.smtp.user",
        ],
        &f.repo,
        Some(b"mailer"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "error: --in-place {link}: a symbolic link; releases refuse links, so edit the file it points to (or replace the link by a file) and run encrypt on that\n"
        )
    );
    let meta = std::fs::symlink_metadata(f.repo.join(link)).expect("link");
    assert!(meta.file_type().is_symlink(), "still a link");
    assert_eq!(std::fs::read(f.repo.join(target)).expect("read"), before);
}

#[test]
fn a_cosigner_who_forgets_sign_only_is_stopped() {
    let f = fixture();
    let manifest = f.repo.join("clusters/demo/release.yaml");
    let before = std::fs::read(&manifest).expect("manifest");
    let key = f.path("release-engineer").display().to_string();
    let out = bin(
        &["release", "--cluster", "demo", "--key", &key],
        &f.repo,
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = golden(&out, &f.root).1;
    assert!(
        err.starts_with("error: clusters/demo/release.yaml (serial 1) already lists exactly these files and is signed by clusters/demo/release.sigs/"),
        "{err}"
    );
    assert!(err.contains("to co-sign it run `vworkspace-operator release --cluster demo --key $ROOT/release-engineer --sign-only`; to replace it anyway (a new serial, their signatures removed) add --force"), "{err}");
    assert_eq!(std::fs::read(&manifest).expect("manifest"), before);
    // --sign-only co-signs; --force rewrites and says whose signatures went.
    let out = bin(
        &[
            "release",
            "--cluster",
            "demo",
            "--key",
            &key,
            "--sign-only",
            "--name",
            "alice",
        ],
        &f.repo,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(&manifest).expect("manifest"), before);
    // What was co-signed is shown before the signature line: serial, expiry, parent, every file.
    let shown = stdout(&out);
    let parsed: serde_json::Value =
        serde_saphyr::from_str(std::str::from_utf8(&before).expect("utf8"))
            .expect("the manifest is YAML");
    let signed_at = shown
        .find("signed clusters/demo/release.yaml as")
        .expect("signed");
    let head = &shown[..signed_at];
    assert!(
        head.starts_with("co-signing clusters/demo/release.yaml:\n  cluster: demo\n  serial:  1\n"),
        "{shown}"
    );
    assert!(
        head.contains(&format!(
            "  expires: {}\n",
            parsed["expires"].as_str().expect("expires")
        )),
        "{shown}"
    );
    assert!(head.contains("  parent:  "), "{shown}");
    let files = parsed["files"].as_object().expect("files");
    assert!(!files.is_empty());
    assert!(
        head.contains(&format!("  files:   {}\n", files.len())),
        "{shown}"
    );
    for (path, digest) in files {
        assert!(
            head.contains(&format!(
                "    {path} {}\n",
                digest.as_str().expect("digest")
            )),
            "{path}: {shown}"
        );
    }
    // The serial has an upper bound (2^53 - 1): no release can take the last serial there is.
    let out = bin(
        &[
            "release",
            "--cluster",
            "demo",
            "--key",
            &key,
            "--force",
            "--serial",
            "18446744073709551615",
        ],
        &f.repo,
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        "error: serial 18446744073709551615 is above the highest serial 9007199254740991 (2^53 - 1): the operator refuses it, so that no release can take the last serial there is\n"
    );
    assert_eq!(std::fs::read(&manifest).expect("manifest"), before);
    let out = bin(
        &["release", "--cluster", "demo", "--key", &key, "--force"],
        &f.repo,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("(serial 2, "), "{text}");
    assert!(text.contains("removed clusters/demo/release.sigs/engineer.sig: it signed the previous manifest; its signer co-signs again with `vworkspace-operator release --cluster demo --key <their key> --sign-only`"), "{text}");
}

#[test]
fn demo_keep_leaves_a_repository_that_verifies_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keep = dir.path().join("demo");
    let out = bin(
        &["demo", "--keep", keep.to_str().expect("utf8")],
        dir.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    use std::os::unix::fs::PermissionsExt;
    for key in [
        "odoo-commit",
        "odoo-release",
        "platform-engineer",
        "cluster.agekey",
    ] {
        let mode = std::fs::metadata(keep.join("keys").join(key))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let text = stdout(&out);
    let command = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("vworkspace-operator verify "))
        .expect("the verify command is printed");
    let again = bin(
        &std::iter::once("verify")
            .chain(command.split(' '))
            .collect::<Vec<_>>(),
        dir.path(),
        None,
    );
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}{}",
        stdout(&again),
        stderr(&again)
    );
    assert!(
        stdout(&again).contains("ok      values: 4 encrypted value(s) decrypt")
            || stdout(&again).contains("encrypted value(s) decrypt")
    );
    // A non-empty directory is refused (the previous run's keys are never overwritten).
    let out = bin(
        &["demo", "--keep", keep.to_str().expect("utf8")],
        dir.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        golden(&out, dir.path()).1,
        "error: --keep $ROOT/demo: the directory is not empty; give a new or empty directory\n"
    );
}

#[test]
fn json_output_completion_and_version() {
    let f = fixture();
    let out = f.verify(&["-o", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["apiVersion"], "cli.vworkspace.io/v1");
    assert_eq!(doc["kind"], "VerifyResult");
    assert_eq!(doc["result"], "passed");
    assert_eq!(doc["release"]["serial"], 1);
    assert_eq!(doc["release"]["signers"].as_array().map(Vec::len), Some(2));
    assert_eq!(doc["values"]["count"], 2);
    assert_eq!(doc["values"]["decrypted"], true);
    // A refusal in JSON: reason, findings and the fix.
    let text = std::fs::read_to_string(f.repo.join(NEXTCLOUD)).expect("read");
    f.write(NEXTCLOUD, &text.replace("6.6.4", "6.6.5"));
    f.commit("forgot to release");
    let out = f.verify(&["-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["result"], "refused");
    assert_eq!(doc["reason"], "ReleaseInvalid");
    assert_eq!(
        doc["hints"][0],
        "after an edit, write and sign a fresh release, then commit it: `vworkspace-operator release --cluster demo --key <your release key>` (a co-signer then runs it with --sign-only)"
    );
    let plan = f
        .verify_cmd("plan", "demo", &["-o", "json", "--ref", "HEAD~1"])
        .output()
        .expect("plan");
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let doc: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("json");
    assert_eq!(doc["kind"], "List");
    assert_eq!(doc["items"].as_array().map(Vec::len), Some(3));
    assert!(
        !stdout(&plan).contains("BEGIN AGE"),
        "ciphertext is redacted too"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = bin(&["completion", shell], &f.repo, None);
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout(&out).contains("vworkspace-operator"), "{shell}");
        assert!(stdout(&out).contains("worktree"), "{shell}");
    }
    let out = bin(&["--version"], &f.repo, None);
    let version = stdout(&out);
    assert!(
        version.starts_with("vworkspace-operator 0.1.0 (commit "),
        "{version}"
    );
    assert!(version.contains(", built 20"), "{version}");
    // Durations for every time flag: --fetch-timeout takes 2m (and still a bare number).
    let flags = trust_flags(&f);
    let out = bin(
        &with(
            &["verify", "--fetch-timeout", "2m", "--ref", "HEAD~1"],
            &flags,
        ),
        &f.repo,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = bin(
        &with(&["verify", "--fetch-timeout", "soon"], &flags),
        &f.repo,
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn warn_expiry_warns_ahead_of_time() {
    let f = fixture();
    let out = f.verify(&["--warn-expiry", "60d"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let warning = stdout(&out)
        .lines()
        .find(|l| l.starts_with("warning "))
        .map(str::to_owned)
        .expect("a warning: the fixture's release expires in 30 days");
    assert!(
        warning.contains("clusters/demo/release.yaml: this verdict runs out at "),
        "{warning}"
    );
    assert!(warning.ends_with("publish a fresh release: `vworkspace-operator release --cluster demo --key <your release key>`"), "{warning}");
    let out = f.verify(&["--warn-expiry", "7d"]);
    assert!(!stdout(&out).contains("warning "), "{}", stdout(&out));
}

#[test]
fn reencrypt_rotates_every_value_to_a_new_recipient() {
    let f = fixture();
    run(Command::new("age-keygen")
        .arg("-o")
        .arg(f.path("new.agekey")));
    let new_recipient = run(Command::new("age-keygen")
        .arg("-y")
        .arg(f.path("new.agekey")));
    let new_recipient = stdout(&new_recipient).trim().to_owned();
    let old = f.path("cluster.agekey").display().to_string();
    let out = bin(
        &[
            "reencrypt",
            "--cluster",
            "demo",
            "--identity",
            &old,
            "--recipient",
            &new_recipient,
            "--bind",
        ],
        &f.repo,
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        stdout(&out),
        format!(
            "re-encrypted 1 value(s) in clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml\n\
re-encrypted 1 value(s) in clusters/demo/namespaces/org-vault/applicationinstances/vaultwarden.yaml\n\
re-encrypted 2 value(s) in 2 file(s) to {new_recipient}; next: `vworkspace-operator release --cluster demo --key <your release key>`, co-sign, commit; the operator needs the new identity before this release arrives\n"
        )
    );
    assert_clean(&out);
    f.release(&[]);
    f.commit("rotate the cluster key");
    // The new key opens every value, and the once-plain value is now bound.
    let new = f.path("new.agekey").display().to_string();
    let flags = trust_flags(&f);
    let out = bin(
        &with(
            &["verify", "--identity", &new, "--require-bound-values"],
            &flags,
        ),
        &f.repo,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("ok      values: 2 encrypted value(s) decrypt"),
        "{}",
        stdout(&out)
    );
    // The old key alone opens none.
    let out = f.verify(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("no identity of this cluster decrypts it"),
        "{}",
        stdout(&out)
    );
    // A wrong identity: refused, nothing written.
    let before = std::fs::read(f.repo.join(NEXTCLOUD)).expect("read");
    let out = bin(
        &[
            "reencrypt",
            "--cluster",
            "demo",
            "--identity",
            &old,
            "--recipient",
            &new_recipient,
        ],
        &f.repo,
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).ends_with("nothing was written\n"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read(f.repo.join(NEXTCLOUD)).expect("read"), before);
}

#[test]
fn the_documented_pre_commit_hook_stops_a_plaintext_credential() {
    let f = fixture();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/signatures.md"))
        .expect("docs");
    let hook = docs
        .split("```sh\n#!/bin/sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .map(|body| format!("#!/bin/sh\n{body}"))
        .expect("the hook is in docs/signatures.md");
    // The hook calls `vworkspace-operator` from PATH: ours.
    let bin_dir = f.path("bin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir");
    std::os::unix::fs::symlink(BIN, bin_dir.join("vworkspace-operator")).expect("link");
    let hook_path = f.repo.join(".git/hooks/pre-commit");
    std::fs::write(&hook_path, hook).expect("hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook_path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let commit = |f: &Fixture| {
        f.git(&["add", "-A"]);
        Command::new("git")
            .current_dir(&f.repo)
            .env("PATH", &path)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args([
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@example.org",
                "commit",
                "-q",
                "-m",
                "x",
            ])
            .output()
            .expect("git commit")
    };
    f.write(NEXTCLOUD, &nextcloud("hunter2-PLAINTEXT-MARKER-hook"));
    let out = commit(&f);
    assert!(
        !out.status.success(),
        "the hook let a literal credential through"
    );
    // git shows a hook's output on its stderr.
    assert!(
        stderr(&out).contains("refused ValuesInvalid: clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml: spec.values.nextcloud.mail.smtp.password: a literal credential"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // A clean change commits (the hook notes the stale release and lets it through).
    f.git(&["reset", "-q", "--hard"]);
    f.write("README.md", "more notes\n");
    let out = commit(&f);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

/// `ssh-agent -D` on a socket under `root`, killed on drop.
struct SshAgent {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ssh_agent(root: &Path) -> SshAgent {
    let socket = root.join("agent.sock");
    let child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh-agent runs");
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(socket.exists(), "ssh-agent did not create its socket");
    SshAgent { child, socket }
}

#[test]
fn a_passphrase_protected_key_signs_through_ssh_agent() {
    let f = fixture();
    let key = f.path("carol");
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "correct horse",
            "-C",
            "carol",
            "-f",
        ])
        .arg(&key));
    let key_arg = key.display().to_string();
    let cosign = |sock: Option<&Path>, key_arg: &str| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "release",
            "--cluster",
            "demo",
            "--sign-only",
            "--key",
            key_arg,
        ])
        .current_dir(&f.repo)
        .env_remove("SSH_AUTH_SOCK");
        if let Some(sock) = sock {
            cmd.env("SSH_AUTH_SOCK", sock);
        }
        cmd.output().expect("release runs")
    };
    // No agent: the key is named as passphrase-protected, with what to do.
    let out = cosign(None, &key_arg);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        golden(&out, &f.root).1,
        "error: --key $ROOT/carol: the key is passphrase-protected; release signs with it through ssh-agent, and SSH_AUTH_SOCK is not set: start one (`eval $(ssh-agent)`), `ssh-add $ROOT/carol`, then run release again\n"
    );
    let agent = ssh_agent(&f.root);
    let out = cosign(Some(&agent.socket), &key_arg);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the key is passphrase-protected, and ssh-agent (")
            && stderr(&out).contains("does not hold it (SHA256:"),
        "{}",
        stderr(&out)
    );
    // ssh-add asks the passphrase through SSH_ASKPASS, as a desktop would.
    let askpass = f.path("askpass.sh");
    std::fs::write(&askpass, "#!/bin/sh\necho 'correct horse'\n").expect("askpass");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    run(Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(Stdio::null()));
    let out = cosign(Some(&agent.socket), &key_arg);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("co-signing clusters/demo/release.yaml:\n  cluster: demo\n")
            && stdout(&out).contains(
                "\nsigned clusters/demo/release.yaml as clusters/demo/release.sigs/carol.sig (SHA256:"
            ),
        "{}",
        stdout(&out)
    );
    // The public key alone names the agent's key too.
    let out = cosign(Some(&agent.socket), &format!("{key_arg}.pub"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // ssh-keygen agrees with the agent's signature.
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
    let signers = f.path("carol_signers");
    std::fs::write(
        &signers,
        format!("carol namespaces=\"vworkspace-release\" {public}"),
    )
    .expect("write");
    let manifest = f.repo.join("clusters/demo/release.yaml");
    run(Command::new("ssh-keygen")
        .args([
            "-Y",
            "verify",
            "-I",
            "carol",
            "-n",
            "vworkspace-release",
            "-f",
        ])
        .arg(&signers)
        .arg("-s")
        .arg(f.repo.join("clusters/demo/release.sigs/carol.sig"))
        .stdin(std::fs::File::open(&manifest).expect("open")));
}

mod against_the_cluster {
    //! `diff` against the fake API server at the HTTP boundary: the cluster as the operator left it
    //! after applying release 1, then a commit that changes, adds and removes objects.

    use std::sync::Arc;

    use clap::Parser;
    use serde_json::json;

    use crate::common::*;
    use crate::support::fake_api::*;
    use vworkspace_controller::cluster::{self, Context, Settings};
    use vworkspace_controller::metrics::Metrics;
    use vworkspace_core::crd::Cluster;

    const CLUSTER_PATH: &str = "/apis/ops.vworkspace.io/v1alpha1/clusters/demo";

    fn seeded(f: &Fixture) -> Arc<FakeApi> {
        let api = Arc::new(FakeApi::default());
        crate::support::seed_trust_inputs(&api, f);
        for name in ["org-myteam", "org-vault"] {
            api.put(
                &format!("/api/v1/namespaces/{name}"),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
                       "labels": {"app.vworkspace.io/managed-by": "vworkspace"}}}),
            );
        }
        api.put(
            CLUSTER_PATH,
            json!({"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Cluster",
                   "metadata": {"name": "demo", "uid": "0f5a-uid", "generation": 1, "resourceVersion": "1"},
                   "spec": {
                     "clusterId": "demo",
                     "source": {"url": format!("file://{}", f.repo.display()), "ref": {"branch": "main"}, "interval": "5m"},
                     "commitSigners": {"configMapRef": {"name": "trust", "key": "commit_signers"}},
                     "release": {"signersConfigMapRef": {"name": "trust", "key": "release_signers"}, "threshold": 2},
                     "decryption": {"identitySecretRef": {"name": "cluster-age"}},
                     "policy": {"requireBoundValues": false}
                   }}),
        );
        api
    }

    async fn reconcile(api: &Arc<FakeApi>) {
        reconcile_with(api, jiff::Timestamp::now).await;
    }

    async fn reconcile_with(api: &Arc<FakeApi>, clock: fn() -> jiff::Timestamp) -> Arc<Metrics> {
        let cache = tempfile::tempdir().expect("cache");
        let settings = Settings {
            namespace: "vworkspace-system".into(),
            cache_dir: cache.path().to_owned(),
            fetch: Default::default(),
            limits: Default::default(),
            pass_timeout: std::time::Duration::from_secs(60),
        };
        let metrics = Arc::new(Metrics::default());
        let mut ctx = Context::new(api.client(), settings, metrics.clone());
        ctx.clock = clock;
        let ctx = Arc::new(ctx);
        // Two passes: the second must add nothing (no second Event).
        for _ in 0..2 {
            let object: Cluster =
                serde_json::from_value(api.get(CLUSTER_PATH).expect("cluster")).expect("Cluster");
            cluster::reconcile(Arc::new(object), ctx.clone())
                .await
                .expect("the pass applies");
        }
        metrics
    }

    async fn diff(api: &Arc<FakeApi>, f: &Fixture, extra: &[&str]) -> (u8, String) {
        let repo = f.repo.display().to_string();
        let args: Vec<&str> = [
            "vworkspace-operator",
            "diff",
            "--repo",
            &repo,
            "--cluster",
            "demo",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
        let cli = vworkspace_operator::cli::Cli::parse_from(args);
        let vworkspace_operator::cli::Command::Diff(args) = cli.command else {
            panic!("parsed as diff")
        };
        api.clear();
        let mut out = Vec::new();
        let code =
            vworkspace_operator::authoring::diff::diff_with_client(&args, api.client(), &mut out)
                .await
                .expect("diff runs");
        // diff only reads.
        assert!(
            api.requests().iter().all(|r| !r.is_write()),
            "diff wrote to the cluster"
        );
        (code, String::from_utf8(out).expect("utf8"))
    }

    #[tokio::test]
    async fn diff_shows_create_update_prune_and_exits_like_kubectl_diff() {
        let f = fixture();
        let api = seeded(&f);
        reconcile(&api).await;
        let head = f.git(&["rev-parse", "HEAD"]);
        let (code, text) = diff(&api, &f, &["--from-cluster", "demo"]).await;
        assert_eq!(code, 0, "{text}");
        assert_eq!(
            text,
            format!("unchanged 3 object(s); commit {head}, release serial 1\n")
        );

        // Bump a chart, rotate a secret, drop the backup, add an operation.
        let nc = "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml";
        let smtp = f.bound_encrypt_for(
            "demo",
            "hunter2-PLAINTEXT-MARKER-new",
            "org-myteam",
            "nextcloud",
            "nextcloud.mail.smtp.password",
        );
        f.write(nc, &nextcloud(&smtp).replace("6.6.4", "6.6.5"));
        std::fs::remove_file(
            f.repo
                .join("clusters/demo/namespaces/org-myteam/operations/nightly.yaml"),
        )
        .expect("rm");
        f.write(
            "clusters/demo/namespaces/org-vault/operations/weekly.yaml",
            &BACKUP
                .replace("name: nightly", "name: weekly")
                .replace("nextcloud", "vaultwarden"),
        );
        f.release(&[]);
        let head = f.commit("release 2");
        let (code, text) = diff(&api, &f, &["--from-cluster", "demo"]).await;
        assert_eq!(code, 1, "{text}");
        assert_eq!(
            text,
            format!(
                "create    Operation org-vault/weekly\n{}\n{}\n{}\nprune     Operation org-myteam/nightly\nunchanged 1 object(s); commit {head}, release serial 2\n",
                "update    ApplicationInstance org-myteam/nextcloud",
                "          ~ spec.chart.version: \"6.6.4\" -> \"6.6.5\"",
                "          ~ spec.values.nextcloud.mail.smtp.password: <redacted> (changed)"
            )
        );
        assert!(!text.contains("PLAINTEXT-MARKER") && !text.contains("BEGIN AGE"));
        // The same with trust inputs from flags, as JSON.
        let signers = f.path("commit_signers").display().to_string();
        let release = f.path("release_signers").display().to_string();
        let identity = f.path("cluster.agekey").display().to_string();
        let (code, text) = diff(
            &api,
            &f,
            &[
                "--allowed-signers",
                &signers,
                "--release-signers",
                &release,
                "--threshold",
                "2",
                "--identity",
                &identity,
                "-o",
                "json",
            ],
        )
        .await;
        assert_eq!(code, 1, "{text}");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(doc["kind"], "DiffResult");
        assert_eq!(doc["create"], json!(["Operation org-vault/weekly"]));
        assert_eq!(doc["prune"], json!(["Operation org-myteam/nightly"]));
        assert_eq!(
            doc["update"][0]["fields"][0],
            json!({"path": "spec.chart.version", "from": "\"6.6.4\"", "to": "\"6.6.5\""})
        );
        // The operator applies release 2: nothing left to change.
        reconcile(&api).await;
        let (code, text) = diff(&api, &f, &["--from-cluster", "demo"]).await;
        assert_eq!(code, 0, "{text}");
        assert_eq!(
            text,
            format!("unchanged 3 object(s); commit {head}, release serial 2\n")
        );
        // The older commit, judged against what the Cluster applied: refused, an error for diff
        // (exit 3, as kubectl diff's >1).
        let (code, text) = diff(&api, &f, &["--from-cluster", "demo", "--ref", "HEAD~1"]).await;
        assert_eq!(code, 3, "{text}");
        assert!(text.starts_with("refused HistoryInvalid: "), "{text}");
        // A Cluster that is not there.
        let (code, text) = diff(&api, &f, &["--from-cluster", "prod"]).await;
        assert_eq!(code, 3);
        assert!(
            text.starts_with("error   --from-cluster: read Cluster prod: "),
            "{text}"
        );
    }

    fn in_25_days() -> jiff::Timestamp {
        jiff::Timestamp::now() + jiff::SignedDuration::from_hours(25 * 24)
    }

    #[tokio::test]
    async fn the_cluster_publishes_its_recipient_and_warns_before_the_release_expires() {
        let f = fixture();
        let api = seeded(&f);
        api.clear();
        let metrics = reconcile_with(&api, jiff::Timestamp::now).await;
        let status = api.get(CLUSTER_PATH).expect("cluster")["status"].clone();
        assert_eq!(status["recipients"], json!([f.recipient]));
        let text = serde_json::to_string(&status).expect("json");
        assert!(
            !text.contains("AGE-SECRET-KEY"),
            "a private key in the status: {text}"
        );
        // `recipient --cluster demo` prints it, like kubeseal --fetch-cert.
        let cli = vworkspace_operator::cli::Cli::parse_from([
            "vworkspace-operator",
            "recipient",
            "--cluster",
            "demo",
        ]);
        let vworkspace_operator::cli::Command::Recipient(args) = cli.command else {
            panic!("parsed as recipient")
        };
        let mut out = Vec::new();
        let code = vworkspace_operator::authoring::recipient::recipient_with_client(
            &args,
            api.client(),
            &mut out,
        )
        .await
        .expect("recipient runs");
        assert_eq!(code, 0);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            format!("{}\n", f.recipient)
        );
        // Stderr says where they come from: the identity Secret, through the operator.
        let cluster: vworkspace_core::crd::Cluster =
            serde_json::from_value(api.get(CLUSTER_PATH).expect("cluster")).expect("Cluster");
        assert_eq!(
            vworkspace_operator::authoring::recipient::provenance(&cluster),
            "recipients of Cluster demo: read from its status.recipients, which the operator derives on each pass from Secret cluster-age key identity.agekey in its own namespace (spec.decryption.identitySecretRef) and which only the operator may write; when in doubt, ask the key's holder for `age-keygen -y` of it"
        );
        // The release's expiry, per Cluster, for alerts.
        let exported = metrics.encode();
        let line = exported
            .lines()
            .find(|l| {
                l.starts_with("vworkspace_release_expiry_timestamp_seconds{cluster=\"demo\"} ")
            })
            .unwrap_or_else(|| panic!("no expiry metric: {exported}"));
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("value");
        let in_30_days = (jiff::Timestamp::now().as_second() + 30 * 86_400) as f64;
        assert!((value - in_30_days).abs() < 600.0, "{line}");
        // 30 days out: no warning. Five days before expiry: one Warning Event, not one per pass.
        let expiring = |api: &FakeApi| {
            api.requests()
                .into_iter()
                .filter(|r| r.method == http::Method::POST && r.path.ends_with("/events"))
                .filter(|r| r.body["reason"] == "ReleaseExpiringSoon")
                .collect::<Vec<_>>()
        };
        assert!(expiring(&api).is_empty());
        api.clear();
        reconcile_with(&api, in_25_days).await;
        let events = expiring(&api);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].body["type"], "Warning");
        let message = events[0].body["message"].as_str().expect("message");
        assert!(
            message.starts_with("clusters/demo/release.yaml (serial 1) expires at "),
            "{message}"
        );
        assert!(message.ends_with("publish a fresh release (vworkspace-operator release --cluster demo --key <release key>), co-sign, commit"), "{message}");
    }
}
