//! The one state machine for builds, stages and steps.
//!
//! ```text
//! pending ──▶ running ──▶ succeeded | failed | canceled | stopped
//!    └──────▶ skipped | canceled | failed
//! ```
//! Terminal states never change again. Only the event fan-in applies transitions.

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
            Pending => matches!(to, Running | Skipped | Canceled | Failed),
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
}
