//! The event fan-in: the only place that changes status. Applies each event to its build
//! through the state machine in `kiln_domain::react`, records the event and the lifecycle
//! events it causes in one commit (idempotent by event id), then asks dispatch to queue
//! whatever stages became ready. It is also the only writer of the image catalog: the
//! records the reaction needs are read first, and its writes go in the same commit.

use crate::queues::{DispatchRequest, HandleError};
use kiln_domain::BuildId;
use kiln_domain::event::{CloudEvent, now_ms};
use kiln_domain::react::{
    CONTINUE, catalog_reads, newly_ready, react, react_catalog, react_owned, ready_stages,
};
use kiln_domain::state::{Build, Target};
use kiln_store::{Commit, CommitOutcome, OutMessage, Queue, StateStore, StoreError};
use std::collections::HashMap;
use std::sync::Mutex;

/// Builds this fan-in has read or written, each with the sequence number of its last event
/// at that moment. Every commit moves the number (`StateStore::build_seq`), so a copy whose
/// number is still the stored one is the stored build: the fan-in then reads the number
/// only (the build's header), not every stage, and an event costs the same in a build of
/// 10 stages or 1,000. A stale copy is never used: it is read afresh. (A commit computed
/// from it would be refused anyway: every transition is conditional on what it read.)
#[derive(Debug, Default)]
pub struct BuildCache {
    builds: Mutex<HashMap<BuildId, (u64, Build)>>,
}

/// Builds kept, at most (the cache is emptied when full: a miss costs one full read).
const CACHED_BUILDS: usize = 32;

