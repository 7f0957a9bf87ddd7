//! The job message: one stage of one build, as dispatch puts it on the jobs queue.

use kiln_domain::event::CloudEvent;
use kiln_domain::plan::StagePlan;
use kiln_domain::{BuildId, Repo, StageName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub build: BuildId,
    pub repo: Repo,
    /// The stage instance to run (`test`, or `heads#2` for an event-triggered instance).
    pub stage: StageName,
    /// The stage's plan: steps, services, timeouts.
    pub plan: StagePlan,
    /// The pipeline's environment (the stage's and steps' own env go over it).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The event that started this instance, for event-triggered stages.
    #[serde(default)]
    pub trigger_event: Option<CloudEvent>,
    /// When the build's own timeout runs out (ms since the epoch): the stage stops then
    /// even if its own timeout is later.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// The runner's token for log ingest and events, scoped to this build; set when the
    /// runner talks to Kiln over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The build's `secrets_allowed`: false, the runner fetches no secret (the values
    /// themselves never travel in a job message).
    #[serde(default = "yes")]
    pub secrets_allowed: bool,
    /// The build's git event: the runner checks its commit out (unless the stage says
    /// `checkout: false`) and steps see `KILN_COMMIT`, `KILN_BRANCH`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<kiln_domain::git::GitInfo>,
}

fn yes() -> bool {
    true
}

impl Job {
    /// Whether the runner checks a commit out before the stage's first step.
    pub fn wants_checkout(&self) -> bool {
        self.git.is_some() && self.plan.checkout
    }
}
