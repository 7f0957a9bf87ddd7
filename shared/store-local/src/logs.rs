//! [`LocalLogStore`]: one file per log stream under `DATA/logs/<build-id>/`.

use crate::{blocking, is_safe_id, lock};
use async_trait::async_trait;
use kiln_domain::BuildId;
use kiln_domain::logs::LogStream;
use kiln_store::{LogError, LogInfo, LogRead, LogStore};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Log streams as plain files: `<key>.log` holds the bytes, `<key>.complete` marks the
/// end, `<key>.batches` remembers the batch ids of [`LogStore::append`].
///
/// Writes to one stream are serialized (a lock per stream); reads take no lock. Neither
/// reads a whole file: writes compare only the overlapping bytes, reads seek and read at
/// most [`LocalLogStore::MAX_READ`] bytes.
#[derive(Clone)]
pub struct LocalLogStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLogStore").field("dir", &self.inner.root).finish()
    }
}

impl LocalLogStore {
    /// The most bytes one [`LogStore::read`] returns, whatever `max` asks for.
    pub const MAX_READ: usize = 8 * 1024 * 1024;

    /// Opens (creating it if needed) the logs kept under `data_dir/logs/`.
    pub fn open(data_dir: impl AsRef<Path>) -> io::Result<Self> {
        let root = data_dir.as_ref().join("logs");
        fs::create_dir_all(&root)?;
        Ok(Self { inner: Arc::new(Inner { root, streams: Mutex::new(HashMap::new()) }) })
    }

    /// Removes every log of `build` (its retention has passed).
    pub fn remove_build(&self, build: &BuildId) -> io::Result<()> {
        if !is_safe_id(build.as_str()) {
            return Ok(());
        }
        match std::fs::remove_dir_all(self.inner.root.join(build.as_str())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// `data_dir/logs`.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// The file holding a stream's bytes (it may not exist yet).
    pub fn stream_path(&self, build: &BuildId, stream: &LogStream) -> Result<PathBuf, LogError> {
        Ok(self.inner.paths(build, stream)?.log)
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let inner = self.inner.clone();
        blocking(move || f(&inner), LogError::Backend).await
    }
}

#[async_trait]
impl LogStore for LocalLogStore {
    async fn put_chunk(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), LogError> {
        let (build, stream, bytes) = (build.clone(), stream.clone(), bytes.to_vec());
        self.run(move |s| s.put_chunk(&build, &stream, offset, &bytes)).await
    }

    async fn append(
        &self,
        build: &BuildId,
        stream: &LogStream,
        batch_id: &str,
        bytes: &[u8],
    ) -> Result<u64, LogError> {
        let (build, stream, batch_id, bytes) =
            (build.clone(), stream.clone(), batch_id.to_string(), bytes.to_vec());
        self.run(move |s| s.append(&build, &stream, &batch_id, &bytes)).await
    }

    async fn read(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        max: usize,
    ) -> Result<LogRead, LogError> {
        let (build, stream) = (build.clone(), stream.clone());
        self.run(move |s| s.read(&build, &stream, offset, max)).await
    }

    async fn complete(&self, build: &BuildId, stream: &LogStream) -> Result<(), LogError> {
        let (build, stream) = (build.clone(), stream.clone());
        self.run(move |s| s.complete(&build, &stream)).await
    }

    async fn list(&self, build: &BuildId) -> Result<Vec<LogInfo>, LogError> {
        let build = build.clone();
        self.run(move |s| s.list(&build)).await
    }
}

struct Inner {
    root: PathBuf,
    /// Per-stream write locks and batch-id caches, by (build, key).
    streams: Mutex<HashMap<(BuildId, String), StreamLock>>,
}

type StreamLock = Arc<Mutex<StreamState>>;

#[derive(Default)]
struct StreamState {
    /// batch id → offset, as read from the batches file when it had `batches_len` bytes.
    batches: HashMap<String, u64>,
    batches_len: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct BatchLine {
    id: String,
    offset: u64,
    len: u64,
}

struct Paths {
    /// `build/key`, for messages.
    name: String,
    dir: PathBuf,
    log: PathBuf,
    done: PathBuf,
    batches: PathBuf,
}

fn backend(what: &str, path: &Path, e: impl std::fmt::Display) -> LogError {
    LogError::Backend(format!("{what} {}: {e}", path.display()))
}

fn len_of(path: &Path) -> Result<Option<u64>, LogError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(backend("stat", path, e)),
    }
}

/// Whether the file holds exactly `expected` at `offset` (the caller checked the length).
fn same_bytes(path: &Path, offset: u64, expected: &[u8]) -> Result<bool, LogError> {
    if expected.is_empty() {
        return Ok(true);
    }
    let mut f = fs::File::open(path).map_err(|e| backend("open", path, e))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| backend("seek", path, e))?;
    let mut buf = vec![0u8; expected.len().min(64 * 1024)];
    let mut rest = expected;
    while !rest.is_empty() {
        let n = rest.len().min(buf.len());
        match f.read_exact(&mut buf[..n]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(backend("read", path, e)),
        }
        if buf[..n] != rest[..n] {
            return Ok(false);
        }
        rest = &rest[n..];
    }
    Ok(true)
}

