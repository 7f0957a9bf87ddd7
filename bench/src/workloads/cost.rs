//! 5. Cost per build: the reference build run with counting decorators, priced.

use super::{Backend, Params, Res, emit_command, ensure_succeeded, err, wait_build};
use crate::counting::{Counter, CountingLogs, CountingQueue, CountingSinks, CountingState};
use kiln_core::ingest::Ingest;
use kiln_core::job::Job;
use kiln_core::sinks::{EventSink, LogSink};
use kiln_core::system::{Ports, QueueEventSink, SinkFactory, System};
use kiln_domain::Repo;
use kiln_store::Queue;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Factory(Arc<CountingSinks>);

impl SinkFactory for Factory {
    fn sinks(&self, _job: &Job) -> (Arc<dyn LogSink>, Arc<dyn EventSink>) {
        (self.0.clone(), self.0.clone())
    }
}

/// The AWS clients' request counter, on `--backend aws` only.
#[cfg(feature = "aws")]
type Real = Option<Arc<kiln_store_aws::RequestCounter>>;
#[cfg(not(feature = "aws"))]
type Real = Option<()>;

/// Ports whose AWS requests are counted for real (aws), or `plain` again (local).
#[cfg(feature = "aws")]
async fn measured_ports(b: &Backend, plain: &Ports) -> Res<(Ports, Real)> {
    if !b.aws {
        return Ok((plain.clone(), None));
    }
    let counter = kiln_store_aws::RequestCounter::new();
    Ok((super::aws_ports_counted(counter.clone()).await?, Some(counter)))
}

#[cfg(not(feature = "aws"))]
async fn measured_ports(_b: &Backend, plain: &Ports) -> Res<(Ports, Real)> {
    Ok((plain.clone(), None))
}

#[cfg(feature = "aws")]
fn real_counts(
    counter: &kiln_store_aws::RequestCounter,
    since: &kiln_store_aws::RequestCounts,
) -> crate::cost::Real {
    let r = counter.snapshot().since(since);
    crate::cost::Real {
        requests: r.requests,
        empty_receives: r.empty_receives,
        empty_receives_fifo: r.empty_receives_fifo,
        sqs_fifo: r.sqs_fifo,
        capacity: r.dynamodb_capacity.into_iter().map(|(k, c)| (k, (c.read_units, c.write_units))).collect(),
    }
}

pub async fn cost(b: &Backend, p: &Params) -> Res<Value> {
    // `inner`'s requests are never counted: waiting for the build and the model's peeks.
    let inner = b.ports("cost").await?;
    let (measured, real) = measured_ports(b, &inner).await?;
    // Connecting (GetQueueUrl) is not the build's.
    #[cfg(feature = "aws")]
    let since = real.as_ref().map(|r| r.snapshot()).unwrap_or_default();
    let c = Arc::new(Counter::default());
    let q = |q: &Arc<dyn Queue>, name, fifo| -> Arc<dyn Queue> {
        Arc::new(CountingQueue { inner: q.clone(), c: c.clone(), name, fifo })
    };
    let ports = Ports {
        state: Arc::new(CountingState {
            inner: measured.state.clone(),
            peek: inner.state.clone(),
            c: c.clone(),
        }),
        logs: Arc::new(CountingLogs::new(measured.logs.clone(), c.clone())),
        events: q(&measured.events, "events", true),
        dispatch: q(&measured.dispatch, "dispatch", false),
        jobs: q(&measured.jobs, "jobs", false),
        secrets: None,
        git: None,
    };
    let sinks = Arc::new(CountingSinks {
        logs: Arc::new(Ingest { logs: ports.logs.clone(), state: ports.state.clone() }),
        events: Arc::new(QueueEventSink(ports.events.clone())),
        c: c.clone(),
    });
    let rate = p.ref_lines as f64 / p.ref_secs as f64;
    let cmd = emit_command(rate, p.ref_lines, 60)?;
    let mut yaml = String::from("version: \"1\"\nstages:\n");
    for s in 0..p.ref_stages {
        yaml.push_str(&format!("  stage{s}:\n    steps:\n"));
        for k in 0..p.ref_steps {
            yaml.push_str(&format!("      - name: step{k}\n        commands:\n          - {cmd}\n"));
        }
    }
    let system = System::start_with(ports.clone(), b.config("cost"), Arc::new(Factory(sinks)));
    let t = Instant::now();
    let build = system.submit(Repo::new("bench", "cost"), yaml.as_bytes()).await.map_err(err)?;
    // Waiting reads the uncounted store: a client's polling is not part of the build.
    let ended =
        wait_build(inner.state.as_ref(), &build.id, Duration::from_secs(p.ref_secs * 3 * 4 + 120)).await?;
    let wall = t.elapsed().as_secs_f64();
    // Let the last events (build finished) drain through the fan-in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.stop().await;
    ensure_succeeded(&ended)?;
    let runner_secs: f64 = ended
        .stages
        .iter()
        .filter_map(|s| Some(s.finished_ms?.saturating_sub(s.started_ms?) as f64 / 1000.0))
        .sum();
    let counts = c.snapshot();
    let model = crate::cost::price(&counts, runner_secs, 1024.0);
    let mut v = match &real {
        #[cfg(feature = "aws")]
        Some(r) => crate::cost::price_real(&real_counts(r, &since), &counts, model, runner_secs, 1024.0),
        _ => model,
    };
    v["reference_build"] = json!({
        "stages": p.ref_stages, "steps_per_stage": p.ref_steps, "lines_per_step": p.ref_lines,
        "seconds_per_step": p.ref_secs, "line_bytes": 60, "wall_s": wall,
        "scaled": false,
    });
    v["method"] = json!(if real.is_some() { METHOD_REAL } else { METHOD_MODEL });
    Ok(v)
}

