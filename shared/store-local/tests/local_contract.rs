//! The contract suite against the local adapters, plus what only the local adapters
//! promise (restart from the data dir, the queue's test switches).

use async_trait::async_trait;
use kiln_domain::BuildId;
use kiln_domain::event::StoredEvent;
use kiln_domain::logs::LogStream;
use kiln_domain::state::Build;
use kiln_store::{
    Claim, Commit, CommitOutcome, LogError, LogStore, OutMessage, Queue, QueueError, StateStore, StoreError,
};
use kiln_store_contract::{self as contract, QueueFactory};
use kiln_store_local::{LocalLogStore, LocalQueue, LocalStateStore, QueueOptions};
use std::sync::Arc;
use std::time::Duration;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

macro_rules! state_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let dir = tempdir();
            let store = LocalStateStore::open(dir.path()).expect("open");
            contract::$name(&store).await;
        }
    )*};
}

/// Lease checks on paused time: the local store's leases follow tokio's clock, so a
/// lease runs out as soon as the test's sleep is auto-advanced past it.
macro_rules! lease_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(start_paused = true)]
        async fn $name() {
            let dir = tempdir();
            let store = LocalStateStore::open(dir.path()).expect("open");
            contract::$name(&store).await;
        }
    )*};
}

macro_rules! log_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let dir = tempdir();
            let store = LocalLogStore::open(dir.path()).expect("open");
            contract::$name(&store).await;
        }
    )*};
}

struct LocalQueues;

#[async_trait]
impl QueueFactory for LocalQueues {
    async fn standard(&self, visibility: Duration) -> Arc<dyn Queue> {
        Arc::new(LocalQueue::standard(visibility))
    }
    async fn fifo(&self, visibility: Duration) -> Arc<dyn Queue> {
        Arc::new(LocalQueue::fifo(visibility))
    }
}

/// Queue checks on paused time: the local queue's timeouts are tokio timers.
macro_rules! queue_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(start_paused = true)]
        async fn $name() {
            contract::$name(&LocalQueues).await;
        }
    )*};
}

kiln_store_contract::for_each_state_check!(state_checks);

kiln_store_contract::for_each_lease_check!(lease_checks);

kiln_store_contract::for_each_log_check!(log_checks);

kiln_store_contract::for_each_queue_check!(queue_checks);

/// The whole suites on one shared store each, concurrently on a multi-thread runtime:
/// the checks must not step on each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suites_share_one_store() {
    let dir = tempdir();
    let state = LocalStateStore::open(dir.path()).expect("open");
    let logs = LocalLogStore::open(dir.path()).expect("open");
    tokio::join!(contract::state_suite(&state), contract::state_suite(&state), contract::log_suite(&logs));
}

// ---------------------------------------------------------------------------------------
// State: restart and the files

fn commit(event_id: &str, events: usize, build: &BuildId) -> Commit {
    Commit {
        event_id: event_id.to_string(),
        transitions: vec![],
        new_stages: vec![],
        events: (0..events).map(|_| contract::sample_event(build, "t")).collect(),
        images: vec![],
        arrivals: None,
    }
}