fn append_to(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        // On disk before the offset is acknowledged: a crash loses no acknowledged byte.
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_data()))
        .map_err(|e| backend("append", path, e))
}

impl Inner {
    fn paths(&self, build: &BuildId, stream: &LogStream) -> Result<Paths, LogError> {
        let key = stream.key();
        let name = format!("{build}/{key}");
        let segments: Vec<&str> = key.split('/').collect();
        let bad = |s: &&str| s.is_empty() || *s == "." || *s == ".." || s.contains(['\\', '\0']);
        if !is_safe_id(build.as_str()) || segments.iter().any(bad) {
            return Err(LogError::NotFound(name));
        }
        let (last, parents) = segments.split_last().expect("split yields one segment at least");
        let mut dir = self.root.join(build.as_str());
        dir.extend(parents);
        Ok(Paths {
            name,
            log: dir.join(format!("{last}.log")),
            done: dir.join(format!("{last}.complete")),
            batches: dir.join(format!("{last}.batches")),
            dir,
        })
    }

    fn stream_state(&self, build: &BuildId, stream: &LogStream) -> StreamLock {
        lock(&self.streams).entry((build.clone(), stream.key())).or_default().clone()
    }

    fn put_chunk(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), LogError> {
        let p = self.paths(build, stream)?;
        let state = self.stream_state(build, stream);
        let _guard = lock(&state);
        let done = p.done.exists();
        let existing = len_of(&p.log)?;
        let len = existing.unwrap_or(0);
        let n = bytes.len() as u64;
        if done {
            // A retry of a batch that was stored before the stream ended is fine.
            if offset.checked_add(n).is_some_and(|end| end <= len) && same_bytes(&p.log, offset, bytes)? {
                return Ok(());
            }
            return Err(LogError::Complete { stream: p.name });
        }
        if offset > len {
            return Err(LogError::Gap { stream: p.name, offset, len });
        }
        let overlap = usize::try_from((len - offset).min(n)).expect("bounded by bytes.len()");
        if !same_bytes(&p.log, offset, &bytes[..overlap])? {
            return Err(LogError::Conflict { stream: p.name, offset });
        }
        let rest = &bytes[overlap..];
        if !rest.is_empty() || existing.is_none() {
            fs::create_dir_all(&p.dir).map_err(|e| backend("create", &p.dir, e))?;
            append_to(&p.log, rest)?;
        }
        Ok(())
    }

    fn append(
        &self,
        build: &BuildId,
        stream: &LogStream,
        batch_id: &str,
        bytes: &[u8],
    ) -> Result<u64, LogError> {
        let p = self.paths(build, stream)?;
        let state = self.stream_state(build, stream);
        let mut st = lock(&state);
        load_batches(&p.batches, &mut st)?;
        if let Some(&offset) = st.batches.get(batch_id) {
            return Ok(offset);
        }
        if p.done.exists() {
            return Err(LogError::Complete { stream: p.name });
        }
        fs::create_dir_all(&p.dir).map_err(|e| backend("create", &p.dir, e))?;
        let offset = len_of(&p.log)?.unwrap_or(0);
        // Bytes first, then the batch id: a crash in between may store a batch twice on
        // retry (at-least-once), but never records a batch whose bytes are missing.
        append_to(&p.log, bytes)?;
        let mut line =
            serde_json::to_vec(&BatchLine { id: batch_id.to_string(), offset, len: bytes.len() as u64 })
                .map_err(|e| LogError::Backend(e.to_string()))?;
        line.push(b'\n');
        append_to(&p.batches, &line)?;
        st.batches.insert(batch_id.to_string(), offset);
        st.batches_len = st.batches_len.map(|l| l + line.len() as u64).or(Some(line.len() as u64));
        Ok(offset)
    }

