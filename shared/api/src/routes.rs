//! The `/v1` routes. [`ROUTES`] is the one definition: the router is built from it and so
//! is the OpenAPI document, so the two cannot disagree.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::views;
use crate::{MAX_BODY_BYTES, MAX_WAIT_SECS};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use kiln_core::images::ImagesError;
use kiln_core::ingest::Ingest;
use kiln_core::queues::send_event;
use kiln_core::sinks::{IngestReply, LogSink, SinkError};
use kiln_core::submit::{SubmitError, submit};
use kiln_core::system::Ports;
use kiln_domain::event::{CloudEvent, types};
use kiln_domain::logs::LogStream;
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Repo, StageName, ids};
use kiln_store::LogError;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct AppState {
    pub ports: Ports,
    pub auth: Arc<Auth>,
    pub ingest: Ingest,
}

impl AppState {
    pub fn new(ports: Ports, auth: Auth) -> Self {
        let ingest = Ingest { logs: ports.logs.clone(), state: ports.state.clone() };
        Self { ports, auth: Arc::new(auth), ingest }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health only).
    Open,
    /// An admin token.
    Admin,
    /// An admin token, or a runner token for the build in the path.
    BuildWriter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamIn {
    Path,
    Query,
}

#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub at: ParamIn,
    pub integer: bool,
    pub description: &'static str,
}

/// What a request or a success response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    None,
    Json,
    /// Pipeline YAML.
    Yaml,
    /// Raw bytes (log data).
    Bytes,
}

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub params: &'static [Param],
    pub body: Content,
    pub ok: (u16, Content, &'static str),
    /// Error statuses this route answers with, besides 401/403 for auth.
    pub errors: &'static [(u16, &'static str)],
    make: fn(MethodFilter) -> MethodRouter<AppState>,
}

const fn path(name: &'static str, description: &'static str) -> Param {
    Param { name, at: ParamIn::Path, integer: false, description }
}

const fn query(name: &'static str, integer: bool, description: &'static str) -> Param {
    Param { name, at: ParamIn::Query, integer, description }
}

const ID: Param = path("id", "build id");
const ORG: Param = path("org", "organisation");
const REPO: Param = path("repo", "repository");
const OFFSET: Param = query("offset", true, "byte offset to read from (default 0)");
const WAIT: Param = query("wait", true, "seconds to wait for new bytes when there are none (at most 25)");
const MAX: Param = query("max", true, "most bytes to return (default 1 MiB)");
const ATTEMPT: Param = query("attempt", true, "which attempt of the job (default: the latest)");

