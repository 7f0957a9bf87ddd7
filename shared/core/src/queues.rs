//! The wire format of the three queues, defined once for producers and consumers, and the
//! loop that serves a queue with a handler.

use kiln_domain::event::CloudEvent;
use kiln_domain::{BuildId, StageName};
use kiln_store::{OutMessage, Queue, QueueError, Received};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Events queue: one CloudEvent per message; FIFO, grouped by build, deduplicated by id.
pub async fn send_event(q: &dyn Queue, e: &CloudEvent) -> Result<(), QueueError> {
    let group = e.kilnbuild.as_ref().map(|b| b.to_string()).unwrap_or_default();
    let body = serde_json::to_string(e).map_err(|err| QueueError::Backend(err.to_string()))?;
    q.send(OutMessage::grouped(body, group, e.id.clone())).await
}

/// Dispatch queue: a stage the fan-in found ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchRequest {
    pub build: BuildId,
    pub stage: StageName,
}

/// What a handler says about a message it could not handle.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Leave the message: it comes back after its visibility timeout.
    #[error("retry later: {0}")]
    Retry(String),
    /// The message can never be handled (malformed): drop it, loudly.
    #[error("dropped: {0}")]
    Drop(String),
}

/// How a queue's messages may be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Each message on its own, up to the concurrency limit.
    Any,
    /// A received batch in order, one message after the other; a message left for retry
    /// leaves the rest of its batch too. For FIFO queues: SQS may hand over several
    /// messages of one group in a batch, and they must not overtake each other. Batches
    /// run in parallel (a group's later messages stay locked while a batch holds some).
    Fifo,
}

/// Handles one message: deletes it unless the handler asks for a retry. Returns whether
/// it was deleted (or dropped).
async fn handle_one<F, Fut>(name: &'static str, queue: &dyn Queue, handler: &F, msg: Received) -> bool
where
    F: Fn(Received) -> Fut,
    Fut: Future<Output = Result<(), HandleError>>,
{
    let receipt = msg.receipt.clone();
    match handler(msg).await {
        Ok(()) => {}
        Err(HandleError::Retry(why)) => {
            tracing::warn!(queue = name, %why, "message left for redelivery");
            return false;
        }
        Err(HandleError::Drop(why)) => tracing::error!(queue = name, %why, "message dropped"),
    }
    if let Err(e) = queue.delete(&receipt).await {
        tracing::warn!(queue = name, error = %e, "delete failed; the message will come back");
    }
    true
}

/// Receives from `queue` until `shutdown` turns true, running `handler` on the messages
/// with at most `concurrency` tasks at a time, in the given `order`. Handled (or dropped)
/// messages are deleted; a `Retry` leaves the message for redelivery.
pub async fn serve<F, Fut>(
    name: &'static str,
    queue: Arc<dyn Queue>,
    concurrency: usize,
    order: Order,
    mut shutdown: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(Received) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let handler = Arc::new(handler);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let free = permits.available_permits();
        if free == 0 {
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let want = if order == Order::Fifo { 10 } else { free.min(10) };
        let batch = tokio::select! {
            r = queue.receive(want, Duration::from_millis(500)) => r,
            _ = shutdown.changed() => continue,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(queue = name, error = %e, "receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match order {
            Order::Any => {
                for msg in batch {
                    let Ok(permit) = permits.clone().acquire_owned().await else { return };
                    let (queue, handler) = (queue.clone(), handler.clone());
                    tasks.spawn(async move {
                        handle_one(name, queue.as_ref(), handler.as_ref(), msg).await;
                        drop(permit);
                    });
                }
            }
            Order::Fifo if !batch.is_empty() => {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let (queue, handler) = (queue.clone(), handler.clone());
                tasks.spawn(async move {
                    for msg in batch {
                        if !handle_one(name, queue.as_ref(), handler.as_ref(), msg).await {
                            break;
                        }
                    }
                    drop(permit);
                });
            }
            Order::Fifo => {}
        }
        while tasks.try_join_next().is_some() {}
    }
    // Finish what is in hand before returning.
    while tasks.join_next().await.is_some() {}
}
