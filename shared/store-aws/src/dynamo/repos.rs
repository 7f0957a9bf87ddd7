//! [`DynamoRepoStore`]: repositories' git settings (`pk = REPO`, `sk = <org>/<repo>`) and
//! write-once claims (`pk = CLAIM#<key>`, `sk = CLAIM`) in the state table.

use super::keys::*;
use super::query_all;
use crate::retry_races;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use kiln_domain::Repo;
use kiln_domain::event::now_ms;
use kiln_store::{RepoSettings, RepoStore, StoreError};

/// The repository store on DynamoDB, in the state store's table (see ARCHITECTURE.md).
///
/// A claim is one PutItem conditional on `attribute_not_exists(pk)`: DynamoDB applies
/// conditional writes to one item one at a time, so of concurrent claims exactly one
/// succeeds. A loser reads the winner's value (consistent read); if the claim was
/// released in between, it tries again. A claim carries `expires_at` (the table's TTL), a
/// retention after it was taken: the builds and deliveries it stands for are gone by then.
#[derive(Debug, Clone)]
pub struct DynamoRepoStore {
    client: Client,
    table: String,
    retention_days: u64,
}

impl DynamoRepoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), retention_days: kiln_domain::retention::DEFAULT_RETENTION_DAYS }
    }

    /// Claims expire this many days after they were taken (the builds they stand for are
    /// gone by then, and no host redelivers a webhook that late).
    pub fn with_retention(mut self, days: u64) -> Self {
        self.retention_days = days;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The value a claim holds (consistent read), or None when the key is free.
    async fn held(&self, claim: &str) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .set_key(Some(key(claim_pk(claim), CLAIM_SK.to_string())))
            .projection_expression("#v")
            .expression_attribute_names("#v", "value")
            .send()
            .await
            .map_err(|e| sdk("get claim", &e))?;
        out.item.map(|item| get_s(&item, "value").map(str::to_string)).transpose()
    }

    /// One claim attempt: `Some(None)` took the key, `Some(Some(v))` found it held by `v`,
    /// `None` lost it and found it free again (released in between: try again).
    async fn try_claim(&self, claim: &str, value: &str) -> Result<Option<Option<String>>, StoreError> {
        let mut item = key(claim_pk(claim), CLAIM_SK.to_string());
        item.insert("value".into(), s(value));
        let created = now_ms();
        item.insert("created_ms".into(), n(created));
        let kept_s = self.retention_days.max(1).saturating_mul(24 * 60 * 60);
        item.insert(EXPIRES_AT.into(), n(created / 1000 + kept_s));
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(Some(None)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Ok(self.held(claim).await?.map(Some))
            }
            Err(e) => Err(sdk("put claim", &e)),
        }
    }
}

#[async_trait]
impl RepoStore for DynamoRepoStore {
    async fn put_repo(&self, settings: &RepoSettings) -> Result<(), StoreError> {
        let mut item = key(REPOS_PK.to_string(), repo_settings_sk(&settings.repo));
        item.insert("doc".into(), s(json(settings)?));
        item.insert("updated_ms".into(), n(settings.updated_ms));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk("put repository", &e))?;
        Ok(())
    }

    async fn get_repo(&self, repo: &Repo) -> Result<Option<RepoSettings>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .set_key(Some(key(REPOS_PK.to_string(), repo_settings_sk(repo))))
            .send()
            .await
            .map_err(|e| sdk("get repository", &e))?;
        out.item.map(|item| parse(&item, "doc")).transpose()
    }

    async fn list_repos(&self) -> Result<Vec<RepoSettings>, StoreError> {
        // Sort keys are compared as UTF-8 bytes: the order of the strings `org/repo`.
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(REPOS_PK));
        let items = query_all(query, usize::MAX, "list repositories").await?;
        items.iter().map(|item| parse(item, "doc")).collect()
    }

    async fn claim(&self, claim: &str, value: &str) -> Result<Option<String>, StoreError> {
        retry_races(
            || self.try_claim(claim, value),
            |tries| tracing::debug!(claim, tries, "claim released while it was read; retrying"),
            |tries| format!("claim {claim:?}: taken and released again {tries} times while it was read"),
        )
        .await
    }

    async fn release(&self, claim: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(claim_pk(claim), CLAIM_SK.to_string())))
            .send()
            .await
            .map_err(|e| sdk("delete claim", &e))?;
        Ok(())
    }
}
