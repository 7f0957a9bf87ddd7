//! The build documents and their histories on disk, and the per-build cache in front of
//! them.

use super::super::{is_safe_id, lock};
use kiln_domain::BuildId;
use kiln_domain::Repo;
use kiln_domain::event::StoredEvent;
use kiln_domain::state::Build;
use kiln_store::{BuildSummary, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub(super) struct Inner {
    pub(super) dir: PathBuf,
    /// `data_dir/images`: per image, `<name>.json` (its records, one per provider,
    /// replaced atomically) and `<name>.history.jsonl` (every version written, appended).
    pub(super) images: PathBuf,
    pub(super) slots: Mutex<HashMap<BuildId, Arc<Mutex<Slot>>>>,
    /// Serializes catalog writes within the process (taken after a build's slot lock).
    pub(super) catalog: Mutex<()>,
}

/// One build's cached state; its mutex serializes the build's operations.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) entry: Option<Entry>,
    /// The file the entry was read from or last written as.
    pub(super) stamp: Option<Stamp>,
}

pub(super) struct Entry {
    pub(super) build: Build,
    pub(super) meta: StoreMeta,
    pub(super) applied: HashSet<String>,
    /// The history, once read (lazily: listings do not need it).
    pub(super) events: Option<Vec<StoredEvent>>,
    /// The events file is known to hold exactly `meta.last_seq` whole lines, so appending
    /// to it is safe (a crash between appending events and writing the document can leave
    /// lines of a commit that never happened; they are cut off first).
    pub(super) events_file_clean: bool,
}

/// Bookkeeping stored in the build document under `_store`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct StoreMeta {
    /// The seq of the last event of the history (0: none).
    pub(super) last_seq: u64,
    /// The ids of the events applied by commits, in order.
    #[serde(default)]
    pub(super) applied_events: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct BuildDoc {
    #[serde(flatten)]
    pub(super) build: Build,
    #[serde(rename = "_store", default)]
    pub(super) store: StoreMeta,
}

#[derive(Serialize)]
pub(super) struct BuildDocRef<'a> {
    #[serde(flatten)]
    pub(super) build: &'a Build,
    #[serde(rename = "_store")]
    pub(super) store: &'a StoreMeta,
}

/// Identifies one version of a file: each write replaces it by a new file (rename).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) modified: Option<SystemTime>,
    pub(super) len: u64,
    pub(super) ino: u64,
}

impl Stamp {
    pub(super) fn of(m: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(m);
        #[cfg(not(unix))]
        let ino = 0;
        Self { modified: m.modified().ok(), len: m.len(), ino }
    }
}

pub(super) fn backend(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Inner {
    /// Opens (creating them if needed) `data_dir/builds` and `data_dir/images`.
    pub(super) fn open(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join("builds");
        let images = data_dir.join("images");
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(&images)?;
        Ok(Self { dir, images, slots: Mutex::new(HashMap::new()), catalog: Mutex::new(()) })
    }

    pub(super) fn doc_path(&self, id: &BuildId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub(super) fn events_path(&self, id: &BuildId) -> PathBuf {
        self.dir.join(format!("{id}.events.jsonl"))
    }

    pub(super) fn slot(&self, id: &BuildId) -> Arc<Mutex<Slot>> {
        lock(&self.slots).entry(id.clone()).or_default().clone()
    }

    /// The build's slot, unless the build is unknown (looking up unknown ids must not
    /// grow the cache).
    pub(super) fn known_slot(&self, id: &BuildId) -> Option<Arc<Mutex<Slot>>> {
        if !is_safe_id(id.as_str()) || (!lock(&self.slots).contains_key(id) && !self.doc_path(id).exists()) {
            return None;
        }
        Some(self.slot(id))
    }

    /// Brings the slot up to date with the file, and returns its entry (None: no build).
    pub(super) fn refresh<'a>(
        &self,
        id: &BuildId,
        slot: &'a mut Slot,
    ) -> Result<Option<&'a mut Entry>, StoreError> {
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
    pub(super) fn with<T>(
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
    pub(super) fn with_existing<T>(
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
    pub(super) fn update<T>(
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

    pub(super) fn create_build(&self, build: Build) -> Result<(), StoreError> {
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

    pub(super) fn list_builds(&self, repo: &Repo, limit: usize) -> Result<Vec<BuildSummary>, StoreError> {
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

    /// The build's history (read from the file the first time). With `repair`, lines
    /// past `last_seq` or a torn last line are cut off the file.
    pub(super) fn events_of<'a>(
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

    /// Writes the build document atomically: a temp file in the same dir, then rename.
    pub(super) fn write_doc(&self, build: &Build, meta: &StoreMeta) -> Result<Stamp, StoreError> {
        let bytes = serde_json::to_vec_pretty(&BuildDocRef { build, store: meta })
            .map_err(|e| StoreError::Backend(format!("serialize build {}: {e}", build.id)))?;
        write_atomically(&self.dir, &self.doc_path(&build.id), &bytes)
    }
}

/// Replaces `path` (in `dir`) by `bytes` atomically: a temp file in the same dir, then
/// rename.
pub(super) fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<Stamp, StoreError> {
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
