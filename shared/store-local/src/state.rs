//! [`LocalStateStore`]: builds in memory, mirrored to `DATA/builds/`; the image catalog
//! in `DATA/images/`.

use crate::{blocking, is_safe_id, lock};
use async_trait::async_trait;
use kiln_domain::catalog::{ImageHistoryEntry, ImageRecord};
use kiln_domain::event::{StoredEvent, now_ms};
use kiln_domain::ids::is_valid_name;
use kiln_domain::state::{Build, Lease};
use kiln_domain::{BuildId, Repo, StageName};
use kiln_store::{BuildSummary, Claim, Commit, CommitOutcome, StateStore, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The state store of the embedded default: every build is kept in memory once read, and
/// every change is written to the data dir before it is acknowledged, so another process
/// opening the same dir (`kiln status`, `kiln logs`) sees it.
///
/// Builds are loaded lazily. Before each operation the build's file is checked (one
/// `stat`): if another process replaced it, it is read again, so a reader in one process
/// follows a build written by another. Writes are serialized per build within a process;
/// two processes writing the same build at once are not supported. Image records are read
/// from their files every time; catalog writes are serialized within the process (two
/// processes writing the same image at once are not supported either).
#[derive(Clone)]
pub struct LocalStateStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStateStore").field("dir", &self.inner.dir).finish()
    }
}

impl LocalStateStore {
    /// Opens (creating it if needed) the state kept under `data_dir/builds/` and
    /// `data_dir/images/`.
    pub fn open(data_dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = data_dir.as_ref().join("builds");
        let images = data_dir.as_ref().join("images");
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(&images)?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                images,
                slots: Mutex::new(HashMap::new()),
                catalog: Mutex::new(()),
            }),
        })
    }

    /// `data_dir/builds`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        blocking(move || f(&inner), StoreError::Backend).await
    }
}

#[async_trait]
impl StateStore for LocalStateStore {
    async fn create_build(&self, build: &Build) -> Result<(), StoreError> {
        let build = build.clone();
        self.run(move |s| s.create_build(build)).await
    }

    async fn get_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        let id = id.clone();
        self.run(move |s| {
            if !is_safe_id(id.as_str()) {
                return Ok(None);
            }
            s.with(&id, |e| Ok(e.map(|e| e.build.clone())))
        })
        .await
    }

    async fn list_builds(&self, repo: &Repo, limit: usize) -> Result<Vec<BuildSummary>, StoreError> {
        let repo = repo.clone();
        self.run(move |s| s.list_builds(&repo, limit)).await
    }

    async fn commit(&self, build: &BuildId, commit: &Commit) -> Result<CommitOutcome, StoreError> {
        let (id, commit) = (build.clone(), commit.clone());
        self.run(move |s| s.commit(&id, &commit)).await
    }

    async fn events(
        &self,
        build: &BuildId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let id = build.clone();
        self.run(move |s| {
            s.with_existing(&id, |s, e| {
                let events = s.events_of(&id, e, false)?;
                let start = usize::try_from(after_seq).unwrap_or(usize::MAX).min(events.len());
                Ok(events[start..].iter().take(limit).cloned().collect())
            })
        })
        .await
    }

    async fn mark_dispatched(&self, build: &BuildId, stage: &StageName) -> Result<bool, StoreError> {
        let (id, stage) = (build.clone(), stage.clone());
        self.run(move |s| {
            s.update(&id.clone(), |b| {
                let st = b
                    .stages
                    .iter_mut()
                    .find(|s| s.name == stage)
                    .ok_or_else(|| StoreError::NotFound(id.clone()))?;
                if st.dispatched {
                    return Ok((false, false));
                }
                st.dispatched = true;
                Ok((true, true))
            })
        })
        .await
    }

    async fn claim_job(
        &self,
        build: &BuildId,
        stage: &StageName,
        runner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let (id, stage, runner) = (build.clone(), stage.clone(), runner.to_string());
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self.run(move |s| {
            s.update(&id.clone(), |b| {
                let build_done = b.status.is_terminal();
                let st = b
                    .stages
                    .iter_mut()
                    .find(|s| s.name == stage)
                    .ok_or_else(|| StoreError::NotFound(id.clone()))?;
                if build_done || st.status.is_terminal() {
                    return Ok((Claim::Finished, false));
                }
                let now = now_ms();
                let until_ms = now.saturating_add(lease_ms);
                let attempt = match &st.lease {
                    Some(l) if l.until_ms >= now && l.runner != runner => return Ok((Claim::Busy, false)),
                    Some(l) if l.until_ms >= now => l.attempt,
                    Some(l) => l.attempt.max(st.attempt) + 1,
                    None => st.attempt + 1,
                };
                st.lease = Some(Lease { runner: runner.clone(), attempt, until_ms });
                Ok((Claim::Claimed { attempt }, true))
            })
        })
        .await
    }

    async fn get_image(&self, image: &str) -> Result<Vec<ImageRecord>, StoreError> {
        let image = image.to_string();
        self.run(move |s| s.read_image(&image)).await
    }

    async fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.run(|s| s.list_images()).await
    }

    async fn image_history(&self, image: &str) -> Result<Vec<ImageHistoryEntry>, StoreError> {
        let image = image.to_string();
        self.run(move |s| s.image_history(&image)).await
    }
}

