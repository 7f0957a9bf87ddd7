//! The layout for ordinary buckets, which have no append: each batch is a chunk object
//! keyed by its byte offset (`chunks/<offset>`, created with If-None-Match), an empty
//! stream is an `open` marker, and `complete` compacts the chunks into `log`
//! ([`super::compact`]), which alone marks the stream complete, and then deletes them.

use super::compact::compact;
use super::keys::{Paths, Scan};
use super::layout::Layout;
use super::objects::Objects;
use async_trait::async_trait;
use kiln_store::LogError;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Streams whose chunk layout is remembered between calls (a hint that saves listing
/// every chunk on every write; correctness never depends on it).
const LAYOUT_CACHE_STREAMS: usize = 256;

#[derive(Debug, Default)]
pub(super) struct Chunked {
    /// Stream prefix → its chunks (offset, length), contiguous from 0, as last seen.
    seen: Mutex<HashMap<String, Vec<(u64, u64)>>>,
}

impl Chunked {
    fn seen(&self) -> MutexGuard<'_, HashMap<String, Vec<(u64, u64)>>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, p: &Paths) -> Vec<(u64, u64)> {
        self.seen().get(&p.prefix).cloned().unwrap_or_default()
    }

    fn remember(&self, p: &Paths, chunks: &[(u64, u64)]) {
        let mut l = self.seen();
        if l.len() >= LAYOUT_CACHE_STREAMS && !l.contains_key(&p.prefix) {
            l.clear();
        }
        l.insert(p.prefix.clone(), chunks.to_vec());
    }

    fn forget(&self, p: &Paths) {
        self.seen().remove(&p.prefix);
    }
}

#[async_trait]
impl Layout for Chunked {
    /// The chunks (listing only those after the last one remembered) and the `complete`,
    /// `log` and `open` objects, in one listing (they sort after `chunks/`).
    async fn scan(&self, o: &Objects, p: &Paths) -> Result<Scan, LogError> {
        for fresh in [false, true] {
            let mut scan =
                Scan { chunks: if fresh { Vec::new() } else { self.cached(p) }, ..Scan::default() };
            let start_after = match scan.chunks.last() {
                Some((o, _)) => p.chunk(*o),
                None => p.chunks(),
            };
            let mut contiguous = true;
            for (key, size) in o.list(&p.prefix, Some(&start_after)).await? {
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
                    scan.complete = true;
                } else if rest == "open" {
                    scan.open = true;
                }
            }
            if contiguous || scan.complete {
                if !scan.complete {
                    self.remember(p, &scan.chunks);
                }
                return Ok(scan);
            }
            self.forget(p);
        }
        Err(LogError::Backend(format!("{}: chunk objects are not contiguous", p.name)))
    }

    /// The chunks remembered from this process's last scan or write of the stream. A
    /// remembered end can be stale (another process wrote or completed the stream): a
    /// write at it is conditional (If-None-Match), so a stale end only costs a failed PUT
    /// and the scan the writer would have made anyway.
    fn remembered(&self, p: &Paths) -> Option<Scan> {
        let chunks = self.seen().get(&p.prefix)?.clone();
        Some(Scan { chunks, ..Scan::default() })
    }

    /// `log` is written by compaction only, after every chunk was read: it is the
    /// completed stream (a `complete` marker, written beside it before, is still read).
    fn log_is_complete(&self) -> bool {
        true
    }

    fn locate(&self, p: &Paths, offset: u64, a: u64, b: u64) -> (String, (u64, u64)) {
        (p.chunk(offset), (a - offset, b - offset))
    }

    async fn put_open(&self, o: &Objects, p: &Paths) -> Result<(), LogError> {
        o.put(&p.open(), Vec::new(), true).await.map(drop)
    }

    async fn write_at_end(
        &self,
        o: &Objects,
        p: &Paths,
        scan: &Scan,
        end: u64,
        bytes: &[u8],
    ) -> Result<bool, LogError> {
        if !o.put(&p.chunk(end), bytes.to_vec(), true).await? {
            return Ok(false);
        }
        let mut chunks = scan.chunks.clone();
        chunks.push((end, bytes.len() as u64));
        self.remember(p, &chunks);
        Ok(true)
    }

    async fn seal(&self, o: &Objects, p: &Paths, scan: &Scan) -> Result<Option<u64>, LogError> {
        Ok(compact(self, o, p, scan).await?.then(|| scan.end()))
    }

    /// Deletes the chunks that were compacted (known from the scan: no listing) and the
    /// `open` marker. A key already gone is no error, so a repeated `complete` is fine.
    async fn clean_up(&self, o: &Objects, p: &Paths, scan: &Scan) -> Result<(), LogError> {
        self.forget(p);
        let mut keys: Vec<String> = scan.chunks.iter().map(|(offset, _)| p.chunk(*offset)).collect();
        keys.push(p.open());
        o.delete_many(keys).await
    }

    fn listed_len(&self, chunks: u64, log: Option<u64>, complete: bool) -> u64 {
        if complete { log.unwrap_or(0) } else { chunks }
    }
}
