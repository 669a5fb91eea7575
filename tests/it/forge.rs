//! The loop back to the forge, at its boundaries: the push receiver over real HTTP with payloads and
//! headers as GitHub, GitLab, Gitea/Forgejo and Flux's generic HMAC receiver document them (the
//! signatures computed by `openssl`, not by our code); commit statuses sent to a loopback server in
//! each forge's API shape; and `reconcile --cluster` against the recording fake API server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::support::fake_api::*;
use vworkspace_controller::commit_status::Sender;
use vworkspace_controller::commit_status::request::{State, StatusUpdate};
use vworkspace_controller::metrics::Metrics;
use vworkspace_controller::receiver::{self, Receiver};
use vworkspace_core::crd::{CommitStatusSpec, ForgeProvider, LocalSecretRef};
use vworkspace_core::secrets::SecretValue;

const TOKEN: &str = "s3cr3t-webhook-token-for-tests";
const CLUSTERS: &str = "/apis/ops.vworkspace.io/v1alpha1/clusters";

fn cluster(name: &str, url: &str, reference: Value) -> Value {
    json!({
        "apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "resourceVersion": "1", "generation": 1},
        "spec": {
            "clusterId": name,
            "source": {"url": url, "ref": reference},
            "commitSigners": {"configMapRef": {"name": "commit-signers"}},
            "release": {"signersConfigMapRef": {"name": "release-signers"}, "threshold": 1},
            "decryption": {"identitySecretRef": {"name": "age"}}
        }
    })
}

/// HMAC-SHA256 of `body` with the token, hex, computed by `openssl dgst` (an independent
/// implementation, as a forge would compute it).
fn hmac_hex(body: &[u8]) -> String {
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
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit(' ')
        .next()
        .expect("digest")
        .to_owned()
}

struct Served {
    api: Arc<FakeApi>,
    metrics: Arc<Metrics>,
    base: String,
    http: reqwest::Client,
}

impl Served {
    async fn post(&self, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, String) {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("receiver answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    async fn hook(&self, headers: &[(&str, String)], body: Vec<u8>) -> (u16, String) {
        self.post(&receiver::hook_path(TOKEN.as_bytes()), headers, body)
            .await
    }

    fn patches(&self) -> Vec<Recorded> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.method == Method::PATCH)
            .collect()
    }

    fn counted(&self, forge: &str, outcome: &str) -> bool {
        self.metrics.encode().lines().any(|l| {
            l.starts_with("vworkspace_receiver_requests_total{")
                && l.contains(&format!("forge=\"{forge}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
                && !l.ends_with(" 0")
        })
    }
}

async fn served() -> Served {
    let api = Arc::new(FakeApi::default());
    api.put(
        &format!("{CLUSTERS}/prod"),
        cluster(
            "prod",
            "https://github.com/acme/intent.git",
            json!({"branch": "main"}),
        ),
    );
    api.put(
        &format!("{CLUSTERS}/staging"),
        cluster(
            "staging",
            "https://github.com/acme/intent.git",
            json!({"branch": "staging"}),
        ),
    );
    api.put(
        &format!("{CLUSTERS}/lab"),
        cluster(
            "lab",
            "ssh://git@gitlab.example.com/platform/intent.git",
            json!({"branch": "main"}),
        ),
    );
    api.put(
        &format!("{CLUSTERS}/edge"),
        cluster(
            "edge",
            "https://gitea.example.org/ops/intent",
            json!({"tag": "v2"}),
        ),
    );
    let metrics = Arc::new(Metrics::default());
    let receiver = Receiver::new(
        SecretValue::new(TOKEN.as_bytes().to_vec()),
        api.client(),
        metrics.clone(),
    )
    .expect("receiver");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(receiver::serve_on(listener, Arc::new(receiver)));
    Served {
        api,
        metrics,
        base,
        http: reqwest::Client::new(),
    }
}

/// GitHub's push event (https://docs.github.com/webhooks/webhook-events-and-payloads#push), trimmed.
fn github_push(git_ref: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": git_ref,
        "before": "0000000000000000000000000000000000000000",
        "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "repository": {
            "id": 186853002, "name": "intent", "full_name": "acme/intent", "private": true,
            "html_url": "https://github.com/acme/intent",
            "git_url": "git://github.com/acme/intent.git",
            "ssh_url": "git@github.com:acme/intent.git",
            "clone_url": "https://github.com/acme/intent.git",
            "default_branch": "main"
        },
        "pusher": {"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com"},
        "head_commit": {"id": "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "message": "this text is never read"}
    }))
    .expect("json")
}

