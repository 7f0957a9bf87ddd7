//! A test switch for any queue: every message is delivered (at least) twice. The first
//! delete of a message makes it visible again instead, so handlers see real redelivery
//! (same body, a higher receive count) on SQS as on the local queue.

use crate::{OutMessage, Queue, QueueError, Received};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

pub struct RedeliverOnce(pub Arc<dyn Queue>);

/// First deliveries carry this before their receipt, so `delete` knows to hand them back.
const FIRST: &str = "first:";

#[async_trait]
impl Queue for RedeliverOnce {
    async fn send(&self, msg: OutMessage) -> Result<(), QueueError> {
        self.0.send(msg).await
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let mut got = self.0.receive(max, wait).await?;
        for m in got.iter_mut().filter(|m| m.receive_count <= 1) {
            m.receipt = format!("{FIRST}{}", m.receipt);
        }
        Ok(got)
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        match receipt.strip_prefix(FIRST) {
            Some(r) => self.0.extend(r, Duration::ZERO).await,
            None => self.0.delete(receipt).await,
        }
    }

    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.0.extend(receipt.strip_prefix(FIRST).unwrap_or(receipt), timeout).await
    }
}

/// Wraps `q` so that every message is delivered twice.
pub fn redeliver_once(q: Arc<dyn Queue>) -> Arc<dyn Queue> {
    Arc::new(RedeliverOnce(q))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalQueue;

    #[tokio::test]
    async fn every_message_comes_back_once_after_its_first_delete() {
        let q = redeliver_once(Arc::new(LocalQueue::standard(Duration::from_secs(30))));
        q.send(OutMessage::new("m")).await.unwrap();
        let first = q.receive(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(first.len(), 1);
        q.delete(&first[0].receipt).await.unwrap();
        let second = q.receive(10, Duration::from_millis(500)).await.unwrap();
        assert_eq!((second.len(), second[0].body.as_str(), second[0].receive_count), (1, "m", 2));
        q.delete(&second[0].receipt).await.unwrap();
        assert!(q.receive(10, Duration::from_millis(200)).await.unwrap().is_empty());
    }
}
