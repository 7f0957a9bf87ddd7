//! Counting decorators around the ports and the runner's sinks. Each port call is counted
//! as the AWS requests the AWS adapters (`shared/store-aws/src`) make for it, with
//! DynamoDB capacity units from the sizes of the items involved; the sinks count the
//! runner's HTTP calls (API Gateway requests and log-ingest/api Lambda invocations).

use async_trait::async_trait;
use kiln_core::sinks::{EventSink, IngestReply, LogSink, SinkError};
use kiln_domain::catalog::{ImageHistoryEntry, ImageRecord};
use kiln_domain::event::{CloudEvent, StoredEvent};
use kiln_domain::logs::LogStream;
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Repo, StageName};
use kiln_store::{
    BuildSummary, Claim, Commit, CommitOutcome, LogError, LogInfo, LogRead, LogStore, OutMessage, Queue,
    QueueError, Received, RunStatus, StateStore, StoreError,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Counts by name (`ddb.query`, `ddb.wru`, `s3.put`, `sqs.fifo`, `port.state.commit`...).
#[derive(Default)]
pub struct Counter(Mutex<BTreeMap<String, f64>>);

impl Counter {
    pub fn add(&self, key: &str, n: f64) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default() += n;
    }

    pub fn snapshot(&self) -> BTreeMap<String, f64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn kib_units(bytes: usize, unit: usize) -> f64 {
    bytes.div_ceil(unit).max(1) as f64
}

/// Approximate DynamoDB item sizes (the JSON document plus its key and index attributes).
/// The build item: the header (no stages, no plan: the plan has items of its own).
fn build_item_bytes(b: &Build) -> usize {
    serde_json::to_string(&b.header()).map_or(1024, |s| s.len()) + 300
}

fn stage_item_bytes(b: &Build, stage: &StageName) -> usize {
    b.stage(stage.as_str()).and_then(|s| serde_json::to_string(s).ok()).map_or(512, |s| s.len()) + 150
}

fn whole_build_bytes(b: &Build) -> usize {
    build_item_bytes(b) + b.stages.iter().map(|s| stage_item_bytes(b, &s.name)).sum::<usize>()
}

pub struct CountingState {
    pub inner: Arc<dyn StateStore>,
    /// Where the model peeks at a build's size before a call: a store whose requests are
    /// not counted (on AWS, `inner`'s requests are counted for real).
    pub peek: Arc<dyn StateStore>,
    pub c: Arc<Counter>,
}

impl CountingState {
    /// One strongly consistent Query reading the build item and its stage items.
    fn load(&self, b: Option<&Build>) {
        self.c.add("ddb.query", 1.0);
        self.c.add("ddb.rru", b.map_or(1.0, |b| kib_units(whole_build_bytes(b), 4096)));
    }

    /// One TransactWriteItems of items of these sizes (2 WRU per KB per item).
    fn transact(&self, sizes: &[usize]) {
        self.c.add("ddb.transact", 1.0);
        self.c.add("ddb.wru", sizes.iter().map(|&s| 2.0 * kib_units(s, 1024)).sum());
    }
}

#[async_trait]
impl StateStore for CountingState {
    async fn create_build(&self, build: &Build) -> Result<(), StoreError> {
        self.c.add("port.state.create_build", 1.0);
        let r = self.inner.create_build(build).await;
        let mut sizes = vec![build_item_bytes(build)];
        sizes.extend(build.stages.iter().map(|s| stage_item_bytes(build, &s.name)));
        self.transact(&sizes);
        r
    }

    async fn get_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        self.c.add("port.state.get_build", 1.0);
        let r = self.inner.get_build(id).await;
        self.load(r.as_ref().ok().and_then(Option::as_ref));
        r
    }

    async fn build_seq(&self, id: &BuildId) -> Result<Option<u64>, StoreError> {
        self.c.add("port.state.build_seq", 1.0);
        // One consistent GetItem of the build item, projected to one number.
        self.c.add("ddb.getitem", 1.0);
        self.c.add("ddb.rru", 1.0);
        self.inner.build_seq(id).await
    }

    async fn get_build_seq(&self, id: &BuildId) -> Result<Option<(Build, u64)>, StoreError> {
        self.c.add("port.state.get_build", 1.0);
        let r = self.inner.get_build_seq(id).await;
        self.load(r.as_ref().ok().and_then(Option::as_ref).map(|(b, _)| b));
        r
    }

    async fn get_build_part(&self, id: &BuildId, stages: &[StageName]) -> Result<Option<Build>, StoreError> {
        self.c.add("port.state.get_build_part", 1.0);
        // One consistent BatchGetItem: the build item and the stages' items.
        let r = self.inner.get_build_part(id, stages).await;
        self.c.add("ddb.batchget", 1.0);
        let n = r.as_ref().ok().and_then(Option::as_ref).map_or(1, |b| 1 + b.stages.len());
        self.c.add("ddb.rru", n as f64);
        r
    }

    async fn run_status(
        &self,
        id: &BuildId,
        stage: Option<&StageName>,
    ) -> Result<Option<RunStatus>, StoreError> {
        self.c.add("port.state.run_status", 1.0);
        let b = self.peek.get_build(id).await.ok().flatten();
        // A GetItem of the build item, and one of the stage item, each eventually
        // consistent (half a read unit per 4 KB).
        self.c.add("ddb.getitem", 1.0);
        self.c.add("ddb.rru", 0.5 * b.as_ref().map_or(1.0, |b| kib_units(build_item_bytes(b), 4096)));
        if let Some(stage) = stage {
            self.c.add("ddb.getitem", 1.0);
            self.c.add(
                "ddb.rru",
                0.5 * b.as_ref().map_or(1.0, |b| kib_units(stage_item_bytes(b, stage), 4096)),
            );
        }
        self.inner.run_status(id, stage).await
    }

    async fn list_builds(&self, repo: &Repo, limit: usize) -> Result<Vec<BuildSummary>, StoreError> {
        self.c.add("port.state.list_builds", 1.0);
        self.c.add("ddb.query", 1.0);
        self.c.add("ddb.rru", 0.5);
        self.inner.list_builds(repo, limit).await
    }

    async fn commit(&self, build: &BuildId, commit: &Commit) -> Result<CommitOutcome, StoreError> {
        self.c.add("port.state.commit", 1.0);
        let before = self.peek.get_build(build).await.ok().flatten();
        let r = self.inner.commit(build, commit).await;
        // The read before every attempt: one consistent BatchGetItem of the build item, the
        // touched stages' items and the applied-id item.
        let stages: BTreeSet<StageName> = commit.stages_touched();
        self.c.add("ddb.batchget", 1.0);
        self.c.add(
            "ddb.rru",
            before.as_ref().map_or(1.0, |b| {
                kib_units(build_item_bytes(b), 4096)
                    + stages.iter().map(|s| kib_units(stage_item_bytes(b, s), 4096)).sum::<f64>()
                    + 1.0
            }),
        );
        if let (Ok(CommitOutcome::Applied { .. }), Some(b)) = (&r, before.as_ref()) {
            let mut sizes = vec![100, build_item_bytes(b)];
            sizes.extend(stages.iter().map(|s| stage_item_bytes(b, s)));
            sizes
                .extend(commit.events.iter().map(|e| serde_json::to_string(e).map_or(512, |s| s.len()) + 80));
            sizes.extend(commit.images.iter().flat_map(|_| [600, 600]));
            self.transact(&sizes);
        }
        r
    }

    async fn events(
        &self,
        build: &BuildId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.c.add("port.state.events", 1.0);
        let r = self.inner.events(build, after_seq, limit).await;
        let bytes: usize =
            r.as_ref().map_or(0, |v| v.iter().map(|e| serde_json::to_string(e).map_or(0, |s| s.len())).sum());
        self.c.add("ddb.query", 1.0);
        self.c.add("ddb.rru", kib_units(bytes, 4096));
        r
    }

    async fn mark_dispatched(&self, build: &BuildId, stage: &StageName) -> Result<bool, StoreError> {
        self.c.add("port.state.mark_dispatched", 1.0);
        let before = self.peek.get_build(build).await.ok().flatten();
        let r = self.inner.mark_dispatched(build, stage).await;
        self.c.add("ddb.updateitem", 1.0);
        self.c.add("ddb.wru", before.as_ref().map_or(1.0, |b| kib_units(stage_item_bytes(b, stage), 1024)));
        if matches!(r, Ok(false)) {
            self.c.add("ddb.getitem", 1.0);
            self.c.add("ddb.rru", 1.0);
        }
        r
    }

    async fn claim_job(
        &self,
        build: &BuildId,
        stage: &StageName,
        runner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.c.add("port.state.claim_job", 1.0);
        let before = self.peek.get_build(build).await.ok().flatten();
        let r = self.inner.claim_job(build, stage, runner, lease).await;
        self.load(before.as_ref());
        if let (Ok(Claim::Claimed { .. }), Some(b)) = (&r, before.as_ref()) {
            // A ConditionCheck on the build item and the stage's update.
            self.transact(&[build_item_bytes(b), stage_item_bytes(b, stage)]);
        }
        r
    }

    async fn get_image(&self, image: &str) -> Result<Vec<ImageRecord>, StoreError> {
        self.c.add("port.state.get_image", 1.0);
        self.c.add("ddb.query", 1.0);
        self.c.add("ddb.rru", 1.0);
        self.inner.get_image(image).await
    }

    async fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.c.add("port.state.list_images", 1.0);
        self.c.add("ddb.query", 1.0);
        self.c.add("ddb.rru", 0.5);
        self.inner.list_images().await
    }

    async fn image_history(&self, image: &str) -> Result<Vec<ImageHistoryEntry>, StoreError> {
        self.c.add("port.state.image_history", 1.0);
        self.c.add("ddb.query", 1.0);
        self.c.add("ddb.rru", 1.0);
        self.inner.image_history(image).await
    }
}

