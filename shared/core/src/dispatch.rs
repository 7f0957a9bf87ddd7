//! Dispatch: turns a ready stage into a job on the jobs queue, once.

use crate::job::Job;
use crate::queues::{DispatchRequest, HandleError};
use crate::tokens::TokenSigner;
use kiln_domain::Status;
use kiln_domain::event::now_ms;
use kiln_store::{OutMessage, Queue, StateStore};

/// How long a runner token outlives its stage's timeout.
const TOKEN_SLACK_MS: u64 = 30 * 60 * 1000;

/// Queues the stage's job unless it was queued before. The job is sent before the stage
/// is marked dispatched: a crash in between sends it again, and the runner's claim turns
/// the second copy away; the other order could lose the job.
pub async fn handle_dispatch(
    state: &dyn StateStore,
    jobs: &dyn Queue,
    signer: Option<&TokenSigner>,
    req: &DispatchRequest,
) -> Result<(), HandleError> {
    let retry = |e: &dyn std::fmt::Display| HandleError::Retry(e.to_string());
    // The build's header, plan and this one stage: dispatch costs the same whatever the
    // build's size.
    let build = state
        .get_build_part(&req.build, std::slice::from_ref(&req.stage))
        .await
        .map_err(|e| retry(&e))?
        .ok_or_else(|| HandleError::Drop(format!("dispatch for unknown build {}", req.build)))?;
    let Some(stage) = build.stage(req.stage.as_str()) else {
        return Err(HandleError::Drop(format!("dispatch for unknown stage {} of {}", req.stage, req.build)));
    };
    if stage.dispatched || stage.status != Status::Pending || build.status != Status::Running {
        return Ok(());
    }
    let Some(plan) = build.plan.stage(stage.name.template()) else {
        return Err(HandleError::Drop(format!("stage {} is not in the plan", stage.name)));
    };
    let job = Job {
        build: build.id.clone(),
        repo: build.repo.clone(),
        stage: stage.name.clone(),
        plan: plan.clone(),
        env: build.plan.env.clone(),
        trigger_event: stage.trigger_event.clone(),
        deadline_ms: Some(build.created_ms + build.plan.timeout_ms),
        // Valid for as long as the stage may run, plus slack for queueing and retries.
        token: signer.map(|s| s.sign(&build.id, now_ms() + plan.timeout_ms + TOKEN_SLACK_MS)),
        secrets_allowed: build.secrets_allowed,
        git: build.git.clone(),
    };
    let body = serde_json::to_string(&job).map_err(|e| HandleError::Drop(e.to_string()))?;
    jobs.send(OutMessage::new(body)).await.map_err(|e| retry(&e))?;
    state.mark_dispatched(&build.id, &stage.name).await.map_err(|e| retry(&e))?;
    tracing::info!(build = %build.id, stage = %stage.name, "job queued");
    Ok(())
}
