//! 1. Log latency: how soon a printed line is readable, against the floor of the runner's flush rule.

use super::{Backend, Params, Res, emit_command, ensure_succeeded, epoch, err, wait_build};
use crate::stats::{FlushRule, Rng, quantile, replay, summary};
use kiln_core::system::System;
use kiln_domain::logs::LogStream;
use kiln_domain::{BuildId, Repo, StageName, StepName};
use kiln_store::LogStore;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
