//! Builds: submit a pipeline, list a repository's builds, show one, cancel one.

use super::{load, repo};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::views::{
    BuildList, BuildSummaryView, BuildView, CancelAnswer, CancelState, ErrorDetail, Submitted,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use kiln_core::queues::send_event;
use kiln_core::submit::{SubmitError, submit};
use kiln_domain::BuildId;
use kiln_domain::report::{CancelRequested, Report};
use serde::Deserialize;

pub async fn submit_build(
    State(st): State<AppState>,
    Path((org, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Submitted>)> {
    let repo = repo(&org, &name)?;
    match submit(st.ports.state.as_ref(), st.ports.events.as_ref(), repo, &body).await {
        Ok(b) => {
            let url = format!("/v1/builds/{}", b.id);
            Ok((StatusCode::CREATED, Json(Submitted { id: b.id, status: b.status, url })))
        }
        Err(SubmitError::Invalid(errors)) => Err(ApiError::BadRequest {
            message: format!("the pipeline has {} error(s)", errors.len()),
            details: errors
                .into_iter()
                .map(|e| ErrorDetail::Position { line: e.line, column: e.column, message: e.message })
                .collect(),
        }),
        Err(e) => Err(ApiError::unavailable(None, e)),
    }
}

#[derive(Deserialize)]
pub struct Limit {
    limit: Option<usize>,
}

pub async fn list_builds(
    State(st): State<AppState>,
    Path((org, name)): Path<(String, String)>,
    Query(q): Query<Limit>,
) -> ApiResult<Json<BuildList>> {
    let repo = repo(&org, &name)?;
    let builds = st
        .ports
        .state
        .list_builds(&repo, q.limit.unwrap_or(50).min(1000))
        .await
        .map_err(|e| ApiError::unavailable(None, e))?;
    Ok(Json(BuildList { builds: builds.iter().map(BuildSummaryView::from).collect() }))
}

pub async fn get_build(State(st): State<AppState>, Path(id): Path<BuildId>) -> ApiResult<Json<BuildView>> {
    Ok(Json(BuildView::from(&load(&st, &id).await?)))
}

pub async fn cancel_build(
    State(st): State<AppState>,
    Path(id): Path<BuildId>,
) -> ApiResult<(StatusCode, Json<CancelAnswer>)> {
    let b = load(&st, &id).await?;
    if b.status.is_terminal() {
        return Err(ApiError::Conflict(format!("build {id} has already {}", b.status)));
    }
    let e = Report::from(CancelRequested { reason: Some("canceled by request".to_string()) })
        .to_event(&b.id, "kiln://api");
    send_event(st.ports.events.as_ref(), &e).await.map_err(|e| ApiError::unavailable(Some(&b.id), e))?;
    Ok((StatusCode::ACCEPTED, Json(CancelAnswer { id: b.id, cancel: CancelState::Requested })))
}
