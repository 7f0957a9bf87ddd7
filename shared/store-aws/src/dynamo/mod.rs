//! [`DynamoStateStore`]: builds, stages, the event history and applied event ids in one
//! DynamoDB table; [`DynamoRepoStore`]: repositories' git settings and claims in the same
//! table. The design (keys, the GSI, the access patterns) is written down in
//! ARCHITECTURE.md, "DynamoDB single-table design".

mod commit;
mod keys;
mod lease;
mod repos;
mod status;

use crate::retry_races;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, PutRequest, TransactWriteItem, WriteRequest,
};
use keys::*;
use kiln_domain::catalog::{ImageHistoryEntry, ImageRecord};
use kiln_domain::event::StoredEvent;
use kiln_domain::ids::is_valid_name;
use kiln_domain::plan::Plan;
use kiln_domain::state::{Build, StageState};
use kiln_domain::{BuildId, Repo, StageName};
use kiln_store::{BuildSummary, Claim, Commit, CommitOutcome, StateStore, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub use keys::MAX_ITEM_BYTES;
pub use repos::DynamoRepoStore;

/// The state store on DynamoDB (single table; see ARCHITECTURE.md).
///
/// Every commit is one TransactWriteItems: the applied event id (a conditional Put, so an
/// event applies once), the build item (conditional on the version read, so commits to
/// one build are serialized and sequence numbers are gapless), the changed stage items
/// (conditional on their versions), new stage items and one item per history event. A
/// commit whose transaction loses a race is retried from a fresh read; its transitions
/// are checked again with [`Build::apply_commit`] then, so a transition that went stale
/// is refused as a conflict, never applied twice. Leases have items of their own, so a
/// runner's heartbeat never changes what a commit is conditional on.
#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
    /// Days a build's items are kept (`expires_at`, the table's TTL attribute).
    retention_days: u64,
    /// Plans read or written by this process: a build's plan never changes, so it is read
    /// once per process, not with every read of the build.
    plans: Arc<Mutex<HashMap<BuildId, Arc<Plan>>>>,
}

/// The largest item any state store of this process has written, in bytes.
static LARGEST_ITEM: AtomicUsize = AtomicUsize::new(0);

/// The largest DynamoDB item any state store of this process has written so far, in
/// bytes: the tests and the benchmarks hold it under [`MAX_ITEM_BYTES`].
pub fn largest_item_bytes() -> usize {
    LARGEST_ITEM.load(Ordering::Relaxed)
}

/// Plans kept in memory, at most (the cache is emptied when full: a miss costs one Query).
const PLAN_CACHE_BUILDS: usize = 64;

/// A build as read (whole, or the header and some stages), with the versions its writes
/// are conditional on.
pub(super) struct Loaded {
    pub(super) build: Build,
    pub(super) version: u64,
    pub(super) last_seq: u64,
    /// How many stage items the build has: the place (`idx`) of the next new one.
    pub(super) stages_n: u64,
    pub(super) stage_versions: HashMap<StageName, u64>,
}

