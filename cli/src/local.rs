//! The embedded backend in a data dir, and the commands that read it.

use crate::lines::StreamTail;
use crate::render;
use kiln_core::system::{GitPorts, Ports};
use kiln_domain::BuildId;
use kiln_domain::Repo;
use kiln_domain::logs::LogStream;
use kiln_domain::secret::SecretName;
use kiln_store::{LogStore, Queue, SecretInfo, SecretStore, SecretStoreError};
use kiln_store_local::sqlite::OpenError;
use kiln_store_local::{
    LocalLogStore, LocalSecretStore, SqliteDb, SqliteQueue, SqliteQueueOptions, SqliteRepoStore,
    SqliteStateStore, key_path_from,
};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The local backend of a data dir: the ports, and the jobs' dead-letter queue (for the
/// watchdog).
pub struct Local {
    pub ports: Ports,
    pub dead_jobs: Arc<dyn Queue>,
}

/// A job received this many times without being deleted (its runner died each time) is
/// dead-lettered, and the watchdog reports it failed.
pub const JOBS_MAX_RECEIVES: u32 = 3;

/// Opens the local backend in `data_dir`: state and queues in `DATA/kiln.db` (SQLite),
/// logs as files. Several processes may open the same data dir at once.
/// `KILN_TEST_DELIVER_TWICE=1` makes every queue deliver each message twice (a test switch
/// for idempotency).
pub fn open_local(data_dir: &Path) -> Result<Local, OpenError> {
    open_queues(data_dir, "")
}

/// Like [`open_local`], with queues of this process's own (named `<tag>-events`, ...):
/// `kiln run` shares the data dir's state with a running `kiln dev`, but neither runs the
/// other's jobs (which would carry the other's tokens and `--pass-env` choices).
pub fn open_private(data_dir: &Path, tag: &str) -> Result<Ports, OpenError> {
    // No webhooks reach `kiln run`: its builds are not of git commits.
    Ok(Ports { git: None, ..open_queues(data_dir, &format!("{tag}-"))?.ports })
}

fn open_queues(data_dir: &Path, prefix: &str) -> Result<Local, OpenError> {
    let db = SqliteDb::open(data_dir)?;
    let logs = LocalLogStore::open(data_dir).map_err(|e| OpenError::Io(data_dir.to_path_buf(), e))?;
    let twice = std::env::var("KILN_TEST_DELIVER_TWICE").is_ok_and(|v| v == "1");
    // Events and dispatch requests are handled in milliseconds: after a crash, what was
    // in hand comes back soon. Jobs are kept hidden for their lease by their runner.
    let quick = Duration::from_secs(10);
    let queue = |o: SqliteQueueOptions| Arc::new(SqliteQueue::new(db.clone(), o.deliver_twice(twice)));
    let name = |n: &str| format!("{prefix}{n}");
    let jobs = SqliteQueueOptions::standard(name("jobs"), Duration::from_secs(30))
        .with_dead_letter(name("jobs-dlq"), JOBS_MAX_RECEIVES);
    Ok(Local {
        ports: Ports {
            state: Arc::new(SqliteStateStore::new(db.clone())),
            logs: Arc::new(logs),
            events: queue(SqliteQueueOptions::fifo(name("events"), quick)),
            dispatch: queue(SqliteQueueOptions::standard(name("dispatch"), quick)),
            jobs: queue(jobs),
            secrets: Some(Arc::new(LazySecrets::new(data_dir))),
            // `kiln dev` sets the public URL once it knows its address.
            git: Some(GitPorts {
                repos: Arc::new(SqliteRepoStore::new(db.clone())),
                notify: queue(SqliteQueueOptions::fifo(name("notify"), quick)),
                public_url: String::new(),
            }),
        },
        dead_jobs: queue(SqliteQueueOptions::standard(name("jobs-dlq"), Duration::from_secs(30))),
    })
}