    fn read(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        max: usize,
    ) -> Result<LogRead, LogError> {
        let p = self.paths(build, stream)?;
        // The marker first: once it is seen, the length read after it is final.
        let done = p.done.exists();
        let mut f = match fs::File::open(&p.log) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(LogError::NotFound(p.name)),
            Err(e) => return Err(backend("open", &p.log, e)),
        };
        let len = f.metadata().map_err(|e| backend("stat", &p.log, e))?.len();
        if offset >= len {
            return Ok(LogRead { bytes: Vec::new(), next_offset: len, complete: done });
        }
        let n = (len - offset).min(max.min(LocalLogStore::MAX_READ) as u64) as usize;
        let mut bytes = vec![0u8; n];
        f.seek(SeekFrom::Start(offset)).map_err(|e| backend("seek", &p.log, e))?;
        f.read_exact(&mut bytes).map_err(|e| backend("read", &p.log, e))?;
        let next_offset = offset + n as u64;
        Ok(LogRead { bytes, next_offset, complete: done && next_offset == len })
    }

    fn complete(&self, build: &BuildId, stream: &LogStream) -> Result<(), LogError> {
        let p = self.paths(build, stream)?;
        let state = self.stream_state(build, stream);
        {
            let _guard = lock(&state);
            if !p.done.exists() {
                fs::create_dir_all(&p.dir).map_err(|e| backend("create", &p.dir, e))?;
                append_to(&p.log, &[])?;
                let len = len_of(&p.log)?.unwrap_or(0);
                fs::File::create(&p.done)
                    .and_then(|mut f| f.write_all(format!("{len}\n").as_bytes()).and_then(|()| f.sync_data()))
                    .map_err(|e| backend("write", &p.done, e))?;
            }
        }
        // No write changes a complete stream, so its lock need not outlive it: writers that
        // hold the old lock and writers that make a new one all see the marker.
        lock(&self.streams).remove(&(build.clone(), stream.key()));
        Ok(())
    }

    fn list(&self, build: &BuildId) -> Result<Vec<LogInfo>, LogError> {
        if !is_safe_id(build.as_str()) {
            return Ok(Vec::new());
        }
        let root = self.root.join(build.as_str());
        let mut found = Vec::new();
        let mut dirs = vec![(root, String::new())];
        while let Some((dir, prefix)) = dirs.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(backend("list", &dir, e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| backend("list", &dir, e))?;
                let Some(name) = ent.file_name().to_str().map(str::to_string) else { continue };
                let ty = ent.file_type().map_err(|e| backend("stat", &ent.path(), e))?;
                if ty.is_dir() {
                    dirs.push((ent.path(), format!("{prefix}{name}/")));
                } else if let Some(stem) = name.strip_suffix(".log") {
                    let Some(stream) = LogStream::from_key(&format!("{prefix}{stem}")) else { continue };
                    let len = ent.metadata().map_err(|e| backend("stat", &ent.path(), e))?.len();
                    let complete = dir.join(format!("{stem}.complete")).exists();
                    found.push(LogInfo { stream, len, complete });
                }
            }
        }
        found.sort_by_cached_key(|i| (i.stream.sort_key(), i.stream.key()));
        Ok(found)
    }
}

/// Brings the cached batch ids up to date with the batches file. A torn last line (a
/// crash mid-write) is cut off: its batch may then be stored again (at-least-once).
fn load_batches(path: &Path, st: &mut StreamState) -> Result<(), LogError> {
    let len = len_of(path)?;
    if len == st.batches_len {
        return Ok(());
    }
    st.batches.clear();
    st.batches_len = len;
    let Some(total) = len else { return Ok(()) };
    let f = fs::File::open(path).map_err(|e| backend("open", path, e))?;
    let mut r = io::BufReader::new(f);
    let mut line = Vec::new();
    let mut good = 0u64;
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line).map_err(|e| backend("read", path, e))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        good += n as u64;
        if let Ok(b) = serde_json::from_slice::<BatchLine>(&line) {
            st.batches.insert(b.id, b.offset);
        }
    }
    if good < total {
        let f = fs::OpenOptions::new().write(true).open(path).map_err(|e| backend("open", path, e))?;
        f.set_len(good).map_err(|e| backend("truncate", path, e))?;
        st.batches_len = Some(good);
    }
    Ok(())
}
