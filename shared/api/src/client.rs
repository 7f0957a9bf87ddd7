//! An HTTP client of the `/v1` API, for the CLI's client commands and for runners that
//! send logs and events over HTTP with their build-scoped token.

use async_trait::async_trait;
use kiln_core::job::Job;
use kiln_core::sinks::{EventSink, IngestReply, LogSink, SinkError};
use kiln_core::system::SinkFactory;
use kiln_domain::event::CloudEvent;
use kiln_domain::logs::LogStream;
use kiln_domain::{BuildId, StageName};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error status.
    #[error("{status}: {message}")]
    Api { status: u16, message: String, details: Vec<Value> },
    #[error("cannot reach the API: {0}")]
    Transport(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Transport(_) => None,
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

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp =
            req.bearer_auth(&self.token).send().await.map_err(|e| ClientError::Transport(e.to_string()))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let message =
            body["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}"));
        let details = body["details"].as_array().cloned().unwrap_or_default();
        Err(ClientError::Api { status, message, details })
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        self.send(req).await?.json().await.map_err(|e| ClientError::Transport(e.to_string()))
    }

    pub async fn submit(&self, org: &str, repo: &str, pipeline: Vec<u8>) -> Result<Value, ClientError> {
        let req = self
            .http
            .post(self.url(&format!("/v1/repos/{org}/{repo}/builds")))
            .header("content-type", "application/yaml")
            .body(pipeline);
        self.json(req).await
    }

    pub async fn build(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/builds/{id}")))).await
    }

    pub async fn cancel(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.http.post(self.url(&format!("/v1/builds/{id}/cancel")))).await
    }

    pub async fn logs(&self, id: &str) -> Result<Value, ClientError> {
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
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport(e.to_string()))?.to_vec();
        Ok(LogPage { bytes, next_offset, complete })
    }

    pub async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Value, ClientError> {
        let req = self
            .http
            .get(self.url(&format!("/v1/builds/{id}/events")))
            .query(&[("after", after as usize), ("limit", limit)]);
        self.json(req).await
    }

    pub async fn images(&self) -> Result<Value, ClientError> {
        self.json(self.http.get(self.url("/v1/images"))).await
    }

    pub async fn build_missing(
        &self,
        image: &str,
        providers: Option<Vec<String>>,
    ) -> Result<Value, ClientError> {
        let body = serde_json::json!({ "providers": providers });
        self.json(self.http.post(self.url(&format!("/v1/images/{image}/builds"))).json(&body)).await
    }

    pub async fn emit(&self, id: &str, event: &Value) -> Result<Value, ClientError> {
        self.json(self.http.post(self.url(&format!("/v1/builds/{id}/events"))).json(event)).await
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
        match self.json(req).await {
            Ok(v) => Ok(IngestReply { canceled: v["canceled"].as_bool().unwrap_or(false) }),
            Err(ClientError::Transport(m)) => Err(SinkError::Transient(m)),
            Err(ClientError::Api { status, message, .. }) if status >= 500 || status == 429 => {
                Err(SinkError::Transient(message))
            }
            Err(e) => Err(SinkError::Permanent(e.to_string())),
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
        let body = serde_json::to_value(&event).map_err(|e| SinkError::Permanent(e.to_string()))?;
        match ApiClient::emit(self, build.as_str(), &body).await {
            Ok(_) => Ok(()),
            Err(ClientError::Transport(m)) => Err(SinkError::Transient(m)),
            Err(ClientError::Api { status, message, .. }) if status >= 500 || status == 429 => {
                Err(SinkError::Transient(message))
            }
            Err(e) => Err(SinkError::Permanent(e.to_string())),
        }
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
}
