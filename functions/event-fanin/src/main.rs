//! Lambda `event-fanin`: consumes the events FIFO (one message group per build) and applies
//! each event through the state machine. The same function is the scheduled watchdog: an
//! EventBridge schedule event (not an SQS batch) drains the jobs dead-letter queue.

use aws_lambda_events::event::sqs::SqsEvent;
use kiln_core::fanin::handle_event;
use kiln_core::queues::HandleError;
use kiln_domain::event::CloudEvent;
use kiln_lambda::batch::{self, handle};
use kiln_lambda::{Error, env, watchdog};
use kiln_store::Received;
use kiln_store_aws::SqsQueue;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

/// What a watchdog run answers: how many dead jobs it reported as failed.
#[derive(serde::Serialize)]
struct WatchdogRun {
    reported: usize,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    kiln_lambda::init_tracing();
    let settings = env::Settings::from_env()?;
    let (ports, clients) = env::connect_all().await?;
    let dlq = match settings.jobs_dlq {
        Some(name) => Some(SqsQueue::connect(clients.sqs.clone(), name).await?),
        None => None,
    };
    let dlq = std::sync::Arc::new(dlq);
    // Kept across invocations of this (warm) function: see `BuildCache`.
    let cache = std::sync::Arc::new(kiln_core::fanin::BuildCache::new());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (ports, dlq, cache) = (ports.clone(), dlq.clone(), cache.clone());
        async move {
            if event.payload.get("Records").is_none() {
                // A scheduled event: the watchdog.
                let Some(dlq) = dlq.as_ref() else {
                    tracing::warn!("watchdog: {} is not set", env::JOBS_DLQ);
                    return Ok(serde_json::to_value(WatchdogRun { reported: 0 })?);
                };
                let reported = watchdog::drain(dlq, ports.events.as_ref()).await?;
                return Ok::<Value, Error>(serde_json::to_value(WatchdogRun { reported })?);
            }
            let sqs: SqsEvent = serde_json::from_value(event.payload)?;
            let sqs_batch = LambdaEvent::new(sqs, event.context);
            let response = handle(sqs_batch, batch::EVENT_FANIN, move |msg: Received| {
                let (ports, cache) = (ports.clone(), cache.clone());
                async move {
                    let event: CloudEvent = serde_json::from_str(&msg.body)
                        .map_err(|e| HandleError::Drop(format!("bad event: {e}")))?;
                    handle_event(
                        ports.state.as_ref(),
                        &cache,
                        ports.events.as_ref(),
                        ports.dispatch.as_ref(),
                        ports.git.as_ref().map(|g| g.notify.as_ref()),
                        &event,
                    )
                    .await
                }
            })
            .await;
            Ok(serde_json::to_value(response)?)
        }
    }))
    .await
}