/// Removes the builds of `data_dir` whose retention (`KILN_RETENTION_DAYS`, default 90
/// days; `kiln_domain::retention`) has passed, with their logs: the ids removed.
pub async fn prune(data_dir: &Path) -> Result<Vec<BuildId>, String> {
    let days = kiln_domain::retention::retention_days(std::env::var("KILN_RETENTION_DAYS").ok().as_deref());
    let state = SqliteStateStore::open(data_dir).map_err(|e| e.to_string())?;
    let logs = LocalLogStore::open(data_dir).map_err(|e| e.to_string())?;
    let gone = state.prune(days, kiln_domain::event::now_ms()).await.map_err(|e| e.to_string())?;
    for id in &gone {
        logs.remove_build(id).map_err(|e| format!("logs of {id}: {e}"))?;
    }
    Ok(gone)
}

/// The ports of [`open_local`].
pub fn open(data_dir: &Path) -> Result<Ports, OpenError> {
    Ok(open_local(data_dir)?.ports)
}

/// The data dir's sealed secrets, opened on first use: a build that uses no secret never
/// creates the key file (`kiln_store_local::key_path_from`: `KILN_SECRETS_KEY_FILE`, else
/// `~/.config/kiln/secrets.key`, kept apart from the data dir).
pub struct LazySecrets {
    data_dir: PathBuf,
    store: tokio::sync::OnceCell<Result<LocalSecretStore, String>>,
}

impl LazySecrets {
    pub fn new(data_dir: &Path) -> Self {
        Self { data_dir: data_dir.to_path_buf(), store: tokio::sync::OnceCell::new() }
    }

    async fn get(&self) -> Result<&LocalSecretStore, SecretStoreError> {
        let opened = self
            .store
            .get_or_init(|| async {
                let key = key_path_from(|k| std::env::var(k).ok()).ok_or_else(|| {
                    "no place for the secrets key: set KILN_SECRETS_KEY_FILE (or HOME)".to_string()
                })?;
                LocalSecretStore::open(&self.data_dir, &key).map_err(|e| e.to_string())
            })
            .await;
        opened.as_ref().map_err(|e| SecretStoreError::Backend(e.clone()))
    }
}

#[async_trait::async_trait]
impl SecretStore for LazySecrets {
    async fn put(&self, repo: &Repo, name: &SecretName, value: &str) -> Result<(), SecretStoreError> {
        self.get().await?.put(repo, name, value).await
    }
    async fn list(&self, repo: &Repo) -> Result<Vec<SecretInfo>, SecretStoreError> {
        self.get().await?.list(repo).await
    }
    async fn delete(&self, repo: &Repo, name: &SecretName) -> Result<bool, SecretStoreError> {
        self.get().await?.delete(repo, name).await
    }
    async fn reveal(
        &self,
        repo: &Repo,
        names: &[SecretName],
    ) -> Result<BTreeMap<SecretName, String>, SecretStoreError> {
        self.get().await?.reveal(repo, names).await
    }
}

/// Follows every log stream of a build, yielding whole lines labelled `stage/step`.
#[derive(Default)]
pub struct Tail {
    streams: HashMap<String, StreamTail>,
}

impl Tail {
    /// Reads what is new in every stream and hands each whole line (without its newline)
    /// to `emit` with its label; at most one read's worth of bytes is held at a time.
    /// `build_ended` says no more bytes can arrive (the init log is never completed by a
    /// runner: it ends with its build), so partial last lines are handed over too.
    pub async fn poll(
        &mut self,
        logs: &dyn LogStore,
        build: &BuildId,
        build_ended: bool,
        mut emit: impl FnMut(&str, &[u8]),
    ) {
        let Ok(list) = logs.list(build).await else { return };
        for info in list {
            let st = self.streams.entry(info.stream.key()).or_default();
            if st.done {
                continue;
            }
            let label = info.stream.display_name();
            let mut emit = |line: &[u8]| emit(&label, line);
            let mut complete = false;
            while let Ok(r) = logs.read(build, &info.stream, st.offset, 1 << 20).await {
                st.feed(&r.bytes, r.next_offset, &mut emit);
                if r.bytes.is_empty() {
                    complete = r.complete;
                    break;
                }
            }
            if complete || build_ended {
                st.finish(&mut emit);
            }
        }
    }

    /// Every stream seen has been read to its end.
    pub fn drained(&self) -> bool {
        self.streams.values().all(|s| s.done)
    }
}

