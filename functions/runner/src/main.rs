//! Lambda `runner`: consumes the jobs queue (one job, one stage, per invocation) and runs
//! it; logs and events go to the API (`KILN_API_URL`) with the job's runner token.
//! `runner --poll` is the same runner as a long-lived poller of the jobs queue, for
//! `runs-on: container` (ECS, EC2, a laptop): no 15-minute ceiling.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use kiln_api::client::HttpSinks;
use kiln_core::ingest::Ingest;
use kiln_core::queues::{Order as QueueOrder, serve};
use kiln_core::runner::StepEnvPolicy;
use kiln_core::system::{DirectSinks, JobWorker, Ports, QueueEventSink, SinkFactory, SystemConfig};
use kiln_lambda::batch::{self, handle};
use kiln_lambda::{Error, env};
use kiln_store::Received;
use lambda_runtime::{LambdaEvent, service_fn};
use std::path::PathBuf;
use std::sync::Arc;

/// How many jobs a poller runs at once (`KILN_RUNNER_SLOTS`, default 2).
const SLOTS: &str = "KILN_RUNNER_SLOTS";

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Before the keys are read: steps (same user on Lambda) cannot read our environ.
    kiln_core::runner::protect_process()?;
    kiln_lambda::init_tracing();
    let poll = std::env::args().skip(1).any(|a| a == "--poll");
    let settings = env::Settings::from_env()?;
    let ports = env::ports().await?;
    let workspace = std::env::var(env::WORKSPACE).map(PathBuf::from).unwrap_or_else(|_| "/tmp/kiln".into());
    let mut config = SystemConfig::new(workspace);
    config.signer = Some(settings.signer);
    // Steps start from an empty environment: no AWS credentials, no runtime-API variables,
    // only what KILN_PASS_ENV names; as "nobody" when this runner is root (a container).
    config.step_env = StepEnvPolicy::from_env(&[])?;
    let sinks: Arc<dyn SinkFactory> = match settings.api_url {
        // Logs and events over HTTP with the job's token, as on Lambda.
        Some(base) => Arc::new(HttpSinks { base }),
        // No API: a poller with AWS access writes logs and events itself.
        // Its secrets straight from SSM: its role must allow reading `/kiln/*`.
        None if poll => Arc::new(DirectSinks {
            ingest: Arc::new(Ingest { logs: ports.logs.clone(), state: ports.state.clone() }),
            events: Arc::new(QueueEventSink(ports.events.clone())),
            secrets: ports.secrets.clone(),
        }),
        None => return Err(format!("{} is not set", env::API_URL).into()),
    };
    let worker = Arc::new(JobWorker { state: ports.state.clone(), jobs: ports.jobs.clone(), sinks, config });
    if poll {
        let slots = std::env::var(SLOTS).ok().and_then(|s| s.parse().ok()).unwrap_or(2);
        return run_poller(ports, worker, slots).await;
    }
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        async move {
            let response = handle(event, batch::RUNNER, move |msg: Received| {
                let worker = worker.clone();
                async move { worker.handle(msg).await }
            })
            .await;
            Ok::<SqsBatchResponse, Error>(response)
        }
    }))
    .await
}

/// Polls the jobs queue until SIGTERM or Ctrl-C, then finishes the jobs in hand.
async fn run_poller(ports: Ports, worker: Arc<JobWorker>, slots: usize) -> Result<(), Error> {
    let (stop, rx) = tokio::sync::watch::channel(false);
    tracing::info!(slots, "polling the jobs queue");
    let serving =
        tokio::spawn(serve("jobs", ports.jobs.clone(), slots, QueueOrder::Any, rx, move |msg: Received| {
            let worker = worker.clone();
            async move { worker.handle(msg).await }
        }));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping: finishing the jobs in hand");
    let _ = stop.send(true);
    serving.await?;
    Ok(())
}
