//! The embedded default's database: one SQLite file, `DATA/kiln.db`, in WAL mode, holding
//! the state store ([`SqliteStateStore`]), the queues ([`SqliteQueue`]) and the repository
//! store ([`SqliteRepoStore`]). Several
//! processes may open the same data dir (`kiln dev`, `kiln run`, `kiln status`): writes are
//! IMMEDIATE transactions (the write lock is taken up front, so two writers never deadlock
//! upgrading a read), a busy timeout makes a second process wait for the lock instead of
//! failing, and WAL readers never block the writer nor see a half-applied transaction.
//!
//! Times in the database (leases, visibility) are wall-clock milliseconds since the epoch:
//! every process on the host reads the same clock, so a lease or a hidden message expires
//! for all of them at once, and after a restart too.
//!
//! Schema (`PRAGMA user_version` = 3; 2 added `repos` and `claims`, created in a
//! database of version 1 when it is opened; 3 split each build into its header, its plan
//! and a row per stage, so a commit reads and writes only the stages it touches — an
//! older database is converted when it is opened):
//!
//! ```text
//! builds(id PK, repo, doc, last_seq)            the build's header as JSON (`Build::header`:
//!                                               no stages, empty plan); last_seq of its
//!                                               history
//! plans(build PK, doc)                          the build's plan as JSON, written once (a
//!                                               table of its own: SQLite rewrites a whole
//!                                               row on UPDATE, so a plan beside the header
//!                                               would be rewritten by every commit)
//! stages(build, name, idx, doc)  PK (build, name)   a StageState as JSON; idx its place
//!                                               in the build (index on (build, idx))
//! events(build, seq, event)  PK (build, seq)    the history, one StoredEvent a row
//! applied(build, event_id)   PK (build, id)     event ids applied by commits (dedup)
//! images(image, provider, record)  PK (image, provider)   the catalog, current records
//! image_history(image, build, provider, version, record)
//!                            PK (image, build, provider, version)  every version written
//! messages(seq PK autoinc, queue, grp, body, receive_count, visible_at_ms, receipt UNIQUE)
//!                                               every queue's messages (dead letters too:
//!                                               they move to the DLQ's name)
//! dedup(queue, dedup_id, sent_ms)  PK (queue, dedup_id)   FIFO deduplication window
//! repos(repo PK, doc)                           a repository's git settings (RepoSettings
//!                                               as JSON) under `org/repo`
//! claims(key PK, value, created_ms)             write-once claims (webhook deliveries,
//!                                               commit statuses)
//! ```

mod queue;
mod repos;
mod state;

pub use queue::{SqliteQueue, SqliteQueueOptions};
pub use repos::SqliteRepoStore;
pub use state::SqliteStateStore;

use crate::{blocking, lock};
use rusqlite::{Connection, OpenFlags};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The database's file name in the data dir.
pub const DB_FILE: &str = "kiln.db";

