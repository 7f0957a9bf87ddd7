//! An in-memory LogSink and EventSink that record every call, and job builders, for the
//! runner tests.
#![allow(dead_code)]

use async_trait::async_trait;
use kiln_core::job::Job;
use kiln_core::runner::{RunnerConfig, RunnerCtx};
use kiln_core::sinks::{EventSink, IngestReply, LogSink, SinkError};
use kiln_domain::event::CloudEvent;
use kiln_domain::logs::LogStream;
use kiln_domain::plan::{ServicePlan, StagePlan, StepPlan};
use kiln_domain::{BuildId, Repo};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub enum Rec {
    Put { stream: String, offset: u64, len: usize, at: Instant, failed: bool },
    Init { batch_id: String, text: String },
    Complete { stream: String, at: Instant },
    Event { event: CloudEvent, at: Instant },
}

/// One stream as stored: bytes (or only a running hash), and its put sizes.
#[derive(Debug, Default, Clone)]
pub struct Stored {
    pub bytes: Vec<u8>,
    pub len: u64,
    pub hash: u64,
    pub batches: Vec<usize>,
}

pub const FNV_START: u64 = 0xcbf29ce484222325;

pub fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[derive(Default)]
pub struct Mem {
    pub recs: Mutex<Vec<Rec>>,
    pub streams: Mutex<HashMap<String, Stored>>,
    pub init: Mutex<Vec<(String, Vec<u8>)>>,
    /// Keep only a hash of the stored bytes (bulk tests).
    pub hash_only: AtomicBool,
    /// Fail this many puts transiently before accepting.
    pub fail_puts: AtomicUsize,
    /// Answer puts with `canceled`.
    pub cancel_on_put: AtomicBool,
    /// Every emit fails permanently.
    pub fail_events: AtomicBool,
}

impl Mem {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn rec(&self, r: Rec) {
        self.recs.lock().unwrap().push(r);
    }

