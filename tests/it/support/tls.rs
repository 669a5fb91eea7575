//! Test certificates made by `openssl`: a CA and a leaf for 127.0.0.1 signed by it (webpki refuses a
//! CA certificate as a server's). Shared by the HTTPS tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn run(cmd: &mut Command) {
    let status = cmd.status().expect("openssl runs");
    assert!(status.success(), "{cmd:?}");
}

/// A CA and a leaf for 127.0.0.1 signed by it, under `dir/<tag>-*.pem`. Returns (ca, cert, key).
pub fn certificate(dir: &Path, tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(format!("{tag}-{name}"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-days",
            "1",
            "-subj",
            &format!("/CN={tag} CA"),
        ])
        .args(ec)
        .arg("-keyout")
        .arg(p("ca-key.pem"))
        .arg("-out")
        .arg(p("ca.pem"))
        .stderr(Stdio::null()));
    run(Command::new("openssl")
        .args(["req", "-new", "-subj", "/CN=127.0.0.1"])
        .args(ec)
        .arg("-keyout")
        .arg(p("key.pem"))
        .arg("-out")
        .arg(p("cert.csr"))
        .stderr(Stdio::null()));
    std::fs::write(
        p("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-CAcreateserial", "-in"])
        .arg(p("cert.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca-key.pem"))
        .arg("-extfile")
        .arg(p("leaf.ext"))
        .arg("-out")
        .arg(p("cert.pem"))
        .stderr(Stdio::null()));
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}
