//! [`S3LogStore`]: log streams as S3 objects. Ordinary buckets have no append, so each
//! batch is a chunk object whose key carries its byte offset; a stream that ends is
//! compacted into one object.
//!
//! Keys, under `logs/<build>/<stream key>/` (the stream key is `LogStream::key()`):
//!
//! ```text
//! chunks/<offset, 20 digits>   one batch's bytes, written with If-None-Match: *
//! open                         empty: the stream exists but has no bytes yet
//! log                          the compacted stream (written by `complete`): its
//!                              existence means complete in the chunked layout
//! complete                     marker, written after `log`: the stream's length (S3
//!                              Express only, where `log` is the live stream; streams
//!                              completed by earlier versions have it too)
//! batches/<batch id, escaped>  `append`'s batch ids: the offset the batch landed at
//! ```
//!
//! Chunks are contiguous: a chunk is only written at the end the writer saw (after
//! checking the bytes it overlaps), and a chunk key can be created once (If-None-Match),
//! so two writers racing for one offset cannot both win; the loser looks again and
//! writes at the new end, or finds its bytes there already (a retry), or reports a
//! conflict.
//!
//! That is the chunked layout ([`chunked`]). On an S3 Express One Zone directory bucket
//! (`with_express_append`) a stream is instead one object appended in place ([`express`]).
//! The rules below are written once, over the [`layout::Layout`] trait; lost races are
//! retried with the adapters' one policy for contended writes (`retry_races`).

mod chunked;
mod compact;
mod express;
mod keys;
mod layout;
mod objects;

use crate::retry_races;
use async_trait::async_trait;
use aws_sdk_s3::Client;
use keys::{Paths, Scan, is_safe_id};
use kiln_domain::BuildId;
use kiln_domain::logs::LogStream;
use kiln_store::{LogError, LogInfo, LogRead, LogStore};
use layout::{Layout, read_stored};
use objects::{Objects, PENDING};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// The most bytes one read returns, whatever `max` asks for (like the local store).
pub const MAX_READ: usize = 8 * 1024 * 1024;
/// A batch id claimed by a writer that has not recorded its offset yet is taken over
/// after this long (the writer crashed between claiming and recording).
const PENDING_STALE: Duration = Duration::from_secs(30);
/// ... or after a concurrent resend of the same batch waited this long for it.
const PENDING_WAIT: Duration = Duration::from_secs(10);
/// How often a resend looks whether the first delivery of its batch has landed.
const PENDING_POLL: Duration = Duration::from_millis(100);

/// The log store on S3 (see the module docs for the keys).
///
/// With `express_append` (an S3 Express One Zone directory bucket), a stream is one
/// object appended in place with PutObject's write offset, and `complete` only writes
/// the marker. LocalStack cannot test that mode.
#[derive(Debug)]
pub struct S3LogStore {
    objects: Objects,
    layout: Box<dyn Layout>,
}

