//! [`SqliteQueue`]: a durable queue in `DATA/kiln.db` with the SQS semantics Kiln relies
//! on: visibility timeout and redelivery with a receive count, dead-lettering after a
//! maximum, FIFO groups with one message in flight per group, deduplication ids within a
//! window. A message is gone only when deleted with its current receipt.

use super::SqliteDb;
use async_trait::async_trait;
use kiln_domain::event::now_ms;
use kiln_store::{OutMessage, Queue, QueueError, Received};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How a [`SqliteQueue`] behaves. The name keys its rows; every process that opens the
/// queue must give the same options.
#[derive(Debug, Clone)]
pub struct SqliteQueueOptions {
    pub name: String,
    /// How long a received message stays hidden before it is delivered again.
    pub visibility_timeout: Duration,
    /// FIFO: a group's messages are delivered in send order, one in flight per group (no
    /// group: the default group); `dedup_id` drops a resend within `dedup_window`.
    /// Standard queues ignore group and dedup id.
    pub fifo: bool,
    /// The dead-letter queue's name and the receive count after which a message moves
    /// there (as on SQS, when a receiver next finds it visible).
    pub dead_letter: Option<(String, u32)>,
    /// The FIFO deduplication window (SQS: 5 minutes).
    pub dedup_window: Duration,
    /// Test switch: every message sent is stored twice, the copy an independent message.
    pub deliver_twice: bool,
    /// How often a long poll looks for messages sent by other processes (sends in this
    /// process wake it at once).
    pub poll_interval: Duration,
}

impl SqliteQueueOptions {
    /// A standard queue with this visibility timeout.
    pub fn standard(name: impl Into<String>, visibility_timeout: Duration) -> Self {
        Self {
            name: name.into(),
            visibility_timeout,
            fifo: false,
            dead_letter: None,
            dedup_window: Duration::from_secs(5 * 60),
            deliver_twice: false,
            poll_interval: Duration::from_millis(100),
        }
    }

    /// A FIFO queue with this visibility timeout.
    pub fn fifo(name: impl Into<String>, visibility_timeout: Duration) -> Self {
        Self { fifo: true, ..Self::standard(name, visibility_timeout) }
    }

    /// Moves a message to the queue `dlq` once it was received `max_receive_count` times.
    pub fn with_dead_letter(mut self, dlq: impl Into<String>, max_receive_count: u32) -> Self {
        self.dead_letter = Some((dlq.into(), max_receive_count));
        self
    }

    pub fn deliver_twice(mut self, on: bool) -> Self {
        self.deliver_twice = on;
        self
    }
}

pub struct SqliteQueue {
    db: Arc<SqliteDb>,
    opts: Arc<SqliteQueueOptions>,
    waker: Arc<Notify>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue").field("name", &self.opts.name).field("fifo", &self.opts.fifo).finish()
    }
}

fn db(e: rusqlite::Error) -> QueueError {
    QueueError::Backend(format!("sqlite: {e}"))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

fn wall_ms() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX / 4)
}

/// What one pass over the queue found.
struct Taken {
    out: Vec<Received>,
    /// Messages moved to the dead-letter queue.
    dead: usize,
    /// When the next hidden message shows again (wall ms).
    next_visible_ms: Option<i64>,
}

