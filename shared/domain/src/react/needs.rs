//! `needs`: which stages may run, which never can, and when the build has nothing left.

use super::Reactor;
use crate::ids::StageName;
use crate::plan::StagePlan;
use crate::state::{Build, Patch, StageState, Target};
use crate::status::Status;
use std::collections::HashMap;

/// The build's stages and the plan's stages by name, made once per pass over the build,
/// so checking a stage's `needs` costs O(needs), not O(stages): a pass over a build of N
/// stages is O(N), and a reaction's cost grows no faster than the build.
struct Index<'a> {
    stages: HashMap<&'a str, &'a StageState>,
    plan: HashMap<&'a str, &'a StagePlan>,
}

impl<'a> Index<'a> {
    fn new(b: &'a Build) -> Self {
        Self {
            stages: b.stages.iter().map(|s| (s.name.as_str(), s)).collect(),
            plan: b.plan.stages.iter().map(|s| (s.name.as_str(), s)).collect(),
        }
    }
}

/// Stages that may be dispatched now: pending, not yet queued, every need succeeded.
pub fn ready_stages(build: &Build) -> Vec<StageName> {
    if build.status != Status::Running {
        return Vec::new();
    }
    let idx = Index::new(build);
    build
        .stages
        .iter()
        .filter(|s| s.status == Status::Pending && !s.dispatched && needs_state(&idx, s) == NeedsState::Met)
        .map(|s| s.name.clone())
        .collect()
}

/// The stages that became ready with these changes: pending stages one of whose needs
/// succeeded in `transitions`, the `new_stages`, or every ready stage when the build
/// started. Stages that were ready before were found by the event that made them so. What
/// it costs grows with the stages these changes touch, not with the build.
pub fn newly_ready(
    after: &Build,
    transitions: &[crate::state::Transition],
    new_stages: &[StageState],
) -> Vec<StageName> {
    use crate::state::Target as T;
    if transitions.iter().any(|t| t.target == T::Build && t.to == Status::Running) {
        return ready_stages(after);
    }
    let succeeded: std::collections::HashSet<&str> = transitions
        .iter()
        .filter_map(|t| match &t.target {
            T::Stage { stage } if t.to.is_success() => Some(stage.as_str()),
            _ => None,
        })
        .collect();
    if succeeded.is_empty() && new_stages.is_empty() {
        return Vec::new();
    }
    let plan: HashMap<&str, &StagePlan> = after.plan.stages.iter().map(|s| (s.name.as_str(), s)).collect();
    let candidates: Vec<&StageState> = after
        .stages
        .iter()
        .filter(|s| s.status == Status::Pending && !s.dispatched)
        .filter(|s| {
            new_stages.iter().any(|n| n.name == s.name)
                || plan
                    .get(s.name.template())
                    .is_some_and(|p| p.needs.iter().any(|n| succeeded.contains(n.as_str())))
        })
        .collect();
    if candidates.is_empty() || after.status != Status::Running {
        return Vec::new();
    }
    let idx = Index::new(after);
    candidates
        .into_iter()
        .filter(|s| needs_state(&idx, s) == NeedsState::Met)
        .map(|s| s.name.clone())
        .collect()
}

/// Whether a pending stage may have a need that can no longer succeed: a stage ended
/// without success, or a need names an event-triggered stage (which may never run). A
/// cheap scan that spares the common case (everything so far succeeded) the full check.
fn may_be_broken(b: &Build) -> bool {
    b.stages.iter().any(|s| s.status.is_terminal() && !s.status.is_success())
        || b.plan.stages.iter().any(|s| s.is_event_triggered())
}

#[derive(Debug, PartialEq, Eq)]
enum NeedsState {
    Met,
    Waiting,
    /// A need ended without success (or cannot happen): the stage can never run.
    Broken(String),
}

fn needs_state(idx: &Index, stage: &StageState) -> NeedsState {
    let Some(plan) = idx.plan.get(stage.name.template()) else {
        return NeedsState::Broken(format!("stage {} is not in the plan", stage.name));
    };
    let mut waiting = false;
    for need in &plan.needs {
        match idx.stages.get(need.as_str()).map(|s| s.status) {
            Some(s) if s.is_success() => {}
            Some(s) if s.is_terminal() => return NeedsState::Broken(format!("needs {need}, which {s}")),
            Some(_) => waiting = true,
            None => return NeedsState::Broken(format!("needs {need}, which never ran")),
        }
    }
    if waiting { NeedsState::Waiting } else { NeedsState::Met }
}

impl Reactor {
    /// Skips pending stages whose needs ended without success, and so on down the graph.
    pub(super) fn skip_broken(&mut self) {
        if self.b.status != Status::Running || !may_be_broken(&self.b) {
            return;
        }
        loop {
            let idx = Index::new(&self.b);
            let broken: Vec<(StageName, String)> = self
                .b
                .stages
                .iter()
                .filter(|s| s.status == Status::Pending)
                .filter_map(|s| match needs_state(&idx, s) {
                    NeedsState::Broken(why) => Some((s.name.clone(), why)),
                    _ => None,
                })
                .collect();
            if broken.is_empty() {
                break;
            }
            for (stage, why) in broken {
                if self.over_budget() {
                    return;
                }
                self.end_stage(&stage, Status::Skipped, Status::Skipped, Some(why));
            }
        }
    }

    /// Ends the build once every stage has ended and nothing can start. Event-triggered
    /// stages do not hold a build open by themselves: once everything else has ended, a
    /// later event finds the build over.
    pub(super) fn settle(&mut self) {
        if self.b.status != Status::Running {
            return;
        }
        self.skip_broken();
        if self.out.unfinished {
            return;
        }
        // A running stage is the common answer, found without looking at any `needs`.
        if self.b.stages.iter().any(|s| s.status == Status::Running) {
            return;
        }
        let idx = Index::new(&self.b);
        let active = self.b.stages.iter().any(|s| {
            s.status == Status::Pending && (s.dispatched || needs_state(&idx, s) == NeedsState::Met)
        });
        if active {
            return;
        }
        // Nothing running or runnable: whatever still waits can never start.
        let stuck: Vec<StageName> =
            self.b.stages.iter().filter(|s| s.status == Status::Pending).map(|s| s.name.clone()).collect();
        for stage in stuck {
            if self.over_budget() {
                return;
            }
            self.end_stage(&stage, Status::Skipped, Status::Skipped, Some("never became ready".into()));
        }
        let failed = self.b.stages.iter().filter(|s| s.status == Status::Failed).count();
        let canceled = self.b.stages.iter().any(|s| s.status == Status::Canceled);
        let (to, reason) = if failed > 0 {
            // The first failed stage's own reason (a setup failure such as a missing secret)
            // says more than the count; a failing step's stage has none.
            let first = self.b.stages.iter().find(|s| s.status == Status::Failed && s.reason.is_some());
            let reason = match first.and_then(|s| s.reason.as_deref().map(|r| (&s.name, r))) {
                Some((stage, why)) => format!("{failed} stage(s) failed; {stage}: {why}"),
                None => format!("{failed} stage(s) failed"),
            };
            (Status::Failed, Some(reason))
        } else if canceled {
            (Status::Canceled, None)
        } else {
            (Status::Succeeded, None)
        };
        self.go(Target::Build, to, Patch { reason, ..Patch::default() });
    }
}
