//! [`SqliteStateStore`]: builds, their histories and the image catalog in `DATA/kiln.db`.
//! Every change is one IMMEDIATE transaction that reads, applies the domain's rule
//! (`Build::apply_commit`, `commit::apply_catalog`, `StageState::decide_claim`) and writes.

use super::SqliteDb;
use crate::is_safe_id;
use async_trait::async_trait;
use kiln_domain::catalog::{ImageHistoryEntry, ImageRecord};
use kiln_domain::commit::{Applied, CatalogDocs, ClaimDecision, apply_catalog, images_written};
use kiln_domain::event::{StoredEvent, now_ms};
use kiln_domain::plan::Plan;
use kiln_domain::retention::expiry_ms;
use kiln_domain::state::{Build, StageState};
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
    /// Plans read by this process: a build's plan never changes, so dispatch reads it once
    /// per build, not once per stage.
    plans: Arc<std::sync::Mutex<std::collections::HashMap<BuildId, Arc<Plan>>>>,
}

/// Plans kept in memory, at most (emptied when full).
const PLAN_CACHE_BUILDS: usize = 64;

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

/// The current schema version (see the module docs of `super`).
const SCHEMA_VERSION: i64 = 3;

/// Brings a database of an earlier schema to this one, inside the opening transaction:
/// version 2 kept each build whole in `builds.doc`; each is split into its header, its
/// plan and its stage rows.
pub(super) fn migrate(tx: &Transaction) -> Result<(), StoreError> {
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db)?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    // Version 2 kept each build whole in `doc`: its stages and plan are moved out.
    let whole: Vec<(String, String)> = {
        let mut st =
            tx.prepare("SELECT id, doc FROM builds WHERE id NOT IN (SELECT build FROM plans)").map_err(db)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    for (id, doc) in whole {
        let build: Build = parse("build", &doc)?;
        tx.execute("UPDATE builds SET doc = ?2 WHERE id = ?1", params![id, json(&build.header())?])
            .map_err(db)?;
        tx.execute("INSERT INTO plans (build, doc) VALUES (?1, ?2)", params![id, json(&*build.plan)?])
            .map_err(db)?;
        for (idx, st) in build.stages.iter().enumerate() {
            put_stage(tx, &build.id, Some(idx), st)?;
        }
    }
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")).map_err(db)
}

/// The build's header (its plan empty, no stages) and its last seq.
fn load_header(c: &Connection, id: &BuildId) -> Result<Option<(Build, u64)>, StoreError> {
    let row: Option<(String, i64)> = c
        .prepare_cached("SELECT doc, last_seq FROM builds WHERE id = ?1")
        .map_err(db)?
        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?;
    row.map(|(doc, seq)| Ok((parse("build", &doc)?, u64::try_from(seq).unwrap_or(0)))).transpose()
}

fn load_plan(c: &Connection, id: &BuildId) -> Result<Plan, StoreError> {
    let doc: Option<String> = c
        .prepare_cached("SELECT doc FROM plans WHERE build = ?1")
        .map_err(db)?
        .query_row([id.as_str()], |r| r.get(0))
        .optional()
        .map_err(db)?;
    doc.map(|d| parse("plan", &d)).transpose().map(Option::unwrap_or_default)
}

/// The build's stages in their order: all of them, or only those named.
fn load_stages(
    c: &Connection,
    id: &BuildId,
    only: Option<&[StageName]>,
) -> Result<Vec<StageState>, StoreError> {
    let docs: Vec<String> = match only {
        None => {
            let mut st =
                c.prepare_cached("SELECT doc FROM stages WHERE build = ?1 ORDER BY idx").map_err(db)?;
            let rows = st.query_map([id.as_str()], |r| r.get(0)).map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)?
        }
        Some(names) => {
            let mut st =
                c.prepare_cached("SELECT idx, doc FROM stages WHERE build = ?1 AND name = ?2").map_err(db)?;
            let mut found = Vec::with_capacity(names.len());
            for name in names {
                if let Some(row) = st
                    .query_row(params![id.as_str(), name.as_str()], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)))
                    .optional()
                    .map_err(db)?
                {
                    found.push(row);
                }
            }
            found.sort_by_key(|(idx, _)| *idx);
            found.dedup_by_key(|(idx, _)| *idx);
            found.into_iter().map(|(_, doc)| doc).collect()
        }
    };
    docs.iter().map(|d| parse("stage", d)).collect()
}

