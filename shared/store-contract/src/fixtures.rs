//! Fixtures the checks share: a sample plan and build, fresh repositories, events.

use kiln_domain::event::{CloudEvent, StoredEvent, now_ms};
use kiln_domain::plan::{
    DEFAULT_BUILD_TIMEOUT_MS, DEFAULT_STAGE_TIMEOUT_MS, Plan, RunsOn, StagePlan, StepPlan,
};
use kiln_domain::state::{Build, Patch, Target, Transition};
use kiln_domain::{BuildId, Repo, StageName, Status};
use kiln_store::{Commit, StateStore};

/// A plan of two stages: `build` (steps `compile` 1, `package` 2) and `test`, which
/// `needs` build (steps `unit` 3, `lint` 4).
pub fn sample_plan() -> Plan {
    let stage = |name: &str, needs: &[&str], steps: &[(&str, u32)]| StagePlan {
        name: name.into(),
        needs: needs.iter().map(|n| StageName::new(*n)).collect(),
        runs_on: RunsOn::Lambda,
        timeout_ms: DEFAULT_STAGE_TIMEOUT_MS,
        env: Default::default(),
        steps: steps
            .iter()
            .map(|(n, number)| StepPlan {
                name: (*n).into(),
                number: *number,
                commands: vec![format!("echo {n}")],
                env: Default::default(),
                timeout_ms: None,
                secrets: Vec::new(),
            })
            .collect(),
        services: Vec::new(),
        triggers: Vec::new(),
        checkout: true,
    };
    Plan {
        version: "1".to_string(),
        env: Default::default(),
        stages: vec![
            stage("build", &[], &[("compile", 1), ("package", 2)]),
            stage("test", &["build"], &[("unit", 3), ("lint", 4)]),
        ],
        images: Vec::new(),
        timeout_ms: DEFAULT_BUILD_TIMEOUT_MS,
        git: None,
        cancel_superseded: false,
    }
}

/// A new pending build of [`sample_plan`] in `acme/web`.
pub fn sample_build() -> Build {
    sample_build_in(&Repo::new("acme", "web"))
}

/// A new pending build of [`sample_plan`] in `repo`.
pub fn sample_build_in(repo: &Repo) -> Build {
    Build::new(BuildId::generate(), repo.clone(), sample_plan(), now_ms())
}

/// A repository no other check uses: `acme/web-<random>`.
pub fn unique_repo() -> Repo {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Repo::new("acme", format!("web-{}", &id[..12]))
}

/// An event of type `ty` for `build`, with a fresh id.
pub fn sample_event(build: &BuildId, ty: &str) -> CloudEvent {
    CloudEvent::new(ty, "/kiln/contract", build, serde_json::json!({ "n": 1 }))
}

pub(crate) fn stage(name: &str) -> Target {
    Target::Stage { stage: name.into() }
}

pub(crate) fn step(stage: &str, step: &str) -> Target {
    Target::Step { stage: stage.into(), step: step.into() }
}

pub(crate) fn tr(target: Target, from: Status, to: Status) -> Transition {
    Transition { target, from, to, patch: Patch { at_ms: now_ms(), ..Patch::default() } }
}

pub(crate) fn commit(event_id: &str, transitions: Vec<Transition>, events: Vec<CloudEvent>) -> Commit {
    Commit {
        event_id: event_id.to_string(),
        transitions,
        new_stages: Vec::new(),
        events,
        images: Vec::new(),
        arrivals: None,
    }
}

pub(crate) async fn created(s: &dyn StateStore, repo: &Repo) -> Build {
    let b = sample_build_in(repo);
    s.create_build(&b).await.expect("create_build");
    b
}

pub(crate) async fn get(s: &dyn StateStore, id: &BuildId) -> Build {
    s.get_build(id).await.expect("get_build").expect("the build exists")
}

pub(crate) async fn all_events(s: &dyn StateStore, id: &BuildId) -> Vec<StoredEvent> {
    s.events(id, 0, 10_000).await.expect("events")
}
