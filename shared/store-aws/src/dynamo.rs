//! [`DynamoStateStore`]: builds, stages, the event history and applied event ids in one
//! DynamoDB table. The design (keys, the GSI, the access patterns) is written down in
//! ARCHITECTURE.md, "DynamoDB single-table design".

use crate::{backoff, describe};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};
use kiln_domain::catalog::{CatalogWrite, ImageHistoryEntry, ImageRecord};
use kiln_domain::event::{StoredEvent, now_ms};
use kiln_domain::ids::is_valid_name;
use kiln_domain::state::{Build, Lease, StageState, Target};
use kiln_domain::{BuildId, Repo, StageName, Status};
use kiln_store::{BuildSummary, Claim, Commit, CommitOutcome, StateStore, StoreError};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// DynamoDB takes at most 100 items in one transaction.
const MAX_TRANSACTION_ITEMS: usize = 100;
/// How often a commit or claim that lost a race (another writer changed the build between
/// its read and its write) is retried, from a fresh read, before giving up.
const MAX_ATTEMPTS: u32 = 40;

const BUILD_SK: &str = "BUILD";
/// Stage items sort right after the build item, so `begins_with(sk, "BUILD")` reads a
/// build with its stages (and their steps) in one Query.
const STAGE_PREFIX: &str = "BUILD#STAGE#";
const EVENT_PREFIX: &str = "EVENT#";
const APPLIED_PREFIX: &str = "APPLIED#";
const GSI1: &str = "gsi1";
const PROVIDER_PREFIX: &str = "PROVIDER#";
const HISTORY_PREFIX: &str = "HISTORY#";
/// The GSI partition holding every current catalog record (sorted `<image>#<provider>`).
const CATALOG_GSI_PK: &str = "IMAGES";

type Item = HashMap<String, AttributeValue>;

/// The state store on DynamoDB (single table; see ARCHITECTURE.md).
///
/// Every commit is one TransactWriteItems: the applied event id (a conditional Put, so an
/// event applies once), the build item (conditional on the version read, so commits to
/// one build are serialized and sequence numbers are gapless), the changed stage items
/// (conditional on their versions), new stage items and one item per history event. A
/// commit whose transaction loses a race is retried from a fresh read; its transitions
/// are checked again with [`Build::apply`] then, so a transition that went stale is
/// refused as a conflict, never applied twice.
#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
}

/// A build as read, with the versions its writes are conditional on.
struct Loaded {
    build: Build,
    version: u64,
    last_seq: u64,
    stage_versions: HashMap<StageName, u64>,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn pk(id: &BuildId) -> String {
    format!("BUILD#{id}")
}

fn stage_sk(name: &StageName) -> String {
    format!("{STAGE_PREFIX}{name}")
}

fn event_sk(seq: u64) -> String {
    format!("{EVENT_PREFIX}{seq:020}")
}

fn applied_sk(event_id: &str) -> String {
    format!("{APPLIED_PREFIX}{event_id}")
}

fn image_pk(image: &str) -> String {
    format!("IMAGE#{image}")
}

fn provider_sk(provider: &str) -> String {
    format!("{PROVIDER_PREFIX}{provider}")
}

/// History items sort by build, provider, version (`#` sorts before every name character,
/// so `aws` comes before `aws-east`).
fn history_sk(r: &ImageRecord) -> String {
    format!("{HISTORY_PREFIX}{}#{}#{:020}", r.build, r.provider, r.version)
}

fn catalog_gsi_sk(image: &str, provider: &str) -> String {
    format!("{image}#{provider}")
}

fn repo_key(repo: &Repo) -> String {
    format!("REPO#{repo}")
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("dynamodb {what}: {e}"))
}

fn sdk<E, R>(what: &str, e: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    backend(what, describe(e))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| backend("serialize", e))
}

fn status_str(st: Status) -> Result<String, StoreError> {
    match serde_json::to_value(st).map_err(|e| backend("serialize", e))? {
        serde_json::Value::String(v) => Ok(v),
        other => Ok(other.to_string()),
    }
}

fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(backend("read", format!("item without string attribute {name:?}"))),
    }
}

fn get_n(item: &Item, name: &str) -> Result<u64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|e| backend("read", format!("{name}: {e}"))),
        _ => Err(backend("read", format!("item without number attribute {name:?}"))),
    }
}