/// Writes a stage's row; `idx` None: a new stage, placed after the build's last.
fn put_stage(c: &Connection, id: &BuildId, idx: Option<usize>, st: &StageState) -> Result<(), StoreError> {
    let doc = json(st)?;
    match idx {
        Some(i) => c
            .prepare_cached(
                "INSERT INTO stages (build, name, idx, doc) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (build, name) DO UPDATE SET doc = excluded.doc",
            )
            .map_err(db)?
            .execute(params![id.as_str(), st.name.as_str(), i64_of(i as u64), doc]),
        None => c
            .prepare_cached(
                "INSERT INTO stages (build, name, idx, doc) VALUES (?1, ?2, \
                 (SELECT COALESCE(MAX(idx), -1) + 1 FROM stages WHERE build = ?1), ?3)",
            )
            .map_err(db)?
            .execute(params![id.as_str(), st.name.as_str(), doc]),
    }
    .map(drop)
    .map_err(db)
}

/// Rewrites a stage that exists.
fn save_stage(c: &Connection, id: &BuildId, st: &StageState) -> Result<(), StoreError> {
    c.prepare_cached("UPDATE stages SET doc = ?3 WHERE build = ?1 AND name = ?2")
        .map_err(db)?
        .execute(params![id.as_str(), st.name.as_str(), json(st)?])
        .map(drop)
        .map_err(db)
}

/// The whole build: header, plan and every stage.
fn load(c: &Connection, id: &BuildId) -> Result<Option<(Build, u64)>, StoreError> {
    let Some((mut build, seq)) = load_header(c, id)? else { return Ok(None) };
    build.plan = Arc::new(load_plan(c, id)?);
    build.stages = load_stages(c, id, None)?;
    Ok(Some((build, seq)))
}

fn read_image(c: &Connection, image: &str) -> Result<Vec<ImageRecord>, StoreError> {
    let mut st =
        c.prepare_cached("SELECT record FROM images WHERE image = ?1 ORDER BY provider").map_err(db)?;
    let rows = st.query_map([image], |r| r.get::<_, String>(0)).map_err(db)?;
    rows.map(|r| parse("image record", &r.map_err(db)?)).collect()
}

/// Read-modify-write of one stage outside commits (dispatch flag, lease): `f` gets the
/// build's status and the stage, and returns its result and whether it changed the stage.
/// Reads and writes that stage's row and the build's header, nothing else.
fn update_stage<T>(
    c: &mut Connection,
    id: &BuildId,
    stage: &StageName,
    f: impl FnOnce(kiln_domain::Status, &mut StageState) -> Result<(T, bool), StoreError>,
) -> Result<T, StoreError> {
    let tx = begin(c)?;
    let (build, _) = load_header(&tx, id)?.ok_or_else(|| StoreError::NotFound(id.clone()))?;
    let mut st = load_stages(&tx, id, Some(std::slice::from_ref(stage)))?
        .pop()
        .ok_or_else(|| StoreError::NotFound(id.clone()))?;
    let (out, changed) = f(build.status, &mut st)?;
    if changed {
        save_stage(&tx, id, &st)?;
        tx.commit().map_err(db)?;
    }
    Ok(out)
}

