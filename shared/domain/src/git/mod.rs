//! Builds from git: which host a repository lives on, what a webhook said (a push or a
//! pull request, at which commit), and which of those a pipeline builds. Pure: the HTTP
//! side (contents, tarballs, commit statuses) is `kiln_core::git`.

pub mod glob;
pub mod hook;

use crate::Repo;
use crate::secret::SecretName;
use serde::{Deserialize, Serialize};

/// The git host of a repository: how its webhooks are signed and its API is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    /// Gitea and Forgejo (the same API and webhooks).
    Gitea,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::Github, Provider::Gitea];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitea => "gitea",
        }
    }

    /// The API root when a repository does not name one; Gitea is self-hosted: none.
    pub fn default_api_url(self) -> Option<&'static str> {
        match self {
            Provider::Github => Some("https://api.github.com"),
            Provider::Gitea => None,
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown provider {s:?} (expected github or gitea)"))
    }
}

/// Which git event started a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GitEvent {
    Push,
    PullRequest,
}

impl GitEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            GitEvent::Push => "push",
            GitEvent::PullRequest => "pull_request",
        }
    }
}

/// What a build of a commit was started by: recorded on the build (`GET /v1/builds/{id}`
/// shows it as `git`), and what steps see as `KILN_COMMIT`, `KILN_BRANCH`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitInfo {
    pub provider: Provider,
    /// The repository as the host names it (`owner/name`): where the commit is fetched
    /// from and its statuses are posted to (the base repository of a pull request).
    pub repo: String,
    /// The host's API root, e.g. `https://api.github.com`.
    pub api_url: String,
    pub event: GitEvent,
    /// The full ref: `refs/heads/main`, `refs/tags/v1`, `refs/pull/7/head`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// A push to a branch: the branch; a pull request: its head branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A push of a tag: the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The commit built (full SHA).
    pub commit: String,
    /// A pull request: its number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    /// A pull request: the branch it would merge into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<String>,
    /// A pull request from another repository than the base: its builds get no secrets.
    #[serde(default)]
    pub fork: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The head commit's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The host's delivery id of the webhook (`X-GitHub-Delivery`, `X-Gitea-Delivery`).
    pub delivery: String,
}

impl GitInfo {
    /// The variables every step of a git build sees (empty strings for what does not
    /// apply, so a step can test them without `set -u` failing).
    pub fn step_vars(&self) -> Vec<(String, String)> {
        let or_empty = |o: &Option<String>| o.clone().unwrap_or_default();
        vec![
            ("KILN_COMMIT".to_string(), self.commit.clone()),
            ("KILN_BRANCH".to_string(), or_empty(&self.branch)),
            ("KILN_TAG".to_string(), or_empty(&self.tag)),
            ("KILN_PULL_REQUEST".to_string(), self.pull_request.map(|n| n.to_string()).unwrap_or_default()),
            ("KILN_GIT_EVENT".to_string(), self.event.as_str().to_string()),
            ("KILN_GIT_REF".to_string(), self.git_ref.clone()),
        ]
    }

    /// What a newer build supersedes: builds of the same branch (pushes) or the same pull
    /// request.
    pub fn supersede_key(&self) -> Option<String> {
        match (self.event, self.pull_request, &self.branch) {
            (GitEvent::PullRequest, Some(n), _) => Some(format!("pr/{n}")),
            (GitEvent::Push, _, Some(b)) => Some(format!("branch/{b}")),
            _ => None,
        }
    }
}

/// Which git events build a pipeline: its top-level `on:`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GitTriggers {
    /// Pushes build when this is set (and the ref passes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<RefFilter>,
    /// Pull requests build when this is set (and their base branch passes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<RefFilter>,
}

/// Branch and tag globs (see [`glob::glob_match`]). With neither list, every branch and
/// tag passes; with only one, only refs of that kind can pass.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RefFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl RefFilter {
    fn passes(&self, kind: &str, name: &str) -> bool {
        let (own, other) = match kind {
            "branch" => (&self.branches, &self.tags),
            _ => (&self.tags, &self.branches),
        };
        match (own, other) {
            (Some(globs), _) => globs.iter().any(|g| glob::glob_match(g, name)),
            (None, Some(_)) => false,
            (None, None) => true,
        }
    }
}

/// Whether a pipeline with these triggers (`None`: no top-level `on:`) builds `info`;
/// `Err` with the reason it does not, for the webhook's answer.
pub fn should_build(triggers: Option<&GitTriggers>, info: &GitInfo) -> Result<(), String> {
    let (filter, kind, name) = match info.event {
        GitEvent::Push => match (&info.branch, &info.tag) {
            (Some(b), _) => (triggers.map(|t| &t.push), "branch", b.as_str()),
            (None, Some(t)) => (triggers.map(|t| &t.push), "tag", t.as_str()),
            (None, None) => {
                return Err(format!("the push of {} is neither a branch nor a tag", info.git_ref));
            }
        },
        GitEvent::PullRequest => {
            let base = info.base_branch.as_deref().unwrap_or_default();
            (triggers.map(|t| &t.pull_request), "branch", base)
        }
    };
    let event = info.event.as_str();
    match filter {
        // No top-level `on:`: pushes to any branch, and pull requests (tags do not build).
        None if kind == "tag" => {
            Err(format!("the pipeline has no top-level `on:`, so pushes of tags (here {name}) do not build"))
        }
        None => Ok(()),
        Some(None) => Err(format!("the pipeline's `on:` does not list {event}")),
        Some(Some(f)) if f.passes(kind, name) => Ok(()),
        Some(Some(_)) => Err(match info.event {
            GitEvent::Push => format!("{event} to {kind} {name} is not in the pipeline's `on.{event}`"),
            GitEvent::PullRequest => {
                format!("pull requests into {name} are not in the pipeline's `on.pull_request.branches`")
            }
        }),
    }
}

