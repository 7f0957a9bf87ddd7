//! The whole system in one process: the compile, fan-in, dispatch and runner functions
//! wired to one set of ports (the local adapters for `kiln run`, or any other backend).

use crate::dispatch::handle_dispatch;
use crate::fanin::handle_event;
use crate::ingest::Ingest;
use crate::job::Job;
use crate::notify::Notifier;
use crate::queues::{DispatchRequest, HandleError, Order, send_event, serve};
use crate::runner::{RunnerConfig, RunnerCtx, RunnerError, StepEnvPolicy, run_job};
use crate::secrets::{NoSecrets, SecretSource, StoreSecrets};
use crate::sinks::{EventSink, IngestReply, LogSink, SinkError};
use crate::submit::{SubmitError, submit};
use crate::tokens::TokenSigner;
use async_trait::async_trait;
use kiln_domain::event::CloudEvent;
use kiln_domain::logs::LogStream;
use kiln_domain::report::{CancelRequested, JobFailed, Report};
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Repo, StageName, Status};
use kiln_store::{Claim, LogStore, Queue, Received, RepoStore, SecretStore, StateStore, StoreError};
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
    /// Repository secrets; `None` where none is configured (a stage that declares a
    /// secret then fails, and the API's secret routes answer 503).
    pub secrets: Option<Arc<dyn SecretStore>>,
    /// Builds from git: repository settings and the commit-status queue; `None` where git
    /// builds are not set up (`kiln run`).
    pub git: Option<GitPorts>,
}

/// What builds from git need beside the other ports.
#[derive(Clone)]
pub struct GitPorts {
    pub repos: Arc<dyn RepoStore>,
    /// Commit-status requests (FIFO, grouped by build) for the notify consumer.
    pub notify: Arc<dyn Queue>,
    /// The base of the links in commit statuses (`{public_url}/builds/{id}`).
    pub public_url: String,
}

/// Makes the sinks a runner uses for one job: in-process calls, or HTTP with the job's
/// token.
pub trait SinkFactory: Send + Sync {
    fn sinks(&self, job: &Job) -> (Arc<dyn LogSink>, Arc<dyn EventSink>);
    /// Where the job's declared secrets come from; by default nowhere.
    fn secrets(&self, _job: &Job) -> Arc<dyn SecretSource> {
        Arc::new(NoSecrets)
    }
}

/// Runners call log ingest, the events queue and the secret store directly (one process,
/// no HTTP).
pub struct DirectSinks {
    pub ingest: Arc<Ingest>,
    pub events: Arc<dyn EventSink>,
    pub secrets: Option<Arc<dyn SecretStore>>,
}

impl SinkFactory for DirectSinks {
    fn sinks(&self, _job: &Job) -> (Arc<dyn LogSink>, Arc<dyn EventSink>) {
        (self.ingest.clone(), self.events.clone())
    }

    fn secrets(&self, _job: &Job) -> Arc<dyn SecretSource> {
        match &self.secrets {
            Some(store) => Arc::new(StoreSecrets(store.clone())),
            None => Arc::new(NoSecrets),
        }
    }
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
    /// Signs runner tokens into jobs (for runners that talk HTTP).
    pub signer: Option<TokenSigner>,
    /// The environment and user of steps.
    pub step_env: StepEnvPolicy,
}

