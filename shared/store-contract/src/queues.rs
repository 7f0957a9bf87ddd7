//! Queue checks: at-least-once delivery, visibility timeouts, FIFO groups.

use async_trait::async_trait;
use kiln_store::{OutMessage, Queue, QueueError, Received};
use std::sync::Arc;
use std::time::Duration;
// tokio's clock: real time on a running clock, virtual time in tests on paused time.
use tokio::time::Instant;

/// Makes fresh, empty queues for the queue checks (each check makes its own).
#[async_trait]
pub trait QueueFactory: Send + Sync {
    /// A standard queue whose visibility timeout is `visibility`.
    async fn standard(&self, visibility: Duration) -> Arc<dyn Queue>;
    /// A FIFO queue whose visibility timeout is `visibility`.
    async fn fifo(&self, visibility: Duration) -> Arc<dyn Queue>;
}

/// Every queue check, one after the other.
pub async fn queue_suite(f: &dyn QueueFactory) {
    queue_send_receive_delete(f).await;
    queue_long_poll_wakes_on_send(f).await;
    queue_redelivery_after_visibility_timeout(f).await;
    queue_extend(f).await;
    queue_fifo_order_one_in_flight_per_group(f).await;
    queue_fifo_dedup(f).await;
}

/// Receives until `n` messages arrived or `within` passed.
pub async fn receive_n(q: &dyn Queue, n: usize, within: Duration) -> Vec<Received> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let got = q.receive(n - out.len(), left.min(Duration::from_secs(5))).await.expect("receive");
        out.extend(got);
    }
    out
}

pub(crate) fn bodies(r: &[Received]) -> Vec<&str> {
    let mut v: Vec<&str> = r.iter().map(|m| m.body.as_str()).collect();
    v.sort_unstable();
    v
}

/// Messages are received once each (receive count 1) and, once deleted, never again.
pub async fn queue_send_receive_delete(f: &dyn QueueFactory) {
    let q = f.standard(Duration::from_secs(1)).await;
    for body in ["a", "b", "c"] {
        q.send(OutMessage::new(body)).await.expect("send");
    }
    let got = receive_n(&*q, 3, Duration::from_secs(10)).await;
    assert_eq!(bodies(&got), vec!["a", "b", "c"]);
    assert!(got.iter().all(|m| m.receive_count == 1), "{got:?}");
    for m in &got {
        q.delete(&m.receipt).await.expect("delete");
    }
    // Well past the visibility timeout: nothing comes back.
    let again = q.receive(10, Duration::from_secs(3)).await.expect("receive");
    assert!(again.is_empty(), "{again:?}");
    let err = q.delete("not-a-receipt").await;
    assert!(matches!(err, Err(QueueError::BadReceipt) | Err(QueueError::Backend(_))), "{err:?}");
}

/// A receive that is waiting returns as soon as a message is sent.
pub async fn queue_long_poll_wakes_on_send(f: &dyn QueueFactory) {
    let q = f.standard(Duration::from_secs(5)).await;
    let start = Instant::now();
    let (got, sent) = tokio::join!(q.receive(1, Duration::from_secs(10)), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        q.send(OutMessage::new("late")).await
    });
    sent.expect("send");
    let got = got.expect("receive");
    let elapsed = start.elapsed();
    assert_eq!(bodies(&got), vec!["late"]);
    assert!(elapsed < Duration::from_secs(5), "long poll took {elapsed:?}");
    q.delete(&got[0].receipt).await.expect("delete");
}

/// A message received and not deleted comes back after the visibility timeout, with
/// receive count 2 and a new receipt.
pub async fn queue_redelivery_after_visibility_timeout(f: &dyn QueueFactory) {
    let q = f.standard(Duration::from_secs(1)).await;
    q.send(OutMessage::new("again")).await.expect("send");
    let first = receive_n(&*q, 1, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1);
    let t0 = Instant::now();
    let second = receive_n(&*q, 1, Duration::from_secs(10)).await;
    assert_eq!(second.len(), 1, "redelivered");
    assert!(t0.elapsed() >= Duration::from_millis(700), "redelivered after {:?}", t0.elapsed());
    assert_eq!((second[0].body.as_str(), second[0].receive_count), ("again", 2));
    assert_ne!(second[0].receipt, first[0].receipt);
    q.delete(&second[0].receipt).await.expect("delete with the new receipt");
    assert!(q.receive(10, Duration::from_secs(2)).await.expect("receive").is_empty());
}

