//! The CloudEvents 1.0 envelope (JSON format) and the event types Kiln itself produces.
//!
//! Runners *report* what happened (`dev.kiln.report.*`); the fan-in turns reports into
//! transitions and records a lifecycle event (`dev.kiln.{build,stage,step}.<status>`) for
//! each one. Steps and external callers add events of their own types.

use crate::ids::BuildId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::SystemTime;

pub const SPEC_VERSION: &str = "1.0";
/// Event types that start with this are Kiln's own (reports and lifecycle events): steps
/// and outside callers may not send them.
pub const RESERVED_PREFIX: &str = "dev.kiln.";
/// The entities lifecycle events are about: `dev.kiln.<entity>.<status>`.
pub const LIFECYCLE_ENTITIES: [&str; 3] = ["build", "stage", "step"];
/// The CloudEvents extension attribute that carries the build id.
pub const BUILD_EXTENSION: &str = "kilnbuild";

/// Report types sent by runners, the compile function, the watchdog and the API (their data:
/// [`crate::report::Report`]). The strings are a wire contract.
pub mod types {
    pub const BUILD_CREATED: &str = "dev.kiln.report.build-created";
    pub const STAGE_STARTED: &str = "dev.kiln.report.stage-started";
    pub const STAGE_FINISHED: &str = "dev.kiln.report.stage-finished";
    pub const STEP_STARTED: &str = "dev.kiln.report.step-started";
    pub const STEP_FINISHED: &str = "dev.kiln.report.step-finished";
    pub const CANCEL_REQUESTED: &str = "dev.kiln.report.cancel-requested";
    /// A job that could not be run (poison message, dead-lettered, lease lost).
    pub const JOB_FAILED: &str = "dev.kiln.report.job-failed";
    pub const IMAGE_PROGRESS: &str = "dev.kiln.image.progress";
    pub const IMAGE_RESULT: &str = "dev.kiln.image.result";
    /// Every report type.
    pub const REPORTS: [&str; 9] = [
        BUILD_CREATED,
        STAGE_STARTED,
        STAGE_FINISHED,
        STEP_STARTED,
        STEP_FINISHED,
        CANCEL_REQUESTED,
        JOB_FAILED,
        IMAGE_PROGRESS,
        IMAGE_RESULT,
    ];
}

/// A CloudEvent in the JSON event format, with Kiln's build extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kilnbuild: Option<BuildId>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

impl CloudEvent {
    /// A new event with a fresh id and the current time.
    pub fn new(ty: impl Into<String>, source: impl Into<String>, build: &BuildId, data: Value) -> Self {
        Self {
            specversion: SPEC_VERSION.to_string(),
            id: uuid::Uuid::now_v7().to_string(),
            source: source.into(),
            ty: ty.into(),
            subject: None,
            time: Some(now_rfc3339()),
            datacontenttype: Some("application/json".to_string()),
            kilnbuild: Some(build.clone()),
            data,
        }
    }

    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// A string field of the data object, if present.
    pub fn data_str(&self, field: &str) -> Option<&str> {
        self.data.get(field).and_then(Value::as_str)
    }

    pub fn data_u64(&self, field: &str) -> Option<u64> {
        self.data.get(field).and_then(Value::as_u64)
    }

    pub fn data_i64(&self, field: &str) -> Option<i64> {
        self.data.get(field).and_then(Value::as_i64)
    }
}

/// An event as kept in a build's history: numbered in the order it was applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: CloudEvent,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
