//! Secret delivery: how a runner gets the values of the secrets its stage declares, and
//! the one rule for what may be handed out (the declared names of one stage, never more).
//!
//! A runner asks a [`SecretSource`] once, when its job starts: in one process straight
//! from the [`SecretStore`] ([`StoreSecrets`]), across machines over the API with the
//! build's token (`kiln_api::client`). Values live only in the runner's memory and the
//! environment of the steps that declared them; they never travel in queue messages and
//! are never written to the build, its events or its logs.

use crate::job::Job;
use async_trait::async_trait;
use kiln_domain::plan::Plan;
use kiln_domain::secret::SecretName;
use kiln_domain::{Repo, StageName};
use kiln_store::{SecretStore, SecretStoreError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a source hands a runner for its stage.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Declared secrets that are set, by name.
    pub values: BTreeMap<SecretName, String>,
    /// Declared secrets that are not set in the repository, sorted.
    pub missing: Vec<SecretName>,
    /// The host token the runner checks a git build's commit out with (never a step's:
    /// steps of fork pull requests check out too, and get no secret).
    pub checkout_token: Option<String>,
}

/// Values are never printed, not even in a debug log.
impl std::fmt::Debug for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivered")
            .field("values", &self.values.keys().collect::<Vec<_>>())
            .field("missing", &self.missing)
            .field("checkout_token", &self.checkout_token.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretFetchError {
    /// The source refused (a token of another build, secrets not allowed for the build).
    #[error("secrets refused: {0}")]
    Refused(String),
    /// No secret store is configured where the job runs.
    #[error("no secret store is configured")]
    NoStore,
    #[error("cannot fetch secrets: {0}")]
    Backend(String),
}

impl From<SecretStoreError> for SecretFetchError {
    fn from(e: SecretStoreError) -> Self {
        SecretFetchError::Backend(e.to_string())
    }
}

/// Where a runner gets the values of its stage's declared secrets.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The declared secrets of the job's stage (`job.plan`'s steps and services).
    async fn fetch(&self, job: &Job) -> Result<Delivered, SecretFetchError>;
}

/// The names a stage instance's steps and services declare, from the build's plan (an
/// instance `heads#2` declares what `heads` does); `None` for a stage the plan lacks.
pub fn declared(plan: &Plan, stage: &StageName) -> Option<Vec<SecretName>> {
    plan.stage(stage.template()).map(|s| s.secret_names())
}

/// Reads `names` of `repo` from `store`: the values that are set and the names that are
/// not. Never returns a name outside `names`.
pub async fn reveal(
    store: &dyn SecretStore,
    repo: &Repo,
    names: &[SecretName],
) -> Result<Delivered, SecretFetchError> {
    if names.is_empty() {
        return Ok(Delivered::default());
    }
    let mut values = store.reveal(repo, names).await?;
    values.retain(|k, _| names.contains(k));
    let missing = names.iter().filter(|n| !values.contains_key(*n)).cloned().collect();
    Ok(Delivered { values, missing, checkout_token: None })
}

/// Straight from the store, for runners in the same process as it (`kiln run`, `kiln
/// dev`, `runner --poll` with its own role).
pub struct StoreSecrets(pub Arc<dyn SecretStore>);

#[async_trait]
impl SecretSource for StoreSecrets {
    async fn fetch(&self, job: &Job) -> Result<Delivered, SecretFetchError> {
        let mut delivered = match job.secrets_allowed {
            true => reveal(self.0.as_ref(), &job.repo, &job.plan.secret_names()).await?,
            false => refuse(job)?,
        };
        if job.wants_checkout() {
            delivered.checkout_token = checkout_token(self.0.as_ref(), &job.repo).await?;
        }
        Ok(delivered)
    }
}

/// The host token of `repo` (registered with `PUT /v1/repos/{org}/{repo}`), if any.
pub async fn checkout_token(
    store: &dyn SecretStore,
    repo: &Repo,
) -> Result<Option<String>, SecretFetchError> {
    let name = kiln_domain::git::token_name();
    let mut values =
        store.reveal(&kiln_domain::git::credentials_repo(repo), std::slice::from_ref(&name)).await?;
    Ok(values.remove(&name))
}

/// Where no store is configured: a stage that declares nothing runs; one that declares
/// secrets fails with [`SecretFetchError::NoStore`].
pub struct NoSecrets;

#[async_trait]
impl SecretSource for NoSecrets {
    async fn fetch(&self, job: &Job) -> Result<Delivered, SecretFetchError> {
        if job.plan.secret_names().is_empty() {
            Ok(Delivered::default())
        } else {
            Err(SecretFetchError::NoStore)
        }
    }
}

/// Builds that may not see secrets (pull requests from forks, issue 14) get none.
fn refuse(job: &Job) -> Result<Delivered, SecretFetchError> {
    if job.plan.secret_names().is_empty() {
        return Ok(Delivered::default());
    }
    Err(SecretFetchError::Refused(format!("build {} may not use secrets", job.build)))
}
