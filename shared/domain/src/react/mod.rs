//! How the fan-in reacts to an event: which transitions to apply and which lifecycle
//! events to record. Pure: the fan-in function does the I/O around it.
//!
//! The rules, in one place:
//! - a build starts when it is created; its stages start when a runner reports them;
//! - a step ends with its exit code; a stage ends when its runner says so: failed if a
//!   step failed or it timed out, canceled if canceled, else succeeded; steps it never ran
//!   are skipped;
//! - a stage whose `needs` ended without success is skipped, and so on down the graph
//!   ([`needs`]);
//! - a pending stage that can no longer become ready (nothing running or queued could
//!   satisfy it) is skipped, so a build never waits forever;
//! - the build ends when every stage has ended: failed if any failed, else succeeded;
//! - a cancel ends the build at once as canceled; its pending stages are canceled and its
//!   running stages end as canceled when their runners report back;
//! - the pipeline's `on:` triggers create and stop stage instances ([`triggers`]).
//!
//! Reports arrive typed ([`Report`]); one whose data does not fit its type is refused
//! with the reason. The image catalog's writes come from [`react_catalog`], over the
//! records the fan-in read ([`catalog_reads`]); its rules are in [`crate::catalog`].

mod catalog;
mod lifecycle;
mod needs;
mod triggers;

pub use catalog::{catalog_reads, react_catalog};
pub use needs::{newly_ready, ready_stages};

use crate::catalog::CatalogWrite;
use crate::event::CloudEvent;
use crate::ids::{StageName, StepName};
use crate::report::{Report, StageOutcome};
use crate::state::{Build, Patch, StageState, Target, Transition};
use crate::status::Status;
use lifecycle::lifecycle_event;

/// What the fan-in should commit for one event.
#[derive(Debug, Clone, Default)]
pub struct Reaction {
    pub transitions: Vec<Transition>,
    /// Lifecycle events, one per transition, to record after the incoming event.
    pub events: Vec<CloudEvent>,
    pub new_stages: Vec<StageState>,
    /// Changes the event asked for that the state machine refused, and reports whose
    /// data is malformed (logged, not applied).
    pub refused: Vec<String>,
    /// Reports about things that had already ended elsewhere (a runner finishing a stage
    /// that an event stopped, or a canceled build): expected, logged quietly.
    pub ignored: Vec<String>,
    /// The build as it will be once the reaction is committed.
    pub after: Option<Build>,
    /// When set, the build's fan-in trigger arrivals are to be replaced by this.
    pub arrivals: Option<crate::state::Arrivals>,
    /// Conditional writes to the image catalog (filled by [`react_catalog`]).
    pub catalog: Vec<CatalogWrite>,
    /// The reaction stopped short of ending every stage it should (a cancel or a failure
    /// in a large build ends hundreds), so that its commit stays within what one store
    /// transaction takes: the fan-in records a [`CONTINUE`] event next, whose reaction goes
    /// on where this one stopped. The build does not end before.
    pub unfinished: bool,
}

/// The event the fan-in sends itself after an [`Reaction::unfinished`] reaction.
pub const CONTINUE: &str = "dev.kiln.fanin.continue";

/// At most this many lifecycle events in one reaction's bulk work (cancelling or skipping
/// stages): with the stage items they touch and the event itself, a commit stays far
/// below DynamoDB's 100 items a transaction.
const MAX_EVENTS_PER_REACTION: usize = 40;

/// Works out the reaction to `event` on `build`.
pub fn react(build: &Build, event: &CloudEvent, now_ms: u64) -> Reaction {
    react_owned(build.clone(), event, now_ms)
}

/// [`react`] on a build the caller gives up (it becomes the reaction's `after`): no copy
/// of the build is made, so the reaction's cost follows what it touches.
pub fn react_owned(build: Build, event: &CloudEvent, now_ms: u64) -> Reaction {
    let mut r = Reactor { b: build, out: Reaction::default(), now_ms, arrivals_changed: false };
    match Report::from_event(event) {
        Ok(Some(report)) => r.on_report(report),
        Ok(None) => {}
        Err(malformed) => r.refuse(malformed.to_string()),
    }
    r.cancel_pending();
    r.on_triggers(event);
    // Lifecycle events can trigger stages too (a cleanup stage when `build` fails): run the
    // triggers over each one, including those the triggers themselves cause, until quiet.
    // The build's own end is decided after, so it cannot trigger stages.
    let mut seen = 0;
    loop {
        r.skip_broken();
        let n = r.out.events.len();
        if seen == n || r.out.new_stages.len() > MAX_INSTANCES_PER_EVENT {
            break;
        }
        for i in seen..n {
            let e = r.out.events[i].clone();
            r.on_triggers(&e);
        }
        seen = n;
    }
    r.settle();
    if r.arrivals_changed {
        r.out.arrivals = Some(r.b.arrivals.clone());
    }
    let mut out = r.out;
    out.after = Some(r.b);
    out
}

/// A guard against triggers that set each other off forever.
const MAX_INSTANCES_PER_EVENT: usize = 100;

struct Reactor {
    b: Build,
    out: Reaction,
    now_ms: u64,
    arrivals_changed: bool,
}