/// The User-Agent of Kiln's requests to git hosts (GitHub refuses requests without one).
pub const USER_AGENT: &str = concat!("kiln/", env!("CARGO_PKG_VERSION"));

impl Provider {
    /// The `Authorization` header value for a token of this host.
    pub fn authorization(self, token: &str) -> String {
        match self {
            Provider::Github => format!("Bearer {token}"),
            Provider::Gitea => format!("token {token}"),
        }
    }
}

/// Where a repository's webhook secret and host token are kept in the secret store: under
/// a repository key no route can name (an org never starts with `-`), so no `secrets:`
/// declaration and no secrets route reaches them.
pub fn credentials_repo(repo: &Repo) -> Repo {
    Repo::new(format!("-git-{}", repo.org), repo.repo.clone())
}

/// The secret-store names of a repository's git credentials (under [`credentials_repo`]).
pub fn webhook_secret_name() -> SecretName {
    SecretName::parse("WEBHOOK_SECRET").expect("a valid secret name")
}

pub fn token_name() -> SecretName {
    SecretName::parse("TOKEN").expect("a valid secret name")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(branch: Option<&str>, tag: Option<&str>) -> GitInfo {
        GitInfo {
            provider: Provider::Github,
            repo: "acme/web".into(),
            api_url: "https://api.github.com".into(),
            event: GitEvent::Push,
            git_ref: "refs/heads/x".into(),
            branch: branch.map(str::to_string),
            tag: tag.map(str::to_string),
            commit: "a".repeat(40),
            pull_request: None,
            base_branch: None,
            fork: false,
            author: None,
            message: None,
            delivery: "d".into(),
        }
    }

    fn pr(base: &str) -> GitInfo {
        GitInfo {
            event: GitEvent::PullRequest,
            pull_request: Some(7),
            base_branch: Some(base.into()),
            ..push(Some("feature"), None)
        }
    }

    fn filter(branches: Option<&[&str]>, tags: Option<&[&str]>) -> RefFilter {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        RefFilter { branches: branches.map(v), tags: tags.map(v) }
    }

    #[test]
    fn without_on_pushes_to_branches_and_pull_requests_build() {
        assert!(should_build(None, &push(Some("any/branch"), None)).is_ok());
        assert!(should_build(None, &pr("whatever")).is_ok());
        assert!(should_build(None, &push(None, Some("v1"))).unwrap_err().contains("tags"));
    }

    #[test]
    fn on_filters_by_branch_tag_and_base() {
        let t = GitTriggers {
            push: Some(filter(Some(&["main", "release/*"]), Some(&["v*"]))),
            pull_request: Some(filter(Some(&["main"]), None)),
        };
        assert!(should_build(Some(&t), &push(Some("main"), None)).is_ok());
        assert!(should_build(Some(&t), &push(Some("release/1.2"), None)).is_ok());
        let why = should_build(Some(&t), &push(Some("feature/x"), None)).unwrap_err();
        assert_eq!(why, "push to branch feature/x is not in the pipeline's `on.push`");
        assert!(should_build(Some(&t), &push(None, Some("v2.0"))).is_ok());
        assert!(should_build(Some(&t), &push(None, Some("nightly"))).is_err());
        assert!(should_build(Some(&t), &pr("main")).is_ok());
        assert!(should_build(Some(&t), &pr("develop")).unwrap_err().contains("into develop"));

        // Only branches listed: tags do not build; only tags: branches do not.
        let branches_only = GitTriggers { push: Some(filter(Some(&["main"]), None)), pull_request: None };
        assert!(should_build(Some(&branches_only), &push(None, Some("v1"))).is_err());
        assert!(
            should_build(Some(&branches_only), &pr("main"))
                .unwrap_err()
                .contains("does not list pull_request")
        );
        let tags_only = GitTriggers { push: Some(filter(None, Some(&["v*"]))), pull_request: None };
        assert!(should_build(Some(&tags_only), &push(Some("main"), None)).is_err());
        // `push:` with no lists: every branch and tag.
        let all = GitTriggers { push: Some(RefFilter::default()), pull_request: None };
        assert!(should_build(Some(&all), &push(None, Some("anything"))).is_ok());
    }

    #[test]
    fn step_vars_and_supersede_keys() {
        let vars: std::collections::BTreeMap<_, _> = pr("main").step_vars().into_iter().collect();
        assert_eq!(vars["KILN_PULL_REQUEST"], "7");
        assert_eq!(vars["KILN_GIT_EVENT"], "pull_request");
        assert_eq!(vars["KILN_TAG"], "");
        assert_eq!(pr("main").supersede_key().as_deref(), Some("pr/7"));
        assert_eq!(push(Some("main"), None).supersede_key().as_deref(), Some("branch/main"));
        assert_eq!(push(None, Some("v1")).supersede_key(), None);
    }
}
