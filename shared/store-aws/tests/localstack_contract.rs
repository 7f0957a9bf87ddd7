//! The contract suite (`kiln_store_contract`) against the AWS adapters on LocalStack,
//! plus what only the AWS adapters have to show (dead-letter queues, compaction of big
//! logs, the key layout).
//!
//! Needs a LocalStack with Kiln's resources (`localstack/start.sh && localstack/seed.sh`),
//! so every test here is `#[ignore]`d: without LocalStack they are reported as ignored,
//! never as passed. `scripts/test.sh` starts LocalStack and runs them with
//! `--include-ignored`. The endpoint and credentials come from the environment, else from
//! `localstack/.state/env`.

mod common;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;
use kiln_domain::BuildId;
use kiln_domain::logs::LogStream;
use kiln_store::{Commit, LogError, LogStore, OutMessage, Queue, StateStore};
use kiln_store_aws::{
    AwsConfig, Clients, DynamoRepoStore, DynamoStateStore, S3LogStore, SqsQueue, connect_with,
};
use kiln_store_contract::{self as contract, QueueFactory};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Set-up

/// Clients for LocalStack.
async fn localstack() -> Clients {
    Clients::from_sdk_config(&common::sdk_config().await)
}

fn config() -> AwsConfig {
    AwsConfig::from_env()
}

fn state(c: &Clients) -> DynamoStateStore {
    DynamoStateStore::new(c.dynamodb.clone(), config().table)
}

fn repos(c: &Clients) -> DynamoRepoStore {
    DynamoRepoStore::new(c.dynamodb.clone(), config().table)
}

fn logs(c: &Clients) -> S3LogStore {
    S3LogStore::new(c.s3.clone(), config().bucket)
}

/// Makes uniquely named queues and deletes them again.
struct Queues {
    sqs: aws_sdk_sqs::Client,
    made: Mutex<Vec<String>>,
}

impl Queues {
    fn new(c: &Clients) -> Self {
        Self { sqs: c.sqs.clone(), made: Mutex::new(Vec::new()) }
    }

    async fn create(&self, fifo: bool, attrs: &[(QueueAttributeName, String)]) -> SqsQueue {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("kiln-test-{}{}", &id[..16], if fifo { ".fifo" } else { "" });
        let mut req = self.sqs.create_queue().queue_name(&name);
        if fifo {
            req = req
                .attributes(QueueAttributeName::FifoQueue, "true")
                .attributes(QueueAttributeName::ContentBasedDeduplication, "false");
        }
        for (k, v) in attrs {
            req = req.attributes(k.clone(), v);
        }
        let url = req.send().await.expect("create queue").queue_url.expect("queue url");
        self.made.lock().unwrap().push(url.clone());
        SqsQueue::new(self.sqs.clone(), url)
    }

    async fn arn(&self, q: &SqsQueue) -> String {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(q.url())
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes");
        out.attributes.and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned()).expect("queue arn")
    }

    async fn clean_up(&self) {
        let urls = std::mem::take(&mut *self.made.lock().unwrap());
        for url in urls {
            if let Err(e) = self.sqs.delete_queue().queue_url(&url).send().await {
                eprintln!("delete queue {url}: {e}");
            }
        }
    }
}

fn visibility(d: Duration) -> (QueueAttributeName, String) {
    (QueueAttributeName::VisibilityTimeout, d.as_secs().max(1).to_string())
}

#[async_trait]
impl QueueFactory for Queues {
    async fn standard(&self, v: Duration) -> Arc<dyn Queue> {
        Arc::new(self.create(false, &[visibility(v)]).await)
    }
    async fn fifo(&self, v: Duration) -> Arc<dyn Queue> {
        Arc::new(self.create(true, &[visibility(v)]).await)
    }
}

// ---------------------------------------------------------------------------------------
// The contract, one test per check

