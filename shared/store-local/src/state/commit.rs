//! Applying a commit: the domain's rules (`Build::apply_commit`, `commit::apply_catalog`),
//! then the history, the catalog and the build document written in that order.

use super::files::{Inner, backend};
use crate::lock;
use kiln_domain::BuildId;
use kiln_domain::commit::{CatalogDocs, apply_catalog, images_written};
use kiln_domain::event::StoredEvent;
use kiln_store::{Commit, CommitOutcome, StoreError};
use std::fs;
use std::io::Write;

impl Inner {
    pub(super) fn commit(&self, id: &BuildId, c: &Commit) -> Result<CommitOutcome, StoreError> {
        let slot = self.known_slot(id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let mut slot = lock(&slot);
        let Some(entry) = self.refresh(id, &mut slot)? else {
            return Err(StoreError::NotFound(id.clone()));
        };
        let dedupe = c.dedupes();
        if dedupe && entry.applied.contains(&c.event_id) {
            return Ok(CommitOutcome::Duplicate);
        }
        let refused = |e| StoreError::refused(id, e);
        let mut build = entry.build.clone();
        build.apply_commit(c).map_err(refused)?;
        // The catalog writes' conditions, checked (and the new documents made) before
        // anything is written; the lock is held until the commit is done.
        let _catalog = (!c.images.is_empty()).then(|| lock(&self.catalog));
        let mut read = CatalogDocs::new();
        for name in images_written(&c.images).map_err(refused)? {
            let records = self.read_image(&name)?;
            read.insert(name, records);
        }
        let image_docs = apply_catalog(&c.images, read).map_err(refused)?;
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
}
