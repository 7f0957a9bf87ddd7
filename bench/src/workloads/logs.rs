//! 4. Log throughput and memory (run in a child process: its VmHWM is the system's).

use super::{Backend, Params, Res, ensure_succeeded, err, read_stream, step_streams, wait_build};
use kiln_core::system::System;
use kiln_domain::Repo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

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
