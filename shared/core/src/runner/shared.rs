//! What every part of one job run shares: the sinks (with retries), the build's init log,
//! the masker and the cancel flag.

use super::RunnerConfig;
use crate::sinks::{EventSink, IngestReply, LogSink, SinkError};
use kiln_domain::event::CloudEvent;
use kiln_domain::logs::LogStream;
use kiln_domain::protocol::Masker;
use kiln_domain::{BuildId, StageName};
use serde_json::Value;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Mutex, watch};

/// How many times a transient sink error is tried in all.
const SINK_ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Calls `f` until it succeeds, fails permanently, or `SINK_ATTEMPTS` transient failures.
/// Each call must send the same request (same offset, same bytes, same event id).
pub(crate) async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, SinkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SinkError>>,
{
    let mut delay = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match f().await {
            Err(SinkError::Transient(e)) if attempt < SINK_ATTEMPTS => {
                tracing::warn!(what, attempt, error = %e, "transient sink error; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            r => return r,
        }
    }
}

pub(crate) struct Shared {
    pub config: RunnerConfig,
    pub build: BuildId,
    pub stage: StageName,
    pub attempt: u32,
    pub source: String,
    pub logs: Arc<dyn LogSink>,
    pub events: Arc<dyn EventSink>,
    /// Secrets declared by steps and services (`::kiln::mask`), for every stream.
    pub masker: RwLock<Masker>,
    /// Set by the caller's cancel signal or by an ingest reply.
    pub cancel: watch::Sender<bool>,
    /// Sequence number of the next init log batch; the lock keeps batches in order.
    init_seq: Mutex<u64>,
    /// (image, provider) pairs the running step reported progress for and no result yet.
    pub open_images: std::sync::Mutex<BTreeSet<(String, String)>>,
}

impl Shared {
    pub fn new(
        config: RunnerConfig,
        build: BuildId,
        stage: StageName,
        attempt: u32,
        logs: Arc<dyn LogSink>,
        events: Arc<dyn EventSink>,
    ) -> Self {
        let source = format!("kiln://runner/{}", config.runner_id);
        Self {
            config,
            build,
            stage,
            attempt,
            source,
            logs,
            events,
            masker: RwLock::new(Masker::new()),
            cancel: watch::channel(false).0,
            init_seq: Mutex::new(0),
            open_images: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    pub fn stage_subject(&self) -> String {
        format!("stage/{}", self.stage)
    }

    pub fn step_subject(&self, step: &str) -> String {
        format!("stage/{}/step/{step}", self.stage)
    }

    pub fn is_canceled(&self) -> bool {
        *self.cancel.borrow()
    }

    pub fn note_reply(&self, reply: IngestReply) {
        if reply.canceled && !self.is_canceled() {
            tracing::info!(build = %self.build, stage = %self.stage, "log ingest says the build was canceled");
            self.cancel.send_replace(true);
        }
    }

    pub fn mask_string(&self, s: &str) -> String {
        let m = self.masker.read().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&m.mask(s.as_bytes())).into_owned()
    }

    /// Builds and emits an event (retrying transient errors with the same id).
    pub async fn emit(&self, ty: &str, subject: String, data: Value) -> Result<(), SinkError> {
        let event = CloudEvent::new(ty, self.source.clone(), &self.build, data).with_subject(subject);
        self.emit_event(event).await
    }

    pub async fn emit_event(&self, event: CloudEvent) -> Result<(), SinkError> {
        let ty = event.ty.clone();
        retry(&ty, || self.events.emit(event.clone())).await
    }

    /// Appends lines to the build's init log (each gets a newline). Failures are logged,
    /// not returned: the init log is informative.
    pub async fn init_lines(&self, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        let bytes = self.mask_string(&text).into_bytes();
        let mut seq = self.init_seq.lock().await;
        let batch_id = format!("{}/{}/{}", self.stage, self.attempt, *seq);
        *seq += 1;
        match retry("init log", || self.logs.append_init(&self.build, &batch_id, &bytes)).await {
            Ok(reply) => self.note_reply(reply),
            Err(e) => tracing::warn!(build = %self.build, batch_id, error = %e, "cannot write the init log"),
        }
    }

    pub async fn init_line(&self, line: String) {
        self.init_lines(&[line]).await
    }

    /// Marks a stream complete (retrying); failures are logged.
    pub async fn complete(&self, stream: &LogStream) {
        match retry("complete log", || self.logs.complete(&self.build, stream)).await {
            Ok(reply) => self.note_reply(reply),
            Err(e) => {
                tracing::warn!(build = %self.build, stream = %stream, error = %e, "cannot complete the log")
            }
        }
    }
}