#[tokio::test]
async fn state_survives_restart() {
    let dir = tempdir();
    let b = contract::sample_build();
    let (before, events) = {
        let s = LocalStateStore::open(dir.path()).expect("open");
        s.create_build(&b).await.expect("create");
        s.commit(&b.id, &commit("e1", 2, &b.id)).await.expect("commit");
        assert!(s.mark_dispatched(&b.id, &"build".into()).await.expect("mark"));
        let lease = Duration::from_secs(600);
        assert_eq!(
            s.claim_job(&b.id, &"build".into(), "r1", lease).await.expect("claim"),
            Claim::Claimed { attempt: 1 }
        );
        (
            s.get_build(&b.id).await.expect("get").expect("build"),
            s.events(&b.id, 0, 100).await.expect("events"),
        )
    };
    let s = LocalStateStore::open(dir.path()).expect("reopen");
    // Listed while known only on disk.
    let list = s.list_builds(&b.repo, 10).await.expect("list");
    assert_eq!(list.iter().map(|x| x.id.clone()).collect::<Vec<_>>(), vec![b.id.clone()]);
    assert_eq!(s.get_build(&b.id).await.expect("get"), Some(before));
    assert_eq!(s.events(&b.id, 0, 100).await.expect("events"), events);
    assert_eq!(s.commit(&b.id, &commit("e1", 2, &b.id)).await.expect("commit"), CommitOutcome::Duplicate);
    assert_eq!(
        s.commit(&b.id, &commit("e2", 1, &b.id)).await.expect("commit"),
        CommitOutcome::Applied { first_seq: 3 }
    );
    assert!(!s.mark_dispatched(&b.id, &"build".into()).await.expect("mark"));
    let lease = Duration::from_secs(600);
    assert_eq!(s.claim_job(&b.id, &"build".into(), "r2", lease).await.expect("claim"), Claim::Busy);
    assert_eq!(
        s.claim_job(&b.id, &"build".into(), "r1", lease).await.expect("claim"),
        Claim::Claimed { attempt: 1 }
    );
    let err = s.create_build(&b).await;
    assert!(matches!(err, Err(StoreError::AlreadyExists(_))), "{err:?}");
}

#[tokio::test]
async fn state_files_layout() {
    let dir = tempdir();
    let s = LocalStateStore::open(dir.path()).expect("open");
    let b = contract::sample_build();
    s.create_build(&b).await.expect("create");
    s.commit(&b.id, &commit("e1", 3, &b.id)).await.expect("commit");
    let doc = dir.path().join(format!("builds/{}.json", b.id));
    // The document is a Build (the store's bookkeeping rides along under `_store`).
    let parsed: Build = serde_json::from_slice(&std::fs::read(&doc).expect("doc")).expect("a Build");
    assert_eq!(parsed, b);
    let lines =
        std::fs::read_to_string(dir.path().join(format!("builds/{}.events.jsonl", b.id))).expect("events");
    let seqs: Vec<u64> =
        lines.lines().map(|l| serde_json::from_str::<StoredEvent>(l).expect("event").seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let names: Vec<String> = std::fs::read_dir(dir.path().join("builds"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "no temp files left: {names:?}");
}

/// A crash between appending a commit's events and writing the document leaves lines
/// of a commit that never happened: they are ignored, and cut off before the next append.
#[tokio::test]
async fn state_ignores_events_of_an_unfinished_commit() {
    let dir = tempdir();
    let b = contract::sample_build();
    let events_path = dir.path().join(format!("builds/{}.events.jsonl", b.id));
    {
        let s = LocalStateStore::open(dir.path()).expect("open");
        s.create_build(&b).await.expect("create");
        s.commit(&b.id, &commit("e1", 2, &b.id)).await.expect("commit");
    }
    let ghost = StoredEvent { seq: 3, event: contract::sample_event(&b.id, "ghost") };
    let mut text = std::fs::read_to_string(&events_path).expect("events");
    text.push_str(&serde_json::to_string(&ghost).expect("json"));
    text.push_str("\n{\"seq\":4,\"ev");
    std::fs::write(&events_path, text).expect("write");

    let s = LocalStateStore::open(dir.path()).expect("reopen");
    assert_eq!(s.events(&b.id, 0, 100).await.expect("events").len(), 2);
    let c = commit("e2", 1, &b.id);
    assert_eq!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Applied { first_seq: 3 });
    let evs = s.events(&b.id, 0, 100).await.expect("events");
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[2].event, c.events[0]);
    let reopened = LocalStateStore::open(dir.path()).expect("reopen");
    assert_eq!(reopened.events(&b.id, 0, 100).await.expect("events"), evs);
    assert_eq!(std::fs::read_to_string(&events_path).expect("events").lines().count(), 3);
}