fn take(c: &mut Connection, o: &SqliteQueueOptions, max: usize) -> Result<Taken, QueueError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let now = wall_ms();
    let mut dead = 0;
    if let Some((dlq, limit)) = &o.dead_letter {
        dead = tx
            .execute(
                "UPDATE messages SET queue = ?2, receive_count = 0, receipt = NULL, visible_at_ms = ?3 \
                 WHERE queue = ?1 AND visible_at_ms <= ?3 AND receive_count >= ?4",
                params![o.name, dlq, now, limit],
            )
            .map_err(db)?;
    }
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let chosen: Vec<(i64, String, u32)> = {
        // FIFO: only the oldest message of a group may go, and only when visible (it is
        // the one in flight otherwise).
        let sql = if o.fifo {
            "SELECT seq, body, receive_count FROM messages AS m WHERE queue = ?1 AND visible_at_ms <= ?2 \
             AND seq = (SELECT MIN(seq) FROM messages WHERE queue = ?1 AND grp = m.grp) ORDER BY seq LIMIT ?3"
        } else {
            "SELECT seq, body, receive_count FROM messages WHERE queue = ?1 AND visible_at_ms <= ?2 \
             ORDER BY seq LIMIT ?3"
        };
        let mut st = tx.prepare_cached(sql).map_err(db)?;
        let rows =
            st.query_map(params![o.name, now, max], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    let mut out = Vec::with_capacity(chosen.len());
    {
        let mut upd = tx
            .prepare_cached(
                "UPDATE messages SET receive_count = receive_count + 1, visible_at_ms = ?2, receipt = ?3 \
                 WHERE seq = ?1",
            )
            .map_err(db)?;
        let hidden_until = now.saturating_add(ms(o.visibility_timeout));
        for (seq, body, count) in chosen {
            let receipt = format!("{seq}-{}", uuid::Uuid::new_v4().simple());
            upd.execute(params![seq, hidden_until, receipt]).map_err(db)?;
            out.push(Received { receipt, body, receive_count: count + 1 });
        }
    }
    let next_visible_ms: Option<i64> = tx
        .query_row(
            "SELECT MIN(visible_at_ms) FROM messages WHERE queue = ?1 AND visible_at_ms > ?2",
            params![o.name, now],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?
        .flatten();
    tx.commit().map_err(db)?;
    Ok(Taken { out, dead, next_visible_ms })
}

impl SqliteQueue {
    pub fn new(db: Arc<SqliteDb>, opts: SqliteQueueOptions) -> Self {
        let waker = db.waker(&opts.name);
        Self { db, opts: Arc::new(opts), waker }
    }

    pub fn options(&self) -> &SqliteQueueOptions {
        &self.opts
    }

    /// Messages in the queue: visible and in flight.
    pub async fn count(&self) -> Result<usize, QueueError> {
        let name = self.opts.name.clone();
        self.db
            .read(
                move |c| {
                    let n: i64 = c
                        .query_row("SELECT COUNT(*) FROM messages WHERE queue = ?1", [name], |r| r.get(0))
                        .map_err(db)?;
                    Ok(usize::try_from(n).unwrap_or(0))
                },
                QueueError::Backend,
            )
            .await
    }

    /// Changes (or deletes) the message holding `receipt`, in one IMMEDIATE transaction.
    async fn by_receipt(
        &self,
        receipt: &str,
        sql: &'static str,
        visible_at: Option<i64>,
    ) -> Result<(), QueueError> {
        let (name, receipt) = (self.opts.name.clone(), receipt.to_string());
        let n = self
            .db
            .write(
                move |c| {
                    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
                    let n = match visible_at {
                        Some(at) => tx.execute(sql, params![name, receipt, at]),
                        None => tx.execute(sql, params![name, receipt]),
                    }
                    .map_err(db)?;
                    tx.commit().map_err(db)?;
                    Ok(n)
                },
                QueueError::Backend,
            )
            .await?;
        if n == 0 {
            return Err(QueueError::BadReceipt);
        }
        // A FIFO group may be free now, or a message visible again.
        self.waker.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, msg: OutMessage) -> Result<(), QueueError> {
        let o = self.opts.clone();
        self.db
            .write(
                move |c| {
                    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
                    let now = wall_ms();
                    if o.fifo
                        && let Some(id) = &msg.dedup_id
                    {
                        tx.execute(
                            "DELETE FROM dedup WHERE queue = ?1 AND sent_ms <= ?2",
                            params![o.name, now.saturating_sub(ms(o.dedup_window))],
                        )
                        .map_err(db)?;
                        let fresh = tx
                            .execute(
                                "INSERT OR IGNORE INTO dedup (queue, dedup_id, sent_ms) VALUES (?1, ?2, ?3)",
                                params![o.name, id, now],
                            )
                            .map_err(db)?;
                        if fresh == 0 {
                            return Ok(());
                        }
                    }
                    // FIFO: no group is the default group ('').
                    let group = o.fifo.then(|| msg.group.clone().unwrap_or_default());
                    let copies = if o.deliver_twice { 2 } else { 1 };
                    for _ in 0..copies {
                        tx.execute(
                            "INSERT INTO messages (queue, grp, body, receive_count, visible_at_ms) \
                             VALUES (?1, ?2, ?3, 0, ?4)",
                            params![o.name, group, msg.body, now],
                        )
                        .map_err(db)?;
                    }
                    tx.commit().map_err(db)
                },
                QueueError::Backend,
            )
            .await?;
        self.waker.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline =
            Instant::now().checked_add(wait).unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        loop {
            // Registered before looking, so a send in between is not missed.
            let notified = self.waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let o = self.opts.clone();
            let taken = self.db.write(move |c| take(c, &o, max), QueueError::Backend).await?;
            if taken.dead > 0 {
                if let Some((dlq, _)) = &self.opts.dead_letter {
                    self.db.waker(dlq).notify_waiters();
                }
                // Dead-lettering may have unblocked a FIFO group: look again.
                if taken.out.is_empty() {
                    continue;
                }
            }
            let now = Instant::now();
            if !taken.out.is_empty() || now >= deadline {
                return Ok(taken.out);
            }
            let mut wake = deadline.min(now + self.opts.poll_interval);
            if let Some(at) = taken.next_visible_ms {
                let left = u64::try_from(at.saturating_sub(wall_ms())).unwrap_or(0);
                wake = wake.min(now + Duration::from_millis(left));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.by_receipt(receipt, "DELETE FROM messages WHERE queue = ?1 AND receipt = ?2", None).await
    }

    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        let at = wall_ms().saturating_add(ms(timeout));
        self.by_receipt(
            receipt,
            "UPDATE messages SET visible_at_ms = ?3 WHERE queue = ?1 AND receipt = ?2",
            Some(at),
        )
        .await
    }
}
