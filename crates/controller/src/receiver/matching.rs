//! Which Clusters a verified push concerns: the same repository (by host and path, whatever the
//! scheme, user, port or `.git` suffix) and the ref the Cluster follows.

use vworkspace_core::crd::{Cluster, GitSourceRef};

/// `host/path` of a repository URL, lower-cased, without scheme, userinfo, port, `.git` or a
/// trailing slash: `https://github.com/Org/Intent.git`, `ssh://git@github.com:22/org/intent` and
/// `git@github.com:org/intent.git` are all `github.com/org/intent`. `None` when it has no host.
pub fn repository_key(url: &str) -> Option<String> {
    let url = url.trim();
    let (authority, path) = match url.split_once("://") {
        Some((_, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        }
        // scp-like `user@host:path`.
        None => url.split_once(':')?,
    };
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').map(|(h, _)| h)?,
        None => host_port.split(':').next().unwrap_or_default(),
    };
    // `file:///srv/intent` has no host: the local machine.
    let host = if host.is_empty() && url.starts_with("file://") {
        "localhost"
    } else {
        host
    };
    let path = path.trim_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    let path = path.strip_prefix("~/").unwrap_or(path);
    if host.is_empty() || path.is_empty() {
        return None;
    }
    Some(format!("{host}/{path}").to_ascii_lowercase())
}

/// The full ref a Cluster follows (`None` for a commit pin, which no push moves).
pub fn followed_ref(reference: &GitSourceRef) -> Option<String> {
    match reference {
        GitSourceRef::Branch(branch) => Some(format!("refs/heads/{branch}")),
        GitSourceRef::Tag(tag) => Some(format!("refs/tags/{tag}")),
        GitSourceRef::Commit(_) => None,
    }
}

/// Whether `cluster` follows one of `urls` at `git_ref`.
pub fn concerns(cluster: &Cluster, urls: &[String], git_ref: &str) -> bool {
    let source = &cluster.spec.source;
    if followed_ref(&source.git_ref).as_deref() != Some(git_ref) {
        return false;
    }
    let Some(followed) = repository_key(&source.url) else {
        return false;
    };
    urls.iter()
        .filter_map(|u| repository_key(u))
        .any(|key| key == followed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_repository_many_urls() {
        let key = Some("github.com/org/intent".to_owned());
        for url in [
            "https://github.com/Org/Intent.git",
            "https://token@github.com/org/intent/",
            "ssh://git@github.com:22/org/intent",
            "git@github.com:org/intent.git",
            "git://github.com/org/intent.git",
        ] {
            assert_eq!(repository_key(url), key, "{url}");
        }
        assert_ne!(repository_key("https://github.com/org/intent2"), key);
        assert_ne!(repository_key("https://gitlab.com/org/intent"), key);
        assert_eq!(repository_key("https://github.com/"), None);
        assert_eq!(repository_key("intent"), None);
        assert_eq!(
            repository_key("file:///srv/git/intent.git"),
            Some("localhost/srv/git/intent".to_owned())
        );
    }
}
