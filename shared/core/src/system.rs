//! The whole system in one process: the compile, fan-in, dispatch and runner functions
//! wired to one set of ports (the local adapters for `kiln run`, or any other backend).

use crate::dispatch::handle_dispatch;
use crate::fanin::handle_event;
use crate::ingest::Ingest;
use crate::job::Job;
use crate::queues::{DispatchRequest, HandleError, send_event, serve};
use crate::runner::{RunnerConfig, RunnerCtx, run_job};
use crate::sinks::{EventSink, SinkError};
use crate::submit::{SubmitError, submit};
use async_trait::async_trait;
use kiln_domain::event::{CloudEvent, types};
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Repo};
use kiln_store::{Claim, LogStore, Queue, Received, StateStore, StoreError};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The adapters the functions run on.
#[derive(Clone)]
pub struct Ports {
    pub state: Arc<dyn StateStore>,
    pub logs: Arc<dyn LogStore>,
    /// FIFO, grouped by build: reports and events for the fan-in.
    pub events: Arc<dyn Queue>,
    /// Ready stages, for dispatch.
    pub dispatch: Arc<dyn Queue>,
    /// Jobs, for runners.
    pub jobs: Arc<dyn Queue>,
}

#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// Where runners make workspaces.
    pub workspace_root: PathBuf,
    /// How many jobs run at once in this process.
    pub runner_slots: usize,
    /// A runner's lease on its job; renewed while the job runs.
    pub lease: Duration,
    /// How often runners flush logs.
    pub flush_interval: Duration,
    /// How long a killed step gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

impl SystemConfig {
    pub fn new(workspace_root: PathBuf) -> Self {
        Self {
            workspace_root,
            runner_slots: 16,
            lease: Duration::from_secs(30),
            flush_interval: Duration::from_millis(kiln_domain::logs::DEFAULT_FLUSH_INTERVAL_MS),
            kill_grace: Duration::from_secs(5),
        }
    }
}

/// The running system. Drop or [`System::stop`] it to end its tasks.
pub struct System {
    pub ports: Ports,
    shutdown: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

/// Sends runner events to the events queue.
pub struct QueueEventSink(pub Arc<dyn Queue>);

#[async_trait]
impl EventSink for QueueEventSink {
    async fn emit(&self, event: CloudEvent) -> Result<(), SinkError> {
        send_event(self.0.as_ref(), &event).await.map_err(|e| SinkError::Transient(e.to_string()))
    }
}

impl System {
    /// Starts the fan-in, dispatch and runner loops on `ports`.
    pub fn start(ports: Ports, config: SystemConfig) -> Self {
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();

        let (state, dispatch) = (ports.state.clone(), ports.dispatch.clone());
        // Events of one build arrive one at a time (FIFO groups); builds go in parallel.
        tasks.spawn(serve("events", ports.events.clone(), 8, rx.clone(), move |msg: Received| {
            let (state, dispatch) = (state.clone(), dispatch.clone());
            async move {
                let event: CloudEvent = serde_json::from_str(&msg.body)
                    .map_err(|e| HandleError::Drop(format!("bad event: {e}")))?;
                handle_event(state.as_ref(), dispatch.as_ref(), &event).await
            }
        }));

        let (state, jobs) = (ports.state.clone(), ports.jobs.clone());
        tasks.spawn(serve("dispatch", ports.dispatch.clone(), 4, rx.clone(), move |msg: Received| {
            let (state, jobs) = (state.clone(), jobs.clone());
            async move {
                let req: DispatchRequest = serde_json::from_str(&msg.body)
                    .map_err(|e| HandleError::Drop(format!("bad dispatch request: {e}")))?;
                handle_dispatch(state.as_ref(), jobs.as_ref(), &req).await
            }
        }));

        let worker = Arc::new(JobWorker {
            state: ports.state.clone(),
            jobs: ports.jobs.clone(),
            events: Arc::new(QueueEventSink(ports.events.clone())),
            ingest: Arc::new(Ingest { logs: ports.logs.clone(), state: ports.state.clone() }),
            config: config.clone(),
        });
        tasks.spawn(serve("jobs", ports.jobs.clone(), config.runner_slots, rx, move |msg: Received| {
            let worker = worker.clone();
            async move { worker.handle(msg).await }
        }));

        Self { ports, shutdown, tasks }
    }