/// A reader on the same dir (another process: `kiln status`, `kiln logs --follow`) sees
/// the writer's changes as they happen, not only what it read first.
#[tokio::test]
async fn state_reader_follows_writer() {
    let dir = tempdir();
    let writer = LocalStateStore::open(dir.path()).expect("open");
    let reader = LocalStateStore::open(dir.path()).expect("open");
    let b = contract::sample_build();
    assert_eq!(reader.get_build(&b.id).await.expect("get"), None);
    writer.create_build(&b).await.expect("create");
    assert_eq!(reader.get_build(&b.id).await.expect("get"), Some(b.clone()));
    assert!(reader.events(&b.id, 0, 10).await.expect("events").is_empty());
    for i in 1..=3 {
        writer.commit(&b.id, &commit(&format!("e{i}"), 1, &b.id)).await.expect("commit");
        assert!(writer.mark_dispatched(&b.id, &"build".into()).await.is_ok());
        let seen = reader.events(&b.id, 0, 10).await.expect("events");
        assert_eq!(seen.len(), i, "after commit {i}");
        assert!(
            reader
                .get_build(&b.id)
                .await
                .expect("get")
                .expect("build")
                .stage("build")
                .expect("stage")
                .dispatched
        );
    }
}

/// The catalog is kept in `images/<name>.json` and `images/<name>.history.jsonl`, survives
/// a restart, and is seen by another store on the same dir (`kiln images` while `kiln run`
/// writes).
#[tokio::test]
async fn catalog_files_restart_and_reader() {
    use kiln_domain::status::ImageStatus;
    let dir = tempdir();
    let writer = LocalStateStore::open(dir.path()).expect("open");
    let reader = LocalStateStore::open(dir.path()).expect("open");
    let b = contract::sample_build();
    writer.create_build(&b).await.expect("create");
    let v1 = contract::image_record("base-os", "aws", &b.id, ImageStatus::Queued, 1);
    let v2 = contract::image_record("base-os", "aws", &b.id, ImageStatus::Complete, 2);
    for (i, r) in [&v1, &v2].into_iter().enumerate() {
        let c = Commit { images: vec![contract::image_write(r)], ..commit(&format!("e{i}"), 1, &b.id) };
        writer.commit(&b.id, &c).await.expect("commit");
        assert_eq!(reader.get_image("base-os").await.expect("get"), vec![r.clone()]);
    }
    assert!(dir.path().join("images/base-os.json").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("images/base-os.history.jsonl"))
            .expect("history")
            .lines()
            .count(),
        2
    );
    let s = LocalStateStore::open(dir.path()).expect("reopen");
    assert_eq!(s.list_images().await.expect("list"), vec![v2.clone()]);
    assert_eq!(s.image_history("base-os").await.expect("history"), vec![v1, v2]);
    // Names that are not image names are simply unknown.
    assert!(s.get_image("../builds/x").await.expect("get").is_empty());
    assert!(s.image_history("..").await.expect("history").is_empty());
}

#[tokio::test]
async fn state_refuses_path_like_ids() {
    let dir = tempdir();
    let s = LocalStateStore::open(dir.path()).expect("open");
    let id = BuildId::new("../../etc/passwd");
    assert_eq!(s.get_build(&id).await.expect("get"), None);
    assert!(matches!(s.commit(&id, &commit("e", 0, &id)).await, Err(StoreError::NotFound(_))));
    let mut b = contract::sample_build();
    b.id = id;
    assert!(s.create_build(&b).await.is_err());
}

// ---------------------------------------------------------------------------------------
// Logs: restart and the files

#[tokio::test]
async fn logs_survive_restart() {
    let dir = tempdir();
    let b = BuildId::generate();
    let step = contract::step_stream(3);
    {
        let l = LocalLogStore::open(dir.path()).expect("open");
        assert_eq!(l.append(&b, &LogStream::Init, "a:1", b"one\n").await.expect("append"), 0);
        assert_eq!(l.append(&b, &LogStream::Init, "b:1", b"two\n").await.expect("append"), 4);
        l.put_chunk(&b, &step, 0, b"step\n").await.expect("put");
        l.complete(&b, &step).await.expect("complete");
    }
    let l = LocalLogStore::open(dir.path()).expect("reopen");
    assert_eq!(l.append(&b, &LogStream::Init, "a:1", b"one\n").await.expect("append"), 0);
    assert_eq!(l.append(&b, &LogStream::Init, "b:1", b"two\n").await.expect("append"), 4);
    assert_eq!(l.append(&b, &LogStream::Init, "a:2", b"three\n").await.expect("append"), 8);
    assert_eq!(contract::read_all(&l, &b, &LogStream::Init).await, (b"one\ntwo\nthree\n".to_vec(), false));
    assert_eq!(contract::read_all(&l, &b, &step).await, (b"step\n".to_vec(), true));
    let err = l.put_chunk(&b, &step, 5, b"more").await;
    assert!(matches!(err, Err(LogError::Complete { .. })), "{err:?}");
    let list = l.list(&b).await.expect("list");
    assert_eq!(
        list.iter().map(|i| (i.stream.clone(), i.len, i.complete)).collect::<Vec<_>>(),
        vec![(LogStream::Init, 14, false), (step, 5, true)]
    );
}

