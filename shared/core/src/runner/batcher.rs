//! Log batching: a blocking thread reads a pipe in 64 KiB reads into a bounded channel;
//! an async batcher splits the bytes into lines, acts on `::kiln::` directives, and sends
//! batches to the log sink every flush interval (or sooner when `max_batch_bytes` are
//! waiting), masked, at contiguous byte offsets.
//!
//! Memory per stream is bounded: the channel holds at most `CHANNEL_CHUNKS` reads, the
//! buffer at most `max_batch_bytes` plus one read; a slow sink stalls the reader, which
//! stalls the process writing to the pipe (backpressure).

use super::shared::{Shared, retry};
use kiln_domain::StepName;
use kiln_domain::event::CloudEvent;
use kiln_domain::logs::LogStream;
use kiln_domain::protocol::{self, Directive, PREFIX};
use kiln_domain::report::{ImageProgress, ImageResult, Report};
use std::borrow::Cow;
use std::io::{PipeReader, Read};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Size of one read from the pipe.
const READ_CHUNK: usize = 64 * 1024;
/// Reads in flight between the reader thread and the batcher.
const CHANNEL_CHUNKS: usize = 4;
/// At most this many events from the directives of one stream.
const MAX_EVENTS_PER_STREAM: usize = 10_000;
/// Longest excerpt of a bad line quoted in the init log.
const QUOTE_MAX: usize = 200;

/// Which directives of a stream are acted on.
#[derive(Debug, Clone)]
pub(crate) enum Directives {
    /// A step's output: every directive (events carry the step in their subject).
    Step(StepName),
    /// A service's output: only `mask`; other lines are kept as plain output.
    MaskOnly,
}

/// A running stream: its reader thread and batcher task.
pub(crate) struct StreamTask {
    handle: JoinHandle<()>,
    finish: Option<oneshot::Sender<()>>,
    /// Resolves when the reader thread stops (end of file).
    eof: oneshot::Receiver<()>,
    eof_seen: bool,
}

impl StreamTask {
    /// Waits up to `d` for the pipe's end of file (every writer closed it).
    pub async fn wait_eof(&mut self, d: Duration) -> bool {
        if !self.eof_seen && tokio::time::timeout(d, &mut self.eof).await.is_ok() {
            self.eof_seen = true;
        }
        self.eof_seen
    }

    /// Ends the stream: everything read so far is flushed and the stream completed. If the
    /// pipe is still open (a process escaped its group), reading stops here.
    pub async fn close(mut self) {
        if !self.eof_seen
            && let Some(f) = self.finish.take()
        {
            let _ = f.send(());
        }
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "log batcher task failed");
        }
    }
}

/// Starts reading `reader` into `stream`; the batcher completes the stream when it ends.
pub(crate) fn start_stream(
    shared: Arc<Shared>,
    stream: LogStream,
    label: String,
    directives: Directives,
    reader: PipeReader,
) -> std::io::Result<StreamTask> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(CHANNEL_CHUNKS);
    let (eof_tx, eof) = oneshot::channel();
    std::thread::Builder::new().name("kiln-log-reader".into()).spawn(move || {
        read_pipe(reader, tx);
        let _ = eof_tx.send(());
    })?;
    let (finish_tx, finish) = oneshot::channel();
    let batcher = Batcher::new(shared, stream, label, directives);
    let handle = tokio::spawn(batcher.run(rx, finish));
    Ok(StreamTask { handle, finish: Some(finish_tx), eof, eof_seen: false })
}

fn read_pipe(mut reader: PipeReader, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading a step's output failed");
                return;
            }
        }
    }
}

/// How the current (unfinished) line relates to bytes already sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineHead {
    /// The line starts in the buffer, at `line_start`.
    InBuffer,
    /// Its beginning was already sent (a partial flush): it is not parsed as a directive.
    /// `true` when that beginning looked like a directive.
    Sent { directive: bool },
}

