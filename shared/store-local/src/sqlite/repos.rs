//! [`SqliteRepoStore`]: repositories' git settings and write-once claims in `DATA/kiln.db`
//! (tables `repos` and `claims`).

use super::SqliteDb;
use async_trait::async_trait;
use kiln_domain::Repo;
use kiln_domain::event::now_ms;
use kiln_store::{RepoSettings, RepoStore, StoreError};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use std::sync::Arc;

/// The repository store of the embedded default. A claim is one IMMEDIATE transaction
/// (insert unless taken, then read what the key holds), so of concurrent claims — in this
/// process or in others on the same data dir — exactly one takes the key.
#[derive(Clone, Debug)]
pub struct SqliteRepoStore {
    db: Arc<SqliteDb>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite: {e}"))
}

fn parse(s: &str) -> Result<RepoSettings, StoreError> {
    serde_json::from_str(s)
        .map_err(|e| StoreError::Backend(format!("stored repository settings unreadable: {e}")))
}

impl SqliteRepoStore {
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
}

#[async_trait]
impl RepoStore for SqliteRepoStore {
    async fn put_repo(&self, settings: &RepoSettings) -> Result<(), StoreError> {
        let repo = settings.repo.to_string();
        let doc =
            serde_json::to_string(settings).map_err(|e| StoreError::Backend(format!("serialize: {e}")))?;
        self.db
            .write(
                move |c| {
                    c.execute("INSERT OR REPLACE INTO repos (repo, doc) VALUES (?1, ?2)", params![repo, doc])
                        .map(drop)
                        .map_err(db)
                },
                StoreError::Backend,
            )
            .await
    }

    async fn get_repo(&self, repo: &Repo) -> Result<Option<RepoSettings>, StoreError> {
        let repo = repo.to_string();
        self.db
            .read(
                move |c| {
                    let doc: Option<String> = c
                        .query_row("SELECT doc FROM repos WHERE repo = ?1", [repo], |r| r.get(0))
                        .optional()
                        .map_err(db)?;
                    doc.as_deref().map(parse).transpose()
                },
                StoreError::Backend,
            )
            .await
    }

    async fn list_repos(&self) -> Result<Vec<RepoSettings>, StoreError> {
        self.db
            .read(
                |c| {
                    // BINARY collation: the UTF-8 bytes of `org/repo`, the order DynamoDB
                    // sorts its keys in too.
                    let mut st = c.prepare_cached("SELECT doc FROM repos ORDER BY repo").map_err(db)?;
                    let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
                    rows.map(|r| parse(&r.map_err(db)?)).collect()
                },
                StoreError::Backend,
            )
            .await
    }

    async fn claim(&self, key: &str, value: &str) -> Result<Option<String>, StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        let created = i64::try_from(now_ms()).unwrap_or(i64::MAX);
        self.db
            .write(
                move |c| {
                    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
                    let taken = tx
                        .execute(
                            "INSERT OR IGNORE INTO claims (key, value, created_ms) VALUES (?1, ?2, ?3)",
                            params![key, value, created],
                        )
                        .map_err(db)?;
                    let out = if taken == 1 {
                        None
                    } else {
                        let held: String = tx
                            .query_row("SELECT value FROM claims WHERE key = ?1", [&key], |r| r.get(0))
                            .map_err(db)?;
                        Some(held)
                    };
                    tx.commit().map_err(db)?;
                    Ok(out)
                },
                StoreError::Backend,
            )
            .await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        self.db
            .write(
                move |c| c.execute("DELETE FROM claims WHERE key = ?1", [key]).map(drop).map_err(db),
                StoreError::Backend,
            )
            .await
    }
}