fn parse<T: serde::de::DeserializeOwned>(item: &Item, name: &str) -> Result<T, StoreError> {
    serde_json::from_str(get_s(item, name)?).map_err(|e| backend("parse", format!("{name}: {e}")))
}

fn summary(b: &Build) -> BuildSummary {
    BuildSummary {
        id: b.id.clone(),
        repo: b.repo.clone(),
        status: b.status,
        created_ms: b.created_ms,
        finished_ms: b.finished_ms,
    }
}

/// The build item's document: the build without its stages (they have their own items).
fn build_doc(b: &Build) -> Result<String, StoreError> {
    let mut head = b.clone();
    head.stages.clear();
    json(&head)
}

/// A stage item's document. `dispatched` lives in its own attribute (set by one
/// conditional update), so the document always says false.
fn stage_doc(st: &StageState) -> Result<String, StoreError> {
    let mut st = st.clone();
    st.dispatched = false;
    json(&st)
}

/// Whether a TransactWriteItems failed because of a lost race (a condition on a version
/// or on an item that must not exist yet, or another transaction on the same items):
/// returns the cancellation reason codes, one per item, or None for other errors.
fn cancel_reasons<R>(e: &SdkError<TransactWriteItemsError, R>) -> Option<Vec<String>> {
    match e.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(t) => {
            Some(t.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_string()).collect())
        }
        TransactWriteItemsError::TransactionInProgressException(_) => Some(Vec::new()),
        other if other.code().is_some_and(|c| c.contains("TransactionConflict")) => Some(Vec::new()),
        _ => None,
    }
}

/// Whether a lost race explains the cancellation (so a retry from a fresh read may succeed).
fn is_race(reasons: &[String]) -> bool {
    reasons.is_empty() || reasons.iter().any(|c| c == "ConditionalCheckFailed" || c == "TransactionConflict")
}

