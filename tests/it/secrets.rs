//! Interop with the real `age` CLI: its values decrypt with ours, ours decrypt with `age -d`; and every
//! refusal, with no plaintext in any error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vworkspace_core::limits::Limits;
use vworkspace_core::secrets::{
    self, Binding, Identities, SecretsError, ValueContext, ValueErrorKind, ValuesPolicy,
};

const MARKER: &str = "hunter2-PLAINTEXT-MARKER";

struct Keys {
    _dir: tempfile::TempDir,
    identity_file: PathBuf,
    recipient: String,
}

fn age_keygen() -> Keys {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity_file = dir.path().join("key.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&identity_file)
        .output()
        .expect("age-keygen");
    assert!(out.status.success());
    let text = std::fs::read_to_string(&identity_file).expect("read");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("recipient")
        .to_owned();
    Keys {
        _dir: dir,
        identity_file,
        recipient,
    }
}

fn identities(files: &[&Path]) -> Identities {
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(p).expect("read"),
            )
        })
        .collect();
    Identities::parse_many(&texts).expect("identities")
}

fn pipe(cmd: &mut Command, input: &[u8]) -> (bool, Vec<u8>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    (out.status.success(), out.stdout)
}

fn age_encrypt(recipient: &str, plaintext: &[u8]) -> String {
    let (ok, out) = pipe(Command::new("age").args(["-a", "-r", recipient]), plaintext);
    assert!(ok);
    String::from_utf8(out).expect("armored")
}

fn age_decrypt(identity: &Path, armored: &str) -> Option<Vec<u8>> {
    let (ok, out) = pipe(
        Command::new("age").arg("-d").arg("-i").arg(identity),
        armored.as_bytes(),
    );
    ok.then_some(out)
}

fn ctx(instance: &str) -> ValueContext {
    ValueContext {
        cluster: "demo".into(),
        namespace: "org-a".into(),
        instance: instance.into(),
    }
}

#[test]
fn values_from_age_decrypt_with_ours() {
    let k = age_keygen();
    let armored = age_encrypt(&k.recipient, MARKER.as_bytes());
    let (binding, value) = secrets::decrypt(
        &armored,
        &identities(&[&k.identity_file]),
        &Limits::default(),
    )
    .expect("decrypts");
    assert_eq!(binding, None);
    assert_eq!(value.expose(), MARKER.as_bytes());
}

#[test]
fn ours_decrypt_with_age_and_show_the_envelope() {
    let k = age_keygen();
    let plain = secrets::encrypt(MARKER.as_bytes(), &k.recipient, None).expect("encrypt");
    assert_eq!(
        age_decrypt(&k.identity_file, &plain).expect("age -d"),
        MARKER.as_bytes()
    );
    let binding = Binding {
        cluster: "demo".into(),
        namespace: "org-a".into(),
        instance: "app".into(),
        path: "smtp.password".into(),
    };
    let bound = secrets::encrypt(MARKER.as_bytes(), &k.recipient, Some(&binding)).expect("encrypt");
    let shown =
        String::from_utf8(age_decrypt(&k.identity_file, &bound).expect("age -d")).expect("utf8");
    assert_eq!(
        shown,
        format!(
            "vworkspace-bound-value/v1\ncluster: demo\nnamespace: org-a\ninstance: app\npath: smtp.password\n\n{MARKER}"
        )
    );
}

#[test]
fn rotation_uses_any_identity() {
    let old = age_keygen();
    let new = age_keygen();
    let armored = age_encrypt(&new.recipient, b"rotated");
    let both = identities(&[&old.identity_file, &new.identity_file]);
    assert_eq!(both.len(), 2);
    assert_eq!(
        secrets::decrypt_any(&armored, &both, &Limits::default())
            .expect("ok")
            .expose(),
        b"rotated"
    );
    let only_old = identities(&[&old.identity_file]);
    assert_eq!(
        secrets::decrypt_any(&armored, &only_old, &Limits::default()).expect_err("wrong key"),
        SecretsError::NoMatchingIdentity
    );
}

#[test]
fn passphrase_values_are_refused() {
    let k = age_keygen();
    // `age -p` reads the passphrase from a terminal; build the same scrypt stanza with the age crate.
    let encryptor =
        age::Encryptor::with_user_passphrase(age::secrecy::SecretString::from("pass".to_owned()));
    let mut armored = Vec::new();
    let armor =
        age::armor::ArmoredWriter::wrap_output(&mut armored, age::armor::Format::AsciiArmor)
            .expect("armor");
    let mut w = encryptor.wrap_output(armor).expect("wrap");
    w.write_all(MARKER.as_bytes()).expect("write");
    w.finish().and_then(|a| a.finish()).expect("finish");
    let armored = String::from_utf8(armored).expect("utf8");
    let ids = identities(&[&k.identity_file]);
    assert_eq!(
        secrets::decrypt_any(&armored, &ids, &Limits::default()).expect_err("scrypt"),
        SecretsError::PassphraseNotAllowed
    );
    let values = serde_json::json!({"p": armored});
    let errs =
        secrets::check_values_form(&values, &ctx("app"), &Limits::default()).expect_err("form");
    assert_eq!(
        errs[0].kind,
        ValueErrorKind::Secrets(SecretsError::PassphraseNotAllowed)
    );
}

