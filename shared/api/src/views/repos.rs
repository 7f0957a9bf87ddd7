//! A repository's git settings, webhooks' answers, and a build's git event, as the API
//! shows them. The webhook secret and the host token go in, never out.

use super::schema;
use kiln_domain::BuildId;
use kiln_domain::git::{GitInfo, Provider};
use kiln_store::RepoSettings;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `PUT /v1/repos/{org}/{repo}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoRequest {
    #[schema(schema_with = schema::provider)]
    pub provider: Provider,
    /// The host's API root; default `https://api.github.com` for GitHub (required for
    /// Gitea and Forgejo).
    #[serde(default)]
    pub api_url: Option<String>,
    /// The secret the host signs webhooks with.
    pub webhook_secret: String,
    /// The token Kiln reads `.kiln.yml`, downloads commits and posts statuses with.
    #[serde(default)]
    pub token: Option<String>,
}

/// Never prints the secret or the token.
impl std::fmt::Debug for RepoRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoRequest")
            .field("provider", &self.provider)
            .field("api_url", &self.api_url)
            .finish()
    }
}

/// `GET /v1/repos/{org}/{repo}`: without the webhook secret and the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Repository)]
pub struct RepoView {
    /// `org/repo`.
    pub repo: String,
    #[schema(schema_with = schema::provider)]
    pub provider: Provider,
    pub api_url: String,
    /// The webhook route the host is to call.
    pub hook_path: String,
    pub updated_ms: u64,
}

impl From<&RepoSettings> for RepoView {
    fn from(s: &RepoSettings) -> Self {
        RepoView {
            repo: s.repo.to_string(),
            provider: s.provider,
            api_url: s.api_url.clone(),
            hook_path: format!("/v1/hooks/{}", s.provider),
            updated_ms: s.updated_ms,
        }
    }
}

/// `GET /v1/repos`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RepoList {
    pub repos: Vec<RepoView>,
}

/// `POST /v1/hooks/{provider}`: the builds the hook started (201), or none and why (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HookAnswer {
    #[schema(value_type = Vec<String>)]
    pub builds: Vec<BuildId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A build's git event (`git` of `GET /v1/builds/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = GitEvent)]
pub struct GitView {
    #[schema(schema_with = schema::provider)]
    pub provider: Provider,
    /// The repository on the host (`owner/name`).
    pub repo: String,
    /// `push` or `pull_request`.
    pub event: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub commit: String,
    pub pull_request: Option<u64>,
    /// A pull request's base branch.
    pub base_branch: Option<String>,
    /// A pull request from a fork: built without secrets.
    pub fork: bool,
    pub author: Option<String>,
    pub message: Option<String>,
    /// The host's delivery id of the webhook.
    pub delivery: String,
}

impl From<&GitInfo> for GitView {
    fn from(g: &GitInfo) -> Self {
        GitView {
            provider: g.provider,
            repo: g.repo.clone(),
            event: g.event.as_str().to_string(),
            git_ref: g.git_ref.clone(),
            branch: g.branch.clone(),
            tag: g.tag.clone(),
            commit: g.commit.clone(),
            pull_request: g.pull_request,
            base_branch: g.base_branch.clone(),
            fork: g.fork,
            author: g.author.clone(),
            message: g.message.clone(),
            delivery: g.delivery.clone(),
        }
    }
}
