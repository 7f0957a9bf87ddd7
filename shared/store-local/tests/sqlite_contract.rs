//! The contract suite against the SQLite adapters (the embedded default), plus what they
//! promise beyond it: restart from the data dir, several stores (processes) on one
//! database, dead-lettering, deduplication window, refusal of the earlier file layout.
//!
//! Leases and visibility timeouts are wall-clock times in the database (so that every
//! process on the host agrees on them), not tokio's clock: these tests run on real time,
//! as the AWS adapters' do, with timeouts of a second or less.

use async_trait::async_trait;
use kiln_domain::BuildId;
use kiln_domain::state::Build;
use kiln_store::{Claim, Commit, CommitOutcome, OutMessage, Queue, QueueError, StateStore, StoreError};
use kiln_store_contract::{self as contract, QueueFactory};
use kiln_store_local::sqlite::{OpenError, legacy_layout};
use kiln_store_local::{
    LocalStateStore, SqliteDb, SqliteQueue, SqliteQueueOptions, SqliteRepoStore, SqliteStateStore,
};
use std::sync::Arc;
use std::time::Duration;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

macro_rules! state_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempdir();
            let store = SqliteStateStore::open(dir.path()).expect("open");
            contract::$name(&store).await;
        }
    )*};
}

kiln_store_contract::for_each_state_check!(state_checks);

// Leases are wall-clock: the checks' sleeps run them out in real time.
kiln_store_contract::for_each_lease_check!(state_checks);

/// Fresh queues in one database, each under its own name.
struct Queues(Arc<SqliteDb>);

#[async_trait]
impl QueueFactory for Queues {
    async fn standard(&self, visibility: Duration) -> Arc<dyn Queue> {
        Arc::new(SqliteQueue::new(self.0.clone(), SqliteQueueOptions::standard(unique("std"), visibility)))
    }
    async fn fifo(&self, visibility: Duration) -> Arc<dyn Queue> {
        Arc::new(SqliteQueue::new(self.0.clone(), SqliteQueueOptions::fifo(unique("fifo"), visibility)))
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

macro_rules! queue_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempdir();
            contract::$name(&Queues(SqliteDb::open(dir.path()).expect("open"))).await;
        }
    )*};
}

kiln_store_contract::for_each_queue_check!(queue_checks);

macro_rules! repo_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempdir();
            contract::$name(&SqliteRepoStore::open(dir.path()).expect("open")).await;
        }
    )*};
}

kiln_store_contract::for_each_repo_check!(repo_checks);

/// Claims from two handles (processes) on one database: one wins, and settings and
/// claims written by one are read by the other, and by a later open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repos_claims_across_handles_and_restart() {
    use kiln_store::{RepoSettings, RepoStore};
    let dir = tempdir();
    let a = SqliteRepoStore::open(dir.path()).expect("open");
    let b = SqliteRepoStore::open(dir.path()).expect("open");
    tokio::join!(contract::repos_suite(&a), contract::repos_suite(&b));
    for round in 0..8 {
        let key = format!("hook/{round}");
        let (ra, rb) = tokio::join!(a.claim(&key, "a"), b.claim(&key, "b"));
        match (ra.expect("claim a"), rb.expect("claim b")) {
            (None, Some(v)) => assert_eq!(v, "a"),
            (Some(v), None) => assert_eq!(v, "b"),
            other => panic!("exactly one handle wins: {other:?}"),
        }
    }
    let settings = RepoSettings {
        repo: kiln_domain::Repo::new("acme", "app"),
        provider: kiln_domain::git::Provider::Github,
        api_url: "https://api.github.com".into(),
        updated_ms: 5,
    };
    a.put_repo(&settings).await.expect("put");
    assert_eq!(b.get_repo(&settings.repo).await.expect("get"), Some(settings.clone()));
    drop((a, b));
    let c = SqliteRepoStore::open(dir.path()).expect("reopen");
    assert_eq!(c.get_repo(&settings.repo).await.expect("get"), Some(settings));
    assert!(c.claim("hook/0", "c").await.expect("claim").is_some(), "claims survive a restart");
}

/// The whole suites on one shared store, concurrently: the checks must not step on each
/// other, and writers in one process take turns on the writer connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suites_share_one_store() {
    let dir = tempdir();
    let state = SqliteStateStore::open(dir.path()).expect("open");
    let queues = Queues(state.db().clone());
    tokio::join!(
        contract::state_suite(&state),
        contract::state_suite(&state),
        contract::queue_suite(&queues)
    );
}

