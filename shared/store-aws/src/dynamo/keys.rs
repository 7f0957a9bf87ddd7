//! The table's keys and attributes, and the conversions between items and domain types.

use crate::describe;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::AttributeValue;
use kiln_domain::catalog::ImageRecord;
use kiln_domain::state::{Build, Lease, StageState};
use kiln_domain::{BuildId, Repo, StageName, Status};
use kiln_store::{BuildSummary, StoreError};
use std::collections::HashMap;

/// DynamoDB takes at most 100 items in one transaction.
pub(super) const MAX_TRANSACTION_ITEMS: usize = 100;

pub(super) const BUILD_SK: &str = "BUILD";
/// Stage items sort right after the build item, so `begins_with(sk, "BUILD")` reads a
/// build with its stages (and their steps) in one Query.
pub(super) const STAGE_PREFIX: &str = "BUILD#STAGE#";
/// A stage's lease has an item of its own (so heartbeats never touch the stage item);
/// its key shares the "BUILD" prefix, so the same Query reads it.
pub(super) const LEASE_PREFIX: &str = "BUILD#LEASE#";
/// The plan is written once, when the build is created, in parts of its own
/// (`PLAN#0000`, ...): outside the "BUILD" prefix, so reading a build's hot items never
/// reads it, and cut so that no item grows with the pipeline.
pub(super) const PLAN_PREFIX: &str = "PLAN#";
/// The most bytes of the plan's JSON in one part.
pub(super) const PLAN_PART_BYTES: usize = 32 * 1024;
/// The largest item Kiln means to write, far below DynamoDB's 400 KB: the largest one
/// written is measured ([`super::largest_item_bytes`]) and the tests hold
/// it under this.
pub const MAX_ITEM_BYTES: usize = 64 * 1024;
pub(super) const EVENT_PREFIX: &str = "EVENT#";
pub(super) const APPLIED_PREFIX: &str = "APPLIED#";
pub(super) const GSI1: &str = "gsi1";
pub(super) const PROVIDER_PREFIX: &str = "PROVIDER#";
pub(super) const HISTORY_PREFIX: &str = "HISTORY#";
/// The GSI partition holding every current catalog record (sorted `<image>#<provider>`).
pub(super) const CATALOG_GSI_PK: &str = "IMAGES";

/// The partition holding every repository's git settings (sorted by `sk`, `<org>/<repo>`),
/// so listing them is one Query.
pub(super) const REPOS_PK: &str = "REPO";
/// A claim is an item of its own partition (`CLAIM#<key>`): claims of different keys never
/// contend, and any key shape fits.
pub(super) const CLAIM_PREFIX: &str = "CLAIM#";
pub(super) const CLAIM_SK: &str = "CLAIM";
/// The table's TTL attribute (seconds since the epoch): every item of a build carries it
/// (`kiln_domain::retention`), and so does a claim.
pub(super) const EXPIRES_AT: &str = "expires_at";

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn pk(id: &BuildId) -> String {
    format!("BUILD#{id}")
}

pub(super) fn stage_sk(name: &StageName) -> String {
    format!("{STAGE_PREFIX}{name}")
}

pub(super) fn lease_sk(name: &StageName) -> String {
    format!("{LEASE_PREFIX}{name}")
}

/// A lease item's lease.
pub(super) fn lease_of(item: &Item) -> Result<Lease, StoreError> {
    let attempt = get_n(item, "attempt")?;
    Ok(Lease {
        runner: get_s(item, "runner")?.to_string(),
        attempt: u32::try_from(attempt).map_err(|e| backend("read", format!("attempt: {e}")))?,
        until_ms: get_n(item, "until_ms")?,
    })
}

pub(super) fn plan_sk(part: usize) -> String {
    format!("{PLAN_PREFIX}{part:04}")
}

/// `text` cut into pieces of at most `max` bytes, on character boundaries.
pub(super) fn split_utf8(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        parts.push(head);
        rest = tail;
    }
    parts.push(rest);
    parts
}