pub const ROUTES: &[Route] = &[
    Route {
        method: Method::GET,
        path: "/healthz",
        summary: "Liveness: no token needed",
        access: Access::Open,
        params: &[],
        body: Content::None,
        ok: (200, Content::Json, "the service is up"),
        errors: &[],
        make: |m| on(m, health),
    },
    Route {
        method: Method::GET,
        path: "/v1/openapi.json",
        summary: "This document",
        access: Access::Admin,
        params: &[],
        body: Content::None,
        ok: (200, Content::Json, "the OpenAPI 3.0 document"),
        errors: &[],
        make: |m| on(m, openapi),
    },
    Route {
        method: Method::POST,
        path: "/v1/repos/{org}/{repo}/builds",
        summary: "Submit a pipeline (YAML body): compile it and start a build",
        access: Access::Admin,
        params: &[ORG, REPO],
        body: Content::Yaml,
        ok: (201, Content::Json, "the build was created: its id"),
        errors: &[
            (400, "the pipeline is invalid: every error with line and column"),
            (413, "body over 1 MiB"),
        ],
        make: |m| on(m, submit_build),
    },
    Route {
        method: Method::GET,
        path: "/v1/repos/{org}/{repo}/builds",
        summary: "A repository's builds, newest first",
        access: Access::Admin,
        params: &[ORG, REPO, query("limit", true, "at most this many (default 50)")],
        body: Content::None,
        ok: (200, Content::Json, "the builds"),
        errors: &[],
        make: |m| on(m, list_builds),
    },
    Route {
        method: Method::GET,
        path: "/v1/builds/{id}",
        summary: "A build with its stages and steps",
        access: Access::Admin,
        params: &[ID],
        body: Content::None,
        ok: (200, Content::Json, "the build"),
        errors: &[(404, "no such build")],
        make: |m| on(m, get_build),
    },
    Route {
        method: Method::POST,
        path: "/v1/builds/{id}/cancel",
        summary: "Cancel a build: running steps get SIGTERM, then SIGKILL",
        access: Access::Admin,
        params: &[ID],
        body: Content::None,
        ok: (202, Content::Json, "cancel requested"),
        errors: &[(404, "no such build"), (409, "the build has already ended")],
        make: |m| on(m, cancel_build),
    },
    Route {
        method: Method::GET,
        path: "/v1/builds/{id}/logs",
        summary: "A build's logs in the stable order: init, steps by number, services",
        access: Access::Admin,
        params: &[ID],
        body: Content::None,
        ok: (200, Content::Json, "the logs"),
        errors: &[(404, "no such build")],
        make: |m| on(m, list_logs),
    },
    Route {
        method: Method::GET,
        path: "/v1/builds/{id}/logs/init",
        summary: "The build's init log (setup output), from an offset",
        access: Access::Admin,
        params: &[ID, OFFSET, WAIT, MAX],
        body: Content::None,
        ok: (200, Content::Bytes, "bytes from the offset; headers kiln-next-offset and kiln-complete"),
        errors: &[(404, "no such build")],
        make: |m| on(m, read_init_log),
    },
    Route {
        method: Method::GET,
        path: "/v1/builds/{id}/logs/{stage}/{step}",
        summary: "A step's (or service's) log, from an offset: for tailing",
        access: Access::Admin,
        params: &[
            ID,
            path("stage", "stage name (`#` as %23)"),
            path("step", "step or service name"),
            OFFSET,
            WAIT,
            MAX,
            ATTEMPT,
        ],
        body: Content::None,
        ok: (200, Content::Bytes, "bytes from the offset; headers kiln-next-offset and kiln-complete"),
        errors: &[(404, "no such build, step or attempt")],
        make: |m| on(m, read_step_log),
    },
    Route {
        method: Method::GET,
        path: "/v1/builds/{id}/events",
        summary: "The build's event history (CloudEvents), in order, by cursor",
        access: Access::Admin,
        params: &[
            ID,
            query("after", true, "return events after this sequence number (default 0)"),
            query("limit", true, "at most this many (default 100, max 1000)"),
        ],
        body: Content::None,
        ok: (200, Content::Json, "events and the cursor for the next page"),
        errors: &[(404, "no such build")],
        make: |m| on(m, list_events),
    },
    Route {
        method: Method::POST,
        path: "/v1/builds/{id}/events",
        summary: "Send a CloudEvent (JSON format) to a build",
        access: Access::BuildWriter,
        params: &[ID],
        body: Content::Json,
        ok: (202, Content::Json, "accepted"),
        errors: &[
            (400, "not a valid CloudEvent: says why"),
            (404, "no such build"),
            (413, "body over 1 MiB"),
        ],
        make: |m| on(m, post_event),
    },
    Route {
        method: Method::POST,
        path: "/v1/builds/{id}/ingest/logs",
        summary: "Runner: store a log batch at its byte offset (idempotent)",
        access: Access::BuildWriter,
        params: &[
            ID,
            query("stream", false, "the stream key, e.g. step/0001/build/compile/1"),
            query("offset", true, "the batch's byte offset"),
        ],
        body: Content::Bytes,
        ok: (200, Content::Json, "stored; `canceled` says whether the build was canceled"),
        errors: &[
            (400, "bad stream key"),
            (404, "no such build"),
            (409, "different bytes already stored there, or a gap"),
        ],
        make: |m| on(m, ingest_logs),
    },
    Route {
        method: Method::POST,
        path: "/v1/builds/{id}/ingest/init",
        summary: "Runner: append setup output to the build's init log (idempotent by batch id)",
        access: Access::BuildWriter,
        params: &[ID, query("batch", false, "the batch id")],
        body: Content::Bytes,
        ok: (200, Content::Json, "stored"),
        errors: &[(404, "no such build")],
        make: |m| on(m, ingest_init),
    },
    Route {
        method: Method::POST,
        path: "/v1/builds/{id}/ingest/complete",
        summary: "Runner: a stream has ended",
        access: Access::BuildWriter,
        params: &[ID, query("stream", false, "the stream key")],
        body: Content::None,
        ok: (200, Content::Json, "completed"),
        errors: &[(400, "bad stream key"), (404, "no such build")],
        make: |m| on(m, ingest_complete),
    },
    Route {
        method: Method::POST,
        path: "/v1/builds/{id}/ingest/heartbeat",
        summary: "Runner: should this stage stop (build canceled, or stage stopped by an event)?",
        access: Access::BuildWriter,
        params: &[ID, query("stage", false, "the runner's stage")],
        body: Content::None,
        ok: (200, Content::Json, "`canceled` says whether the build was canceled"),
        errors: &[(404, "no such build")],
        make: |m| on(m, ingest_heartbeat),
    },
    Route {
        method: Method::GET,
        path: "/v1/images",
        summary: "The image catalog: every image with its status and percent per provider",
        access: Access::Admin,
        params: &[],
        body: Content::None,
        ok: (200, Content::Json, "the images"),
        errors: &[],
        make: |m| on(m, list_images),
    },
    Route {
        method: Method::GET,
        path: "/v1/images/{name}",
        summary: "One image: its record per provider, with history",
        access: Access::Admin,
        params: &[path("name", "image name")],
        body: Content::None,
        ok: (200, Content::Json, "the image"),
        errors: &[(404, "no such image")],
        make: |m| on(m, get_image),
    },
    Route {
        method: Method::POST,
        path: "/v1/images/{name}/builds",
        summary: "Build and push the providers that are missing or failed (or those named: {\"providers\": [...]})",
        access: Access::Admin,
        params: &[path("name", "image name")],
        body: Content::Json,
        ok: (201, Content::Json, "the build was started: its id and providers"),
        errors: &[(400, "unknown provider"), (404, "no such image"), (409, "nothing is missing or failed")],
        make: |m| on(m, build_missing),
    },
];

