//! Reports: what runners, the compile function, the watchdog and the API tell the fan-in,
//! as one typed enum. Each variant has its CloudEvent type (`event::types`, a wire
//! contract) and its data is the serde form of the variant's struct, so the side that
//! sends a report and `react`, which applies it, cannot disagree about a field.
//!
//! Also here: the data of the lifecycle events the fan-in records
//! (`dev.kiln.{build,stage,step}.<status>`), for the readers of the history.

use crate::event::{CloudEvent, LIFECYCLE_ENTITIES, RESERVED_PREFIX, types};
use crate::ids::{BuildId, StageName, StepName};
use crate::protocol::{ImageOutcome, Phase};
use crate::status::Status;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// One report, as the fan-in applies it.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    BuildCreated(BuildCreated),
    StageStarted(StageStarted),
    StageFinished(StageFinished),
    StepStarted(StepStarted),
    StepFinished(StepFinished),
    CancelRequested(CancelRequested),
    JobFailed(JobFailed),
    ImageProgress(ImageProgress),
    ImageResult(ImageResult),
}

/// The compile function stored a new build; the fan-in starts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildCreated {
    /// `org/repo`.
    pub repo: String,
    /// How many stages the plan has.
    pub stages: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStarted {
    pub stage: StageName,
    pub attempt: u32,
    /// The runner that holds the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
}

/// How a runner ended a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageOutcome {
    /// The steps ran until the end or the first failing step.
    Completed,
    Canceled,
    /// The stage's deadline (its `timeout_ms`, or the build's) passed.
    Timeout,
    /// The stage could not be set up (workspace); the report's `reason` says why.
    Failed,
}

impl StageOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StageOutcome::Completed => "completed",
            StageOutcome::Canceled => "canceled",
            StageOutcome::Timeout => "timeout",
            StageOutcome::Failed => "failed",
        }
    }
}

impl fmt::Display for StageOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageFinished {
    pub stage: StageName,
    pub attempt: u32,
    pub outcome: StageOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStarted {
    pub stage: StageName,
    pub step: StepName,
    /// The step's number in the build (its log stream's key).
    pub number: u32,
    pub attempt: u32,
}

/// Why the runner stopped a step, or how it died; none when it exited by itself.
/// On the wire a string (`timeout`, `canceled`, `signal 9`, `spawn failed: ...`), as
/// the lifecycle events show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StepReason {
    Timeout,
    Canceled,
    /// Killed by this signal.
    Signal(i32),
    /// The shell could not be started.
    SpawnFailed(String),
}

impl fmt::Display for StepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepReason::Timeout => f.write_str("timeout"),
            StepReason::Canceled => f.write_str("canceled"),
            StepReason::Signal(n) => write!(f, "signal {n}"),
            StepReason::SpawnFailed(why) => write!(f, "spawn failed: {why}"),
        }
    }
}

