//! [`SqliteStateStore`]: builds, their histories and the image catalog in `DATA/kiln.db`.
//! Every change is one IMMEDIATE transaction that reads, applies the domain's rule
//! (`Build::apply_commit`, `commit::apply_catalog`, `StageState::decide_claim`) and writes.

use super::SqliteDb;
use crate::is_safe_id;
use async_trait::async_trait;
use kiln_domain::catalog::{ImageHistoryEntry, ImageRecord};
use kiln_domain::commit::{CatalogDocs, ClaimDecision, apply_catalog, images_written};
use kiln_domain::event::{StoredEvent, now_ms};
use kiln_domain::retention::expiry_ms;
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Repo, StageName};
use kiln_store::{BuildSummary, Claim, Commit, CommitOutcome, StateStore, StoreError};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::sync::Arc;
use std::time::Duration;

/// The state store of the embedded default. Safe for several processes on one data dir:
/// each change is a transaction, and leases are wall-clock times in the database.
#[derive(Clone, Debug)]
pub struct SqliteStateStore {
    db: Arc<SqliteDb>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite: {e}"))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(format!("serialize: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Backend(format!("stored {what} unreadable: {e}")))
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn begin(c: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)
}

fn load(c: &Connection, id: &BuildId) -> Result<Option<(Build, u64)>, StoreError> {
    let row: Option<(String, i64)> = c
        .query_row("SELECT doc, last_seq FROM builds WHERE id = ?1", [id.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(db)?;
    row.map(|(doc, seq)| Ok((parse("build", &doc)?, u64::try_from(seq).unwrap_or(0)))).transpose()
}

fn read_image(c: &Connection, image: &str) -> Result<Vec<ImageRecord>, StoreError> {
    let mut st =
        c.prepare_cached("SELECT record FROM images WHERE image = ?1 ORDER BY provider").map_err(db)?;
    let rows = st.query_map([image], |r| r.get::<_, String>(0)).map_err(db)?;
    rows.map(|r| parse("image record", &r.map_err(db)?)).collect()
}

/// Read-modify-write of a build outside commits (dispatch flag, lease): `f` returns its
/// result and whether it changed the build.
fn update<T>(
    c: &mut Connection,
    id: &BuildId,
    f: impl FnOnce(&mut Build) -> Result<(T, bool), StoreError>,
) -> Result<T, StoreError> {
    let tx = begin(c)?;
    let (mut build, _) = load(&tx, id)?.ok_or_else(|| StoreError::NotFound(id.clone()))?;
    let (out, changed) = f(&mut build)?;
    if changed {
        tx.execute("UPDATE builds SET doc = ?2 WHERE id = ?1", params![id.as_str(), json(&build)?])
            .map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(out)
}

fn commit(c: &mut Connection, id: &BuildId, commit: &Commit) -> Result<CommitOutcome, StoreError> {
    let tx = begin(c)?;
    let (mut build, last_seq) = load(&tx, id)?.ok_or_else(|| StoreError::NotFound(id.clone()))?;
    let dedupe = commit.dedupes();
    if dedupe {
        let seen: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM applied WHERE build = ?1 AND event_id = ?2",
                params![id.as_str(), commit.event_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        if seen.is_some() {
            return Ok(CommitOutcome::Duplicate);
        }
    }
    let refused = |e| StoreError::refused(id, e);
    build.apply_commit(commit).map_err(refused)?;
    let mut read = CatalogDocs::new();
    for name in images_written(&commit.images).map_err(refused)? {
        let records = read_image(&tx, &name)?;
        read.insert(name, records);
    }
    let docs = apply_catalog(&commit.images, read).map_err(refused)?;

    let first_seq = last_seq + 1;
    {
        let mut ins =
            tx.prepare_cached("INSERT INTO events (build, seq, event) VALUES (?1, ?2, ?3)").map_err(db)?;
        for (event, seq) in commit.events.iter().zip(first_seq..) {
            let stored = StoredEvent { seq, event: event.clone() };
            ins.execute(params![id.as_str(), i64_of(seq), json(&stored)?]).map_err(db)?;
        }
        let mut hist = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO image_history (image, build, provider, version, record) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db)?;
        for w in &commit.images {
            let r = &w.record;
            hist.execute(params![r.image, r.build.as_str(), r.provider, i64_of(r.version), json(r)?])
                .map_err(db)?;
        }
        let mut put = tx
            .prepare_cached("INSERT OR REPLACE INTO images (image, provider, record) VALUES (?1, ?2, ?3)")
            .map_err(db)?;
        for (name, records) in &docs {
            tx.execute("DELETE FROM images WHERE image = ?1", [name]).map_err(db)?;
            for r in records {
                put.execute(params![name, r.provider, json(r)?]).map_err(db)?;
            }
        }
    }
    let last = last_seq + commit.events.len() as u64;
    tx.execute(
        "UPDATE builds SET doc = ?2, last_seq = ?3 WHERE id = ?1",
        params![id.as_str(), json(&build)?, i64_of(last)],
    )
    .map_err(db)?;
    if dedupe {
        tx.execute(
            "INSERT INTO applied (build, event_id) VALUES (?1, ?2)",
            params![id.as_str(), commit.event_id],
        )
        .map_err(db)?;
    }
    tx.commit().map_err(db)?;
    Ok(CommitOutcome::Applied { first_seq })
}

impl SqliteStateStore {
    pub fn new(db: Arc<SqliteDb>) -> Self {
        Self { db }
    }

    /// Opens `data_dir/kiln.db` (see [`SqliteDb::open`]).
    pub fn open(data_dir: impl AsRef<std::path::Path>) -> Result<Self, super::OpenError> {
        Ok(Self::new(SqliteDb::open(data_dir)?))
    }

    pub fn db(&self) -> &Arc<SqliteDb> {
        &self.db
    }

    /// Removes the builds whose retention has passed at `now_ms` (`kiln_domain::retention`):
    /// each with its history and applied event ids, in one transaction; and claims older
    /// than the retention. Returns the builds removed (their logs are the caller's).
    pub async fn prune(&self, retention_days: u64, now_ms: u64) -> Result<Vec<BuildId>, StoreError> {
        self.db
            .write(
                move |c| {
                    let tx = begin(c)?;
                    let expired = {
                        let mut st = tx
                            .prepare(
                                "SELECT id, json_extract(doc, '$.created_ms'), json_extract(doc, '$.plan.timeout_ms') \
                                 FROM builds",
                            )
                            .map_err(db)?;
                        let rows = st
                            .query_map([], |r| {
                                Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?, r.get::<_, Option<i64>>(2)?))
                            })
                            .map_err(db)?;
                        let mut out = Vec::new();
                        for row in rows {
                            let (id, created, timeout) = row.map_err(db)?;
                            let (created, timeout) = (created.unwrap_or(0) as u64, timeout.unwrap_or(0) as u64);
                            if expiry_ms(created, timeout, retention_days) <= now_ms {
                                out.push(id);
                            }
                        }
                        out
                    };
                    for id in &expired {
                        for sql in [
                            "DELETE FROM events WHERE build = ?1",
                            "DELETE FROM applied WHERE build = ?1",
                            "DELETE FROM builds WHERE id = ?1",
                        ] {
                            tx.execute(sql, params![id]).map_err(db)?;
                        }
                    }
                    let claims_before = now_ms.saturating_sub(retention_days.max(1).saturating_mul(24 * 3600 * 1000));
                    tx.execute("DELETE FROM claims WHERE created_ms < ?1", params![claims_before as i64])
                        .map_err(db)?;
                    tx.commit().map_err(db)?;
                    Ok(expired.into_iter().map(BuildId::new).collect())
                },
                StoreError::Backend,
            )
            .await
    }

    /// Builds that have not ended, oldest first (for a report after a restart).
    pub async fn unfinished_builds(&self) -> Result<Vec<BuildId>, StoreError> {
        self.db
            .read(
                |c| {
                    let mut st = c.prepare("SELECT doc FROM builds ORDER BY id").map_err(db)?;
                    let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
                    let mut out = Vec::new();
                    for r in rows {
                        let b: Build = parse("build", &r.map_err(db)?)?;
                        if !b.is_settled() {
                            out.push(b.id);
                        }
                    }
                    Ok(out)
                },
                StoreError::Backend,
            )
            .await
    }
}

#[async_trait]
impl StateStore for SqliteStateStore {
    async fn create_build(&self, build: &Build) -> Result<(), StoreError> {
        let build = build.clone();
        if !is_safe_id(build.id.as_str()) {
            return Err(StoreError::Backend(format!("invalid build id {:?}", build.id)));
        }
        self.db
            .write(
                move |c| {
                    let doc = json(&build)?;
                    let tx = begin(c)?;
                    let n = tx
                        .execute(
                            "INSERT OR IGNORE INTO builds (id, repo, doc, last_seq) VALUES (?1, ?2, ?3, 0)",
                            params![build.id.as_str(), build.repo.to_string(), doc],
                        )
                        .map_err(db)?;
                    if n == 0 {
                        return Err(StoreError::AlreadyExists(format!("build {}", build.id)));
                    }
                    tx.commit().map_err(db)
                },
                StoreError::Backend,
            )
            .await
    }

    async fn get_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        let id = id.clone();
        self.db.read(move |c| Ok(load(c, &id)?.map(|(b, _)| b)), StoreError::Backend).await
    }

    async fn list_builds(&self, repo: &Repo, limit: usize) -> Result<Vec<BuildSummary>, StoreError> {
        let repo = repo.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .read(
                move |c| {
                    // Ids are UUIDv7: descending id order is newest first.
                    let mut st = c
                        .prepare_cached("SELECT doc FROM builds WHERE repo = ?1 ORDER BY id DESC LIMIT ?2")
                        .map_err(db)?;
                    let rows = st.query_map(params![repo, limit], |r| r.get::<_, String>(0)).map_err(db)?;
                    rows.map(|r| {
                        let b: Build = parse("build", &r.map_err(db)?)?;
                        Ok(BuildSummary {
                            id: b.id,
                            repo: b.repo,
                            status: b.status,
                            created_ms: b.created_ms,
                            finished_ms: b.finished_ms,
                        })
                    })
                    .collect()
                },
                StoreError::Backend,
            )
            .await
    }

    async fn commit(&self, build: &BuildId, c: &Commit) -> Result<CommitOutcome, StoreError> {
        let (id, c) = (build.clone(), c.clone());
        self.db.write(move |conn| commit(conn, &id, &c), StoreError::Backend).await
    }

    async fn events(
        &self,
        build: &BuildId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let id = build.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .read(
                move |c| {
                    // One read transaction: the build and its history as of one moment.
                    c.execute_batch("BEGIN").map_err(db)?;
                    let out = (|| {
                        let known: Option<i64> = c
                            .query_row("SELECT 1 FROM builds WHERE id = ?1", [id.as_str()], |r| r.get(0))
                            .optional()
                            .map_err(db)?;
                        if known.is_none() {
                            return Err(StoreError::NotFound(id.clone()));
                        }
                        let mut st = c
                            .prepare_cached(
                                "SELECT event FROM events WHERE build = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                            )
                            .map_err(db)?;
                        let rows = st
                            .query_map(params![id.as_str(), i64_of(after_seq), limit], |r| r.get::<_, String>(0))
                            .map_err(db)?;
                        rows.map(|r| parse("event", &r.map_err(db)?)).collect()
                    })();
                    let _ = c.execute_batch("COMMIT");
                    out
                },
                StoreError::Backend,
            )
            .await
    }

    async fn mark_dispatched(&self, build: &BuildId, stage: &StageName) -> Result<bool, StoreError> {
        let (id, stage) = (build.clone(), stage.clone());
        self.db
            .write(
                move |c| {
                    update(c, &id.clone(), |b| {
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
                },
                StoreError::Backend,
            )
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
        self.db
            .write(
                move |c| {
                    update(c, &id.clone(), |b| {
                        let build_status = b.status;
                        let st = b
                            .stages
                            .iter_mut()
                            .find(|s| s.name == stage)
                            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
                        // The wall clock, read inside the transaction: every process
                        // judges a lease by the same clock.
                        let decision = st.decide_claim(build_status, &runner, now_ms(), lease_ms);
                        let claim = Claim::from(&decision);
                        match decision {
                            ClaimDecision::Renew(l) | ClaimDecision::Take(l) => {
                                st.lease = Some(l);
                                Ok((claim, true))
                            }
                            ClaimDecision::Busy | ClaimDecision::Finished => Ok((claim, false)),
                        }
                    })
                },
                StoreError::Backend,
            )
            .await
    }

    async fn get_image(&self, image: &str) -> Result<Vec<ImageRecord>, StoreError> {
        let image = image.to_string();
        self.db.read(move |c| read_image(c, &image), StoreError::Backend).await
    }

    async fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.db
            .read(
                |c| {
                    let mut st =
                        c.prepare_cached("SELECT record FROM images ORDER BY image, provider").map_err(db)?;
                    let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
                    rows.map(|r| parse("image record", &r.map_err(db)?)).collect()
                },
                StoreError::Backend,
            )
            .await
    }

    async fn image_history(&self, image: &str) -> Result<Vec<ImageHistoryEntry>, StoreError> {
        let image = image.to_string();
        self.db
            .read(
                move |c| {
                    let mut st = c
                        .prepare_cached(
                            "SELECT record FROM image_history WHERE image = ?1 ORDER BY build, provider, version",
                        )
                        .map_err(db)?;
                    let rows = st.query_map([image], |r| r.get::<_, String>(0)).map_err(db)?;
                    rows.map(|r| parse("image record", &r.map_err(db)?)).collect()
                },
                StoreError::Backend,
            )
            .await
    }
}
