//! The secret store port: repository secrets, encrypted at rest by every adapter. Values
//! come back only through [`SecretStore::reveal`], which the runner's delivery path calls
//! for the names its stage declares; listings carry names and times, never values.

use async_trait::async_trait;
use kiln_domain::Repo;
use kiln_domain::secret::SecretName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum SecretStoreError {
    /// The store holds something it cannot decrypt or read back (a wrong key, a damaged
    /// file, a half-written value).
    #[error("secret store data is unreadable: {0}")]
    Corrupt(String),
    #[error("secret store failure: {0}")]
    Backend(String),
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: SecretName,
    pub updated_ms: u64,
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Sets (or replaces) a secret. The value was checked by `kiln_domain::secret::check_value`.
    async fn put(&self, repo: &Repo, name: &SecretName, value: &str) -> Result<(), SecretStoreError>;
    /// The repository's secrets, sorted by name.
    async fn list(&self, repo: &Repo) -> Result<Vec<SecretInfo>, SecretStoreError>;
    /// Removes a secret; false if there was none.
    async fn delete(&self, repo: &Repo, name: &SecretName) -> Result<bool, SecretStoreError>;
    /// The values of the named secrets that exist (a missing name is simply absent).
    async fn reveal(
        &self,
        repo: &Repo,
        names: &[SecretName],
    ) -> Result<BTreeMap<SecretName, String>, SecretStoreError>;
}