macro_rules! state_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        #[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
        async fn $name() {
            let c = localstack().await;
            contract::$name(&state(&c)).await;
        }
    )*};
}

macro_rules! log_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        #[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
        async fn $name() {
            let c = localstack().await;
            contract::$name(&logs(&c)).await;
        }
    )*};
}

macro_rules! queue_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        #[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
        async fn $name() {
            let c = localstack().await;
            let q = Queues::new(&c);
            contract::$name(&q).await;
            q.clean_up().await;
        }
    )*};
}

kiln_store_contract::for_each_state_check!(state_checks);

kiln_store_contract::for_each_lease_check!(state_checks);

kiln_store_contract::for_each_log_check!(log_checks);

kiln_store_contract::for_each_queue_check!(queue_checks);

macro_rules! repo_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        #[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
        async fn $name() {
            let c = localstack().await;
            contract::$name(&repos(&c)).await;
        }
    )*};
}

kiln_store_contract::for_each_repo_check!(repo_checks);

/// The repository items have the shapes ARCHITECTURE.md gives: settings under
/// `REPO` / `<org>/<repo>`, a claim under `CLAIM#<key>` / `CLAIM`; two stores (two
/// Lambda instances) racing for one claim see one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn repos_item_shapes_and_two_stores() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use kiln_store::{RepoSettings, RepoStore};
    let c = localstack().await;
    let (a, b) = (repos(&c), repos(&localstack().await));
    let id = uuid::Uuid::new_v4().simple().to_string();
    let settings = RepoSettings {
        repo: kiln_domain::Repo::new(format!("shape{id}"), "app"),
        provider: kiln_domain::git::Provider::Github,
        api_url: "https://api.github.com".into(),
        updated_ms: 7,
    };
    a.put_repo(&settings).await.expect("put");
    let claim = format!("hook/github/{id}");
    let (ra, rb) = tokio::join!(a.claim(&claim, "a"), b.claim(&claim, "b"));
    let winner = match (ra.expect("claim a"), rb.expect("claim b")) {
        (None, Some(v)) if v == "a" => "a",
        (Some(v), None) if v == "b" => "b",
        other => panic!("exactly one store wins: {other:?}"),
    };
    let get = |pk: String, sk: String| {
        c.dynamodb
            .get_item()
            .table_name(config().table)
            .consistent_read(true)
            .key("pk", AttributeValue::S(pk))
            .key("sk", AttributeValue::S(sk))
            .send()
    };
    let item = get("REPO".into(), settings.repo.to_string()).await.expect("get").item.expect("settings item");
    let doc: RepoSettings =
        serde_json::from_str(item["doc"].as_s().expect("doc is a string")).expect("doc is RepoSettings");
    assert_eq!(doc, settings);
    let item = get(format!("CLAIM#{claim}"), "CLAIM".into()).await.expect("get").item.expect("claim item");
    assert_eq!(item["value"].as_s().map(String::as_str), Ok(winner));
    let created_ms: u64 = item["created_ms"].as_n().expect("created_ms").parse().unwrap();
    let expires: u64 = item["expires_at"].as_n().expect("a claim expires").parse().unwrap();
    assert_eq!(expires, created_ms / 1000 + 90 * 24 * 3600, "claims go after the default retention");
    b.release(&claim).await.expect("release");
    assert!(get(format!("CLAIM#{claim}"), "CLAIM".into()).await.expect("get").item.is_none());
}

