//! Repositories' git settings (`PUT|GET /v1/repos/{org}/{repo}`, `GET /v1/repos`) and
//! their webhooks (`POST /v1/hooks/{github,gitea}`).

use super::repo;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::views::{HookAnswer, RepoList, RepoRequest, RepoView};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use kiln_core::system::GitPorts;
use kiln_core::webhook::{self, HookOutcome, HookRequest, WebhookError};
use kiln_domain::event::now_ms;
use kiln_domain::git::hook::headers;
use kiln_domain::git::{Provider, credentials_repo, token_name, webhook_secret_name};
use kiln_domain::secret::check_value;
use kiln_store::{RepoSettings, SecretStore};
use std::sync::Arc;

fn git(st: &AppState) -> ApiResult<&GitPorts> {
    st.ports.git.as_ref().ok_or_else(|| ApiError::internal(None, "builds from git are not set up here"))
}

fn secrets(st: &AppState) -> ApiResult<&Arc<dyn SecretStore>> {
    st.ports.secrets.as_ref().ok_or_else(|| ApiError::internal(None, "no secret store is configured"))
}

/// An API root: http(s), no query, no trailing `/`.
fn api_url(provider: Provider, given: Option<&str>) -> ApiResult<String> {
    let url = match given.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => u,
        None => provider.default_api_url().ok_or_else(|| {
            ApiError::bad_request(format!(
                "\"api_url\" is required for {provider} (e.g. https://git.example.com/api/v1)"
            ))
        })?,
    };
    let parsed =
        reqwest::Url::parse(url).map_err(|e| ApiError::bad_request(format!("\"api_url\" {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() || parsed.query().is_some() {
        return Err(ApiError::bad_request(format!(
            "\"api_url\" {url:?} must be an http(s) URL without a query"
        )));
    }
    Ok(url.trim_end_matches('/').to_string())
}

pub async fn put_repo(
    State(st): State<AppState>,
    Path((org, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<RepoView>> {
    let repo = repo(&org, &name)?;
    let req: RepoRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("not a repository's settings: {e}")))?;
    let api_url = api_url(req.provider, req.api_url.as_deref())?;
    let secret = check_value(req.webhook_secret.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("\"webhook_secret\": {e}")))?;
    let token = match &req.token {
        Some(t) => {
            Some(check_value(t.as_bytes()).map_err(|e| ApiError::bad_request(format!("\"token\": {e}")))?)
        }
        None => None,
    };
    let (git, store) = (git(&st)?, secrets(&st)?);
    // The credentials first: settings that point at them only once they are there.
    let creds = credentials_repo(&repo);
    store.put(&creds, &webhook_secret_name(), secret).await.map_err(|e| ApiError::unavailable(None, e))?;
    match token {
        Some(t) => store.put(&creds, &token_name(), t).await.map(|_| ()),
        None => store.delete(&creds, &token_name()).await.map(|_| ()),
    }
    .map_err(|e| ApiError::unavailable(None, e))?;
    let settings = RepoSettings { repo: repo.clone(), provider: req.provider, api_url, updated_ms: now_ms() };
    git.repos.put_repo(&settings).await.map_err(|e| ApiError::unavailable(None, e))?;
    tracing::info!(repo = %repo, provider = %settings.provider, api_url = %settings.api_url, "repository registered");
    Ok(Json(RepoView::from(&settings)))
}

pub async fn get_repo(
    State(st): State<AppState>,
    Path((org, name)): Path<(String, String)>,
) -> ApiResult<Json<RepoView>> {
    let repo = repo(&org, &name)?;
    match git(&st)?.repos.get_repo(&repo).await.map_err(|e| ApiError::unavailable(None, e))? {
        Some(s) => Ok(Json(RepoView::from(&s))),
        None => Err(ApiError::NotFound(format!("repository {repo} is not registered"))),
    }
}

pub async fn list_repos(State(st): State<AppState>) -> ApiResult<Json<RepoList>> {
    let all = git(&st)?.repos.list_repos().await.map_err(|e| ApiError::unavailable(None, e))?;
    Ok(Json(RepoList { repos: all.iter().map(RepoView::from).collect() }))
}

pub async fn github_hook(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<HookAnswer>)> {
    hook(&st, Provider::Github, &headers, &body).await
}

pub async fn gitea_hook(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<HookAnswer>)> {
    hook(&st, Provider::Gitea, &headers, &body).await
}

async fn hook(
    st: &AppState,
    provider: Provider,
    map: &HeaderMap,
    body: &[u8],
) -> ApiResult<(StatusCode, Json<HookAnswer>)> {
    let names = headers(provider);
    let get = |name: &str| map.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let req = HookRequest {
        provider,
        event: get(names.event),
        delivery: get(names.delivery),
        signature: get(names.signature),
        body,
    };
    match webhook::handle(&st.ports, req).await {
        Ok(HookOutcome::Started(id)) => {
            Ok((StatusCode::CREATED, Json(HookAnswer { builds: vec![id], reason: None })))
        }
        Ok(HookOutcome::Nothing(why)) => {
            Ok((StatusCode::OK, Json(HookAnswer { builds: Vec::new(), reason: Some(why) })))
        }
        Err(WebhookError::Unauthorized(m)) => Err(ApiError::Unauthorized(m)),
        Err(WebhookError::UnknownRepo(m)) => Err(ApiError::NotFound(m)),
        Err(WebhookError::BadRequest(m)) => Err(ApiError::bad_request(m)),
        Err(WebhookError::Host(m)) => Err(ApiError::BadGateway(m)),
        Err(e @ WebhookError::Unavailable(_)) => Err(ApiError::unavailable(None, e)),
    }
}
