//! How a stream's bytes lie in the bucket: the one thing that differs between ordinary
//! buckets ([`super::chunked::Chunked`]: a chunk object per batch, compacted at the end)
//! and S3 Express One Zone ([`super::express::Express`]: one object appended in place).
//! The store's rules (offsets, conflicts, batches, completion) are written once, in terms
//! of this trait.

use super::keys::{Paths, Scan};
use super::objects::Objects;
use async_trait::async_trait;
use kiln_store::LogError;

#[async_trait]
pub(super) trait Layout: std::fmt::Debug + Send + Sync {
    /// The stream as stored right now.
    async fn scan(&self, o: &Objects, p: &Paths) -> Result<Scan, LogError>;

    /// The stream as this process last saw it, without a request: a hint that lets a
    /// writer try the end it remembers before it scans; None if it remembers nothing.
    fn remembered(&self, _p: &Paths) -> Option<Scan> {
        None
    }

    /// Whether a `log` object alone means the stream is complete, so `complete` writes no
    /// marker of its own: true where only compaction writes `log`, whole, in one request
    /// (a PutObject, or the CompleteMultipartUpload that makes it appear); false where
    /// `log` is the live stream (S3 Express appends).
    fn log_is_complete(&self) -> bool {
        false
    }

    /// Where the stream's bytes `a..b`, which lie in the chunk starting at `offset`, are
    /// stored: the object's key and the byte range within it.
    fn locate(&self, p: &Paths, offset: u64, a: u64, b: u64) -> (String, (u64, u64));

    /// Makes a stream with no bytes exist (a lost race means it exists: fine).
    async fn put_open(&self, o: &Objects, p: &Paths) -> Result<(), LogError>;

    /// Writes `bytes` (not empty) at the stream's end `end`, as seen in `scan`. False if
    /// another writer got there first.
    async fn write_at_end(
        &self,
        o: &Objects,
        p: &Paths,
        scan: &Scan,
        end: u64,
        bytes: &[u8],
    ) -> Result<bool, LogError>;

    /// Makes the `log` object hold the whole stream, before the `complete` marker is
    /// written: the stream's length, or None if it changed underneath (look again).
    async fn seal(&self, o: &Objects, p: &Paths, scan: &Scan) -> Result<Option<u64>, LogError>;

    /// After `complete`: removes what a completed stream no longer needs (`scan`: the
    /// stream as compacted).
    async fn clean_up(&self, o: &Objects, p: &Paths, scan: &Scan) -> Result<(), LogError>;

    /// A listed stream's length, from the sizes of its chunk objects and its `log`.
    fn listed_len(&self, chunks: u64, log: Option<u64>, complete: bool) -> u64;
}

/// The stored bytes `start..end` (within the stream's length), or None if an object
/// went away meanwhile (the stream was completed: look again).
pub(super) async fn read_stored(
    layout: &dyn Layout,
    o: &Objects,
    p: &Paths,
    scan: &Scan,
    start: u64,
    end: u64,
) -> Result<Option<Vec<u8>>, LogError> {
    if scan.complete {
        return o.get(&p.log(), Some((start, end))).await;
    }
    let mut out = Vec::with_capacity((end - start) as usize);
    for &(offset, len) in &scan.chunks {
        let (a, b) = (start.max(offset), end.min(offset + len));
        if a >= b {
            continue;
        }
        let (key, range) = layout.locate(p, offset, a, b);
        match o.get(&key, Some(range)).await? {
            Some(bytes) if bytes.len() as u64 == b - a => out.extend_from_slice(&bytes),
            _ => return Ok(None),
        }
    }
    Ok(Some(out))
}
