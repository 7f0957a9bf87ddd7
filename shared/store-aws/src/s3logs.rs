//! [`S3LogStore`]: log streams as S3 objects. Ordinary buckets have no append, so each
//! batch is a chunk object whose key carries its byte offset; a stream that ends is
//! compacted into one object.
//!
//! Keys, under `logs/<build>/<stream key>/` (the stream key is `LogStream::key()`):
//!
//! ```text
//! chunks/<offset, 20 digits>   one batch's bytes, written with If-None-Match: *
//! open                         empty: the stream exists but has no bytes yet
//! log                          the compacted stream (written by `complete`)
//! complete                     marker, written after `log`: the stream's length
//! batches/<batch id, escaped>  `append`'s batch ids: the offset the batch landed at
//! ```
//!
//! Chunks are contiguous: a chunk is only written at the end the writer saw (after
//! checking the bytes it overlaps), and a chunk key can be created once (If-None-Match),
//! so two writers racing for one offset cannot both win; the loser looks again and
//! writes at the new end, or finds its bytes there already (a retry), or reports a
//! conflict.

use crate::describe;
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use kiln_domain::BuildId;
use kiln_domain::logs::LogStream;
use kiln_store::{LogError, LogInfo, LogRead, LogStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The most bytes one read returns, whatever `max` asks for (like the local store).
pub const MAX_READ: usize = 8 * 1024 * 1024;
/// Compaction builds multipart parts of this size (S3's minimum part is 5 MiB); a stream
/// shorter than this is compacted with one PutObject. At most one part is in memory.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// A chunk at least this big (and starting a part) is copied server-side (UploadPartCopy).
const MIN_PART: u64 = 5 * 1024 * 1024;
/// How often a write that lost a race for an offset looks again.
const MAX_ROUNDS: u32 = 64;
/// A batch id claimed by a writer that has not recorded its offset yet is taken over
/// after this long (the writer crashed between claiming and recording).
const PENDING_STALE: Duration = Duration::from_secs(30);
/// ... or after a concurrent resend of the same batch waited this long for it.
const PENDING_WAIT: Duration = Duration::from_secs(10);
/// Streams whose chunk layout is remembered between calls (a hint that saves listing
/// every chunk on every write; correctness never depends on it).
const LAYOUT_CACHE_STREAMS: usize = 256;
const PENDING: &str = "pending";

/// The log store on S3 (see the module docs for the keys).
///
/// With `express_append` (an S3 Express One Zone directory bucket), a stream is one
/// object appended in place with PutObject's write offset, and `complete` only writes
/// the marker. LocalStack cannot test that mode.
#[derive(Debug)]
pub struct S3LogStore {
    client: Client,
    bucket: String,
    express_append: bool,
    /// Stream prefix → its chunks (offset, length), contiguous from 0, as last seen.
    layouts: Mutex<HashMap<String, Vec<(u64, u64)>>>,
}

/// A stream's keys.
struct Paths {
    /// `build/key`, for messages.
    name: String,
    /// `logs/<build>/<key>/`.
    prefix: String,
}

impl Paths {
    fn chunk(&self, offset: u64) -> String {
        format!("{}chunks/{offset:020}", self.prefix)
    }
    fn chunks(&self) -> String {
        format!("{}chunks/", self.prefix)
    }
    fn log(&self) -> String {
        format!("{}log", self.prefix)
    }
    fn complete(&self) -> String {
        format!("{}complete", self.prefix)
    }
    fn open(&self) -> String {
        format!("{}open", self.prefix)
    }
    fn batch(&self, id: &str) -> String {
        format!("{}batches/{}", self.prefix, escape(id, false))
    }
}

/// What a stream looks like in the bucket right now.
#[derive(Debug, Default)]
struct Scan {
    /// (offset, length) of each chunk, contiguous from 0.
    chunks: Vec<(u64, u64)>,
    complete: bool,
    log_size: Option<u64>,
    open: bool,
}

impl Scan {
    fn end(&self) -> u64 {
        self.chunks.last().map_or(0, |(o, l)| o + l)
    }

    /// The stream's length: the compacted object's once complete.
    fn len(&self) -> u64 {
        if self.complete { self.log_size.unwrap_or(0) } else { self.end() }
    }

    fn exists(&self) -> bool {
        self.complete || self.open || self.log_size.is_some() || !self.chunks.is_empty()
    }
}

/// Percent-escapes everything but unreserved characters (and `/` if `keep_slash`).
fn escape(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Build ids become key segments: ASCII letters, digits, `-` and `_` only (UUIDs are).
fn is_safe_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn backend(what: &str, key: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Backend(format!("s3 {what} {key}: {e}"))
}

fn sdk<E, R>(what: &str, key: &str, e: &SdkError<E, R>) -> LogError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    backend(what, key, describe(e))
}

fn status_of<E, R: HttpStatus>(e: &SdkError<E, R>) -> Option<u16> {
    e.raw_response().map(HttpStatus::status_code)
}

/// The HTTP status of a raw response (the SDK's response type, behind a trait so helpers
/// stay generic over the operation).
trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Whether a conditional write lost: the key exists (412), another conditional write
/// on it is in flight (409), or (S3 Express append) the object is not at the offset.
fn lost_race<E: ProvideErrorMetadata, R: HttpStatus>(e: &SdkError<E, R>) -> bool {
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or_default();
    matches!(status_of(e), Some(412 | 409))
        || code == "PreconditionFailed"
        || code == "ConditionalRequestConflict"
        || code.contains("WriteOffset")
}

fn not_found<E: ProvideErrorMetadata, R: HttpStatus>(e: &SdkError<E, R>) -> bool {
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or_default();
    status_of(e) == Some(404) || code == "NoSuchKey" || code == "NotFound"
}

impl S3LogStore {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self { client, bucket: bucket.into(), express_append: false, layouts: Mutex::new(HashMap::new()) }
    }

    /// Appends in place on an S3 Express One Zone directory bucket instead of writing
    /// chunk objects (see the type's docs).
    pub fn with_express_append(mut self, on: bool) -> Self {
        self.express_append = on;
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
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

    fn layouts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(u64, u64)>>> {
        self.layouts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, p: &Paths) -> Vec<(u64, u64)> {
        self.layouts().get(&p.prefix).cloned().unwrap_or_default()
    }

    fn remember(&self, p: &Paths, chunks: &[(u64, u64)]) {
        let mut l = self.layouts();
        if l.len() >= LAYOUT_CACHE_STREAMS && !l.contains_key(&p.prefix) {
            l.clear();
        }
        l.insert(p.prefix.clone(), chunks.to_vec());
    }

    fn forget(&self, p: &Paths) {
        self.layouts().remove(&p.prefix);
    }

    // -----------------------------------------------------------------------------------
    // Reading the bucket

    /// The stream's state: its chunks (listing only those after the last one remembered)
    /// and its `complete`, `log` and `open` objects, in one listing (they sort after
    /// `chunks/`).
    async fn scan(&self, p: &Paths) -> Result<Scan, LogError> {
        if self.express_append {
            return self.scan_express(p).await;
        }
        for fresh in [false, true] {
            let mut scan =
                Scan { chunks: if fresh { Vec::new() } else { self.cached(p) }, ..Scan::default() };
            let start_after = match scan.chunks.last() {
                Some((o, _)) => p.chunk(*o),
                None => p.chunks(),
            };
            let mut token = None;
            let mut contiguous = true;
            loop {
                let out = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&p.prefix)
                    .start_after(&start_after)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .map_err(|e| sdk("list", &p.prefix, &e))?;
                for obj in out.contents() {
                    let (Some(key), size) = (obj.key(), obj.size().unwrap_or(0).max(0) as u64) else {
                        continue;
                    };
                    let rest = &key[p.prefix.len()..];
                    if let Some(offset) = rest.strip_prefix("chunks/") {
                        let Ok(offset) = offset.parse::<u64>() else { continue };
                        if offset != scan.end() || size == 0 {
                            contiguous = false;
                        }
                        scan.chunks.push((offset, size));
                    } else if rest == "complete" {
                        scan.complete = true;
                    } else if rest == "log" {
                        scan.log_size = Some(size);
                    } else if rest == "open" {
                        scan.open = true;
                    }
                }
                token = out.next_continuation_token.filter(|_| out.is_truncated == Some(true));
                if token.is_none() {
                    break;
                }
            }
            if contiguous || scan.complete {
                if !scan.complete {
                    self.remember(p, &scan.chunks);
                }
                return Ok(scan);
            }
            self.forget(p);
            if fresh {
                return Err(LogError::Backend(format!("{}: chunk objects are not contiguous", p.name)));
            }
        }
        unreachable!("the second round returns")
    }

    /// S3 Express: the stream is the `log` object itself, appended in place.
    async fn scan_express(&self, p: &Paths) -> Result<Scan, LogError> {
        let (complete_key, log_key) = (p.complete(), p.log());
        let (complete, log) = tokio::join!(self.head(&complete_key), self.head(&log_key));
        let log_size = log?;
        Ok(Scan {
            chunks: log_size.filter(|s| *s > 0).map(|s| vec![(0, s)]).unwrap_or_default(),
            complete: complete?.is_some(),
            log_size,
            open: false,
        })
    }

    /// The object's size, or None if there is none.
    async fn head(&self, key: &str) -> Result<Option<u64>, LogError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(sdk("head", key, &e)),
        }
    }

    /// The object's bytes (`range`: a byte range `start..end`), or None if it is gone.
    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Option<Vec<u8>>, LogError> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some((start, end)) = range {
            if end <= start {
                return Ok(Some(Vec::new()));
            }
            req = req.range(format!("bytes={start}-{}", end - 1));
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(sdk("get", key, &e)),
        };
        let body = out.body.collect().await.map_err(|e| backend("read", key, e))?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    /// The object that holds the chunk starting at `offset`.
    fn chunk_object(&self, p: &Paths, offset: u64) -> String {
        if self.express_append { p.log() } else { p.chunk(offset) }
    }

    /// The stored bytes `start..end` (within the stream's length), or None if an object
    /// went away meanwhile (the stream was completed: look again).
    async fn read_stored(
        &self,
        p: &Paths,
        scan: &Scan,
        start: u64,
        end: u64,
    ) -> Result<Option<Vec<u8>>, LogError> {
        if scan.complete {
            return self.get(&p.log(), Some((start, end))).await;
        }
        let mut out = Vec::with_capacity((end - start) as usize);
        for &(offset, len) in &scan.chunks {
            let (a, b) = (start.max(offset), end.min(offset + len));
            if a >= b {
                continue;
            }
            let key = self.chunk_object(p, offset);
            let range = if self.express_append { (a, b) } else { (a - offset, b - offset) };
            match self.get(&key, Some(range)).await? {
                Some(bytes) if bytes.len() as u64 == b - a => out.extend_from_slice(&bytes),
                _ => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    // -----------------------------------------------------------------------------------
    // Writing

    /// Creates the `open` marker of a stream that has no bytes yet.
    async fn put_open(&self, p: &Paths) -> Result<(), LogError> {
        let key = if self.express_append { p.log() } else { p.open() };
        let res = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from_static(b""))
            .if_none_match("*")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if lost_race(&e) => Ok(()),
            Err(e) => Err(sdk("put", &key, &e)),
        }
    }

    /// Writes `bytes` (not empty) at the stream's end `end`, as seen in `scan`. False if
    /// another writer got there first.
    async fn write_at_end(&self, p: &Paths, scan: &Scan, end: u64, bytes: &[u8]) -> Result<bool, LogError> {
        let mut req = self.client.put_object().bucket(&self.bucket).body(ByteStream::from(bytes.to_vec()));
        let key = if self.express_append {
            req = req.key(p.log());
            // Appending to an existing object at its end; creating it otherwise.
            req = if scan.log_size.is_some() {
                req.write_offset_bytes(i64::try_from(end).map_err(|e| backend("put", &p.log(), e))?)
            } else {
                req.if_none_match("*")
            };
            p.log()
        } else {
            let key = p.chunk(end);
            req = req.key(&key).if_none_match("*");
            key
        };
        match req.send().await {
            Ok(_) => {
                if !self.express_append {
                    let mut chunks = scan.chunks.clone();
                    chunks.push((end, bytes.len() as u64));
                    self.remember(p, &chunks);
                }
                Ok(true)
            }
            Err(e) if lost_race(&e) => Ok(false),
            Err(e) => Err(sdk("put", &key, &e)),
        }
    }

    async fn put_chunk_at(&self, p: &Paths, offset: u64, bytes: &[u8]) -> Result<(), LogError> {
        let n = bytes.len() as u64;
        for _ in 0..MAX_ROUNDS {
            let scan = self.scan(p).await?;
            if scan.complete {
                // A retry of a batch stored before the stream ended is fine.
                if offset.checked_add(n).is_some_and(|e| e <= scan.len()) {
                    match self.read_stored(p, &scan, offset, offset + n).await? {
                        Some(stored) if stored == bytes => return Ok(()),
                        Some(_) => {}
                        None => continue,
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
                    None => continue,
                }
            }
            let rest = &bytes[overlap..];
            if rest.is_empty() {
                if !scan.exists() {
                    self.put_open(p).await?;
                }
                return Ok(());
            }
            if self.write_at_end(p, &scan, end, rest).await? {
                return Ok(());
            }
        }
        Err(LogError::Backend(format!("{}: lost the race for the end {MAX_ROUNDS} times", p.name)))
    }

    /// Writes `bytes` at the stream's end, wherever that is when it gets there.
    async fn append_at_end(&self, p: &Paths, bytes: &[u8]) -> Result<Result<u64, LogError>, LogError> {
        for _ in 0..MAX_ROUNDS {
            let scan = self.scan(p).await?;
            if scan.complete {
                return Ok(Err(LogError::Complete { stream: p.name.clone() }));
            }
            let end = scan.end();
            if bytes.is_empty() {
                if !scan.exists() {
                    self.put_open(p).await?;
                }
                return Ok(Ok(end));
            }
            if self.write_at_end(p, &scan, end, bytes).await? {
                return Ok(Ok(end));
            }
        }
        Err(LogError::Backend(format!("{}: lost the race for the end {MAX_ROUNDS} times", p.name)))
    }

    /// The batch's marker: Some(Some(offset)) once recorded, Some(None) while claimed
    /// (with its age), None if there is none.
    async fn batch_marker(&self, key: &str) -> Result<Option<(Option<u64>, Duration)>, LogError> {
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(sdk("get", key, &e)),
        };
        let age = out
            .last_modified()
            .and_then(|t| {
                let secs = u64::try_from(t.secs()).ok()?;
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok()?;
                Some(now.saturating_sub(Duration::from_secs(secs)))
            })
            .unwrap_or_default();
        let body = out.body.collect().await.map_err(|e| backend("read", key, e))?.into_bytes();
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        if text == PENDING {
            return Ok(Some((None, age)));
        }
        let offset = text.parse().map_err(|e| backend("parse", key, format!("{text:?}: {e}")))?;
        Ok(Some((Some(offset), age)))
    }

    async fn put_small(&self, key: &str, body: String, if_none_match: bool) -> Result<bool, LogError> {
        let mut req =
            self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(body.into_bytes()));
        if if_none_match {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if if_none_match && lost_race(&e) => Ok(false),
            Err(e) => Err(sdk("put", key, &e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), LogError> {
        match self.client.delete_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(sdk("delete", key, &e)),
        }
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), LogError> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build().map_err(|e| backend("delete", k, e)))
                .collect::<Result<Vec<_>, _>>()?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| backend("delete", &batch[0], e))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| sdk("delete", &batch[0], &e))?;
            if let Some(err) = out.errors().first() {
                return Err(backend(
                    "delete",
                    err.key().unwrap_or_default(),
                    err.message().or(err.code()).unwrap_or("failed"),
                ));
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Compaction

    /// Writes the chunks of `scan` as the one `log` object. False if a chunk went away
    /// (another `complete` finished first).
    async fn compact(&self, p: &Paths, scan: &Scan) -> Result<bool, LogError> {
        let total = scan.end();
        let log = p.log();
        if total < PART_SIZE as u64 {
            let Some(bytes) = self.read_stored(p, scan, 0, total).await? else { return Ok(false) };
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&log)
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map_err(|e| sdk("put", &log, &e))?;
            return Ok(true);
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&log)
            .send()
            .await
            .map_err(|e| sdk("create multipart upload", &log, &e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = self.upload_parts(p, scan, &upload_id).await;
        match result {
            Ok(Some(parts)) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&log)
                    .upload_id(&upload_id)
                    .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                    .send()
                    .await
                    .map_err(|e| sdk("complete multipart upload", &log, &e))?;
                Ok(true)
            }
            other => {
                let abort =
                    self.client.abort_multipart_upload().bucket(&self.bucket).key(&log).upload_id(&upload_id);
                if let Err(e) = abort.send().await {
                    tracing::warn!(key = %log, error = %describe(&e), "abort multipart upload failed");
                }
                other.map(|_| false)
            }
        }
    }

    /// Uploads the parts of the compacted object: chunks gathered into parts of about
    /// [`PART_SIZE`] (one part in memory at a time); a chunk big enough to be a part on its
    /// own is copied inside S3. None if a chunk went away.
    async fn upload_parts(
        &self,
        p: &Paths,
        scan: &Scan,
        upload_id: &str,
    ) -> Result<Option<Vec<CompletedPart>>, LogError> {
        let log = p.log();
        let mut parts = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(PART_SIZE);
        let count = scan.chunks.len();
        for (i, &(offset, len)) in scan.chunks.iter().enumerate() {
            let key = p.chunk(offset);
            if buf.is_empty() && len >= MIN_PART {
                let number = parts.len() as i32 + 1;
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(&log)
                    .upload_id(upload_id)
                    .part_number(number)
                    .copy_source(format!("{}/{}", self.bucket, escape(&key, true)))
                    .send()
                    .await;
                let out = match out {
                    Ok(out) => out,
                    Err(e) if not_found(&e) => return Ok(None),
                    Err(e) => return Err(sdk("upload part copy", &key, &e)),
                };
                let etag = out.copy_part_result().and_then(|r| r.e_tag()).unwrap_or_default();
                parts.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
                continue;
            }
            let Some(bytes) = self.get(&key, None).await? else { return Ok(None) };
            buf.extend_from_slice(&bytes);
            if buf.len() >= PART_SIZE || i + 1 == count {
                let number = parts.len() as i32 + 1;
                let body = std::mem::replace(&mut buf, Vec::with_capacity(PART_SIZE));
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&log)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(|e| sdk("upload part", &log, &e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .e_tag(out.e_tag().unwrap_or_default())
                        .build(),
                );
            }
        }
        Ok(Some(parts))
    }

    /// Removes what a completed stream no longer needs: its chunks and `open` marker.
    async fn clean_up(&self, p: &Paths) -> Result<(), LogError> {
        if self.express_append {
            return Ok(());
        }
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(p.chunks())
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| sdk("list", &p.prefix, &e))?;
            keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_string)));
            token = out.next_continuation_token.filter(|_| out.is_truncated == Some(true));
            if token.is_none() {
                break;
            }
        }
        keys.push(p.open());
        self.delete_many(keys).await
    }
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
        self.put_chunk_at(&p, offset, bytes).await
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
            match self.batch_marker(&marker).await? {
                Some((Some(offset), _)) => return Ok(offset),
                Some((None, age)) if age < PENDING_STALE && started.elapsed() < PENDING_WAIT => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // Claimed by a writer that crashed: take it over (the bytes may then be
                // stored twice: at-least-once, like the local store after a crash).
                Some((None, _)) => break,
                None => {
                    if self.put_small(&marker, PENDING.to_string(), true).await? {
                        break;
                    }
                }
            }
        }
        match self.append_at_end(&p, bytes).await {
            Ok(Ok(offset)) => {
                self.put_small(&marker, offset.to_string(), false).await?;
                Ok(offset)
            }
            Ok(Err(e)) => {
                self.delete(&marker).await?;
                Err(e)
            }
            Err(e) => {
                // Unknown whether the bytes landed: leave the claim for a resend to judge.
                Err(e)
            }
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
        for _ in 0..MAX_ROUNDS {
            let scan = self.scan(&p).await?;
            if !scan.exists() {
                return Err(LogError::NotFound(p.name.clone()));
            }
            let len = scan.len();
            if offset >= len {
                return Ok(LogRead { bytes: Vec::new(), next_offset: len, complete: scan.complete });
            }
            let end = offset + (len - offset).min(max.min(MAX_READ) as u64);
            let Some(bytes) = self.read_stored(&p, &scan, offset, end).await? else { continue };
            return Ok(LogRead { bytes, next_offset: end, complete: scan.complete && end == len });
        }
        Err(LogError::Backend(format!("{}: the stream kept changing under the read", p.name)))
    }

    async fn complete(&self, build: &BuildId, stream: &LogStream) -> Result<(), LogError> {
        let p = self.paths(build, stream)?;
        for _ in 0..MAX_ROUNDS {
            let scan = self.scan(&p).await?;
            if !scan.complete {
                if self.express_append {
                    if scan.log_size.is_none() {
                        self.put_open(&p).await?;
                    }
                } else if !self.compact(&p, &scan).await? {
                    continue;
                }
                let len = if self.express_append { scan.log_size.unwrap_or(0) } else { scan.end() };
                // The marker last: once it exists, `log` holds every byte.
                self.put_small(&p.complete(), len.to_string(), true).await?;
            }
            self.forget(&p);
            return self.clean_up(&p).await;
        }
        Err(LogError::Backend(format!("{}: could not complete", p.name)))
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
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| sdk("list", &prefix, &e))?;
            for obj in out.contents() {
                let Some(key) = obj.key() else { continue };
                let size = obj.size().unwrap_or(0).max(0) as u64;
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
            token = out.next_continuation_token.filter(|_| out.is_truncated == Some(true));
            if token.is_none() {
                break;
            }
        }
        let mut infos: Vec<LogInfo> = seen
            .into_iter()
            .filter(|(_, s)| s.exists)
            .filter_map(|(key, s)| {
                let stream = LogStream::from_key(&key)?;
                let len = if s.complete || self.express_append { s.log.unwrap_or(0) } else { s.chunks };
                Some(LogInfo { stream, len, complete: s.complete })
            })
            .collect();
        // The stable order of `kiln_domain::logs::sort_streams` (init, steps, services).
        infos.sort_by_cached_key(|i| (i.stream.sort_key(), i.stream.key()));
        Ok(infos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape("runner-a:1", false), "runner-a%3A1");
        assert_eq!(escape("id with spaces\nand a newline", false), "id%20with%20spaces%0Aand%20a%20newline");
        assert_eq!(
            escape("logs/b/step/0001/t#2/unit/1/chunks/00", true),
            "logs/b/step/0001/t%232/unit/1/chunks/00"
        );
    }

    #[test]
    fn chunk_keys_sort_by_offset() {
        let p = Paths { name: "b/init".into(), prefix: "logs/b/init/".into() };
        assert!(p.chunk(9) < p.chunk(10));
        assert!(p.chunks() < p.chunk(0));
        // `complete`, `log` and `open` sort after every chunk, `batches/` before.
        assert!(p.chunk(u64::MAX) < p.complete());
        assert!(p.complete() < p.log() && p.log() < p.open());
        assert!(p.batch("zzz") < p.chunks());
    }
}
