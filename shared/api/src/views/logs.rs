//! A build's log list as the API shows it.

use kiln_domain::logs::LogStream;
use kiln_domain::state::Build;
use kiln_store::LogInfo;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a log stream is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    Init,
    Step,
    Service,
}

/// One entry of a build's log list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogEntry {
    /// `init` or `stage/step`.
    pub name: String,
    /// The stream key, e.g. `step/0001/build/compile/1`.
    pub key: String,
    pub kind: LogKind,
    pub stage: Option<String>,
    /// The step's or service's name.
    pub step: Option<String>,
    pub number: Option<u32>,
    pub attempt: Option<u32>,
    /// Bytes stored so far.
    pub len: u64,
    pub complete: bool,
    /// Where to read it: `/v1/builds/ID/logs/...`.
    pub url: String,
}

impl LogEntry {
    pub fn new(build: &Build, info: &LogInfo) -> Self {
        let (kind, stage, step, number, attempt) = match &info.stream {
            LogStream::Init => (LogKind::Init, None, None, None, None),
            LogStream::Step { stage, step, number, attempt } => {
                (LogKind::Step, Some(stage), Some(step), Some(*number), Some(*attempt))
            }
            LogStream::Service { stage, service, number, attempt } => {
                (LogKind::Service, Some(stage), Some(service), Some(*number), Some(*attempt))
            }
        };
        let url = match (stage, step, attempt) {
            (Some(stage), Some(step), Some(attempt)) => {
                format!("/v1/builds/{}/logs/{}/{}?attempt={attempt}", build.id, encode(stage.as_str()), step)
            }
            _ => format!("/v1/builds/{}/logs/init", build.id),
        };
        LogEntry {
            name: info.stream.display_name(),
            key: info.stream.key(),
            kind,
            stage: stage.map(|s| s.to_string()),
            step: step.map(|s| s.to_string()),
            number,
            attempt,
            len: info.len,
            complete: info.complete,
            url,
        }
    }
}

/// A build's logs in the stable order: init, steps by number, services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogList {
    pub logs: Vec<LogEntry>,
}

/// Percent-encodes the one character of names that is special in URLs: `#`.
pub fn encode(segment: &str) -> String {
    segment.replace('#', "%23")
}