#[tokio::test]
async fn logs_files_layout() {
    let dir = tempdir();
    let l = LocalLogStore::open(dir.path()).expect("open");
    let b = BuildId::generate();
    let s = LogStream::Step { stage: "test".into(), step: "unit".into(), number: 3, attempt: 1 };
    l.put_chunk(&b, &s, 0, b"x").await.expect("put");
    l.complete(&b, &s).await.expect("complete");
    l.append(&b, &LogStream::Init, "id with spaces\nand a newline", b"y").await.expect("append");
    let base = dir.path().join(format!("logs/{b}"));
    assert_eq!(std::fs::read(base.join("step/0003/test/unit/1.log")).expect("log"), b"x");
    assert!(base.join("step/0003/test/unit/1.complete").exists());
    assert_eq!(std::fs::read(base.join("init.log")).expect("init"), b"y");
    assert_eq!(l.stream_path(&b, &s).expect("path"), base.join("step/0003/test/unit/1.log"));
    // Odd batch ids survive a restart.
    let l2 = LocalLogStore::open(dir.path()).expect("reopen");
    assert_eq!(
        l2.append(&b, &LogStream::Init, "id with spaces\nand a newline", b"y").await.expect("append"),
        0
    );
    assert_eq!(l2.list(&b).await.expect("list")[0].len, 1);
}

/// A retried batch that overlaps the end (a write that was cut short) appends the rest.
#[tokio::test]
async fn logs_partial_overlap_appends_the_rest() {
    let dir = tempdir();
    let l = LocalLogStore::open(dir.path()).expect("open");
    let (b, s) = (BuildId::generate(), contract::step_stream(1));
    l.put_chunk(&b, &s, 0, b"abc").await.expect("put");
    l.put_chunk(&b, &s, 0, b"abcdef").await.expect("put");
    l.put_chunk(&b, &s, 2, b"cdefgh").await.expect("put");
    assert_eq!(contract::read_all(&l, &b, &s).await.0, b"abcdefgh");
    let err = l.put_chunk(&b, &s, 2, b"cXefghij").await;
    assert!(matches!(err, Err(LogError::Conflict { offset: 2, .. })), "{err:?}");
    l.complete(&b, &s).await.expect("complete");
    let err = l.put_chunk(&b, &s, 6, b"ghij").await;
    assert!(matches!(err, Err(LogError::Complete { .. })), "{err:?}");
    assert_eq!(contract::read_all(&l, &b, &s).await, (b"abcdefgh".to_vec(), true));
}

/// A torn line at the end of the batch ids (a crash mid-write) does not corrupt the next.
#[tokio::test]
async fn logs_torn_batch_line() {
    let dir = tempdir();
    let b = BuildId::generate();
    {
        let l = LocalLogStore::open(dir.path()).expect("open");
        l.append(&b, &LogStream::Init, "a", b"a\n").await.expect("append");
    }
    let batches = dir.path().join(format!("logs/{b}/init.batches"));
    let mut text = std::fs::read(&batches).expect("batches");
    text.extend_from_slice(b"{\"id\":\"b\",\"off");
    std::fs::write(&batches, text).expect("write");
    let l = LocalLogStore::open(dir.path()).expect("reopen");
    assert_eq!(l.append(&b, &LogStream::Init, "b", b"b\n").await.expect("append"), 2);
    let l = LocalLogStore::open(dir.path()).expect("reopen");
    assert_eq!(l.append(&b, &LogStream::Init, "a", b"a\n").await.expect("append"), 0);
    assert_eq!(l.append(&b, &LogStream::Init, "b", b"b\n").await.expect("append"), 2);
    assert_eq!(contract::read_all(&l, &b, &LogStream::Init).await.0, b"a\nb\n");
}

