//! Log ingest: stores the runner's log batches and tells it when to stop: its build was
//! canceled, or its stage was ended elsewhere (stopped by an event).

use crate::sinks::{IngestReply, LogSink, SinkError};
use async_trait::async_trait;
use kiln_domain::logs::LogStream;
use kiln_domain::{BuildId, StageName, Status};
use kiln_store::{LogError, LogStore, StateStore};
use std::sync::Arc;

#[derive(Clone)]
pub struct Ingest {
    pub logs: Arc<dyn LogStore>,
    pub state: Arc<dyn StateStore>,
}

impl Ingest {
    /// The answer to every ingest call: read with `run_status` (the build's and the
    /// stage's status only, possibly a moment stale: a hint; the lease decides).
    async fn reply(&self, build: &BuildId, stage: Option<&StageName>) -> Result<IngestReply, SinkError> {
        let st =
            self.state.run_status(build, stage).await.map_err(|e| SinkError::Transient(e.to_string()))?;
        let Some(st) = st else {
            return Err(SinkError::UnknownBuild(build.clone()));
        };
        let stage_ended = st.stage.is_some_and(Status::is_terminal);
        Ok(IngestReply { canceled: st.build == Status::Canceled || stage_ended })
    }
}

fn stage_of(stream: &LogStream) -> Option<&StageName> {
    match stream {
        LogStream::Init => None,
        LogStream::Step { stage, .. } | LogStream::Service { stage, .. } => Some(stage),
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
        self.reply(build, stage_of(stream)).await
    }

    async fn append_init(
        &self,
        build: &BuildId,
        batch_id: &str,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError> {
        self.logs.append(build, &LogStream::Init, batch_id, bytes).await.map_err(sink_error)?;
        self.reply(build, None).await
    }

    async fn complete(&self, build: &BuildId, stream: &LogStream) -> Result<IngestReply, SinkError> {
        self.logs.complete(build, stream).await.map_err(sink_error)?;
        self.reply(build, stage_of(stream)).await
    }

    async fn heartbeat(&self, build: &BuildId, stage: &StageName) -> Result<IngestReply, SinkError> {
        self.reply(build, Some(stage)).await
    }
}