impl DynamoStateStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Runs a Query page after page until its end or until `limit` items; each page asks
    /// for no more than are still wanted.
    async fn query_all(
        &self,
        query: QueryFluentBuilder,
        limit: usize,
        what: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        while items.len() < limit {
            let page = i32::try_from(limit - items.len()).unwrap_or(i32::MAX).min(1000);
            let res = query
                .clone()
                .limit(page)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk(what, &e))?;
            items.extend(res.items.unwrap_or_default());
            start = res.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        items.truncate(limit);
        Ok(items)
    }

    /// The build item and its stage items, in one (paginated) consistent Query.
    async fn load(&self, id: &BuildId) -> Result<Option<Loaded>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND begins_with(sk, :b)")
            .expression_attribute_values(":pk", s(pk(id)))
            .expression_attribute_values(":b", s(BUILD_SK));
        let items = self.query_all(query, usize::MAX, "query build").await?;
        let Some(head) =
            items.iter().find(|i| matches!(i.get("sk"), Some(AttributeValue::S(k)) if k == BUILD_SK))
        else {
            return Ok(None);
        };
        let mut build: Build = parse(head, "doc")?;
        let version = get_n(head, "version")?;
        let last_seq = get_n(head, "last_seq")?;
        let mut stages = Vec::new();
        let mut stage_versions = HashMap::new();
        for item in &items {
            if !get_s(item, "sk")?.starts_with(STAGE_PREFIX) {
                continue;
            }
            let mut st: StageState = parse(item, "doc")?;
            st.dispatched = matches!(item.get("dispatched"), Some(AttributeValue::Bool(true)));
            stage_versions.insert(st.name.clone(), get_n(item, "version")?);
            stages.push((get_n(item, "idx")?, st));
        }
        stages.sort_by_key(|(idx, _)| *idx);
        build.stages = stages.into_iter().map(|(_, st)| st).collect();
        Ok(Some(Loaded { build, version, last_seq, stage_versions }))
    }

    /// Whether an item exists (a consistent read of its key only).
    async fn exists(&self, pk: String, sk: String, what: &str) -> Result<bool, StoreError> {
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

    async fn build_exists(&self, id: &BuildId) -> Result<bool, StoreError> {
        self.exists(pk(id), BUILD_SK.to_string(), "get build").await
    }

    async fn applied(&self, id: &BuildId, event_id: &str) -> Result<bool, StoreError> {
        if event_id.is_empty() {
            return Ok(false);
        }
        self.exists(pk(id), applied_sk(event_id), "get applied event").await
    }

    fn stage_put(&self, id: &BuildId, idx: usize, st: &StageState) -> Result<TransactWriteItem, StoreError> {
        let mut item = key(pk(id), stage_sk(&st.name));
        item.insert("idx".into(), n(idx as u64));
        item.insert("version".into(), n(1));
        item.insert("status".into(), s(status_str(st.status)?));
        item.insert("dispatched".into(), AttributeValue::Bool(st.dispatched));
        item.insert("doc".into(), s(stage_doc(st)?));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(|e| backend("build request", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Writes a changed stage's document, conditional on the version it was read at.
    fn stage_update(
        &self,
        id: &BuildId,
        st: &StageState,
        version: u64,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk(id), stage_sk(&st.name))))
            .update_expression("SET #doc = :doc, #status = :status, #version = :next")
            .condition_expression("#version = :version")
            .expression_attribute_names("#doc", "doc")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":doc", s(stage_doc(st)?))
            .expression_attribute_values(":status", s(status_str(st.status)?))
            .expression_attribute_values(":next", n(version + 1))
            .expression_attribute_values(":version", n(version))
            .build()
            .map_err(|e| backend("build request", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), SdkError<TransactWriteItemsError>> {
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

    async fn try_commit(&self, id: &BuildId, c: &Commit) -> Result<Option<CommitOutcome>, StoreError> {
        let (loaded, applied) = tokio::join!(self.load(id), self.applied(id, &c.event_id));
        let loaded = loaded?.ok_or_else(|| StoreError::NotFound(id.clone()))?;
        if applied? {
            return Ok(Some(CommitOutcome::Duplicate));
        }
        let mut build = loaded.build.clone();
        // New instances first: the same commit may already move them on (they are
        // written whole, in their final state).
        let first_new = build.stages.len();
        for st in &c.new_stages {
            if build.stage(st.name.as_str()).is_some() {
                return Err(StoreError::AlreadyExists(format!("stage {} of build {id}", st.name)));
            }
            build.stages.push(st.clone());
        }
        let mut changed: BTreeSet<StageName> = BTreeSet::new();
        for t in &c.transitions {
            build.apply(t)?;
            match &t.target {
                Target::Build => {}
                Target::Stage { stage } | Target::Step { stage, .. } => {
                    if loaded.stage_versions.contains_key(stage) {
                        changed.insert(stage.clone());
                    }
                }
            }
        }
        if let Some(arrivals) = &c.arrivals {
            build.arrivals.clone_from(arrivals);
        }

        self.check_catalog(&c.images).await?;

        let pk = pk(id);
        let first_seq = loaded.last_seq + 1;
        let last_seq = loaded.last_seq + c.events.len() as u64;
        let mut items = Vec::new();
        let dedupe = !c.event_id.is_empty();
        if dedupe {
            let mut item = key(pk.clone(), applied_sk(&c.event_id));
            item.insert("at_ms".into(), n(now_ms()));
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(sk)")
                .build()
                .map_err(|e| backend("build request", e))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk.clone(), BUILD_SK.to_string())))
            .update_expression(
                "SET #doc = :doc, #summary = :summary, #status = :status, #version = :next, #last_seq = :last_seq",
            )
            .condition_expression("#version = :version")
            .expression_attribute_names("#doc", "doc")
            .expression_attribute_names("#summary", "summary")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#last_seq", "last_seq")
            .expression_attribute_values(":doc", s(build_doc(&build)?))
            .expression_attribute_values(":summary", s(json(&summary(&build))?))
            .expression_attribute_values(":status", s(status_str(build.status)?))
            .expression_attribute_values(":next", n(loaded.version + 1))
            .expression_attribute_values(":version", n(loaded.version))
            .expression_attribute_values(":last_seq", n(last_seq))
            .build()
            .map_err(|e| backend("build request", e))?;
        items.push(TransactWriteItem::builder().update(update).build());
        for name in &changed {
            let st = build.stage(name.as_str()).expect("a transition's stage exists");
            let version = *loaded.stage_versions.get(name).expect("a loaded stage has a version");
            items.push(self.stage_update(id, st, version)?);
        }
        for (i, st) in build.stages.iter().enumerate().skip(first_new) {
            items.push(self.stage_put(id, i, st)?);
        }
        for (event, seq) in c.events.iter().zip(first_seq..) {
            let mut item = key(pk.clone(), event_sk(seq));
            item.insert("seq".into(), n(seq));
            item.insert("event".into(), s(json(event)?));
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(sk)")
                .build()
                .map_err(|e| backend("build request", e))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        for w in &c.images {
            items.extend(self.catalog_items(w)?);
        }
        if items.len() > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Backend(format!(
                "commit of event {:?} to build {id} needs {} items, more than one DynamoDB transaction takes \
                 ({MAX_TRANSACTION_ITEMS}): {} transitions on {} stages, {} new stages, {} events, {} catalog writes",
                c.event_id,
                items.len(),
                c.transitions.len(),
                changed.len(),
                c.new_stages.len(),
                c.events.len(),
                c.images.len()
            )));
        }
        match self.transact(items).await {
            Ok(()) => Ok(Some(CommitOutcome::Applied { first_seq })),
            Err(e) => match cancel_reasons(&e) {
                // The event id was recorded meanwhile: a concurrent delivery of this event won.
                Some(r) if dedupe && r.first().is_some_and(|c| c == "ConditionalCheckFailed") => {
                    Ok(Some(CommitOutcome::Duplicate))
                }
                Some(r) if is_race(&r) => Ok(None),
                _ => Err(sdk("commit", &e)),
            },
        }
    }

    /// An image's current records (one per provider), sorted by provider.
    async fn image_records(&self, image: &str) -> Result<Vec<ImageRecord>, StoreError> {
        if !is_valid_name(image) {
            return Ok(Vec::new());
        }
        self.query_records(image_pk(image), PROVIDER_PREFIX).await
    }

    /// Every item of partition `pk` whose sort key begins with `prefix`, parsed from its
    /// `record` attribute, in sort key order (consistent read).
    async fn query_records(&self, pk: String, prefix: &str) -> Result<Vec<ImageRecord>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":p", s(prefix));
        let items = self.query_all(query, usize::MAX, "query image").await?;
        items.iter().map(|item| parse::<ImageRecord>(item, "record")).collect()
    }

    /// Checks every catalog write's condition against the stored records (so a stale one
    /// is refused with the versions it saw); the transaction checks them again.
    async fn check_catalog(&self, writes: &[CatalogWrite]) -> Result<(), StoreError> {
        let mut records: HashMap<&str, Vec<ImageRecord>> = HashMap::new();
        for w in writes {
            let image = w.record.image.as_str();
            if !is_valid_name(image) || !is_valid_name(&w.record.provider) {
                return Err(StoreError::Backend(format!(
                    "invalid image or provider name {image:?}/{:?}",
                    w.record.provider
                )));
            }
            if !records.contains_key(image) {
                records.insert(image, self.image_records(image).await?);
            }
            let current = records[image].iter().find(|r| r.provider == w.record.provider);
            w.check(current)?;
        }
        Ok(())
    }

    /// A catalog write's two items: the current record (conditional on the version the
    /// write expects) and its history entry.
    fn catalog_items(&self, w: &CatalogWrite) -> Result<[TransactWriteItem; 2], StoreError> {
        let r = &w.record;
        let doc = json(r)?;
        let mut item = key(image_pk(&r.image), provider_sk(&r.provider));
        item.insert("gsi1pk".into(), s(CATALOG_GSI_PK));
        item.insert("gsi1sk".into(), s(catalog_gsi_sk(&r.image, &r.provider)));
        item.insert("provider".into(), s(r.provider.as_str()));
        item.insert("version".into(), n(r.version));
        item.insert("record".into(), s(doc.clone()));
        let mut current = Put::builder().table_name(&self.table).set_item(Some(item));
        current = if w.expected_version == 0 {
            current.condition_expression("attribute_not_exists(sk)")
        } else {
            current
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected", n(w.expected_version))
        };
        let mut hist = key(image_pk(&r.image), history_sk(r));
        hist.insert("record".into(), s(doc));
        let history = Put::builder()
            .table_name(&self.table)
            .set_item(Some(hist))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(|e| backend("build request", e))?;
        Ok([
            TransactWriteItem::builder()
                .put(current.build().map_err(|e| backend("build request", e))?)
                .build(),
            TransactWriteItem::builder().put(history).build(),
        ])
    }

    async fn try_claim(
        &self,
        id: &BuildId,
        stage: &StageName,
        runner: &str,
        lease_ms: u64,
    ) -> Result<Option<Claim>, StoreError> {
        let loaded = self.load(id).await?.ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let build_status = loaded.build.status;
        let Some(st) = loaded.build.stage(stage.as_str()) else {
            return Err(StoreError::NotFound(id.clone()));
        };
        if build_status.is_terminal() || st.status.is_terminal() {
            return Ok(Some(Claim::Finished));
        }
        let now = now_ms();
        let attempt = match &st.lease {
            Some(l) if l.until_ms >= now && l.runner != runner => return Ok(Some(Claim::Busy)),
            Some(l) if l.until_ms >= now => l.attempt,
            Some(l) => l.attempt.max(st.attempt) + 1,
            None => st.attempt + 1,
        };
        let mut st = st.clone();
        st.lease =
            Some(Lease { runner: runner.to_string(), attempt, until_ms: now.saturating_add(lease_ms) });
        let version = *loaded.stage_versions.get(stage).expect("a loaded stage has a version");
        // The build must not have ended meanwhile (the stage's own status is covered by
        // its version).
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk(id), BUILD_SK.to_string())))
            .condition_expression("#status = :status")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status_str(build_status)?))
            .build()
            .map_err(|e| backend("build request", e))?;
        let items = vec![
            TransactWriteItem::builder().condition_check(check).build(),
            self.stage_update(id, &st, version)?,
        ];
        match self.transact(items).await {
            Ok(()) => Ok(Some(Claim::Claimed { attempt })),
            Err(e) => match cancel_reasons(&e) {
                Some(r) if is_race(&r) => Ok(None),
                _ => Err(sdk("claim", &e)),
            },
        }
    }
}

