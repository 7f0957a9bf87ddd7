//! Runner ingest: log batches at byte offsets, init output, stream ends, heartbeats.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::views::IngestAnswer;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use kiln_core::sinks::{IngestReply, LogSink, SinkError};
use kiln_domain::logs::LogStream;
use kiln_domain::{BuildId, StageName};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct IngestQuery {
    stream: Option<String>,
    offset: Option<u64>,
    batch: Option<String>,
    stage: Option<String>,
}

fn required<'a>(v: &'a Option<String>, name: &str) -> ApiResult<&'a str> {
    v.as_deref().ok_or_else(|| ApiError::bad_request(format!("missing query parameter \"{name}\"")))
}

fn stream_of(q: &IngestQuery) -> ApiResult<LogStream> {
    let key = required(&q.stream, "stream")?;
    LogStream::from_key(key).ok_or_else(|| ApiError::bad_request(format!("bad stream key \"{key}\"")))
}

/// Sink errors by kind: unknown build 404, refused write 409, a hiccup 503.
fn answer(build: &BuildId, r: Result<IngestReply, SinkError>) -> ApiResult<Json<IngestAnswer>> {
    match r {
        Ok(reply) => Ok(Json(IngestAnswer { canceled: reply.canceled })),
        Err(SinkError::UnknownBuild(b)) => Err(ApiError::NotFound(format!("unknown build {b}"))),
        Err(e @ SinkError::Transient(_)) => Err(ApiError::unavailable(Some(build), e)),
        Err(SinkError::Permanent(m)) => Err(ApiError::Conflict(m)),
    }
}

pub async fn ingest_logs(
    State(st): State<AppState>,
    Path(id): Path<BuildId>,
    Query(q): Query<IngestQuery>,
    body: Bytes,
) -> ApiResult<Json<IngestAnswer>> {
    let stream = stream_of(&q)?;
    let offset = q.offset.ok_or_else(|| ApiError::bad_request("missing query parameter \"offset\""))?;
    answer(&id, st.ingest.put(&id, &stream, offset, &body).await)
}

pub async fn ingest_init(
    State(st): State<AppState>,
    Path(id): Path<BuildId>,
    Query(q): Query<IngestQuery>,
    body: Bytes,
) -> ApiResult<Json<IngestAnswer>> {
    let batch = required(&q.batch, "batch")?;
    answer(&id, st.ingest.append_init(&id, batch, &body).await)
}

pub async fn ingest_complete(
    State(st): State<AppState>,
    Path(id): Path<BuildId>,
    Query(q): Query<IngestQuery>,
) -> ApiResult<Json<IngestAnswer>> {
    let stream = stream_of(&q)?;
    answer(&id, st.ingest.complete(&id, &stream).await)
}

pub async fn ingest_heartbeat(
    State(st): State<AppState>,
    Path(id): Path<BuildId>,
    Query(q): Query<IngestQuery>,
) -> ApiResult<Json<IngestAnswer>> {
    let stage = required(&q.stage, "stage")?;
    answer(&id, st.ingest.heartbeat(&id, &StageName::new(stage)).await)
}