impl BuildCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BuildId, (u64, Build)>> {
        self.builds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the copy of `id` if it is at `seq` (a concurrent handler of the same build in
    /// this process finds none and reads the store).
    fn take(&self, id: &BuildId, seq: u64) -> Option<Build> {
        let mut builds = self.lock();
        match builds.remove(id) {
            Some((at, b)) if at == seq => Some(b),
            _ => None,
        }
    }

    fn put(&self, id: BuildId, seq: u64, build: Build) {
        let mut builds = self.lock();
        if builds.len() >= CACHED_BUILDS && !builds.contains_key(&id) {
            builds.clear();
        }
        builds.insert(id, (seq, build));
    }
}

/// The build as stored now: the cached copy if it is current, else read whole.
async fn current(
    state: &dyn StateStore,
    cache: &BuildCache,
    id: &BuildId,
) -> Result<Option<(Build, u64)>, StoreError> {
    let Some(seq) = state.build_seq(id).await? else { return Ok(None) };
    if let Some(b) = cache.take(id, seq) {
        return Ok(Some((b, seq)));
    }
    state.get_build_seq(id).await
}

/// How often a commit that lost a race is recomputed before the message is retried.
const MAX_CONFLICT_RETRIES: usize = 5;

/// Applies one event. Safe to call again with the same event: the second call commits
/// nothing, but still re-sends dispatch requests for ready stages (dispatch is
/// idempotent), so a crash between commit and dispatch loses nothing.
///
/// `notify`: the commit-status queue; a git build whose build or stage moved (or a
/// redelivery, whose first delivery may have stopped short of it) gets a request there.
pub async fn handle_event(
    state: &dyn StateStore,
    cache: &BuildCache,
    events: &dyn Queue,
    dispatch: &dyn Queue,
    notify: Option<&dyn Queue>,
    event: &CloudEvent,
) -> Result<(), HandleError> {
    let Some(id) = event.kilnbuild.clone() else {
        return Err(HandleError::Drop(format!("event {} has no build", event.id)));
    };
    let mut after = None;
    let mut moved = false;
    let mut ready = Vec::new();
    let mut go_on = false;
    for _ in 0..MAX_CONFLICT_RETRIES {
        let (build, _) = current(state, cache, &id)
            .await
            .map_err(retry)?
            .ok_or_else(|| HandleError::Drop(format!("event {} for unknown build {id}", event.id)))?;
        let now = now_ms();
        // The catalog's rules look at the build's header and plan only.
        let before = build.without_stages();
        let mut reaction = react_owned(build, event, now);
        let mut records = Vec::new();
        for image in catalog_reads(&before, event, &reaction) {
            records.extend(state.get_image(&image).await.map_err(retry)?);
        }
        react_catalog(&before, event, &mut reaction, &records, now);
        for why in &reaction.refused {
            tracing::warn!(build = %id, event = %event.id, r#type = %event.ty, "refused: {why}");
        }
        for why in &reaction.ignored {
            tracing::info!(build = %id, event = %event.id, r#type = %event.ty, "already ended: {why}");
        }
        let entity_moved = reaction.transitions.iter().any(|t| !matches!(t.target, Target::Step { .. }));
        let mut events = Vec::with_capacity(reaction.events.len() + 1);
        events.push(event.clone());
        events.extend(reaction.events);
        let commit = Commit {
            event_id: event.id.clone(),
            transitions: reaction.transitions.clone(),
            new_stages: reaction.new_stages.clone(),
            events,
            images: reaction.catalog,
            arrivals: reaction.arrivals,
        };
        let recorded = commit.events.len() as u64;
        match state.commit(&id, &commit).await {
            Ok(CommitOutcome::Applied { first_seq }) => {
                tracing::debug!(build = %id, event = %event.id, r#type = %event.ty, seq = first_seq, "applied");
                let Some(b) = reaction.after else { break };
                // The stages this commit made ready; those ready before were sent for by
                // the event that made them so (or its redelivery, below).
                ready = newly_ready(&b, &reaction.transitions, &reaction.new_stages);
                go_on = reaction.unfinished;
                moved = entity_moved;
                after = Some(b.git.is_some());
                cache.put(id.clone(), first_seq + recorded - 1, b);
                break;
            }
            Ok(CommitOutcome::Duplicate) => {
                // A redelivery: its first delivery may have stopped before sending for the
                // stages it made ready, so every ready stage is sent for again (dispatch
                // queues each once).
                tracing::info!(build = %id, event = %event.id, "duplicate event: nothing to apply");
                if let Some((b, seq)) = state.get_build_seq(&id).await.map_err(retry)? {
                    ready = ready_stages(&b);
                    // Its first delivery may also have stopped before sending the
                    // continuation of an unfinished reaction.
                    go_on = !react(&b, &continuation(&id, &event.id), now_ms()).transitions.is_empty();
                    after = Some(b.git.is_some());
                    cache.put(id.clone(), seq, b);
                }
                moved = true;
                break;
            }
            Err(StoreError::Conflict(e)) => {
                tracing::info!(build = %id, event = %event.id, "commit lost a race ({e}); recomputing");
            }
            Err(e) => return Err(retry(e)),
        }
    }
    let Some(is_git) = after else {
        return Err(HandleError::Retry(format!("event {} kept conflicting", event.id)));
    };
    if let (Some(q), true, true) = (notify, moved, is_git) {
        crate::notify::request(q, &id, &event.id).await.map_err(retry)?;
    }
    if go_on {
        crate::queues::send_event(events, &continuation(&id, &event.id)).await.map_err(retry)?;
    }
    for stage in ready {
        let req = DispatchRequest { build: id.clone(), stage };
        let body = serde_json::to_string(&req).map_err(|e| HandleError::Drop(e.to_string()))?;
        dispatch.send(OutMessage::new(body)).await.map_err(retry)?;
    }
    Ok(())
}

/// The event that goes on with an unfinished reaction (`Reaction::unfinished`). Its id is
/// derived from the event it follows, so a redelivery sends the same one (and the store
/// applies it once); see [`continuation_id`].
fn continuation(build: &BuildId, after: &str) -> CloudEvent {
    let mut e = CloudEvent::new(CONTINUE, "kiln://fanin", build, serde_json::json!({ "after": after }));
    e.id = continuation_id(after);
    e
}

/// `<event id>+c1` after an event, `+c2` after that one, and so on: a chain of any length
/// keeps ids a few characters longer than the event that started it (an SQS deduplication
/// id takes at most 128).
fn continuation_id(after: &str) -> String {
    match after.rsplit_once("+c").map(|(root, n)| (root, n.parse::<u64>())) {
        Some((root, Ok(n))) => format!("{root}+c{}", n + 1),
        _ => format!("{after}+c1"),
    }
}

fn retry(e: impl std::fmt::Display) -> HandleError {
    HandleError::Retry(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::continuation_id;

    #[test]
    fn continuation_ids_count_and_stay_short() {
        let first = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(continuation_id(first), format!("{first}+c1"));
        let mut id = first.to_string();
        for _ in 0..1000 {
            id = continuation_id(&id);
        }
        assert_eq!(id, format!("{first}+c1000"));
        assert!(id.len() <= 128, "{}", id.len());
        // An id that merely contains "+c" followed by text is not a continuation's.
        assert_eq!(continuation_id("a+cat"), "a+cat+c1");
    }
}