struct Batcher {
    shared: Arc<Shared>,
    stream: LogStream,
    /// `stage/step` for messages.
    label: String,
    directives: Directives,
    interval: Duration,
    max: usize,
    /// Bytes read, not yet sent (unmasked).
    buf: Vec<u8>,
    /// Start of the unfinished last line in `buf`: everything before it is whole lines.
    line_start: usize,
    head: LineHead,
    /// When the bytes of the unfinished line (still in `buf`) started waiting.
    partial_since: Option<Instant>,
    /// Bytes of the stream sent so far (after masking).
    offset: u64,
    /// A batch could not be stored: the rest of the stream is dropped.
    broken: bool,
    /// When the last batch went out.
    last_put: Option<Instant>,
    events_sent: usize,
    events: Vec<CloudEvent>,
    warnings: Vec<String>,
}

impl Batcher {
    fn new(shared: Arc<Shared>, stream: LogStream, label: String, directives: Directives) -> Self {
        let interval = shared.config.flush_interval;
        let max = shared.config.max_batch_bytes;
        Self {
            shared,
            stream,
            label,
            directives,
            interval,
            max,
            buf: Vec::with_capacity(READ_CHUNK),
            line_start: 0,
            head: LineHead::InBuffer,
            partial_since: None,
            offset: 0,
            broken: false,
            last_put: None,
            events_sent: 0,
            events: Vec::new(),
            warnings: Vec::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Vec<u8>>, mut finish: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut finishing = false;
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(chunk) => {
                        self.ingest(&chunk);
                        drop(chunk);
                        self.drain_pending().await;
                        while self.buf.len() >= self.max {
                            self.flush_limit().await;
                        }
                        // Output after a quiet interval goes out at once; the next batch then
                        // waits a full interval again, so a stream still costs at most one
                        // write per interval, and a lone line is not held for up to a second.
                        if self.line_start > 0 && self.last_put.is_none_or(|t| t.elapsed() >= self.interval) {
                            self.send(self.line_start).await;
                            tick.reset();
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => self.flush_tick().await,
                _ = &mut finish, if !finishing => {
                    // Stop reading more; what is already in the channel is still taken.
                    finishing = true;
                    rx.close();
                }
            }
        }
        self.flush_end().await;
        self.drain_pending().await;
        self.shared.complete(&self.stream).await;
    }

    /// Appends a read, acting on each line it completes.
    fn ingest(&mut self, chunk: &[u8]) {
        let mut pos = self.buf.len();
        self.buf.extend_from_slice(chunk);
        let mut new_line = false;
        while let Some(i) = self.buf[pos..].iter().position(|&b| b == b'\n') {
            let nl = pos + i;
            self.end_line(nl);
            self.line_start = nl + 1;
            pos = nl + 1;
            new_line = true;
        }
        if self.line_start == self.buf.len() {
            self.partial_since = None;
        } else if new_line || self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
    }

    /// The line `buf[line_start..end]` is whole: parse it if it may be a directive.
    fn end_line(&mut self, end: usize) {
        let head = std::mem::replace(&mut self.head, LineHead::InBuffer);
        match head {
            LineHead::Sent { directive: true } => {
                if matches!(self.directives, Directives::Step(_)) {
                    let msg = format!("line longer than {} bytes", self.max);
                    self.warn_directive(&msg, b"");
                }
            }
            LineHead::Sent { directive: false } => {}
            LineHead::InBuffer => {
                let line = &self.buf[self.line_start..end];
                if line.starts_with(PREFIX)
                    && let Some(parsed) = protocol::parse_line(line)
                {
                    let quote = line[..line.len().min(QUOTE_MAX)].to_vec();
                    match parsed {
                        Ok(d) => self.directive(d),
                        Err(e) => self.warn_directive(&e.0, &quote),
                    }
                }
            }
        }
    }

    fn warn_directive(&mut self, msg: &str, quote: &[u8]) {
        if !matches!(self.directives, Directives::Step(_)) {
            return;
        }
        let quote = String::from_utf8_lossy(quote);
        let sep = if quote.is_empty() { "" } else { ": " };
        self.warnings.push(format!("[{}] ignored malformed directive: {msg}{sep}{quote}", self.label));
    }

    fn directive(&mut self, d: Directive) {
        if let Directive::Mask(value) = &d {
            self.shared.masker.write().unwrap_or_else(|e| e.into_inner()).add(value);
            return;
        }
        let Directives::Step(step) = &self.directives else { return };
        if self.events_sent >= MAX_EVENTS_PER_STREAM {
            if self.events_sent == MAX_EVENTS_PER_STREAM {
                self.warnings.push(format!(
                    "[{}] more than {MAX_EVENTS_PER_STREAM} directive events: the rest are ignored",
                    self.label
                ));
                self.events_sent += 1;
            }
            return;
        }
        self.events_sent += 1;
        let sh = &self.shared;
        {
            let mut open = sh.open_images.lock().unwrap_or_else(|e| e.into_inner());
            match &d {
                Directive::Progress { image, provider, .. } => {
                    open.insert((image.clone(), provider.clone()));
                }
                Directive::Result { image, provider, .. } => {
                    open.remove(&(image.clone(), provider.clone()));
                }
                _ => {}
            }
        }
        let (stage, step) = (sh.stage.clone(), step.clone());
        let report: Report = match d {
            Directive::Event { ty, mut data } => {
                // Events are stored: a secret a step puts in one is masked as in its log.
                mask_json(&sh.masker.read().unwrap_or_else(|e| e.into_inner()), &mut data);
                let ty = sh.mask_string(&ty);
                let subject = sh.step_subject(step.as_str());
                let event = CloudEvent::new(ty, sh.source.clone(), &sh.build, data).with_subject(subject);
                return self.events.push(event);
            }
            Directive::Progress { image, provider, percent, phase } => {
                ImageProgress { image, provider, percent, phase, stage, step }.into()
            }
            Directive::Result { image, provider, mut outcome } => {
                if let kiln_domain::protocol::ImageOutcome::Error { message } = &mut outcome {
                    *message = sh.mask_string(message);
                }
                ImageResult::new(image, provider, outcome, stage, step).into()
            }
            Directive::Mask(_) => unreachable!("handled above"),
        };
        self.events.push(report.to_event(&sh.build, sh.source.clone()));
    }

    /// Emits the events of directives and writes warnings to the init log.
    async fn drain_pending(&mut self) {
        for event in std::mem::take(&mut self.events) {
            let ty = event.ty.clone();
            if let Err(e) = self.shared.emit_event(event).await {
                self.warnings.push(format!("[{}] could not emit event {ty}: {e}", self.label));
            }
        }
        if !self.warnings.is_empty() {
            let warnings = std::mem::take(&mut self.warnings);
            self.shared.init_lines(&warnings).await;
        }
    }

    fn pending_secret_len(&self, bytes: &[u8]) -> usize {
        self.shared.masker.read().unwrap_or_else(|e| e.into_inner()).pending_suffix_len(bytes)
    }

    /// At a tick: whole lines, and the unfinished line once it has waited a full interval
    /// (unless it may still become a directive).
    async fn flush_tick(&mut self) {
        let mut cut = self.line_start;
        let partial = &self.buf[self.line_start..];
        let waited = self.partial_since.is_some_and(|t| t.elapsed() >= self.interval);
        let maybe_directive = self.head == LineHead::InBuffer && protocol::may_be_directive(partial);
        if !partial.is_empty() && waited && !maybe_directive {
            cut = self.buf.len() - self.pending_secret_len(partial);
        }
        self.send(cut).await;
    }

    /// `max_batch_bytes` are waiting: send up to the last newline in them, else all of them.
    async fn flush_limit(&mut self) {
        let cut = if self.line_start > 0 && self.line_start <= self.max {
            self.line_start
        } else if let Some(i) = self.buf[..self.max].iter().rposition(|&b| b == b'\n') {
            i + 1
        } else {
            let keep = self.pending_secret_len(&self.buf[..self.max]);
            if keep < self.max { self.max - keep } else { self.max }
        };
        self.send(cut).await;
    }

    /// The stream ended: the last line, even without a newline, is a line.
    async fn flush_end(&mut self) {
        if self.line_start < self.buf.len() {
            self.end_line(self.buf.len());
            self.line_start = self.buf.len();
        }
        while !self.buf.is_empty() {
            let cut = self.buf.len().min(self.max);
            let cut =
                if cut < self.buf.len() { cut - self.pending_secret_len(&self.buf[..cut]) } else { cut };
            self.send(cut.max(1)).await;
        }
    }

    /// Sends `buf[..cut]` (masked) and keeps the rest.
    async fn send(&mut self, cut: usize) {
        if cut == 0 {
            return;
        }
        if cut > self.line_start {
            // Cutting into the unfinished line: its start leaves the buffer.
            let directive = match self.head {
                LineHead::InBuffer => self.buf[self.line_start..].starts_with(PREFIX),
                LineHead::Sent { directive } => directive,
            };
            self.head = LineHead::Sent { directive };
            self.line_start = 0;
            self.partial_since = (cut < self.buf.len()).then(Instant::now);
        } else {
            self.line_start -= cut;
        }
        let rest = self.buf[cut..].to_vec();
        let mut data = std::mem::replace(&mut self.buf, rest);
        data.truncate(cut);
        self.put(data).await;
    }

    async fn put(&mut self, data: Vec<u8>) {
        // After the lease is lost the next attempt owns the stage: its logs are its own.
        if self.broken || self.shared.is_lost() {
            return;
        }
        self.last_put = Some(Instant::now());
        let masked = {
            let m = self.shared.masker.read().unwrap_or_else(|e| e.into_inner());
            match m.mask(&data) {
                Cow::Owned(v) => Some(v),
                Cow::Borrowed(_) => None,
            }
        };
        let data = masked.unwrap_or(data);
        for chunk in data.chunks(self.max) {
            let offset = self.offset;
            let (sh, stream) = (&self.shared, &self.stream);
            match retry("log batch", || sh.logs.put(&sh.build, stream, offset, chunk)).await {
                Ok(reply) => {
                    sh.note_reply(reply);
                    self.offset += chunk.len() as u64;
                }
                Err(e) => {
                    self.broken = true;
                    self.warnings.push(format!(
                        "[{}] storing the log failed at byte {offset}: {e}; the rest of this log is lost",
                        self.label
                    ));
                    break;
                }
            }
        }
    }
}

/// Masks every string, number (by its text: a masked number becomes a string) and object
/// key in an event's data.
fn mask_json(masker: &kiln_domain::protocol::Masker, value: &mut serde_json::Value) {
    use serde_json::Value;
    if masker.is_empty() {
        return;
    }
    let mask = |s: &str| String::from_utf8_lossy(&masker.mask(s.as_bytes())).into_owned();
    match value {
        Value::String(s) => *s = mask(s),
        Value::Number(n) => {
            let text = n.to_string();
            let masked = mask(&text);
            if masked != text {
                *value = Value::String(masked);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mask_json(masker, v)),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut v) in old {
                mask_json(masker, &mut v);
                map.insert(mask(&k), v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::mask_json;
    use kiln_domain::protocol::Masker;
    use serde_json::json;

    #[test]
    fn event_data_is_masked_in_strings_keys_and_numbers() {
        let mut m = Masker::new();
        m.add("20482048");
        m.add("hunter2x");
        let mut data = json!({"pin": 20482048, "n": 7, "hunter2x": ["a hunter2x b", 1.5], "ok": true});
        mask_json(&m, &mut data);
        assert_eq!(data, json!({"pin": "***", "n": 7, "***": ["a *** b", 1.5], "ok": true}));
    }
}