/// Every item of a build — the build, its stages, a lease, its history and applied event
/// ids — carries the same `expires_at`: the retention after the build was created
/// (`kiln_domain::retention`), so DynamoDB's TTL removes a build whole.
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn every_item_of_a_build_expires_with_it() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let c = localstack().await;
    let store = state(&c).with_retention(7);
    let build = contract::sample_build();
    store.create_build(&build).await.expect("create");
    let e = contract::sample_event(&build.id, "dev.kiln.report.build-created");
    let commit = Commit { event_id: e.id.clone(), events: vec![e], ..Commit::default() };
    store.commit(&build.id, &commit).await.expect("commit");
    let stage = &build.stages[0].name;
    store.claim_job(&build.id, stage, "runner-1", Duration::from_secs(30)).await.expect("claim");
    let items = c
        .dynamodb
        .query()
        .table_name(config().table)
        .consistent_read(true)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("BUILD#{}", build.id)))
        .send()
        .await
        .expect("query")
        .items
        .unwrap_or_default();
    let want = kiln_domain::retention::expires_at_ms(&build, 7) / 1000;
    let mut kinds: Vec<String> = Vec::new();
    for item in &items {
        let sk = item["sk"].as_s().unwrap();
        let at: u64 = item
            .get("expires_at")
            .and_then(|v| v.as_n().ok())
            .unwrap_or_else(|| panic!("{sk} has no expires_at"))
            .parse()
            .unwrap();
        assert_eq!(at, want, "{sk}");
        kinds.push(
            sk.split('#').next().unwrap_or_default().to_string()
                + if sk.contains("#STAGE#") {
                    "#STAGE"
                } else if sk.contains("#LEASE#") {
                    "#LEASE"
                } else {
                    ""
                },
        );
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, ["APPLIED", "BUILD", "BUILD#LEASE", "BUILD#STAGE", "EVENT", "PLAN"], "{items:#?}");
}

/// A build of 1,000 stages and 5,000 steps (a plan of about 500 KB): created in several
/// writes, its plan cut into parts; no item written, by this or any other check of this
/// process, is over 64 KB.
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn no_item_over_64_kb() {
    let c = localstack().await;
    let s = state(&c);
    contract::state_large_build(&s).await;
    let plan = contract::large_plan(1000, 5);
    let plan_bytes = serde_json::to_string(&plan).expect("json").len();
    assert!(plan_bytes > 400 * 1024, "the plan is larger than one DynamoDB item could be: {plan_bytes}");
    let largest = kiln_store_aws::largest_item_bytes();
    assert!(largest > 0, "items were measured");
    assert!(
        largest <= kiln_store_aws::MAX_ITEM_BYTES,
        "an item of {largest} bytes was written (limit {})",
        kiln_store_aws::MAX_ITEM_BYTES
    );
}

/// The whole suites on one store each, concurrently: the checks must not step on each
/// other (one table and one bucket serve every check).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn suites_share_one_store() {
    let c = localstack().await;
    let (s, l) = (state(&c), logs(&c));
    tokio::join!(contract::state_suite(&s), contract::state_suite(&s), contract::log_suite(&l));
}

// ---------------------------------------------------------------------------------------
// Wiring

/// `connect_with` resolves the seeded queues by name and serves every port.
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn connect_resolves_the_seeded_resources() {
    let c = localstack().await;
    let backend = connect_with(c, &AwsConfig::default()).await.expect("connect");
    let b = contract::sample_build();
    backend.state.create_build(&b).await.expect("create");
    assert_eq!(backend.state.get_build(&b.id).await.expect("get"), Some(b.clone()));
    backend.logs.put_chunk(&b.id, &LogStream::Init, 0, b"hi\n").await.expect("put");
    assert_eq!(contract::read_all(&*backend.logs, &b.id, &LogStream::Init).await.0, b"hi\n");
    let missing = kiln_store_aws::connect_with(
        localstack().await,
        &AwsConfig { jobs_queue_url: "kiln-no-such-queue".into(), ..AwsConfig::default() },
    )
    .await;
    assert!(missing.is_err(), "an unknown queue name is an error");
}

// ---------------------------------------------------------------------------------------
// SQS

async fn receive_one(q: &dyn Queue, within: Duration) -> Option<kiln_store::Received> {
    contract::receive_n(q, 1, within).await.pop()
}

