//! Commit statuses: the consumer of a git build's lifecycle that posts them to its host.
//!
//! The fan-in sends a [`NotifyRequest`] (just the build id) whenever a commit of a git
//! build moved the build or a stage, or was a redelivery. The consumer reads the build's
//! history and posts, in history order, a status for each build and stage lifecycle event
//! it has not posted yet: context `kiln` for the build, `kiln/<stage>` per stage. Each
//! lifecycle event is one transition and is recorded once, so a write-once claim on its
//! id makes each status go out once however often the request is redelivered; a post
//! that fails (after the client's own retries) gives its claim back and leaves the
//! request for redelivery, so later statuses never overtake it. Nothing here can fail a
//! build: the build's state is only read.

use crate::git::provider::{CommitStatus, GitHost, StatusState};
use crate::queues::HandleError;
use kiln_domain::git::{credentials_repo, token_name};
use kiln_domain::report::LifecycleData;
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Status};
use kiln_store::{OutMessage, Queue, QueueError, RepoStore, SecretStore, StateStore};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The notify queue's message: look at this build's history again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyRequest {
    pub build: BuildId,
}

/// Queues a request for `build` (FIFO grouped by build, so one build's statuses are
/// posted by one consumer at a time, in order); `dedup` is the event that caused it.
pub async fn request(queue: &dyn Queue, build: &BuildId, dedup: &str) -> Result<(), QueueError> {
    let body = serde_json::to_string(&NotifyRequest { build: build.clone() })
        .map_err(|e| QueueError::Backend(e.to_string()))?;
    queue.send(OutMessage::grouped(body, build.to_string(), format!("notify-{dedup}"))).await
}

/// The status context of the build, and of a stage.
pub const CONTEXT: &str = "kiln";

/// What one lifecycle event posts, if anything: the context, the state and why.
pub fn status_for(data: &LifecycleData) -> Option<(String, StatusState, String)> {
    if data.step.is_some() {
        return None;
    }
    let (context, what) = match &data.stage {
        None => (CONTEXT.to_string(), "the build".to_string()),
        Some(stage) => (format!("{CONTEXT}/{stage}"), format!("stage {stage}")),
    };
    let why = |default: String| data.reason.clone().filter(|r| !r.is_empty()).unwrap_or(default);
    let (state, description) = match data.status {
        Status::Running => (StatusState::Pending, format!("{what} is running")),
        Status::Succeeded => (StatusState::Success, format!("{what} succeeded")),
        Status::Stopped => (StatusState::Success, why(format!("{what} was stopped by an event"))),
        Status::Failed if timed_out(data.reason.as_deref()) => {
            (StatusState::Error, why(format!("{what} timed out")))
        }
        Status::Failed => (StatusState::Failure, why(format!("{what} failed"))),
        Status::Canceled => (StatusState::Error, why(format!("{what} was canceled"))),
        // A stage that never ran (its needs failed) and a queued one: nothing to show.
        Status::Pending | Status::Skipped => return None,
    };
    Some((context, state, description))
}

fn timed_out(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| r.contains("timed out") || r.contains("timeout"))
}

/// What the consumer reads and writes.
#[derive(Clone)]
pub struct Notifier {
    pub state: Arc<dyn StateStore>,
    pub repos: Arc<dyn RepoStore>,
    pub secrets: Arc<dyn SecretStore>,
    /// The base of each status's link: `{public_url}/builds/{id}`.
    pub public_url: String,
}

/// How many history events are read per page.
const PAGE: usize = 500;