fn github_headers(body: &[u8], event: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-GitHub-Event", event.into()),
        (
            "X-GitHub-Delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
        ),
        ("X-GitHub-Hook-ID", "292430182".into()),
        ("X-Hub-Signature-256", format!("sha256={}", hmac_hex(body))),
        ("User-Agent", "GitHub-Hookshot/044aadd".into()),
        ("Content-Type", "application/json".into()),
    ]
}

fn annotated(patch: &Recorded) -> bool {
    patch.body["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"].is_string()
}

#[tokio::test]
async fn a_signed_github_push_requests_a_pass_of_the_matching_cluster_only() {
    let s = served().await;
    let body = github_push("refs/heads/main");
    let (status, text) = s.hook(&github_headers(&body, "push"), body.clone()).await;
    assert_eq!(status, 202, "{text}");
    let patches = s.patches();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0].path, format!("{CLUSTERS}/prod"));
    assert_eq!(patches[0].content_type, "application/merge-patch+json");
    assert!(annotated(&patches[0]), "{:?}", patches[0].body);
    assert_eq!(
        patches[0].body["metadata"].as_object().map(|m| m.len()),
        Some(1),
        "the patch carries the annotation alone"
    );
    assert!(s.counted("github", "triggered"));

    // A ping is acknowledged and triggers nothing.
    s.api.clear();
    let ping = serde_json::to_vec(&json!({"zen": "Keep it logically awesome.", "hook_id": 1}))
        .expect("json");
    let (status, _) = s.hook(&github_headers(&ping, "ping"), ping).await;
    assert_eq!(status, 200);
    assert!(s.patches().is_empty());
    assert!(s.counted("github", "ignored"));
}

#[tokio::test]
async fn gitlab_gitea_forgejo_and_generic_pushes_are_verified_as_each_documents() {
    let s = served().await;
    // GitLab (https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events).
    let gitlab = serde_json::to_vec(&json!({
        "object_kind": "push", "event_name": "push", "ref": "refs/heads/main",
        "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        "project": {
            "id": 15, "name": "intent", "web_url": "https://gitlab.example.com/platform/intent",
            "git_ssh_url": "git@gitlab.example.com:platform/intent.git",
            "git_http_url": "https://gitlab.example.com/platform/intent.git",
            "path_with_namespace": "platform/intent", "default_branch": "main"
        },
        "repository": {"name": "intent", "url": "git@gitlab.example.com:platform/intent.git",
                       "homepage": "https://gitlab.example.com/platform/intent"}
    }))
    .expect("json");
    let headers = vec![
        ("X-Gitlab-Event", "Push Hook".to_owned()),
        ("X-Gitlab-Token", TOKEN.to_owned()),
        ("X-Gitlab-Instance", "https://gitlab.example.com".to_owned()),
        ("Content-Type", "application/json".to_owned()),
    ];
    let (status, text) = s.hook(&headers, gitlab.clone()).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(
        s.patches().last().map(|p| p.path.clone()),
        Some(format!("{CLUSTERS}/lab"))
    );
    let wrong = vec![
        ("X-Gitlab-Event", "Push Hook".to_owned()),
        ("X-Gitlab-Token", format!("{TOKEN}x")),
    ];
    assert_eq!(s.hook(&wrong, gitlab).await.0, 401);

    // Gitea (https://docs.gitea.com/usage/webhooks): a tag push, HMAC in X-Gitea-Signature.
    let gitea = serde_json::to_vec(&json!({
        "ref": "refs/tags/v2", "before": "0000000000000000000000000000000000000000",
        "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
        "repository": {"id": 140, "full_name": "ops/intent", "html_url": "https://gitea.example.org/ops/intent",
                       "ssh_url": "git@gitea.example.org:ops/intent.git",
                       "clone_url": "https://gitea.example.org/ops/intent.git"},
        "pusher": {"login": "gitea"}
    }))
    .expect("json");
    s.api.clear();
    let headers = vec![
        ("X-Gitea-Event", "push".to_owned()),
        (
            "X-Gitea-Delivery",
            "f6266f16-1bf3-46a5-9ea4-602e06ead473".to_owned(),
        ),
        ("X-Gitea-Signature", hmac_hex(&gitea)),
        ("Content-Type", "application/json".to_owned()),
    ];
    assert_eq!(s.hook(&headers, gitea.clone()).await.0, 202);
    assert_eq!(s.patches().len(), 1);
    assert_eq!(s.patches()[0].path, format!("{CLUSTERS}/edge"));
    // Forgejo sends the same payload with its own header names.
    let headers = vec![
        ("X-Forgejo-Event", "push".to_owned()),
        ("X-Forgejo-Signature", hmac_hex(&gitea)),
    ];
    assert_eq!(s.hook(&headers, gitea.clone()).await.0, 202);
    let tampered = [gitea.as_slice(), b" "].concat();
    let headers = vec![
        ("X-Gitea-Event", "push".to_owned()),
        ("X-Gitea-Signature", hmac_hex(&gitea)),
    ];
    assert_eq!(s.hook(&headers, tampered).await.0, 401);
    assert!(s.counted("gitea", "bad_signature"));

    // Generic HMAC (Flux's generic-hmac: X-Signature: sha256=<hex>), our documented body.
    s.api.clear();
    let generic = serde_json::to_vec(
        &json!({"ref": "refs/heads/staging", "repository": "git@github.com:acme/intent.git"}),
    )
    .expect("json");
    let headers = vec![("X-Signature", format!("sha256={}", hmac_hex(&generic)))];
    assert_eq!(s.hook(&headers, generic).await.0, 202);
    assert_eq!(s.patches().len(), 1);
    assert_eq!(s.patches()[0].path, format!("{CLUSTERS}/staging"));
    assert!(s.counted("generic", "triggered"));
}

