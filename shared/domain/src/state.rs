//! The state of a build as stored: the build, its stages (and stage instances) and their
//! steps, each with a [`Status`]. Changed only through [`Transition`]s applied by the fan-in.

use crate::ids::{BuildId, Repo, StageName, StepName};
use crate::plan::Plan;
use crate::status::Status;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    pub id: BuildId,
    pub repo: Repo,
    pub status: Status,
    pub created_ms: u64,
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// Why the build ended as it did, when that is not obvious from its stages.
    #[serde(default)]
    pub reason: Option<String>,
    /// Shared, never changed once the build exists: cloning a build does not copy it, and
    /// stores keep it apart from the build's hot items.
    pub plan: Arc<Plan>,
    pub stages: Vec<StageState>,
    /// The providers this build was asked to build its images for (`POST
    /// /v1/images/{name}/builds`); `None`: every provider of each image. Steps see the list
    /// in `KILN_PROVIDERS` (see `catalog::requested_providers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
    /// Events that arrived for fan-in triggers still waiting for the rest of their set,
    /// by trigger (`stage/index`) and event type.
    #[serde(default, skip_serializing_if = "Arrivals::is_empty")]
    pub arrivals: Arrivals,
    /// Whether the build's runners may fetch the repository's secrets: false for builds of
    /// pull requests from forks, whose runners then get no secret (a stage that declares
    /// one fails before its first step).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub secrets_allowed: bool,
    /// The git event this build is of (a webhook's push or pull request): its stages
    /// check the commit out, and its statuses are posted back to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<crate::git::GitInfo>,
    /// The commit's pipeline did not compile: the build fails as soon as it is created,
    /// with the errors (line and column) as its reason. Its plan is empty.
    #[serde(default, skip_serializing_if = "is_false")]
    pub compile_failed: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageState {
    /// The stage's name; for an instance of an event-triggered stage, `name#n`.
    pub name: StageName,
    pub status: Status,
    /// Which run of the job this is: 1, or more after a runner was lost mid-job.
    #[serde(default)]
    pub attempt: u32,
    /// Set once dispatch has queued the job, so a redelivered dispatch queues nothing.
    #[serde(default)]
    pub dispatched: bool,
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub finished_ms: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The event that started this instance (event-triggered stages only).
    #[serde(default)]
    pub trigger_event: Option<crate::event::CloudEvent>,
    /// The runner holding the job, and until when (ms since epoch) its lease runs.
    #[serde(default)]
    pub lease: Option<Lease>,
    pub steps: Vec<StepState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub runner: String,
    pub attempt: u32,
    pub until_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub name: StepName,
    pub number: u32,
    pub status: Status,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub finished_ms: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// [`Build::is_settled`] for callers that hold only the statuses (a view of a build).
pub fn is_settled(build: Status, stages: impl IntoIterator<Item = Status>) -> bool {
    build.is_terminal() && stages.into_iter().all(Status::is_terminal)
}

impl Build {
    /// A new build of `plan`: everything pending, one stage state per stage that is
    /// started by `needs` (event-triggered stages get instances when events arrive).
    pub fn new(id: BuildId, repo: Repo, plan: Plan, now_ms: u64) -> Self {
        let stages = plan
            .stages
            .iter()
            .filter(|s| !s.is_event_triggered())
            .map(|s| StageState::new(s.name.clone(), s, None))
            .collect();
        Self {
            id,
            repo,
            status: Status::Pending,
            created_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            reason: None,
            plan: Arc::new(plan),
            stages,
            providers: None,
            arrivals: Arrivals::new(),
            secrets_allowed: true,
            git: None,
            compile_failed: false,
        }
    }

    /// The build without its stages and with an empty plan: what a store keeps as the
    /// build's header, small whatever the build's size (the stages and the plan are kept
    /// apart). Every field is named here, so a new one cannot be left out unnoticed.
    pub fn header(&self) -> Build {
        Build { plan: Arc::new(Plan::default()), ..self.without_stages() }
    }

    /// The build without its stages, sharing its plan: cheap whatever the build's size.
    pub fn without_stages(&self) -> Build {
        Build {
            id: self.id.clone(),
            repo: self.repo.clone(),
            status: self.status,
            created_ms: self.created_ms,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            reason: self.reason.clone(),
            plan: self.plan.clone(),
            stages: Vec::new(),
            providers: self.providers.clone(),
            arrivals: self.arrivals.clone(),
            secrets_allowed: self.secrets_allowed,
            git: self.git.clone(),
            compile_failed: self.compile_failed,
        }
    }

    pub fn stage(&self, name: &str) -> Option<&StageState> {
        self.stages.iter().find(|s| s.name.as_str() == name)
    }

    pub fn stage_mut(&mut self, name: &str) -> Option<&mut StageState> {
        self.stages.iter_mut().find(|s| s.name.as_str() == name)
    }

    /// Whether the build has settled: it and every stage (instance) have ended, so
    /// nothing about it changes any more. The build itself ends first (a cancel ends it
    /// at once) while its running stages wait for their runners' last reports.
    pub fn is_settled(&self) -> bool {
        is_settled(self.status, self.stages.iter().map(|s| s.status))
    }

    /// The status of an entity, if it exists.
    pub fn status_of(&self, target: &Target) -> Option<Status> {
        match target {
            Target::Build => Some(self.status),
            Target::Stage { stage } => self.stage(stage.as_str()).map(|s| s.status),
            Target::Step { stage, step } => self
                .stage(stage.as_str())
                .and_then(|s| s.steps.iter().find(|x| x.name == *step))
                .map(|s| s.status),
        }
    }

    /// The one exception to "terminal states never change": when a stage's runner was
    /// lost and its job runs again as a later attempt, the running stage takes the new
    /// attempt number and its steps go back to pending. What the earlier attempt did
    /// stays in the history (and its logs, kept per attempt).
    fn is_retry(&self, t: &Transition) -> bool {
        let Some(attempt) = t.patch.attempt else { return false };
        match &t.target {
            Target::Stage { stage } => {
                t.from == Status::Running
                    && t.to == Status::Running
                    && self.stage(stage.as_str()).is_some_and(|s| attempt > s.attempt)
            }
            Target::Step { stage, .. } => {
                t.to == Status::Pending
                    && self
                        .stage(stage.as_str())
                        .is_some_and(|s| s.status == Status::Running && s.attempt == attempt)
            }
            Target::Build => false,
        }
    }

    /// Applies one transition in memory: checks that the entity is in `from` and that
    /// `from → to` is legal. Both backends use this, so they refuse the same things.
    pub fn apply(&mut self, t: &Transition) -> Result<(), TransitionError> {
        let current = self.status_of(&t.target).ok_or_else(|| TransitionError::Missing(t.target.clone()))?;
        if current != t.from {
            return Err(TransitionError::Stale {
                target: t.target.clone(),
                expected: t.from,
                actual: current,
            });
        }
        if !self.is_retry(t) {
            t.from.transition(t.to).map_err(|e| TransitionError::Illegal {
                target: t.target.clone(),
                from: e.from,
                to: e.to,
            })?;
        }
        let p = &t.patch;
        match &t.target {
            Target::Build => {
                self.status = t.to;
                set_times(&mut self.started_ms, &mut self.finished_ms, t.to, p.at_ms);
                if p.reason.is_some() {
                    self.reason.clone_from(&p.reason);
                }
            }
            Target::Stage { stage: name } => {
                let s = self.stage_mut(name.as_str()).expect("checked above");
                s.status = t.to;
                set_times(&mut s.started_ms, &mut s.finished_ms, t.to, p.at_ms);
                if let Some(a) = p.attempt {
                    s.attempt = a;
                }
                if p.reason.is_some() {
                    s.reason.clone_from(&p.reason);
                }
            }
            Target::Step { stage, step } => {
                let s = self.stage_mut(stage.as_str()).expect("checked above");
                let s = s.steps.iter_mut().find(|x| x.name == *step).expect("checked above");
                s.status = t.to;
                set_times(&mut s.started_ms, &mut s.finished_ms, t.to, p.at_ms);
                if p.exit_code.is_some() {
                    s.exit_code = p.exit_code;
                }
                if p.duration_ms.is_some() {
                    s.duration_ms = p.duration_ms;
                }
                if p.reason.is_some() {
                    s.reason.clone_from(&p.reason);
                }
            }
        }
        Ok(())
    }
}

fn set_times(started: &mut Option<u64>, finished: &mut Option<u64>, to: Status, at: u64) {
    if to == Status::Running {
        *started = Some(at);
    } else if to.is_terminal() {
        *finished = Some(at);
    }
}

impl StageState {
    pub fn new(
        name: StageName,
        plan: &crate::plan::StagePlan,
        trigger_event: Option<crate::event::CloudEvent>,
    ) -> Self {
        Self {
            name,
            status: Status::Pending,
            attempt: 0,
            dispatched: false,
            started_ms: None,
            finished_ms: None,
            reason: None,
            trigger_event,
            lease: None,
            steps: plan
                .steps
                .iter()
                .map(|s| StepState {
                    name: s.name.clone(),
                    number: s.number,
                    status: Status::Pending,
                    exit_code: None,
                    duration_ms: None,
                    started_ms: None,
                    finished_ms: None,
                    reason: None,
                })
                .collect(),
        }
    }
}

/// Events waiting for fan-in triggers: trigger key (`stage/index`) → event type → event.
pub type Arrivals =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, crate::event::CloudEvent>>;

/// What a transition changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    Build,
    Stage { stage: StageName },
    Step { stage: StageName, step: StepName },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Build => f.write_str("build"),
            Target::Stage { stage } => write!(f, "stage {stage}"),
            Target::Step { stage, step } => write!(f, "step {stage}/{step}"),
        }
    }
}

/// One conditional state change: applied only if the entity is still in `from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub target: Target,
    pub from: Status,
    pub to: Status,
    #[serde(default)]
    pub patch: Patch,
}

/// Fields recorded with a transition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    /// When it happened (ms since epoch): sets started or finished time.
    pub at_ms: u64,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    pub reason: Option<String>,
    pub attempt: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransitionError {
    #[error("{0} does not exist")]
    Missing(Target),
    #[error("{target} is {actual}, not {expected}")]
    Stale { target: Target, expected: Status, actual: Status },
    #[error("{target}: illegal transition {from} -> {to}")]
    Illegal { target: Target, from: Status, to: Status },
    /// A catalog write lost: the image's record is not at the version the writer read.
    #[error("image {image}/{provider} is at version {actual}, not {expected}")]
    StaleImage { image: String, provider: String, expected: u64, actual: u64 },
}
