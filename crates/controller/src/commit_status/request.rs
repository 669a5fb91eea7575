//! One commit status as each forge's API takes it: URL, headers and JSON body (pure; the sender
//! does the I/O). Documented shapes:
//!
//! - GitHub: `POST {base}/repos/{owner}/{repo}/statuses/{sha}`, `Authorization: Bearer <token>`,
//!   body `{"state": "success|failure|pending", "description", "context"}`.
//! - GitLab: `POST {base}/projects/{url-encoded path}/statuses/{sha}`, `PRIVATE-TOKEN: <token>`,
//!   body `{"state": "success|failed|pending", "name", "description"}`.
//! - Gitea/Forgejo: `POST {base}/repos/{owner}/{repo}/statuses/{sha}`, `Authorization: token <token>`,
//!   body `{"state": "success|failure|pending", "context", "description"}`.

use vworkspace_core::crd::{CommitStatusSpec, ForgeProvider};

/// A commit status's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// A pass is retrying (a transient failure).
    Pending,
    /// The commit was verified and applied.
    Success,
    /// The commit was refused.
    Failure,
}

/// GitHub's limit on a description; the others accept more.
pub const MAX_DESCRIPTION: usize = 140;

/// What to send, before the token is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    /// The Cluster object's name (logs, deduplication).
    pub cluster: String,
    /// `vworkspace/<clusterId>`.
    pub context: String,
    /// Where and how.
    pub spec: CommitStatusSpec,
    /// The Cluster's source URL (the default API base and repository).
    pub source_url: String,
    /// The 40-hex commit.
    pub commit: String,
    /// The state.
    pub state: State,
    /// Serial and reason only, never a value or a path.
    pub description: String,
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The URL.
    pub url: String,
    /// Header name and value; the token is among them (never log them).
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: serde_json::Value,
}

/// The source URL's host and path (`github.com`, `org/intent`), without userinfo, port or `.git`.
fn host_and_path(url: &str) -> Option<(String, String)> {
    let key = crate::receiver::matching::repository_key(url)?;
    let (host, path) = key.split_once('/')?;
    Some((host.to_owned(), path.to_owned()))
}

/// Builds the request for `update` with `token`, or says why it cannot be built.
pub fn prepare(update: &StatusUpdate, token: &str) -> Result<Prepared, String> {
    let (host, source_path) = host_and_path(&update.source_url)
        .ok_or_else(|| "the source URL names no host and repository".to_owned())?;
    let repository = update.spec.repository.clone().unwrap_or(source_path);
    let base = match (&update.spec.address, update.spec.provider) {
        (Some(address), _) => address.trim_end_matches('/').to_owned(),
        (None, ForgeProvider::GitHub) if host == "github.com" => {
            "https://api.github.com".to_owned()
        }
        (None, ForgeProvider::GitHub) => format!("https://{host}/api/v3"),
        (None, ForgeProvider::GitLab) => format!("https://{host}/api/v4"),
        (None, ForgeProvider::Gitea) => format!("https://{host}/api/v1"),
    };
    if !update.commit.chars().all(|c| c.is_ascii_hexdigit()) || update.commit.len() != 40 {
        return Err("not a full commit id".into());
    }
    if repository
        .split('/')
        .any(|part| part.is_empty() || part == "..")
    {
        return Err(format!("repository {repository:?} is not owner/name"));
    }
    let description: String = update.description.chars().take(MAX_DESCRIPTION).collect();
    let (state, failure) = match update.state {
        State::Pending => ("pending", "pending"),
        State::Success => ("success", "success"),
        State::Failure => ("failure", "failed"),
    };
    Ok(match update.spec.provider {
        ForgeProvider::GitHub => Prepared {
            url: format!("{base}/repos/{repository}/statuses/{}", update.commit),
            headers: vec![
                ("authorization", format!("Bearer {token}")),
                ("accept", "application/vnd.github+json".into()),
                ("x-github-api-version", "2022-11-28".into()),
            ],
            body: serde_json::json!({"state": state, "description": description, "context": update.context}),
        },
        ForgeProvider::GitLab => Prepared {
            url: format!(
                "{base}/projects/{}/statuses/{}",
                repository.replace('/', "%2F"),
                update.commit
            ),
            headers: vec![("private-token", token.to_owned())],
            body: serde_json::json!({"state": failure, "name": update.context, "description": description}),
        },
        ForgeProvider::Gitea => Prepared {
            url: format!("{base}/repos/{repository}/statuses/{}", update.commit),
            headers: vec![("authorization", format!("token {token}"))],
            body: serde_json::json!({"state": state, "context": update.context, "description": description}),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vworkspace_core::crd::LocalSecretRef;

    fn update(provider: ForgeProvider, address: Option<&str>) -> StatusUpdate {
        StatusUpdate {
            cluster: "prod".into(),
            context: "vworkspace/prod".into(),
            spec: CommitStatusSpec {
                provider,
                address: address.map(str::to_owned),
                repository: None,
                secret_ref: LocalSecretRef {
                    name: "forge".into(),
                },
            },
            source_url: "ssh://git@git.example.org:2222/platform/intent.git".into(),
            commit: "a".repeat(40),
            state: State::Failure,
            description: "refused: ReleaseInvalid".into(),
        }
    }

    #[test]
    fn each_forge_shape() {
        let sha = "a".repeat(40);
        let github = prepare(&update(ForgeProvider::GitHub, None), "t").expect("github");
        assert_eq!(
            github.url,
            format!("https://git.example.org/api/v3/repos/platform/intent/statuses/{sha}")
        );
        assert_eq!(github.body["state"], "failure");
        assert_eq!(github.body["context"], "vworkspace/prod");
        let gitlab = prepare(&update(ForgeProvider::GitLab, None), "t").expect("gitlab");
        assert_eq!(
            gitlab.url,
            format!("https://git.example.org/api/v4/projects/platform%2Fintent/statuses/{sha}")
        );
        assert_eq!(gitlab.body["state"], "failed");
        assert_eq!(gitlab.body["name"], "vworkspace/prod");
        assert_eq!(gitlab.headers, vec![("private-token", "t".to_owned())]);
        let gitea = prepare(
            &update(ForgeProvider::Gitea, Some("http://127.0.0.1:3000/api/v1/")),
            "t",
        )
        .expect("gitea");
        assert_eq!(
            gitea.url,
            format!("http://127.0.0.1:3000/api/v1/repos/platform/intent/statuses/{sha}")
        );
        assert_eq!(gitea.headers, vec![("authorization", "token t".to_owned())]);
        let mut long = update(ForgeProvider::GitHub, None);
        long.description = "x".repeat(500);
        long.source_url = "https://github.com/org/intent".into();
        let github = prepare(&long, "t").expect("github.com");
        assert!(
            github
                .url
                .starts_with("https://api.github.com/repos/org/intent/")
        );
        assert_eq!(
            github.body["description"].as_str().map(str::len),
            Some(MAX_DESCRIPTION)
        );
        let mut bad = update(ForgeProvider::GitHub, None);
        bad.commit = "HEAD".into();
        assert!(prepare(&bad, "t").is_err());
    }
}
