//! How the fan-in reacts to an event: which transitions to apply and which lifecycle
//! events to record. Pure: the fan-in function does the I/O around it.
//!
//! The rules, in one place:
//! - a build starts when it is created; its stages start when a runner reports them;
//! - a step ends with its exit code; a stage ends when its runner says so: failed if a
//!   step failed or it timed out, canceled if canceled, else succeeded; steps it never ran
//!   are skipped;
//! - a stage whose `needs` ended without success is skipped, and so on down the graph;
//! - a pending stage that can no longer become ready (nothing running or queued could
//!   satisfy it) is skipped, so a build never waits forever;
//! - the build ends when every stage has ended: failed if any failed, else succeeded;
//! - a cancel ends the build at once as canceled; its pending stages are canceled and its
//!   running stages end as canceled when their runners report back.

use crate::event::{CloudEvent, types};
use crate::ids::{StageName, StepName};
use crate::state::{Build, Patch, StageState, Target, Transition};
use crate::status::Status;
use serde_json::{Value, json};

/// What the fan-in should commit for one event.
#[derive(Debug, Clone, Default)]
pub struct Reaction {
    pub transitions: Vec<Transition>,
    /// Lifecycle events, one per transition, to record after the incoming event.
    pub events: Vec<CloudEvent>,
    pub new_stages: Vec<StageState>,
    /// Changes the event asked for that the state machine refused (logged, not applied).
    pub refused: Vec<String>,
    /// The build as it will be once the reaction is committed.
    pub after: Option<Build>,
}

/// Works out the reaction to `event` on `build`.
pub fn react(build: &Build, event: &CloudEvent, now_ms: u64) -> Reaction {
    let mut r = Reactor { b: build.clone(), out: Reaction::default(), now_ms };
    r.on_event(event);
    r.settle();
    let mut out = r.out;
    out.after = Some(r.b);
    out
}

