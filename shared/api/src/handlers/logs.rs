//! Logs: a build's log list, and reading one stream from an offset (for tailing).

use super::load;
use crate::error::{ApiError, ApiResult};
use crate::views::{LogEntry, LogList};
use crate::{AppState, MAX_WAIT_SECS};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kiln_domain::BuildId;
use kiln_domain::logs::LogStream;
use kiln_domain::state::Build;
use kiln_store::LogError;
use serde::Deserialize;
use std::time::{Duration, Instant};

pub async fn list_logs(State(st): State<AppState>, Path(id): Path<BuildId>) -> ApiResult<Json<LogList>> {
    let b = load(&st, &id).await?;
    let logs = st.ports.logs.list(&b.id).await.map_err(|e| ApiError::unavailable(Some(&b.id), e))?;
    Ok(Json(LogList { logs: logs.iter().map(|l| LogEntry::new(&b, l)).collect() }))
}

#[derive(Deserialize, Default)]
pub struct ReadQuery {
    offset: Option<u64>,
    wait: Option<u64>,
    max: Option<usize>,
    attempt: Option<u32>,
}

pub async fn read_init_log(
    State(st): State<AppState>,
    Path(id): Path<BuildId>,
    Query(q): Query<ReadQuery>,
) -> ApiResult<Response> {
    let b = load(&st, &id).await?;
    tail(&st, b, Some(LogStream::Init), None, q).await
}

pub async fn read_step_log(
    State(st): State<AppState>,
    Path((id, stage, step)): Path<(BuildId, String, String)>,
    Query(q): Query<ReadQuery>,
) -> ApiResult<Response> {
    let b = load(&st, &id).await?;
    let Some(s) = b.stage(&stage) else {
        return Err(ApiError::NotFound(format!("build {id} has no stage {stage}")));
    };
    let plan = b.plan.stage(s.name.template());
    let known = s.steps.iter().any(|t| t.name.as_str() == step)
        || plan.is_some_and(|p| p.services.iter().any(|x| x.name.as_str() == step));
    if !known {
        return Err(ApiError::NotFound(format!("stage {stage} of build {id} has no step or service {step}")));
    }
    let name = format!("{stage}/{step}");
    tail(&st, b, None, Some(name), q).await
}

/// Which stream a step log request means: the given attempt, else the latest one.
async fn find_stream(
    st: &AppState,
    build: &BuildId,
    name: &str,
    attempt: Option<u32>,
) -> ApiResult<Option<LogStream>> {
    let list = st.ports.logs.list(build).await.map_err(|e| ApiError::unavailable(Some(build), e))?;
    let attempt_of = |s: &LogStream| match s {
        LogStream::Step { attempt, .. } | LogStream::Service { attempt, .. } => *attempt,
        LogStream::Init => 0,
    };
    Ok(list
        .into_iter()
        .map(|i| i.stream)
        .filter(|s| s.display_name() == name && attempt.is_none_or(|a| attempt_of(s) == a))
        .max_by_key(attempt_of))
}

/// Reads a stream from an offset, waiting up to `wait` seconds for bytes if none are
/// there yet. The init log is complete when its build and every stage have ended.
async fn tail(
    st: &AppState,
    mut build: Build,
    fixed: Option<LogStream>,
    name: Option<String>,
    q: ReadQuery,
) -> ApiResult<Response> {
    let offset = q.offset.unwrap_or(0);
    let max = q.max.unwrap_or(1 << 20).clamp(1, 8 << 20);
    let deadline = Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    loop {
        let ended = build.is_settled();
        let stream = match (&fixed, &name) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(n)) => find_stream(st, &build.id, n, q.attempt).await?,
            (None, None) => None,
        };
        let read = match &stream {
            Some(s) => match st.ports.logs.read(&build.id, s, offset, max).await {
                Ok(r) => Some(r),
                Err(LogError::NotFound(_)) => None,
                Err(e) => return Err(ApiError::unavailable(Some(&build.id), e)),
            },
            None => None,
        };
        let (bytes, next, complete) = match read {
            Some(r) => {
                let complete = r.complete || (stream == Some(LogStream::Init) && ended);
                (r.bytes, r.next_offset, complete)
            }
            // Not written yet: complete only if it never will be.
            None => (Vec::new(), offset, ended),
        };
        if !bytes.is_empty() || complete || Instant::now() >= deadline {
            let mut resp = bytes.into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            h.insert("kiln-next-offset", HeaderValue::from(next));
            h.insert("kiln-complete", HeaderValue::from_static(if complete { "true" } else { "false" }));
            if let Some(s) = &stream {
                let key =
                    HeaderValue::from_str(&s.key()).map_err(|e| ApiError::internal(Some(&build.id), e))?;
                h.insert("kiln-stream", key);
            }
            return Ok(resp);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        build = load(st, &build.id).await?;
    }
}
