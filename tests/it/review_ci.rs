//! The CI templates of `examples/ci/`, run for real: every `run:` step of the GitHub Actions workflow
//! and every `script:` line of the GitLab job, in order, with bash as the runners use it, in a shallow
//! checkout of a pull request's head cloned from a real repository with a base and a head branch.
//! Only the forge's comment API is a stub: a loopback HTTP server that records each request and
//! keeps the comments, so that a second run must find and edit the first run's comment.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::common::{BIN, Fixture, run};
use crate::review::{base_repo, pr_half_signed, pr_refused};

/// One request the stub received: method, path, body.
type Request = (String, String, String);

/// The forge's comment API on loopback: GET lists, POST adds (id from 1), PATCH or PUT on `.../<id>`
/// replaces. Stopped (its thread joined) on drop.
struct ForgeStub {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ForgeStub {
    fn start() -> ForgeStub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut comments: Vec<Value> = Vec::new();
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve(stream, &log, &mut comments);
                }
            }
        });
        ForgeStub {
            url,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for ForgeStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Request>>, comments: &mut Vec<Value>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let (mut length, mut expect) = (0usize, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        expect |= lower.starts_with("expect: 100-continue");
    }
    let mut out = stream;
    if expect {
        let _ = out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    let body = String::from_utf8_lossy(&body).into_owned();
    log.lock()
        .expect("lock")
        .push((method.clone(), path.clone(), body.clone()));
    let text = |v: &Value| v.get("body").cloned().unwrap_or(Value::Null);
    let sent: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let (status, reply) = match method.as_str() {
        "GET" => ("200 OK", Value::Array(comments.clone())),
        "POST" => {
            let comment = json!({"id": comments.len() + 1, "body": text(&sent)});
            comments.push(comment.clone());
            ("201 Created", comment)
        }
        "PATCH" | "PUT" => {
            let id: u64 = path
                .rsplit('/')
                .next()
                .and_then(|i| i.parse().ok())
                .unwrap_or(0);
            match comments.iter_mut().find(|c| c["id"] == id) {
                Some(c) => {
                    c["body"] = text(&sent);
                    ("200 OK", c.clone())
                }
                None => ("404 Not Found", json!({"message": "no such comment"})),
            }
        }
        _ => ("405 Method Not Allowed", Value::Null),
    };
    let reply = reply.to_string();
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
}

/// A bare "origin" holding the fixture's branches, and a shallow checkout of the head.
fn checkout(f: &Fixture, head: &str) -> (PathBuf, PathBuf) {
    let origin = f.root.join("origin.git");
    if !origin.exists() {
        run(Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(&f.repo)
            .arg(&origin));
    }
    let work = f.root.join(format!("work-{head}"));
    let _ = std::fs::remove_dir_all(&work);
    run(Command::new("git")
        .args(["clone", "-q", "--depth", "1", "--branch", head])
        .arg(format!("file://{}", origin.display()))
        .arg(&work));
    (origin, work)
}

fn template(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/ci")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("template");
    serde_saphyr::from_str(&text).expect("the template is YAML")
}

/// The environment every step sees: the runner's, the job's, PATH with the binary under test first.
fn base_env(dir: &Path, temp: &Path) -> Vec<(String, String)> {
    let bin = Path::new(BIN).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    vec![
        ("PATH".into(), path),
        ("HOME".into(), dir.display().to_string()),
        ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("RUNNER_TEMP".into(), temp.display().to_string()),
    ]
}

/// Runs `script` as a runner does (`bash --noprofile --norc -eo pipefail`); returns (ok, stdout).
fn bash(work: &Path, env: &[(String, String)], script: &str) -> (bool, String) {
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(work)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The job's `env:` with the `${{ ... }}` expressions this test stands in for.
fn job_env(job: &Value) -> Vec<(String, String)> {
    let known = [
        ("${{ github.event.pull_request.number }}", "7"),
        ("${{ github.token }}", "test-token"),
    ];
    let mut out = Vec::new();
    for (k, v) in job["env"].as_object().into_iter().flatten() {
        let mut v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for (expr, value) in known {
            v = v.replace(expr, value);
        }
        assert!(
            !v.contains("${{"),
            "the test knows every expression of the job env: {v}"
        );
        out.push((k.clone(), v));
    }
    out
}

/// Runs the GitHub workflow's `run:` steps in order; returns the step that failed (if any) and the
/// output of every step that ran.
fn run_github(f: &Fixture, head: &str, api: &str) -> (Option<String>, String) {
    let (_, work) = checkout(f, head);
    let temp = f.root.join(format!("runner-{head}"));
    std::fs::create_dir_all(&temp).expect("mkdir");
    let workflow = template("github-actions.yml");
    let job = &workflow["jobs"]["review"];
    let mut env = base_env(&f.root, &temp);
    env.extend(job_env(job));
    let github_path = temp.join("github_path");
    env.extend([
        ("GITHUB_BASE_REF".into(), "main".into()),
        ("GITHUB_API_URL".into(), api.to_owned()),
        ("GITHUB_REPOSITORY".into(), "acme/intent".into()),
        ("GITHUB_PATH".into(), github_path.display().to_string()),
        (
            "GITHUB_OUTPUT".into(),
            temp.join("github_output").display().to_string(),
        ),
    ]);
    let mut log = String::new();
    for step in job["steps"].as_array().expect("steps") {
        let Some(script) = step["run"].as_str() else {
            continue; // `uses:` steps: the checkout above stands in for actions/checkout.
        };
        let name = step["name"].as_str().unwrap_or("step").to_owned();
        let (ok, text) = bash(&work, &env, script);
        log.push_str(&format!("## {name}\n{text}"));
        if !ok {
            return (Some(name), log);
        }
    }
    (None, log)
}

fn run_gitlab(f: &Fixture, head: &str, api: &str) -> (bool, String, PathBuf) {
    let (_, work) = checkout(f, head);
    let temp = f.root.join(format!("gitlab-{head}"));
    std::fs::create_dir_all(&temp).expect("mkdir");
    let pipeline = template("gitlab-ci.yml");
    let job = &pipeline["vworkspace-review"];
    let mut env = base_env(&f.root, &temp);
    for (k, v) in job["variables"].as_object().into_iter().flatten() {
        env.push((k.clone(), v.as_str().unwrap_or_default().to_owned()));
    }
    env.extend([
        ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME".into(), "main".into()),
        ("CI_API_V4_URL".into(), api.to_owned()),
        ("CI_PROJECT_ID".into(), "3".into()),
        ("CI_MERGE_REQUEST_IID".into(), "7".into()),
        ("VWS_GITLAB_TOKEN".into(), "test-token".into()),
    ]);
    // The runner runs the lines in one shell, in order, stopping at the first that fails.
    let lines: Vec<&str> = job["script"]
        .as_array()
        .expect("script")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let (ok, text) = bash(&work, &env, &lines.join("\n"));
    (ok, text, work)
}

#[test]
fn github_workflow_reviews_posts_then_edits_its_comment() {
    let f = base_repo();
    pr_half_signed(&f);
    let forge = ForgeStub::start();
    let (failed, log) = run_github(&f, "pr-half", &forge.url);
    assert_eq!(
        failed, None,
        "a half-signed head is reviewed, not refused:\n{log}"
    );
    assert!(
        log.contains("::error file=clusters/demo/release.yaml,line="),
        "annotations in the log:\n{log}"
    );
    let (failed, log) = run_github(&f, "pr-half", &forge.url);
    assert_eq!(failed, None, "{log}");
    let requests = forge.requests();
    let methods: Vec<(&str, &str)> = requests
        .iter()
        .map(|(m, p, _)| (m.as_str(), p.as_str()))
        .collect();
    assert_eq!(
        methods,
        vec![
            ("GET", "/repos/acme/intent/issues/7/comments?per_page=100"),
            ("POST", "/repos/acme/intent/issues/7/comments"),
            ("GET", "/repos/acme/intent/issues/7/comments?per_page=100"),
            ("PATCH", "/repos/acme/intent/issues/comments/1"),
        ],
        "the second run edits the first run's comment"
    );
    let body: Value = serde_json::from_str(&requests[1].2).expect("json body");
    let body = body["body"].as_str().expect("body");
    assert!(
        body.starts_with("<!-- vworkspace-operator:review -->\n"),
        "{body}"
    );
    assert!(body.contains("waiting for alice"), "{body}");
}

#[test]
fn github_workflow_fails_on_a_refused_head_after_commenting() {
    let f = base_repo();
    pr_refused(&f);
    let forge = ForgeStub::start();
    let (failed, log) = run_github(&f, "pr-refused", &forge.url);
    assert_eq!(
        failed.as_deref(),
        Some("verify --worktree (every key-free check, each cluster)"),
        "{log}"
    );
    assert!(
        forge
            .requests()
            .iter()
            .any(|(m, _, b)| m == "POST" && b.contains("refused")),
        "the comment says why before the job fails"
    );
}

#[test]
fn gitlab_job_reviews_reports_code_quality_and_notes() {
    let f = base_repo();
    pr_half_signed(&f);
    let forge = ForgeStub::start();
    let (ok, log, work) = run_gitlab(&f, "pr-half", &forge.url);
    assert!(ok, "{log}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(work.join("gl-code-quality.json")).expect("report"))
            .expect("code-quality JSON");
    assert!(
        report
            .as_array()
            .expect("array")
            .iter()
            .any(|i| i["severity"] == "critical"
                && i["location"]["path"] == "clusters/demo/release.yaml"),
        "{report}"
    );
    let (ok, log, _) = run_gitlab(&f, "pr-half", &forge.url);
    assert!(ok, "{log}");
    let methods: Vec<String> = forge
        .requests()
        .iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        methods,
        vec![
            "GET /projects/3/merge_requests/7/notes?per_page=100",
            "POST /projects/3/merge_requests/7/notes",
            "GET /projects/3/merge_requests/7/notes?per_page=100",
            "PUT /projects/3/merge_requests/7/notes/1",
        ]
    );
    let f = base_repo();
    pr_refused(&f);
    let (ok, log, _) = run_gitlab(&f, "pr-refused", &forge.url);
    assert!(!ok, "a refused head fails the job:\n{log}");
}
