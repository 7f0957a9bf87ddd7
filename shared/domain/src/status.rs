//! The one state machine for builds, stages and steps.
//!
//! ```text
//! pending ──▶ running ──▶ succeeded | failed | canceled | stopped
//!    └──────▶ skipped | canceled | failed | stopped
//! ```
//! Terminal states never change again. Only the event fan-in applies transitions.
//! [`ImageStatus`], the catalog's refinement of it for images, is below.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Succeeded,
    Failed,
    Canceled,
    Skipped,
    /// Ended by a `delete` event trigger: not a failure.
    Stopped,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Canceled,
        Status::Skipped,
        Status::Stopped,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Pending | Status::Running)
    }

    /// Whether this outcome counts as success for stages that `need` it.
    pub fn is_success(self) -> bool {
        matches!(self, Status::Succeeded | Status::Stopped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
            Status::Skipped => "skipped",
            Status::Stopped => "stopped",
        }
    }

    /// Whether `self → to` is a legal transition.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        match self {
            Pending => matches!(to, Running | Skipped | Canceled | Failed | Stopped),
            Running => matches!(to, Succeeded | Failed | Canceled | Stopped),
            _ => false,
        }
    }

    /// Checks a transition, returning the error the fan-in logs and refuses.
    pub fn transition(self, to: Status) -> Result<Status, IllegalTransition> {
        if self.can_become(to) { Ok(to) } else { Err(IllegalTransition { from: self, to }) }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition {from} -> {to}")]
pub struct IllegalTransition {
    pub from: Status,
    pub to: Status,
}

/// The status of one image for one provider in the catalog, within one build:
///
/// ```text
/// queued ──▶ building ──▶ pushing ──▶ complete | failed
///    │          └────────────┴──────▶ complete | failed
///    └──────────────────────────────▶ complete | failed
/// ```
/// `building → building` and `pushing → pushing` are progress: the percent must rise.
/// Within a build, `complete` and `failed` never change.
///
/// It follows the shared machine ([`ImageStatus::lifecycle`]: queued is pending, building
/// and pushing are running, complete is succeeded) but is an enum of its own, for two
/// reasons: a catalog record outlives its build (a newer build queues a complete image
/// again, while a terminal [`Status`] never changes), and progress moves a record within
/// `running` (building 40% → building 60% → pushing), which [`Status`] has no states for.
/// Across builds the rule is not a transition but an order: a newer build supersedes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatus {
    Queued,
    Building,
    Pushing,
    Complete,
    Failed,
}

impl ImageStatus {
    pub const ALL: [ImageStatus; 5] = [
        ImageStatus::Queued,
        ImageStatus::Building,
        ImageStatus::Pushing,
        ImageStatus::Complete,
        ImageStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Queued => "queued",
            ImageStatus::Building => "building",
            ImageStatus::Pushing => "pushing",
            ImageStatus::Complete => "complete",
            ImageStatus::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, ImageStatus::Complete | ImageStatus::Failed)
    }

    /// The state of the shared machine this status is a refinement of.
    pub fn lifecycle(self) -> Status {
        match self {
            ImageStatus::Queued => Status::Pending,
            ImageStatus::Building | ImageStatus::Pushing => Status::Running,
            ImageStatus::Complete => Status::Succeeded,
            ImageStatus::Failed => Status::Failed,
        }
    }

    /// Whether `self → to` is legal within one build (see the diagram above).
    pub fn can_become(self, to: ImageStatus) -> bool {
        use ImageStatus::*;
        match self {
            Queued => matches!(to, Building | Pushing | Complete | Failed),
            Building => matches!(to, Building | Pushing | Complete | Failed),
            Pushing => matches!(to, Pushing | Complete | Failed),
            Complete | Failed => false,
        }
    }
}

impl fmt::Display for ImageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_never_change() {
        for from in Status::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in Status::ALL {
                assert!(from.transition(to).is_err(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn no_self_transitions_and_no_way_back() {
        for s in Status::ALL {
            assert!(!s.can_become(s));
            assert!(!s.can_become(Status::Pending));
        }
        assert!(!Status::Pending.can_become(Status::Succeeded));
        assert_eq!(Status::Running.transition(Status::Succeeded), Ok(Status::Succeeded));
    }

    #[test]
    fn image_statuses_follow_the_shared_machine() {
        for from in ImageStatus::ALL {
            for to in ImageStatus::ALL {
                if from.can_become(to) && from.lifecycle() != to.lifecycle() {
                    // Every move between lifecycle states is one the shared machine allows,
                    // except queued → complete: a step may report a result without progress.
                    let shared = from.lifecycle().can_become(to.lifecycle());
                    assert!(
                        shared || (from, to) == (ImageStatus::Queued, ImageStatus::Complete),
                        "{from} -> {to}"
                    );
                }
            }
            if from.is_terminal() {
                assert!(ImageStatus::ALL.iter().all(|&to| !from.can_become(to)), "{from} is terminal");
            }
            assert!(!from.can_become(ImageStatus::Queued), "nothing goes back to queued within a build");
        }
        assert!(!ImageStatus::Pushing.can_become(ImageStatus::Building));
    }
}
