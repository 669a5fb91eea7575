//! The authoring commands against the stock tools: keys from `keygen` work with `age` and
//! `ssh-keygen`; `crdgen` prints the CRDs; bad flags exit 2.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_vworkspace-operator");

fn run(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    if let Some(input) = stdin {
        // A command that refuses its flags exits before reading stdin: a broken pipe here is
        // the expected race, and the exit code below is what the test asserts.
        if let Err(error) = child.stdin.take().expect("stdin").write_all(input) {
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::BrokenPipe,
                "write: {error}"
            );
        }
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait")
}

#[test]
fn age_keygen_output_works_with_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cluster.agekey");
    let out = run(
        &["keygen", "age", "--out", key.to_str().expect("utf8")],
        None,
    );
    assert!(out.status.success());
    let recipient = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    // Refuses to overwrite an existing key.
    assert!(
        !run(
            &["keygen", "age", "--out", key.to_str().expect("utf8")],
            None
        )
        .status
        .success()
    );

    let enc = run(
        &["encrypt", "--recipient", &recipient],
        Some(b"secret-value"),
    );
    assert!(enc.status.success());
    let mut age = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("age");
    age.stdin
        .take()
        .expect("stdin")
        .write_all(&enc.stdout)
        .expect("write");
    assert_eq!(age.wait_with_output().expect("age").stdout, b"secret-value");
}

#[test]
fn ssh_keygen_output_signs_for_ssh_keygen_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("release_ed25519");
    let out = run(
        &[
            "keygen",
            "ssh",
            "--comment",
            "alice",
            "--out",
            key.to_str().expect("utf8"),
        ],
        None,
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    let line = text
        .lines()
        .find(|l| l.contains("namespaces=\"vworkspace-release\""))
        .expect("allowed_signers line");
    let signers = dir.path().join("allowed_signers");
    std::fs::write(&signers, format!("{line}\n")).expect("write");
    let message = dir.path().join("release.yaml");
    std::fs::write(&message, "x\n").expect("write");
    // ssh-keygen can use the private key we wrote, and verifies against the line we printed.
    let sign = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "vworkspace-release", "-f"])
        .arg(&key)
        .arg(&message)
        .output()
        .expect("ssh-keygen");
    assert!(
        sign.status.success(),
        "{}",
        String::from_utf8_lossy(&sign.stderr)
    );
    let verify = Command::new("ssh-keygen")
        .args([
            "-Y",
            "verify",
            "-I",
            "alice",
            "-n",
            "vworkspace-release",
            "-f",
        ])
        .arg(&signers)
        .arg("-s")
        .arg(message.with_extension("yaml.sig"))
        .stdin(std::fs::File::open(&message).expect("open"))
        .output()
        .expect("ssh-keygen");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn encrypt_flags_and_bounds() {
    let recipient = "age1ksjlkjuwn4a6pjvpx5950en99axt0ud27766n44hhtts53x37crqgr4spr";
    let partial = run(
        &["encrypt", "--recipient", recipient, "--cluster", "demo"],
        Some(b"x"),
    );
    assert_eq!(partial.status.code(), Some(2), "binding flags go together");
    let bad = run(&["encrypt", "--recipient", "age1nope"], Some(b"x"));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an age X25519 recipient"));
    let big = vec![b'x'; 64 * 1024];
    let too_big = run(&["encrypt", "--recipient", recipient], Some(&big));
    assert_eq!(too_big.status.code(), Some(2));
}

#[test]
fn crdgen_prints_three_crds() {
    let out = run(&["crdgen"], None);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(text.matches("kind: CustomResourceDefinition").count(), 3);
}

#[test]
fn release_refuses_a_serial_that_does_not_grow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("k");
    assert!(
        run(
            &["keygen", "ssh", "--out", key.to_str().expect("utf8")],
            None
        )
        .status
        .success()
    );
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("clusters/demo/namespaces/a/operations")).expect("mkdir");
    std::fs::write(
        repo.join("clusters/demo/namespaces/a/operations/op.yaml"),
        crate::common::BACKUP.replace("name: nightly", "name: op"),
    )
    .expect("write");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "release",
            "--repo",
            repo.to_str().expect("utf8"),
            "--cluster",
            "demo",
            "--key",
            key.to_str().expect("utf8"),
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let a = args(&["--serial", "5"]);
    assert!(
        run(&a.iter().map(String::as_str).collect::<Vec<_>>(), None)
            .status
            .success()
    );
    let manifest =
        std::fs::read_to_string(repo.join("clusters/demo/release.yaml")).expect("manifest");
    assert!(
        manifest.contains("serial: 5\n") && manifest.contains("namespaces/a/operations/op.yaml"),
        "{manifest}"
    );
    assert!(
        repo.join("clusters/demo/release.sigs/vworkspace.sig")
            .exists()
    );
    let b = args(&["--serial", "5"]);
    let out = run(&b.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be greater than the current serial 5")
    );
    let c = args(&["--expires", "tomorrow"]);
    assert_eq!(
        run(&c.iter().map(String::as_str).collect::<Vec<_>>(), None)
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn run_once_finds_the_api_server_through_kubeconfig_and_fails_cleanly_when_it_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("config");
    // Port 1 on loopback: nothing listens there.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: not-a-real-token\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["run", "--once", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("list Clusters"), "{stderr}");
    assert!(!stderr.contains("not-a-real-token"), "{stderr}");
    // The flags are the contract.
    let help = run(&["run", "--help"], None);
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--namespace",
        "--cache-dir",
        "--metrics-addr",
        "--health-addr",
        "--leader-election",
        "--once",
        "--watch-label-selector",
    ] {
        assert!(text.contains(flag), "{flag} missing from run --help");
    }
}