/// The router for every route in [`ROUTES`].
pub fn router(state: AppState) -> axum::Router {
    let mut r = axum::Router::new();
    for route in ROUTES {
        let filter = MethodFilter::try_from(route.method.clone()).expect("ROUTES use standard methods");
        r = r.route(route.path, (route.make)(filter));
    }
    r.layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(state)
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn openapi(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    st.auth.admin(&headers)?;
    Ok(Json(crate::openapi::document()))
}

fn repo(org: &str, repo: &str) -> ApiResult<Repo> {
    if ids::is_valid_name(org) && ids::is_valid_name(repo) {
        Ok(Repo::new(org, repo))
    } else {
        Err(ApiError::bad_request(format!(
            "invalid repository \"{org}/{repo}\": use letters, digits, \".\", \"_\" and \"-\""
        )))
    }
}

async fn submit_build(
    State(st): State<AppState>,
    Path((org, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    st.auth.admin(&headers)?;
    let repo = repo(&org, &name)?;
    match submit(st.ports.state.as_ref(), st.ports.events.as_ref(), repo, &body).await {
        Ok(b) => Ok((
            StatusCode::CREATED,
            Json(json!({ "id": b.id, "status": b.status, "url": format!("/v1/builds/{}", b.id) })),
        )),
        Err(SubmitError::Invalid(errors)) => {
            let details =
                errors.iter().map(|e| json!({ "line": e.line, "column": e.column, "message": e.message }));
            Err(ApiError::bad_request(format!("the pipeline has {} error(s)", errors.len()))
                .with_details(details.collect()))
        }
        Err(e) => Err(ApiError::unavailable(e)),
    }
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn list_builds(
    State(st): State<AppState>,
    Path((org, name)): Path<(String, String)>,
    Query(q): Query<Limit>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    st.auth.admin(&headers)?;
    let repo = repo(&org, &name)?;
    let builds = st
        .ports
        .state
        .list_builds(&repo, q.limit.unwrap_or(50).min(1000))
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(json!({ "builds": builds.iter().map(views::summary_json).collect::<Vec<_>>() })))
}

async fn load(st: &AppState, id: &str) -> ApiResult<Build> {
    st.ports
        .state
        .get_build(&BuildId::new(id))
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::not_found(format!("no build {id}")))
}

async fn get_build(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    st.auth.admin(&headers)?;
    Ok(Json(views::build_json(&load(&st, &id).await?)))
}

async fn cancel_build(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<Value>)> {
    st.auth.admin(&headers)?;
    let b = load(&st, &id).await?;
    if b.status.is_terminal() {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("build {id} has already {}", b.status)));
    }
    let e = CloudEvent::new(
        types::CANCEL_REQUESTED,
        "kiln://api",
        &b.id,
        json!({ "reason": "canceled by request" }),
    );
    send_event(st.ports.events.as_ref(), &e).await.map_err(ApiError::unavailable)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": b.id, "cancel": "requested" }))))
}