impl Reactor {
    fn on_report(&mut self, report: Report) {
        match report {
            Report::BuildCreated(_) => {
                self.go(Target::Build, Status::Running, Patch::default());
                // A commit whose pipeline did not compile: started, so its history and its
                // commit status show it, and failed at once with the errors.
                if self.b.compile_failed && self.b.status == Status::Running {
                    let patch = Patch { reason: self.b.reason.clone(), ..Patch::default() };
                    self.go(Target::Build, Status::Failed, patch);
                }
            }
            Report::StageStarted(r) => self.stage_started(r.stage, r.attempt),
            Report::StepStarted(r) => {
                if self.current_attempt(&r.stage, r.attempt) {
                    let target = Target::Step { stage: r.stage, step: r.step };
                    self.go(target, Status::Running, Patch::default());
                }
            }
            Report::StepFinished(r) => {
                if !self.current_attempt(&r.stage, r.attempt) {
                    return;
                }
                let to = r.status();
                let target = Target::Step { stage: r.stage, step: r.step };
                if self.b.status_of(&target) == Some(Status::Pending) {
                    self.go(target.clone(), Status::Running, Patch::default());
                }
                let patch = Patch {
                    exit_code: Some(r.exit_code),
                    duration_ms: Some(r.duration_ms),
                    reason: r.reason.map(|x| x.to_string()),
                    ..Patch::default()
                };
                self.go(target, to, patch);
            }
            Report::StageFinished(r) => {
                if self.current_attempt(&r.stage, r.attempt) {
                    self.finish_stage(&r.stage, r.outcome, r.reason);
                }
            }
            Report::JobFailed(r) => self.finish_stage(&r.stage, StageOutcome::Failed, Some(r.reason)),
            Report::CancelRequested(r) => {
                if self.b.status.is_terminal() {
                    return self.refuse(format!("cancel: build is already {}", self.b.status));
                }
                let reason = Some(r.reason.unwrap_or_else(|| "canceled".to_string()));
                // Its pending stages are canceled by `cancel_pending`, next.
                self.go(Target::Build, Status::Canceled, Patch { reason, ..Patch::default() });
            }
            // Image reports change no status: they go to the catalog (`react_catalog`).
            Report::ImageProgress(_) | Report::ImageResult(_) => {}
        }
    }

    fn stage_started(&mut self, stage: StageName, attempt: u32) {
        if self.b.status != Status::Running {
            return self.refuse(format!("stage {stage} started but the build is {}", self.b.status));
        }
        let retry =
            self.b.stage(stage.as_str()).filter(|s| s.status == Status::Running && attempt > s.attempt);
        if let Some(s) = retry {
            // The runner of the earlier attempt was lost: start over with this one.
            let steps: Vec<StepName> =
                s.steps.iter().filter(|t| t.status != Status::Pending).map(|t| t.name.clone()).collect();
            let reason =
                Some(format!("attempt {attempt} after the runner of attempt {} was lost", s.attempt));
            self.go(
                Target::Stage { stage: stage.clone() },
                Status::Running,
                Patch { attempt: Some(attempt), reason, ..Patch::default() },
            );
            for step in steps {
                let target = Target::Step { stage: stage.clone(), step };
                self.go(target, Status::Pending, Patch { attempt: Some(attempt), ..Patch::default() });
            }
            return;
        }
        self.go(
            Target::Stage { stage },
            Status::Running,
            Patch { attempt: Some(attempt), ..Patch::default() },
        );
    }

    /// A canceled build's pending stages are canceled (within the reaction's budget; a
    /// [`CONTINUE`] event goes on with the rest).
    fn cancel_pending(&mut self) {
        if self.b.status != Status::Canceled {
            return;
        }
        let pending: Vec<StageName> =
            self.b.stages.iter().filter(|s| s.status == Status::Pending).map(|s| s.name.clone()).collect();
        for stage in pending {
            if self.over_budget() {
                return;
            }
            self.end_stage(&stage, Status::Canceled, Status::Canceled, Some("build canceled".into()));
        }
    }

    /// Whether the reaction has done as much bulk work as one commit should carry (then it
    /// is marked unfinished).
    fn over_budget(&mut self) -> bool {
        if self.out.events.len() >= MAX_EVENTS_PER_REACTION {
            self.out.unfinished = true;
        }
        self.out.unfinished
    }

    /// Reports from an attempt other than the stage's current one are stale.
    fn current_attempt(&mut self, stage: &StageName, attempt: u32) -> bool {
        let Some(s) = self.b.stage(stage.as_str()) else {
            self.refuse(format!("stage {stage} does not exist"));
            return false;
        };
        if s.attempt != 0 && attempt != s.attempt {
            let current = s.attempt;
            self.refuse(format!(
                "stage {stage}: report from attempt {attempt}, current attempt is {current}"
            ));
            return false;
        }
        true
    }

    /// Records a transition if the state machine allows it, else refuses it.
    fn go(&mut self, target: Target, to: Status, mut patch: Patch) {
        let Some(from) = self.b.status_of(&target) else {
            return self.refuse(format!("{target} does not exist"));
        };
        patch.at_ms = self.now_ms;
        let t = Transition { target, from, to, patch };
        if let Err(e) = self.b.apply(&t) {
            if from.is_terminal() {
                return self.out.ignored.push(e.to_string());
            }
            return self.refuse(e.to_string());
        }
        self.out.events.push(lifecycle_event(&self.b, &t));
        self.out.transitions.push(t);
    }

    fn refuse(&mut self, why: String) {
        self.out.refused.push(why);
    }
}

#[cfg(test)]
mod tests;
