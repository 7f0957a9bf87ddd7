//! Workload 7, stopping and parallelism: a cancel until the step's process is gone, how far
//! a step runs past its timeout, and two stages side by side. The end-to-end tests check that
//! these happen (with bounds that only catch a hang); how fast they happen is measured here.

use super::{Backend, Params, Res, ensure_succeeded, err, wait_build};
use crate::stats::{quantile, summary};
use kiln_core::system::System;
use kiln_domain::state::Build;
use kiln_domain::{Repo, Status};
use kiln_store::StateStore;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest wait for anything here: only a hang takes this long.
const HANG: Duration = Duration::from_secs(60);

/// Whether a process is gone (no such pid, or a zombie waiting for its reaper).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// The pid a step wrote to `file`, once it has.
async fn wait_pid(file: &Path) -> Res<u32> {
    let deadline = Instant::now() + HANG;
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(pid) = text.trim().parse()
        {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err(format!("stop: the step never wrote {}", file.display()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Milliseconds from `System::cancel` until the build is canceled and its step's process gone.
async fn cancel_once(system: &System, state: &dyn StateStore, dir: &Path, i: usize) -> Res<f64> {
    let pidfile = dir.join(format!("pid-{i}"));
    let yaml = format!(
        "version: \"1\"\nsteps:\n  - name: nap\n    commands: [\"echo $$ > {}; exec sleep 600\"]\n",
        pidfile.display()
    );
    let build = system.submit(Repo::new("bench", "stop"), yaml.as_bytes()).await.map_err(err)?;
    let pid = wait_pid(&pidfile).await?;
    let t = Instant::now();
    system.cancel(&build.id, "bench").await.map_err(err)?;
    loop {
        let canceled =
            state.get_build(&build.id).await.map_err(err)?.is_some_and(|b| b.status == Status::Canceled);
        if canceled && process_gone(pid) {
            break;
        }
        if t.elapsed() > HANG {
            return Err(format!(
                "stop: build {} not canceled with its process gone after {HANG:?}",
                build.id
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    wait_build(state, &build.id, HANG).await?;
    Ok(ms)
}

async fn run(system: &System, state: &dyn StateStore, yaml: &str) -> Res<Build> {
    let build = system.submit(Repo::new("bench", "stop"), yaml.as_bytes()).await.map_err(err)?;
    wait_build(state, &build.id, HANG).await
}

pub async fn stop(b: &Backend, p: &Params) -> Res<Value> {
    let ports = b.ports("stop").await?;
    let dir = b.root.join("stop").join("pids");
    std::fs::create_dir_all(&dir).map_err(err)?;
    let system = System::start(ports.clone(), b.config("stop"));
    let state = ports.state.as_ref();
    let (mut cancel_ms, mut overrun_ms, mut parallel_ms) = (Vec::new(), Vec::new(), Vec::new());
    let timeout_yaml =
        "version: \"1\"\nsteps:\n  - name: hang\n    timeout: 1s\n    commands: [\"sleep 600\"]\n";
    let parallel_yaml = "version: \"1\"\nstages:\n  left:\n    steps: [{ name: nap, commands: [\"sleep 1\"] }]\n  \
                         right:\n    steps: [{ name: nap, commands: [\"sleep 1\"] }]\n";
    for i in 0..p.stop_runs {
        cancel_ms.push(cancel_once(&system, state, &dir, i).await?);

        let ended = run(&system, state, timeout_yaml).await?;
        let step = ended.stages.first().and_then(|s| s.steps.first()).ok_or("stop: no step")?;
        if step.reason.as_deref() != Some("timeout") {
            return Err(format!("stop: the step did not time out: {:?} {:?}", step.status, step.reason));
        }
        let ran = step.finished_ms.zip(step.started_ms).map(|(f, s)| f.saturating_sub(s));
        overrun_ms.push(ran.ok_or("stop: the step has no start or end")? as f64 - 1000.0);

        let ended = run(&system, state, parallel_yaml).await?;
        ensure_succeeded(&ended)?;
        let wall = ended.finished_ms.zip(ended.started_ms).map(|(f, s)| f.saturating_sub(s));
        parallel_ms.push(wall.ok_or("stop: the build has no start or end")? as f64);
    }
    system.stop().await;
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    Ok(json!({
        "cancel_p50_ms": r1(quantile(&cancel_ms, 0.5)),
        "cancel_max_ms": r1(cancel_ms.iter().copied().fold(0.0, f64::max)),
        "step_timeout_overrun_p50_ms": r1(quantile(&overrun_ms, 0.5)),
        "parallel_two_1s_stages_wall_p50_ms": r1(quantile(&parallel_ms, 0.5)),
        "runs": p.stop_runs,
        "cancel_ms": summary(&cancel_ms, 1.0),
        "step_timeout_overrun_ms": summary(&overrun_ms, 1.0),
        "parallel_two_1s_stages_wall_ms": summary(&parallel_ms, 1.0),
        "method": "One after another, each run: (1) a build whose step writes its pid and execs `sleep 600`; \
                   once the pid is written, System::cancel; cancel = until the build reads canceled and the \
                   step's process is gone (no /proc entry, or a zombie), polled every 2 ms. (2) a step with \
                   `timeout: 1s` running `sleep 600`: overrun = its finished - started - 1000 ms. (3) two \
                   independent stages of `sleep 1` each: the build's finished - started (1000 ms if fully \
                   side by side, 2000 if one after the other).",
    }))
}