impl DynamoStateStore {
    /// A transaction item that writes `item` only if no item has its key yet.
    pub(super) fn put_new(
        &self,
        item: HashMap<String, AttributeValue>,
    ) -> Result<TransactWriteItem, StoreError> {
        self.note_item(&item);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(|e| backend("build request", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            retention_days: kiln_domain::retention::DEFAULT_RETENTION_DAYS,
            plans: Arc::default(),
        }
    }

    /// Measures an item about to be written (or an update's new attributes).
    pub(super) fn note_item(&self, item: &Item) {
        LARGEST_ITEM.fetch_max(item_bytes(item), Ordering::Relaxed);
    }

    /// Keeps builds this many days (see `kiln_domain::retention`).
    pub fn with_retention(mut self, days: u64) -> Self {
        self.retention_days = days;
        self
    }

    /// The `expires_at` (seconds, DynamoDB's TTL unit) of every item of `build`.
    pub(super) fn expiry(&self, build: &Build) -> AttributeValue {
        n(kiln_domain::retention::expires_at_ms(build, self.retention_days) / 1000)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Runs a Query with the SDK's paginator until its end or until `limit` items.
    pub(super) async fn query_all(
        &self,
        query: QueryFluentBuilder,
        limit: usize,
        what: &str,
    ) -> Result<Vec<Item>, StoreError> {
        query_all(query, limit, what).await
    }

    /// The whole build: the build item, its stage items and their lease items, in one
    /// (paginated) consistent Query; the plan from memory or its own items.
    pub(super) async fn load(&self, id: &BuildId) -> Result<Option<Loaded>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND begins_with(sk, :b)")
            .expression_attribute_values(":pk", s(pk(id)))
            .expression_attribute_values(":b", s(BUILD_SK));
        let items = self.query_all(query, usize::MAX, "query build").await?;
        self.assemble(id, &items).await
    }

    /// The build item and the items of the named stages (with their leases, if asked),
    /// and whether `applied` (an event id) was applied: one consistent BatchGetItem per
    /// 100 keys, so what it costs depends on the stages named, not on the build's size.
    /// The build has only the named stages that exist.
    pub(super) async fn load_part(
        &self,
        id: &BuildId,
        stages: &[StageName],
        leases: bool,
        applied: Option<&str>,
    ) -> Result<Option<(Loaded, bool)>, StoreError> {
        let pk = pk(id);
        let mut keys = vec![key(pk.clone(), BUILD_SK.to_string())];
        // BatchGetItem refuses a request that names a key twice.
        let stages: std::collections::BTreeSet<&StageName> = stages.iter().collect();
        for st in stages {
            keys.push(key(pk.clone(), stage_sk(st)));
            if leases {
                keys.push(key(pk.clone(), lease_sk(st)));
            }
        }
        let applied_sk = applied.filter(|e| !e.is_empty()).map(applied_sk);
        if let Some(sk) = &applied_sk {
            keys.push(key(pk.clone(), sk.clone()));
        }
        let items = self.batch_get(keys).await?;
        let was_applied = applied_sk.is_some_and(|a| {
            items.iter().any(|i| matches!(i.get("sk"), Some(AttributeValue::S(k)) if *k == a))
        });
        Ok(self.assemble(id, &items).await?.map(|l| (l, was_applied)))
    }

    /// Reads `keys` with consistent BatchGetItems (100 keys each), retrying what DynamoDB
    /// leaves unprocessed.
    async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(100) {
            let mut pending = KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(true)
                .build()
                .map_err(|e| backend("build request", e))?;
            for attempt in 0u32.. {
                let res = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, pending.clone())
                    .send()
                    .await
                    .map_err(|e| sdk("batch get", &e))?;
                if let Some(mut r) = res.responses {
                    out.extend(r.remove(&self.table).unwrap_or_default());
                }
                match res.unprocessed_keys.and_then(|mut u| u.remove(&self.table)) {
                    Some(rest) if !rest.keys().is_empty() => {
                        if attempt >= 8 {
                            return Err(backend("batch get", "keys left unprocessed after 8 tries"));
                        }
                        tokio::time::sleep(kiln_domain::retry::Backoff::CONTENDED.delay(attempt)).await;
                        pending = rest;
                    }
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    /// Writes `items` (plain puts, so writing the same again changes nothing) with
    /// BatchWriteItems of 25, retrying what DynamoDB leaves unprocessed.
    async fn batch_put(&self, items: Vec<Item>) -> Result<(), StoreError> {
        for chunk in items.chunks(25) {
            let mut pending: Vec<WriteRequest> = Vec::with_capacity(chunk.len());
            for item in chunk {
                self.note_item(item);
                let put = PutRequest::builder()
                    .set_item(Some(item.clone()))
                    .build()
                    .map_err(|e| backend("build request", e))?;
                pending.push(WriteRequest::builder().put_request(put).build());
            }
            for attempt in 0u32.. {
                let res = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| sdk("batch write", &e))?;
                match res.unprocessed_items.and_then(|mut u| u.remove(&self.table)) {
                    Some(rest) if !rest.is_empty() => {
                        if attempt >= 8 {
                            return Err(backend("batch write", "items left unprocessed after 8 tries"));
                        }
                        tokio::time::sleep(kiln_domain::retry::Backoff::CONTENDED.delay(attempt)).await;
                        pending = rest;
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// The build's plan: from memory, or read from its parts (and kept).
    async fn plan(&self, id: &BuildId) -> Result<Option<Arc<Plan>>, StoreError> {
        if let Some(p) = lock(&self.plans).get(id) {
            return Ok(Some(p.clone()));
        }
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(pk(id)))
            .expression_attribute_values(":p", s(PLAN_PREFIX));
        let parts = self.query_all(query, usize::MAX, "query plan").await?;
        if parts.is_empty() {
            return Ok(None);
        }
        let mut doc = String::new();
        for part in &parts {
            doc.push_str(get_s(part, "part")?);
        }
        let plan: Arc<Plan> =
            Arc::new(serde_json::from_str(&doc).map_err(|e| backend("parse", format!("plan: {e}")))?);
        self.keep_plan(id, plan.clone());
        Ok(Some(plan))
    }

    fn keep_plan(&self, id: &BuildId, plan: Arc<Plan>) {
        let mut plans = lock(&self.plans);
        if plans.len() >= PLAN_CACHE_BUILDS {
            plans.clear();
        }
        plans.insert(id.clone(), plan);
    }

    /// A build from its items (the build item, stage items, lease items; others are
    /// ignored), its plan attached.
    async fn assemble(&self, id: &BuildId, items: &[Item]) -> Result<Option<Loaded>, StoreError> {
        let Some(head) =
            items.iter().find(|i| matches!(i.get("sk"), Some(AttributeValue::S(k)) if k == BUILD_SK))
        else {
            return Ok(None);
        };
        let mut build: Build = parse(head, "doc")?;
        let version = get_n(head, "version")?;
        let last_seq = get_n(head, "last_seq")?;
        // A build item written before stage counts were kept: new stages sort after all.
        let stages_n = get_n(head, "stages_n").unwrap_or(u64::from(u32::MAX));
        let mut stages = Vec::new();
        let mut stage_versions = HashMap::new();
        let mut leases = HashMap::new();
        for item in items {
            let sk = get_s(item, "sk")?;
            if let Some(stage) = sk.strip_prefix(LEASE_PREFIX) {
                leases.insert(StageName::new(stage), lease_of(item)?);
            } else if sk.starts_with(STAGE_PREFIX) {
                let mut st: StageState = parse(item, "doc")?;
                st.dispatched = matches!(item.get("dispatched"), Some(AttributeValue::Bool(true)));
                stage_versions.insert(st.name.clone(), get_n(item, "version")?);
                stages.push((get_n(item, "idx")?, st));
            }
        }
        for (_, st) in &mut stages {
            st.lease = leases.remove(&st.name);
        }
        stages.sort_by_key(|(idx, _)| *idx);
        build.stages = stages.into_iter().map(|(_, st)| st).collect();
        // A build written before plans had items of their own keeps it in its document.
        if let Some(plan) = self.plan(id).await? {
            build.plan = plan;
        }
        Ok(Some(Loaded { build, version, last_seq, stages_n, stage_versions }))
    }

    /// Whether an item exists (a consistent read of its key only).
    pub(super) async fn exists(&self, pk: String, sk: String, what: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .set_key(Some(key(pk, sk)))
            .projection_expression("pk")
            .send()
            .await
            .map_err(|e| sdk(what, &e))?;
        Ok(out.item.is_some())
    }

    pub(super) async fn build_exists(&self, id: &BuildId) -> Result<bool, StoreError> {
        self.exists(pk(id), BUILD_SK.to_string(), "get build").await
    }

    pub(super) async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<(), SdkError<TransactWriteItemsError>> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            // The SDK resends the same token when it retries: a transaction that was
            // applied but whose answer was lost is not applied again.
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .send()
            .await
            .map(drop)
    }
}

/// Runs a Query with the SDK's paginator until its end or until `limit` items.
pub(super) async fn query_all(
    query: QueryFluentBuilder,
    limit: usize,
    what: &str,
) -> Result<Vec<Item>, StoreError> {
    let page = i32::try_from(limit).unwrap_or(i32::MAX).min(1000);
    let mut pages = query.into_paginator().page_size(page).send();
    let mut items = Vec::new();
    while items.len() < limit
        && let Some(res) = pages.next().await
    {
        items.extend(res.map_err(|e| sdk(what, &e))?.items.unwrap_or_default());
    }
    items.truncate(limit);
    Ok(items)
}

#[async_trait]
impl StateStore for DynamoStateStore {
    /// In several writes, so a build of any size fits: its plan's parts and its stage
    /// items first (BatchWriteItems of plain puts: a retry rewrites the same), then the
    /// build item, conditional on not existing. Until that last write the build does not
    /// exist for any reader; a crash before it leaves items nobody reads, which expire.
    async fn create_build(&self, build: &Build) -> Result<(), StoreError> {
        let exists = || StoreError::AlreadyExists(format!("build {}", build.id));
        // Checked first, so that the stage items of a build that exists are never rewritten.
        if self.build_exists(&build.id).await? {
            return Err(exists());
        }
        let pk = pk(&build.id);
        let expires = self.expiry(build);
        let plan_doc = json(&*build.plan)?;
        let mut items = Vec::new();
        for (i, part) in split_utf8(&plan_doc, PLAN_PART_BYTES).into_iter().enumerate() {
            let mut item = key(pk.clone(), plan_sk(i));
            item.insert("part".into(), s(part));
            item.insert(EXPIRES_AT.into(), expires.clone());
            items.push(item);
        }
        for (i, st) in build.stages.iter().enumerate() {
            items.push(self.stage_item(&build.id, i as u64, st, &expires)?);
        }
        self.batch_put(items).await?;
        let mut item = key(pk, BUILD_SK.to_string());
        item.insert("gsi1pk".into(), s(repo_key(&build.repo)));
        item.insert("gsi1sk".into(), s(build.id.as_str()));
        item.insert("version".into(), n(1));
        item.insert("last_seq".into(), n(0));
        item.insert("stages_n".into(), n(build.stages.len() as u64));
        item.insert("status".into(), s(status_str(build.status)?));
        item.insert("summary".into(), s(json(&summary(build))?));
        item.insert("doc".into(), s(build_doc(build)?));
        item.insert(EXPIRES_AT.into(), expires);
        self.note_item(&item);
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(sk)")
            .send()
            .await;
        match res {
            Ok(_) => {
                self.keep_plan(&build.id, build.plan.clone());
                Ok(())
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Err(exists())
            }
            Err(e) => Err(sdk("create build", &e)),
        }
    }

    async fn get_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        Ok(self.load(id).await?.map(|l| l.build))
    }

    async fn build_seq(&self, id: &BuildId) -> Result<Option<u64>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk(id), BUILD_SK.to_string())))
            .consistent_read(true)
            .projection_expression("last_seq")
            .send()
            .await
            .map_err(|e| sdk("get build", &e))?;
        out.item.map(|i| get_n(&i, "last_seq")).transpose()
    }

