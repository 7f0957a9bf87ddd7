//! Repository secrets as the API shows them: names and times for people, values only in
//! the runner's answer (a route only a runner token of the build may call).

use kiln_store::SecretInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `GET /v1/repos/{org}/{repo}/secrets`: never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Secret)]
pub struct SecretView {
    pub name: String,
    /// When it was last set (ms since the epoch).
    pub updated_ms: u64,
}

impl From<Vec<SecretInfo>> for SecretList {
    fn from(infos: Vec<SecretInfo>) -> Self {
        let secrets = infos
            .into_iter()
            .map(|i| SecretView { name: i.name.to_string(), updated_ms: i.updated_ms })
            .collect();
        Self { secrets }
    }
}

/// `GET /v1/builds/{id}/secrets?stage=`: for the stage's runner only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunnerSecrets {
    /// The values of the declared secrets that are set, by name.
    pub values: BTreeMap<String, String>,
    /// Declared names that are not set in the repository.
    pub missing: Vec<String>,
    /// For a stage of a git build that checks its commit out: the host token to download
    /// it with (the runner's, never a step's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_token: Option<String>,
}

/// Never prints a value.
impl std::fmt::Debug for RunnerSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerSecrets")
            .field("values", &self.values.keys().collect::<Vec<_>>())
            .field("missing", &self.missing)
            .field("checkout_token", &self.checkout_token.as_ref().map(|_| "***"))
            .finish()
    }
}
