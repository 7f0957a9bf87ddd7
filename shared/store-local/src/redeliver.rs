//! A test switch for any queue: every message is delivered twice. Once a message has been
//! handled (deleted), an identical copy is sent again, so handlers see the same body a
//! second time, after the original — as at-least-once delivery may do on SQS. The copy
//! keeps the message group (FIFO order within a group is kept) under a new deduplication
//! id, and is not copied again.

use async_trait::async_trait;
use kiln_store::{OutMessage, Queue, QueueError, Received};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Finds a message's FIFO group from its body (`None` for standard queues).
pub type GroupOf = fn(&str) -> Option<String>;

pub struct RedeliverOnce {
    inner: Arc<dyn Queue>,
    group_of: GroupOf,
    /// Receipt → body of deliveries still to be copied once handled.
    pending: Mutex<HashMap<String, String>>,
    /// Bodies already copied: their second delivery is not copied again.
    copied: Mutex<HashSet<String>>,
}

#[async_trait]
impl Queue for RedeliverOnce {
    async fn send(&self, msg: OutMessage) -> Result<(), QueueError> {
        self.inner.send(msg).await
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let got = self.inner.receive(max, wait).await?;
        let copied = self.copied.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for m in got.iter().filter(|m| !copied.contains(&m.body)) {
            pending.insert(m.receipt.clone(), m.body.clone());
        }
        Ok(got)
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.inner.delete(receipt).await?;
        let body = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(receipt);
        if let Some(body) = body {
            let fresh = self.copied.lock().unwrap_or_else(|e| e.into_inner()).insert(body.clone());
            if fresh {
                let group = (self.group_of)(&body);
                let dedup = group.as_ref().map(|_| uuid::Uuid::new_v4().to_string());
                self.inner.send(OutMessage { body, group, dedup_id: dedup }).await?;
            }
        }
        Ok(())
    }

    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.inner.extend(receipt, timeout).await
    }
}

/// Wraps `q` so that every message is delivered twice.
pub fn redeliver_once(q: Arc<dyn Queue>, group_of: GroupOf) -> Arc<dyn Queue> {
    Arc::new(RedeliverOnce { inner: q, group_of, pending: Mutex::default(), copied: Mutex::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalQueue;

    #[tokio::test]
    async fn every_message_comes_twice_and_only_twice() {
        let q = redeliver_once(Arc::new(LocalQueue::standard(Duration::from_secs(30))), |_| None);
        q.send(OutMessage::new("m")).await.unwrap();
        let mut bodies = Vec::new();
        loop {
            let got = q.receive(10, Duration::from_millis(200)).await.unwrap();
            if got.is_empty() {
                break;
            }
            for m in got {
                bodies.push(m.body.clone());
                q.delete(&m.receipt).await.unwrap();
            }
        }
        assert_eq!(bodies, ["m", "m"]);
    }
}
