//! [`SqsQueue`]: a [`Queue`] on SQS, standard or FIFO.

use crate::{ConnectError, describe};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use kiln_store::{OutMessage, Queue, QueueError, Received};
use std::time::Duration;

/// The longest long poll SQS allows.
const MAX_WAIT_SECS: u64 = 20;
/// The most messages one ReceiveMessage returns.
const MAX_BATCH: usize = 10;
/// The longest visibility timeout SQS allows (12 hours).
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// The group of FIFO messages sent without one.
const DEFAULT_GROUP: &str = "default";

/// A queue on SQS. FIFO queues (URL ending in `.fifo`) get the message's group as
/// MessageGroupId and its dedup id as MessageDeduplicationId; standard queues ignore both.
/// Receives long-poll (WaitTimeSeconds: `wait` rounded to whole seconds, at most 20) and
/// report ApproximateReceiveCount as the receive count; `extend` is
/// ChangeMessageVisibility.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    fifo: bool,
}

fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

fn backend<E, R>(what: &str, e: &aws_sdk_sqs::error::SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    QueueError::Backend(format!("sqs {what}: {}", describe(e)))
}

/// Whether SQS refused a receipt handle as unknown, malformed or expired.
fn bad_receipt<E: ProvideErrorMetadata, R>(e: &aws_sdk_sqs::error::SdkError<E, R>) -> bool {
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or_default();
    code.contains("ReceiptHandleIsInvalid")
        || code.contains("InvalidReceiptHandle")
        || code.contains("MessageNotInflight")
        || code.contains("InvalidParameterValue")
}

/// `wait` as SQS's WaitTimeSeconds: rounded to the nearest second, at most 20.
fn wait_secs(wait: Duration) -> i32 {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    (ms.saturating_add(500) / 1000).min(MAX_WAIT_SECS) as i32
}

/// `timeout` as a visibility timeout: whole seconds, rounded up, at most 12 hours.
fn visibility_secs(timeout: Duration) -> i32 {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    ms.div_ceil(1000).min(MAX_VISIBILITY_SECS) as i32
}

impl SqsQueue {
    /// The queue at `url` (FIFO if the URL ends in `.fifo`).
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        let url = url.into();
        let fifo = url.ends_with(".fifo");
        Self { client, url, fifo }
    }

    /// The queue named (or at the URL) `name_or_url`: a name is resolved with GetQueueUrl.
    pub async fn connect(client: Client, name_or_url: String) -> Result<Self, ConnectError> {
        if is_url(&name_or_url) {
            return Ok(Self::new(client, name_or_url));
        }
        let out = client
            .get_queue_url()
            .queue_name(&name_or_url)
            .send()
            .await
            .map_err(|e| ConnectError::Queue { name: name_or_url.clone(), message: describe(&e) })?;
        let url = out.queue_url.ok_or_else(|| ConnectError::Queue {
            name: name_or_url,
            message: "no queue URL returned".into(),
        })?;
        Ok(Self::new(client, url))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_fifo(&self) -> bool {
        self.fifo
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, msg: OutMessage) -> Result<(), QueueError> {
        let mut req = self.client.send_message().queue_url(&self.url).message_body(msg.body);
        if self.fifo {
            let dedup = msg.dedup_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            req = req
                .message_group_id(msg.group.unwrap_or_else(|| DEFAULT_GROUP.to_string()))
                .message_deduplication_id(dedup);
        }
        req.send().await.map(drop).map_err(|e| backend("send", &e))
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.min(MAX_BATCH) as i32)
            .wait_time_seconds(wait_secs(wait))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| backend("receive", &e))?;
        let mut got = Vec::new();
        for m in out.messages.unwrap_or_default() {
            let receive_count = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let Some(receipt) = m.receipt_handle else { continue };
            got.push(Received { receipt, body: m.body.unwrap_or_default(), receive_count });
        }
        Ok(got)
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        match self.client.delete_message().queue_url(&self.url).receipt_handle(receipt).send().await {
            Ok(_) => Ok(()),
            Err(e) if bad_receipt(&e) => Err(QueueError::BadReceipt),
            Err(e) => Err(backend("delete", &e)),
        }
    }

    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        let res = self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(visibility_secs(timeout))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if bad_receipt(&e) => Err(QueueError::BadReceipt),
            Err(e) => Err(backend("change visibility", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_and_timeouts_in_seconds() {
        assert_eq!(wait_secs(Duration::ZERO), 0);
        assert_eq!(wait_secs(Duration::from_millis(400)), 0);
        assert_eq!(wait_secs(Duration::from_millis(500)), 1);
        assert_eq!(wait_secs(Duration::from_secs(5)), 5);
        assert_eq!(wait_secs(Duration::from_secs(3600)), 20);
        assert_eq!(visibility_secs(Duration::ZERO), 0);
        assert_eq!(visibility_secs(Duration::from_millis(1)), 1);
        assert_eq!(visibility_secs(Duration::from_secs(6)), 6);
        assert_eq!(visibility_secs(Duration::from_secs(1 << 40)), 43_200);
    }
}