impl Notifier {
    /// Handles one [`NotifyRequest`] message body.
    pub async fn handle(&self, body: &str) -> Result<(), HandleError> {
        let req: NotifyRequest = serde_json::from_str(body)
            .map_err(|e| HandleError::Drop(format!("not a notify request: {e}")))?;
        let Some(build) = self.state.get_build(&req.build).await.map_err(retry)? else {
            return Err(HandleError::Drop(format!("notify: unknown build {}", req.build)));
        };
        let Some(git) = &build.git else { return Ok(()) };
        let repo = &build.repo;
        let token = {
            let name = token_name();
            let mut values = self
                .secrets
                .reveal(&credentials_repo(repo), std::slice::from_ref(&name))
                .await
                .map_err(retry)?;
            values.remove(&name)
        };
        let api_url = match self.repos.get_repo(repo).await.map_err(retry)? {
            Some(settings) => settings.api_url,
            None => git.api_url.clone(),
        };
        let host = GitHost::new(git.provider, &api_url, token);
        let mut after = 0;
        loop {
            let page = self.state.events(&build.id, after, PAGE).await.map_err(retry)?;
            for stored in &page {
                after = stored.seq;
                let Ok(Some(data)) = LifecycleData::from_event(&stored.event) else { continue };
                let Some((context, state, description)) = status_for(&data) else { continue };
                let key = format!("status/{}", stored.event.id);
                if self.repos.claim(&key, state.as_str()).await.map_err(retry)?.is_some() {
                    continue;
                }
                let status = CommitStatus {
                    state,
                    context: context.clone(),
                    target_url: Some(self.link(&build)),
                    description: Some(description),
                };
                match host.post_status(&git.repo, &git.commit, &status).await {
                    Ok(()) => {}
                    Err(e) if e.is_transient() => {
                        // Given back, so the redelivered request posts it (and what follows).
                        let _ = self.repos.release(&key).await;
                        return Err(HandleError::Retry(format!(
                            "status {context} {} of build {} on {}: {e}",
                            state.as_str(),
                            build.id,
                            git.provider
                        )));
                    }
                    // The host refused it (a bad token, a repository it does not know):
                    // asking again will not help. Logged; the build is not touched.
                    Err(e) => {
                        tracing::error!(build = %build.id, %context, error = %e, "commit status refused by the host");
                        continue;
                    }
                }
                tracing::info!(build = %build.id, %context, state = state.as_str(), "commit status posted");
            }
            if page.len() < PAGE {
                return Ok(());
            }
        }
    }

    fn link(&self, build: &Build) -> String {
        format!("{}/builds/{}", self.public_url.trim_end_matches('/'), build.id)
    }
}

fn retry(e: impl std::fmt::Display) -> HandleError {
    HandleError::Retry(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_domain::StageName;

    fn data(stage: Option<&str>, status: Status, reason: Option<&str>) -> LifecycleData {
        LifecycleData {
            stage: stage.map(StageName::new),
            template: None,
            step: None,
            status,
            from: None,
            exit_code: None,
            duration_ms: None,
            reason: reason.map(str::to_string),
            trigger: None,
            trigger_type: None,
        }
    }

    #[test]
    fn state_names_are_what_is_posted() {
        for st in [StatusState::Pending, StatusState::Success, StatusState::Failure, StatusState::Error] {
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
    }

    #[test]
    fn lifecycle_events_map_to_statuses() {
        let s = status_for(&data(None, Status::Running, None)).unwrap();
        assert_eq!((s.0.as_str(), s.1), ("kiln", StatusState::Pending));
        let s = status_for(&data(Some("test"), Status::Failed, Some("step unit exited 2"))).unwrap();
        assert_eq!(s, ("kiln/test".to_string(), StatusState::Failure, "step unit exited 2".to_string()));
        let s = status_for(&data(None, Status::Canceled, Some("superseded by b2"))).unwrap();
        assert_eq!((s.1, s.2.as_str()), (StatusState::Error, "superseded by b2"));
        let s = status_for(&data(None, Status::Failed, Some("the build timed out after 2h"))).unwrap();
        assert_eq!(s.1, StatusState::Error);
        assert_eq!(status_for(&data(None, Status::Succeeded, None)).unwrap().1, StatusState::Success);
        assert!(status_for(&data(Some("x"), Status::Skipped, None)).is_none());
        let mut step = data(Some("x"), Status::Running, None);
        step.step = Some(kiln_domain::StepName::new("s"));
        assert!(status_for(&step).is_none());
    }
}