    async fn get_build_seq(&self, id: &BuildId) -> Result<Option<(Build, u64)>, StoreError> {
        Ok(self.load(id).await?.map(|l| (l.build, l.last_seq)))
    }

    async fn get_build_part(&self, id: &BuildId, stages: &[StageName]) -> Result<Option<Build>, StoreError> {
        Ok(self.load_part(id, stages, false, None).await?.map(|(l, _)| l.build))
    }

    async fn run_status(
        &self,
        id: &BuildId,
        stage: Option<&StageName>,
    ) -> Result<Option<kiln_store::RunStatus>, StoreError> {
        self.read_run_status(id, stage).await // dynamo/status.rs
    }

    async fn list_builds(&self, repo: &Repo, limit: usize) -> Result<Vec<BuildSummary>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("gsi1pk = :r")
            .expression_attribute_values(":r", s(repo_key(repo)))
            .projection_expression("summary")
            .scan_index_forward(false);
        let items = self.query_all(query, limit, "list builds").await?;
        items.iter().map(|item| parse::<BuildSummary>(item, "summary")).collect()
    }

    async fn commit(&self, build: &BuildId, commit: &Commit) -> Result<CommitOutcome, StoreError> {
        retry_races(
            || self.try_commit(build, commit),
            |tries| tracing::debug!(build = %build, event = %commit.event_id, tries, "commit lost a race; retrying"),
            |tries| format!("commit of event {:?} to build {build}: still losing races after {tries} tries", commit.event_id),
        )
        .await
    }

    async fn events(
        &self,
        build: &BuildId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::new();
        if let Some(first) = after_seq.checked_add(1) {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(pk(build)))
                .expression_attribute_values(":from", s(event_sk(first)))
                .expression_attribute_values(":to", s(event_sk(u64::MAX)));
            for item in self.query_all(query, limit, "query events").await? {
                out.push(StoredEvent { seq: get_n(&item, "seq")?, event: parse(&item, "event")? });
            }
        }
        if out.is_empty() && !self.build_exists(build).await? {
            return Err(StoreError::NotFound(build.clone()));
        }
        Ok(out)
    }

    async fn mark_dispatched(&self, build: &BuildId, stage: &StageName) -> Result<bool, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk(build), stage_sk(stage))))
            .update_expression("SET dispatched = :t")
            .condition_expression("attribute_exists(sk) AND dispatched = :f")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                // Already marked, or no such stage.
                if self.exists(pk(build), stage_sk(stage), "get stage").await? {
                    Ok(false)
                } else {
                    Err(StoreError::NotFound(build.clone()))
                }
            }
            Err(e) => Err(sdk("mark dispatched", &e)),
        }
    }

    async fn claim_job(
        &self,
        build: &BuildId,
        stage: &StageName,
        runner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        retry_races(
            || self.try_claim(build, stage, runner, lease_ms),
            |tries| tracing::debug!(build = %build, stage = %stage, tries, "claim lost a race; retrying"),
            |tries| {
                format!("claim of stage {stage} of build {build}: still losing races after {tries} tries")
            },
        )
        .await
    }

    async fn get_image(&self, image: &str) -> Result<Vec<ImageRecord>, StoreError> {
        self.image_records(image).await
    }

    async fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("gsi1pk = :p")
            .expression_attribute_values(":p", s(CATALOG_GSI_PK))
            .projection_expression("#record")
            .expression_attribute_names("#record", "record");
        let items = self.query_all(query, usize::MAX, "list images").await?;
        items.iter().map(|item| parse::<ImageRecord>(item, "record")).collect()
    }

    async fn image_history(&self, image: &str) -> Result<Vec<ImageHistoryEntry>, StoreError> {
        if !is_valid_name(image) {
            return Ok(Vec::new());
        }
        self.query_records(image_pk(image), HISTORY_PREFIX).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_domain::Status;

    #[test]
    fn keys_sort_as_the_design_needs() {
        // Build and stage items share the "BUILD" prefix; events and applied ids do not.
        for k in [stage_sk(&"a".into()), lease_sk(&"a".into()), BUILD_SK.to_string()] {
            assert!(k.starts_with(BUILD_SK));
        }
        for k in [event_sk(1), applied_sk("e")] {
            assert!(!k.starts_with(BUILD_SK));
        }
        // Events sort by number.
        assert!(event_sk(9) < event_sk(10));
        assert!(event_sk(10) < event_sk(u64::MAX));
        assert_eq!(event_sk(u64::MAX).len(), EVENT_PREFIX.len() + 20);
        assert_eq!(status_str(Status::Running).unwrap(), "running");
        // Repository settings sort by `org/repo`; a claim key is kept whole in its pk.
        assert_eq!(repo_settings_sk(&Repo::new("acme", "app")), "acme/app");
        assert_eq!(claim_pk("hook/a#b"), "CLAIM#hook/a#b");
        assert_ne!(
            REPOS_PK,
            repo_key(&Repo::new("acme", "app")),
            "settings are not in the build listing's GSI key"
        );
    }
}
