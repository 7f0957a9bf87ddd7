//! Fan-in at scale: events handled per second in builds of 10 stages and of 1,000 stages
//! (in layers of `needs`), measured in the same run; their ratio is `fanin.scale_ratio`.
//! A fan-in whose cost per event grew with the build would show it here.

use super::{Res, err};
use kiln_core::fanin::{BuildCache, handle_event};
use kiln_domain::event::{CloudEvent, now_ms};
use kiln_domain::report::{
    BuildCreated, Report, StageFinished, StageOutcome, StageStarted, StepFinished, StepStarted,
};
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Repo, Status};
use kiln_store::{Queue, StateStore};
use serde_json::{Value, json};
use std::time::Instant;

/// Stages per layer: each stage of a layer needs every stage of the layer before.
const LAYER: usize = 10;
/// Stages whose events are timed in each round, in either shape: the small builds' all,
/// the large build's first layers (every event there works on the whole large build).
const TIMED_STAGES: usize = 100;
/// Alternating rounds of each shape.
const ROUNDS: usize = 4;

/// A pipeline of `stages` stages (one step each) in layers of [`LAYER`].
pub fn layered_yaml(stages: usize) -> String {
    let mut y = String::from("version: \"1\"\nstages:\n");
    for s in 0..stages {
        let (layer, i) = (s / LAYER, s % LAYER);
        y.push_str(&format!("  l{layer}s{i}:\n"));
        if layer > 0 {
            let needs: Vec<String> = (0..LAYER).map(|j| format!("l{}s{j}", layer - 1)).collect();
            y.push_str(&format!("    needs: [{}]\n", needs.join(", ")));
        }
        y.push_str("    steps:\n      - name: k\n        commands: [\"true\"]\n");
    }
    y
}