/// A FIFO message received and not deleted comes back after the visibility timeout with
/// receive count 2 (the events queue is FIFO; the contract checks a standard queue).
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn sqs_fifo_redelivery_counts_receives() {
    let c = localstack().await;
    let queues = Queues::new(&c);
    let q = queues.create(true, &[visibility(Duration::from_secs(1))]).await;
    q.send(OutMessage::grouped("event", "build-1", "ev-1")).await.expect("send");
    let first = receive_one(&q, Duration::from_secs(10)).await.expect("first delivery");
    assert_eq!(first.receive_count, 1);
    let second = receive_one(&q, Duration::from_secs(10)).await.expect("redelivered");
    assert_eq!((second.body.as_str(), second.receive_count), ("event", 2));
    q.delete(&second.receipt).await.expect("delete");
    queues.clean_up().await;
}

/// A message received `maxReceiveCount` times without being deleted (a poison message)
/// moves to the dead-letter queue.
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn sqs_poison_message_lands_in_the_dead_letter_queue() {
    let c = localstack().await;
    let queues = Queues::new(&c);
    let dlq = queues.create(false, &[]).await;
    let policy = serde_json::json!({ "deadLetterTargetArn": queues.arn(&dlq).await, "maxReceiveCount": 2 });
    let q = queues
        .create(
            false,
            &[visibility(Duration::from_secs(1)), (QueueAttributeName::RedrivePolicy, policy.to_string())],
        )
        .await;
    q.send(OutMessage::new("poison")).await.expect("send");
    q.send(OutMessage::new("fine")).await.expect("send");
    let mut counts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Keep receiving (never deleting the poison) until it has gone.
    let mut dead = None;
    while Instant::now() < deadline && dead.is_none() {
        for m in q.receive(10, Duration::from_secs(2)).await.expect("receive") {
            if m.body == "fine" {
                q.delete(&m.receipt).await.expect("delete");
            } else {
                counts.push(m.receive_count);
            }
        }
        dead = dlq.receive(1, Duration::ZERO).await.expect("receive dlq").pop();
    }
    let dead = dead.expect("the poison message reached the dead-letter queue");
    assert_eq!(dead.body, "poison");
    assert_eq!(counts, vec![1, 2], "received twice, then moved");
    assert!(q.receive(10, Duration::from_secs(2)).await.expect("receive").is_empty());
    queues.clean_up().await;
}

// ---------------------------------------------------------------------------------------
// S3 logs

async fn keys_under(c: &Clients, prefix: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let res =
            c.s3.list_objects_v2()
                .bucket(config().bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .expect("list");
        out.extend(
            res.contents().iter().map(|o| (o.key().unwrap_or_default().to_string(), o.size().unwrap_or(0))),
        );
        token = res.next_continuation_token;
        if token.is_none() {
            return out;
        }
    }
}

async fn object(c: &Clients, key: &str) -> Vec<u8> {
    let out = c.s3.get_object().bucket(config().bucket).key(key).send().await.expect("get");
    out.body.collect().await.expect("body").into_bytes().to_vec()
}