impl S3LogStore {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            objects: Objects { client, bucket: bucket.into() },
            layout: Box::<chunked::Chunked>::default(),
        }
    }

    /// Appends in place on an S3 Express One Zone directory bucket instead of writing
    /// chunk objects (see the type's docs).
    pub fn with_express_append(mut self, on: bool) -> Self {
        self.layout = if on { Box::new(express::Express) } else { Box::<chunked::Chunked>::default() };
        self
    }

    pub fn bucket(&self) -> &str {
        &self.objects.bucket
    }

    /// The object holding a stream's compacted bytes (once complete).
    pub fn log_key(build: &BuildId, stream: &LogStream) -> String {
        format!("logs/{build}/{}/log", stream.key())
    }

    /// The prefix under which a stream's chunk objects are.
    pub fn chunks_prefix(build: &BuildId, stream: &LogStream) -> String {
        format!("logs/{build}/{}/chunks/", stream.key())
    }

    fn paths(&self, build: &BuildId, stream: &LogStream) -> Result<Paths, LogError> {
        let key = stream.key();
        let name = format!("{build}/{key}");
        if !is_safe_id(build.as_str()) || key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(LogError::NotFound(name));
        }
        Ok(Paths { name, prefix: format!("logs/{build}/{key}/") })
    }

    async fn scan(&self, p: &Paths) -> Result<Scan, LogError> {
        self.layout.scan(&self.objects, p).await
    }

    async fn read_stored(
        &self,
        p: &Paths,
        scan: &Scan,
        start: u64,
        end: u64,
    ) -> Result<Option<Vec<u8>>, LogError> {
        read_stored(&*self.layout, &self.objects, p, scan, start, end).await
    }

    /// Writes `bytes` (not empty) at the end this process remembers for the stream, if it
    /// remembers one and `at` (the writer's offset; None: wherever the end is) is that end:
    /// the offset it landed at, or None if the write was not tried or did not land.
    ///
    /// This skips the scan (a ListObjectsV2, priced like a PUT) before almost every batch
    /// of a busy stream. It is safe without the scan: the chunk is created with
    /// If-None-Match, so where another writer got first (a stale memory, a retry) the
    /// PUT fails and the caller scans as before; chunks are contiguous, so an end no
    /// chunk holds yet is the end. What the scan would add — that the stream was not
    /// completed meanwhile — it could never promise either (a `complete` can land between
    /// a scan and its PUT): `complete` comes after a stream's last write, as the runner
    /// and ingest order it. A process that does not remember the stream (cold, or after
    /// it completed it) scans once.
    async fn try_remembered_end(
        &self,
        p: &Paths,
        at: Option<u64>,
        bytes: &[u8],
    ) -> Result<Option<u64>, LogError> {
        let Some(scan) = self.layout.remembered(p) else { return Ok(None) };
        let end = scan.end();
        if bytes.is_empty() || at.is_some_and(|at| at != end) {
            return Ok(None);
        }
        Ok(self.layout.write_at_end(&self.objects, p, &scan, end, bytes).await?.then_some(end))
    }

    /// One try at writing `bytes` at `offset`: None if it lost a race (look again).
    async fn try_put_chunk(&self, p: &Paths, offset: u64, bytes: &[u8]) -> Result<Option<()>, LogError> {
        if self.try_remembered_end(p, Some(offset), bytes).await?.is_some() {
            return Ok(Some(()));
        }
        let n = bytes.len() as u64;
        let scan = self.scan(p).await?;
        if scan.complete {
            // A retry of a batch stored before the stream ended is fine.
            if offset.checked_add(n).is_some_and(|e| e <= scan.len()) {
                match self.read_stored(p, &scan, offset, offset + n).await? {
                    Some(stored) if stored == bytes => return Ok(Some(())),
                    Some(_) => {}
                    None => return Ok(None),
                }
            }
            return Err(LogError::Complete { stream: p.name.clone() });
        }
        let end = scan.end();
        if offset > end {
            return Err(LogError::Gap { stream: p.name.clone(), offset, len: end });
        }
        // The bytes already stored where this batch goes must be the same.
        let overlap_end = offset.saturating_add(n).min(end);
        let overlap = (overlap_end - offset) as usize;
        if overlap > 0 {
            match self.read_stored(p, &scan, offset, overlap_end).await? {
                Some(stored) if stored == bytes[..overlap] => {}
                Some(_) => return Err(LogError::Conflict { stream: p.name.clone(), offset }),
                None => return Ok(None),
            }
        }
        let rest = &bytes[overlap..];
        if rest.is_empty() {
            if !scan.exists() {
                self.layout.put_open(&self.objects, p).await?;
            }
            return Ok(Some(()));
        }
        Ok(self.layout.write_at_end(&self.objects, p, &scan, end, rest).await?.then_some(()))
    }

    /// One try at writing `bytes` at the stream's end, wherever that is: the offset it
    /// landed at, None if it lost a race (look again). `Complete` means nothing landed.
    async fn try_append_at_end(&self, p: &Paths, bytes: &[u8]) -> Result<Option<u64>, LogError> {
        if let Some(end) = self.try_remembered_end(p, None, bytes).await? {
            return Ok(Some(end));
        }
        let scan = self.scan(p).await?;
        if scan.complete {
            return Err(LogError::Complete { stream: p.name.clone() });
        }
        let end = scan.end();
        if bytes.is_empty() {
            if !scan.exists() {
                self.layout.put_open(&self.objects, p).await?;
            }
            return Ok(Some(end));
        }
        Ok(self.layout.write_at_end(&self.objects, p, &scan, end, bytes).await?.then_some(end))
    }

    async fn try_read(&self, p: &Paths, offset: u64, max: usize) -> Result<Option<LogRead>, LogError> {
        let scan = self.scan(p).await?;
        if !scan.exists() {
            return Err(LogError::NotFound(p.name.clone()));
        }
        let len = scan.len();
        if offset >= len {
            return Ok(Some(LogRead { bytes: Vec::new(), next_offset: len, complete: scan.complete }));
        }
        let end = offset + (len - offset).min(max.min(MAX_READ) as u64);
        let Some(bytes) = self.read_stored(p, &scan, offset, end).await? else { return Ok(None) };
        Ok(Some(LogRead { bytes, next_offset: end, complete: scan.complete && end == len }))
    }

    async fn try_complete(&self, p: &Paths) -> Result<Option<()>, LogError> {
        let scan = self.scan(p).await?;
        if !scan.complete {
            let Some(len) = self.layout.seal(&self.objects, p, &scan).await? else { return Ok(None) };
            // The marker last: once it exists, `log` holds every byte. (Not needed where
            // `log` itself says so: one PUT less per stream.)
            if !self.layout.log_is_complete() {
                self.objects.put(&p.complete(), len.to_string().into_bytes(), true).await?;
            }
        }
        self.layout.clean_up(&self.objects, p, &scan).await.map(Some)
    }
}