#[test]
fn corrupted_and_oversized_values_are_refused() {
    let k = age_keygen();
    let ids = identities(&[&k.identity_file]);
    let armored = age_encrypt(&k.recipient, MARKER.as_bytes());
    // Flip one character of the body (not the armor lines).
    let mut lines: Vec<String> = armored.lines().map(str::to_owned).collect();
    let body = &mut lines[1];
    let flipped = if body.starts_with('Y') { "Z" } else { "Y" };
    body.replace_range(0..1, flipped);
    let corrupted = lines.join("\n") + "\n";
    assert!(matches!(
        secrets::decrypt_any(&corrupted, &ids, &Limits::default()),
        Err(SecretsError::Malformed(_)
            | SecretsError::DecryptionFailed(_)
            | SecretsError::NoMatchingIdentity)
    ));
    assert!(
        age_decrypt(&k.identity_file, &corrupted).is_none(),
        "age refuses it too"
    );
    assert!(matches!(
        secrets::decrypt_any(
            "-----BEGIN AGE ENCRYPTED FILE-----\nnot base64!\n-----END AGE ENCRYPTED FILE-----\n",
            &ids,
            &Limits::default()
        ),
        Err(SecretsError::Malformed(_))
    ));

    let small = Limits {
        max_secret_armored_bytes: 100,
        ..Limits::default()
    };
    assert!(matches!(
        secrets::decrypt_any(&armored, &ids, &small),
        Err(SecretsError::TooLarge {
            what: "armored value",
            ..
        })
    ));
    let big = age_encrypt(&k.recipient, &vec![b'x'; 4096]);
    let tight = Limits {
        max_secret_plaintext_bytes: 1024,
        ..Limits::default()
    };
    assert!(matches!(
        secrets::decrypt_any(&big, &ids, &tight),
        Err(SecretsError::TooLarge {
            what: "decrypted value",
            ..
        })
    ));
    let many = serde_json::json!({"a": armored.clone(), "b": armored.clone()});
    let one = Limits {
        max_secret_values: 1,
        ..Limits::default()
    };
    let errs = secrets::check_values_form(&many, &ctx("app"), &one).expect_err("too many");
    assert_eq!(errs[0].kind, ValueErrorKind::TooManyValues(1));
}

#[test]
fn bound_values_refused_elsewhere() {
    let k = age_keygen();
    let ids = identities(&[&k.identity_file]);
    let binding = Binding {
        cluster: "demo".into(),
        namespace: "org-a".into(),
        instance: "nextcloud".into(),
        path: "mail.password".into(),
    };
    let bound = secrets::encrypt(MARKER.as_bytes(), &k.recipient, Some(&binding)).expect("encrypt");
    let here = serde_json::json!({"mail": {"password": bound}});
    let policy = ValuesPolicy::default();
    assert_eq!(
        secrets::decrypt_values(&here, &ctx("nextcloud"), &ids, &policy, &Limits::default())
            .expect("ok")
            .len(),
        1
    );
    let errs = secrets::decrypt_values(
        &here,
        &ctx("vaultwarden"),
        &ids,
        &policy,
        &Limits::default(),
    )
    .expect_err("copied");
    assert!(
        matches!(&errs[0].kind, ValueErrorKind::BindingMismatch { field: "instance", bound_to } if bound_to == "nextcloud")
    );
}

#[test]
fn no_plaintext_in_any_error_or_debug() {
    let k = age_keygen();
    let other = age_keygen();
    let ids = identities(&[&k.identity_file]);
    let binding = Binding {
        cluster: "demo".into(),
        namespace: "org-a".into(),
        instance: "app".into(),
        path: "v".into(),
    };
    let bound = secrets::encrypt(MARKER.as_bytes(), &k.recipient, Some(&binding)).expect("encrypt");
    let unbound = age_encrypt(&k.recipient, MARKER.as_bytes());
    let foreign = age_encrypt(&other.recipient, MARKER.as_bytes());
    let huge = age_encrypt(
        &k.recipient,
        format!("{MARKER}{}", "x".repeat(40_000)).as_bytes(),
    );
    let values =
        serde_json::json!({"v": bound, "w": unbound, "x": foreign, "y": huge, "z": {"v": bound}});
    let strict = ValuesPolicy {
        require_bound: true,
    };
    let errs = secrets::decrypt_values(&values, &ctx("other"), &ids, &strict, &Limits::default())
        .expect_err("all bad");
    assert_eq!(errs.len(), 5, "{errs:?}");
    let identity_text = std::fs::read_to_string(&k.identity_file).expect("read");
    let secret_line = identity_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("key");
    for e in &errs {
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains(MARKER), "{text}");
            assert!(!text.contains(secret_line), "{text}");
        }
    }
    let ok = secrets::decrypt_values(
        &serde_json::json!({"v": bound}),
        &ctx("app"),
        &ids,
        &ValuesPolicy::default(),
        &Limits::default(),
    )
    .expect("ok");
    assert!(!format!("{ok:?}").contains(MARKER));
    let (_, value) = secrets::decrypt(&unbound, &ids, &Limits::default()).expect("ok");
    assert!(!format!("{value:?} {value}").contains(MARKER));
    assert!(!format!("{ids:?}").contains(secret_line));
}