/// A 20 MB log written in 256 KiB batches compacts (multipart) into one object that reads
/// back byte-exact; the chunks are gone afterwards.
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn s3_twenty_megabytes_compact_and_read_back() {
    let c = localstack().await;
    let l = logs(&c);
    let (b, s) = (BuildId::generate(), contract::step_stream(1));
    let data = contract::noise(20 * 1000 * 1000, 7);
    let batch = kiln_domain::logs::MAX_BATCH_BYTES;
    let t = Instant::now();
    for (i, part) in data.chunks(batch).enumerate() {
        l.put_chunk(&b, &s, (i * batch) as u64, part).await.expect("put");
    }
    let put_time = t.elapsed();
    let chunks = S3LogStore::chunks_prefix(&b, &s);
    assert_eq!(keys_under(&c, &chunks).await.len(), data.len().div_ceil(batch));
    let t = Instant::now();
    l.complete(&b, &s).await.expect("complete");
    eprintln!("20 MB: {} puts in {put_time:?}, complete in {:?}", data.len().div_ceil(batch), t.elapsed());
    assert!(keys_under(&c, &chunks).await.is_empty(), "chunks removed");
    let log = S3LogStore::log_key(&b, &s);
    let prefix = log.trim_end_matches("log").to_string();
    let mut left: Vec<String> = keys_under(&c, &prefix).await.into_iter().map(|(k, _)| k).collect();
    left.sort();
    // `log` alone marks the stream complete (no `complete` marker in this layout).
    assert_eq!(left, vec![log.clone()]);
    let (all, complete) = contract::read_all(&l, &b, &s).await;
    assert!(complete);
    assert!(all == data, "bytes differ");
    let r = l.read(&b, &s, 19_999_990, 100).await.expect("read");
    assert_eq!((r.bytes.as_slice(), r.next_offset, r.complete), (&data[19_999_990..], 20_000_000, true));
    let info = l.list(&b).await.expect("list");
    assert_eq!((info[0].len, info[0].complete), (data.len() as u64, true));
}

/// Chunks big enough to be parts are copied inside S3 (UploadPartCopy), mixed with
/// small ones gathered into parts.
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn s3_big_chunks_compact_by_copy() {
    let c = localstack().await;
    let l = logs(&c);
    let (b, s) = (BuildId::generate(), contract::step_stream(2));
    let big = 6 * 1024 * 1024;
    let data = contract::noise(2 * big + 3 * 1000, 11);
    let cuts = [0, big, 2 * big, 2 * big + 1000, data.len()];
    for w in cuts.windows(2) {
        l.put_chunk(&b, &s, w[0] as u64, &data[w[0]..w[1]]).await.expect("put");
    }
    l.complete(&b, &s).await.expect("complete");
    let (all, complete) = contract::read_all(&l, &b, &s).await;
    assert!(complete);
    assert!(all == data, "bytes differ");
}

/// The objects a stream is made of, before and after `complete`.
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn s3_key_layout() {
    let c = localstack().await;
    let l = logs(&c);
    let b = BuildId::generate();
    let s = LogStream::Step { stage: "heads#2".into(), step: "say".into(), number: 3, attempt: 2 };
    l.put_chunk(&b, &s, 0, b"hello\n").await.expect("put");
    l.put_chunk(&b, &s, 6, b"world\n").await.expect("put");
    l.append(&b, &LogStream::Init, "runner-1:1", b"setup\n").await.expect("append");
    let prefix = format!("logs/{b}/");
    let keys: Vec<String> = keys_under(&c, &prefix).await.into_iter().map(|(k, _)| k).collect();
    let p = format!("{prefix}step/0003/heads#2/say/2/");
    assert_eq!(
        keys,
        vec![
            format!("{prefix}init/batches/runner-1%3A1"),
            format!("{prefix}init/chunks/{:020}", 0),
            format!("{p}chunks/{:020}", 0),
            format!("{p}chunks/{:020}", 6),
        ]
    );
    assert_eq!(object(&c, &format!("{prefix}init/batches/runner-1%3A1")).await, b"0");
    l.complete(&b, &s).await.expect("complete");
    let keys: Vec<String> = keys_under(&c, &p).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![format!("{p}log")]);
    assert_eq!(object(&c, &format!("{p}log")).await, b"hello\nworld\n");
    // A store that never saw the stream (another process) reads it the same.
    let other = logs(&c);
    assert_eq!(contract::read_all(&other, &b, &s).await, (b"hello\nworld\n".to_vec(), true));
}

