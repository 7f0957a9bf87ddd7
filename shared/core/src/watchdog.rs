//! The scheduled watchdog: a job whose runner stopped heartbeating comes back on the jobs
//! queue when its visibility lapses, and the next runner takes the next attempt; after the
//! queue's `maxReceiveCount` it is dead-lettered. The watchdog drains the jobs DLQ and
//! reports each dead job as `job-failed`, so the fan-in fails its stage and the build ends
//! instead of waiting forever.

use crate::job::Job;
use crate::queues::send_event;
use kiln_domain::report::{JobFailed, Report};
use kiln_store::{Queue, QueueError};
use std::time::Duration;

/// At most this many dead jobs per run (the next run takes the rest).
pub const MAX_PER_RUN: usize = 200;

/// Reports every dead job on `dlq` to the events queue, then deletes it; returns how many
/// were reported. A message that is not a job is deleted (and logged).
pub async fn drain(dlq: &dyn Queue, events: &dyn Queue) -> Result<usize, QueueError> {
    let mut reported = 0;
    let mut seen = 0;
    while seen < MAX_PER_RUN {
        let batch = dlq.receive(10, Duration::from_millis(0)).await?;
        if batch.is_empty() {
            break;
        }
        for msg in batch {
            seen += 1;
            match serde_json::from_str::<Job>(&msg.body) {
                Ok(job) => {
                    let e = Report::from(JobFailed {
                        stage: job.stage.clone(),
                        attempt: None,
                        reason: format!(
                            "the job was dead-lettered after {} deliveries: its runner stopped heartbeating",
                            msg.receive_count
                        ),
                    })
                    .to_event(&job.build, "kiln://watchdog");
                    // Reported before the delete: a crash in between reports twice, and
                    // the fan-in refuses the second (the stage has ended).
                    send_event(events, &e).await?;
                    tracing::warn!(build = %job.build, stage = %job.stage, "dead job reported as failed");
                    reported += 1;
                }
                Err(e) => tracing::error!(error = %e, "not a job on the jobs DLQ; deleted"),
            }
            dlq.delete(&msg.receipt).await?;
        }
    }
    Ok(reported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_domain::event::CloudEvent;
    use kiln_store::OutMessage;
    use kiln_store_local::{LocalQueue, QueueOptions};

    #[tokio::test]
    async fn dead_jobs_become_job_failed_events() {
        let dlq = LocalQueue::new(QueueOptions::standard(Duration::from_secs(30)));
        let events = LocalQueue::new(QueueOptions::fifo(Duration::from_secs(30)));
        let plan =
            kiln_domain::compile::compile(b"version: \"1\"\nsteps:\n  - name: x\n    commands: [\"true\"]\n")
                .unwrap();
        let stage = plan.stages[0].clone();
        let job = Job {
            build: kiln_domain::BuildId::generate(),
            repo: kiln_domain::Repo::new("o", "r"),
            stage: stage.name.clone(),
            plan: stage,
            env: Default::default(),
            trigger_event: None,
            deadline_ms: None,
            token: None,
            secrets_allowed: true,
            git: None,
        };
        dlq.send(OutMessage::new(serde_json::to_string(&job).unwrap())).await.unwrap();
        dlq.send(OutMessage::new("garbage")).await.unwrap();
        assert_eq!(drain(&dlq, &events).await.unwrap(), 1);
        assert!(dlq.receive(10, Duration::from_millis(0)).await.unwrap().is_empty());
        let out = events.receive(10, Duration::from_millis(0)).await.unwrap();
        assert_eq!(out.len(), 1);
        let e: CloudEvent = serde_json::from_str(&out[0].body).unwrap();
        assert_eq!(e.kilnbuild, Some(job.build));
        let Ok(Some(Report::JobFailed(failed))) = Report::from_event(&e) else {
            panic!("not a job-failed: {e:?}")
        };
        assert_eq!(failed.stage.as_str(), "default");
        assert!(failed.reason.contains("dead-lettered"), "{}", failed.reason);
    }
}