fn open_read(data_dir: &Path) -> Result<Ports, u8> {
    if !data_dir.is_dir() {
        eprintln!("kiln: no data dir at {} (run a pipeline with `kiln run` first)", data_dir.display());
        return Err(1);
    }
    open(data_dir).map_err(|e| {
        eprintln!("kiln: cannot read {}: {e}", data_dir.display());
        1
    })
}

async fn load(ports: &Ports, build: &str) -> Result<kiln_domain::state::Build, u8> {
    match ports.state.get_build(&BuildId::new(build)).await {
        Ok(Some(b)) => Ok(b),
        Ok(None) => {
            eprintln!("kiln: no build {build} in this data dir");
            Err(1)
        }
        Err(e) => {
            eprintln!("kiln: {e}");
            Err(1)
        }
    }
}

/// The data dir's ports and one of its builds, or the exit code after saying why not.
async fn open_build(data_dir: &Path, build: &str) -> Result<(Ports, kiln_domain::state::Build), u8> {
    let ports = open_read(data_dir)?;
    let b = load(&ports, build).await?;
    Ok((ports, b))
}

pub async fn status(data_dir: &Path, build: &str, json: bool) -> u8 {
    let (ports, b) = match open_build(data_dir, build).await {
        Ok(x) => x,
        Err(c) => return c,
    };
    let mut doc = kiln_api::views::BuildView::from(&b);
    doc.attach_images(
        kiln_core::images::build_images(ports.state.as_ref(), &b).await.into_iter().map(Into::into),
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", render::summary(&doc));
    }
    0
}

pub async fn logs(data_dir: &Path, build: &str, stream: Option<&str>, init: bool) -> u8 {
    let (ports, b) = match open_build(data_dir, build).await {
        Ok(x) => x,
        Err(c) => return c,
    };
    let list = match ports.logs.list(&b.id).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kiln: {e}");
            return 1;
        }
    };
    let wanted: Vec<LogStream> = if init {
        list.iter().filter(|i| i.stream == LogStream::Init).map(|i| i.stream.clone()).collect()
    } else if let Some(name) = stream {
        // The latest attempt of that step or service.
        list.iter()
            .rev()
            .find(|i| i.stream.display_name() == name)
            .map(|i| i.stream.clone())
            .into_iter()
            .collect()
    } else {
        list.iter().map(|i| i.stream.clone()).collect()
    };
    if wanted.is_empty() {
        let what = if init { "an init log".to_string() } else { format!("a log {}", stream.unwrap_or("")) };
        eprintln!("kiln: build {} has no {what}", b.id);
        let names: Vec<String> = list.iter().map(|i| i.stream.display_name()).collect();
        if !names.is_empty() {
            eprintln!("kiln: its logs: {}", names.join(", "));
        }
        return 1;
    }
    let headers = wanted.len() > 1;
    let mut stdout = std::io::stdout().lock();
    for s in wanted {
        if headers {
            let _ = writeln!(stdout, "==> {} <==", s.display_name());
        }
        let mut offset = 0;
        loop {
            match ports.logs.read(&b.id, &s, offset, 1 << 20).await {
                Ok(r) if r.bytes.is_empty() => break,
                Ok(r) => {
                    let _ = stdout.write_all(&r.bytes);
                    offset = r.next_offset;
                }
                Err(e) => {
                    eprintln!("kiln: {e}");
                    return 1;
                }
            }
        }
    }
    0
}

/// Prints one stored event: a JSON line, or `seq time type subject data`.
pub fn print_event(e: &kiln_api::views::StoredEventView, json: bool) {
    if json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
        return;
    }
    let ev = &e.event;
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let data = if ev.data.is_null() { String::new() } else { ev.data.to_string() };
    println!("{:>5}  {}  {}  {}  {data}", e.seq, s(&ev.time), ev.ty, s(&ev.subject));
}

pub async fn events(data_dir: &Path, build: &str, json: bool) -> u8 {
    let (ports, b) = match open_build(data_dir, build).await {
        Ok(x) => x,
        Err(c) => return c,
    };
    let mut after = 0;
    loop {
        let page = match ports.state.events(&b.id, after, 1000).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("kiln: {e}");
                return 1;
            }
        };
        let Some(last) = page.last() else { return 0 };
        after = last.seq;
        for e in &page {
            print_event(&e.clone().into(), json);
        }
    }
}
