//! Repository secrets: set, list and remove them (admin; no route shows a value to a
//! person), and the runner's route, which answers a stage's declared values to that
//! build's runner token only.

use super::{load, repo};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::views::{RunnerSecrets, SecretList};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use kiln_core::secrets::{Delivered, checkout_token, declared, reveal};
use kiln_domain::secret::{SecretName, check_value};
use kiln_domain::{BuildId, StageName};
use kiln_store::SecretStore;
use serde::Deserialize;
use std::sync::Arc;

fn store(st: &AppState) -> ApiResult<&Arc<dyn SecretStore>> {
    st.ports.secrets.as_ref().ok_or_else(|| ApiError::internal(None, "no secret store is configured"))
}

fn name(text: &str) -> ApiResult<SecretName> {
    SecretName::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

pub async fn put_secret(
    State(st): State<AppState>,
    Path((org, repo_name, secret)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let repo = repo(&org, &repo_name)?;
    let name = name(&secret)?;
    let value = check_value(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    store(&st)?.put(&repo, &name, value).await.map_err(|e| ApiError::unavailable(None, e))?;
    tracing::info!(repo = %repo, secret = %name, "secret set");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_secrets(
    State(st): State<AppState>,
    Path((org, repo_name)): Path<(String, String)>,
) -> ApiResult<Json<SecretList>> {
    let repo = repo(&org, &repo_name)?;
    let infos = store(&st)?.list(&repo).await.map_err(|e| ApiError::unavailable(None, e))?;
    Ok(Json(SecretList::from(infos)))
}

pub async fn delete_secret(
    State(st): State<AppState>,
    Path((org, repo_name, secret)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let repo = repo(&org, &repo_name)?;
    let name = name(&secret)?;
    if store(&st)?.delete(&repo, &name).await.map_err(|e| ApiError::unavailable(None, e))? {
        tracing::info!(repo = %repo, secret = %name, "secret removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no secret {name} in {repo}")))
    }
}

#[derive(Deserialize)]
pub struct StageQuery {
    stage: String,
}

/// Access `BuildRunner`: only a runner token of this build gets here.
pub async fn runner_secrets(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StageQuery>,
) -> ApiResult<Json<RunnerSecrets>> {
    let id = BuildId::new(id);
    let build = load(&st, &id).await?;
    let stage = StageName::new(q.stage);
    let Some(names) = declared(&build.plan, &stage) else {
        return Err(ApiError::NotFound(format!("build {id} has no stage {stage}")));
    };
    // A token outlives its job (stage timeout + 30 min): once the build or the stage has
    // ended, nothing may fetch its secrets any more.
    let ended =
        build.status.is_terminal() || build.stage(stage.as_str()).is_some_and(|s| s.status.is_terminal());
    if ended {
        return Err(ApiError::Forbidden(format!("stage {stage} of build {id} has ended")));
    }
    if !build.secrets_allowed && !names.is_empty() {
        return Err(ApiError::Forbidden(format!("build {id} may not use secrets")));
    }
    let Delivered { values, missing, .. } = match names.is_empty() {
        true => Delivered::default(),
        false => reveal(store(&st)?.as_ref(), &build.repo, &names)
            .await
            .map_err(|e| ApiError::unavailable(Some(&id), e))?,
    };
    let checks_out = build.git.is_some() && build.plan.stage(stage.template()).is_some_and(|s| s.checkout);
    let checkout_token = match checks_out {
        true => checkout_token(store(&st)?.as_ref(), &build.repo)
            .await
            .map_err(|e| ApiError::unavailable(Some(&id), e))?,
        false => None,
    };
    // Names only in the log: which runner got which secrets.
    tracing::info!(build = %id, stage = %stage, delivered = values.len(), missing = missing.len(), "secrets served");
    Ok(Json(RunnerSecrets {
        values: values.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        missing: missing.into_iter().map(|n| n.to_string()).collect(),
        checkout_token,
    }))
}
