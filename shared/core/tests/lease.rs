//! A runner whose lease is taken by another attempt stops its steps and reports nothing
//! more, on the local store's real claim rules.

mod runner_support;

use kiln_core::job::Job;
use kiln_core::sinks::{EventSink, LogSink};
use kiln_core::system::{JobWorker, SinkFactory, SystemConfig};
use kiln_domain::event::types;
use kiln_domain::plan::Plan;
use kiln_domain::state::Build;
use kiln_store::{Claim, OutMessage, Queue, StateStore};
use kiln_store_local::{LocalQueue, LocalStateStore, QueueOptions};
use runner_support::{Mem, Rec, job, process_gone, read_pid, step};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct MemSinks(Arc<Mem>);

impl SinkFactory for MemSinks {
    fn sinks(&self, _job: &Job) -> (Arc<dyn LogSink>, Arc<dyn EventSink>) {
        (self.0.clone(), self.0.clone())
    }
}

/// Polls `f` every 20 ms until it holds; panics after a limit that only catches a hang.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_whose_lease_was_taken_stops_its_steps_and_reports_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let job = job(
        "s",
        vec![
            step("hang", 1, &[&format!("sleep 60 & echo $! > {}", pidfile.display()), "sleep 60"]),
            step("after", 2, &["echo never"]),
        ],
    );
    let state = Arc::new(LocalStateStore::open(dir.path().join("data")).unwrap());
    let plan = Plan {
        version: "1".into(),
        env: Default::default(),
        images: vec![],
        timeout_ms: 600_000,
        stages: vec![job.plan.clone()],
        git: None,
        cancel_superseded: false,
    };
    state.create_build(&Build::new(job.build.clone(), job.repo.clone(), plan, 0)).await.unwrap();
    let jobs = Arc::new(LocalQueue::new(QueueOptions::standard(Duration::from_secs(30))));
    jobs.send(OutMessage::new(serde_json::to_string(&job).unwrap())).await.unwrap();
    let msg = jobs.receive(1, Duration::from_millis(0)).await.unwrap().remove(0);

    let mem = Mem::new();
    let mut config = SystemConfig::new(dir.path().join("ws"));
    // The heartbeat renews at most every 500 ms: a 300 ms lease lapses in between, and
    // another runner may take it.
    config.lease = Duration::from_millis(300);
    config.kill_grace = Duration::from_millis(500);
    // The step writes its pid into the test's private temp dir: run it as the test's user.
    config.step_env.user = None;
    let worker = JobWorker { state: state.clone(), jobs, sinks: Arc::new(MemSinks(mem.clone())), config };
    let running = tokio::spawn(async move { worker.handle(msg).await });

    until("the first step to start", || mem.event_types().iter().any(|t| t == types::STEP_STARTED)).await;
    until("the step's pid", || {
        pidfile.exists() && std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let bg = read_pid(&pidfile);
    // A second delivery takes the job once the first lease lapses.
    let deadline = Instant::now() + Duration::from_secs(20);
    let attempt = loop {
        match state.claim_job(&job.build, &job.stage, "second", Duration::from_secs(60)).await.unwrap() {
            Claim::Claimed { attempt } => break attempt,
            Claim::Busy => {}
            Claim::Finished => panic!("the stage cannot have ended"),
        }
        assert!(Instant::now() < deadline, "the first runner's lease never lapsed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(attempt >= 2, "the second claim is a later attempt: {attempt}");
    let taken = Instant::now();

    let handled = tokio::time::timeout(Duration::from_secs(30), running).await;
    let handled = handled.expect("the first runner stops instead of running its 60 s step").unwrap();
    assert!(handled.is_ok(), "{handled:?}");
    until("the step's processes to be gone", || process_gone(bg)).await;

    let types_sent = mem.event_types();
    assert_eq!(
        types_sent,
        vec![types::STAGE_STARTED, types::STEP_STARTED],
        "nothing after the lease was lost"
    );
    let late: Vec<String> = mem
        .recs()
        .into_iter()
        .filter_map(|r| match r {
            Rec::Event { event, at } if at > taken => Some(event.ty),
            _ => None,
        })
        .collect();
    assert!(late.is_empty(), "reports of attempt 1 after attempt {attempt} took over: {late:?}");
    // The lease stays with the second runner.
    let b = state.get_build(&job.build).await.unwrap().unwrap();
    let lease = b.stage("s").unwrap().lease.clone().unwrap();
    assert_eq!((lease.runner.as_str(), lease.attempt), ("second", attempt));
}
