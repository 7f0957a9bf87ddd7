//! Events: a build's history by cursor, and sending a CloudEvent to a build.

use super::load;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::views::{Accepted, EventPage};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use kiln_core::queues::send_event;
use kiln_domain::BuildId;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

pub async fn list_events(
    State(st): State<AppState>,
    Path(id): Path<BuildId>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<EventPage>> {
    let b = load(&st, &id).await?;
    let after = q.after.unwrap_or(0);
    let events = st
        .ports
        .state
        .events(&b.id, after, q.limit.unwrap_or(100).clamp(1, 1000))
        .await
        .map_err(|e| ApiError::unavailable(Some(&b.id), e))?;
    let next_after = events.last().map(|e| e.seq).unwrap_or(after);
    Ok(Json(EventPage { events: events.into_iter().map(Into::into).collect(), next_after }))
}

pub async fn post_event(
    State(st): State<AppState>,
    Path(id): Path<BuildId>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let event = crate::events::validate(&body, &id, &caller)?;
    let b = load(&st, &id).await?;
    send_event(st.ports.events.as_ref(), &event).await.map_err(|e| ApiError::unavailable(Some(&b.id), e))?;
    tracing::info!(build = %b.id, event = %event.id, r#type = %event.ty, "event accepted");
    Ok((StatusCode::ACCEPTED, Json(Accepted { id: event.id })))
}
