//! One partial-batch helper for every SQS-triggered function: each message is handled on
//! its own and only the ones that must come back are reported in `batchItemFailures`
//! (the event source mapping has `ReportBatchItemFailures`), so one bad message never
//! redelivers a whole batch.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use kiln_core::queues::HandleError;
use kiln_store::Received;
use lambda_runtime::LambdaEvent;
use std::future::Future;
use std::sync::Arc;
use tracing::Instrument;

/// How a batch's messages may be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Standard queue: all at once.
    Parallel,
    /// FIFO queue: in order; after the first failure the rest of the batch is reported
    /// failed unhandled, so no message overtakes an earlier one of its group.
    Fifo,
}

/// What an SQS-triggered function expects of its event source mapping. The template's
/// mappings must say the same (`infra/check_deploy.py` reads these constants), with
/// `ReportBatchItemFailures`: [`handle`] answers with `batchItemFailures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub order: Order,
    /// Most messages per invocation.
    pub batch_size: usize,
    /// Most seconds Lambda may wait to fill a batch (0: invoke as soon as there is a message;
    /// FIFO mappings have no window).
    pub max_batching_window_secs: u32,
}

/// `dispatch` (dispatch queue): ready stages become jobs at once, ten at a time.
pub const DISPATCH: Mapping = Mapping { order: Order::Parallel, batch_size: 10, max_batching_window_secs: 0 };
/// `event-fanin` (events FIFO): in order per build.
pub const EVENT_FANIN: Mapping = Mapping { order: Order::Fifo, batch_size: 10, max_batching_window_secs: 0 };
/// `notify` (notify FIFO): a build's statuses in order.
pub const NOTIFY: Mapping = Mapping { order: Order::Fifo, batch_size: 10, max_batching_window_secs: 0 };
/// `runner` (jobs queue): one job per invocation, so a stage has the whole 15 minutes and
/// the whole memory of its invocation.
pub const RUNNER: Mapping = Mapping { order: Order::Parallel, batch_size: 1, max_batching_window_secs: 0 };

/// The message as the queue port's [`Received`]: the same handlers serve the in-process
/// queues and Lambda.
pub fn received(m: &SqsMessage) -> Received {
    Received {
        receipt: m.receipt_handle.clone().unwrap_or_default(),
        body: m.body.clone().unwrap_or_default(),
        receive_count: m.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1),
    }
}

/// The build a message is about (`build` in jobs and dispatch requests, `kilnbuild` in
/// CloudEvents), for the log span.
pub fn build_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v.get("build").or_else(|| v.get("kilnbuild")).and_then(|b| b.as_str()).unwrap_or("").to_string()
}