/// An item's size as DynamoDB counts it (closely enough): attribute names and values.
pub(super) fn item_bytes(item: &Item) -> usize {
    fn value(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
            AttributeValue::B(b) => b.as_ref().len(),
            AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value(v)).sum::<usize>(),
            AttributeValue::M(m) => 3 + m.iter().map(|(k, v)| 1 + k.len() + value(v)).sum::<usize>(),
            AttributeValue::Ss(l) | AttributeValue::Ns(l) => l.iter().map(String::len).sum(),
            _ => 1,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

pub(super) fn event_sk(seq: u64) -> String {
    format!("{EVENT_PREFIX}{seq:020}")
}

pub(super) fn applied_sk(event_id: &str) -> String {
    format!("{APPLIED_PREFIX}{event_id}")
}

pub(super) fn image_pk(image: &str) -> String {
    format!("IMAGE#{image}")
}

pub(super) fn provider_sk(provider: &str) -> String {
    format!("{PROVIDER_PREFIX}{provider}")
}

/// History items sort by build, provider, version (`#` sorts before every name character,
/// so `aws` comes before `aws-east`).
pub(super) fn history_sk(r: &ImageRecord) -> String {
    format!("{HISTORY_PREFIX}{}#{}#{:020}", r.build, r.provider, r.version)
}

pub(super) fn catalog_gsi_sk(image: &str, provider: &str) -> String {
    format!("{image}#{provider}")
}

pub(super) fn repo_key(repo: &Repo) -> String {
    format!("REPO#{repo}")
}

pub(super) fn repo_settings_sk(repo: &Repo) -> String {
    repo.to_string()
}

pub(super) fn claim_pk(claim: &str) -> String {
    format!("{CLAIM_PREFIX}{claim}")
}

pub(super) fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

pub(super) fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("dynamodb {what}: {e}"))
}

pub(super) fn sdk<E, R>(what: &str, e: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    backend(what, describe(e))
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| backend("serialize", e))
}

pub(super) fn status_str(st: Status) -> Result<String, StoreError> {
    match serde_json::to_value(st).map_err(|e| backend("serialize", e))? {
        serde_json::Value::String(v) => Ok(v),
        other => Ok(other.to_string()),
    }
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(backend("read", format!("item without string attribute {name:?}"))),
    }
}

pub(super) fn get_n(item: &Item, name: &str) -> Result<u64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|e| backend("read", format!("{name}: {e}"))),
        _ => Err(backend("read", format!("item without number attribute {name:?}"))),
    }
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(item: &Item, name: &str) -> Result<T, StoreError> {
    serde_json::from_str(get_s(item, name)?).map_err(|e| backend("parse", format!("{name}: {e}")))
}

pub(super) fn summary(b: &Build) -> BuildSummary {
    BuildSummary {
        id: b.id.clone(),
        repo: b.repo.clone(),
        status: b.status,
        created_ms: b.created_ms,
        finished_ms: b.finished_ms,
    }
}

/// The build item's document: the build's header (no stages, no plan: they have their
/// own items).
pub(super) fn build_doc(b: &Build) -> Result<String, StoreError> {
    json(&b.header())
}

/// A stage item's document. `dispatched` lives in its own attribute (set by one
/// conditional update) and the lease in its own item, so the document always says false
/// and no lease.
pub(super) fn stage_doc(st: &StageState) -> Result<String, StoreError> {
    let mut st = st.clone();
    st.dispatched = false;
    st.lease = None;
    json(&st)
}

/// Whether a TransactWriteItems failed because of a lost race (a condition on a version
/// or on an item that must not exist yet, or another transaction on the same items):
/// returns the cancellation reason codes, one per item, or None for other errors.
pub(super) fn cancel_reasons<R>(e: &SdkError<TransactWriteItemsError, R>) -> Option<Vec<String>> {
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
pub(super) fn is_race(reasons: &[String]) -> bool {
    reasons.is_empty() || reasons.iter().any(|c| c == "ConditionalCheckFailed" || c == "TransactionConflict")
}