/// How long a process waits for another's write lock before the operation fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reader connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS builds (
    id TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    doc TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS plans (
    build TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS builds_by_repo ON builds (repo, id);
CREATE TABLE IF NOT EXISTS stages (
    build TEXT NOT NULL,
    name TEXT NOT NULL,
    idx INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (build, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stages_by_idx ON stages (build, idx);
CREATE TABLE IF NOT EXISTS events (
    build TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (build, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied (
    build TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (build, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS images (
    image TEXT NOT NULL,
    provider TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (image, provider)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS image_history (
    image TEXT NOT NULL,
    build TEXT NOT NULL,
    provider TEXT NOT NULL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (image, build, provider, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    grp TEXT,
    body TEXT NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    visible_at_ms INTEGER NOT NULL,
    receipt TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, visible_at_ms);
CREATE INDEX IF NOT EXISTS messages_by_group ON messages (queue, grp, seq);
CREATE TABLE IF NOT EXISTS dedup (
    queue TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    sent_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_by_time ON dedup (queue, sent_ms);
CREATE TABLE IF NOT EXISTS repos (
    repo TEXT PRIMARY KEY,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data dir was written by an earlier Kiln (state as JSON files).
    #[error(
        "{0} holds builds in the earlier file layout (builds/*.json), which this Kiln does not read; \
         keep it for reference and use a new --data-dir (or move {0}/builds and {0}/images away to start afresh \
         in this one)"
    )]
    LegacyLayout(PathBuf),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Sqlite(PathBuf, rusqlite::Error),
    #[error("{0}: converting to the current schema: {1}")]
    Migrate(PathBuf, String),
}

/// The open database of one data dir: one writer connection (writes in this process take
/// turns on it, so they never wait on SQLite's busy handler for each other) and a few
/// reader connections. Shared by the state store and the queues.
pub struct SqliteDb {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Per queue name: wakes this process's long polls when a message is sent or freed
    /// here (other processes' sends are found by polling).
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl std::fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDb").field("path", &self.path).finish()
    }
}

/// Whether `data_dir` holds state of the earlier file layout (`builds/*.json`).
pub fn legacy_layout(data_dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(data_dir.join("builds")) else { return false };
    rd.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().ends_with(".json"))
}

/// The data dir is Kiln's alone: a new one is created 0700, and the database 0600 (SQLite
/// gives its `-wal` and `-shm` files the database's mode). Queued jobs carry runner tokens,
/// so no other user of the machine — steps run as one under a root runner — may read them.
fn private_files(data_dir: &Path, db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir)?;
    std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(db)?;
    std::fs::set_permissions(db, std::fs::Permissions::from_mode(0o600))
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(path, flags)?;
    c.busy_timeout(BUSY_TIMEOUT)?;
    // WAL is a property of the file (set once, kept); the others are per connection.
    // FULL: a transaction is on disk when COMMIT returns, so an acknowledged write
    // survives a power cut too, not only a crash of the process.
    c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
    c.execute_batch("PRAGMA synchronous = FULL;")?;
    Ok(c)
}

impl SqliteDb {
    /// Opens (creating it and its schema if needed) `data_dir/kiln.db`. Refuses a data dir
    /// of the earlier file layout.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Arc<Self>, OpenError> {
        let data_dir = data_dir.as_ref();
        if legacy_layout(data_dir) {
            return Err(OpenError::LegacyLayout(data_dir.to_path_buf()));
        }
        let path = data_dir.join(DB_FILE);
        private_files(data_dir, &path).map_err(|e| OpenError::Io(data_dir.to_path_buf(), e))?;
        let sqlite = |e| OpenError::Sqlite(path.clone(), e);
        let mut writer = connect(&path).map_err(sqlite)?;
        let tx =
            writer.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sqlite)?;
        tx.execute_batch(SCHEMA).map_err(sqlite)?;
        state::migrate(&tx).map_err(|e| OpenError::Migrate(path.clone(), e.to_string()))?;
        tx.commit().map_err(sqlite)?;
        Ok(Arc::new(Self {
            path,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            wakers: Mutex::new(HashMap::new()),
        }))
    }

    /// `data_dir/kiln.db`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writer connection, on the blocking pool.
    pub(crate) async fn write<T, E>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        err: fn(String) -> E,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let db = self.clone();
        blocking(move || f(&mut lock(&db.writer)), err).await
    }

    /// Runs `f` on a reader connection, on the blocking pool.
    pub(crate) async fn read<T, E>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        err: fn(String) -> E,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let db = self.clone();
        blocking(
            move || {
                let idle = lock(&db.readers).pop();
                let c = match idle {
                    Some(c) => c,
                    None => connect(&db.path).map_err(|e| err(format!("{}: {e}", db.path.display())))?,
                };
                let out = f(&c);
                let mut idle = lock(&db.readers);
                if idle.len() < MAX_IDLE_READERS {
                    idle.push(c);
                }
                out
            },
            err,
        )
        .await
    }

    pub(crate) fn waker(&self, queue: &str) -> Arc<Notify> {
        lock(&self.wakers).entry(queue.to_string()).or_default().clone()
    }
}