async fn list_logs(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    st.auth.admin(&headers)?;
    let b = load(&st, &id).await?;
    let logs = st.ports.logs.list(&b.id).await.map_err(ApiError::unavailable)?;
    Ok(Json(json!({ "logs": logs.iter().map(|l| views::log_json(&b, l)).collect::<Vec<_>>() })))
}

#[derive(Deserialize, Default)]
struct ReadQuery {
    offset: Option<u64>,
    wait: Option<u64>,
    max: Option<usize>,
    attempt: Option<u32>,
}

async fn read_init_log(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    st.auth.admin(&headers)?;
    let b = load(&st, &id).await?;
    tail(&st, b, Some(LogStream::Init), None, q).await
}

async fn read_step_log(
    State(st): State<AppState>,
    Path((id, stage, step)): Path<(String, String, String)>,
    Query(q): Query<ReadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    st.auth.admin(&headers)?;
    let b = load(&st, &id).await?;
    let Some(s) = b.stage(&stage) else {
        return Err(ApiError::not_found(format!("build {id} has no stage {stage}")));
    };
    let plan = b.plan.stage(s.name.template());
    let known = s.steps.iter().any(|t| t.name.as_str() == step)
        || plan.is_some_and(|p| p.services.iter().any(|x| x.name.as_str() == step));
    if !known {
        return Err(ApiError::not_found(format!(
            "stage {stage} of build {id} has no step or service {step}"
        )));
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
    let list = st.ports.logs.list(build).await.map_err(ApiError::unavailable)?;
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
                Err(e) => return Err(ApiError::unavailable(e)),
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
                h.insert("kiln-stream", HeaderValue::from_str(&s.key()).map_err(ApiError::internal)?);
            }
            return Ok(resp);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        build = load(st, build.id.as_str()).await?;
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn list_events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    st.auth.admin(&headers)?;
    let b = load(&st, &id).await?;
    let after = q.after.unwrap_or(0);
    let events = st
        .ports
        .state
        .events(&b.id, after, q.limit.unwrap_or(100).clamp(1, 1000))
        .await
        .map_err(ApiError::unavailable)?;
    let next = events.last().map(|e| e.seq).unwrap_or(after);
    Ok(Json(json!({ "events": events, "next_after": next })))
}

