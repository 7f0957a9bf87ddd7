//! An HTTP client of the `/v1` API, for the CLI's client commands and for runners that
//! send logs and events over HTTP with their build-scoped token.

use crate::views::{
    Accepted, BuildList, BuildMissingAnswer, BuildMissingRequest, BuildView, CancelAnswer, CloudEventView,
    ErrorBody, ErrorDetail, EventPage, ImageDetailView, ImageList, IngestAnswer, LogList, RepoList,
    RepoRequest, RepoView, RunnerSecrets, SecretList, Submitted,
};
use async_trait::async_trait;
use kiln_core::job::Job;
use kiln_core::secrets::{Delivered, SecretFetchError, SecretSource};
use kiln_core::sinks::{EventSink, IngestReply, LogSink, SinkError};
use kiln_core::system::SinkFactory;
use kiln_domain::event::CloudEvent;
use kiln_domain::logs::LogStream;
use kiln_domain::{BuildId, StageName};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error status.
    #[error("{status}: {message}")]
    Api { status: u16, message: String, details: Vec<ErrorDetail> },
    #[error("cannot reach the API")]
    Transport(#[source] reqwest::Error),
    /// The API answered, but not with the body this client expects.
    #[error("unexpected answer from the API")]
    Decode(#[source] reqwest::Error),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Transport(_) | ClientError::Decode(_) => None,
        }
    }
}

/// Bytes read from a log, with where to continue.
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    pub bytes: Vec<u8>,
    pub next_offset: u64,
    pub complete: bool,
}

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str, token: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Log reads may wait up to 25 s on the server.
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self { base: base.trim_end_matches('/').to_string(), token: token.to_string(), http }
    }

    /// The API's base URL, as given.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(ClientError::Transport)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        // A proxy in front may answer without Kiln's error body.
        let body = resp
            .json::<ErrorBody>()
            .await
            .unwrap_or_else(|_| ErrorBody { message: format!("HTTP {status}"), details: Vec::new() });
        Err(ClientError::Api { status, message: body.message, details: body.details })
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, ClientError> {
        self.send(req).await?.json().await.map_err(ClientError::Decode)
    }

    pub async fn submit(&self, org: &str, repo: &str, pipeline: Vec<u8>) -> Result<Submitted, ClientError> {
        let req = self
            .http
            .post(self.url(&format!("/v1/repos/{org}/{repo}/builds")))
            .header("content-type", "application/yaml")
            .body(pipeline);
        self.json(req).await
    }

    pub async fn builds(&self, org: &str, repo: &str, limit: usize) -> Result<BuildList, ClientError> {
        let req =
            self.http.get(self.url(&format!("/v1/repos/{org}/{repo}/builds"))).query(&[("limit", limit)]);
        self.json(req).await
    }

    pub async fn build(&self, id: &str) -> Result<BuildView, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/builds/{id}")))).await
    }

    pub async fn cancel(&self, id: &str) -> Result<CancelAnswer, ClientError> {
        self.json(self.http.post(self.url(&format!("/v1/builds/{id}/cancel")))).await
    }

    pub async fn logs(&self, id: &str) -> Result<LogList, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/builds/{id}/logs")))).await
    }

    /// Reads a log (`path` as listed, e.g. `/v1/builds/ID/logs/init`) from `offset`,
    /// waiting up to `wait_secs` for new bytes.
    pub async fn read_log(&self, path: &str, offset: u64, wait_secs: u64) -> Result<LogPage, ClientError> {
        let req = self.http.get(self.url(path)).query(&[("offset", offset), ("wait", wait_secs)]);
        let resp = self.send(req).await?;
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let next_offset = header("kiln-next-offset").and_then(|v| v.parse().ok()).unwrap_or(offset);
        let complete = header("kiln-complete").as_deref() == Some("true");
        let bytes = resp.bytes().await.map_err(ClientError::Transport)?.to_vec();
        Ok(LogPage { bytes, next_offset, complete })
    }

    pub async fn events(&self, id: &str, after: u64, limit: usize) -> Result<EventPage, ClientError> {
        let req = self
            .http
            .get(self.url(&format!("/v1/builds/{id}/events")))
            .query(&[("after", after as usize), ("limit", limit)]);
        self.json(req).await
    }

    pub async fn images(&self) -> Result<ImageList, ClientError> {
        self.json(self.http.get(self.url("/v1/images"))).await
    }

    pub async fn image(&self, name: &str) -> Result<ImageDetailView, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/images/{name}")))).await
    }

    pub async fn build_missing(
        &self,
        image: &str,
        providers: Option<Vec<String>>,
    ) -> Result<BuildMissingAnswer, ClientError> {
        let body = BuildMissingRequest { providers };
        self.json(self.http.post(self.url(&format!("/v1/images/{image}/builds"))).json(&body)).await
    }

    pub async fn emit(&self, id: &str, event: &CloudEventView) -> Result<Accepted, ClientError> {
        self.json(self.http.post(self.url(&format!("/v1/builds/{id}/events"))).json(event)).await
    }

    /// Sets a secret to `value` (sent as given).
    pub async fn put_secret(
        &self,
        org: &str,
        repo: &str,
        name: &str,
        value: Vec<u8>,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!("/v1/repos/{org}/{repo}/secrets/{name}"));
        self.send(self.http.put(url).header("content-type", "application/octet-stream").body(value)).await?;
        Ok(())
    }

    pub async fn put_repo(&self, org: &str, repo: &str, req: &RepoRequest) -> Result<RepoView, ClientError> {
        self.json(self.http.put(self.url(&format!("/v1/repos/{org}/{repo}"))).json(req)).await
    }

    pub async fn repos(&self) -> Result<RepoList, ClientError> {
        self.json(self.http.get(self.url("/v1/repos"))).await
    }

    pub async fn secrets(&self, org: &str, repo: &str) -> Result<SecretList, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/repos/{org}/{repo}/secrets")))).await
    }

    pub async fn delete_secret(&self, org: &str, repo: &str, name: &str) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(&format!("/v1/repos/{org}/{repo}/secrets/{name}")))).await?;
        Ok(())
    }

    /// A runner's fetch of its stage's declared secrets (a runner token of `id` only).
    pub async fn runner_secrets(&self, id: &str, stage: &str) -> Result<RunnerSecrets, ClientError> {
        let req = self.http.get(self.url(&format!("/v1/builds/{id}/secrets"))).query(&[("stage", stage)]);
        self.json(req).await
    }

    async fn ingest(
        &self,
        build: &BuildId,
        what: &str,
        query: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<IngestReply, SinkError> {
        let req =
            self.http.post(self.url(&format!("/v1/builds/{build}/ingest/{what}"))).query(query).body(body);
        match self.json::<IngestAnswer>(req).await {
            Ok(a) => Ok(IngestReply { canceled: a.canceled }),
            Err(e) => Err(sink_error(build, e)),
        }
    }
}

