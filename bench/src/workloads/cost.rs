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

pub async fn cost(b: &Backend, p: &Params) -> Res<Value> {
    let inner = b.ports("cost").await?;
    let c = Arc::new(Counter::default());
    let q = |q: &Arc<dyn Queue>, name, fifo| -> Arc<dyn Queue> {
        Arc::new(CountingQueue { inner: q.clone(), c: c.clone(), name, fifo })
    };
    let ports = Ports {
        state: Arc::new(CountingState { inner: inner.state.clone(), c: c.clone() }),
        logs: Arc::new(CountingLogs::new(inner.logs.clone(), c.clone())),
        events: q(&inner.events, "events", true),
        dispatch: q(&inner.dispatch, "dispatch", false),
        jobs: q(&inner.jobs, "jobs", false),
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
    let mut v = crate::cost::price(&c.snapshot(), runner_secs, 1024.0);
    v["reference_build"] = json!({
        "stages": p.ref_stages, "steps_per_stage": p.ref_steps, "lines_per_step": p.ref_lines,
        "seconds_per_step": p.ref_secs, "line_bytes": 60, "wall_s": wall,
        "scaled": false,
    });
    v["method"] = json!(
        "The reference build runs for real on this backend with counting decorators around the \
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
         durations are assumptions (listed), not measurements. Nothing is scaled: the steps print for \
         the full duration."
    );
    Ok(v)
}
