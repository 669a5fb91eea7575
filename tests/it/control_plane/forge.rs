//! The loop back to the forge on the real API server: `reconcile --cluster NAME --wait` against a
//! running operator, and a signed push to the operator's receiver that starts the pass which
//! applies a new release long before the Cluster's interval.

use std::process::Command;

use serde_json::json;

use super::fixture::{BIN, Intent};
use super::server::*;
use super::{OPS, Scope, env, operator_cmd, webhook_replica};

pub(super) const TOKEN: &str = "real-server-receiver-token-0123456789";

/// `sha256=<hex HMAC-SHA256(TOKEN, body)>` by `openssl dgst`.
pub(super) fn generic_signature(body: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", TOKEN])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("write");
    let out = child.wait_with_output().expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    format!("sha256={}", text.rsplit(' ').next().expect("digest"))
}

/// `run` for the scope in `dir` with its push receiver on a free loopback port, token [`TOKEN`];
/// the process and the port.
pub(super) fn operator_with_receiver(env: &super::Env, dir: &std::path::Path) -> (Proc, u16) {
    let token_file = dir.join("receiver-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let port = free_port();
    let mut cmd = operator_cmd(env, dir);
    cmd.args([
        "--receiver-addr",
        &format!("127.0.0.1:{port}"),
        "--receiver-token-file",
    ])
    .arg(&token_file);
    (Proc::spawn(&mut cmd, dir, "operator"), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_now_and_a_signed_push_start_a_pass_on_the_real_server() {
    let Some(env) = env("reconcile_now_and_a_signed_push_start_a_pass_on_the_real_server").await
    else {
        return;
    };
    let intent = Intent::new("cp-forge");
    intent.add_instance("cp-forge-a", "nextcloud", "one");
    intent.release(&[]);
    intent.commit("release 1");
    let scope = Scope::new(&env, &intent, &["cp-forge-a"]).await;
    // The admission webhook (fail closed on managed namespaces) must answer for the pass to write.
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let (operator, port) = operator_with_receiver(&env, &scope.dir);
    wait_for("release 1 applied", 90, || async {
        let cluster = scope.cluster(&env.admin).await;
        (cluster["status"]["lastAppliedSerial"] == 1).then_some(())
    })
    .await;

    // `reconcile --wait` as the admin: the annotation, then the pass that handled it.
    let out = Command::new(BIN)
        .args([
            "reconcile",
            "--cluster",
            "cp-forge",
            "--wait",
            "--timeout",
            "90s",
        ])
        .env("KUBECONFIG", &env.cp.kubeconfig)
        .output()
        .expect("reconcile runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}\noperator: {}",
        String::from_utf8_lossy(&out.stderr),
        operator.stderr()
    );
    let head = intent.git(&["rev-parse", "HEAD"]);
    assert!(
        text.contains(&format!("commit {head} (release serial 1)")),
        "{text}"
    );
    let object = get(&env.admin, OPS, "Cluster", None, "cp-forge")
        .await
        .expect("cluster");
    let requested = object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("reconcile.fluxcd.io/requestedAt"))
        .cloned()
        .expect("the annotation reconcile set");
    assert_eq!(
        object.data["status"]["lastHandledReconcileAt"],
        json!(requested)
    );

    // A new signed release, then a signed push to the receiver: applied well before the 5 min
    // interval, with no other trigger.
    intent.add_instance("cp-forge-a", "wiki", "two");
    intent.release(&[]);
    intent.commit("release 2");
    let body = serde_json::to_vec(&json!({"ref": "refs/heads/main", "repository": intent.url()}))
        .expect("json");
    let http = reqwest::Client::new();
    let path = vworkspace_controller::receiver::hook_path(TOKEN.as_bytes());
    let answer = http
        .post(format!("http://127.0.0.1:{port}{path}"))
        .header("X-Signature", generic_signature(&body))
        .body(body.clone())
        .send()
        .await
        .expect("the receiver answers");
    assert_eq!(
        answer.status().as_u16(),
        202,
        "{}",
        answer.text().await.unwrap_or_default()
    );
    wait_for("release 2 applied after the push", 60, || async {
        let cluster = scope.cluster(&env.admin).await;
        (cluster["status"]["lastAppliedSerial"] == 2).then_some(())
    })
    .await;
    // A forged push is refused and changes nothing.
    let forged = http
        .post(format!("http://127.0.0.1:{port}{path}"))
        .header("X-Signature", format!("sha256={}", "0".repeat(64)))
        .body(body)
        .send()
        .await
        .expect("the receiver answers");
    assert_eq!(forged.status().as_u16(), 401);
    let cluster = get(&env.admin, OPS, "Cluster", None, "cp-forge")
        .await
        .expect("cluster")
        .data;
    assert_eq!(cluster["status"]["lastAppliedSerial"], 2);
    drop(operator);
    drop(scope);
}