#[tokio::test]
async fn forged_unknown_oversized_and_flooding_requests_trigger_nothing() {
    let s = served().await;
    let body = github_push("refs/heads/main");
    let path = receiver::hook_path(TOKEN.as_bytes());
    let mut forged = github_headers(&body, "push");
    forged[3].1 = format!("sha256={}", "0".repeat(64));
    let cases: Vec<(&str, u16, &str)> = vec![("forged", 401, "bad_signature")];
    assert_eq!(s.hook(&forged, body.clone()).await.0, cases[0].1);
    let unsigned: Vec<(&str, String)> = vec![("X-GitHub-Event", "push".into())];
    assert_eq!(s.hook(&unsigned, body.clone()).await.0, 401);
    assert_eq!(
        s.post("/hook/0000", &github_headers(&body, "push"), body.clone())
            .await
            .0,
        404
    );
    assert!(s.counted("github", "unknown_path"));
    let get = s
        .http
        .get(format!("{}{path}", s.base))
        .send()
        .await
        .expect("answers");
    assert_eq!(get.status().as_u16(), 405);
    // A repository no Cluster follows, and a branch no Cluster follows.
    let other = String::from_utf8(body.clone())
        .expect("utf8")
        .replace("acme/intent", "acme/other");
    let (status, text) = s
        .hook(
            &github_headers(other.as_bytes(), "push"),
            other.into_bytes(),
        )
        .await;
    assert_eq!(
        (status, text.trim()),
        (404, "no Cluster follows this repository at this ref")
    );
    let feature = github_push("refs/heads/feature");
    assert_eq!(
        s.hook(&github_headers(&feature, "push"), feature).await.0,
        404
    );
    assert!(s.counted("github", "unknown_repository"));
    // Over the body bound: refused before any signature is computed.
    let huge = vec![b' '; receiver::MAX_BODY_BYTES + 1];
    assert_eq!(s.hook(&github_headers(&huge, "push"), huge).await.0, 413);
    assert!(s.counted("github", "too_large"));
    assert!(
        s.patches().is_empty(),
        "nothing was triggered: {:?}",
        s.patches()
    );

    // A flood: past the burst the endpoint answers 429 without looking at the request.
    let mut limited = 0;
    for _ in 0..(receiver::RATE_BURST as usize + 20) {
        if s.hook(&forged, body.clone()).await.0 == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "no request was rate limited");
    assert!(s.counted("github", "rate_limited"));
    assert!(s.patches().is_empty());
}

/// One request a loopback forge received.
#[derive(Debug, Clone)]
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A loopback HTTP/1.1 server answering each request with the next scripted status (then 201).
fn loopback_forge(script: Vec<u16>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut headers = Vec::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.trim().split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    headers.push((name.to_owned(), value.trim().to_owned()));
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            log.lock().expect("lock").push(Received {
                request_line: request_line.trim().to_owned(),
                headers,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
            let status = script.next().unwrap_or(201);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
        }
    });
    (base, received)
}

