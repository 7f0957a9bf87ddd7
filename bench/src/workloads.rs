//! The six workloads. Each returns its section of the report.

use crate::counting::{Counter, CountingLogs, CountingQueue, CountingSinks, CountingState, TimedState};
use crate::stats::{FlushRule, Rng, quantile, replay, summary};
use kiln_core::fanin::handle_event;
use kiln_core::ingest::Ingest;
use kiln_core::job::Job;
use kiln_core::sinks::{EventSink, LogSink};
use kiln_core::system::{Ports, QueueEventSink, SinkFactory, System, SystemConfig};
use kiln_domain::event::{CloudEvent, now_ms};
use kiln_domain::logs::LogStream;
use kiln_domain::state::{Build, Patch, Target, Transition};
use kiln_domain::{BuildId, Repo, StageName, Status, StepName};
use kiln_store::{Commit, LogStore, Queue, StateStore};
use kiln_store_local::{LocalLogStore, LocalQueue, LocalStateStore, QueueOptions};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
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
        })
    }
}

/// Where the workloads run.
pub struct Backend {
    pub aws: bool,
    pub root: PathBuf,
}

impl Backend {
    /// Fresh ports for one workload (local: its own data dir; aws: the shared resources).
    pub async fn ports(&self, name: &str) -> Res<Ports> {
        if self.aws {
            return aws_ports().await;
        }
        let dir = self.root.join(name).join("data");
        std::fs::create_dir_all(&dir).map_err(err)?;
        let queue = |fifo: bool| {
            Arc::new(LocalQueue::new(QueueOptions {
                fifo,
                visibility_timeout: Duration::from_secs(30),
                ..QueueOptions::default()
            }))
        };
        Ok(Ports {
            state: Arc::new(LocalStateStore::open(&dir).map_err(err)?),
            logs: Arc::new(LocalLogStore::open(&dir).map_err(err)?),
            events: queue(true),
            dispatch: queue(false),
            jobs: queue(false),
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
    Ok(Ports { state: b.state, logs: b.logs, events: b.events, dispatch: b.dispatch, jobs: b.jobs })
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

// ---------------------------------------------------------------------------------------
// 1. Log latency

#[derive(Default)]
struct Lines {
    printed: Vec<f64>,
    sizes: Vec<usize>,
    latency: Vec<f64>,
}

/// Store write times (seconds) of batches of `size` bytes, appended to a scratch stream.
async fn write_times(logs: &dyn LogStore, size: usize, n: usize) -> Res<Vec<f64>> {
    let id = BuildId::generate();
    let stream = LogStream::Step {
        stage: StageName::new("bench"),
        step: StepName::new(format!("writes-{size}")),
        number: 1,
        attempt: 1,
    };
    let line = format!("T {:.6} 0 {}\n", epoch(), "x".repeat(40));
    let batch: Vec<u8> = line.bytes().cycle().take(size).collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        logs.put_chunk(&id, &stream, (i * size) as u64, &batch).await.map_err(err)?;
        out.push(t.elapsed().as_secs_f64());
    }
    Ok(out)
}

pub async fn log_latency(b: &Backend, p: &Params) -> Res<Value> {
    let ports = b.ports("latency").await?;
    let small = write_times(ports.logs.as_ref(), 4096, p.write_samples).await?;
    let large = write_times(ports.logs.as_ref(), 256 * 1024, (p.write_samples / 5).max(5)).await?;
    let secs = p.latency_secs;
    let burst_lines = p.burst_mb * 1_000_000 / 64;
    let yaml = format!(
        "version: \"1\"\nstages:\n  slow:\n    steps:\n      - name: rate-1\n        commands:\n          - {}\n  \
         medium:\n    steps:\n      - name: rate-100\n        commands:\n          - {}\n  burst:\n    steps:\n      \
         - name: burst-{}mb\n        commands:\n          - {}\n",
        emit_command(1.0, secs, 48)?,
        emit_command(100.0, secs * 100, 48)?,
        p.burst_mb,
        emit_command(0.0, burst_lines, 64)?,
    );
    let system = System::start(ports.clone(), b.config("latency"));
    let build = system.submit(Repo::new("bench", "latency"), yaml.as_bytes()).await.map_err(err)?;
    let id = build.id.clone();
    let mut tails: BTreeMap<String, (u64, Vec<u8>)> = BTreeMap::new();
    let mut lines: BTreeMap<String, Lines> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(secs + 180);
    loop {
        let list = ports.logs.list(&id).await.map_err(err)?;
        let mut all_complete = true;
        for info in &list {
            let LogStream::Step { step, .. } = &info.stream else { continue };
            let (offset, partial) = tails.entry(info.stream.key()).or_default();
            loop {
                let Ok(r) = ports.logs.read(&id, &info.stream, *offset, 1 << 20).await else { break };
                let now = epoch();
                *offset = r.next_offset;
                partial.extend_from_slice(&r.bytes);
                let rec = lines.entry(step.to_string()).or_default();
                let mut start = 0;
                while let Some(i) = partial[start..].iter().position(|&c| c == b'\n') {
                    let line = &partial[start..start + i];
                    if let Some(t) = std::str::from_utf8(line)
                        .ok()
                        .and_then(|l| l.strip_prefix("T "))
                        .and_then(|l| l.split(' ').next())
                        .and_then(|t| t.parse::<f64>().ok())
                    {
                        rec.printed.push(t);
                        rec.sizes.push(i + 1);
                        rec.latency.push(now - t);
                    }
                    start += i + 1;
                }
                partial.drain(..start);
                if r.bytes.is_empty() {
                    all_complete &= r.complete;
                    break;
                }
            }
        }
        if list.iter().filter(|i| matches!(i.stream, LogStream::Step { .. })).count() == 3 && all_complete {
            break;
        }
        if Instant::now() > deadline {
            return Err("log latency: the build did not finish in time".into());
        }
        tokio::time::sleep(Duration::from_millis(p.poll_ms)).await;
    }
    let ended = wait_build(ports.state.as_ref(), &id, Duration::from_secs(60)).await?;
    system.stop().await;
    ensure_succeeded(&ended)?;

    let mut rng = Rng::new(0x6b69_6c6e);
    let mut write = |n: usize| *rng.pick(if n <= 64 * 1024 { &small } else { &large });
    let runner_rule = FlushRule {
        interval: Some(1.0),
        threshold: kiln_domain::logs::MAX_BATCH_BYTES,
        strictly_more: false,
    };
    let byte_rule = FlushRule { interval: None, threshold: 1000, strictly_more: true };
    let mut per = serde_json::Map::new();
    let (mut worst_p50, mut worst_p99, mut worst_floor, mut worst_bb) = (0f64, 0f64, 0f64, 0f64);
    let mut phase_rng = Rng::new(42);
    for (name, l) in &lines {
        // The floor: the same flush rule as the runner (every 1 s, or at 256 KiB), no
        // other overhead than one measured store write; 20 random tick phases pooled.
        let mut floor = Vec::new();
        for _ in 0..20 {
            floor.extend(replay(&l.printed, &l.sizes, runner_rule, phase_rng.unit(), &mut write));
        }
        let bb = replay(&l.printed, &l.sizes, byte_rule, 0.0, &mut write);
        let span = l.printed.last().unwrap_or(&0.0) - l.printed.first().unwrap_or(&0.0);
        let bytes: usize = l.sizes.iter().sum();
        worst_p50 = worst_p50.max(quantile(&l.latency, 0.5));
        worst_p99 = worst_p99.max(quantile(&l.latency, 0.99));
        worst_floor = worst_floor.max(quantile(&floor, 0.99));
        worst_bb = worst_bb.max(quantile(&bb, 0.99));
        per.insert(
            name.clone(),
            json!({
                "lines": l.printed.len(),
                "bytes": bytes,
                "achieved_lines_per_s": if span > 0.0 { l.printed.len() as f64 / span } else { 0.0 },
                "measured_s": summary(&l.latency, 1.0),
                "floor_1s_batch_s": summary(&floor, 1.0),
                "byte_buffer_1000_s": summary(&bb, 1.0),
            }),
        );
    }
    if lines.len() != 3 || lines.values().any(|l| l.printed.is_empty()) {
        return Err(format!("log latency: expected 3 streams with lines, got {}", lines.len()));
    }
    let r4 = |x: f64| (x * 10_000.0).round() / 10_000.0;
    Ok(json!({
        "p50_s": r4(worst_p50),
        "p99_s": r4(worst_p99),
        "floor_p99_s": r4(worst_floor),
        "byte_buffer_p99_s": r4(worst_bb),
        "p99_over_floor": r4(worst_p99 / worst_floor.max(1e-9)),
        "headline": "p50_s, p99_s, floor_p99_s and byte_buffer_p99_s are the worst of the three workloads",
        "workloads": per,
        "store_write_s": { "batch_4KiB": summary(&small, 1.0), "batch_256KiB": summary(&large, 1.0) },
        "method": format!(
            "Three steps run in parallel in one build, each the bench binary printing lines that start with \
             the wall-clock time (1 line/s for {secs} s, 100 lines/s for {secs} s, a {} MB burst of 64-byte \
             lines as fast as the pipe takes them). A reader in the bench tails the log store directly \
             (LogStore::list + read, every {} ms) and records time readable - time printed per line; so the \
             measured figure includes up to one poll interval. floor: the printed timestamps and line sizes \
             replayed through the runner's rule (flush every 1 s at a random tick phase, or at 256 KiB), one \
             writer at a time, each write taking a store write time drawn from the put_chunk latencies \
             measured in this run (4 KiB and 256 KiB batches); 20 phases pooled. byte_buffer: the same \
             replay through the seed's old rule (flush when more than 1000 bytes wait, and at the end of \
             the step), same measured write times.",
            p.burst_mb, p.poll_ms
        ),
    }))
}

// ---------------------------------------------------------------------------------------
// 2. Dispatch latency

pub async fn dispatch(b: &Backend, p: &Params) -> Res<Value> {
    let ports = b.ports("dispatch").await?;
    let system = System::start(ports.clone(), b.config("dispatch"));
    let yaml = "version: \"1\"\nsteps:\n  - name: start\n    commands: [\"date +%s.%N\"]\n";
    let warmup = 2;
    let mut lat = Vec::new();
    let mut total = Vec::new();
    for i in 0..p.dispatch_builds + warmup {
        let t0 = epoch();
        let build = system.submit(Repo::new("bench", "dispatch"), yaml.as_bytes()).await.map_err(err)?;
        let ended = wait_build(ports.state.as_ref(), &build.id, Duration::from_secs(60)).await?;
        let t_end = epoch();
        ensure_succeeded(&ended)?;
        let streams = step_streams(ports.logs.as_ref(), &build.id).await?;
        let (_, stream) = streams.first().ok_or("dispatch: no step log")?;
        let mut text = Vec::new();
        read_stream(ports.logs.as_ref(), &build.id, stream, |b| text.extend_from_slice(b)).await?;
        let started: f64 = String::from_utf8_lossy(&text)
            .trim()
            .parse()
            .map_err(|e| format!("dispatch: step printed {:?}: {e}", String::from_utf8_lossy(&text)))?;
        if i >= warmup {
            lat.push((started - t0) * 1000.0);
            total.push((t_end - t0) * 1000.0);
        }
    }
    system.stop().await;
    Ok(json!({
        "p50_ms": (quantile(&lat, 0.5) * 100.0).round() / 100.0,
        "p99_ms": (quantile(&lat, 0.99) * 100.0).round() / 100.0,
        "builds": lat.len(),
        "submit_to_step_start_ms": summary(&lat, 1.0),
        "submit_to_build_seen_ended_ms": summary(&total, 1.0),
        "method": format!(
            "{} one-step builds submitted one after another (System::submit) after {warmup} warm-up builds; \
             the step runs `date +%s.%N` as its first command; latency = that time - the wall-clock time \
             just before submit (compile, store, fan-in, dispatch, runner claim, workspace, fork/exec of \
             sh and date).",
            lat.len()
        ),
    }))
}

// ---------------------------------------------------------------------------------------
// 3. Fan-in throughput

fn fanin_yaml(stages: usize, steps: usize) -> String {
    let mut y = String::from("version: \"1\"\nstages:\n");
    for s in 0..stages {
        y.push_str(&format!("  s{s}:\n    steps:\n"));
        for k in 0..steps {
            y.push_str(&format!("      - name: k{k}\n        commands: [\"true\"]\n"));
        }
    }
    y
}

/// The reports a runner would send for a build that succeeds.
fn reports(b: &Build) -> Vec<CloudEvent> {
    use kiln_domain::report::{
        BuildCreated, Report, StageFinished, StageOutcome, StageStarted, StepFinished, StepStarted,
    };
    let ev = |r: Report| r.to_event(&b.id, "kiln://bench");
    let mut out = vec![ev(BuildCreated { repo: b.repo.to_string(), stages: b.stages.len() }.into())];
    for st in &b.stages {
        let stage = st.name.clone();
        out.push(ev(StageStarted { stage: stage.clone(), attempt: 1, runner: Some("bench".into()) }.into()));
        for step in &st.steps {
            let (name, number) = (step.name.clone(), step.number);
            out.push(ev(StepStarted { stage: stage.clone(), step: name.clone(), number, attempt: 1 }.into()));
            out.push(ev(StepFinished {
                stage: stage.clone(),
                step: name,
                number,
                attempt: 1,
                exit_code: 0,
                duration_ms: 1,
                reason: None,
            }
            .into()));
        }
        let outcome = StageOutcome::Completed;
        out.push(ev(StageFinished { stage, attempt: 1, outcome, reason: None }.into()));
    }
    out
}

/// One transition at a time taking the build through the same states as `reports`.
fn transitions(b: &Build) -> Vec<Transition> {
    let t = |target: Target, from: Status, to: Status| Transition {
        target,
        from,
        to,
        patch: Patch { at_ms: now_ms(), ..Patch::default() },
    };
    let mut out = vec![t(Target::Build, Status::Pending, Status::Running)];
    for st in &b.stages {
        let stage = st.name.clone();
        out.push(t(Target::Stage { stage: stage.clone() }, Status::Pending, Status::Running));
        for step in &st.steps {
            let target = Target::Step { stage: stage.clone(), step: step.name.clone() };
            out.push(t(target.clone(), Status::Pending, Status::Running));
            out.push(t(target, Status::Running, Status::Succeeded));
        }
        out.push(t(Target::Stage { stage }, Status::Running, Status::Succeeded));
    }
    out
}

pub async fn fanin(b: &Backend, p: &Params) -> Res<Value> {
    let ports = b.ports("fanin").await?;
    let plan = kiln_domain::compile::compile(fanin_yaml(p.fanin_stages, p.fanin_steps).as_bytes())
        .map_err(|e| format!("fan-in pipeline: {e:?}"))?;
    // Dispatch requests from the fan-in go to a scratch queue nobody serves.
    let scratch: Arc<dyn Queue> = Arc::new(LocalQueue::standard(Duration::from_secs(30)));
    let timed = TimedState::new(ports.state.clone());
    let state: &dyn StateStore = &timed;
    let new_build = || Build::new(BuildId::generate(), Repo::new("bench", "fanin"), plan.clone(), now_ms());
    let (mut events, mut event_secs, mut writes, mut write_secs) = (0usize, 0f64, 0usize, 0f64);
    let mut succeeded = 0;
    let (mut raw_commit_secs, mut history) = (0f64, 0usize);
    let mut in_fanin: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    // Alternate the two measurements in rounds, so drift on a shared machine hits both.
    let rounds = 4;
    let mut round_ratios = Vec::new();
    for round in 0..rounds {
        let (e0, es0, w0, ws0) = (events, event_secs, writes, write_secs);
        // Raw: StateStore::commit with one conditional transition and nothing else.
        let mut builds = Vec::new();
        for _ in 0..p.fanin_builds / rounds {
            let bld = new_build();
            state.create_build(&bld).await.map_err(err)?;
            builds.push(bld);
        }
        let plans: Vec<_> = builds.iter().map(|b| (b.id.clone(), transitions(b))).collect();
        let t = Instant::now();
        for (id, ts) in &plans {
            for (j, tr) in ts.iter().enumerate() {
                let c = Commit {
                    event_id: format!("raw-{round}-{j}"),
                    transitions: vec![tr.clone()],
                    ..Commit::default()
                };
                state.commit(id, &c).await.map_err(err)?;
                writes += 1;
            }
        }
        write_secs += t.elapsed().as_secs_f64();

        // Fan-in: handle_event for every report of each build, in order.
        let mut builds = Vec::new();
        for _ in 0..p.fanin_builds / rounds {
            let bld = new_build();
            state.create_build(&bld).await.map_err(err)?;
            builds.push(bld);
        }
        let evs: Vec<_> = builds.iter().map(|b| (b.id.clone(), reports(b))).collect();
        let before = timed.take();
        raw_commit_secs += before.get("commit").map_or(0.0, |x| x.1);
        let t = Instant::now();
        for (_, list) in &evs {
            for e in list {
                handle_event(state, scratch.as_ref(), e).await.map_err(|e| format!("fan-in: {e:?}"))?;
                events += 1;
            }
        }
        event_secs += t.elapsed().as_secs_f64();
        for (k, (n, secs)) in timed.take() {
            let e = in_fanin.entry(k).or_insert((0, 0.0));
            e.0 += n;
            e.1 += secs;
        }
        let round_eps = (events - e0) as f64 / (event_secs - es0).max(1e-9);
        let round_wps = (writes - w0) as f64 / (write_secs - ws0).max(1e-9);
        round_ratios.push((round_eps / round_wps * 1000.0).round() / 1000.0);
        // History entries the fan-in wrote for these builds (the raw commits write none).
        for (id, _) in &evs {
            history += state.events(id, 0, usize::MAX).await.map_err(err)?.len();
        }
        timed.take();
        for (id, _) in &evs {
            if state.get_build(id).await.map_err(err)?.is_some_and(|b| b.status == Status::Succeeded) {
                succeeded += 1;
            }
        }
    }
    let eps = events as f64 / event_secs.max(1e-9);
    let wps = writes as f64 / write_secs.max(1e-9);
    Ok(json!({
        "events_per_s": eps.round(),
        "raw_writes_per_s": wps.round(),
        "ratio": (eps / wps * 1000.0).round() / 1000.0,
        "events": events,
        "raw_writes": writes,
        "builds_succeeded": succeeded,
        "builds": (p.fanin_builds / rounds) * rounds,
        "build_shape": format!("{} stages x {} steps", p.fanin_stages, p.fanin_steps),
        "fanin_history_events_written": history,
        "round_ratios": round_ratios,
        "fanin_store_calls": in_fanin.iter().map(|(k, (n, s))| (k.to_string(), json!({
            "calls": n, "seconds": s, "share_of_fanin_time": s / event_secs.max(1e-9),
            "ms_per_call": s / (*n).max(1) as f64 * 1000.0,
        }))).collect::<serde_json::Map<_, _>>(),
        "raw_commit_ms_per_call": raw_commit_secs / writes.max(1) as f64 * 1000.0,
        "method": "One at a time, in one task (events of one build are ordered: a FIFO group). fan-in: \
                   kiln_core::fanin::handle_event on every report a succeeding build gets (build-created, \
                   stage started/finished, step started/finished), each a read, the state machine, one \
                   commit with the event and its lifecycle events, and the dispatch requests. raw: \
                   StateStore::commit with one conditional transition and no events, on builds of the same \
                   shape, through the same states. Four alternating rounds of each (ratio: totals; round_ratios: each round's, to show the noise).",
    }))
}

// ---------------------------------------------------------------------------------------
// 4. Log throughput and memory (run in a child process: its VmHWM is the system's)

pub fn vm_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

const LOG_LINE: &str = "kiln log throughput 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// In the child: one step prints `mb` MiB with `yes`, then the stored bytes are checked.
pub async fn logs_child(b: &Backend, mb: u64) -> Res<Value> {
    let rss_start = vm_kib("VmRSS:");
    let ports = b.ports("logs").await?;
    let bytes = mb * 1024 * 1024;
    let yaml = format!(
        "version: \"1\"\nsteps:\n  - name: flood\n    commands: [\"yes '{LOG_LINE}' | head -c {bytes}\"]\n"
    );
    let system = System::start(ports.clone(), b.config("logs"));
    let t = Instant::now();
    let build = system.submit(Repo::new("bench", "logs"), yaml.as_bytes()).await.map_err(err)?;
    let ended = wait_build(ports.state.as_ref(), &build.id, Duration::from_secs(600)).await?;
    let secs = t.elapsed().as_secs_f64();
    let hwm_run = vm_kib("VmHWM:");
    system.stop().await;
    ensure_succeeded(&ended)?;
    let streams = step_streams(ports.logs.as_ref(), &build.id).await?;
    let (_, stream) = streams.first().ok_or("logs: no step log")?;
    let mut got = Sha256::new();
    let len = read_stream(ports.logs.as_ref(), &build.id, stream, |b| got.update(b)).await?;
    let mut want = Sha256::new();
    let line = format!("{LOG_LINE}\n");
    let mut left = bytes as usize;
    let block: Vec<u8> = line.bytes().cycle().take(line.len() * 4096).collect();
    while left > 0 {
        let n = left.min(block.len());
        want.update(&block[..n]);
        left -= n;
    }
    let (got, want) = (hex::encode(got.finalize()), hex::encode(want.finalize()));
    Ok(json!({
        "bytes": len,
        "expected_bytes": bytes,
        "seconds": secs,
        "mb_per_s": (len as f64 / 1048576.0 / secs * 10.0).round() / 10.0,
        "runner_peak_rss_mib": hwm_run.map_or(-1.0, |k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
        "rss_at_start_mib": rss_start.map_or(-1.0, |k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
        "peak_rss_after_verify_mib": vm_kib("VmHWM:").map_or(-1.0, |k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
        "sha256_stored": got,
        "sha256_expected": want,
        "verified_equal": got == want && len == bytes,
    }))
}

pub async fn logs(b: &Backend, p: &Params) -> Res<Value> {
    let exe = std::env::current_exe().map_err(err)?;
    let child_root = b.root.join("logs-child");
    let out = tokio::process::Command::new(exe)
        .args(["--workload", "logs-child", "--logs-mb", &p.logs_mb.to_string()])
        .args(["--backend", if b.aws { "aws" } else { "local" }])
        .arg("--work-dir")
        .arg(&child_root)
        .output()
        .await
        .map_err(err)?;
    if !out.status.success() {
        return Err(format!("logs child failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut v: Value = serde_json::from_slice(&out.stdout).map_err(err)?;
    v["method"] = json!(format!(
        "A child process (kiln-bench --workload logs-child) runs the whole system on the {} backend: \
         fan-in, dispatch, the runner and log ingest in one process, and one step `yes LINE | head -c \
         {}` (88-byte lines). mb_per_s: MiB stored / seconds from submit to the build's end. \
         runner_peak_rss_mib: the child's VmHWM when the build ended (runner + ingest + store together; \
         the step's own processes are not in it), before the stored stream is read back and compared \
         by SHA-256 with a regenerated copy.",
        if b.aws { "aws" } else { "local" },
        p.logs_mb * 1024 * 1024
    ));
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// 5. Cost per build

struct Factory(Arc<CountingSinks>);

impl SinkFactory for Factory {
    fn sinks(&self, _job: &Job) -> (Arc<dyn LogSink>, Arc<dyn EventSink>) {
        (self.0.clone(), self.0.clone())
    }
}

pub async fn cost(b: &Backend, p: &Params) -> Res<Value> {
    let inner = b.ports("cost").await?;
    let c = Arc::new(Counter::default());
    let q = |q: &Arc<dyn Queue>, name, fifo| -> Arc<dyn Queue> {
        Arc::new(CountingQueue { inner: q.clone(), c: c.clone(), name, fifo })
    };
    let ports = Ports {
        state: Arc::new(CountingState { inner: inner.state.clone(), c: c.clone() }),
        logs: Arc::new(CountingLogs::new(inner.logs.clone(), c.clone())),
        events: q(&inner.events, "events", true),
        dispatch: q(&inner.dispatch, "dispatch", false),
        jobs: q(&inner.jobs, "jobs", false),
    };
    let sinks = Arc::new(CountingSinks {
        logs: Arc::new(Ingest { logs: ports.logs.clone(), state: ports.state.clone() }),
        events: Arc::new(QueueEventSink(ports.events.clone())),
        c: c.clone(),
    });
    let rate = p.ref_lines as f64 / p.ref_secs as f64;
    let cmd = emit_command(rate, p.ref_lines, 60)?;
    let mut yaml = String::from("version: \"1\"\nstages:\n");
    for s in 0..p.ref_stages {
        yaml.push_str(&format!("  stage{s}:\n    steps:\n"));
        for k in 0..p.ref_steps {
            yaml.push_str(&format!("      - name: step{k}\n        commands:\n          - {cmd}\n"));
        }
    }
    let system = System::start_with(ports.clone(), b.config("cost"), Arc::new(Factory(sinks)));
    let t = Instant::now();
    let build = system.submit(Repo::new("bench", "cost"), yaml.as_bytes()).await.map_err(err)?;
    // Waiting reads the uncounted store: a client's polling is not part of the build.
    let ended =
        wait_build(inner.state.as_ref(), &build.id, Duration::from_secs(p.ref_secs * 3 * 4 + 120)).await?;
    let wall = t.elapsed().as_secs_f64();
    // Let the last events (build finished) drain through the fan-in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.stop().await;
    ensure_succeeded(&ended)?;
    let runner_secs: f64 = ended
        .stages
        .iter()
        .filter_map(|s| Some(s.finished_ms?.saturating_sub(s.started_ms?) as f64 / 1000.0))
        .sum();
    let mut v = crate::cost::price(&c.snapshot(), runner_secs, 1024.0);
    v["reference_build"] = json!({
        "stages": p.ref_stages, "steps_per_stage": p.ref_steps, "lines_per_step": p.ref_lines,
        "seconds_per_step": p.ref_secs, "line_bytes": 60, "wall_s": wall,
        "scaled": false,
    });
    v["method"] = json!(
        "The reference build runs for real on this backend with counting decorators around the \
         StateStore, LogStore and the three queues, and around the runner's sinks (log ingest, events). \
         Each port call is mapped to the requests the AWS adapters in shared/store-aws make for it: \
         commit = Query + GetItem + one TransactWriteItems (applied id, build item, each changed stage \
         item, each history event; 2 WRU per KB per item); get_build = one consistent Query (1 RRU per \
         4 KB of build + stages); claim_job = Query + TransactWriteItems(ConditionCheck + stage); \
         mark_dispatched = UpdateItem; put_chunk = ListObjectsV2 + PutObject; read = List + a GET per \
         chunk; complete = 2 List + a GET per chunk + 2 PUT (+ multipart parts >= 8 MiB) + \
         DeleteObjects (free); list = 1 List; each queue send/receive (non-empty)/delete/visibility \
         change = 1 SQS request. The runner's ingest calls (batches, completes, heartbeats) and event \
         emits are one HTTP API request and one Lambda invocation each (runners talk HTTP on AWS). \
         fan-in and dispatch: one invocation per message (no batching assumed: an upper bound). Lambda \
         durations are assumptions (listed), not measurements. Nothing is scaled: the steps print for \
         the full duration."
    );
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// 6. Compile time

pub fn compile(p: &Params) -> Res<Value> {
    let mut y = String::from("version: \"1\"\nstages:\n");
    for s in 0..p.compile_stages {
        y.push_str(&format!("  stage{s:04}:\n"));
        if s % 10 != 0 {
            y.push_str(&format!("    needs: [stage{:04}]\n", s - 1));
        } else if s >= 10 {
            y.push_str(&format!("    needs: [stage{:04}, stage{:04}]\n", s - 1, s - 10));
        }
        y.push_str(&format!(
            "    env: {{ N: \"{s}\" }}\n    steps:\n      - name: build\n        commands: [\"make -j2 target-{s}\"]\n      \
             - name: test\n        commands: [\"make test-{s}\"]\n"
        ));
    }
    let mut times = Vec::new();
    let mut stages = 0;
    for _ in 0..p.compile_runs {
        let t = Instant::now();
        let plan =
            kiln_domain::compile::compile(y.as_bytes()).map_err(|e| format!("compile: {:?}", e.first()))?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        stages = plan.stages.len();
    }
    Ok(json!({
        "ms_1000_stages": (quantile(&times, 0.5) * 100.0).round() / 100.0,
        "stages": stages,
        "yaml_bytes": y.len(),
        "runs_ms": times,
        "method": "kiln_domain::compile::compile on a generated pipeline (each stage: 2 steps, env, needs \
                   on the previous stage, every 10th also on the stage 10 back); median of the runs.",
    }))
}