impl From<StepReason> for String {
    fn from(r: StepReason) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for StepReason {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "timeout" => return Ok(StepReason::Timeout),
            "canceled" => return Ok(StepReason::Canceled),
            _ => {}
        }
        if let Some(n) = s.strip_prefix("signal ") {
            return n.parse().map(StepReason::Signal).map_err(|_| format!("bad signal number in `{s}`"));
        }
        if let Some(why) = s.strip_prefix("spawn failed: ") {
            return Ok(StepReason::SpawnFailed(why.to_string()));
        }
        Err(format!("unknown step reason `{s}` (timeout, canceled, signal N, spawn failed: ...)"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFinished {
    pub stage: StageName,
    pub step: StepName,
    pub number: u32,
    pub attempt: u32,
    /// The exit code, or 128 + N when killed by signal N; never 0 for a step that was
    /// stopped for a timeout or a cancel.
    pub exit_code: i32,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StepReason>,
}

impl StepFinished {
    /// The status the step ends in.
    pub fn status(&self) -> Status {
        match (&self.reason, self.exit_code) {
            (Some(StepReason::Canceled), _) => Status::Canceled,
            (_, 0) => Status::Succeeded,
            _ => Status::Failed,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequested {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A job that could not be run: poison message, dead-lettered, a runner error, or the
/// build's deadline passed before it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailed {
    pub stage: StageName,
    /// Unknown to the watchdog (a dead-lettered job was never claimed by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub reason: String,
}

/// Progress of one (image, provider) pair, from a step's `::kiln::progress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageProgress {
    pub image: String,
    pub provider: String,
    /// 0 to 100.
    pub percent: u8,
    #[serde(default)]
    pub phase: Phase,
    pub stage: StageName,
    pub step: StepName,
}

/// The result of one (image, provider) pair. On the wire `ok` with an optional `uri`,
/// or `ok: false` with an `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageResult {
    pub image: String,
    pub provider: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub stage: StageName,
    pub step: StepName,
}

impl ImageResult {
    pub fn new(
        image: impl Into<String>,
        provider: impl Into<String>,
        outcome: ImageOutcome,
        stage: StageName,
        step: StepName,
    ) -> Self {
        let (ok, uri, error) = match outcome {
            ImageOutcome::Ok { uri } => (true, uri, None),
            ImageOutcome::Error { message } => (false, None, Some(message)),
        };
        Self { image: image.into(), provider: provider.into(), ok, uri, error, stage, step }
    }

    pub fn outcome(&self) -> ImageOutcome {
        if self.ok {
            ImageOutcome::Ok { uri: self.uri.clone() }
        } else {
            ImageOutcome::Error { message: self.error.clone().unwrap_or_else(|| "failed".to_string()) }
        }
    }
}

/// A report type whose data does not fit it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ty} event {id}: malformed report data at `{field}`: {reason}")]
pub struct ReportError {
    pub ty: String,
    pub id: String,
    /// Where in the data (`.` for the whole object).
    pub field: String,
    pub reason: String,
}

impl Report {
    /// The CloudEvent type of this report.
    pub fn ty(&self) -> &'static str {
        match self {
            Report::BuildCreated(_) => types::BUILD_CREATED,
            Report::StageStarted(_) => types::STAGE_STARTED,
            Report::StageFinished(_) => types::STAGE_FINISHED,
            Report::StepStarted(_) => types::STEP_STARTED,
            Report::StepFinished(_) => types::STEP_FINISHED,
            Report::CancelRequested(_) => types::CANCEL_REQUESTED,
            Report::JobFailed(_) => types::JOB_FAILED,
            Report::ImageProgress(_) => types::IMAGE_PROGRESS,
            Report::ImageResult(_) => types::IMAGE_RESULT,
        }
    }

    /// Whether `ty` is a report type.
    pub fn is_report_type(ty: &str) -> bool {
        types::REPORTS.contains(&ty)
    }

    /// The stage the report is about, if any.
    pub fn stage(&self) -> Option<&StageName> {
        match self {
            Report::BuildCreated(_) | Report::CancelRequested(_) => None,
            Report::StageStarted(r) => Some(&r.stage),
            Report::StageFinished(r) => Some(&r.stage),
            Report::StepStarted(r) => Some(&r.stage),
            Report::StepFinished(r) => Some(&r.stage),
            Report::JobFailed(r) => Some(&r.stage),
            Report::ImageProgress(r) => Some(&r.stage),
            Report::ImageResult(r) => Some(&r.stage),
        }
    }

    /// The CloudEvent subject: `build`, `stage/S` or `stage/S/step/T`.
    fn subject(&self) -> Option<String> {
        let step = match self {
            Report::BuildCreated(_) => return Some("build".to_string()),
            Report::CancelRequested(_) => return None,
            Report::StepStarted(r) => Some(&r.step),
            Report::StepFinished(r) => Some(&r.step),
            Report::ImageProgress(r) => Some(&r.step),
            Report::ImageResult(r) => Some(&r.step),
            Report::StageStarted(_) | Report::StageFinished(_) | Report::JobFailed(_) => None,
        };
        let stage = self.stage()?;
        Some(match step {
            Some(step) => format!("stage/{stage}/step/{step}"),
            None => format!("stage/{stage}"),
        })
    }

    fn data(&self) -> Result<Value, serde_json::Error> {
        match self {
            Report::BuildCreated(r) => serde_json::to_value(r),
            Report::StageStarted(r) => serde_json::to_value(r),
            Report::StageFinished(r) => serde_json::to_value(r),
            Report::StepStarted(r) => serde_json::to_value(r),
            Report::StepFinished(r) => serde_json::to_value(r),
            Report::CancelRequested(r) => serde_json::to_value(r),
            Report::JobFailed(r) => serde_json::to_value(r),
            Report::ImageProgress(r) => serde_json::to_value(r),
            Report::ImageResult(r) => serde_json::to_value(r),
        }
    }

    /// The report as a new CloudEvent of `build`, from `source` (a fresh id, the time now).
    pub fn to_event(&self, build: &BuildId, source: impl Into<String>) -> CloudEvent {
        // Plain structs of strings and numbers: serializing them cannot fail.
        let data = self.data().unwrap_or(Value::Null);
        let e = CloudEvent::new(self.ty(), source, build, data);
        match self.subject() {
            Some(s) => e.with_subject(s),
            None => e,
        }
    }

    /// Reads a report from an event: `Ok(None)` when the event is not of a report type,
    /// `Err` when it is but its data does not fit (naming the field).
    pub fn from_event(e: &CloudEvent) -> Result<Option<Report>, ReportError> {
        let r = match e.ty.as_str() {
            types::BUILD_CREATED => Report::BuildCreated(parse(e)?),
            types::STAGE_STARTED => Report::StageStarted(parse(e)?),
            types::STAGE_FINISHED => Report::StageFinished(parse(e)?),
            types::STEP_STARTED => Report::StepStarted(parse(e)?),
            types::STEP_FINISHED => Report::StepFinished(parse(e)?),
            types::CANCEL_REQUESTED => Report::CancelRequested(parse(e)?),
            types::JOB_FAILED => Report::JobFailed(parse(e)?),
            types::IMAGE_PROGRESS => {
                let p: ImageProgress = parse(e)?;
                if p.percent > 100 {
                    return Err(malformed(e, "percent", format!("{} is not from 0 to 100", p.percent)));
                }
                Report::ImageProgress(p)
            }
            types::IMAGE_RESULT => {
                let r: ImageResult = parse(e)?;
                if !r.ok && r.uri.is_some() {
                    return Err(malformed(e, "uri", "a failed result has no uri".to_string()));
                }
                Report::ImageResult(r)
            }
            _ => return Ok(None),
        };
        Ok(Some(r))
    }
}

macro_rules! from_struct {
    ($($variant:ident),*) => {$(
        impl From<$variant> for Report {
            fn from(r: $variant) -> Report {
                Report::$variant(r)
            }
        }
    )*};
}
from_struct!(
    BuildCreated,
    StageStarted,
    StageFinished,
    StepStarted,
    StepFinished,
    CancelRequested,
    JobFailed,
    ImageProgress,
    ImageResult
);

fn malformed(e: &CloudEvent, field: &str, reason: String) -> ReportError {
    ReportError { ty: e.ty.clone(), id: e.id.clone(), field: field.to_string(), reason }
}

/// Deserializes the event's data, naming the field that does not fit. No data at all
/// reads as an empty object (a cancel needs no fields).
fn parse<T: DeserializeOwned>(e: &CloudEvent) -> Result<T, ReportError> {
    let empty = Value::Object(Default::default());
    let data = if e.data.is_null() { &empty } else { &e.data };
    serde_path_to_error::deserialize(data).map_err(|err| {
        let field = err.path().to_string();
        malformed(e, &field, err.into_inner().to_string())
    })
}

/// The data of a lifecycle event (`dev.kiln.{build,stage,step}.<status>`), recorded by
/// the fan-in for each transition; `stage` and `step` say which entity moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageName>,
    /// For stage instances (`name#n`): the stage of the pipeline it is an instance of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepName>,
    pub status: Status,
    /// The status before the transition (none for a new stage instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a new stage instance: the id and type of the event that created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_type: Option<String>,
}

impl LifecycleData {
    /// The lifecycle event type for an entity (`build`, `stage`, `step`) reaching `status`.
    pub fn event_type(entity: &str, status: Status) -> String {
        format!("{RESERVED_PREFIX}{entity}.{status}")
    }

    /// Whether `ty` is a lifecycle event type.
    pub fn is_lifecycle_type(ty: &str) -> bool {
        ty.strip_prefix(RESERVED_PREFIX).and_then(|rest| rest.split_once('.')).is_some_and(
            |(entity, status)| {
                LIFECYCLE_ENTITIES.contains(&entity) && Status::ALL.iter().any(|s| s.as_str() == status)
            },
        )
    }

    /// Reads a lifecycle event's data: `Ok(None)` for other event types.
    pub fn from_event(e: &CloudEvent) -> Result<Option<LifecycleData>, ReportError> {
        if !Self::is_lifecycle_type(&e.ty) {
            return Ok(None);
        }
        parse(e).map(Some)
    }

    /// The pipeline stage this event is about: the template of an instance, else the stage.
    pub fn stage_template(&self) -> Option<&str> {
        self.template.as_deref().or_else(|| self.stage.as_ref().map(|s| s.template()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(ty: &str, data: Value) -> CloudEvent {
        CloudEvent::new(ty, "test", &BuildId::new("b"), data)
    }

    #[test]
    fn every_report_round_trips_through_its_event() {
        let (stage, step) = (StageName::new("s#1"), StepName::new("t"));
        let reports: Vec<Report> = vec![
            BuildCreated { repo: "o/r".into(), stages: 2 }.into(),
            StageStarted { stage: stage.clone(), attempt: 1, runner: Some("r".into()) }.into(),
            StageFinished { stage: stage.clone(), attempt: 1, outcome: StageOutcome::Timeout, reason: None }
                .into(),
            StepStarted { stage: stage.clone(), step: step.clone(), number: 3, attempt: 1 }.into(),
            StepFinished {
                stage: stage.clone(),
                step: step.clone(),
                number: 3,
                attempt: 1,
                exit_code: 137,
                duration_ms: 5,
                reason: Some(StepReason::Signal(9)),
            }
            .into(),
            CancelRequested { reason: Some("why".into()) }.into(),
            CancelRequested::default().into(),
            JobFailed { stage: stage.clone(), attempt: None, reason: "dead".into() }.into(),
            ImageProgress {
                image: "os".into(),
                provider: "aws".into(),
                percent: 40,
                phase: Phase::Pushing,
                stage: stage.clone(),
                step: step.clone(),
            }
            .into(),
            ImageResult::new(
                "os",
                "aws",
                ImageOutcome::Ok { uri: Some("u".into()) },
                stage.clone(),
                step.clone(),
            )
            .into(),
            ImageResult::new("os", "aws", ImageOutcome::Error { message: "no".into() }, stage, step).into(),
        ];
        for r in reports {
            let e = r.to_event(&BuildId::new("b"), "test");
            assert_eq!(e.ty, r.ty());
            let text = serde_json::to_string(&e).unwrap();
            let back: CloudEvent = serde_json::from_str(&text).unwrap();
            assert_eq!(Report::from_event(&back), Ok(Some(r.clone())), "{text}");
        }
    }

    #[test]
    fn the_wire_form_is_the_one_runners_always_sent() {
        let r: Report = StepFinished {
            stage: StageName::new("a"),
            step: StepName::new("s"),
            number: 1,
            attempt: 2,
            exit_code: 143,
            duration_ms: 10,
            reason: Some(StepReason::Canceled),
        }
        .into();
        let e = r.to_event(&BuildId::new("b"), "x");
        assert_eq!(e.ty, "dev.kiln.report.step-finished");
        assert_eq!(e.subject.as_deref(), Some("stage/a/step/s"));
        assert_eq!(
            e.data,
            json!({"stage": "a", "step": "s", "number": 1, "attempt": 2, "exit_code": 143,
                   "duration_ms": 10, "reason": "canceled"})
        );
        let done = ev(types::STAGE_FINISHED, json!({"stage": "a", "attempt": 1, "outcome": "timeout"}));
        assert!(matches!(
            Report::from_event(&done),
            Ok(Some(Report::StageFinished(StageFinished { outcome: StageOutcome::Timeout, .. })))
        ));
    }

    #[test]
    fn malformed_data_names_the_field() {
        let err = |ty: &str, data: Value| Report::from_event(&ev(ty, data)).unwrap_err();
        let e = err(types::STAGE_STARTED, json!({"attempt": 1}));
        assert!(e.to_string().contains("stage"), "{e}");
        let e = err(
            types::STEP_FINISHED,
            json!({"stage": "a", "step": "s", "number": 1, "attempt": "x",
            "exit_code": 0, "duration_ms": 1}),
        );
        assert_eq!(e.field, "attempt", "{e}");
        let e = err(types::STAGE_FINISHED, json!({"stage": "a", "attempt": 1, "outcome": "maybe"}));
        assert_eq!(e.field, "outcome", "{e}");
        let e = err(
            types::IMAGE_PROGRESS,
            json!({"image": "i", "provider": "p", "percent": 101,
            "stage": "a", "step": "s"}),
        );
        assert_eq!(e.field, "percent", "{e}");
        let e = err(
            types::STEP_FINISHED,
            json!({"stage": "a", "step": "s", "number": 1, "attempt": 1,
            "exit_code": 1, "duration_ms": 1, "reason": "bored"}),
        );
        assert_eq!(e.field, "reason", "{e}");
        assert!(e.to_string().contains("unknown step reason"), "{e}");
    }

    #[test]
    fn other_events_are_not_reports() {
        assert_eq!(Report::from_event(&ev("coin", json!({"stage": 1}))), Ok(None));
        assert_eq!(Report::from_event(&ev("dev.kiln.stage.failed", json!({}))), Ok(None));
        assert!(Report::is_report_type(types::JOB_FAILED) && !Report::is_report_type("coin"));
    }

    #[test]
    fn lifecycle_types_are_recognised_and_read() {
        assert!(LifecycleData::is_lifecycle_type("dev.kiln.stage.failed"));
        assert!(!LifecycleData::is_lifecycle_type("dev.kiln.report.stage-started"));
        assert!(!LifecycleData::is_lifecycle_type("dev.kiln.stage.bored"));
        assert_eq!(LifecycleData::event_type("step", Status::Skipped), "dev.kiln.step.skipped");
        let e = ev("dev.kiln.stage.pending", json!({"stage": "c#1", "template": "c", "status": "pending"}));
        let d = LifecycleData::from_event(&e).unwrap().unwrap();
        assert_eq!(d.stage_template(), Some("c"));
        assert!(LifecycleData::from_event(&ev("dev.kiln.stage.failed", json!({"status": 3}))).is_err());
    }
}
