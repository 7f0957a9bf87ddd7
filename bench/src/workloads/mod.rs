//! The workloads, one file each: `latency` (log latency), `dispatch`, `fanin`, `logs`
//! (throughput and memory, in a child process), `cost` (per reference build), `compile`,
//! `stop` (cancel, step timeout and parallel stages).
//! Each returns its section of the report. This file holds what they share: sizes,
//! backends, and waiting for and reading builds.

mod compile;
mod cost;
mod dispatch;
mod fanin;
mod fanin_scale;
mod latency;
mod logs;
mod stop;

pub use compile::compile;
pub use cost::cost;
pub use dispatch::dispatch;
pub use fanin::fanin;
pub use latency::log_latency;
pub use logs::{logs, logs_child};
pub use stop::stop;

use kiln_core::system::{Ports, SystemConfig};
use kiln_domain::logs::LogStream;
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Status};
use kiln_store::{LogStore, StateStore};
use kiln_store_local::{LocalLogStore, SqliteDb, SqliteQueue, SqliteQueueOptions, SqliteStateStore};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type Res<T> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub fn epoch() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Sizes of the workloads (`--quick` makes them smaller).
#[derive(Debug, Clone)]
pub struct Params {
    pub latency_secs: u64,
    pub burst_mb: u64,
    pub poll_ms: u64,
    pub write_samples: usize,
    pub dispatch_builds: usize,
    pub fanin_builds: usize,
    pub fanin_stages: usize,
    pub fanin_steps: usize,
    pub logs_mb: u64,
    pub ref_stages: usize,
    pub ref_steps: usize,
    pub ref_lines: u64,
    pub ref_secs: u64,
    pub compile_stages: usize,
    pub compile_runs: usize,
    pub stop_runs: usize,
}

impl Params {
    pub fn to_json(&self) -> Value {
        json!({
            "latency_secs": self.latency_secs, "burst_mb": self.burst_mb, "poll_ms": self.poll_ms,
            "write_samples": self.write_samples, "dispatch_builds": self.dispatch_builds,
            "fanin_builds": self.fanin_builds, "fanin_stages": self.fanin_stages,
            "fanin_steps": self.fanin_steps, "logs_mb": self.logs_mb, "ref_stages": self.ref_stages,
            "ref_steps": self.ref_steps, "ref_lines": self.ref_lines, "ref_secs": self.ref_secs,
            "compile_stages": self.compile_stages, "compile_runs": self.compile_runs,
            "stop_runs": self.stop_runs,
        })
    }
}

/// Where the workloads run.
pub struct Backend {
    pub aws: bool,
    pub root: PathBuf,
}

impl Backend {
    /// The largest DynamoDB item written so far (aws only; `None` locally).
    pub fn largest_item(&self) -> Option<usize> {
        #[cfg(feature = "aws")]
        if self.aws {
            return Some(kiln_store_aws::largest_item_bytes());
        }
        None
    }
}

impl Backend {
    /// Fresh ports for one workload (local: its own data dir; aws: the shared resources).
    pub async fn ports(&self, name: &str) -> Res<Ports> {
        if self.aws {
            return aws_ports().await;
        }
        let dir = self.root.join(name).join("data");
        std::fs::create_dir_all(&dir).map_err(err)?;
        // The embedded default: state and queues in the data dir's SQLite database.
        let db = SqliteDb::open(&dir).map_err(err)?;
        let queue = |o: SqliteQueueOptions| Arc::new(SqliteQueue::new(db.clone(), o));
        let vis = Duration::from_secs(30);
        Ok(Ports {
            state: Arc::new(SqliteStateStore::new(db.clone())),
            logs: Arc::new(LocalLogStore::open(&dir).map_err(err)?),
            events: queue(SqliteQueueOptions::fifo("events", vis)),
            dispatch: queue(SqliteQueueOptions::standard("dispatch", vis)),
            jobs: queue(SqliteQueueOptions::standard("jobs", vis)),
            secrets: None,
            git: None,
        })
    }