struct Inner {
    dir: PathBuf,
    /// `data_dir/images`: per image, `<name>.json` (its records, one per provider,
    /// replaced atomically) and `<name>.history.jsonl` (every version written, appended).
    images: PathBuf,
    slots: Mutex<HashMap<BuildId, Arc<Mutex<Slot>>>>,
    /// Serializes catalog writes within the process (taken after a build's slot lock).
    catalog: Mutex<()>,
}

/// One build's cached state; its mutex serializes the build's operations.
#[derive(Default)]
struct Slot {
    entry: Option<Entry>,
    /// The file the entry was read from or last written as.
    stamp: Option<Stamp>,
}

struct Entry {
    build: Build,
    meta: StoreMeta,
    applied: HashSet<String>,
    /// The history, once read (lazily: listings do not need it).
    events: Option<Vec<StoredEvent>>,
    /// The events file is known to hold exactly `meta.last_seq` whole lines, so appending
    /// to it is safe (a crash between appending events and writing the document can leave
    /// lines of a commit that never happened; they are cut off first).
    events_file_clean: bool,
}

/// Bookkeeping stored in the build document under `_store`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoreMeta {
    /// The seq of the last event of the history (0: none).
    last_seq: u64,
    /// The ids of the events applied by commits, in order.
    #[serde(default)]
    applied_events: Vec<String>,
}

#[derive(Deserialize)]
struct BuildDoc {
    #[serde(flatten)]
    build: Build,
    #[serde(rename = "_store", default)]
    store: StoreMeta,
}

#[derive(Serialize)]
struct BuildDocRef<'a> {
    #[serde(flatten)]
    build: &'a Build,
    #[serde(rename = "_store")]
    store: &'a StoreMeta,
}

/// Identifies one version of a file: each write replaces it by a new file (rename).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(m);
        #[cfg(not(unix))]
        let ino = 0;
        Self { modified: m.modified().ok(), len: m.len(), ino }
    }
}

