//! The port traits. Rules never see an SDK type: adapters translate.

use async_trait::async_trait;
use kiln_domain::catalog::{ImageHistoryEntry, ImageRecord};
use kiln_domain::commit::{ClaimDecision, CommitError};
use kiln_domain::event::StoredEvent;
use kiln_domain::logs::LogStream;
use kiln_domain::state::{Build, TransitionError};
use kiln_domain::{BuildId, Repo, StageName};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("build {0} not found")]
    NotFound(BuildId),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A conditional write lost: the state is not what the writer expected. Nothing of
    /// the commit was applied.
    #[error("conflict: {0}")]
    Conflict(#[from] TransitionError),
    #[error("storage failure: {0}")]
    Backend(String),
}

impl StoreError {
    /// The error for a commit to `build` that `Build::apply_commit` or
    /// `commit::apply_catalog` refused.
    pub fn refused(build: &BuildId, e: CommitError) -> Self {
        match e {
            CommitError::StageExists(stage) => Self::AlreadyExists(format!("stage {stage} of build {build}")),
            CommitError::Conflict(e) => Self::Conflict(e),
            e @ CommitError::InvalidImage { .. } => Self::Backend(e.to_string()),
        }
    }
}

/// A set of changes to one build, applied atomically and at most once per `event_id`
/// (defined in the domain, beside the rule that applies it: `Build::apply_commit`).
pub use kiln_domain::commit::Commit;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Applied; the events got sequence numbers `first_seq..first_seq + events.len()`.
    Applied { first_seq: u64 },
    /// This event id was applied before: nothing changed.
    Duplicate,
}

/// The outcome of a runner's attempt to take a stage's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The runner holds the job now; this is its attempt number (1, 2, ...).
    Claimed { attempt: u32 },
    /// Another runner holds a live lease on it: this delivery is a duplicate.
    Busy,
    /// The stage has already ended (or the build has): nothing to run.
    Finished,
}

impl From<&ClaimDecision> for Claim {
    fn from(d: &ClaimDecision) -> Self {
        match d {
            ClaimDecision::Finished => Claim::Finished,
            ClaimDecision::Busy => Claim::Busy,
            ClaimDecision::Renew(l) | ClaimDecision::Take(l) => Claim::Claimed { attempt: l.attempt },
        }
    }
}

/// A short view of a build for listings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildSummary {
    pub id: BuildId,
    pub repo: Repo,
    pub status: kiln_domain::Status,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
}

/// Where a build and one of its stages stand, without the rest of the build
/// ([`StateStore::run_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStatus {
    pub build: kiln_domain::Status,
    /// The stage asked about; None if none was asked or the build has no such stage.
    pub stage: Option<kiln_domain::Status>,
}