async fn post_event(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let build = BuildId::new(&id);
    let caller = st.auth.writer_for(&headers, &build)?;
    let event = crate::events::validate(&body, &build, &caller)?;
    let b = load(&st, &id).await?;
    send_event(st.ports.events.as_ref(), &event).await.map_err(ApiError::unavailable)?;
    tracing::info!(build = %b.id, event = %event.id, r#type = %event.ty, "event accepted");
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": event.id }))))
}

async fn list_images(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    st.auth.admin(&headers)?;
    let images =
        kiln_core::images::list_images(st.ports.state.as_ref()).await.map_err(ApiError::unavailable)?;
    Ok(Json(json!({ "images": images })))
}

fn images_error(e: ImagesError) -> ApiError {
    let status = match &e {
        ImagesError::NotFound(_) => StatusCode::NOT_FOUND,
        ImagesError::UnknownProvider { .. } => StatusCode::BAD_REQUEST,
        ImagesError::NothingMissing { .. } => StatusCode::CONFLICT,
        ImagesError::Store(_) | ImagesError::Submit(_) => return ApiError::unavailable(e),
    };
    ApiError::new(status, e.to_string())
}

async fn get_image(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    st.auth.admin(&headers)?;
    let detail = kiln_core::images::get_image(st.ports.state.as_ref(), &name).await.map_err(images_error)?;
    Ok(Json(serde_json::to_value(detail).map_err(ApiError::internal)?))
}

#[derive(Deserialize)]
struct BuildMissing {
    providers: Option<Vec<String>>,
}

async fn build_missing(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    st.auth.admin(&headers)?;
    let req: BuildMissing = if body.iter().all(u8::is_ascii_whitespace) {
        BuildMissing { providers: None }
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("body must be {{\"providers\": [...]}} or empty: {e}"))
        })?
    };
    let b = kiln_core::images::build_missing(
        st.ports.state.as_ref(),
        st.ports.events.as_ref(),
        &name,
        req.providers,
    )
    .await
    .map_err(images_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": b.id, "providers": b.providers, "url": format!("/v1/builds/{}", b.id) })),
    ))
}

#[derive(Deserialize)]
struct IngestQuery {
    stream: Option<String>,
    offset: Option<u64>,
    batch: Option<String>,
}

fn stream_of(q: &IngestQuery) -> ApiResult<LogStream> {
    let key =
        q.stream.as_deref().ok_or_else(|| ApiError::bad_request("missing query parameter \"stream\""))?;
    LogStream::from_key(key).ok_or_else(|| ApiError::bad_request(format!("bad stream key \"{key}\"")))
}

fn ingest_reply(r: Result<IngestReply, SinkError>) -> ApiResult<Json<Value>> {
    match r {
        Ok(reply) => Ok(Json(json!({ "canceled": reply.canceled }))),
        Err(SinkError::Transient(m)) => Err(ApiError::unavailable(m)),
        Err(SinkError::Permanent(m)) if m.starts_with("unknown build") => Err(ApiError::not_found(m)),
        Err(SinkError::Permanent(m)) => Err(ApiError::new(StatusCode::CONFLICT, m)),
    }
}

async fn ingest_logs(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<IngestQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let build = BuildId::new(&id);
    st.auth.writer_for(&headers, &build)?;
    let stream = stream_of(&q)?;
    let offset = q.offset.ok_or_else(|| ApiError::bad_request("missing query parameter \"offset\""))?;
    ingest_reply(st.ingest.put(&build, &stream, offset, &body).await)
}

async fn ingest_init(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<IngestQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let build = BuildId::new(&id);
    st.auth.writer_for(&headers, &build)?;
    let batch =
        q.batch.as_deref().ok_or_else(|| ApiError::bad_request("missing query parameter \"batch\""))?;
    ingest_reply(st.ingest.append_init(&build, batch, &body).await)
}

async fn ingest_complete(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<IngestQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let build = BuildId::new(&id);
    st.auth.writer_for(&headers, &build)?;
    let stream = stream_of(&q)?;
    ingest_reply(st.ingest.complete(&build, &stream).await)
}

async fn ingest_heartbeat(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HeartbeatQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let build = BuildId::new(&id);
    st.auth.writer_for(&headers, &build)?;
    let stage = q.stage.ok_or_else(|| ApiError::bad_request("missing query parameter \"stage\""))?;
    ingest_reply(st.ingest.heartbeat(&build, &StageName::new(stage)).await)
}

#[derive(Deserialize)]
struct HeartbeatQuery {
    stage: Option<String>,
}
