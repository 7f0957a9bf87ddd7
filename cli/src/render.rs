//! How builds look on a terminal (the summary table) and to scripts (JSON).

use kiln_domain::Status;
use kiln_domain::state::Build;
use serde_json::{Value, json};

pub fn secs(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

fn span(start: Option<u64>, end: Option<u64>) -> Option<u64> {
    Some(end?.saturating_sub(start?))
}

/// The finished build as one JSON document.
pub fn build_json(b: &Build) -> Value {
    json!({
        "id": b.id,
        "repo": b.repo.to_string(),
        "status": b.status,
        "reason": b.reason,
        "created_ms": b.created_ms,
        "duration_ms": span(b.started_ms, b.finished_ms),
        "stages": b.stages.iter().map(|s| json!({
            "name": s.name,
            "status": s.status,
            "attempt": s.attempt,
            "reason": s.reason,
            "duration_ms": span(s.started_ms, s.finished_ms),
            "steps": s.steps.iter().map(|t| json!({
                "name": t.name,
                "number": t.number,
                "status": t.status,
                "exit_code": t.exit_code,
                "duration_ms": t.duration_ms,
                "reason": t.reason,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "images": b.plan.images.iter().map(|i| json!({
            "name": i.name,
            "providers": i.providers,
        })).collect::<Vec<_>>(),
    })
}

/// The summary table printed after a run and by `kiln status`.
pub fn summary(b: &Build) -> String {
    let mut rows: Vec<[String; 5]> = vec![["STAGE", "STEP", "STATUS", "EXIT", "DURATION"].map(String::from)];
    for s in &b.stages {
        let stage_time = span(s.started_ms, s.finished_ms).map(secs).unwrap_or_else(|| "-".into());
        rows.push([s.name.to_string(), String::new(), s.status.to_string(), String::new(), stage_time]);
        for t in &s.steps {
            rows.push([
                String::new(),
                t.name.to_string(),
                t.status.to_string(),
                t.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                t.duration_ms.map(secs).unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    let widths: Vec<usize> = (0..5).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    let took = span(b.started_ms, b.finished_ms).map(|ms| format!(" in {}", secs(ms))).unwrap_or_default();
    out.push_str(&format!("build {} {}{}\n", b.id, b.status, took));
    if let Some(r) = b.reason.as_ref().filter(|_| b.status != Status::Succeeded) {
        out.push_str(&format!("reason: {r}\n"));
    }
    for r in &rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str("  ");
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for s in b.stages.iter().filter(|s| s.reason.is_some() && s.status != Status::Succeeded) {
        out.push_str(&format!("  {}: {}\n", s.name, s.reason.as_deref().unwrap_or_default()));
    }
    if !b.plan.images.is_empty() {
        out.push_str("images:\n");
        for i in &b.plan.images {
            out.push_str(&format!("  {} [{}]\n", i.name, i.providers.join(", ")));
        }
    }
    out
}

/// `kiln run`'s exit code for a finished build.
pub fn exit_code(b: &Build) -> u8 {
    if b.status == Status::Succeeded { 0 } else { 1 }
}