/// Chunk offsets written per stream, to count the GETs a read or a compaction makes.
#[derive(Default)]
struct Chunks(Mutex<HashMap<StreamId, Vec<(u64, u64)>>>);

/// (build, stream key).
type StreamId = (String, String);

pub struct CountingLogs {
    pub inner: Arc<dyn LogStore>,
    pub c: Arc<Counter>,
    chunks: Chunks,
}

impl CountingLogs {
    pub fn new(inner: Arc<dyn LogStore>, c: Arc<Counter>) -> Self {
        Self { inner, c, chunks: Chunks::default() }
    }

    fn key(build: &BuildId, stream: &LogStream) -> StreamId {
        (build.to_string(), stream.key())
    }

    fn record(&self, build: &BuildId, stream: &LogStream, offset: u64, len: u64) {
        let mut m = self.chunks.0.lock().unwrap_or_else(|e| e.into_inner());
        let v = m.entry(Self::key(build, stream)).or_default();
        if v.last().is_none_or(|&(o, l)| offset >= o + l) {
            v.push((offset, len));
        }
    }

    /// Whether the store wrote to the stream before (so it remembers its end).
    fn known(&self, build: &BuildId, stream: &LogStream) -> bool {
        self.chunks.0.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&Self::key(build, stream))
    }

    fn chunks_in(&self, build: &BuildId, stream: &LogStream, from: u64, to: u64) -> Option<usize> {
        let m = self.chunks.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&Self::key(build, stream)).map(|v| v.iter().filter(|&&(o, l)| o < to && o + l > from).count())
    }
}

