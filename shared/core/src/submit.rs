//! The compile function: pipeline text → a stored build, and the event that starts it.

use crate::queues::send_event;
use kiln_domain::catalog::{PROVIDERS_ENV, requested_providers};
use kiln_domain::compile::{CompileError, compile};
use kiln_domain::event::{CloudEvent, now_ms};
use kiln_domain::plan::Plan;
use kiln_domain::report::{BuildCreated, Report};
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Repo};
use kiln_store::{Queue, QueueError, StateStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the pipeline has {} error(s)", .0.len())]
    Invalid(Vec<CompileError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Compiles `source` and stores a new pending build of it for `repo`; the fan-in starts
/// it when the `build-created` report arrives.
pub async fn submit(
    state: &dyn StateStore,
    events: &dyn Queue,
    repo: Repo,
    source: &[u8],
) -> Result<Build, SubmitError> {
    let plan = compile(source).map_err(SubmitError::Invalid)?;
    submit_plan(state, events, repo, plan, None).await
}

/// Stores a new pending build of an already compiled `plan` (a stored build's, for
/// "build the missing images") and queues its `build-created` report.
///
/// `providers` restricts the providers its images are built for (`None`: all of them);
/// the caller checks them against the plan. The build records them
/// ([`Build::providers`]), and when the plan has images, steps see the effective list,
/// comma-separated, in `KILN_PROVIDERS` (set in the plan's environment here).
pub async fn submit_plan(
    state: &dyn StateStore,
    events: &dyn Queue,
    repo: Repo,
    plan: Plan,
    providers: Option<Vec<String>>,
) -> Result<Build, SubmitError> {
    let mut build = Build::new(BuildId::generate(), repo, plan, now_ms());
    build.providers = providers;
    if !build.plan.images.is_empty() {
        let list = requested_providers(&build).join(",");
        std::sync::Arc::make_mut(&mut build.plan).env.insert(PROVIDERS_ENV.to_string(), list);
    }
    start_build(state, events, &build, None).await?;
    Ok(build)
}

/// Stores `build` (new, pending) and queues its `build-created` report, after `first`
/// when given (a webhook, recorded as the build's first event: events of one build are
/// handled in the order they were queued).
pub async fn start_build(
    state: &dyn StateStore,
    events: &dyn Queue,
    build: &Build,
    first: Option<&CloudEvent>,
) -> Result<(), SubmitError> {
    state.create_build(build).await?;
    if let Some(first) = first {
        send_event(events, first).await?;
    }
    let created =
        Report::from(BuildCreated { repo: build.repo.to_string(), stages: build.plan.stages.len() })
            .to_event(&build.id, "kiln://compile");
    send_event(events, &created).await?;
    tracing::info!(build = %build.id, repo = %build.repo, "build created");
    Ok(())
}
