//! The event fan-in: the only place that changes status. Applies each event to its build
//! through the state machine in `kiln_domain::react`, records the event and the lifecycle
//! events it causes in one commit (idempotent by event id), then asks dispatch to queue
//! whatever stages became ready. It is also the only writer of the image catalog: the
//! records the reaction needs are read first, and its writes go in the same commit.

use crate::queues::{DispatchRequest, HandleError};
use kiln_domain::event::{CloudEvent, now_ms};
use kiln_domain::react::{catalog_reads, react, react_catalog, ready_stages};
use kiln_domain::state::Target;
use kiln_store::{Commit, CommitOutcome, OutMessage, Queue, StateStore, StoreError};

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
    dispatch: &dyn Queue,
    notify: Option<&dyn Queue>,
    event: &CloudEvent,
) -> Result<(), HandleError> {
    let Some(id) = event.kilnbuild.clone() else {
        return Err(HandleError::Drop(format!("event {} has no build", event.id)));
    };
    let mut after = None;
    let mut moved = false;
    for _ in 0..MAX_CONFLICT_RETRIES {
        let build = state
            .get_build(&id)
            .await
            .map_err(retry)?
            .ok_or_else(|| HandleError::Drop(format!("event {} for unknown build {id}", event.id)))?;
        let now = now_ms();
        let mut reaction = react(&build, event, now);
        let mut records = Vec::new();
        for image in catalog_reads(&build, event, &reaction) {
            records.extend(state.get_image(&image).await.map_err(retry)?);
        }
        react_catalog(&build, event, &mut reaction, &records, now);
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
            transitions: reaction.transitions,
            new_stages: reaction.new_stages,
            events,
            images: reaction.catalog,
            arrivals: reaction.arrivals,
        };
        match state.commit(&id, &commit).await {
            Ok(CommitOutcome::Applied { first_seq }) => {
                tracing::debug!(build = %id, event = %event.id, r#type = %event.ty, seq = first_seq, "applied");
                after = reaction.after;
                moved = entity_moved;
                break;
            }
            Ok(CommitOutcome::Duplicate) => {
                tracing::info!(build = %id, event = %event.id, "duplicate event: nothing to apply");
                after = state.get_build(&id).await.map_err(retry)?;
                moved = true;
                break;
            }
            Err(StoreError::Conflict(e)) => {
                tracing::info!(build = %id, event = %event.id, "commit lost a race ({e}); recomputing");
            }
            Err(e) => return Err(retry(e)),
        }
    }
    let Some(after) = after else {
        return Err(HandleError::Retry(format!("event {} kept conflicting", event.id)));
    };
    if let (Some(q), true, Some(_)) = (notify, moved, &after.git) {
        crate::notify::request(q, &id, &event.id).await.map_err(retry)?;
    }
    for stage in ready_stages(&after) {
        let req = DispatchRequest { build: id.clone(), stage };
        let body = serde_json::to_string(&req).map_err(|e| HandleError::Drop(e.to_string()))?;
        dispatch.send(OutMessage::new(body)).await.map_err(retry)?;
    }
    Ok(())
}

fn retry(e: impl std::fmt::Display) -> HandleError {
    HandleError::Retry(e.to_string())
}
