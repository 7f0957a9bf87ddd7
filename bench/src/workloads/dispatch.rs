//! 2. Dispatch latency: submit to the first command of a step.

use super::{Backend, Params, Res, ensure_succeeded, epoch, err, read_stream, step_streams, wait_build};
use crate::stats::{quantile, summary};
use kiln_core::system::System;
use kiln_domain::Repo;
use serde_json::{Value, json};
use std::time::Duration;

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