/// A stream completed by an earlier version (`log` and a `complete` marker) and one
/// completed now (`log` alone) read and list the same: complete, with the log's bytes.
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn s3_completed_with_or_without_the_marker() {
    let c = localstack().await;
    let l = logs(&c);
    let b = BuildId::generate();
    let (old, new) = (contract::step_stream(1), contract::step_stream(2));
    let put = |key: String, body: &'static [u8]| {
        c.s3.put_object().bucket(config().bucket).key(key).body(body.to_vec().into()).send()
    };
    put(S3LogStore::log_key(&b, &old), b"old\n").await.expect("put");
    put(S3LogStore::log_key(&b, &old).replace("/log", "/complete"), b"4").await.expect("put");
    l.put_chunk(&b, &new, 0, b"new\n").await.expect("put");
    l.complete(&b, &new).await.expect("complete");
    for s in [&old, &new] {
        let (bytes, complete) = contract::read_all(&l, &b, s).await;
        assert!(complete && bytes.len() == 4, "{s}: {bytes:?} {complete}");
        let err = l.put_chunk(&b, s, 4, b"more").await;
        assert!(matches!(err, Err(LogError::Complete { .. })), "{err:?}");
    }
    let info = l.list(&b).await.expect("list");
    assert_eq!(info.iter().map(|i| (i.len, i.complete)).collect::<Vec<_>>(), vec![(4, true), (4, true)]);
}

