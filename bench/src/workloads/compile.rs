//! 6. Compile time of a 1,000-stage pipeline.

use super::{Params, Res};
use crate::stats::quantile;
use serde_json::{Value, json};
use std::time::Instant;

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