#[async_trait]
impl LogStore for CountingLogs {
    async fn put_chunk(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), LogError> {
        self.c.add("port.logs.put_chunk", 1.0);
        // PutObject If-None-Match at the end the store remembers; a ListObjectsV2 first
        // only for a stream it has not seen yet (or an empty batch).
        if !self.known(build, stream) || bytes.is_empty() {
            self.c.add("s3.list", 1.0);
        }
        self.c.add("s3.put", 1.0);
        self.c.add("s3.put_bytes", bytes.len() as f64);
        let r = self.inner.put_chunk(build, stream, offset, bytes).await;
        if r.is_ok() && !bytes.is_empty() {
            self.record(build, stream, offset, bytes.len() as u64);
        }
        r
    }

    async fn append(
        &self,
        build: &BuildId,
        stream: &LogStream,
        batch_id: &str,
        bytes: &[u8],
    ) -> Result<u64, LogError> {
        self.c.add("port.logs.append", 1.0);
        // GET the batch marker (absent), PUT the claim, (LIST if the stream is new to the
        // store,) PUT the chunk, PUT the marker.
        self.c.add("s3.get", 1.0);
        self.c.add("s3.put", 3.0);
        if !self.known(build, stream) {
            self.c.add("s3.list", 1.0);
        }
        self.c.add("s3.put_bytes", bytes.len() as f64);
        let r = self.inner.append(build, stream, batch_id, bytes).await;
        if let Ok(o) = r {
            self.record(build, stream, o, bytes.len() as u64);
        }
        r
    }