#[async_trait]
impl StateStore for DynamoStateStore {
    async fn create_build(&self, build: &Build) -> Result<(), StoreError> {
        if build.stages.len() + 1 > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Backend(format!(
                "build {} has {} stages: one DynamoDB transaction creates at most {}",
                build.id,
                build.stages.len(),
                MAX_TRANSACTION_ITEMS - 1
            )));
        }
        let mut item = key(pk(&build.id), BUILD_SK.to_string());
        item.insert("gsi1pk".into(), s(repo_key(&build.repo)));
        item.insert("gsi1sk".into(), s(build.id.as_str()));
        item.insert("version".into(), n(1));
        item.insert("last_seq".into(), n(0));
        item.insert("status".into(), s(status_str(build.status)?));
        item.insert("summary".into(), s(json(&summary(build))?));
        item.insert("doc".into(), s(build_doc(build)?));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(|e| backend("build request", e))?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        for (i, st) in build.stages.iter().enumerate() {
            items.push(self.stage_put(&build.id, i, st)?);
        }
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(e) => match cancel_reasons(&e) {
                Some(r) if r.first().is_some_and(|c| c == "ConditionalCheckFailed") => {
                    Err(StoreError::AlreadyExists(format!("build {}", build.id)))
                }
                _ => Err(sdk("create build", &e)),
            },
        }
    }

    async fn get_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        Ok(self.load(id).await?.map(|l| l.build))
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
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(outcome) = self.try_commit(build, commit).await? {
                return Ok(outcome);
            }
            tracing::debug!(build = %build, event = %commit.event_id, attempt, "commit lost a race; retrying");
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "commit of event {:?} to build {build}: still losing races after {MAX_ATTEMPTS} attempts",
            commit.event_id
        )))
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
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(claim) = self.try_claim(build, stage, runner, lease_ms).await? {
                return Ok(claim);
            }
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "claim of stage {stage} of build {build}: still losing races after {MAX_ATTEMPTS} attempts"
        )))
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

    #[test]
    fn keys_sort_as_the_design_needs() {
        // Build and stage items share the "BUILD" prefix; events and applied ids do not.
        for k in [stage_sk(&"a".into()), BUILD_SK.to_string()] {
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
    }
}