fn commit(c: &mut Connection, id: &BuildId, commit: &Commit) -> Result<CommitOutcome, StoreError> {
    let tx = begin(c)?;
    // The header and the stages the commit touches: what it costs does not grow with the
    // build (`Commit::stages_touched`).
    let (mut build, last_seq) = load_header(&tx, id)?.ok_or_else(|| StoreError::NotFound(id.clone()))?;
    let touched: Vec<StageName> = commit.stages_touched().into_iter().collect();
    build.stages = load_stages(&tx, id, Some(&touched))?;
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
    let Applied { first_new, changed } = build.apply_commit(commit).map_err(refused)?;
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
        params![id.as_str(), json(&build.header())?, i64_of(last)],
    )
    .map_err(db)?;
    for st in build.stages.iter().filter(|s| changed.contains(&s.name)) {
        save_stage(&tx, id, st)?;
    }
    for st in &build.stages[first_new..] {
        put_stage(&tx, id, None, st)?;
    }
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
        Self { db, plans: Arc::default() }
    }

    fn cached_plan(&self, id: &BuildId) -> Option<Arc<Plan>> {
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn keep_plan(&self, id: &BuildId, plan: Arc<Plan>) {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if plans.len() >= PLAN_CACHE_BUILDS {
            plans.clear();
        }
        plans.insert(id.clone(), plan);
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
                                "SELECT id, json_extract(doc, '$.created_ms'), \
                                 (SELECT json_extract(p.doc, '$.timeout_ms') FROM plans p WHERE p.build = id) \
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
                            "DELETE FROM stages WHERE build = ?1",
                            "DELETE FROM plans WHERE build = ?1",
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
                    let mut st = c.prepare("SELECT id FROM builds ORDER BY id").map_err(db)?;
                    let ids: Vec<String> =
                        st.query_map([], |r| r.get(0)).map_err(db)?.collect::<Result<_, _>>().map_err(db)?;
                    let mut out = Vec::new();
                    for id in ids.into_iter().map(BuildId::new) {
                        if load(c, &id)?.is_some_and(|(b, _)| !b.is_settled()) {
                            out.push(id);
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
                    let (doc, plan) = (json(&build.header())?, json(&*build.plan)?);
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
                    tx.execute(
                        "INSERT INTO plans (build, doc) VALUES (?1, ?2)",
                        params![build.id.as_str(), plan],
                    )
                    .map_err(db)?;
                    for (idx, st) in build.stages.iter().enumerate() {
                        put_stage(&tx, &build.id, Some(idx), st)?;
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

    async fn build_seq(&self, id: &BuildId) -> Result<Option<u64>, StoreError> {
        let id = id.clone();
        self.db
            .read(
                move |c| {
                    c.prepare_cached("SELECT last_seq FROM builds WHERE id = ?1")
                        .map_err(db)?
                        .query_row([id.as_str()], |r| r.get::<_, i64>(0))
                        .optional()
                        .map(|v| v.map(|v| u64::try_from(v).unwrap_or(0)))
                        .map_err(db)
                },
                StoreError::Backend,
            )
            .await
    }

    async fn get_build_seq(&self, id: &BuildId) -> Result<Option<(Build, u64)>, StoreError> {
        let id = id.clone();
        self.db
            .read(
                move |c| {
                    // One read transaction: the header and the stages of one moment.
                    c.execute_batch("BEGIN").map_err(db)?;
                    let out = load(c, &id);
                    let _ = c.execute_batch("COMMIT");
                    out
                },
                StoreError::Backend,
            )
            .await
    }

    async fn get_build_part(&self, id: &BuildId, stages: &[StageName]) -> Result<Option<Build>, StoreError> {
        let (id, stages, known) = (id.clone(), stages.to_vec(), self.cached_plan(id));
        let build = self
            .db
            .read(
                move |c| {
                    c.execute_batch("BEGIN").map_err(db)?;
                    let out = (|| {
                        let Some((mut build, _)) = load_header(c, &id)? else { return Ok(None) };
                        build.plan = match known {
                            Some(p) => p,
                            None => Arc::new(load_plan(c, &id)?),
                        };
                        build.stages = load_stages(c, &id, Some(&stages))?;
                        Ok(Some(build))
                    })();
                    let _ = c.execute_batch("COMMIT");
                    out
                },
                StoreError::Backend,
            )
            .await?;
        if let Some(b) = &build {
            self.keep_plan(&b.id, b.plan.clone());
        }
        Ok(build)
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
                    update_stage(c, &id, &stage, |_, st| {
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
                    update_stage(c, &id, &stage, |build_status, st| {
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