    async fn read(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        max: usize,
    ) -> Result<LogRead, LogError> {
        self.c.add("port.logs.read", 1.0);
        let r = self.inner.read(build, stream, offset, max).await;
        self.c.add("s3.list", 1.0);
        if let Ok(read) = &r
            && !read.bytes.is_empty()
        {
            let gets = if read.complete {
                1
            } else {
                self.chunks_in(build, stream, offset, read.next_offset).unwrap_or(1)
            };
            self.c.add("s3.get", gets.max(1) as f64);
        }
        r
    }

    async fn complete(&self, build: &BuildId, stream: &LogStream) -> Result<(), LogError> {
        self.c.add("port.logs.complete", 1.0);
        let len = self.chunks_in(build, stream, 0, u64::MAX).unwrap_or(0);
        let total: u64 = {
            let m = self.chunks.0.lock().unwrap_or_else(|e| e.into_inner());
            m.get(&Self::key(build, stream)).map_or(0, |v| v.iter().map(|c| c.1).sum())
        };
        // LIST (scan), the chunks read back (GET each) or copied, PUT `log` (or a
        // multipart upload of 8 MiB parts; `log` marks the stream complete), DeleteObjects
        // (free) of the chunks the scan found.
        self.c.add("s3.list", 1.0);
        const PART: u64 = 8 << 20;
        if total < PART {
            self.c.add("s3.get", len as f64);
            self.c.add("s3.put", 1.0);
        } else {
            self.c.add("s3.get", len as f64);
            self.c.add("s3.put", 1.0 + total.div_ceil(PART) as f64 + 1.0);
        }
        self.c.add("s3.delete_objects", 1.0);
        self.inner.complete(build, stream).await
    }

    async fn list(&self, build: &BuildId) -> Result<Vec<LogInfo>, LogError> {
        self.c.add("port.logs.list", 1.0);
        self.c.add("s3.list", 1.0);
        self.inner.list(build).await
    }
}

pub struct CountingQueue {
    pub inner: Arc<dyn Queue>,
    pub c: Arc<Counter>,
    /// `events`, `dispatch` or `jobs`.
    pub name: &'static str,
    pub fifo: bool,
}

impl CountingQueue {
    fn request(&self) {
        self.c.add(if self.fifo { "sqs.fifo" } else { "sqs.standard" }, 1.0);
    }
}

#[async_trait]
impl Queue for CountingQueue {
    async fn send(&self, msg: OutMessage) -> Result<(), QueueError> {
        self.c.add(&format!("port.queue.{}.send", self.name), 1.0);
        self.request();
        self.inner.send(msg).await
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let r = self.inner.receive(max, wait).await;
        // Empty long polls are the idle cost of a poller, not of a build: not counted.
        if let Ok(v) = &r
            && !v.is_empty()
        {
            self.c.add(&format!("port.queue.{}.receive", self.name), 1.0);
            self.c.add(&format!("port.queue.{}.messages", self.name), v.len() as f64);
            self.request();
        }
        r
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.c.add(&format!("port.queue.{}.delete", self.name), 1.0);
        self.request();
        self.inner.delete(receipt).await
    }

    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.c.add(&format!("port.queue.{}.extend", self.name), 1.0);
        self.request();
        self.inner.extend(receipt, timeout).await
    }
}

/// The runner's calls to log ingest and the events API: on AWS each is one HTTP API
/// request and one Lambda invocation.
pub struct CountingSinks {
    pub logs: Arc<dyn LogSink>,
    pub events: Arc<dyn EventSink>,
    pub c: Arc<Counter>,
}