fn status_update(provider: ForgeProvider, base: &str, commit: char, state: State) -> StatusUpdate {
    StatusUpdate {
        cluster: "prod".into(),
        context: "vworkspace/prod".into(),
        spec: CommitStatusSpec {
            provider,
            address: Some(base.to_owned()),
            repository: None,
            secret_ref: LocalSecretRef {
                name: "forge-token".into(),
            },
        },
        source_url: "ssh://git@git.example.org/acme/intent.git".into(),
        commit: commit.to_string().repeat(40),
        state,
        description: "release serial 7 applied".into(),
    }
}

fn token_secret(api: &FakeApi) {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode("forge-api-token");
    api.put(
        "/api/v1/namespaces/vworkspace-system/secrets/forge-token",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "forge-token", "namespace": "vworkspace-system"},
               "data": {"token": token}}),
    );
}

async fn wait_for_requests(received: &Mutex<Vec<Received>>, count: usize) -> Vec<Received> {
    for _ in 0..200 {
        let now = received.lock().expect("lock").clone();
        if now.len() >= count {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    received.lock().expect("lock").clone()
}

#[tokio::test]
async fn commit_statuses_reach_each_forge_in_its_shape_deduplicated_and_retried() {
    let api = Arc::new(FakeApi::default());
    token_secret(&api);
    let metrics = Arc::new(Metrics::default());
    // The first answer is a 502: the sender retries.
    let (base, received) = loopback_forge(vec![502]);
    let sender =
        Sender::spawn(api.client(), "vworkspace-system".into(), metrics.clone()).expect("sender");
    sender.submit(status_update(
        ForgeProvider::GitHub,
        &base,
        'a',
        State::Success,
    ));
    sender.submit(status_update(
        ForgeProvider::GitHub,
        &base,
        'a',
        State::Success,
    ));
    let mut failure = status_update(ForgeProvider::GitLab, &base, 'b', State::Failure);
    failure.description = "refused (ReleaseInvalid)".into();
    sender.submit(failure);
    sender.submit(status_update(
        ForgeProvider::Gitea,
        &base,
        'c',
        State::Pending,
    ));
    let got = wait_for_requests(&received, 4).await;
    assert_eq!(got.len(), 4, "{got:#?}");
    let a = "a".repeat(40);
    // GitHub, twice (502 then 201), once more never (deduplicated).
    for r in &got[..2] {
        assert_eq!(
            r.request_line,
            format!("POST /repos/acme/intent/statuses/{a} HTTP/1.1")
        );
        assert_eq!(r.header("authorization"), Some("Bearer forge-api-token"));
        assert_eq!(r.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(
            r.body,
            json!({"state": "success", "description": "release serial 7 applied", "context": "vworkspace/prod"})
        );
    }
    assert_eq!(
        got[2].request_line,
        format!(
            "POST /projects/acme%2Fintent/statuses/{} HTTP/1.1",
            "b".repeat(40)
        )
    );
    assert_eq!(got[2].header("private-token"), Some("forge-api-token"));
    assert_eq!(
        got[2].body,
        json!({"state": "failed", "name": "vworkspace/prod", "description": "refused (ReleaseInvalid)"})
    );
    assert_eq!(
        got[3].request_line,
        format!(
            "POST /repos/acme/intent/statuses/{} HTTP/1.1",
            "c".repeat(40)
        )
    );
    assert_eq!(
        got[3].header("authorization"),
        Some("token forge-api-token")
    );
    assert_eq!(got[3].body["state"], "pending");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        received.lock().expect("lock").len(),
        4,
        "the duplicate was not sent"
    );
    let text = metrics.encode();
    assert!(
        text.contains("vworkspace_commit_statuses_total{result=\"sent\"} 3"),
        "{text}"
    );
}

#[tokio::test]
async fn a_stalled_forge_never_blocks_the_pass_side() {
    let api = Arc::new(FakeApi::default());
    token_secret(&api);
    let metrics = Arc::new(Metrics::default());
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", silent.local_addr().expect("addr"));
    let sender =
        Sender::spawn(api.client(), "vworkspace-system".into(), metrics.clone()).expect("sender");
    let total = vworkspace_controller::commit_status::QUEUE + 50;
    for i in 0..total {
        let mut update = status_update(ForgeProvider::GitHub, &base, 'a', State::Success);
        update.cluster = format!("c{i}");
        sender.submit(update);
    }
    // Every submit returned at once; what did not fit in the queue was dropped and counted.
    let text = metrics.encode();
    assert!(
        text.contains("vworkspace_commit_statuses_total{result=\"dropped\"}"),
        "{text}"
    );
    drop(silent);
}

fn reconcile_args(extra: &[&str]) -> vworkspace_operator::reconcile::ReconcileArgs {
    use clap::Parser as _;
    let args: Vec<&str> = ["vworkspace-operator", "reconcile", "--cluster", "prod"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let cli = vworkspace_operator::cli::Cli::parse_from(args);
    let vworkspace_operator::cli::Command::Reconcile(args) = cli.command else {
        panic!("parsed as reconcile")
    };
    args
}

#[tokio::test]
async fn reconcile_annotates_then_waits_for_the_pass_that_handled_it() {
    let api = Arc::new(FakeApi::default());
    let path = format!("{CLUSTERS}/prod");
    api.put(
        &path,
        cluster(
            "prod",
            "https://github.com/acme/intent.git",
            json!({"branch": "main"}),
        ),
    );
    let now: jiff::Timestamp = "2026-12-04T00:00:00Z".parse().expect("time");

    // Without --wait: one GET, one merge patch of the annotation alone.
    let mut out = Vec::new();
    let code = vworkspace_operator::reconcile::reconcile_with_client(
        &reconcile_args(&[]),
        api.client(),
        &mut out,
        now,
    )
    .await
    .expect("runs");
    assert_eq!(code, 0);
    let lines: Vec<String> = api.requests().iter().map(Recorded::line).collect();
    assert_eq!(lines, vec![format!("GET {path}"), format!("PATCH {path}")]);
    let patch = &api.requests()[1];
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(
        patch.body,
        json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "2026-12-04T00:00:00Z"}}})
    );

    // With --wait: an operator stand-in records the request as handled after a moment.
    api.clear();
    let later: jiff::Timestamp = "2026-12-04T00:01:00Z".parse().expect("time");
    let operator = {
        let (api, path) = (api.clone(), path.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let mut object = api.get(&path).expect("cluster");
            object["status"] = json!({
                "lastHandledReconcileAt": "2026-12-04T00:01:00Z",
                "lastAppliedCommit": "c".repeat(40), "lastAppliedSerial": 8,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "applied",
                                "lastTransitionTime": "2026-12-04T00:01:00Z"}]
            });
            api.put(&path, object);
        })
    };
    let mut out = Vec::new();
    let code = vworkspace_operator::reconcile::reconcile_with_client(
        &reconcile_args(&["--wait", "--timeout", "20s"]),
        api.client(),
        &mut out,
        later,
    )
    .await
    .expect("runs");
    operator.await.expect("stand-in");
    let text = String::from_utf8(out).expect("utf8");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("commit {} (release serial 8)", "c".repeat(40))),
        "{text}"
    );
    let lines: Vec<String> = api.requests().iter().map(Recorded::line).collect();
    assert_eq!(lines[..2], [format!("GET {path}"), format!("PATCH {path}")]);
    assert!(
        lines[2..].iter().all(|l| *l == format!("GET {path}")),
        "{lines:?}"
    );
    assert!(lines.len() >= 3);

    // A failed pass: exit 1 with its reason. A suspended Cluster: refused, nothing written.
    api.clear();
    let mut object = api.get(&path).expect("cluster");
    object["status"]["conditions"][0] = json!({"type": "Ready", "status": "False", "reason": "ReleaseInvalid",
        "message": "clusters/prod/release.yaml: serial 7 is not above 8", "lastTransitionTime": "2026-12-04T00:02:00Z"});
    object["status"]["lastHandledReconcileAt"] = json!("2026-12-04T00:02:00Z");
    api.put(&path, object.clone());
    let at: jiff::Timestamp = "2026-12-04T00:02:00Z".parse().expect("time");
    let mut out = Vec::new();
    let code = vworkspace_operator::reconcile::reconcile_with_client(
        &reconcile_args(&["--wait"]),
        api.client(),
        &mut out,
        at,
    )
    .await
    .expect("runs");
    let text = String::from_utf8(out).expect("utf8");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("ReleaseInvalid"), "{text}");
    object["spec"]["suspend"] = json!(true);
    api.put(&path, object);
    api.clear();
    let mut out = Vec::new();
    let code = vworkspace_operator::reconcile::reconcile_with_client(
        &reconcile_args(&[]),
        api.client(),
        &mut out,
        at,
    )
    .await
    .expect("runs");
    assert_eq!(code, 1);
    assert!(api.requests().iter().all(|r| !r.is_write()));
}
