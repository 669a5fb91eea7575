//! Which forge sent a request, whether it holds the shared token, and what it says was pushed.
//!
//! The signature is checked over the exact body bytes before the body is parsed, and compared in
//! constant time: GitHub `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(token, body)>`, Gitea and
//! Forgejo `X-Gitea-Signature` / `X-Forgejo-Signature: <hex HMAC-SHA256(token, body)>`, GitLab
//! `X-Gitlab-Token: <token>`, and the generic `X-Signature: sha256=<hex HMAC-SHA256(token, body)>`
//! (Flux's `generic-hmac`). Only the repository URLs and the ref are read from a verified payload:
//! they choose which Cluster gets a pass, never what it applies.

use serde::Deserialize;
use subtle::ConstantTimeEq as _;

/// The forge a request claims to come from (by its event header), a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    /// GitHub (`X-GitHub-Event`).
    GitHub,
    /// GitLab (`X-Gitlab-Event`).
    GitLab,
    /// Gitea or Forgejo (`X-Gitea-Event`, `X-Forgejo-Event`).
    Gitea,
    /// Anything else: the generic HMAC receiver (`X-Signature`).
    Generic,
}

impl Forge {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
            Forge::Generic => "generic",
        }
    }

    /// Reads the forge from the event headers. Gitea and Forgejo first: for compatibility they also
    /// send GitHub's headers (`X-GitHub-Event`, `X-Hub-Signature-256`) and Gogs' (seen from Gitea
    /// 1.27 in `tests/it/control_plane/gitea.rs`); GitHub never sends theirs.
    pub fn of(headers: &http::HeaderMap) -> Forge {
        if headers.contains_key("x-gitea-event") || headers.contains_key("x-forgejo-event") {
            Forge::Gitea
        } else if headers.contains_key("x-github-event") {
            Forge::GitHub
        } else if headers.contains_key("x-gitlab-event") {
            Forge::GitLab
        } else {
            Forge::Generic
        }
    }

    /// The event name, when the forge sends one.
    fn event(self, headers: &http::HeaderMap) -> Option<String> {
        let name = match self {
            Forge::GitHub => "x-github-event",
            Forge::GitLab => "x-gitlab-event",
            Forge::Gitea if headers.contains_key("x-gitea-event") => "x-gitea-event",
            Forge::Gitea => "x-forgejo-event",
            Forge::Generic => return None,
        };
        header(headers, name).map(str::to_owned)
    }
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Whether the request carries proof of the token for `forge`, in constant time.
pub fn authentic(forge: Forge, headers: &http::HeaderMap, body: &[u8], token: &[u8]) -> bool {
    let hmac_hex = |value: Option<&str>| {
        let Some(Ok(claimed)) = value.map(hex::decode) else {
            return false;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token);
        ring::hmac::verify(&key, body, &claimed).is_ok()
    };
    match forge {
        Forge::GitHub => {
            hmac_hex(header(headers, "x-hub-signature-256").and_then(|v| v.strip_prefix("sha256=")))
        }
        Forge::Gitea => hmac_hex(
            header(headers, "x-gitea-signature").or_else(|| header(headers, "x-forgejo-signature")),
        ),
        Forge::Generic => {
            hmac_hex(header(headers, "x-signature").and_then(|v| v.strip_prefix("sha256=")))
        }
        Forge::GitLab => match headers.get("x-gitlab-token") {
            // Equal lengths are compared in constant time; a length mismatch says only the length.
            Some(claimed) => bool::from(claimed.as_bytes().ct_eq(token)),
            None => false,
        },
    }
}

/// What a verified push event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The full ref pushed (`refs/heads/main`, `refs/tags/v1`).
    pub git_ref: String,
    /// Every URL the payload gives for the repository (https, ssh, git).
    pub urls: Vec<String>,
}

/// Why a verified request triggers nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAPush {
    /// Another event (a ping, an issue): acknowledged, ignored.
    Event(String),
    /// A push body that does not parse as the forge documents it.
    Malformed(String),
}

#[derive(Deserialize)]
struct GitHubLike {
    #[serde(rename = "ref")]
    git_ref: String,
    repository: GitHubRepository,
}

#[derive(Deserialize)]
struct GitHubRepository {
    clone_url: Option<String>,
    ssh_url: Option<String>,
    git_url: Option<String>,
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct GitLabPush {
    #[serde(rename = "ref")]
    git_ref: String,
    project: GitLabProject,
}

#[derive(Deserialize)]
struct GitLabProject {
    git_ssh_url: Option<String>,
    git_http_url: Option<String>,
    web_url: Option<String>,
}

#[derive(Deserialize)]
struct GenericPush {
    #[serde(rename = "ref")]
    git_ref: String,
    repository: String,
}

/// Reads the push from a verified body (`forge`'s documented payload).
pub fn push(forge: Forge, headers: &http::HeaderMap, body: &[u8]) -> Result<Push, NotAPush> {
    let malformed =
        |e: serde_json::Error| NotAPush::Malformed(format!("{} push payload: {e}", forge.label()));
    let event = forge.event(headers);
    match (forge, event.as_deref()) {
        (Forge::GitHub | Forge::Gitea, Some("push"))
        | (Forge::GitLab, Some("Push Hook" | "Tag Push Hook"))
        | (Forge::Generic, _) => {}
        (_, other) => {
            return Err(NotAPush::Event(
                other.unwrap_or("none").chars().take(64).collect(),
            ));
        }
    }
    let (git_ref, urls) = match forge {
        Forge::GitHub | Forge::Gitea => {
            let p: GitHubLike = serde_json::from_slice(body).map_err(malformed)?;
            let r = p.repository;
            (
                p.git_ref,
                [r.clone_url, r.ssh_url, r.git_url, r.html_url]
                    .into_iter()
                    .flatten()
                    .collect(),
            )
        }
        Forge::GitLab => {
            let p: GitLabPush = serde_json::from_slice(body).map_err(malformed)?;
            let r = p.project;
            (
                p.git_ref,
                [r.git_http_url, r.git_ssh_url, r.web_url]
                    .into_iter()
                    .flatten()
                    .collect(),
            )
        }
        Forge::Generic => {
            let p: GenericPush = serde_json::from_slice(body).map_err(malformed)?;
            (p.git_ref, vec![p.repository])
        }
    };
    Ok(Push { git_ref, urls })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(names: &[&'static str]) -> http::HeaderMap {
        names
            .iter()
            .map(|n| {
                (
                    http::HeaderName::from_static(n),
                    http::HeaderValue::from_static("push"),
                )
            })
            .collect()
    }

    #[test]
    fn the_forge_is_read_from_its_own_headers_first() {
        let cases: [(&[&'static str], Forge); 6] = [
            (&["x-github-event"], Forge::GitHub),
            (&["x-gitlab-event"], Forge::GitLab),
            (&["x-gitea-event"], Forge::Gitea),
            (&["x-forgejo-event"], Forge::Gitea),
            // What Gitea 1.27 sends with every webhook: its own, GitHub's and Gogs' event headers.
            (
                &["x-github-event", "x-gitea-event", "x-gogs-event"],
                Forge::Gitea,
            ),
            (&["x-signature"], Forge::Generic),
        ];
        for (names, forge) in cases {
            assert_eq!(Forge::of(&headers(names)), forge, "{names:?}");
        }
    }
}
