//! The compile function: pipeline text → a stored build, and the event that starts it.

use crate::queues::send_event;
use kiln_domain::compile::{CompileError, compile};
use kiln_domain::event::{CloudEvent, now_ms, types};
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Repo};
use kiln_store::{Queue, QueueError, StateStore, StoreError};
use serde_json::json;

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
    let build = Build::new(BuildId::generate(), repo, plan, now_ms());
    state.create_build(&build).await?;
    let created = CloudEvent::new(
        types::BUILD_CREATED,
        "kiln://compile",
        &build.id,
        json!({ "repo": build.repo.to_string(), "stages": build.plan.stages.len() }),
    )
    .with_subject("build");
    send_event(events, &created).await?;
    tracing::info!(build = %build.id, repo = %build.repo, "build created");
    Ok(build)
}
