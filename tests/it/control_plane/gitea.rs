//! The loop through a real forge (issue 25): Gitea, built from Go modules (`scripts/go-tools.sh build
//! gitea`), on loopback with SQLite. It hosts the intent repository that the operator fetches over
//! HTTP, signs the push webhooks it sends to the operator's receiver, and shows the commit statuses
//! the operator posts back through its API: what a platform team sees on each commit.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::fixture::Intent;
use super::forge::TOKEN;
use super::server::*;
use super::{OPS, SYSTEM, Scope, env, webhook_replica};
use crate::support::go_tools;

/// The decrypted value of the test's instance: it must never reach Gitea.
const PLAINTEXT: &str = "gitea-test-smtp-secret";

/// The Gitea user the test acts as (an admin made with Gitea's own CLI).
const USER: &str = "vws";

/// One Gitea server in its own process group, its data under one directory; stopped on drop.
struct Gitea {
    /// `http://127.0.0.1:<port>`.
    url: String,
    /// An API token of [`USER`] with every scope.
    token: String,
    http: reqwest::Client,
    _server: Proc,
}

impl Gitea {
    /// Writes app.ini under `dir`, makes the database, the admin and its token with the `gitea` CLI,
    /// starts `gitea web` and waits for its API.
    async fn start(binary: &Path, dir: &Path) -> Gitea {
        std::fs::create_dir_all(dir).expect("gitea dir");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        // Built without `bindata`, Gitea reads its locales and templates from its source tree,
        // which scripts/go-tools.sh keeps beside the binary (bin/../src).
        let source = binary
            .parent()
            .and_then(Path::parent)
            .map(|p| p.join("src"))
            .filter(|p| p.join("options/locale").is_dir())
            .unwrap_or_else(|| panic!("no Gitea source tree beside {}", binary.display()));
        let config = dir.join("app.ini");
        let d = dir.display();
        std::fs::write(
            &config,
            format!(
                "I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true\nAPP_NAME = vws-test\nRUN_MODE = prod\nWORK_PATH = {d}\n\
                 [server]\nHTTP_ADDR = 127.0.0.1\nHTTP_PORT = {port}\nROOT_URL = {url}/\nDISABLE_SSH = true\n\
                 OFFLINE_MODE = true\nLFS_START_SERVER = false\nSTATIC_ROOT_PATH = {}\n\
                 [database]\nDB_TYPE = sqlite3\nPATH = {d}/gitea.db\n[repository]\nROOT = {d}/repos\n\
                 [security]\nINSTALL_LOCK = true\nSECRET_KEY = vws-test-secret-key-0123456789\n\
                 [service]\nDISABLE_REGISTRATION = true\n\
                 [webhook]\nALLOWED_HOST_LIST = loopback\nDELIVER_TIMEOUT = 10\n\
                 [log]\nMODE = file\nROOT_PATH = {d}/log\nLEVEL = Info\n",
                source.display()
            ),
        )
        .expect("app.ini");
        let cli = |args: &[&str]| {
            let out = Command::new(binary)
                .args(args)
                .arg("--config")
                .arg(&config)
                .output()
                .expect("gitea runs");
            assert!(
                out.status.success(),
                "gitea {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        cli(&["migrate"]);
        cli(&[
            "admin",
            "user",
            "create",
            "--admin",
            "--username",
            USER,
            "--password",
            "vws-test-Passw0rd",
            "--email",
            "vws@example.org",
            "--must-change-password=false",
        ]);
        let token = cli(&[
            "admin",
            "user",
            "generate-access-token",
            "--username",
            USER,
            "--scopes",
            "all",
            "--raw",
        ]);
        let token = token.lines().last().expect("a token").to_owned();
        let server = Proc::spawn(
            Command::new(binary).args(["web", "--config"]).arg(&config),
            dir,
            "gitea",
        );
        let http = reqwest::Client::new();
        let version = format!("{url}/api/v1/version");
        wait_for("Gitea's API", 60, || async {
            let answer = http.get(&version).send().await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
        Gitea {
            url,
            token,
            http,
            _server: server,
        }
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/api/v1{path}", self.url))
            .header("Authorization", format!("token {}", self.token));
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(&body).expect("json"));
        }
        let answer = request.send().await.expect("Gitea answers");
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Creates the public repository `USER/name`; its clone URL.
    async fn create_repository(&self, name: &str) -> String {
        let repo = self
            .api(
                reqwest::Method::POST,
                "/user/repos",
                Some(json!({"name": name, "private": false})),
            )
            .await;
        repo["clone_url"].as_str().expect("clone_url").to_owned()
    }

    /// The URL to push to, with the token as the password.
    fn push_url(&self, name: &str) -> String {
        let host = self.url.trim_start_matches("http://");
        format!("http://{USER}:{}@{host}/{USER}/{name}.git", self.token)
    }

    /// A push webhook on `USER/name`, as Settings → Webhooks → Gitea makes it: JSON, signed with
    /// `secret` (Gitea computes `X-Gitea-Signature` itself).
    async fn add_push_hook(&self, name: &str, target: &str, secret: &str) {
        self.api(
            reqwest::Method::POST,
            &format!("/repos/{USER}/{name}/hooks"),
            Some(json!({"type": "gitea", "active": true, "events": ["push"],
                        "config": {"url": target, "content_type": "json", "secret": secret}})),
        )
        .await;
    }

    /// The commit statuses Gitea shows on `commit` of `USER/name`.
    async fn statuses(&self, name: &str, commit: &str) -> Vec<Value> {
        let listed = self
            .api(
                reqwest::Method::GET,
                &format!("/repos/{USER}/{name}/commits/{commit}/statuses"),
                None,
            )
            .await;
        listed.as_array().cloned().unwrap_or_default()
    }

    /// Waits until Gitea shows `context` on `commit` in `state`; that status.
    async fn wait_for_status(&self, name: &str, commit: &str, context: &str, state: &str) -> Value {
        wait_for(&format!("{state} {context} on {commit}"), 90, || async {
            self.statuses(name, commit)
                .await
                .into_iter()
                .find(|s| s["context"] == context && s["status"] == state)
        })
        .await
    }
}

/// The Gitea binary, or why there is none (scripts/test.sh builds it).
fn gitea_binary(test: &str) -> Option<PathBuf> {
    match go_tools::tool("gitea") {
        Ok(path) => Some(path),
        Err(why) => {
            skipped(test, &why);
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_gitea_is_applied_at_once_and_gitea_shows_each_commits_status() {
    let test = "a_push_to_gitea_is_applied_at_once_and_gitea_shows_each_commits_status";
    let Some(env) = env(test).await else {
        return;
    };
    let Some(binary) = gitea_binary(test) else {
        return;
    };
    let cluster = "cp-gitea";
    let ns = "cp-gitea-a";
    let intent = Intent::new(cluster);
    intent.add_instance(ns, "nextcloud", PLAINTEXT);
    intent.release(&[]);
    let first = intent.commit("release 1");
    let mut scope = Scope::new(&env, &intent, &[ns]).await;
    let gitea = Gitea::start(&binary, &scope.dir.join("gitea")).await;
    let clone_url = gitea.create_repository("intent").await;
    intent.git(&["push", "-q", &gitea.push_url("intent"), "HEAD:main"]);

    // The Cluster follows the Gitea repository and reports to it.
    let token_secret = format!("gitea-token-{cluster}");
    scope
        .apply(
            &env.admin,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": token_secret, "namespace": SYSTEM},
                   "stringData": {"token": gitea.token}}),
        )
        .await;
    merge_patch(
        &env.admin,
        OPS,
        "Cluster",
        None,
        cluster,
        &json!({"spec": {
            "source": {"url": clone_url},
            "commitStatus": {"provider": "Gitea", "secretRef": {"name": token_secret},
                             "address": format!("{}/api/v1", gitea.url),
                             "repository": format!("{USER}/intent")}}}),
    )
    .await
    .expect("the Cluster follows Gitea");
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let (operator, port) = super::forge::operator_with_receiver(&env, &scope.dir);
    let hook = format!(
        "http://127.0.0.1:{port}{}",
        vworkspace_controller::receiver::hook_path(TOKEN.as_bytes())
    );
    gitea.add_push_hook("intent", &hook, TOKEN).await;

    let context = format!("vworkspace/{cluster}");
    let applied = |serial: u64| {
        let admin = env.admin.clone();
        async move {
            let object = get(&admin, OPS, "Cluster", None, cluster).await?;
            (object.data["status"]["lastAppliedSerial"] == serial).then_some(())
        }
    };
    wait_for("release 1 applied from Gitea", 90, || applied(1)).await;
    let status = gitea
        .wait_for_status("intent", &first, &context, "success")
        .await;
    let description = status["description"].as_str().unwrap_or_default();
    assert!(description.contains("serial 1"), "{status}");

    // Release 2, pushed: the Cluster's interval is 5 minutes, so only Gitea's webhook can start
    // the pass that applies it.
    intent.add_instance(ns, "wiki", "two");
    intent.release(&[]);
    let second = intent.commit("release 2");
    let pushed = std::time::Instant::now();
    intent.git(&["push", "-q", &gitea.push_url("intent"), "HEAD:main"]);
    wait_for("release 2 applied after Gitea's webhook", 60, || applied(2)).await;
    let took = pushed.elapsed();
    let status = gitea
        .wait_for_status("intent", &second, &context, "success")
        .await;
    assert!(
        status["description"]
            .as_str()
            .unwrap_or_default()
            .contains("serial 2"),
        "{status}"
    );
    scope.also_delete(
        "apps.vworkspace.io/v1alpha1",
        "ApplicationInstance",
        Some(ns),
        "wiki",
    );

    // A commit no trusted key signed: refused, nothing applied, and Gitea shows the failure and its
    // reason on that commit (never a value or a path).
    intent.write("NOTES.md", "a change no trusted key signed\n");
    let rogue = intent.commit_signed_by_rogue("an unsigned change");
    intent.git(&["push", "-q", &gitea.push_url("intent"), "HEAD:main"]);
    let status = gitea
        .wait_for_status("intent", &rogue, &context, "failure")
        .await;
    let description = status["description"].as_str().unwrap_or_default();
    assert!(!description.is_empty(), "{status}");
    assert!(
        !description.contains(PLAINTEXT) && !description.contains(".yaml"),
        "{status}"
    );
    wait_for("the refusal recorded", 60, || async {
        let object = get(&env.admin, OPS, "Cluster", None, cluster).await?;
        let ready = object.data["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        (ready["status"] == "False").then_some(())
    })
    .await;
    assert!(
        applied(2).await.is_some(),
        "the refused commit applied nothing"
    );

    // Gitea's own requests, signed by Gitea, were taken as Gitea's (it also sends GitHub's headers).
    let log = operator.stderr();
    assert!(
        log.contains("push receiver accepted a request")
            && log.contains("\"forge\":\"gitea\"")
            && !log.contains("push receiver refused a request"),
        "{log}"
    );
    eprintln!("gitea: push → release 2 applied in {} ms", took.as_millis());
    drop(operator);
}