    pub fn recs(&self) -> Vec<Rec> {
        self.recs.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<CloudEvent> {
        self.recs()
            .into_iter()
            .filter_map(|r| match r {
                Rec::Event { event, .. } => Some(event),
                _ => None,
            })
            .collect()
    }

    pub fn event_types(&self) -> Vec<String> {
        self.events().into_iter().map(|e| e.ty).collect()
    }

    pub fn log(&self, key: &str) -> Vec<u8> {
        self.streams.lock().unwrap().get(key).map(|s| s.bytes.clone()).unwrap_or_default()
    }

    pub fn stored(&self, key: &str) -> Option<Stored> {
        self.streams.lock().unwrap().get(key).cloned()
    }

    pub fn log_str(&self, key: &str) -> String {
        String::from_utf8_lossy(&self.log(key)).into_owned()
    }

    pub fn init_text(&self) -> String {
        let init = self.init.lock().unwrap();
        init.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect()
    }

    pub fn completed(&self) -> Vec<String> {
        self.recs()
            .into_iter()
            .filter_map(|r| match r {
                Rec::Complete { stream, .. } => Some(stream),
                _ => None,
            })
            .collect()
    }
}

#[async_trait]
impl LogSink for Mem {
    async fn put(
        &self,
        _build: &BuildId,
        stream: &LogStream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError> {
        let key = stream.key();
        let fail =
            self.fail_puts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        self.rec(Rec::Put {
            stream: key.clone(),
            offset,
            len: bytes.len(),
            at: Instant::now(),
            failed: fail,
        });
        if fail {
            return Err(SinkError::Transient("injected".into()));
        }
        let mut streams = self.streams.lock().unwrap();
        let s = streams.entry(key).or_insert_with(|| Stored { hash: FNV_START, ..Stored::default() });
        if offset + bytes.len() as u64 <= s.len {
            // a retry of a stored batch
        } else if offset != s.len {
            return Err(SinkError::Permanent(format!("gap: offset {offset}, stored {}", s.len)));
        } else {
            if self.hash_only.load(Ordering::SeqCst) {
                s.hash = fnv(s.hash, bytes);
            } else {
                s.bytes.extend_from_slice(bytes);
            }
            s.len += bytes.len() as u64;
            s.batches.push(bytes.len());
        }
        Ok(IngestReply { canceled: self.cancel_on_put.load(Ordering::SeqCst) })
    }

    async fn append_init(
        &self,
        _build: &BuildId,
        batch_id: &str,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError> {
        self.rec(Rec::Init { batch_id: batch_id.into(), text: String::from_utf8_lossy(bytes).into_owned() });
        let mut init = self.init.lock().unwrap();
        if !init.iter().any(|(id, _)| id == batch_id) {
            init.push((batch_id.into(), bytes.to_vec()));
        }
        Ok(IngestReply::default())
    }

    async fn complete(&self, _build: &BuildId, stream: &LogStream) -> Result<IngestReply, SinkError> {
        self.rec(Rec::Complete { stream: stream.key(), at: Instant::now() });
        Ok(IngestReply::default())
    }
}

#[async_trait]
impl EventSink for Mem {
    async fn emit(&self, event: CloudEvent) -> Result<(), SinkError> {
        if self.fail_events.load(Ordering::SeqCst) {
            return Err(SinkError::Permanent("events down".into()));
        }
        self.rec(Rec::Event { event, at: Instant::now() });
        Ok(())
    }
}

pub fn step(name: &str, number: u32, commands: &[&str]) -> StepPlan {
    StepPlan {
        name: name.into(),
        number,
        commands: commands.iter().map(|c| c.to_string()).collect(),
        env: BTreeMap::new(),
        timeout_ms: None,
        secrets: Vec::new(),
    }
}

pub fn service(name: &str, number: u32, commands: &[&str]) -> ServicePlan {
    ServicePlan {
        name: name.into(),
        number,
        commands: commands.iter().map(|c| c.to_string()).collect(),
        env: BTreeMap::new(),
        secrets: Vec::new(),
    }
}

pub fn job(stage: &str, steps: Vec<StepPlan>) -> Job {
    Job {
        build: BuildId::generate(),
        repo: Repo::new("acme", "web"),
        stage: stage.into(),
        plan: StagePlan {
            name: stage.into(),
            needs: vec![],
            runs_on: Default::default(),
            timeout_ms: 60_000,
            env: BTreeMap::new(),
            steps,
            services: vec![],
            triggers: vec![],
        },
        env: BTreeMap::new(),
        trigger_event: None,
        deadline_ms: None,
        token: None,
        secrets_allowed: true,
        git: None,
    }
}

pub fn config(root: &Path) -> RunnerConfig {
    let mut c = RunnerConfig::new("test-runner", root);
    c.kill_grace = Duration::from_secs(2);
    // Steps here write pid files into the test's own 0700 temp dir: they run as the test
    // does. The step user (root runners) is tested in runner.rs and tests/cli_security.rs.
    c.step_env.user = None;
    c
}

pub fn ctx(mem: &Arc<Mem>, config: RunnerConfig) -> (RunnerCtx, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    // No heartbeat here: the lease is never lost.
    let lease_lost = watch::channel(false).1;
    let secrets = Arc::new(kiln_core::secrets::NoSecrets);
    (RunnerCtx { config, logs: mem.clone(), events: mem.clone(), cancel: rx, lease_lost, secrets }, tx)
}

pub fn step_key(stage: &str, step: &str, number: u32) -> String {
    LogStream::Step { stage: stage.into(), step: step.into(), number, attempt: 1 }.key()
}

/// Whether a process is gone (no such pid, or a zombie waiting for its reaper).
pub fn process_gone(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

pub fn read_pid(path: &Path) -> i32 {
    for _ in 0..50 {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(pid) = s.trim().parse()
        {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no pid in {}", path.display());
}