/// `extend` keeps a message hidden past its visibility timeout; `extend` to 0 makes it
/// visible at once.
pub async fn queue_extend(f: &dyn QueueFactory) {
    let q = f.standard(Duration::from_secs(1)).await;
    q.send(OutMessage::new("slow")).await.expect("send");
    let m = receive_n(&*q, 1, Duration::from_secs(10)).await.pop().expect("a message");
    q.extend(&m.receipt, Duration::from_secs(6)).await.expect("extend");
    let none = q.receive(10, Duration::from_secs(2)).await.expect("receive");
    assert!(none.is_empty(), "still hidden: {none:?}");
    q.extend(&m.receipt, Duration::ZERO).await.expect("extend to 0");
    let back = receive_n(&*q, 1, Duration::from_secs(3)).await;
    assert_eq!(back.len(), 1, "visible again");
    assert_eq!((back[0].body.as_str(), back[0].receive_count), ("slow", 2));
    q.delete(&back[0].receipt).await.expect("delete");
}

/// FIFO: a group's messages come in send order, and none while an earlier one of the
/// group is in flight; other groups are not held up.
pub async fn queue_fifo_order_one_in_flight_per_group(f: &dyn QueueFactory) {
    let q = f.fifo(Duration::from_secs(20)).await;
    for (body, group) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a"), ("b2", "b")] {
        q.send(OutMessage::grouped(body, group, body)).await.expect("send");
    }
    // One at a time, so a receiver that batches a group's messages still shows the rule.
    let one = |q: Arc<dyn Queue>, wait: u64| async move {
        q.receive(1, Duration::from_secs(wait)).await.expect("receive")
    };
    let mut heads = one(q.clone(), 5).await;
    heads.extend(one(q.clone(), 5).await);
    assert_eq!(bodies(&heads), vec!["a1", "b1"]);
    assert!(one(q.clone(), 1).await.is_empty(), "both groups have a message in flight");
    let receipt = |body: &str| heads.iter().find(|m| m.body == body).expect("received").receipt.clone();
    q.delete(&receipt("a1")).await.expect("delete");
    let next = one(q.clone(), 5).await;
    assert_eq!(bodies(&next), vec!["a2"]);
    assert!(one(q.clone(), 1).await.is_empty());
    q.delete(&next[0].receipt).await.expect("delete");
    q.delete(&receipt("b1")).await.expect("delete");
    let mut rest = one(q.clone(), 5).await;
    rest.extend(one(q.clone(), 5).await);
    assert_eq!(bodies(&rest), vec!["a3", "b2"]);
    for m in &rest {
        q.delete(&m.receipt).await.expect("delete");
    }
    assert!(one(q.clone(), 1).await.is_empty());
}

/// FIFO: a resend with the same dedup id is dropped.
pub async fn queue_fifo_dedup(f: &dyn QueueFactory) {
    let q = f.fifo(Duration::from_secs(20)).await;
    q.send(OutMessage::grouped("one", "g", "d1")).await.expect("send");
    q.send(OutMessage::grouped("one", "g", "d1")).await.expect("resend");
    q.send(OutMessage::grouped("two", "g", "d2")).await.expect("send");
    let mut seen = Vec::new();
    loop {
        let got = q.receive(10, Duration::from_secs(2)).await.expect("receive");
        if got.is_empty() {
            break;
        }
        for m in got {
            assert_eq!(m.receive_count, 1);
            q.delete(&m.receipt).await.expect("delete");
            seen.push(m.body);
        }
    }
    assert_eq!(seen, vec!["one", "two"]);
}