    pub fn config(&self, name: &str) -> SystemConfig {
        let mut c = SystemConfig::new(self.root.join(name).join("workspaces"));
        c.runner_slots = 16;
        c
    }
}

#[cfg(feature = "aws")]
async fn aws_ports() -> Res<Ports> {
    let b = kiln_store_aws::connect(&kiln_store_aws::AwsConfig::from_env()).await.map_err(err)?;
    Ok(aws_backend_ports(b))
}

/// The AWS ports on clients whose every request is counted in `counter`.
#[cfg(feature = "aws")]
pub async fn aws_ports_counted(counter: Arc<kiln_store_aws::RequestCounter>) -> Res<Ports> {
    let clients = kiln_store_aws::Clients::from_env_counted(counter).await;
    let b =
        kiln_store_aws::connect_with(clients, &kiln_store_aws::AwsConfig::from_env()).await.map_err(err)?;
    Ok(aws_backend_ports(b))
}

#[cfg(feature = "aws")]
fn aws_backend_ports(b: kiln_store_aws::AwsBackend) -> Ports {
    Ports {
        state: b.state,
        logs: b.logs,
        events: b.events,
        dispatch: b.dispatch,
        jobs: b.jobs,
        secrets: Some(b.secrets),
        git: None,
    }
}

#[cfg(not(feature = "aws"))]
async fn aws_ports() -> Res<Ports> {
    Err("--backend aws is not available in this build (build with `--features aws`)".into())
}

/// Waits for a build and all its stages to end, polling `state` every 20 ms.
pub async fn wait_build(state: &dyn StateStore, id: &BuildId, limit: Duration) -> Res<Build> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(b) = state.get_build(id).await.map_err(err)?
            && b.is_settled()
        {
            return Ok(b);
        }
        if Instant::now() > deadline {
            let b = state.get_build(id).await.map_err(err)?;
            let how = b.map(|b| {
                let stages: Vec<String> = b
                    .stages
                    .iter()
                    .map(|s| {
                        let steps: Vec<String> =
                            s.steps.iter().map(|t| format!("{}={}", t.name, t.status)).collect();
                        format!("{}={} [{}]", s.name, s.status, steps.join(" "))
                    })
                    .collect();
                format!("build {}; {}", b.status, stages.join("; "))
            });
            return Err(format!("build {id} did not end within {limit:?}: {}", how.unwrap_or_default()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A step stream's bytes, read to its end, handed to `f` one read at a time.
async fn read_stream(
    logs: &dyn LogStore,
    id: &BuildId,
    stream: &LogStream,
    mut f: impl FnMut(&[u8]),
) -> Res<u64> {
    let mut offset = 0;
    loop {
        let r = logs.read(id, stream, offset, 1 << 20).await.map_err(err)?;
        if r.bytes.is_empty() {
            return Ok(offset);
        }
        f(&r.bytes);
        offset = r.next_offset;
    }
}

async fn step_streams(logs: &dyn LogStore, id: &BuildId) -> Res<Vec<(String, LogStream)>> {
    Ok(logs
        .list(id)
        .await
        .map_err(err)?
        .into_iter()
        .filter_map(|i| match &i.stream {
            LogStream::Step { step, .. } => Some((step.to_string(), i.stream.clone())),
            _ => None,
        })
        .collect())
}

fn emit_command(rate: f64, count: u64, line_bytes: usize) -> Res<String> {
    let exe = std::env::current_exe().map_err(err)?;
    let exe = exe.to_str().ok_or("the bench's path is not UTF-8")?;
    if exe.contains(['\'', '"']) {
        return Err("the bench's path contains quotes".into());
    }
    Ok(format!("'\"{exe}\" --workload emit --rate {rate} --count {count} --line-bytes {line_bytes}'"))
}

fn ensure_succeeded(b: &Build) -> Res<()> {
    if b.status == Status::Succeeded {
        Ok(())
    } else {
        Err(format!("build {} ended {} ({:?})", b.id, b.status, b.reason))
    }
}