/// Runs `handler` on every message of the batch. `Ok` and `Drop` (logged) count as done:
/// the mapping deletes the message; `Retry` reports it failed, so it comes back (and,
/// after the queue's `maxReceiveCount`, goes to the dead-letter queue).
/// A batch larger than `mapping.batch_size` (a mapping that differs from the code) is
/// still handled whole, with a warning.
pub async fn handle<F, Fut>(event: LambdaEvent<SqsEvent>, mapping: Mapping, handler: F) -> SqsBatchResponse
where
    F: Fn(Received) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let mut failed: Vec<String> = Vec::new();
    if event.payload.records.len() > mapping.batch_size {
        tracing::warn!(
            records = event.payload.records.len(),
            expected = mapping.batch_size,
            "a batch larger than this function's event source mapping should deliver"
        );
    }
    let mut records = event.payload.records.into_iter();
    match mapping.order {
        Order::Fifo => {
            while let Some(m) = records.next() {
                if !one(&handler, m.clone()).await {
                    failed.push(m.message_id.unwrap_or_default());
                    failed.extend(records.by_ref().map(|m| m.message_id.unwrap_or_default()));
                }
            }
        }
        Order::Parallel => {
            let mut tasks = tokio::task::JoinSet::new();
            let mut ids = std::collections::HashMap::new();
            for m in records {
                let (handler, id) = (handler.clone(), m.message_id.clone().unwrap_or_default());
                let task = tasks.spawn(async move { one(&handler, m).await });
                ids.insert(task.id(), id);
            }
            while let Some(r) = tasks.join_next_with_id().await {
                match r {
                    Ok((_, true)) => {}
                    Ok((task, false)) => failed.extend(ids.remove(&task)),
                    // A panicking handler: its message comes back.
                    Err(e) => {
                        tracing::error!(error = %e, "handler panicked");
                        failed.extend(ids.remove(&e.id()));
                    }
                }
            }
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}

/// Handles one message; true when it is done with.
async fn one<F, Fut>(handler: &Arc<F>, m: SqsMessage) -> bool
where
    F: Fn(Received) -> Fut,
    Fut: Future<Output = Result<(), HandleError>>,
{
    let msg = received(&m);
    let span = tracing::info_span!(
        "message",
        build = %build_of(&msg.body),
        message_id = m.message_id.as_deref().unwrap_or(""),
        receive_count = msg.receive_count,
    );
    async move {
        match handler(msg).await {
            Ok(()) => true,
            Err(HandleError::Drop(why)) => {
                tracing::error!(%why, "message dropped");
                true
            }
            Err(HandleError::Retry(why)) => {
                tracing::warn!(%why, "message left for redelivery");
                false
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_runtime::Context;
    use serde_json::json;

    /// A batch as the event source mapping delivers it.
    fn event(bodies: &[(&str, &str)]) -> LambdaEvent<SqsEvent> {
        let mut e = SqsEvent::default();
        e.records = bodies
            .iter()
            .map(|(id, body)| {
                let mut m = SqsMessage::default();
                m.message_id = Some(id.to_string());
                m.receipt_handle = Some(format!("rh-{id}"));
                m.body = Some(body.to_string());
                m.attributes.insert("ApproximateReceiveCount".into(), "2".into());
                m
            })
            .collect();
        LambdaEvent::new(e, Context::default())
    }

    fn ids(r: &SqsBatchResponse) -> Vec<&str> {
        let mut v: Vec<&str> = r.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        v.sort();
        v
    }

    async fn by_body(m: Received) -> Result<(), HandleError> {
        assert!(m.receipt.starts_with("rh-"));
        assert_eq!(m.receive_count, 2);
        match m.body.as_str() {
            "retry" => Err(HandleError::Retry("later".into())),
            "drop" => Err(HandleError::Drop("malformed".into())),
            _ => Ok(()),
        }
    }

    #[tokio::test]
    async fn parallel_reports_only_the_messages_to_retry() {
        let e = event(&[("a", "ok"), ("b", "retry"), ("c", "drop"), ("d", "retry")]);
        let r = handle(e, DISPATCH, by_body).await;
        assert_eq!(ids(&r), ["b", "d"]);
        // The wire shape Lambda expects back.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["batchItemFailures"][0]["itemIdentifier"].as_str().map(|s| s == "b" || s == "d"),
            Some(true)
        );
    }

    #[tokio::test]
    async fn fifo_stops_at_the_first_failure_and_fails_the_rest() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let e = event(&[("a", "ok"), ("b", "retry"), ("c", "ok"), ("d", "drop")]);
        let r = handle(e, EVENT_FANIN, move |m: Received| {
            s.lock().unwrap().push(m.body.clone());
            by_body(m)
        })
        .await;
        assert_eq!(ids(&r), ["b", "c", "d"]);
        assert_eq!(*seen.lock().unwrap(), ["ok", "retry"]);
    }

    #[tokio::test]
    async fn an_all_good_batch_reports_nothing() {
        let r = handle(event(&[("a", "ok"), ("b", "drop")]), NOTIFY, by_body).await;
        assert!(r.batch_item_failures.is_empty());
        assert_eq!(serde_json::to_value(&r).unwrap(), json!({ "batchItemFailures": [] }));
    }

    #[test]
    fn a_real_sqs_event_deserializes_and_names_its_build() {
        let e: SqsEvent = serde_json::from_value(json!({ "Records": [{
            "messageId": "m1", "receiptHandle": "rh", "body": "{\"build\":\"b-1\",\"stage\":\"s\"}",
            "attributes": { "ApproximateReceiveCount": "3", "MessageGroupId": "b-1" },
            "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:kiln-jobs", "awsRegion": "us-east-1"
        }]}))
        .unwrap();
        let r = received(&e.records[0]);
        assert_eq!((r.receipt.as_str(), r.receive_count), ("rh", 3));
        assert_eq!(build_of(&r.body), "b-1");
        assert_eq!(build_of(r#"{"kilnbuild":"b-2"}"#), "b-2");
        assert_eq!(build_of("not json"), "");
    }
}
