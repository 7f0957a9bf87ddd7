//! [`LocalQueue`]: an in-process queue with the SQS semantics Kiln relies on.

use crate::lock;
use async_trait::async_trait;
use kiln_store::{OutMessage, Queue, QueueError, Received};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How a [`LocalQueue`] behaves.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// How long a received message stays hidden before it is delivered again.
    pub visibility_timeout: Duration,
    /// FIFO: messages of a group are delivered in send order, one in flight per group at
    /// a time (a message without a group is in the default group); `dedup_id` drops a
    /// resend within `dedup_window`. Standard queues ignore group and dedup id.
    pub fifo: bool,
    /// With `dead_letter`: a message received this many times without being deleted is
    /// moved to the dead-letter queue instead of being delivered again. As on SQS the
    /// move happens when a receiver next finds the message visible.
    pub max_receive_count: Option<u32>,
    pub dead_letter: Option<Arc<LocalQueue>>,
    /// Test switch: every message sent is enqueued twice, the copy an independent message
    /// (own receipt, not deduplicated); on FIFO queues right after the original in its
    /// group. Exercises handlers' idempotency.
    pub deliver_twice: bool,
    /// The FIFO deduplication window (SQS: 5 minutes).
    pub dedup_window: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            fifo: false,
            max_receive_count: None,
            dead_letter: None,
            deliver_twice: false,
            dedup_window: Duration::from_secs(5 * 60),
        }
    }
}

impl QueueOptions {
    /// A standard queue with this visibility timeout.
    pub fn standard(visibility_timeout: Duration) -> Self {
        Self { visibility_timeout, ..Self::default() }
    }

    /// A FIFO queue with this visibility timeout.
    pub fn fifo(visibility_timeout: Duration) -> Self {
        Self { visibility_timeout, fifo: true, ..Self::default() }
    }

    /// Moves a message to `queue` once it was received `max_receive_count` times.
    pub fn with_dead_letter(mut self, queue: Arc<LocalQueue>, max_receive_count: u32) -> Self {
        self.dead_letter = Some(queue);
        self.max_receive_count = Some(max_receive_count);
        self
    }

    /// Turns on the [`QueueOptions::deliver_twice`] test switch.
    pub fn deliver_twice(mut self, on: bool) -> Self {
        self.deliver_twice = on;
        self
    }
}

/// An in-process queue: at-least-once delivery, visibility timeout and redelivery, long
/// polling, optional FIFO groups and dedup ids, dead-lettering.
pub struct LocalQueue {
    opts: QueueOptions,
    state: Mutex<State>,
    notify: Notify,
}

impl std::fmt::Debug for LocalQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalQueue").field("fifo", &self.opts.fifo).field("len", &self.len()).finish()
    }
}

#[derive(Default)]
struct State {
    next_seq: u64,
    /// By send order.
    msgs: BTreeMap<u64, Msg>,
    /// Current receipt → message.
    receipts: HashMap<String, u64>,
    /// FIFO dedup id → when it was first sent.
    dedup: HashMap<String, Instant>,
}

struct Msg {
    body: String,
    group: Option<String>,
    receive_count: u32,
    /// Hidden until then (in flight, when it has a receipt).
    visible_at: Instant,
    /// The receipt of the latest delivery; replaced on redelivery.
    receipt: Option<String>,
}

impl LocalQueue {
    pub fn new(opts: QueueOptions) -> Self {
        Self { opts, state: Mutex::new(State::default()), notify: Notify::new() }
    }

    /// A standard queue with this visibility timeout.
    pub fn standard(visibility_timeout: Duration) -> Self {
        Self::new(QueueOptions::standard(visibility_timeout))
    }

    /// A FIFO queue with this visibility timeout.
    pub fn fifo(visibility_timeout: Duration) -> Self {
        Self::new(QueueOptions::fifo(visibility_timeout))
    }

    pub fn options(&self) -> &QueueOptions {
        &self.opts
    }