const METHOD_REAL: &str = "The reference build runs for real on AWS (or LocalStack) with the AWS SDK clients \
     counting every request they send by service and operation (an SDK interceptor, \
     kiln_store_aws::RequestCounter; every attempt, as AWS bills it) and DynamoDB's consumed capacity as \
     its responses report it (ReturnConsumedCapacity TOTAL set on every request). The requests sent while \
     connecting (GetQueueUrl) are left out; SQS receives that returned no message are idle polls, reported \
     apart. S3 requests are priced by tier (PUT/COPY/POST/LIST, GET and others, DELETE free). The runner's \
     ingest calls (batches, completes, heartbeats) and event emits are counted at the sinks as one HTTP API \
     request and one Lambda invocation each (runners talk HTTP on AWS); fan-in and dispatch: one invocation \
     per message (no batching assumed: an upper bound); Lambda durations are assumptions (listed). The floor \
     is the log batches that carried bytes, one S3 PUT each and nothing else. model_usd is the hand model \
     of bench/src/counting.rs priced the same way, kept as a cross-check of the real counts. Nothing is \
     scaled: the steps print for the full duration.";

const METHOD_MODEL: &str = "The reference build runs for real on this backend with counting decorators around the \
         StateStore, LogStore and the three queues, and around the runner's sinks (log ingest, events). \
         Each port call is mapped to the requests the AWS adapters in shared/store-aws make for it: \
         commit = Query + GetItem + one TransactWriteItems (applied id, build item, each changed stage \
         item, each history event; 2 WRU per KB per item); get_build = one consistent Query (1 RRU per \
         4 KB of build + stages); claim_job = Query + TransactWriteItems(ConditionCheck + stage); \
         mark_dispatched = UpdateItem; put_chunk = ListObjectsV2 + PutObject; read = List + a GET per \
         chunk; complete = 2 List + a GET per chunk + 2 PUT (+ multipart parts >= 8 MiB) + \
         DeleteObjects (free); list = 1 List; each queue send/receive (non-empty)/delete/visibility \
         change = 1 SQS request. The runner's ingest calls (batches, completes, heartbeats) and event \
         emits are one HTTP API request and one Lambda invocation each (runners talk HTTP on AWS). \
         fan-in and dispatch: one invocation per message (no batching assumed: an upper bound). Lambda \
         durations are assumptions (listed), not measurements. The floor is the log batches that \
         carried bytes, one S3 PUT each and nothing else. Nothing is scaled: the steps print for \
         the full duration.";