/// Logs a lost race before it is tried again.
fn retrying<'a>(what: &'static str, p: &'a Paths) -> impl Fn(u32) + 'a {
    move |tries| tracing::debug!(stream = %p.name, tries, "{what} lost a race; retrying")
}

#[async_trait]
impl LogStore for S3LogStore {
    async fn put_chunk(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), LogError> {
        let p = self.paths(build, stream)?;
        retry_races(
            || self.try_put_chunk(&p, offset, bytes),
            retrying("write", &p),
            |tries| format!("{}: lost the race for the end {tries} times", p.name),
        )
        .await
    }

    async fn append(
        &self,
        build: &BuildId,
        stream: &LogStream,
        batch_id: &str,
        bytes: &[u8],
    ) -> Result<u64, LogError> {
        let p = self.paths(build, stream)?;
        let marker = p.batch(batch_id);
        let started = Instant::now();
        // Claim the batch id (or find where it landed), so two deliveries of one batch
        // cannot both append it.
        loop {
            match self.objects.batch_marker(&marker).await? {
                Some((Some(offset), _)) => return Ok(offset),
                Some((None, age)) if age < PENDING_STALE && started.elapsed() < PENDING_WAIT => {
                    tokio::time::sleep(PENDING_POLL).await;
                }
                // Claimed by a writer that crashed: take it over (the bytes may then be
                // stored twice: at-least-once, like the local store after a crash).
                Some((None, _)) => break,
                None => {
                    if self.objects.put(&marker, PENDING.as_bytes().to_vec(), true).await? {
                        break;
                    }
                }
            }
        }
        let landed = retry_races(
            || self.try_append_at_end(&p, bytes),
            retrying("append", &p),
            |tries| format!("{}: lost the race for the end {tries} times", p.name),
        )
        .await;
        match landed {
            Ok(offset) => {
                self.objects.put(&marker, offset.to_string().into_bytes(), false).await?;
                Ok(offset)
            }
            // Refused (the stream is complete): nothing landed, free the batch id.
            Err(e @ LogError::Complete { .. }) => {
                self.objects.delete(&marker).await?;
                Err(e)
            }
            // Unknown whether the bytes landed: leave the claim for a resend to judge.
            Err(e) => Err(e),
        }
    }

    async fn read(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        max: usize,
    ) -> Result<LogRead, LogError> {
        let p = self.paths(build, stream)?;
        retry_races(
            || self.try_read(&p, offset, max),
            retrying("read", &p),
            |_| format!("{}: the stream kept changing under the read", p.name),
        )
        .await
    }

    async fn complete(&self, build: &BuildId, stream: &LogStream) -> Result<(), LogError> {
        let p = self.paths(build, stream)?;
        retry_races(
            || self.try_complete(&p),
            retrying("complete", &p),
            |_| format!("{}: could not complete", p.name),
        )
        .await
    }

    async fn list(&self, build: &BuildId) -> Result<Vec<LogInfo>, LogError> {
        if !is_safe_id(build.as_str()) {
            return Ok(Vec::new());
        }
        let prefix = format!("logs/{build}/");
        #[derive(Default)]
        struct Seen {
            chunks: u64,
            log: Option<u64>,
            complete: bool,
            exists: bool,
        }
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        for (key, size) in self.objects.list(&prefix, None).await? {
            let rest = &key[prefix.len()..];
            let tail = |sep: &str| rest.rsplit_once(sep).filter(|(_, t)| !t.contains('/'));
            if let Some((stream, _)) = tail("/batches/") {
                seen.entry(stream.to_string()).or_default();
            } else if let Some((stream, _)) = tail("/chunks/") {
                let s = seen.entry(stream.to_string()).or_default();
                s.chunks += size;
                s.exists = true;
            } else if let Some(stream) = rest.strip_suffix("/log") {
                let s = seen.entry(stream.to_string()).or_default();
                s.log = Some(size);
                s.exists = true;
            } else if let Some(stream) = rest.strip_suffix("/complete") {
                let s = seen.entry(stream.to_string()).or_default();
                s.complete = true;
                s.exists = true;
            } else if let Some(stream) = rest.strip_suffix("/open") {
                seen.entry(stream.to_string()).or_default().exists = true;
            }
        }
        let mut infos: Vec<LogInfo> = seen
            .into_iter()
            .filter(|(_, s)| s.exists)
            .filter_map(|(key, s)| {
                let stream = LogStream::from_key(&key)?;
                let complete = s.complete || (s.log.is_some() && self.layout.log_is_complete());
                let len = self.layout.listed_len(s.chunks, s.log, complete);
                Some(LogInfo { stream, len, complete })
            })
            .collect();
        // The stable order of `kiln_domain::logs::sort_streams` (init, steps, services).
        infos.sort_by_cached_key(|i| (i.stream.sort_key(), i.stream.key()));
        Ok(infos)
    }
}