#[tokio::test]
async fn logs_reads_are_capped() {
    let dir = tempdir();
    let l = LocalLogStore::open(dir.path()).expect("open");
    let (b, s) = (BuildId::generate(), contract::step_stream(1));
    let data = contract::noise(LocalLogStore::MAX_READ + 1000, 7);
    l.put_chunk(&b, &s, 0, &data).await.expect("put");
    let r = l.read(&b, &s, 0, usize::MAX).await.expect("read");
    assert_eq!(r.bytes.len(), LocalLogStore::MAX_READ);
    assert_eq!(r.next_offset, LocalLogStore::MAX_READ as u64);
    assert_eq!(contract::read_all(&l, &b, &s).await.0.len(), data.len());
}

#[tokio::test]
async fn logs_refuse_path_like_ids() {
    let dir = tempdir();
    let l = LocalLogStore::open(dir.path()).expect("open");
    let b = BuildId::new("..");
    assert!(l.put_chunk(&b, &LogStream::Init, 0, b"x").await.is_err());
    let s = LogStream::Step { stage: "..".into(), step: "x".into(), number: 1, attempt: 1 };
    assert!(l.put_chunk(&BuildId::generate(), &s, 0, b"x").await.is_err());
    assert!(l.list(&b).await.expect("list").is_empty());
}

// ---------------------------------------------------------------------------------------
// Queues: the local switches

async fn drain(q: &LocalQueue, wait: Duration) -> Vec<kiln_store::Received> {
    q.receive(100, wait).await.expect("receive")
}

#[tokio::test(start_paused = true)]
async fn queue_deliver_twice() {
    let q = LocalQueue::new(QueueOptions::standard(Duration::from_secs(30)).deliver_twice(true));
    q.send(OutMessage::new("job")).await.expect("send");
    assert_eq!(q.len(), 2);
    let got = drain(&q, Duration::from_millis(100)).await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.body == "job" && m.receive_count == 1));
    assert_ne!(got[0].receipt, got[1].receipt);
    assert_eq!(q.in_flight(), 2);
    for m in &got {
        q.delete(&m.receipt).await.expect("delete");
    }
    assert!(q.is_empty());
}

#[tokio::test(start_paused = true)]
async fn queue_deliver_twice_fifo_keeps_group_order() {
    let q = LocalQueue::new(QueueOptions::fifo(Duration::from_secs(30)).deliver_twice(true));
    q.send(OutMessage::grouped("a1", "g", "a1")).await.expect("send");
    q.send(OutMessage::grouped("a2", "g", "a2")).await.expect("send");
    q.send(OutMessage::grouped("a1", "g", "a1")).await.expect("deduplicated resend");
    let mut order = Vec::new();
    for _ in 0..4 {
        let got = drain(&q, Duration::from_millis(100)).await;
        assert_eq!(got.len(), 1, "one in flight per group");
        order.push(got[0].body.clone());
        q.delete(&got[0].receipt).await.expect("delete");
    }
    assert_eq!(order, vec!["a1", "a1", "a2", "a2"]);
    assert!(q.is_empty());
}

#[tokio::test(start_paused = true)]
async fn queue_dead_letter_after_max_receive_count() {
    let dlq = Arc::new(LocalQueue::standard(Duration::from_secs(30)));
    let q =
        LocalQueue::new(QueueOptions::standard(Duration::from_millis(150)).with_dead_letter(dlq.clone(), 2));
    q.send(OutMessage::new("poison")).await.expect("send");
    q.send(OutMessage::new("fine")).await.expect("send");
    let first = drain(&q, Duration::ZERO).await;
    assert_eq!(first.len(), 2);
    let fine = first.iter().find(|m| m.body == "fine").expect("fine");
    q.delete(&fine.receipt).await.expect("delete");
    let second = q.receive(10, Duration::from_secs(2)).await.expect("receive");
    assert_eq!((second.len(), second[0].receive_count), (1, 2));
    // Received twice without delete: the next receive moves it instead of delivering it.
    let third = q.receive(10, Duration::from_millis(500)).await.expect("receive");
    assert!(third.is_empty(), "{third:?}");
    assert!(q.is_empty());
    let dead = drain(&dlq, Duration::from_millis(100)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].body.as_str(), dead[0].receive_count), ("poison", 1));
    // The old receipt is gone with it.
    assert!(matches!(q.delete(&second[0].receipt).await, Err(QueueError::BadReceipt)));
}

