//! `needs`: which stages may run, which never can, and when the build has nothing left.

use super::Reactor;
use crate::ids::StageName;
use crate::state::{Build, Patch, StageState, Target};
use crate::status::Status;

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

impl Reactor {
    /// Skips pending stages whose needs ended without success, and so on down the graph.
    pub(super) fn skip_broken(&mut self) {
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
    }

    /// Ends the build once every stage has ended and nothing can start. Event-triggered
    /// stages do not hold a build open by themselves: once everything else has ended, a
    /// later event finds the build over.
    pub(super) fn settle(&mut self) {
        if self.b.status != Status::Running {
            return;
        }
        self.skip_broken();
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