/// The reports a runner sends for `stages` of build `b` (which succeed), in order.
pub(super) fn stage_reports(b: &Build, stages: std::ops::Range<usize>) -> Vec<CloudEvent> {
    let ev = |r: Report| r.to_event(&b.id, "kiln://bench");
    let mut out = Vec::new();
    for st in &b.stages[stages] {
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

/// The report that starts `b`.
pub(super) fn created(b: &Build) -> CloudEvent {
    Report::from(BuildCreated { repo: b.repo.to_string(), stages: b.stages.len() })
        .to_event(&b.id, "kiln://bench")
}

struct Shape {
    stages: usize,
    plan: kiln_domain::plan::Plan,
}

impl Shape {
    fn new(stages: usize) -> Res<Self> {
        let plan = kiln_domain::compile::compile(layered_yaml(stages).as_bytes())
            .map_err(|e| format!("layered pipeline: {e:?}"))?;
        Ok(Self { stages, plan })
    }

    fn build(&self) -> Build {
        Build::new(BuildId::generate(), Repo::new("bench", "scale"), self.plan.clone(), now_ms())
    }
}

/// Runs the timed part of one round for `shape`: builds created (not timed), then the
/// events of [`TIMED_STAGES`] stages handled (timed). Returns (events, seconds, builds).
async fn round(
    state: &dyn StateStore,
    cache: &BuildCache,
    scratch: &dyn Queue,
    shape: &Shape,
) -> Res<(usize, f64, Vec<Build>)> {
    let per_build = shape.stages.min(TIMED_STAGES);
    let builds: Vec<Build> = (0..TIMED_STAGES / per_build).map(|_| shape.build()).collect();
    for b in &builds {
        state.create_build(b).await.map_err(err)?;
    }
    let mut evs = Vec::new();
    for b in &builds {
        evs.push(created(b));
        evs.extend(stage_reports(b, 0..per_build));
    }
    let t = Instant::now();
    for e in &evs {
        handle_event(state, cache, scratch, scratch, None, e).await.map_err(|e| format!("fan-in: {e:?}"))?;
    }
    Ok((evs.len(), t.elapsed().as_secs_f64(), builds))
}

/// The figures, with `largest_item` (bytes) when the backend measures it.
pub async fn scale(
    state: &dyn StateStore,
    scratch: &dyn Queue,
    finish_large: bool,
    largest_item: impl Fn() -> Option<usize>,
    store_calls: impl Fn() -> std::collections::BTreeMap<&'static str, (u64, f64)>,
) -> Res<Value> {
    let secs =
        |m: &std::collections::BTreeMap<&'static str, (u64, f64)>| m.values().map(|(_, s)| s).sum::<f64>();
    let mut per_shape: [std::collections::BTreeMap<&'static str, (u64, f64)>; 2] = Default::default();
    let mut add = |i: usize, m: std::collections::BTreeMap<&'static str, (u64, f64)>| {
        for (k, (n, s)) in m {
            let e = per_shape[i].entry(k).or_insert((0, 0.0));
            e.0 += n;
            e.1 += s;
        }
    };
    let (small, large) = (Shape::new(10)?, Shape::new(1000)?);
    let cache = BuildCache::new();
    let (mut small_n, mut small_s, mut large_n, mut large_s) = (0usize, 0f64, 0usize, 0f64);
    let (mut small_store, mut large_store) = (0f64, 0f64);
    let mut round_ratios = Vec::new();
    let mut last_large = None;
    // Alternating rounds, so drift on a shared machine hits both shapes.
    for _ in 0..ROUNDS {
        store_calls();
        let (n, secs_small, _) = round(state, &cache, scratch, &small).await?;
        let m = store_calls();
        small_store += secs(&m);
        add(0, m);
        let (ln, lsecs, mut b) = round(state, &cache, scratch, &large).await?;
        let m = store_calls();
        large_store += secs(&m);
        add(1, m);
        let secs = secs_small;
        (small_n, small_s, large_n, large_s) = (small_n + n, small_s + secs, large_n + ln, large_s + lsecs);
        round_ratios.push(((ln as f64 / lsecs) / (n as f64 / secs) * 1000.0).round() / 1000.0);
        last_large = b.pop();
    }
    let small_eps = small_n as f64 / small_s.max(1e-9);
    let large_eps = large_n as f64 / large_s.max(1e-9);
    // The large build to its end (not timed): that it succeeds is part of the figure.
    let mut large_status = Value::Null;
    if let (true, Some(b)) = (finish_large, last_large) {
        for e in stage_reports(&b, TIMED_STAGES..b.stages.len()) {
            handle_event(state, &cache, scratch, scratch, None, &e)
                .await
                .map_err(|e| format!("fan-in: {e:?}"))?;
        }
        let end = state.get_build(&b.id).await.map_err(err)?.ok_or("the large build is gone")?;
        if end.status != Status::Succeeded {
            return Err(format!("the 1,000-stage build ended {}: {:?}", end.status, end.reason));
        }
        large_status = json!(end.status);
    }
    Ok(json!({
        "events_per_s_10_stages": small_eps.round(),
        "events_per_s_1000_stages": large_eps.round(),
        "scale_ratio": (large_eps / small_eps * 1000.0).round() / 1000.0,
        "scale_round_ratios": round_ratios,
        "scale_events_timed": { "10_stages": small_n, "1000_stages": large_n },
        "scale_store_calls": per_shape.iter().zip(["10_stages", "1000_stages"]).map(|(m, shape)| (shape.to_string(),
            m.iter().map(|(k, (n, s))| (k.to_string(), json!({"calls": n, "ms_per_call": s / (*n).max(1) as f64 * 1e3}))).collect::<serde_json::Map<_, _>>().into()
        )).collect::<serde_json::Map<_, _>>(),
        "scale_ms_per_event": {
            "10_stages": { "total": small_s / small_n as f64 * 1e3, "in_store": small_store / small_n as f64 * 1e3 },
            "1000_stages": { "total": large_s / large_n as f64 * 1e3, "in_store": large_store / large_n as f64 * 1e3 },
        },
        "scale_1000_stage_build_end": large_status,
        "largest_item_bytes": largest_item(),
        "scale_method": format!(
            "Pipelines of 10 and of 1,000 stages in layers of {LAYER} (each stage needs every stage of \
             the layer before; one step each). Each round creates builds (not timed) and times \
             kiln_core::fanin::handle_event on the reports of {TIMED_STAGES} stages: all of 10 builds of 10 \
             stages, or the first {TIMED_STAGES} of one build of 1,000 (every event there works on the whole \
             large build). {ROUNDS} alternating rounds; scale_ratio = events/s at 1,000 stages ÷ at 10."
        ),
    }))
}
