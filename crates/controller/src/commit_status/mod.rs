//! Commit statuses back to the forge: after each pass of a Cluster with `spec.commitStatus`, the
//! commit it applied (`success`), refused (`failure`) or is retrying (`pending`) gets a status with
//! context `vworkspace/<clusterId>` and a description of serial and reason only.
//!
//! Off the pass: the pass only queues the update ([`Sender::submit`], never waits; a full queue
//! drops it and counts it). One background task sends them in order, deduplicated per Cluster,
//! commit and state (an unchanged pass every interval sends nothing), reading the token from the
//! Secret at send time, retrying transient failures with back-off.

pub mod request;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::metrics::{Metrics, ResultLabel};
use request::{State, StatusUpdate};

/// Updates waiting to be sent; more are dropped (and counted) rather than delay a pass.
pub const QUEUE: usize = 256;
/// Attempts per update (the first and the retries).
pub const ATTEMPTS: u32 = 5;
/// The first retry's delay, doubling per attempt.
pub const RETRY_START: Duration = Duration::from_millis(500);
/// One request's time limit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The key of the Secret holding the API token.
pub const TOKEN_KEY: &str = "token";

/// The queue into the sending task.
#[derive(Debug, Clone)]
pub struct Sender {
    queue: tokio::sync::mpsc::Sender<StatusUpdate>,
    metrics: Arc<Metrics>,
}

impl Sender {
    /// Starts the sending task: tokens are read from Secrets in `namespace` with `client`.
    pub fn spawn(
        client: Client,
        namespace: String,
        metrics: Arc<Metrics>,
    ) -> Result<Sender, String> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("vworkspace-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("commit status client: {e}"))?;
        let (queue, receiver) = tokio::sync::mpsc::channel(QUEUE);
        let task = Task {
            client,
            namespace,
            http,
            metrics: metrics.clone(),
            sent: HashMap::new(),
        };
        tokio::spawn(task.run(receiver));
        Ok(Sender { queue, metrics })
    }

    /// Queues `update` without waiting.
    pub fn submit(&self, update: StatusUpdate) {
        if self.queue.try_send(update).is_err() {
            self.metrics
                .commit_statuses
                .get_or_create(&ResultLabel { result: "dropped" })
                .inc();
            tracing::warn!("commit status queue full: a status was dropped");
        }
    }
}

struct Task {
    client: Client,
    namespace: String,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    /// The last (commit, state) sent per Cluster.
    sent: HashMap<String, (String, State)>,
}

/// Why one attempt failed: worth retrying or not.
enum Failed {
    Transient(String),
    Permanent(String),
}

impl Task {
    async fn run(mut self, mut receiver: tokio::sync::mpsc::Receiver<StatusUpdate>) {
        while let Some(update) = receiver.recv().await {
            let key = (update.commit.clone(), update.state);
            if self.sent.get(&update.cluster) == Some(&key) {
                continue;
            }
            let result = self.send_with_retries(&update).await;
            let label = match &result {
                Ok(()) => {
                    self.sent.insert(update.cluster.clone(), key);
                    "sent"
                }
                Err(problem) => {
                    tracing::warn!(cluster = %update.cluster, commit = %update.commit, problem = %problem, "commit status not sent");
                    "failed"
                }
            };
            self.metrics
                .commit_statuses
                .get_or_create(&ResultLabel { result: label })
                .inc();
        }
    }

    async fn send_with_retries(&self, update: &StatusUpdate) -> Result<(), String> {
        let mut delay = RETRY_START;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.send(update).await {
                Ok(()) => return Ok(()),
                Err(Failed::Permanent(problem)) => return Err(problem),
                Err(Failed::Transient(problem)) => last = problem,
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        Err(format!("{last} (after {ATTEMPTS} attempts)"))
    }

    async fn token(&self, update: &StatusUpdate) -> Result<zeroize::Zeroizing<String>, Failed> {
        let name = &update.spec.secret_ref.name;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = secrets.get(name).await.map_err(|e| {
            Failed::Transient(format!("read Secret {}/{name}: {e}", self.namespace))
        })?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(TOKEN_KEY))
            .map(|v| v.0.clone())
            .ok_or_else(|| {
                Failed::Permanent(format!(
                    "Secret {}/{name} has no key {TOKEN_KEY}",
                    self.namespace
                ))
            })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            Failed::Permanent(format!(
                "Secret {}/{name} key {TOKEN_KEY}: not UTF-8",
                self.namespace
            ))
        })?;
        Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
    }

    async fn send(&self, update: &StatusUpdate) -> Result<(), Failed> {
        let token = self.token(update).await?;
        let prepared = request::prepare(update, &token).map_err(Failed::Permanent)?;
        let body =
            serde_json::to_vec(&prepared.body).map_err(|e| Failed::Permanent(e.to_string()))?;
        let mut request = self
            .http
            .post(&prepared.url)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in &prepared.headers {
            request = request.header(*name, value);
        }
        // Errors name the URL's host and path, never a header (the token is in one).
        let response = request.send().await.map_err(|e| {
            Failed::Transient(format!("POST {}: {}", prepared.url, e.without_url()))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let problem = format!("POST {}: HTTP {}", prepared.url, status.as_u16());
        if status.is_server_error() || status.as_u16() == 429 {
            Err(Failed::Transient(problem))
        } else {
            Err(Failed::Permanent(problem))
        }
    }
}
