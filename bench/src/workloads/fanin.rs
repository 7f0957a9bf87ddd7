//! 3. Fan-in throughput: reports handled per second against raw conditional writes.

use super::{Backend, Params, Res, err};
use crate::counting::TimedState;
use kiln_core::fanin::handle_event;
use kiln_domain::event::{CloudEvent, now_ms};
use kiln_domain::state::{Build, Patch, Target, Transition};
use kiln_domain::{BuildId, Repo, Status};
use kiln_store::{Commit, Queue, StateStore};
use kiln_store_local::LocalQueue;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let mut out = vec![super::fanin_scale::created(b)];
    out.extend(super::fanin_scale::stage_reports(b, 0..b.stages.len()));
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
    let cache = kiln_core::fanin::BuildCache::new();
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
                handle_event(state, &cache, scratch.as_ref(), scratch.as_ref(), None, e)
                    .await
                    .map_err(|e| format!("fan-in: {e:?}"))?;
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
    timed.take();
    let scale =
        super::fanin_scale::scale(state, scratch.as_ref(), !b.aws, || b.largest_item(), || timed.take())
            .await?;
    let mut out = json!({
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
    });
    if let (Some(out), Value::Object(scale)) = (out.as_object_mut(), scale) {
        out.extend(scale);
    }
    Ok(out)
}