impl SystemConfig {
    pub fn new(workspace_root: PathBuf) -> Self {
        Self {
            workspace_root,
            runner_slots: 16,
            lease: Duration::from_secs(30),
            flush_interval: Duration::from_millis(kiln_domain::logs::DEFAULT_FLUSH_INTERVAL_MS),
            kill_grace: Duration::from_secs(5),
            signer: None,
            step_env: StepEnvPolicy::default(),
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
    /// Starts the fan-in, dispatch and runner loops on `ports`; runners call ingest and
    /// the events queue directly.
    pub fn start(ports: Ports, config: SystemConfig) -> Self {
        let sinks = Arc::new(DirectSinks {
            ingest: Arc::new(Ingest { logs: ports.logs.clone(), state: ports.state.clone() }),
            events: Arc::new(QueueEventSink(ports.events.clone())),
            secrets: ports.secrets.clone(),
        });
        Self::start_with(ports, config, sinks)
    }

    /// Starts the loops with runners using the sinks `sinks` makes.
    pub fn start_with(ports: Ports, config: SystemConfig, sinks: Arc<dyn SinkFactory>) -> Self {
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();

        let (state, dispatch, events) = (ports.state.clone(), ports.dispatch.clone(), ports.events.clone());
        let notify = ports.git.as_ref().map(|g| g.notify.clone());
        let cache = Arc::new(crate::fanin::BuildCache::new());
        // Events of one build arrive one at a time (FIFO groups); builds go in parallel.
        tasks.spawn(serve(
            "events",
            ports.events.clone(),
            8,
            Order::Fifo,
            rx.clone(),
            move |msg: Received| {
                let (state, dispatch, notify) = (state.clone(), dispatch.clone(), notify.clone());
                let (cache, events) = (cache.clone(), events.clone());
                async move {
                    let event: CloudEvent = serde_json::from_str(&msg.body)
                        .map_err(|e| HandleError::Drop(format!("bad event: {e}")))?;
                    handle_event(
                        state.as_ref(),
                        &cache,
                        events.as_ref(),
                        dispatch.as_ref(),
                        notify.as_deref(),
                        &event,
                    )
                    .await
                }
            },
        ));

        // Commit statuses: one build's in order (FIFO groups), posted in the background.
        if let (Some(git), Some(secrets)) = (&ports.git, &ports.secrets) {
            let notifier = Arc::new(Notifier {
                state: ports.state.clone(),
                repos: git.repos.clone(),
                secrets: secrets.clone(),
                public_url: git.public_url.clone(),
            });
            tasks.spawn(serve(
                "notify",
                git.notify.clone(),
                4,
                Order::Fifo,
                rx.clone(),
                move |msg: Received| {
                    let notifier = notifier.clone();
                    async move { notifier.handle(&msg.body).await }
                },
            ));
        }

        let (state, jobs, signer) = (ports.state.clone(), ports.jobs.clone(), config.signer.clone());
        tasks.spawn(serve(
            "dispatch",
            ports.dispatch.clone(),
            4,
            Order::Any,
            rx.clone(),
            move |msg: Received| {
                let (state, jobs, signer) = (state.clone(), jobs.clone(), signer.clone());
                async move {
                    let req: DispatchRequest = serde_json::from_str(&msg.body)
                        .map_err(|e| HandleError::Drop(format!("bad dispatch request: {e}")))?;
                    handle_dispatch(state.as_ref(), jobs.as_ref(), signer.as_ref(), &req).await
                }
            },
        ));

        if config.runner_slots == 0 {
            return Self { ports, shutdown, tasks }; // jobs are left to runners elsewhere
        }
        let worker = Arc::new(JobWorker {
            state: ports.state.clone(),
            jobs: ports.jobs.clone(),
            sinks,
            config: config.clone(),
        });
        tasks.spawn(serve(
            "jobs",
            ports.jobs.clone(),
            config.runner_slots,
            Order::Any,
            rx,
            move |msg: Received| {
                let worker = worker.clone();
                async move { worker.handle(msg).await }
            },
        ));

        Self { ports, shutdown, tasks }
    }

    /// Compiles and queues a pipeline.
    pub async fn submit(&self, repo: Repo, source: &[u8]) -> Result<Build, SubmitError> {
        submit(self.ports.state.as_ref(), self.ports.events.as_ref(), repo, source).await
    }

    /// Asks for a build to be canceled.
    pub async fn cancel(&self, id: &BuildId, reason: &str) -> Result<(), kiln_store::QueueError> {
        let e = Report::from(CancelRequested { reason: Some(reason.to_string()) }).to_event(id, "kiln://api");
        send_event(self.ports.events.as_ref(), &e).await
    }

    /// Waits until the build and all its stages have ended.
    pub async fn wait(&self, id: &BuildId) -> Result<Build, StoreError> {
        loop {
            let b = self.ports.state.get_build(id).await?.ok_or_else(|| StoreError::NotFound(id.clone()))?;
            if b.is_settled() {
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

/// Takes jobs off the queue and runs them, one lease-holding runner per job. Public for
/// the runner function (Lambda, and `runner --poll`).
pub struct JobWorker {
    pub state: Arc<dyn StateStore>,
    pub jobs: Arc<dyn Queue>,
    pub sinks: Arc<dyn SinkFactory>,
    pub config: SystemConfig,
}

impl JobWorker {
    /// Claims the job in `msg`, runs it while renewing its lease and the message's
    /// visibility, and reports a runner error as `job-failed`.
    pub async fn handle(&self, msg: Received) -> Result<(), HandleError> {
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
            Claim::Finished => {
                tracing::info!(build = %job.build, stage = %job.stage, "the job's stage has ended: delivery dropped");
                return Ok(());
            }
            // A first delivery of a copy (a duplicate send) while another runner holds the
            // lease: that runner holds its own copy, so this one goes.
            Claim::Busy if msg.receive_count <= 1 => {
                tracing::info!(build = %job.build, stage = %job.stage, "duplicate job delivery");
                return Ok(());
            }
            // The same message again: its holder's visibility ran out, perhaps because the
            // holder died before it could extend it (its lease then runs out a moment
            // later). Deleting it would lose the job; it comes back once the lease could
            // have run out, and is taken over then if the holder is gone.
            Claim::Busy => {
                if let Err(e) = self.jobs.extend(&msg.receipt, self.config.lease).await {
                    tracing::warn!(build = %job.build, stage = %job.stage, error = %e, "visibility extension failed");
                }
                return Err(HandleError::Retry(format!(
                    "stage {} of build {} is leased by another runner: retried once that lease could have run out",
                    job.stage, job.build
                )));
            }
        };
        // The message stays hidden as long as the lease runs, not the queue's default: if
        // this runner dies, the job comes back as soon as another may take it over.
        if let Err(e) = self.jobs.extend(&msg.receipt, self.config.lease).await {
            tracing::warn!(build = %job.build, stage = %job.stage, error = %e, "visibility extension failed");
        }
        let (logs, events) = self.sinks.sinks(&job);
        let logs = Arc::new(Contact::new(logs));
        if job.deadline_ms.is_some_and(|d| kiln_domain::event::now_ms() >= d) {
            let failed = Report::from(JobFailed {
                stage: job.stage.clone(),
                attempt: Some(attempt),
                reason: "the build timed out before the job started".to_string(),
            })
            .to_event(&job.build, RUNNER_SOURCE);
            return events.emit(failed).await.map_err(|e| HandleError::Retry(e.to_string()));
        }
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let (lost_tx, lost_rx) = watch::channel(false);
        let heartbeat = tokio::spawn(heartbeat(
            logs.clone(),
            Lease {
                state: self.state.clone(),
                jobs: self.jobs.clone(),
                receipt: msg.receipt.clone(),
                runner: runner_id.clone(),
                lease: self.config.lease,
            },
            job.clone(),
            cancel_tx,
            lost_tx,
        ));
        let ctx = RunnerCtx {
            config: RunnerConfig {
                runner_id,
                workspace_root: self.config.workspace_root.clone(),
                flush_interval: self.config.flush_interval,
                max_batch_bytes: kiln_domain::logs::MAX_BATCH_BYTES,
                kill_grace: self.config.kill_grace,
                step_env: self.config.step_env.clone(),
            },
            logs: logs.clone(),
            events: events.clone(),
            cancel: cancel_rx,
            lease_lost: lost_rx,
            secrets: self.sinks.secrets(&job),
        };
        let result = run_job(&job, attempt, &ctx).await;
        heartbeat.abort();
        match result {
            Ok(_) => {}
            // The attempt that took the lease runs and reports the stage; this one is done.
            Err(RunnerError::LeaseLost) => {
                tracing::warn!(build = %job.build, stage = %job.stage, attempt, "lease lost; attempt abandoned");
            }
            Err(e) => {
                tracing::error!(build = %job.build, stage = %job.stage, error = %e, "runner failed");
                let failed = Report::from(JobFailed {
                    stage: job.stage.clone(),
                    attempt: Some(attempt),
                    reason: format!("runner error: {e}"),
                })
                .to_event(&job.build, RUNNER_SOURCE);
                events.emit(failed).await.map_err(|e| HandleError::Retry(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// The source of the reports the job worker sends itself.
const RUNNER_SOURCE: &str = "kiln://runner";

/// What a runner holds while its job runs: the stage's lease and the message.
struct Lease {
    state: Arc<dyn StateStore>,
    jobs: Arc<dyn Queue>,
    receipt: String,
    runner: String,
    lease: Duration,
}

/// How often the heartbeat loop wakes (to renew the lease when due, and to ask ingest
/// whether to stop when the runner has been quiet).
const HEARTBEAT_TICK: Duration = Duration::from_millis(500);

/// The runner asks ingest "should I stop?" on its own (an ingest heartbeat: on AWS one
/// API Gateway request and one log-ingest invocation) only after this long without any
/// answer from ingest. Every log batch, init line and stream end is answered with the
/// same `canceled` flag, and a printing step sends a batch every flush interval (1 s),
/// so while output flows no heartbeat is sent at all. The bound kept: a cancel (or a
/// stage ended by an event) reaches a running step within about 2 s of its commit — by
/// the next batch's answer (≤ ~1 s apart while the step prints), or by a heartbeat at
/// most `HEARTBEAT_QUIET` + one `HEARTBEAT_TICK` after the last answer — where it was
/// 0.5 s with a heartbeat on every tick.
const HEARTBEAT_QUIET: Duration = Duration::from_millis(1500);

/// A job's log sink that remembers when ingest last answered (any call), so the
/// heartbeat loop asks only when the runner has been quiet.
struct Contact {
    inner: Arc<dyn LogSink>,
    last: std::sync::Mutex<tokio::time::Instant>,
}

impl Contact {
    fn new(inner: Arc<dyn LogSink>) -> Self {
        // The claim that started the job counts as contact: no heartbeat at once.
        Self { inner, last: std::sync::Mutex::new(tokio::time::Instant::now()) }
    }

    fn answered(&self, reply: Result<IngestReply, SinkError>) -> Result<IngestReply, SinkError> {
        if reply.is_ok() {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
        }
        reply
    }

    fn quiet_for(&self) -> Duration {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }
}

#[async_trait]
impl LogSink for Contact {
    async fn put(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError> {
        self.answered(self.inner.put(build, stream, offset, bytes).await)
    }

    async fn append_init(
        &self,
        build: &BuildId,
        batch_id: &str,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError> {
        self.answered(self.inner.append_init(build, batch_id, bytes).await)
    }

    async fn complete(&self, build: &BuildId, stream: &LogStream) -> Result<IngestReply, SinkError> {
        self.answered(self.inner.complete(build, stream).await)
    }

    async fn heartbeat(&self, build: &BuildId, stage: &StageName) -> Result<IngestReply, SinkError> {
        self.answered(self.inner.heartbeat(build, stage).await)
    }
}

/// While a job runs: renews its lease and the message's visibility, and raises the
/// cancel flag once log ingest says the build was canceled (asking it with a heartbeat
/// only when no other call answered for [`HEARTBEAT_QUIET`]; the runner notes the
/// answers to its own calls). When the renewal finds the lease held by another runner
/// (`Busy`), or the stage ended (`Finished`), it raises `lost` and stops: the steps are
/// stopped and this attempt reports nothing more. A `Finished` because only the build
/// ended (a cancel) is a cancel: the runner still reports its stage's end, which the
/// fan-in needs to settle the build.
async fn heartbeat(
    logs: Arc<Contact>,
    lease: Lease,
    job: Job,
    cancel: watch::Sender<bool>,
    lost: watch::Sender<bool>,
) {
    let renew_every = (lease.lease / 3).max(Duration::from_millis(100));
    let mut last_renew = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(HEARTBEAT_TICK);
    loop {
        tick.tick().await;
        if logs.quiet_for() >= HEARTBEAT_QUIET
            && let Ok(reply) = logs.heartbeat(&job.build, &job.stage).await
            && reply.canceled
        {
            let _ = cancel.send(true);
        }
        if last_renew.elapsed() >= renew_every {
            last_renew = tokio::time::Instant::now();
            match lease.state.claim_job(&job.build, &job.stage, &lease.runner, lease.lease).await {
                Ok(Claim::Claimed { .. }) => {}
                Ok(Claim::Busy) => {
                    let _ = lost.send(true);
                    return;
                }
                Ok(Claim::Finished) => {
                    if stage_ended(lease.state.as_ref(), &job).await {
                        let _ = lost.send(true);
                        return;
                    }
                    let _ = cancel.send(true);
                }
                Err(e) => {
                    tracing::warn!(build = %job.build, stage = %job.stage, error = %e, "lease renewal failed")
                }
            }
            if let Err(e) = lease.jobs.extend(&lease.receipt, lease.lease).await {
                tracing::warn!(build = %job.build, stage = %job.stage, error = %e, "visibility extension failed");
            }
        }
    }
}

/// Whether the job's stage has ended (or is gone); a read that fails counts as not ended,
/// so the runner goes on and reports (the fan-in ignores what is stale). `run_status` may
/// be a moment stale: an ended stage read as running is taken for a cancel, and the
/// runner's late report is ignored by the fan-in as stale.
async fn stage_ended(state: &dyn StateStore, job: &Job) -> bool {
    match state.run_status(&job.build, Some(&job.stage)).await {
        Ok(Some(st)) => st.stage.is_none_or(Status::is_terminal),
        Ok(None) => true,
        Err(e) => {
            tracing::warn!(build = %job.build, stage = %job.stage, error = %e, "cannot read the build");
            false
        }
    }
}