/// Two opens of one data dir stand for two processes (each has its own connections):
/// the suites pass with the stores of both writing the same database at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_database() {
    let dir = tempdir();
    let a = SqliteStateStore::open(dir.path()).expect("open");
    let b = SqliteStateStore::open(dir.path()).expect("open");
    tokio::join!(contract::state_suite(&a), contract::state_suite(&b));
    // What one wrote, the other reads.
    let build = contract::sample_build();
    a.create_build(&build).await.expect("create");
    assert_eq!(b.get_build(&build.id).await.expect("get"), Some(build.clone()));
    assert!(matches!(b.create_build(&build).await, Err(StoreError::AlreadyExists(_))));
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_restart() {
    let dir = tempdir();
    let b = contract::sample_build();
    let lease = Duration::from_secs(600);
    let (before, events) = {
        let s = SqliteStateStore::open(dir.path()).expect("open");
        s.create_build(&b).await.expect("create");
        s.commit(&b.id, &commit("e1", 2, &b.id)).await.expect("commit");
        assert!(s.mark_dispatched(&b.id, &"build".into()).await.expect("mark"));
        assert_eq!(
            s.claim_job(&b.id, &"build".into(), "r1", lease).await.expect("claim"),
            Claim::Claimed { attempt: 1 }
        );
        (
            s.get_build(&b.id).await.expect("get").expect("build"),
            s.events(&b.id, 0, 100).await.expect("events"),
        )
    };
    let s = SqliteStateStore::open(dir.path()).expect("reopen");
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
    assert_eq!(s.claim_job(&b.id, &"build".into(), "r2", lease).await.expect("claim"), Claim::Busy);
    assert_eq!(s.unfinished_builds().await.expect("unfinished"), vec![b.id.clone()]);
}

/// A lease taken in one process runs out for another: the other takes the next attempt
/// (a runner that died, seen from the restarted `kiln dev`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expires_across_handles() {
    let dir = tempdir();
    let b = contract::sample_build();
    let first = SqliteStateStore::open(dir.path()).expect("open");
    first.create_build(&b).await.expect("create");
    let short = Duration::from_millis(300);
    assert_eq!(
        first.claim_job(&b.id, &"build".into(), "r1", short).await.expect("claim"),
        Claim::Claimed { attempt: 1 }
    );
    drop(first);
    let second = SqliteStateStore::open(dir.path()).expect("reopen");
    assert_eq!(second.claim_job(&b.id, &"build".into(), "r2", short).await.expect("claim"), Claim::Busy);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        second.claim_job(&b.id, &"build".into(), "r2", short).await.expect("claim"),
        Claim::Claimed { attempt: 2 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_messages_survive_restart() {
    let dir = tempdir();
    let opts = SqliteQueueOptions::standard("jobs", Duration::from_millis(400));
    {
        let q = SqliteQueue::new(SqliteDb::open(dir.path()).expect("open"), opts.clone());
        q.send(OutMessage::new("in flight")).await.expect("send");
        q.send(OutMessage::new("kept")).await.expect("send");
        // The oldest, received and never deleted: the receiver "dies" with it.
        let got = q.receive(1, Duration::from_secs(2)).await.expect("receive");
        assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), vec!["in flight"]);
    }
    let q = SqliteQueue::new(SqliteDb::open(dir.path()).expect("reopen"), opts);
    let got = contract::receive_n(&q, 2, Duration::from_secs(5)).await;
    let mut bodies: Vec<_> = got.iter().map(|m| (m.body.as_str(), m.receive_count)).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, vec![("in flight", 2), ("kept", 1)]);
    for m in &got {
        q.delete(&m.receipt).await.expect("delete");
    }
    assert_eq!(q.count().await.expect("len"), 0);
}