    /// Messages in the queue: visible and in flight.
    pub fn len(&self) -> usize {
        lock(&self.state).msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages received and neither deleted nor visible again yet.
    pub fn in_flight(&self) -> usize {
        let now = Instant::now();
        lock(&self.state).msgs.values().filter(|m| m.receipt.is_some() && m.visible_at > now).count()
    }

    /// Enqueues without dedup or doubling (dead-lettered messages).
    fn push(&self, body: String, group: Option<String>) {
        {
            let mut st = lock(&self.state);
            let seq = st.next_seq;
            st.next_seq += 1;
            st.msgs.insert(
                seq,
                Msg { body, group, receive_count: 0, visible_at: Instant::now(), receipt: None },
            );
        }
        self.notify.notify_waiters();
    }

    /// One pass over the queue: dead-letters what is due, hands out up to `max` visible
    /// messages. Returns them, the dead letters, and when the next hidden message shows.
    fn take(&self, max: usize) -> (Vec<Received>, Vec<Msg>, Option<Instant>) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        let st = &mut *st;

        let mut dead = Vec::new();
        if let (Some(limit), Some(_)) = (self.opts.max_receive_count, &self.opts.dead_letter) {
            let due: Vec<u64> = st
                .msgs
                .iter()
                .filter(|(_, m)| m.visible_at <= now && m.receive_count >= limit)
                .map(|(&seq, _)| seq)
                .collect();
            for seq in due {
                let m = st.msgs.remove(&seq).expect("listed above");
                if let Some(r) = &m.receipt {
                    st.receipts.remove(r);
                }
                dead.push(m);
            }
        }

        let mut chosen = Vec::new();
        let mut next_visible: Option<Instant> = None;
        let mut groups_seen: HashSet<&str> = HashSet::new();
        for (&seq, m) in &st.msgs {
            if m.visible_at > now {
                next_visible = Some(next_visible.map_or(m.visible_at, |t| t.min(m.visible_at)));
            }
            if self.opts.fifo && !groups_seen.insert(m.group.as_deref().unwrap_or_default()) {
                // Only the oldest message of a group may be delivered, and only when no
                // earlier one of the group is in flight.
                continue;
            }
            if m.visible_at <= now && chosen.len() < max {
                chosen.push(seq);
            }
        }

        let mut out = Vec::with_capacity(chosen.len());
        for seq in chosen {
            let m = st.msgs.get_mut(&seq).expect("chosen above");
            if let Some(old) = m.receipt.take() {
                st.receipts.remove(&old);
            }
            let receipt = format!("{seq}-{}", uuid::Uuid::new_v4().simple());
            m.receive_count += 1;
            m.visible_at = later(now, self.opts.visibility_timeout);
            m.receipt = Some(receipt.clone());
            st.receipts.insert(receipt.clone(), seq);
            next_visible = Some(next_visible.map_or(m.visible_at, |t| t.min(m.visible_at)));
            out.push(Received { receipt, body: m.body.clone(), receive_count: m.receive_count });
        }
        (out, dead, next_visible)
    }
}

/// `now + d`, saturating at a year for absurd durations.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

#[async_trait]
impl Queue for LocalQueue {
    async fn send(&self, msg: OutMessage) -> Result<(), QueueError> {
        {
            let now = Instant::now();
            let mut st = lock(&self.state);
            if self.opts.fifo
                && let Some(id) = &msg.dedup_id
            {
                let window = self.opts.dedup_window;
                st.dedup.retain(|_, at| now.saturating_duration_since(*at) < window);
                if st.dedup.contains_key(id) {
                    return Ok(());
                }
                st.dedup.insert(id.clone(), now);
            }
            let group = if self.opts.fifo { msg.group } else { None };
            let copies = if self.opts.deliver_twice { 2 } else { 1 };
            for _ in 0..copies {
                let seq = st.next_seq;
                st.next_seq += 1;
                st.msgs.insert(
                    seq,
                    Msg {
                        body: msg.body.clone(),
                        group: group.clone(),
                        receive_count: 0,
                        visible_at: now,
                        receipt: None,
                    },
                );
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = later(Instant::now(), wait);
        loop {
            // Registered before looking, so a send in between is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let (out, dead, next_visible) = self.take(max);
            if !dead.is_empty() {
                if let Some(dlq) = &self.opts.dead_letter {
                    for m in dead {
                        dlq.push(m.body, m.group);
                    }
                }
                // Dead-lettering may have unblocked a FIFO group: look again.
                if out.is_empty() {
                    continue;
                }
            }
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            let wake = next_visible.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        {
            let mut st = lock(&self.state);
            let seq = st.receipts.remove(receipt).ok_or(QueueError::BadReceipt)?;
            st.msgs.remove(&seq);
        }
        // A FIFO group may be free now.
        self.notify.notify_waiters();
        Ok(())
    }

    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        {
            let mut st = lock(&self.state);
            let seq = *st.receipts.get(receipt).ok_or(QueueError::BadReceipt)?;
            let m = st.msgs.get_mut(&seq).expect("receipts point at messages");
            m.visible_at = later(Instant::now(), timeout);
        }
        self.notify.notify_waiters();
        Ok(())
    }
}
