//! Log ingest: stores the runner's log batches and tells it when its build was canceled.

use crate::sinks::{IngestReply, LogSink, SinkError};
use async_trait::async_trait;
use kiln_domain::logs::LogStream;
use kiln_domain::{BuildId, Status};
use kiln_store::{LogError, LogStore, StateStore};
use std::sync::Arc;

#[derive(Clone)]
pub struct Ingest {
    pub logs: Arc<dyn LogStore>,
    pub state: Arc<dyn StateStore>,
}

impl Ingest {
    async fn reply(&self, build: &BuildId) -> Result<IngestReply, SinkError> {
        let b = self.state.get_build(build).await.map_err(|e| SinkError::Transient(e.to_string()))?;
        match b {
            Some(b) => Ok(IngestReply { canceled: b.status == Status::Canceled }),
            None => Err(SinkError::Permanent(format!("unknown build {build}"))),
        }
    }
}

fn sink_error(e: LogError) -> SinkError {
    match e {
        LogError::Backend(m) => SinkError::Transient(m),
        other => SinkError::Permanent(other.to_string()),
    }
}

/// In one process the runner calls ingest directly.
#[async_trait]
impl LogSink for Ingest {
    async fn put(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError> {
        self.logs.put_chunk(build, stream, offset, bytes).await.map_err(sink_error)?;
        self.reply(build).await
    }

    async fn append_init(
        &self,
        build: &BuildId,
        batch_id: &str,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError> {
        self.logs.append(build, &LogStream::Init, batch_id, bytes).await.map_err(sink_error)?;
        self.reply(build).await
    }

    async fn complete(&self, build: &BuildId, stream: &LogStream) -> Result<IngestReply, SinkError> {
        self.logs.complete(build, stream).await.map_err(sink_error)?;
        self.reply(build).await
    }

    async fn heartbeat(&self, build: &BuildId) -> Result<IngestReply, SinkError> {
        self.reply(build).await
    }
}