#[async_trait]
impl LogSink for CountingSinks {
    async fn put(
        &self,
        build: &BuildId,
        stream: &LogStream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError> {
        self.c.add("sink.put", 1.0);
        if !bytes.is_empty() {
            self.c.add("sink.batches_with_bytes", 1.0);
        }
        self.logs.put(build, stream, offset, bytes).await
    }

    async fn append_init(
        &self,
        build: &BuildId,
        batch_id: &str,
        bytes: &[u8],
    ) -> Result<IngestReply, SinkError> {
        self.c.add("sink.append_init", 1.0);
        if !bytes.is_empty() {
            self.c.add("sink.batches_with_bytes", 1.0);
        }
        self.logs.append_init(build, batch_id, bytes).await
    }

    async fn complete(&self, build: &BuildId, stream: &LogStream) -> Result<IngestReply, SinkError> {
        self.c.add("sink.complete", 1.0);
        self.logs.complete(build, stream).await
    }

    async fn heartbeat(&self, build: &BuildId, stage: &StageName) -> Result<IngestReply, SinkError> {
        self.c.add("sink.heartbeat", 1.0);
        self.logs.heartbeat(build, stage).await
    }
}

#[async_trait]
impl EventSink for CountingSinks {
    async fn emit(&self, event: CloudEvent) -> Result<(), SinkError> {
        self.c.add("sink.emit", 1.0);
        self.events.emit(event).await
    }
}

/// Time spent in each StateStore method (for the fan-in's breakdown).
pub struct TimedState {
    pub inner: Arc<dyn StateStore>,
    pub t: Mutex<BTreeMap<&'static str, (u64, f64)>>,
}

impl TimedState {
    pub fn new(inner: Arc<dyn StateStore>) -> Self {
        Self { inner, t: Mutex::default() }
    }

    async fn time<T>(&self, name: &'static str, f: impl std::future::Future<Output = T>) -> T {
        let start = std::time::Instant::now();
        let r = f.await;
        let mut m = self.t.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(name).or_default();
        e.0 += 1;
        e.1 += start.elapsed().as_secs_f64();
        r
    }

    pub fn take(&self) -> BTreeMap<&'static str, (u64, f64)> {
        std::mem::take(&mut *self.t.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait]
impl StateStore for TimedState {
    async fn create_build(&self, build: &Build) -> Result<(), StoreError> {
        self.time("create_build", self.inner.create_build(build)).await
    }

    async fn get_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        self.time("get_build", self.inner.get_build(id)).await
    }

    async fn build_seq(&self, id: &BuildId) -> Result<Option<u64>, StoreError> {
        self.time("build_seq", self.inner.build_seq(id)).await
    }

    async fn get_build_seq(&self, id: &BuildId) -> Result<Option<(Build, u64)>, StoreError> {
        self.time("get_build", self.inner.get_build_seq(id)).await
    }

    async fn get_build_part(&self, id: &BuildId, stages: &[StageName]) -> Result<Option<Build>, StoreError> {
        self.time("get_build_part", self.inner.get_build_part(id, stages)).await
    }

    async fn run_status(
        &self,
        id: &BuildId,
        stage: Option<&StageName>,
    ) -> Result<Option<RunStatus>, StoreError> {
        self.time("run_status", self.inner.run_status(id, stage)).await
    }

    async fn list_builds(&self, repo: &Repo, limit: usize) -> Result<Vec<BuildSummary>, StoreError> {
        self.time("list_builds", self.inner.list_builds(repo, limit)).await
    }

    async fn commit(&self, build: &BuildId, commit: &Commit) -> Result<CommitOutcome, StoreError> {
        self.time("commit", self.inner.commit(build, commit)).await
    }

    async fn events(
        &self,
        build: &BuildId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.time("events", self.inner.events(build, after_seq, limit)).await
    }

    async fn mark_dispatched(&self, build: &BuildId, stage: &StageName) -> Result<bool, StoreError> {
        self.time("mark_dispatched", self.inner.mark_dispatched(build, stage)).await
    }

    async fn claim_job(
        &self,
        build: &BuildId,
        stage: &StageName,
        runner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.time("claim_job", self.inner.claim_job(build, stage, runner, lease)).await
    }

    async fn get_image(&self, image: &str) -> Result<Vec<ImageRecord>, StoreError> {
        self.time("get_image", self.inner.get_image(image)).await
    }

    async fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.time("list_images", self.inner.list_images()).await
    }

    async fn image_history(&self, image: &str) -> Result<Vec<ImageHistoryEntry>, StoreError> {
        self.time("image_history", self.inner.image_history(image)).await
    }
}
