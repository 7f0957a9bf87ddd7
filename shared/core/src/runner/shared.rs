//! What every part of one job run shares: the sinks (with retries), the build's init log,
//! the masker, the cancel flag and the lease-lost flag.

use super::RunnerConfig;
use crate::sinks::{EventSink, IngestReply, LogSink, SinkError};
use kiln_domain::event::CloudEvent;
use kiln_domain::logs::LogStream;
use kiln_domain::protocol::Masker;
use kiln_domain::report::Report;
use kiln_domain::retry::Backoff;
use kiln_domain::{BuildId, StageName};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{Mutex, watch};

/// Calls `f` until it succeeds, fails permanently, or the shared transient policy
/// ([`Backoff::TRANSIENT`]) gives up. Each call must send the same request (same offset,
/// same bytes, same event id).
pub async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, SinkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SinkError>>,
{
    let policy = Backoff::TRANSIENT;
    let mut tries = 1;
    loop {
        match f().await {
            Err(SinkError::Transient(e)) if policy.again(tries) => {
                tracing::warn!(what, tries, error = %e, "transient sink error; retrying");
                tokio::time::sleep(policy.delay(tries - 1)).await;
                tries += 1;
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
    /// Set when another attempt took the lease: the steps are stopped (as for a cancel)
    /// and nothing more is reported or logged for this attempt.
    lost: AtomicBool,
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
            lost: AtomicBool::new(false),
            init_seq: Mutex::new(0),
            open_images: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    pub fn step_subject(&self, step: &str) -> String {
        format!("stage/{}/step/{step}", self.stage)
    }

    pub fn is_canceled(&self) -> bool {
        *self.cancel.borrow()
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// The lease is gone: from now on nothing is sent, and the steps are stopped.
    pub fn lose_lease(&self) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::warn!(build = %self.build, stage = %self.stage, attempt = self.attempt,
                "another attempt took the lease: stopping, reporting nothing more");
        }
        self.cancel.send_replace(true);
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

    /// Emits a report (retrying transient errors with the same id).
    pub async fn report(&self, report: impl Into<Report>) -> Result<(), SinkError> {
        self.emit_event(report.into().to_event(&self.build, self.source.clone())).await
    }

    /// Emits an event; once the lease is lost, sends nothing (the next attempt reports).
    pub async fn emit_event(&self, event: CloudEvent) -> Result<(), SinkError> {
        if self.is_lost() {
            tracing::debug!(build = %self.build, r#type = %event.ty, "lease lost: not sent");
            return Ok(());
        }
        let ty = event.ty.clone();
        retry(&ty, || self.events.emit(event.clone())).await
    }

    /// Appends lines to the build's init log (each gets a newline). Failures are logged,
    /// not returned: the init log is informative.
    pub async fn init_lines(&self, lines: &[String]) {
        if lines.is_empty() || self.is_lost() {
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
        if self.is_lost() {
            return;
        }
        match retry("complete log", || self.logs.complete(&self.build, stream)).await {
            Ok(reply) => self.note_reply(reply),
            Err(e) => {
                tracing::warn!(build = %self.build, stream = %stream, error = %e, "cannot complete the log")
            }
        }
    }
}