/// A send from another handle (process) wakes a long poll within the poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_long_poll_sees_other_process() {
    let dir = tempdir();
    let opts = SqliteQueueOptions::fifo("events", Duration::from_secs(30));
    let rx = SqliteQueue::new(SqliteDb::open(dir.path()).expect("open"), opts.clone());
    let tx = SqliteQueue::new(SqliteDb::open(dir.path()).expect("open"), opts);
    let (got, sent) = tokio::join!(rx.receive(1, Duration::from_secs(10)), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send(OutMessage::grouped("e1", "b1", "e1")).await
    });
    sent.expect("send");
    assert_eq!(got.expect("receive").iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), vec!["e1"]);
    // The dedup window is the database's, not the process's.
    tx.send(OutMessage::grouped("e1", "b1", "e1")).await.expect("resend");
    assert_eq!(rx.count().await.expect("len"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_dead_letter_after_max_receive_count() {
    let dir = tempdir();
    let db = SqliteDb::open(dir.path()).expect("open");
    let dlq = SqliteQueue::new(db.clone(), SqliteQueueOptions::standard("jobs-dlq", Duration::from_secs(30)));
    let q = SqliteQueue::new(
        db.clone(),
        SqliteQueueOptions::standard("jobs", Duration::from_millis(150)).with_dead_letter("jobs-dlq", 2),
    );
    q.send(OutMessage::new("poison")).await.expect("send");
    q.send(OutMessage::new("fine")).await.expect("send");
    let first = q.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(first.len(), 2);
    let fine = first.iter().find(|m| m.body == "fine").expect("fine");
    q.delete(&fine.receipt).await.expect("delete");
    let second = q.receive(10, Duration::from_secs(2)).await.expect("receive");
    assert_eq!((second.len(), second[0].receive_count), (1, 2));
    let third = q.receive(10, Duration::from_millis(500)).await.expect("receive");
    assert!(third.is_empty(), "{third:?}");
    assert_eq!(q.count().await.expect("len"), 0);
    let dead = dlq.receive(10, Duration::from_millis(100)).await.expect("receive");
    assert_eq!(
        dead.iter().map(|m| (m.body.as_str(), m.receive_count)).collect::<Vec<_>>(),
        vec![("poison", 1)]
    );
    assert!(matches!(q.delete(&second[0].receipt).await, Err(QueueError::BadReceipt)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_dead_letter_unblocks_fifo_group() {
    let dir = tempdir();
    let db = SqliteDb::open(dir.path()).expect("open");
    let dlq = SqliteQueue::new(db.clone(), SqliteQueueOptions::fifo("dlq", Duration::from_secs(30)));
    let q = SqliteQueue::new(
        db.clone(),
        SqliteQueueOptions::fifo("q", Duration::from_millis(100)).with_dead_letter("dlq", 1),
    );
    q.send(OutMessage::grouped("bad", "g", "1")).await.expect("send");
    q.send(OutMessage::grouped("good", "g", "2")).await.expect("send");
    assert_eq!(q.receive(10, Duration::ZERO).await.expect("receive")[0].body, "bad");
    let next = q.receive(10, Duration::from_secs(2)).await.expect("receive");
    assert_eq!(next.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), vec!["good"]);
    assert_eq!(dlq.count().await.expect("len"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stale_receipts_and_dedup_window() {
    let dir = tempdir();
    let db = SqliteDb::open(dir.path()).expect("open");
    let q = SqliteQueue::new(db.clone(), SqliteQueueOptions::standard("s", Duration::from_millis(150)));
    q.send(OutMessage::new("m")).await.expect("send");
    let first = q.receive(1, Duration::ZERO).await.expect("receive").pop().expect("message");
    let second = q.receive(1, Duration::from_secs(2)).await.expect("receive").pop().expect("redelivered");
    assert_eq!(second.receive_count, 2);
    assert!(matches!(q.delete(&first.receipt).await, Err(QueueError::BadReceipt)));
    assert!(matches!(q.extend(&first.receipt, Duration::from_secs(1)).await, Err(QueueError::BadReceipt)));
    q.delete(&second.receipt).await.expect("delete");
    assert!(matches!(q.delete(&second.receipt).await, Err(QueueError::BadReceipt)));

    let f = SqliteQueue::new(
        db.clone(),
        SqliteQueueOptions {
            dedup_window: Duration::from_millis(200),
            ..SqliteQueueOptions::fifo("f", Duration::from_secs(30))
        },
    );
    f.send(OutMessage::grouped("x", "g", "d")).await.expect("send");
    f.send(OutMessage::grouped("x", "g", "d")).await.expect("send");
    assert_eq!(f.count().await.expect("len"), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.send(OutMessage::grouped("x", "g", "d")).await.expect("send");
    assert_eq!(f.count().await.expect("len"), 2, "outside the window a resend is new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_deliver_twice() {
    let dir = tempdir();
    let db = SqliteDb::open(dir.path()).expect("open");
    let q =
        SqliteQueue::new(db, SqliteQueueOptions::standard("t", Duration::from_secs(30)).deliver_twice(true));
    q.send(OutMessage::new("job")).await.expect("send");
    let got = q.receive(10, Duration::from_millis(100)).await.expect("receive");
    assert_eq!(got.len(), 2);
    assert_ne!(got[0].receipt, got[1].receipt);
}

/// A data dir of the earlier file layout is refused, with what to do.
#[tokio::test]
async fn refuses_the_earlier_file_layout() {
    let dir = tempdir();
    let old = LocalStateStore::open(dir.path()).expect("open");
    let b: Build = contract::sample_build();
    old.create_build(&b).await.expect("create");
    assert!(legacy_layout(dir.path()));
    let err = SqliteDb::open(dir.path()).expect_err("refused");
    assert!(matches!(err, OpenError::LegacyLayout(_)), "{err:?}");
    assert!(err.to_string().contains("--data-dir"), "{err}");
    assert!(!dir.path().join("kiln.db").exists());
}

/// Queued jobs carry runner tokens: the data dir and the database are private to Kiln.
#[tokio::test]
async fn a_new_data_dir_and_its_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let _db = kiln_store_local::SqliteDb::open(&dir).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("kiln.db")), 0o600);
    for side in ["kiln.db-wal", "kiln.db-shm"] {
        if dir.join(side).exists() {
            assert_eq!(mode(&dir.join(side)), 0o600, "{side}");
        }
    }
}

/// Builds past their retention go whole (the build, its history, its applied ids); younger
/// ones stay; claims older than the retention go too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_what_the_retention_has_passed() {
    use kiln_store::RepoStore;
    const DAY: u64 = 24 * 3600 * 1000;
    let dir = tempdir();
    let db = SqliteDb::open(dir.path()).expect("open");
    let s = SqliteStateStore::new(db.clone());
    let repos = SqliteRepoStore::new(db);
    let now = kiln_domain::event::now_ms();
    let mut old = contract::sample_build();
    old.created_ms = now - 31 * DAY;
    let mut young = contract::sample_build_in(&old.repo);
    young.created_ms = now - 29 * DAY;
    for b in [&old, &young] {
        s.create_build(b).await.expect("create");
        s.commit(&b.id, &commit(&format!("e-{}", b.id), 2, &b.id)).await.expect("commit");
    }
    assert!(repos.claim("hook/github/d1", "x").await.expect("claim").is_none());

    assert_eq!(s.prune(30, now).await.expect("prune"), vec![old.id.clone()]);
    assert_eq!(s.get_build(&old.id).await.expect("get"), None);
    assert!(matches!(s.events(&old.id, 0, 10).await, Err(StoreError::NotFound(_))));
    // Its event id is forgotten with it: no row is left behind.
    assert_eq!(s.list_builds(&old.repo, 10).await.expect("list").len(), 1);
    assert!(s.get_build(&young.id).await.expect("get").is_some());
    assert_eq!(s.events(&young.id, 0, 10).await.expect("events").len(), 2);
    assert_eq!(repos.claim("hook/github/d1", "y").await.expect("claim").as_deref(), Some("x"));
    // Nothing more to do at the same time; a month later the rest goes, claims included.
    assert!(s.prune(30, now).await.expect("prune").is_empty());
    assert_eq!(s.prune(30, now + 31 * DAY).await.expect("prune"), vec![young.id.clone()]);
    assert!(repos.claim("hook/github/d1", "z").await.expect("claim").is_none(), "the old claim went");
}

/// A database of schema version 2 (each build whole, plan and stages included, in
/// `builds.doc`) is converted when it is opened: its builds read back equal, and take
/// commits as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_database_is_converted_when_opened() {
    let dir = tempdir();
    let build = contract::sample_build();
    {
        // The version-2 shape, made by hand: a whole build in `doc`, no rows elsewhere.
        let store = SqliteStateStore::open(dir.path()).expect("open");
        drop(store);
        let c = rusqlite::Connection::open(dir.path().join("kiln.db")).expect("sqlite");
        c.execute(
            "INSERT INTO builds (id, repo, doc, last_seq) VALUES (?1, ?2, ?3, 0)",
            rusqlite::params![
                build.id.as_str(),
                build.repo.to_string(),
                serde_json::to_string(&build).unwrap()
            ],
        )
        .expect("insert");
        c.execute_batch("PRAGMA user_version = 2").expect("version");
    }
    let store = SqliteStateStore::open(dir.path()).expect("reopen");
    assert_eq!(store.get_build(&build.id).await.expect("get"), Some(build.clone()));
    let part = store.get_build_part(&build.id, &[build.stages[1].name.clone()]).await.unwrap().unwrap();
    assert_eq!(part.stages, vec![build.stages[1].clone()]);
    let out = store.commit(&build.id, &commit("after-migration", 1, &build.id)).await.expect("commit");
    assert_eq!(out, CommitOutcome::Applied { first_seq: 1 });
    let c = rusqlite::Connection::open(dir.path().join("kiln.db")).expect("sqlite");
    let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 3);
    let doc: String = c.query_row("SELECT doc FROM builds", [], |r| r.get(0)).unwrap();
    assert!(!doc.contains("\"steps\""), "the header no longer holds the stages: {doc}");
}
