//! `kiln-bench`: runs Kiln's benchmark workloads in-process on the local backend (or on
//! AWS/LocalStack with `--features aws`) and writes one JSON report.
//!
//! ```text
//! cargo run --release -p kiln-bench -- --backend local --out bench/results/local-latest.json
//! ```

mod cost;
mod counting;
mod stats;
mod workloads;

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use workloads::{Backend, Params};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    Local,
    Aws,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Internal: print timestamped lines (a step of the log workloads).
    Emit,
    /// Internal: the log throughput/memory workload, in its own process.
    LogsChild,
}

#[derive(Parser, Debug)]
#[command(name = "kiln-bench", about = "Kiln benchmarks: one JSON report")]
struct Args {
    #[arg(long, value_enum, default_value = "local")]
    backend: BackendKind,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench/results/latest.json")]
    out: PathBuf,
    /// Smaller workloads (about a minute on the local backend).
    #[arg(long)]
    quick: bool,
    /// Run only these workloads (comma-separated: latency,dispatch,fanin,logs,cost,compile,stop).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seconds of the 1 line/s and 100 lines/s log-latency steps.
    #[arg(long)]
    latency_secs: Option<u64>,
    /// Size of the log-latency burst, MB.
    #[arg(long)]
    burst_mb: Option<u64>,
    /// Builds measured by the dispatch workload.
    #[arg(long)]
    dispatch_builds: Option<usize>,
    /// Builds driven through the fan-in (and as many through raw commits).
    #[arg(long)]
    fanin_builds: Option<usize>,
    /// MiB printed by the log throughput step.
    #[arg(long)]
    logs_mb: Option<u64>,
    /// Seconds each reference-build step prints its 1,000 lines over.
    #[arg(long)]
    ref_secs: Option<u64>,
    /// Scratch directory (default: a temporary one, removed at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    #[arg(long, value_enum, hide = true)]
    workload: Option<Workload>,
    #[arg(long, hide = true, default_value_t = 1.0)]
    rate: f64,
    #[arg(long, hide = true, default_value_t = 10)]
    count: u64,
    #[arg(long, hide = true, default_value_t = 48)]
    line_bytes: usize,
}