/// Writers racing for one offset: same bytes both succeed; different bytes, exactly one
/// wins and the other is a conflict (or lands after it, as a longer retry would).
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn s3_racing_writers() {
    let c = localstack().await;
    let (l1, l2) = (logs(&c), logs(&c));
    let (b, s) = (BuildId::generate(), contract::step_stream(1));
    for round in 0..5u64 {
        let off = round * 4;
        let (r1, r2) = tokio::join!(l1.put_chunk(&b, &s, off, b"same"), l2.put_chunk(&b, &s, off, b"same"));
        r1.expect("same bytes");
        r2.expect("same bytes");
    }
    let (r1, r2) = tokio::join!(l1.put_chunk(&b, &s, 20, b"mine"), l2.put_chunk(&b, &s, 20, b"your"));
    let conflicts =
        [&r1, &r2].iter().filter(|r| matches!(r, Err(LogError::Conflict { offset: 20, .. }))).count();
    assert_eq!((r1.is_ok() as u8 + r2.is_ok() as u8, conflicts), (1, 1), "{r1:?} {r2:?}");
    let (all, _) = contract::read_all(&l1, &b, &s).await;
    assert_eq!(&all[..20], b"samesamesamesamesame");
    assert!(all[20..] == *b"mine" || all[20..] == *b"your");
    // Many appenders at once: every batch lands once, whole.
    let init = LogStream::Init;
    let stores: Vec<S3LogStore> = (0..4).map(|_| logs(&c)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, st) in stores.into_iter().enumerate() {
        let b = b.clone();
        let init = init.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            for j in 0..5 {
                let bytes = format!("runner {i} line {j}\n");
                let off = st.append(&b, &init, &format!("r{i}:{j}"), bytes.as_bytes()).await.expect("append");
                got.push((off, bytes));
            }
            got
        });
    }
    let mut batches = Vec::new();
    while let Some(r) = tasks.join_next().await {
        batches.extend(r.expect("task"));
    }
    let (all, _) = contract::read_all(&l1, &b, &init).await;
    assert_eq!(all.len(), batches.iter().map(|(_, s)| s.len()).sum::<usize>());
    for (off, bytes) in &batches {
        assert_eq!(&all[*off as usize..*off as usize + bytes.len()], bytes.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// DynamoDB

/// The items of one build: the build, its stages, its events and applied event ids, and
/// the GSI keys that list it.
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn dynamo_item_layout() {
    let c = localstack().await;
    let s = state(&c);
    let b = contract::sample_build();
    s.create_build(&b).await.expect("create");
    let commit = Commit {
        event_id: "ev-1".into(),
        events: vec![contract::sample_event(&b.id, "t"), contract::sample_event(&b.id, "t")],
        ..Commit::default()
    };
    s.commit(&b.id, &commit).await.expect("commit");
    let out = c
        .dynamodb
        .query()
        .table_name(config().table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("BUILD#{}", b.id)),
        )
        .send()
        .await
        .expect("query");
    let items = out.items.unwrap_or_default();
    let sk = |i: &HashMap<String, aws_sdk_dynamodb::types::AttributeValue>| {
        i.get("sk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
    };
    let keys: Vec<String> = items.iter().map(sk).collect();
    assert_eq!(
        keys,
        vec![
            "APPLIED#ev-1".to_string(),
            "BUILD".into(),
            "BUILD#STAGE#build".into(),
            "BUILD#STAGE#test".into(),
            format!("EVENT#{:020}", 1),
            format!("EVENT#{:020}", 2),
            "PLAN#0000".into(),
        ]
    );
    let head = items.iter().find(|i| sk(i) == "BUILD").expect("build item");
    let attr = |name: &str| head.get(name).cloned().expect(name);
    assert_eq!(attr("gsi1pk").as_s().expect("s"), &format!("REPO#{}", b.repo));
    assert_eq!(attr("gsi1sk").as_s().expect("s"), b.id.as_str());
    assert_eq!(attr("last_seq").as_n().expect("n"), "2");
    assert_eq!(attr("version").as_n().expect("n"), "2");
}

/// A heartbeat (a runner renewing its lease) writes the stage's lease item only: the
/// stage item, whose `version` fan-in commits are conditional on, is left as it was, so
/// heartbeats never make a commit lose its race and retry.
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn dynamo_lease_renewal_leaves_the_stage_item_alone() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let c = localstack().await;
    let s = state(&c);
    let b = contract::sample_build();
    s.create_build(&b).await.expect("create");
    let stage = kiln_domain::StageName::new("build");
    let long = Duration::from_secs(600);
    let claim = s.claim_job(&b.id, &stage, "r1", long).await.expect("claim");
    assert_eq!(claim, kiln_store::Claim::Claimed { attempt: 1 });
    let item = |sk: &'static str| {
        let (c, id) = (c.dynamodb.clone(), b.id.clone());
        async move {
            c.get_item()
                .table_name(config().table)
                .consistent_read(true)
                .key("pk", AttributeValue::S(format!("BUILD#{id}")))
                .key("sk", AttributeValue::S(sk.to_string()))
                .send()
                .await
                .expect("get item")
                .item
                .expect("the item exists")
        }
    };
    let attr = |i: &HashMap<String, AttributeValue>, name: &str| i.get(name).cloned().expect(name);
    let before = item("BUILD#STAGE#build").await;
    let lease = item("BUILD#LEASE#build").await;
    assert_eq!(attr(&lease, "runner").as_s().expect("s"), "r1");
    assert_eq!(attr(&lease, "attempt").as_n().expect("n"), "1");
    for _ in 0..3 {
        let renewed = s.claim_job(&b.id, &stage, "r1", long).await.expect("renew");
        assert_eq!(renewed, kiln_store::Claim::Claimed { attempt: 1 });
    }
    let after = item("BUILD#STAGE#build").await;
    assert_eq!(before, after, "renewals leave the stage item (its version and document) alone");
    let doc: kiln_domain::state::StageState =
        serde_json::from_str(attr(&after, "doc").as_s().expect("s")).expect("stage doc");
    assert_eq!(doc.lease, None, "the lease is not in the stage document");
    let renewed: u64 =
        attr(&item("BUILD#LEASE#build").await, "until_ms").as_n().expect("n").parse().expect("ms");
    let first: u64 = attr(&lease, "until_ms").as_n().expect("n").parse().expect("ms");
    assert!(renewed >= first);
    // The lease reads back with the stage.
    let got = s.get_build(&b.id).await.expect("get").expect("build");
    let l = got.stage("build").and_then(|st| st.lease.clone()).expect("lease");
    assert_eq!((l.runner.as_str(), l.attempt, l.until_ms), ("r1", 1, renewed));
}