/// Builds, their stages and steps, and their event history.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Stores a new build. Fails with `AlreadyExists` if the id is taken.
    async fn create_build(&self, build: &Build) -> Result<(), StoreError>;
    async fn get_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError>;
    /// The sequence number of the build's last recorded event (0 before the first). Every
    /// commit records at least its own event, so this moves with every commit: a copy of
    /// the build read at this number (`get_build_seq`) is still current. Reads the build's
    /// header only. `None`: no such build.
    async fn build_seq(&self, id: &BuildId) -> Result<Option<u64>, StoreError>;
    /// The whole build and the sequence number it was read at (see `build_seq`).
    async fn get_build_seq(&self, id: &BuildId) -> Result<Option<(Build, u64)>, StoreError>;
    /// The build with only the named stages in `stages` (those that exist, in the build's
    /// order): what dispatch and log ingest need, read in requests whose number and size do
    /// not grow with the build. A partial view: never decide anything about the stages it
    /// leaves out.
    async fn get_build_part(&self, id: &BuildId, stages: &[StageName]) -> Result<Option<Build>, StoreError>;

    /// The status of a build and of one of its stages (None: no such build), for log
    /// ingest's answer to a running runner ("stop: canceled, or your stage ended").
    ///
    /// It may be a moment stale (an adapter may read it eventually consistent): it is a
    /// hint that makes a runner stop sooner, never what decides who may run — the lease
    /// (`claim_job`, read consistently) is. A stop seen one read late costs one more batch.
    /// By default read through `get_build`; an adapter where the whole build is dear to
    /// read (DynamoDB: every stage item) reads only the two items.
    async fn run_status(
        &self,
        build: &BuildId,
        stage: Option<&StageName>,
    ) -> Result<Option<RunStatus>, StoreError> {
        let stages = stage.map(|s| vec![s.clone()]).unwrap_or_default();
        let Some(b) = self.get_build_part(build, &stages).await? else { return Ok(None) };
        let stage = stage.and_then(|s| b.stage(s.as_str())).map(|s| s.status);
        Ok(Some(RunStatus { build: b.status, stage }))
    }
    /// A repository's builds, newest first.
    async fn list_builds(&self, repo: &Repo, limit: usize) -> Result<Vec<BuildSummary>, StoreError>;
    /// Applies a commit atomically: every transition's `from` must still hold.
    async fn commit(&self, build: &BuildId, commit: &Commit) -> Result<CommitOutcome, StoreError>;
    /// The build's history after `after_seq` (0 = from the start), at most `limit` events.
    async fn events(
        &self,
        build: &BuildId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Marks a stage's job queued. Returns false if it already was (nothing changes).
    async fn mark_dispatched(&self, build: &BuildId, stage: &StageName) -> Result<bool, StoreError>;
    /// Takes (or renews, for the same runner and attempt) the lease on a stage's job.
    /// A lease that has run out may be taken by another runner as the next attempt.
    async fn claim_job(
        &self,
        build: &BuildId,
        stage: &StageName,
        runner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError>;
    /// The image catalog: the records of one image, one per provider, sorted by provider
    /// (empty: no such image).
    async fn get_image(&self, image: &str) -> Result<Vec<ImageRecord>, StoreError>;
    /// Every record of the catalog, sorted by image, then provider.
    async fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError>;
    /// Every version of the image's records ever written, sorted by build, then
    /// provider, then version (empty: no such image).
    async fn image_history(&self, image: &str) -> Result<Vec<ImageHistoryEntry>, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Different bytes were already stored at this offset: a retry must resend the same.
    #[error("{stream}: different bytes already stored at offset {offset}")]
    Conflict { stream: String, offset: u64 },
    /// The write would leave a hole: the stream is only `len` bytes long.
    #[error("{stream}: write at offset {offset} but the stream has {len} bytes")]
    Gap { stream: String, offset: u64, len: u64 },
    /// The stream was completed: no more writes.
    #[error("{stream}: stream is complete")]
    Complete { stream: String },
    #[error("log not found: {0}")]
    NotFound(String),
    #[error("log storage failure: {0}")]
    Backend(String),
}

/// Bytes read from a stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogRead {
    pub bytes: Vec<u8>,
    /// Where the next read should start.
    pub next_offset: u64,
    /// The stream has ended and `next_offset` is its length.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogInfo {
    pub stream: LogStream,
    pub len: u64,
    pub complete: bool,
}

/// Log streams of builds. Writes are idempotent: a batch is keyed by its byte offset.
#[async_trait]
pub trait LogStore: Send + Sync {
    /// Writes `bytes` at `offset`. Rewriting the same bytes at the same offset is a no-op;
    /// different bytes there are a `Conflict`; an offset past the end is a `Gap`.
    async fn put_chunk(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), LogError>;
    /// Appends at the end, the store choosing the offset; `batch_id` makes it idempotent
    /// (the same id appends once). For streams with several writers: the init log.
    /// Returns the offset the batch landed at.
    async fn append(
        &self,
        build: &BuildId,
        stream: &LogStream,
        batch_id: &str,
        bytes: &[u8],
    ) -> Result<u64, LogError>;
    /// Reads up to `max` bytes from `offset`. An unknown stream is `NotFound`.
    async fn read(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        max: usize,
    ) -> Result<LogRead, LogError>;
    /// Ends a stream: compacts it into one object; later writes are refused. Idempotent.
    async fn complete(&self, build: &BuildId, stream: &LogStream) -> Result<(), LogError>;
    /// The build's streams in the stable order (init, steps by number, services).
    async fn list(&self, build: &BuildId) -> Result<Vec<LogInfo>, LogError>;
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("unknown or expired receipt")]
    BadReceipt,
    #[error("queue failure: {0}")]
    Backend(String),
}

/// A message to send. On FIFO queues `group` orders messages (one in flight per group)
/// and `dedup_id` drops a resend within the deduplication window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    pub body: String,
    pub group: Option<String>,
    pub dedup_id: Option<String>,
}

impl OutMessage {
    pub fn new(body: impl Into<String>) -> Self {
        Self { body: body.into(), group: None, dedup_id: None }
    }

    pub fn grouped(body: impl Into<String>, group: impl Into<String>, dedup_id: impl Into<String>) -> Self {
        Self { body: body.into(), group: Some(group.into()), dedup_id: Some(dedup_id.into()) }
    }
}

/// A received message: invisible to other receivers until its visibility timeout runs
/// out, unless deleted first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub receipt: String,
    pub body: String,
    /// 1 on first delivery, more on redelivery.
    pub receive_count: u32,
}

/// An SQS-like queue: at-least-once delivery, visibility timeout, redelivery.
#[async_trait]
pub trait Queue: Send + Sync {
    async fn send(&self, msg: OutMessage) -> Result<(), QueueError>;
    /// Waits up to `wait` for messages; returns at most `max`.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError>;
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;
    /// Sets the message's visibility timeout to `timeout` from now (0 = visible again).
    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError>;
}
