//! How stages end, and the lifecycle event every transition records
//! (`dev.kiln.{build,stage,step}.<status>`, its data a [`LifecycleData`]).

use super::Reactor;
use crate::event::CloudEvent;
use crate::ids::{StageName, StepName};
use crate::report::{LifecycleData, StageOutcome};
use crate::state::{Build, Patch, Target, Transition};
use crate::status::Status;

/// Where the fan-in's own events come from.
pub(super) const SOURCE: &str = "kiln://fanin";

impl Reactor {
    /// Ends a stage after its runner stopped: steps it did not finish are closed too.
    pub(super) fn finish_stage(&mut self, stage: &StageName, outcome: StageOutcome, reason: Option<String>) {
        let Some(s) = self.b.stage(stage.as_str()) else {
            return self.refuse(format!("stage {stage} does not exist"));
        };
        let any_failed = s.steps.iter().any(|x| x.status == Status::Failed);
        let (to, step_to, reason) = match outcome {
            StageOutcome::Canceled => (Status::Canceled, Status::Canceled, reason),
            StageOutcome::Timeout => {
                let build_deadline = self.b.created_ms + self.b.plan.timeout_ms;
                let why = if self.now_ms >= build_deadline {
                    format!(
                        "the build timed out (timeout {})",
                        crate::compile::format_duration(self.b.plan.timeout_ms)
                    )
                } else {
                    "stage timed out".to_string()
                };
                (Status::Failed, Status::Skipped, reason.or(Some(why)))
            }
            StageOutcome::Failed => (Status::Failed, Status::Skipped, reason),
            StageOutcome::Completed if any_failed => (Status::Failed, Status::Skipped, reason),
            StageOutcome::Completed => (Status::Succeeded, Status::Skipped, reason),
        };
        if s.status == Status::Pending && to != Status::Canceled && to != Status::Failed {
            return self.refuse(format!("stage {stage} finished but never started"));
        }
        self.end_stage(stage, to, step_to, reason);
    }

    /// Moves a stage to `to`; its unfinished steps go to `step_to` (running ones fail,
    /// unless canceled).
    pub(super) fn end_stage(
        &mut self,
        stage: &StageName,
        to: Status,
        step_to: Status,
        reason: Option<String>,
    ) {
        let Some(s) = self.b.stage(stage.as_str()) else { return };
        let open: Vec<(StepName, Status)> =
            s.steps.iter().filter(|x| !x.status.is_terminal()).map(|x| (x.name.clone(), x.status)).collect();
        for (step, status) in open {
            let step_status = match (status, step_to) {
                (Status::Running, Status::Skipped) => Status::Failed,
                (Status::Pending, Status::Failed) => Status::Skipped,
                (_, s) => s,
            };
            let step_reason = match step_status {
                Status::Skipped => Some("an earlier step did not succeed".to_string()),
                Status::Failed => Some("the runner ended the stage while the step ran".to_string()),
                _ => reason.clone(),
            };
            let target = Target::Step { stage: stage.clone(), step };
            self.go(target, step_status, Patch { reason: step_reason, ..Patch::default() });
        }
        self.go(Target::Stage { stage: stage.clone() }, to, Patch { reason, ..Patch::default() });
    }
}

/// The lifecycle event recorded for a transition: `dev.kiln.{build,stage,step}.<status>`.
pub(super) fn lifecycle_event(b: &Build, t: &Transition) -> CloudEvent {
    let (entity, subject, stage, step) = match &t.target {
        Target::Build => ("build", "build".to_string(), None, None),
        Target::Stage { stage } => ("stage", format!("stage/{stage}"), Some(stage.clone()), None),
        Target::Step { stage, step } => {
            ("step", format!("stage/{stage}/step/{step}"), Some(stage.clone()), Some(step.clone()))
        }
    };
    let template = match &t.target {
        Target::Stage { stage } => stage.as_str().split_once('#').map(|(template, _)| template.to_string()),
        _ => None,
    };
    let data = LifecycleData {
        stage,
        template,
        step,
        status: t.to,
        from: Some(t.from),
        exit_code: t.patch.exit_code,
        duration_ms: t.patch.duration_ms,
        reason: t.patch.reason.clone(),
        trigger: None,
        trigger_type: None,
    };
    event(b, LifecycleData::event_type(entity, t.to), data).with_subject(subject)
}

/// A lifecycle event of `b` with `data`.
pub(super) fn event(b: &Build, ty: String, data: LifecycleData) -> CloudEvent {
    // A struct of strings and numbers: serializing it cannot fail.
    let data = serde_json::to_value(&data).unwrap_or_default();
    CloudEvent::new(ty, SOURCE, &b.id, data)
}