#[tokio::test(start_paused = true)]
async fn queue_dead_letter_unblocks_fifo_group() {
    let dlq = Arc::new(LocalQueue::fifo(Duration::from_secs(30)));
    let q = LocalQueue::new(QueueOptions::fifo(Duration::from_millis(100)).with_dead_letter(dlq.clone(), 1));
    q.send(OutMessage::grouped("bad", "g", "1")).await.expect("send");
    q.send(OutMessage::grouped("good", "g", "2")).await.expect("send");
    assert_eq!(drain(&q, Duration::ZERO).await[0].body, "bad");
    let next = q.receive(10, Duration::from_secs(2)).await.expect("receive");
    assert_eq!(next.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), vec!["good"]);
    assert_eq!(dlq.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn queue_stale_receipts() {
    let q = LocalQueue::standard(Duration::from_millis(150));
    q.send(OutMessage::new("m")).await.expect("send");
    let first = drain(&q, Duration::ZERO).await.pop().expect("message");
    let second = q.receive(1, Duration::from_secs(2)).await.expect("receive").pop().expect("redelivered");
    assert_eq!(second.receive_count, 2);
    assert!(matches!(q.delete(&first.receipt).await, Err(QueueError::BadReceipt)));
    assert!(matches!(q.extend(&first.receipt, Duration::from_secs(1)).await, Err(QueueError::BadReceipt)));
    q.delete(&second.receipt).await.expect("delete");
    assert!(matches!(q.delete(&second.receipt).await, Err(QueueError::BadReceipt)));
    // Expired but not yet redelivered: the receipt still works.
    q.send(OutMessage::new("n")).await.expect("send");
    let m = drain(&q, Duration::ZERO).await.pop().expect("message");
    tokio::time::advance(Duration::from_millis(300)).await;
    q.delete(&m.receipt).await.expect("delete after the timeout, before redelivery");
    assert!(q.is_empty());
}

#[tokio::test(start_paused = true)]
async fn queue_dedup_window_and_standard_ignores_groups() {
    let q = LocalQueue::new(QueueOptions {
        dedup_window: Duration::from_millis(100),
        ..QueueOptions::fifo(Duration::from_secs(30))
    });
    q.send(OutMessage::grouped("x", "g", "d")).await.expect("send");
    q.send(OutMessage::grouped("x", "g", "d")).await.expect("send");
    assert_eq!(q.len(), 1);
    tokio::time::advance(Duration::from_millis(200)).await;
    q.send(OutMessage::grouped("x", "g", "d")).await.expect("send");
    assert_eq!(q.len(), 2, "outside the window a resend is new");

    let std_q = LocalQueue::standard(Duration::from_secs(30));
    std_q.send(OutMessage::grouped("1", "g", "d")).await.expect("send");
    std_q.send(OutMessage::grouped("2", "g", "d")).await.expect("send");
    assert_eq!(drain(&std_q, Duration::ZERO).await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn queue_receive_times_out_empty() {
    let q = LocalQueue::standard(Duration::from_secs(1));
    let t = tokio::time::Instant::now();
    assert!(q.receive(1, Duration::from_millis(200)).await.expect("receive").is_empty());
    assert_eq!(t.elapsed(), Duration::from_millis(200), "waits the whole time, on paused time exactly");
    assert!(q.receive(0, Duration::from_secs(5)).await.expect("receive").is_empty());
}

#[tokio::test]
async fn secrets_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let store =
        kiln_store_local::LocalSecretStore::open(&tmp.path().join("data"), &tmp.path().join("key")).unwrap();
    kiln_store_contract::secrets::secrets_round_trip(&store).await;
    kiln_store_contract::secrets::secrets_large_values_and_rewrites(&store).await;
}