fn backend(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Inner {
    fn doc_path(&self, id: &BuildId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn events_path(&self, id: &BuildId) -> PathBuf {
        self.dir.join(format!("{id}.events.jsonl"))
    }

    fn slot(&self, id: &BuildId) -> Arc<Mutex<Slot>> {
        lock(&self.slots).entry(id.clone()).or_default().clone()
    }

    /// The build's slot, unless the build is unknown (looking up unknown ids must not
    /// grow the cache).
    fn known_slot(&self, id: &BuildId) -> Option<Arc<Mutex<Slot>>> {
        if !is_safe_id(id.as_str()) || (!lock(&self.slots).contains_key(id) && !self.doc_path(id).exists()) {
            return None;
        }
        Some(self.slot(id))
    }

    /// Brings the slot up to date with the file, and returns its entry (None: no build).
    fn refresh<'a>(&self, id: &BuildId, slot: &'a mut Slot) -> Result<Option<&'a mut Entry>, StoreError> {
        let path = self.doc_path(id);
        match fs::metadata(&path) {
            Ok(m) => {
                let stamp = Stamp::of(&m);
                if slot.entry.is_none() || slot.stamp != Some(stamp) {
                    let bytes = fs::read(&path).map_err(|e| backend("read", &path, e))?;
                    let doc: BuildDoc =
                        serde_json::from_slice(&bytes).map_err(|e| backend("parse", &path, e))?;
                    let applied = doc.store.applied_events.iter().cloned().collect();
                    slot.entry = Some(Entry {
                        build: doc.build,
                        meta: doc.store,
                        applied,
                        events: None,
                        events_file_clean: false,
                    });
                    slot.stamp = Some(stamp);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Never created, or the data dir was removed under us.
                slot.entry = None;
                slot.stamp = None;
            }
            Err(e) => return Err(backend("stat", &path, e)),
        }
        Ok(slot.entry.as_mut())
    }

    /// Runs `f` on the build's current entry (None if there is no such build).
    fn with<T>(
        &self,
        id: &BuildId,
        f: impl FnOnce(Option<&mut Entry>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(slot) = self.known_slot(id) else { return f(None) };
        let mut slot = lock(&slot);
        let entry = self.refresh(id, &mut slot)?;
        f(entry)
    }

    /// Like [`Inner::with`], with `NotFound` for an unknown build.
    fn with_existing<T>(
        &self,
        id: &BuildId,
        f: impl FnOnce(&Self, &mut Entry) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let slot = self.known_slot(id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let mut slot = lock(&slot);
        let Some(entry) = self.refresh(id, &mut slot)? else {
            return Err(StoreError::NotFound(id.clone()));
        };
        f(self, entry)
    }

    /// Changes a build outside commits (dispatch flag, lease): `f` returns its result and
    /// whether it changed anything; changes are written before the result is returned.
    fn update<T>(
        &self,
        id: &BuildId,
        f: impl FnOnce(&mut Build) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let slot = self.known_slot(id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let mut slot = lock(&slot);
        let Some(entry) = self.refresh(id, &mut slot)? else {
            return Err(StoreError::NotFound(id.clone()));
        };
        let mut build = entry.build.clone();
        let (out, changed) = f(&mut build)?;
        if changed {
            let stamp = self.write_doc(&build, &entry.meta)?;
            entry.build = build;
            slot.stamp = Some(stamp);
        }
        Ok(out)
    }

    fn create_build(&self, build: Build) -> Result<(), StoreError> {
        let id = build.id.clone();
        if !is_safe_id(id.as_str()) {
            return Err(StoreError::Backend(format!("invalid build id {id:?}")));
        }
        let slot = self.slot(&id);
        let mut slot = lock(&slot);
        if self.refresh(&id, &mut slot)?.is_some() {
            return Err(StoreError::AlreadyExists(format!("build {id}")));
        }
        // A stale history (a create that crashed before its document was written).
        let events = self.events_path(&id);
        match fs::remove_file(&events) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(backend("remove", &events, e)),
        }
        let meta = StoreMeta::default();
        let stamp = self.write_doc(&build, &meta)?;
        slot.entry = Some(Entry {
            build,
            meta,
            applied: HashSet::new(),
            events: Some(Vec::new()),
            events_file_clean: true,
        });
        slot.stamp = Some(stamp);
        Ok(())
    }

    fn list_builds(&self, repo: &Repo, limit: usize) -> Result<Vec<BuildSummary>, StoreError> {
        let mut ids = BTreeSet::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(backend("list", &self.dir, e)),
        };
        for ent in rd {
            let ent = ent.map_err(|e| backend("list", &self.dir, e))?;
            let name = ent.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            if is_safe_id(id) {
                ids.insert(BuildId::new(id));
            }
        }
        // Ids are UUIDv7: descending id order is newest first.
        let mut out = Vec::new();
        for id in ids.iter().rev() {
            if out.len() >= limit {
                break;
            }
            self.with(id, |e| {
                if let Some(e) = e
                    && e.build.repo == *repo
                {
                    let b = &e.build;
                    out.push(BuildSummary {
                        id: b.id.clone(),
                        repo: b.repo.clone(),
                        status: b.status,
                        created_ms: b.created_ms,
                        finished_ms: b.finished_ms,
                    });
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    fn commit(&self, id: &BuildId, c: &Commit) -> Result<CommitOutcome, StoreError> {
        let slot = self.known_slot(id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let mut slot = lock(&slot);
        let Some(entry) = self.refresh(id, &mut slot)? else {
            return Err(StoreError::NotFound(id.clone()));
        };
        // An empty event id is not recorded: such commits are not deduplicated.
        let dedupe = !c.event_id.is_empty();
        if dedupe && entry.applied.contains(&c.event_id) {
            return Ok(CommitOutcome::Duplicate);
        }
        let mut build = entry.build.clone();
        // New instances first: the same commit may already move them on.
        for s in &c.new_stages {
            if build.stage(s.name.as_str()).is_some() {
                return Err(StoreError::AlreadyExists(format!("stage {} of build {id}", s.name)));
            }
            build.stages.push(s.clone());
        }
        for t in &c.transitions {
            build.apply(t)?;
        }
        if let Some(arrivals) = &c.arrivals {
            build.arrivals.clone_from(arrivals);
        }
        // The catalog writes' conditions, checked (and the new documents made) before
        // anything is written; the lock is held until the commit is done.
        let _catalog = (!c.images.is_empty()).then(|| lock(&self.catalog));
        let mut image_docs: BTreeMap<String, Vec<ImageRecord>> = BTreeMap::new();
        for w in &c.images {
            let name = &w.record.image;
            if !image_docs.contains_key(name) {
                if !is_valid_name(name) {
                    return Err(StoreError::Backend(format!("invalid image name {name:?}")));
                }
                image_docs.insert(name.clone(), self.read_image(name)?);
            }
            let doc = image_docs.get_mut(name).expect("inserted above");
            let at = doc.iter().position(|r| r.provider == w.record.provider);
            w.check(at.map(|i| &doc[i]))?;
            match at {
                Some(i) => doc[i] = w.record.clone(),
                None => doc.push(w.record.clone()),
            }
        }
        let first_seq = entry.meta.last_seq + 1;
        let stored: Vec<StoredEvent> = c
            .events
            .iter()
            .zip(first_seq..)
            .map(|(event, seq)| StoredEvent { seq, event: event.clone() })
            .collect();

        if !stored.is_empty() {
            if !entry.events_file_clean {
                // Reads the history and cuts off lines of commits that never completed.
                self.events_of(id, entry, true)?;
            }
            let mut buf = Vec::new();
            for e in &stored {
                serde_json::to_writer(&mut buf, e).map_err(|e| StoreError::Backend(e.to_string()))?;
                buf.push(b'\n');
            }
            let path = self.events_path(id);
            let appended = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(&buf));
            if let Err(e) = appended {
                entry.events_file_clean = false;
                return Err(backend("append", &path, e));
            }
        }

        // The catalog before the build document: a crash in between leaves the event
        // unapplied, and its redelivery is recomputed against the new records, which
        // the catalog's rules make a no-op.
        if let Err(e) = self.write_images(&c.images, image_docs) {
            entry.events_file_clean = false;
            return Err(e);
        }

        let mut meta = entry.meta.clone();
        meta.last_seq += stored.len() as u64;
        if dedupe {
            meta.applied_events.push(c.event_id.clone());
        }
        let stamp = match self.write_doc(&build, &meta) {
            Ok(s) => s,
            Err(e) => {
                entry.events_file_clean = false;
                return Err(e);
            }
        };
        entry.build = build;
        entry.meta = meta;
        if dedupe {
            entry.applied.insert(c.event_id.clone());
        }
        if let Some(events) = &mut entry.events {
            events.extend(stored);
        }
        slot.stamp = Some(stamp);
        Ok(CommitOutcome::Applied { first_seq })
    }

    /// The build's history (read from the file the first time). With `repair`, lines
    /// past `last_seq` or a torn last line are cut off the file.
    fn events_of<'a>(
        &self,
        id: &BuildId,
        entry: &'a mut Entry,
        repair: bool,
    ) -> Result<&'a [StoredEvent], StoreError> {
        if entry.events.is_none() || (repair && !entry.events_file_clean) {
            let path = self.events_path(id);
            let last = entry.meta.last_seq;
            let mut events = Vec::with_capacity(usize::try_from(last).unwrap_or(0));
            let mut good_len = 0u64;
            let mut total_len = 0u64;
            match fs::File::open(&path) {
                Ok(f) => {
                    total_len = f.metadata().map_err(|e| backend("stat", &path, e))?.len();
                    let mut r = io::BufReader::new(f);
                    let mut line = Vec::new();
                    while (events.len() as u64) < last {
                        line.clear();
                        let n = r.read_until(b'\n', &mut line).map_err(|e| backend("read", &path, e))?;
                        if n == 0 || line.last() != Some(&b'\n') {
                            break;
                        }
                        let Ok(ev) = serde_json::from_slice::<StoredEvent>(&line) else { break };
                        if ev.seq != events.len() as u64 + 1 {
                            break;
                        }
                        good_len += n as u64;
                        events.push(ev);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(backend("open", &path, e)),
            }
            if (events.len() as u64) < last {
                return Err(StoreError::Backend(format!(
                    "{}: history has {} of {last} events",
                    path.display(),
                    events.len()
                )));
            }
            if repair {
                if total_len > good_len {
                    let f = fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| backend("open", &path, e))?;
                    f.set_len(good_len).map_err(|e| backend("truncate", &path, e))?;
                }
                entry.events_file_clean = true;
            }
            entry.events = Some(events);
        }
        Ok(entry.events.as_deref().unwrap_or_default())
    }

    fn image_path(&self, name: &str) -> PathBuf {
        self.images.join(format!("{name}.json"))
    }

    fn history_path(&self, name: &str) -> PathBuf {
        self.images.join(format!("{name}.history.jsonl"))
    }

    /// An image's records, sorted by provider (none for an unknown or invalid name).
    fn read_image(&self, name: &str) -> Result<Vec<ImageRecord>, StoreError> {
        if !is_valid_name(name) {
            return Ok(Vec::new());
        }
        let path = self.image_path(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(backend("read", &path, e)),
        };
        let mut records: Vec<ImageRecord> =
            serde_json::from_slice(&bytes).map_err(|e| backend("parse", &path, e))?;
        records.sort_by(|a, b| a.provider.cmp(&b.provider));
        Ok(records)
    }

    fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let rd = match fs::read_dir(&self.images) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(backend("list", &self.images, e)),
        };
        let mut names = BTreeSet::new();
        for ent in rd {
            let ent = ent.map_err(|e| backend("list", &self.images, e))?;
            let name = ent.file_name();
            if let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".json"))
                && is_valid_name(n)
            {
                names.insert(n.to_string());
            }
        }
        let mut out = Vec::new();
        for n in names {
            out.extend(self.read_image(&n)?);
        }
        Ok(out)
    }

    /// The history, sorted by build, provider and version. A line for a version written
    /// again (a commit retried after a crash between history and document) replaces the
    /// earlier one; a torn last line is skipped.
    fn image_history(&self, name: &str) -> Result<Vec<ImageHistoryEntry>, StoreError> {
        if !is_valid_name(name) {
            return Ok(Vec::new());
        }
        let path = self.history_path(name);
        let text = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(backend("read", &path, e)),
        };
        let mut by_version: HashMap<(String, u64), ImageHistoryEntry> = HashMap::new();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(h) = serde_json::from_slice::<ImageHistoryEntry>(line) {
                by_version.insert((h.provider.clone(), h.version), h);
            }
        }
        let mut out: Vec<ImageHistoryEntry> = by_version.into_values().collect();
        out.sort_by(|a, b| (&a.build, &a.provider, a.version).cmp(&(&b.build, &b.provider, b.version)));
        Ok(out)
    }

    /// Appends the written records to their images' history, then replaces the images'
    /// documents (each atomically).
    fn write_images(
        &self,
        writes: &[kiln_domain::catalog::CatalogWrite],
        docs: BTreeMap<String, Vec<ImageRecord>>,
    ) -> Result<(), StoreError> {
        for (name, doc) in docs {
            let mut lines = Vec::new();
            for w in writes.iter().filter(|w| w.record.image == name) {
                serde_json::to_writer(&mut lines, &w.record)
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
                lines.push(b'\n');
            }
            let history = self.history_path(&name);
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&history)
                .and_then(|mut f| f.write_all(&lines))
                .map_err(|e| backend("append", &history, e))?;
            let bytes = serde_json::to_vec_pretty(&doc)
                .map_err(|e| StoreError::Backend(format!("serialize image: {e}")))?;
            write_atomically(&self.images, &self.image_path(&name), &bytes)?;
        }
        Ok(())
    }

    /// Writes the build document atomically: a temp file in the same dir, then rename.
    fn write_doc(&self, build: &Build, meta: &StoreMeta) -> Result<Stamp, StoreError> {
        let bytes = serde_json::to_vec_pretty(&BuildDocRef { build, store: meta })
            .map_err(|e| StoreError::Backend(format!("serialize build {}: {e}", build.id)))?;
        write_atomically(&self.dir, &self.doc_path(&build.id), &bytes)
    }
}

/// Replaces `path` (in `dir`) by `bytes` atomically: a temp file in the same dir, then
/// rename.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<Stamp, StoreError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        fs::create_dir_all(dir)?;
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, path)?;
        fs::metadata(path)
    })();
    match written {
        Ok(m) => Ok(Stamp::of(&m)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(backend("write", path, e))
        }
    }
}
