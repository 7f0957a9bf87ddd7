//! Load through `kiln dev`: many concurrent builds of 5 stages × 3 steps (a chain of
//! stages), all of which must succeed with every step's log byte-exact (compared with a
//! copy the step wrote with `tee`). Measures dispatch latency (a stage ready → its first
//! step running), events applied per second and `kiln dev`'s peak memory.
//!
//! The test command runs a small variant (`KILN_LOAD_BUILDS`, default 20);
//! `scripts/load.sh` runs 200 and writes the JSON report (`KILN_LOAD_REPORT`).

mod common;
use common::dev::{Dev, TOKEN};
use common::{HANG, Scratch};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STAGES: usize = 5;
const STEPS: usize = 3;
const LINES: usize = 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// The pipeline: stage s2 needs s1, and so on; each step prints when it started, some
/// lines, when it ended, and keeps a copy of all it printed in `out`.
fn pipeline(out: &Path) -> String {
    let mut y = String::from("version: \"1\"\nstages:\n");
    for s in 1..=STAGES {
        y.push_str(&format!("  s{s}:\n"));
        if s > 1 {
            y.push_str(&format!("    needs: [s{}]\n", s - 1));
        }
        y.push_str("    steps:\n");
        for t in 1..=STEPS {
            let file = out.join(format!("${{KILN_BUILD_ID}}-s{s}-t{t}"));
            y.push_str(&format!(
                "      - name: t{t}\n        commands:\n          - '{{ echo \"start $(date +%s%N)\"; \
                 i=0; while [ $i -lt {LINES} ]; do echo \"$KILN_BUILD_ID s{s} t{t} line $i: the quick brown fox\"; \
                 i=$((i+1)); done; printf \"end %s\" \"$(date +%s%N)\"; }} | tee {}'\n",
                file.display()
            ));
        }
    }
    y
}

fn peak_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The ns timestamp on the line that starts with `word ` (the first or the last line).
fn stamp(log: &[u8], word: &str) -> u128 {
    let text = String::from_utf8_lossy(log);
    text.lines()
        .find_map(|l| l.strip_prefix(word).and_then(|r| r.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {word} stamp in {text}"))
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let resp = http.get(url).bearer_auth(TOKEN).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_builds_all_succeed_with_byte_exact_logs() {
    let n = env_usize("KILN_LOAD_BUILDS", 20);
    let scratch = Scratch::new();
    let out = scratch.shared_dir();
    let dev = Dev::start(scratch);
    let yaml = Arc::new(pipeline(&out));
    let http = reqwest::Client::new();

    // Submit all at once.
    let started = Instant::now();
    let mut submits = Vec::new();
    for _ in 0..n {
        let (http, url, yaml) = (http.clone(), dev.url.clone(), yaml.clone());
        submits.push(tokio::spawn(async move {
            let at = now_ns();
            let resp = http
                .post(format!("{url}/v1/repos/acme/load/builds"))
                .bearer_auth(TOKEN)
                .body(yaml.as_bytes().to_vec())
                .send()
                .await
                .expect("submit");
            assert_eq!(resp.status().as_u16(), 201);
            let doc: Value = resp.json().await.expect("submit answer");
            (doc["id"].as_str().expect("an id").to_string(), at)
        }));
    }
    let mut ids = Vec::new();
    for s in submits {
        ids.push(s.await.expect("submit task"));
    }
    let submitted = started.elapsed();

    // Wait for every build to end (generous: the machine is shared).
    let deadline = HANG * (1 + (n as u32) / 10);
    let mut pending: Vec<usize> = (0..n).collect();
    let mut statuses = vec![String::new(); n];
    while !pending.is_empty() {
        assert!(started.elapsed() < deadline, "{} builds did not end in {deadline:?}", pending.len());
        let mut still = Vec::new();
        for i in pending {
            let (_, body) = get(&http, &format!("{}/v1/builds/{}", dev.url, ids[i].0)).await;
            let b: Value = serde_json::from_slice(&body).expect("a build");
            let st = b["status"].as_str().unwrap_or("").to_string();
            if matches!(st.as_str(), "pending" | "running") {
                still.push(i);
            }
            statuses[i] = st;
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let wall = started.elapsed();
    let peak = peak_mib(dev.pid());

    // Every build succeeded; every log is what its step printed; collect the timings.
    let failed: Vec<_> = ids.iter().zip(&statuses).filter(|(_, s)| *s != "succeeded").collect();
    assert!(failed.is_empty(), "builds that did not succeed: {failed:?}");
    let mut dispatch_ms = Vec::new();
    let mut events = 0usize;
    let mut log_bytes = 0usize;
    for (id, submitted_at) in &ids {
        let mut ready = *submitted_at;
        for s in 1..=STAGES {
            let mut stage_end = 0;
            for t in 1..=STEPS {
                let (status, stored) =
                    get(&http, &format!("{}/v1/builds/{id}/logs/s{s}/t{t}", dev.url)).await;
                assert_eq!(status, 200, "{id} s{s}/t{t}");
                let printed = std::fs::read(out.join(format!("{id}-s{s}-t{t}"))).expect("the step's copy");
                assert_eq!(
                    stored, printed,
                    "{id} s{s}/t{t}: the stored log differs from what the step printed"
                );
                log_bytes += stored.len();
                if t == 1 {
                    dispatch_ms.push((stamp(&stored, "start ").saturating_sub(ready)) as f64 / 1e6);
                }
                stage_end = stamp(&stored, "end ");
            }
            ready = stage_end;
        }
        let (_, body) = get(&http, &format!("{}/v1/builds/{id}/events", dev.url)).await;
        let doc: Value = serde_json::from_slice(&body).expect("events");
        events += doc["events"].as_array().or(doc.as_array()).map_or(0, Vec::len);
    }
    assert!(events >= n * STAGES * STEPS, "too few events recorded: {events}");
    dispatch_ms.sort_by(f64::total_cmp);
    let report = json!({
        "workload": "load",
        "backend": "local",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "builds": n,
        "stages_per_build": STAGES,
        "steps_per_stage": STEPS,
        "lines_per_step": LINES,
        "all_succeeded": true,
        "logs_byte_exact": true,
        "log_bytes_compared": log_bytes,
        "submit_s": submitted.as_secs_f64(),
        "wall_s": wall.as_secs_f64(),
        "builds_per_s": n as f64 / wall.as_secs_f64(),
        "dispatch_ms": {
            "what": "a stage ready (submit sent, or the previous stage's last step printed its last line) \
                     to its first step's first line; includes the fan-in, dispatch, the runner's claim, \
                     workspace and fork/exec, with up to 16 jobs running at once (runner_slots)",
            "samples": dispatch_ms.len(),
            "p50": percentile(&dispatch_ms, 50.0),
            "p90": percentile(&dispatch_ms, 90.0),
            "p99": percentile(&dispatch_ms, 99.0),
            "max": dispatch_ms.last().copied().unwrap_or(0.0),
        },
        "events_applied": events,
        "events_per_s": events as f64 / wall.as_secs_f64(),
        "kiln_dev_peak_rss_mib": peak,
        "machine_cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    if let Ok(path) = std::env::var("KILN_LOAD_REPORT") {
        let path = PathBuf::from(path);
        let path = if path.is_relative() { common::repo_root().join(path) } else { path };
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n")
            .expect("write the report");
    }
}