    /// Compiles and queues a pipeline.
    pub async fn submit(&self, repo: Repo, source: &[u8]) -> Result<Build, SubmitError> {
        submit(self.ports.state.as_ref(), self.ports.events.as_ref(), repo, source).await
    }

    /// Asks for a build to be canceled.
    pub async fn cancel(&self, id: &BuildId, reason: &str) -> Result<(), kiln_store::QueueError> {
        let e = CloudEvent::new(types::CANCEL_REQUESTED, "kiln://api", id, json!({ "reason": reason }));
        send_event(self.ports.events.as_ref(), &e).await
    }

    /// Waits until the build and all its stages have ended.
    pub async fn wait(&self, id: &BuildId) -> Result<Build, StoreError> {
        loop {
            let b = self.ports.state.get_build(id).await?.ok_or_else(|| StoreError::NotFound(id.clone()))?;
            if b.status.is_terminal() && b.stages.iter().all(|s| s.status.is_terminal()) {
                return Ok(b);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops receiving and waits for the handlers in hand to finish.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Takes jobs off the queue and runs them, one lease-holding runner per job.
struct JobWorker {
    state: Arc<dyn StateStore>,
    jobs: Arc<dyn Queue>,
    events: Arc<dyn EventSink>,
    ingest: Arc<Ingest>,
    config: SystemConfig,
}

impl JobWorker {
    async fn handle(&self, msg: Received) -> Result<(), HandleError> {
        let job: Job =
            serde_json::from_str(&msg.body).map_err(|e| HandleError::Drop(format!("bad job: {e}")))?;
        // A runner identity per delivery: a duplicate delivery is a different runner and
        // finds the job busy.
        let runner_id = format!("local-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let claim = self
            .state
            .claim_job(&job.build, &job.stage, &runner_id, self.config.lease)
            .await
            .map_err(|e| HandleError::Retry(e.to_string()))?;
        let attempt = match claim {
            Claim::Claimed { attempt } => attempt,
            Claim::Busy | Claim::Finished => {
                tracing::info!(build = %job.build, stage = %job.stage, ?claim, "duplicate job delivery");
                return Ok(());
            }
        };
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let heartbeat = tokio::spawn(heartbeat(
            self.state.clone(),
            self.jobs.clone(),
            msg.receipt.clone(),
            job.clone(),
            runner_id.clone(),
            self.config.lease,
            cancel_tx,
        ));
        let ctx = RunnerCtx {
            config: RunnerConfig {
                runner_id,
                workspace_root: self.config.workspace_root.clone(),
                flush_interval: self.config.flush_interval,
                max_batch_bytes: kiln_domain::logs::MAX_BATCH_BYTES,
                kill_grace: self.config.kill_grace,
            },
            logs: self.ingest.clone(),
            events: self.events.clone(),
            cancel: cancel_rx,
        };
        let result = run_job(&job, attempt, &ctx).await;
        heartbeat.abort();
        if let Err(e) = result {
            tracing::error!(build = %job.build, stage = %job.stage, error = %e, "runner failed");
            let failed = CloudEvent::new(
                types::JOB_FAILED,
                "kiln://runner",
                &job.build,
                json!({ "stage": job.stage, "attempt": attempt, "reason": format!("runner error: {e}") }),
            );
            self.events.emit(failed).await.map_err(|e| HandleError::Retry(e.to_string()))?;
        }
        Ok(())
    }
}

/// While a job runs: renews its lease and the message's visibility, and raises the
/// cancel flag once the build is canceled.
async fn heartbeat(
    state: Arc<dyn StateStore>,
    jobs: Arc<dyn Queue>,
    receipt: String,
    job: Job,
    runner: String,
    lease: Duration,
    cancel: watch::Sender<bool>,
) {
    let renew_every = (lease / 3).max(Duration::from_millis(100));
    let mut last_renew = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if let Ok(Some(b)) = state.get_build(&job.build).await
            && b.status == kiln_domain::Status::Canceled
        {
            let _ = cancel.send(true);
        }
        if last_renew.elapsed() >= renew_every {
            last_renew = tokio::time::Instant::now();
            if let Err(e) = state.claim_job(&job.build, &job.stage, &runner, lease).await {
                tracing::warn!(build = %job.build, stage = %job.stage, error = %e, "lease renewal failed");
            }
            if let Err(e) = jobs.extend(&receipt, lease).await {
                tracing::warn!(build = %job.build, stage = %job.stage, error = %e, "visibility extension failed");
            }
        }
    }
}
