//! The repository port: a repository's git settings (which host, its API root) and
//! claims, the write-once records that make webhooks and commit statuses idempotent (a
//! redelivered hook starts no second build; a status is posted once per transition). The
//! webhook secret and the host token are not here: they are in the [`SecretStore`] under
//! [`kiln_domain::git::credentials_repo`].
//!
//! [`SecretStore`]: crate::SecretStore

use crate::StoreError;
use async_trait::async_trait;
use kiln_domain::Repo;
use kiln_domain::git::Provider;
use serde::{Deserialize, Serialize};

/// A repository's git settings, as `PUT /v1/repos/{org}/{repo}` stored them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSettings {
    pub repo: Repo,
    pub provider: Provider,
    /// The host's API root, without a trailing `/`.
    pub api_url: String,
    pub updated_ms: u64,
}

#[async_trait]
pub trait RepoStore: Send + Sync {
    /// Stores (or replaces) a repository's settings.
    async fn put_repo(&self, settings: &RepoSettings) -> Result<(), StoreError>;
    async fn get_repo(&self, repo: &Repo) -> Result<Option<RepoSettings>, StoreError>;
    /// Every registered repository, sorted by `org/repo`.
    async fn list_repos(&self) -> Result<Vec<RepoSettings>, StoreError>;
    /// Records `value` under `key` unless the key is already taken, atomically: `None`
    /// when this call took it, else the value the key already holds. A claim holds until
    /// released, or until the store's retention (days, as for builds) has passed.
    async fn claim(&self, key: &str, value: &str) -> Result<Option<String>, StoreError>;
    /// Gives a claim up (the work it stood for failed and may be tried again).
    async fn release(&self, key: &str) -> Result<(), StoreError>;
}
