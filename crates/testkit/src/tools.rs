//! The stock tools, run as a user runs them; each must succeed.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `cmd`; it must succeed.
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

/// A command's standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `age -a -r <recipient>`, the stock tool: a plain (unbound) value.
pub fn age_encrypt(recipient: &str, plaintext: &str) -> String {
    stdout(&run_with_stdin(
        Command::new("age").args(["-a", "-r", recipient]),
        plaintext.as_bytes(),
    ))
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

/// `ssh-keygen -t <kind>` without a passphrase: writes `path` and `path.pub`, returns the public key.
pub fn ssh_keygen(path: &Path, comment: &str, kind: &str) -> String {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", comment, "-f"])
        .arg(path));
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_owned()
}