/// Stages that may be dispatched now: pending, not yet queued, every need succeeded.
pub fn ready_stages(build: &Build) -> Vec<StageName> {
    if build.status != Status::Running {
        return Vec::new();
    }
    build
        .stages
        .iter()
        .filter(|s| s.status == Status::Pending && !s.dispatched && needs_state(build, s) == NeedsState::Met)
        .map(|s| s.name.clone())
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
enum NeedsState {
    Met,
    Waiting,
    /// A need ended without success (or cannot happen): the stage can never run.
    Broken(String),
}

fn needs_state(build: &Build, stage: &StageState) -> NeedsState {
    let Some(plan) = build.plan.stage(stage.name.template()) else {
        return NeedsState::Broken(format!("stage {} is not in the plan", stage.name));
    };
    let mut waiting = false;
    for need in &plan.needs {
        match build.stage(need.as_str()).map(|s| s.status) {
            Some(s) if s.is_success() => {}
            Some(s) if s.is_terminal() => return NeedsState::Broken(format!("needs {need}, which {s}")),
            Some(_) => waiting = true,
            None => return NeedsState::Broken(format!("needs {need}, which never ran")),
        }
    }
    if waiting { NeedsState::Waiting } else { NeedsState::Met }
}

struct Reactor {
    b: Build,
    out: Reaction,
    now_ms: u64,
}

impl Reactor {
    fn on_event(&mut self, e: &CloudEvent) {
        let stage = e.data_str("stage").map(StageName::new);
        let step = e.data_str("step").map(StepName::new);
        let attempt = e.data_u64("attempt").map(|a| a as u32);
        match e.ty.as_str() {
            types::BUILD_CREATED => self.go(Target::Build, Status::Running, Patch::default()),
            types::STAGE_STARTED => {
                let Some(stage) = stage else { return self.malformed(e) };
                if self.b.status != Status::Running {
                    return self.refuse(format!("stage {stage} started but the build is {}", self.b.status));
                }
                self.go(Target::Stage { stage }, Status::Running, Patch { attempt, ..Patch::default() });
            }
            types::STEP_STARTED => {
                let (Some(stage), Some(step)) = (stage, step) else { return self.malformed(e) };
                if !self.current_attempt(&stage, attempt) {
                    return;
                }
                self.go(Target::Step { stage, step }, Status::Running, Patch::default());
            }
            types::STEP_FINISHED => {
                let (Some(stage), Some(step)) = (stage, step) else { return self.malformed(e) };
                if !self.current_attempt(&stage, attempt) {
                    return;
                }
                let exit_code = e.data_i64("exit_code").map(|c| c as i32);
                let reason = e.data_str("reason").map(str::to_string);
                let to = match (exit_code, reason.as_deref()) {
                    (_, Some("canceled")) => Status::Canceled,
                    (Some(0), _) => Status::Succeeded,
                    _ => Status::Failed,
                };
                let target = Target::Step { stage, step };
                if self.b.status_of(&target) == Some(Status::Pending) {
                    self.go(target.clone(), Status::Running, Patch::default());
                }
                let patch =
                    Patch { exit_code, duration_ms: e.data_u64("duration_ms"), reason, ..Patch::default() };
                self.go(target, to, patch);
            }
            types::STAGE_FINISHED => {
                let Some(stage) = stage else { return self.malformed(e) };
                if !self.current_attempt(&stage, attempt) {
                    return;
                }
                let outcome = e.data_str("outcome").unwrap_or("completed").to_string();
                let reason = e.data_str("reason").map(str::to_string);
                self.finish_stage(&stage, &outcome, reason);
            }
            types::JOB_FAILED => {
                let Some(stage) = stage else { return self.malformed(e) };
                let reason = e.data_str("reason").unwrap_or("the job could not be run").to_string();
                self.finish_stage(&stage, "failed", Some(reason));
            }
            types::CANCEL_REQUESTED => {
                if self.b.status.is_terminal() {
                    return self.refuse(format!("cancel: build is already {}", self.b.status));
                }
                let reason = Some(e.data_str("reason").unwrap_or("canceled").to_string());
                self.go(Target::Build, Status::Canceled, Patch { reason, ..Patch::default() });
                let pending: Vec<StageName> = self
                    .b
                    .stages
                    .iter()
                    .filter(|s| s.status == Status::Pending)
                    .map(|s| s.name.clone())
                    .collect();
                for stage in pending {
                    self.end_stage(&stage, Status::Canceled, Status::Canceled, Some("build canceled".into()));
                }
            }
            // Other events (image progress, events steps emit) are recorded, not applied.
            _ => {}
        }
    }

    /// Ends a stage after its runner stopped: steps it did not finish are closed too.
    fn finish_stage(&mut self, stage: &StageName, outcome: &str, reason: Option<String>) {
        let Some(s) = self.b.stage(stage.as_str()) else {
            return self.refuse(format!("stage {stage} does not exist"));
        };
        let any_failed = s.steps.iter().any(|x| x.status == Status::Failed);
        let (to, step_to, reason) = match outcome {
            "canceled" => (Status::Canceled, Status::Canceled, reason),
            "stopped" => (Status::Stopped, Status::Canceled, reason.or(Some("stopped by event".into()))),
            "timeout" => (Status::Failed, Status::Skipped, reason.or(Some("stage timed out".into()))),
            "failed" => (Status::Failed, Status::Skipped, reason),
            _ if any_failed => (Status::Failed, Status::Skipped, reason),
            _ => (Status::Succeeded, Status::Skipped, reason),
        };
        if s.status == Status::Pending && to != Status::Canceled && to != Status::Failed {
            return self.refuse(format!("stage {stage} finished but never started"));
        }
        self.end_stage(stage, to, step_to, reason);
    }

    /// Moves a stage to `to`; its unfinished steps go to `step_to` (running ones fail,
    /// unless canceled).
    fn end_stage(&mut self, stage: &StageName, to: Status, step_to: Status, reason: Option<String>) {
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

    /// Skips stages that can no longer run and ends the build once every stage has ended.
    fn settle(&mut self) {
        if self.b.status != Status::Running {
            return;
        }
        loop {
            let broken: Vec<(StageName, String)> = self
                .b
                .stages
                .iter()
                .filter(|s| s.status == Status::Pending)
                .filter_map(|s| match needs_state(&self.b, s) {
                    NeedsState::Broken(why) => Some((s.name.clone(), why)),
                    _ => None,
                })
                .collect();
            if broken.is_empty() {
                break;
            }
            for (stage, why) in broken {
                self.end_stage(&stage, Status::Skipped, Status::Skipped, Some(why));
            }
        }
        let active = self.b.stages.iter().any(|s| {
            s.status == Status::Running
                || (s.status == Status::Pending
                    && (s.dispatched || needs_state(&self.b, s) == NeedsState::Met))
        });
        if active {
            return;
        }
        // Nothing running or runnable: whatever still waits can never start.
        let stuck: Vec<StageName> =
            self.b.stages.iter().filter(|s| s.status == Status::Pending).map(|s| s.name.clone()).collect();
        for stage in stuck {
            self.end_stage(&stage, Status::Skipped, Status::Skipped, Some("never became ready".into()));
        }
        let failed = self.b.stages.iter().filter(|s| s.status == Status::Failed).count();
        let canceled = self.b.stages.iter().any(|s| s.status == Status::Canceled);
        let (to, reason) = if failed > 0 {
            (Status::Failed, Some(format!("{failed} stage(s) failed")))
        } else if canceled {
            (Status::Canceled, None)
        } else {
            (Status::Succeeded, None)
        };
        self.go(Target::Build, to, Patch { reason, ..Patch::default() });
    }

    /// Reports from an attempt other than the stage's current one are stale.
    fn current_attempt(&mut self, stage: &StageName, attempt: Option<u32>) -> bool {
        let Some(s) = self.b.stage(stage.as_str()) else {
            self.refuse(format!("stage {stage} does not exist"));
            return false;
        };
        match attempt {
            Some(a) if s.attempt != 0 && a != s.attempt => {
                let current = s.attempt;
                self.refuse(format!("stage {stage}: report from attempt {a}, current attempt is {current}"));
                false
            }
            _ => true,
        }
    }

    /// Records a transition if the state machine allows it, else refuses it.
    fn go(&mut self, target: Target, to: Status, mut patch: Patch) {
        let Some(from) = self.b.status_of(&target) else {
            return self.refuse(format!("{target} does not exist"));
        };
        patch.at_ms = self.now_ms;
        let t = Transition { target, from, to, patch };
        if let Err(e) = self.b.apply(&t) {
            return self.refuse(e.to_string());
        }
        self.out.events.push(lifecycle_event(&self.b, &t));
        self.out.transitions.push(t);
    }

    fn malformed(&mut self, e: &CloudEvent) {
        self.refuse(format!("{} event {} lacks its stage or step", e.ty, e.id));
    }

    fn refuse(&mut self, why: String) {
        self.out.refused.push(why);
    }
}

/// The lifecycle event recorded for a transition: `dev.kiln.{build,stage,step}.<status>`.
fn lifecycle_event(b: &Build, t: &Transition) -> CloudEvent {
    let (entity, subject, mut data) = match &t.target {
        Target::Build => ("build", "build".to_string(), json!({})),
        Target::Stage { stage } => ("stage", format!("stage/{stage}"), json!({ "stage": stage })),
        Target::Step { stage, step } => {
            ("step", format!("stage/{stage}/step/{step}"), json!({ "stage": stage, "step": step }))
        }
    };
    let obj = data.as_object_mut().expect("built as an object");
    obj.insert("status".into(), Value::from(t.to.as_str()));
    obj.insert("from".into(), Value::from(t.from.as_str()));
    if let Some(c) = t.patch.exit_code {
        obj.insert("exit_code".into(), Value::from(c));
    }
    if let Some(d) = t.patch.duration_ms {
        obj.insert("duration_ms".into(), Value::from(d));
    }
    if let Some(r) = &t.patch.reason {
        obj.insert("reason".into(), Value::from(r.as_str()));
    }
    if let Target::Stage { stage } = &t.target
        && let Some((template, _)) = stage.as_str().split_once('#')
    {
        obj.insert("template".into(), Value::from(template));
    }
    CloudEvent::new(format!("dev.kiln.{entity}.{}", t.to), "kiln://fanin", &b.id, data).with_subject(subject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BuildId, Repo};
    use crate::plan::{Plan, RunsOn, StagePlan, StepPlan};

    fn plan(stages: &[(&str, &[&str], usize)]) -> Plan {
        let mut n = 0;
        Plan {
            version: "1".into(),
            env: Default::default(),
            images: vec![],
            timeout_ms: 1000,
            stages: stages
                .iter()
                .map(|(name, needs, steps)| StagePlan {
                    name: (*name).into(),
                    needs: needs.iter().map(|s| StageName::new(*s)).collect(),
                    runs_on: RunsOn::Lambda,
                    timeout_ms: 1000,
                    env: Default::default(),
                    services: vec![],
                    triggers: vec![],
                    steps: (0..*steps)
                        .map(|i| {
                            n += 1;
                            StepPlan {
                                name: StepName::new(format!("s{i}")),
                                number: n,
                                commands: vec!["true".into()],
                                env: Default::default(),
                                timeout_ms: None,
                            }
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn ev(b: &Build, ty: &str, data: Value) -> CloudEvent {
        CloudEvent::new(ty, "test", &b.id, data)
    }

    /// Applies an event and returns the resulting build.
    fn step(b: &Build, ty: &str, data: Value) -> (Build, Reaction) {
        let r = react(b, &ev(b, ty, data), 1);
        (r.after.clone().unwrap(), r)
    }

    fn run_stage(b: Build, stage: &str, exits: &[i32]) -> Build {
        let (mut b, _) = step(&b, types::STAGE_STARTED, json!({"stage": stage, "attempt": 1}));
        for (i, code) in exits.iter().enumerate() {
            let s = format!("s{i}");
            b = step(&b, types::STEP_STARTED, json!({"stage": stage, "step": s, "attempt": 1})).0;
            b = step(
                &b,
                types::STEP_FINISHED,
                json!({"stage": stage, "step": s, "attempt": 1, "exit_code": code}),
            )
            .0;
        }
        step(&b, types::STAGE_FINISHED, json!({"stage": stage, "attempt": 1})).0
    }

    fn new_build(p: Plan) -> Build {
        let b = Build::new(BuildId::generate(), Repo::new("a", "b"), p, 0);
        step(&b, types::BUILD_CREATED, json!({})).0
    }

    #[test]
    fn dag_runs_to_success() {
        let b = new_build(plan(&[("a", &[], 1), ("b", &["a"], 1), ("c", &["a"], 1)]));
        assert_eq!(b.status, Status::Running);
        assert_eq!(ready_stages(&b), vec![StageName::new("a")]);
        let b = run_stage(b, "a", &[0]);
        assert_eq!(ready_stages(&b), vec![StageName::new("b"), StageName::new("c")]);
        let b = run_stage(b, "b", &[0]);
        assert_eq!(b.status, Status::Running);
        let b = run_stage(b, "c", &[0]);
        assert_eq!(b.status, Status::Succeeded);
    }

    #[test]
    fn failure_skips_rest_of_stage_and_dependents() {
        let b = new_build(plan(&[("a", &[], 3), ("b", &["a"], 1), ("c", &["b"], 1), ("d", &[], 1)]));
        let b = run_stage(b, "a", &[0, 2]);
        let a = b.stage("a").unwrap();
        assert_eq!(a.status, Status::Failed);
        let steps: Vec<Status> = a.steps.iter().map(|s| s.status).collect();
        assert_eq!(steps, vec![Status::Succeeded, Status::Failed, Status::Skipped]);
        assert_eq!(a.steps[1].exit_code, Some(2));
        assert_eq!(b.stage("b").unwrap().status, Status::Skipped);
        assert_eq!(b.stage("c").unwrap().status, Status::Skipped);
        assert_eq!(b.status, Status::Running, "d has not run yet");
        let b = run_stage(b, "d", &[0]);
        assert_eq!(b.status, Status::Failed);
    }

    #[test]
    fn repeated_report_is_refused_not_applied() {
        let b = new_build(plan(&[("a", &[], 1)]));
        let (b, r) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 1}));
        assert_eq!(r.transitions.len(), 1);
        let (_, r) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 1}));
        assert!(r.transitions.is_empty());
        assert_eq!(r.refused.len(), 1, "{:?}", r.refused);
    }

    #[test]
    fn every_transition_has_a_lifecycle_event() {
        let b = new_build(plan(&[("a", &[], 1)]));
        let (_, r) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 1}));
        assert_eq!(r.events.len(), r.transitions.len());
        assert_eq!(r.events[0].ty, "dev.kiln.stage.running");
        assert_eq!(r.events[0].data_str("stage"), Some("a"));
    }

    #[test]
    fn cancel_ends_build_and_pending_stages() {
        let b = new_build(plan(&[("a", &[], 1), ("b", &["a"], 1)]));
        let (b, _) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 1}));
        let (b, _) = step(&b, types::CANCEL_REQUESTED, json!({}));
        assert_eq!(b.status, Status::Canceled);
        assert_eq!(b.stage("b").unwrap().status, Status::Canceled);
        assert!(ready_stages(&b).is_empty());
        let (b, _) =
            step(&b, types::STAGE_FINISHED, json!({"stage": "a", "attempt": 1, "outcome": "canceled"}));
        assert_eq!(b.stage("a").unwrap().status, Status::Canceled);
        assert_eq!(b.stage("a").unwrap().steps[0].status, Status::Canceled);
    }

    #[test]
    fn stale_attempt_is_ignored() {
        let b = new_build(plan(&[("a", &[], 1)]));
        let (b, _) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 2}));
        let (_, r) = step(&b, types::STEP_STARTED, json!({"stage": "a", "step": "s0", "attempt": 1}));
        assert!(r.transitions.is_empty());
    }

    #[test]
    fn job_failure_fails_stage_and_build() {
        let b = new_build(plan(&[("a", &[], 2)]));
        let (b, _) = step(&b, types::JOB_FAILED, json!({"stage": "a", "reason": "poison"}));
        assert_eq!(b.stage("a").unwrap().status, Status::Failed);
        assert_eq!(b.stage("a").unwrap().reason.as_deref(), Some("poison"));
        assert_eq!(b.status, Status::Failed);
    }
}
