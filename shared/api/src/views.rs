//! How builds and logs look as JSON, for the API and the CLI alike.

use kiln_domain::logs::LogStream;
use kiln_domain::state::Build;
use kiln_store::{BuildSummary, LogInfo};
use serde_json::{Value, json};

fn span(start: Option<u64>, end: Option<u64>) -> Option<u64> {
    Some(end?.saturating_sub(start?))
}

/// A build with its stages and steps.
pub fn build_json(b: &Build) -> Value {
    json!({
        "id": b.id,
        "repo": b.repo.to_string(),
        "status": b.status,
        "reason": b.reason,
        "created_ms": b.created_ms,
        "started_ms": b.started_ms,
        "finished_ms": b.finished_ms,
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

pub fn summary_json(b: &BuildSummary) -> Value {
    json!({
        "id": b.id,
        "repo": b.repo.to_string(),
        "status": b.status,
        "created_ms": b.created_ms,
        "finished_ms": b.finished_ms,
    })
}

/// One entry of a build's log list.
pub fn log_json(build: &Build, info: &LogInfo) -> Value {
    let (kind, stage, step, number, attempt) = match &info.stream {
        LogStream::Init => ("init", None, None, None, None),
        LogStream::Step { stage, step, number, attempt } => {
            ("step", Some(stage), Some(step), Some(number), Some(attempt))
        }
        LogStream::Service { stage, service, number, attempt } => {
            ("service", Some(stage), Some(service), Some(number), Some(attempt))
        }
    };
    let path = match (stage, step, attempt) {
        (Some(stage), Some(step), Some(attempt)) => {
            format!("/v1/builds/{}/logs/{}/{}?attempt={attempt}", build.id, encode(stage.as_str()), step)
        }
        _ => format!("/v1/builds/{}/logs/init", build.id),
    };
    json!({
        "name": info.stream.display_name(),
        "key": info.stream.key(),
        "kind": kind,
        "stage": stage,
        "step": step,
        "number": number,
        "attempt": attempt,
        "len": info.len,
        "complete": info.complete,
        "url": path,
    })
}

/// Percent-encodes the one character of names that is special in URLs: `#`.
pub fn encode(segment: &str) -> String {
    segment.replace('#', "%23")
}
