//! Where a runner sends what it produces: log batches to log ingest and events to the
//! event fan-in. In one process these call the libraries directly; across machines they
//! go over HTTP with a token scoped to the build.

use async_trait::async_trait;
use kiln_domain::event::CloudEvent;
use kiln_domain::logs::LogStream;
use kiln_domain::{BuildId, StageName};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying with the same request (network, throttling, a storage hiccup).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying the same request cannot succeed.
    #[error("{0}")]
    Permanent(String),
    /// There is no such build (HTTP 404): retrying cannot succeed either.
    #[error("unknown build {0}")]
    UnknownBuild(BuildId),
}

/// What log ingest tells the runner with each answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReply {
    /// The build was canceled, or this stage was ended (stopped by an event): stop
    /// running steps.
    pub canceled: bool,
}

#[async_trait]
pub trait LogSink: Send + Sync {
    /// Stores one batch of a stream at its byte offset (idempotent for a retry).
    async fn put(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError>;
    /// Appends to the build's init log; `batch_id` makes a retry append once.
    async fn append_init(
        &self,
        build: &BuildId,
        batch_id: &str,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError>;
    /// The stream has ended: compact it; no more writes.
    async fn complete(&self, build: &BuildId, stream: &LogStream) -> Result<IngestReply, SinkError>;
    /// Nothing to store, only the question: should this stage stop (build canceled, or
    /// the stage ended by an event)? Every other call answers it too, so runners ask
    /// only after 1.5 s without an answer (`system::HEARTBEAT_QUIET`).
    async fn heartbeat(&self, build: &BuildId, stage: &StageName) -> Result<IngestReply, SinkError> {
        let _ = (build, stage);
        Ok(IngestReply::default())
    }
}

#[async_trait]
pub trait EventSink: Send + Sync {
    /// Sends an event to the fan-in (ordered per build). A retry resends the same id.
    async fn emit(&self, event: CloudEvent) -> Result<(), SinkError>;
}