/// Prints `count` lines starting with the wall-clock time, at `rate` lines/s (0: as fast
/// as the pipe takes them), each `line_bytes` long with its newline.
fn emit(rate: f64, count: u64, line_bytes: usize) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let start = Instant::now();
    for i in 0..count {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let mut line = format!("T {:.6} {i} ", workloads::epoch());
        while line.len() + 1 < line_bytes {
            line.push('x');
        }
        line.push('\n');
        if out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_err() {
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

fn params(a: &Args) -> Params {
    let q = a.quick;
    Params {
        latency_secs: a.latency_secs.unwrap_or(if q { 15 } else { 40 }),
        burst_mb: a.burst_mb.unwrap_or(10),
        poll_ms: 25,
        write_samples: if q { 100 } else { 200 },
        dispatch_builds: a.dispatch_builds.unwrap_or(if q { 30 } else { 100 }),
        fanin_builds: a.fanin_builds.unwrap_or(if q { 10 } else { 40 }),
        fanin_stages: 5,
        fanin_steps: 4,
        logs_mb: a.logs_mb.unwrap_or(200),
        ref_stages: 10,
        ref_steps: 3,
        ref_lines: 1000,
        ref_secs: a.ref_secs.unwrap_or(10),
        compile_stages: 1000,
        compile_runs: if q { 3 } else { 7 },
        stop_runs: if q { 3 } else { 10 },
    }
}

fn sh(cmd: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cmd).args(args).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn metadata(a: &Args, p: &Params) -> Value {
    let dirty = sh("git", &["status", "--porcelain"]).map(|s| !s.is_empty());
    json!({
        "git_commit": sh("git", &["rev-parse", "HEAD"]),
        "git_dirty": dirty,
        "date": sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "machine": sh("uname", &["-srm"]),
        "backend": if a.backend == BackendKind::Aws { "aws" } else { "local" },
        "aws_endpoint": std::env::var("AWS_ENDPOINT_URL").ok().filter(|_| a.backend == BackendKind::Aws),
        "quick": a.quick,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "parameters": p.to_json(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    })
}

fn get(r: &Value, path: &str) -> f64 {
    path.split('.').fold(r, |v, k| &v[k]).as_f64().unwrap_or(f64::NAN)
}

fn table(r: &Value) -> String {
    let rows = [
        ("log latency p50 (s)", "log_latency.p50_s", "-"),
        ("log latency p99 (s)", "log_latency.p99_s", "<= 1.3"),
        ("  floor p99, 1 s batch (s)", "log_latency.floor_p99_s", "-"),
        ("  1000-byte buffer p99 (s)", "log_latency.byte_buffer_p99_s", "-"),
        ("dispatch p50 (ms)", "dispatch.p50_ms", "< 50"),
        ("dispatch p99 (ms)", "dispatch.p99_ms", "-"),
        ("fan-in events/s", "fanin.events_per_s", "-"),
        ("raw conditional writes/s", "fanin.raw_writes_per_s", "-"),
        ("fan-in / raw", "fanin.ratio", ">= 0.5"),
        ("fan-in events/s, 10 stages", "fanin.events_per_s_10_stages", "-"),
        ("fan-in events/s, 1000 stages", "fanin.events_per_s_1000_stages", "-"),
        ("  scale ratio (1000 / 10)", "fanin.scale_ratio", ">= 0.8"),
        ("largest DynamoDB item (bytes)", "fanin.largest_item_bytes", "<= 65536"),
        ("logs MiB/s stored", "logs.mb_per_s", "-"),
        ("runner peak RSS (MiB)", "logs.runner_peak_rss_mib", "< 64"),
        ("reference build (USD)", "cost.reference_build_usd", "< 0.001"),
        ("  floor, log batch PUTs (USD)", "cost.floor_usd", "-"),
        ("  ratio to floor", "cost.ratio_to_floor", "<= 1.6"),
        ("  ratio, S3 Express One Zone", "cost.s3_express_one_zone.ratio_to_floor", "-"),
        ("compile 1000 stages (ms)", "compile.ms_1000_stages", "-"),
        ("cancel, process gone p50 (ms)", "stop.cancel_p50_ms", "< 2000"),
        ("step timeout overrun p50 (ms)", "stop.step_timeout_overrun_p50_ms", "-"),
        ("two parallel 1 s stages (ms)", "stop.parallel_two_1s_stages_wall_p50_ms", "< 2000"),
    ];
    let mut s = format!("{:<30} {:>14}  {}\n", "figure", "value", "target");
    for (label, path, target) in rows {
        let v = get(r, path);
        let shown = if v.is_nan() {
            "-".to_string()
        } else if v.abs() < 0.01 {
            format!("{v:.6}")
        } else {
            format!("{v:.3}")
        };
        s.push_str(&format!("{label:<30} {shown:>14}  {target}\n"));
    }
    s
}

async fn run(a: &Args) -> Result<Value, String> {
    let p = params(a);
    let tmp;
    let root = match &a.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
            tmp.path().to_path_buf()
        }
    };
    let backend = Backend { aws: a.backend == BackendKind::Aws, root };
    if a.workload == Some(Workload::LogsChild) {
        return workloads::logs_child(&backend, p.logs_mb).await;
    }
    let wants = |w: &str| a.only.is_empty() || a.only.iter().any(|o| o == w);
    let mut report = json!({ "metadata": metadata(a, &p) });
    let started = Instant::now();
    let mut timings = serde_json::Map::new();
    for name in ["compile", "fanin", "dispatch", "latency", "logs", "cost", "stop"] {
        if !wants(name) {
            continue;
        }
        eprintln!("kiln-bench: {name}...");
        let t = Instant::now();
        let section = match name {
            "compile" => workloads::compile(&p),
            "fanin" => workloads::fanin(&backend, &p).await,
            "dispatch" => workloads::dispatch(&backend, &p).await,
            "latency" => workloads::log_latency(&backend, &p).await,
            "logs" => workloads::logs(&backend, &p).await,
            "stop" => workloads::stop(&backend, &p).await,
            _ => workloads::cost(&backend, &p).await,
        };
        // A workload that fails is reported as such; the others still run.
        let section = section.unwrap_or_else(|e| {
            eprintln!("kiln-bench: {name} failed: {e}");
            json!({ "error": e })
        });
        timings.insert(name.to_string(), json!((t.elapsed().as_secs_f64() * 10.0).round() / 10.0));
        let key = if name == "latency" { "log_latency" } else { name };
        report[key] = section;
    }
    timings.insert("total".into(), json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0));
    report["metadata"]["workload_seconds"] = Value::Object(timings);
    Ok(report)
}

fn main() -> ExitCode {
    let a = Args::parse();
    if a.workload == Some(Workload::Emit) {
        return emit(a.rate, a.count, a.line_bytes);
    }
    if a.backend == BackendKind::Aws && !cfg!(feature = "aws") {
        eprintln!(
            "kiln-bench: --backend aws is not available in this build: run it with \
             `cargo run --release -p kiln-bench --features aws -- --backend aws ...` \
             (and the LocalStack env: `source localstack/.state/env`)"
        );
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiln-bench: {e}");
            return ExitCode::from(1);
        }
    };
    let report = match rt.block_on(run(&a)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kiln-bench: {e}");
            return ExitCode::from(1);
        }
    };
    if a.workload == Some(Workload::LogsChild) {
        println!("{report}");
        return ExitCode::SUCCESS;
    }
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&a.out, text + "\n") {
        eprintln!("kiln-bench: cannot write {}: {e}", a.out.display());
        return ExitCode::from(1);
    }
    print!("{}", table(&report));
    println!("report: {}", a.out.display());
    ExitCode::SUCCESS
}