/// A runner's sinks over HTTP: log batches to ingest, events to the events route.
#[async_trait]
impl LogSink for ApiClient {
    async fn put(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError> {
        self.ingest(
            build,
            "logs",
            &[("stream", stream.key()), ("offset", offset.to_string())],
            bytes.to_vec(),
        )
        .await
    }

    async fn append_init(
        &self,
        build: &BuildId,
        batch_id: &str,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError> {
        self.ingest(build, "init", &[("batch", batch_id.to_string())], bytes.to_vec()).await
    }

    async fn complete(&self, build: &BuildId, stream: &LogStream) -> Result<IngestReply, SinkError> {
        self.ingest(build, "complete", &[("stream", stream.key())], Vec::new()).await
    }

    async fn heartbeat(&self, build: &BuildId, stage: &StageName) -> Result<IngestReply, SinkError> {
        self.ingest(build, "heartbeat", &[("stage", stage.to_string())], Vec::new()).await
    }
}

#[async_trait]
impl EventSink for ApiClient {
    async fn emit(&self, event: CloudEvent) -> Result<(), SinkError> {
        let build =
            event.kilnbuild.clone().ok_or_else(|| SinkError::Permanent("event without a build".into()))?;
        match ApiClient::emit(self, build.as_str(), &event.into()).await {
            Ok(_) => Ok(()),
            Err(e) => Err(sink_error(&build, e)),
        }
    }
}

/// Over the API with the job's token; the answer is checked against the declared names.
#[async_trait]
impl SecretSource for ApiClient {
    async fn fetch(&self, job: &Job) -> Result<Delivered, SecretFetchError> {
        let declared = job.plan.secret_names();
        if declared.is_empty() && !job.wants_checkout() {
            return Ok(Delivered::default());
        }
        if !job.secrets_allowed && !declared.is_empty() {
            return Err(SecretFetchError::Refused(format!("build {} may not use secrets", job.build)));
        }
        // A refusal (403) is kept apart from the other answers, which retry as sinks do.
        let refused = std::sync::Mutex::new(None);
        let answer = kiln_core::runner::retry_transient("secrets", || async {
            match self.runner_secrets(job.build.as_str(), job.stage.as_str()).await {
                Err(ClientError::Api { status: 403, message, .. }) => {
                    *refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.clone());
                    Err(SinkError::Permanent(message))
                }
                other => other.map_err(|e| sink_error(&job.build, e)),
            }
        })
        .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                return Err(match refused.into_inner().unwrap_or_else(|e| e.into_inner()) {
                    Some(m) => SecretFetchError::Refused(m),
                    None => SecretFetchError::Backend(e.to_string()),
                });
            }
        };
        let mut values = std::collections::BTreeMap::new();
        for (name, value) in answer.values {
            if let Some(n) = declared.iter().find(|n| n.as_str() == name) {
                values.insert(n.clone(), value);
            }
        }
        let missing = declared.iter().filter(|n| !values.contains_key(*n)).cloned().collect();
        Ok(Delivered { values, missing, checkout_token: answer.checkout_token })
    }
}

/// A client error as a sink error, by kind: what is worth retrying is transient.
fn sink_error(build: &BuildId, e: ClientError) -> SinkError {
    match e {
        ClientError::Api { status: 404, .. } => SinkError::UnknownBuild(build.clone()),
        ClientError::Api { status, message, .. } if status >= 500 || status == 429 => {
            SinkError::Transient(message)
        }
        ClientError::Transport(e) => SinkError::Transient(e.to_string()),
        e => SinkError::Permanent(e.to_string()),
    }
}

/// Runners that reach Kiln over HTTP at `base`, each with its job's token.
pub struct HttpSinks {
    pub base: String,
}

impl SinkFactory for HttpSinks {
    fn sinks(&self, job: &Job) -> (Arc<dyn LogSink>, Arc<dyn EventSink>) {
        let client = Arc::new(ApiClient::new(&self.base, job.token.as_deref().unwrap_or_default()));
        (client.clone(), client)
    }

    fn secrets(&self, job: &Job) -> Arc<dyn SecretSource> {
        Arc::new(ApiClient::new(&self.base, job.token.as_deref().unwrap_or_default()))
    }
}
