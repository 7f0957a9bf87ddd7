//! The local adapters of the storage ports (`kiln-store`), for `kiln run` and `kiln dev`.
//!
//! The embedded default is [`sqlite`]: state, history, catalog, queues and repositories in one SQLite
//! database, `DATA/kiln.db` (its schema is in that module), with logs as files
//! ([`LocalLogStore`]). The earlier adapters stay for tests and the benchmark that want
//! in-memory queues on tokio's (pausable) clock: [`LocalStateStore`] (JSON files) and
//! [`LocalQueue`] (in process).
//!
//! Files (`DATA` is the directory given to `open`):
//!
//! ```text
//! DATA/kiln.db (+ -wal, -shm)          the SQLite database (see `sqlite`)
//! DATA/builds/<build-id>.json           the Build document (plus a `_store` field: last
//!                                       event seq and applied event ids), replaced
//!                                       atomically (temp file + rename)
//! DATA/builds/<build-id>.events.jsonl   the history: one StoredEvent per line, append-only
//! DATA/images/<image>.json              the image's catalog records, one per provider,
//!                                       replaced atomically
//! DATA/images/<image>.history.jsonl     every version of them written, append-only
//! DATA/logs/<build-id>/<key>.log        one file per log stream (`LogStream::key()`)
//! DATA/logs/<build-id>/<key>.complete   marker: the stream has ended
//! DATA/logs/<build-id>/<key>.batches    batch ids of `append` (one JSON object a line)
//! DATA/secrets/<org>/<repo>/<NAME>.secret   a repository secret, sealed (see `secrets`)
//! ```
//!
//!
//! (`builds/` and `images/` are `LocalStateStore`'s; a data dir holding them is refused by
//! `SqliteDb::open`.) File and database I/O runs on tokio's blocking pool, never on the
//! async workers.

mod logs;
mod queue;
pub mod redeliver;
mod secrets;
pub mod sqlite;
mod state;

pub use logs::LocalLogStore;
pub use queue::{LocalQueue, QueueOptions};
pub use secrets::{LocalSecretStore, key_path_from};
pub use sqlite::{SqliteDb, SqliteQueue, SqliteQueueOptions, SqliteRepoStore, SqliteStateStore};
pub use state::LocalStateStore;

/// Whether a build id can be used as a file name: ASCII letters, digits, `-` and `_`
/// (UUIDs are). Anything else (`..`, `/`) is treated as an unknown build.
pub(crate) fn is_safe_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Runs blocking file work on the blocking pool.
pub(crate) async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
    join_error: impl FnOnce(String) -> E,
) -> Result<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(join_error(format!("background task failed: {e}"))),
    }
}

/// Locks a std mutex, ignoring poisoning: every writer here mutates shared state only
/// after its file write succeeded, so a panic cannot leave it half-changed.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
