//! The image catalog's files: `DATA/images/<image>.json` and `<image>.history.jsonl`.

use super::files::{Inner, backend, write_atomically};
use kiln_domain::catalog::{CatalogWrite, ImageHistoryEntry, ImageRecord};
use kiln_domain::commit::CatalogDocs;
use kiln_domain::ids::is_valid_name;
use kiln_store::StoreError;
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

impl Inner {
    pub(super) fn image_path(&self, name: &str) -> PathBuf {
        self.images.join(format!("{name}.json"))
    }

    pub(super) fn history_path(&self, name: &str) -> PathBuf {
        self.images.join(format!("{name}.history.jsonl"))
    }

    /// An image's records, sorted by provider (none for an unknown or invalid name).
    pub(super) fn read_image(&self, name: &str) -> Result<Vec<ImageRecord>, StoreError> {
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

    pub(super) fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
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
    pub(super) fn image_history(&self, name: &str) -> Result<Vec<ImageHistoryEntry>, StoreError> {
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
    pub(super) fn write_images(&self, writes: &[CatalogWrite], docs: CatalogDocs) -> Result<(), StoreError> {
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
}
