//! The compiled plan: what the compiler produces from a valid pipeline, and what builds,
//! dispatch and runners work from. Serialised into job messages, so it is plain data.

use crate::ids::{StageName, StepName};
use crate::secret::SecretName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default timeout of a stage (the whole job) when the pipeline gives none.
pub const DEFAULT_STAGE_TIMEOUT_MS: u64 = 60 * 60 * 1000;
/// The longest a `runs-on: lambda` stage may ask for: Lambda's 15-minute ceiling.
pub const LAMBDA_MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// Default build-level timeout: a build never waits forever.
pub const DEFAULT_BUILD_TIMEOUT_MS: u64 = 2 * 60 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {
    pub version: String,
    /// Environment for every step and service of the build.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Stages in a topological order of `needs` (ties keep the order of the file).
    pub stages: Vec<StagePlan>,
    #[serde(default)]
    pub images: Vec<ImageSpec>,
    /// Build-level timeout in milliseconds.
    pub timeout_ms: u64,
    /// Which git events build the pipeline (its top-level `on:`); `None`: pushes to any
    /// branch, and pull requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<crate::git::GitTriggers>,
    /// A newer build of the same branch or pull request cancels the running older ones.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancel_superseded: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunsOn {
    #[default]
    Lambda,
    Container,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePlan {
    pub name: StageName,
    #[serde(default)]
    pub needs: Vec<StageName>,
    #[serde(default)]
    pub runs_on: RunsOn,
    pub timeout_ms: u64,
    /// Stage-level environment, over the pipeline's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub steps: Vec<StepPlan>,
    #[serde(default)]
    pub services: Vec<ServicePlan>,
    /// Event triggers (`on:`). A stage with triggers is started by events, not by `needs`.
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// In a build of a git commit, whether the runner checks the commit out into the
    /// workspace before the first step (`checkout: false` skips it).
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub checkout: bool,
}

impl StagePlan {
    pub fn is_event_triggered(&self) -> bool {
        self.triggers.iter().any(|t| t.policy == TriggerPolicy::Create)
    }

    /// Every secret a step or service of this stage declares, sorted, each once: what the
    /// stage's runner fetches, and never more.
    pub fn secret_names(&self) -> Vec<SecretName> {
        let all =
            self.steps.iter().flat_map(|s| &s.secrets).chain(self.services.iter().flat_map(|s| &s.secrets));
        let set: std::collections::BTreeSet<&SecretName> = all.collect();
        set.into_iter().cloned().collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepPlan {
    pub name: StepName,
    /// 1-based, unique across the build, in plan order: logs list steps by this number.
    pub number: u32,
    pub commands: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
    /// The repository secrets this step receives as environment variables: the pipeline's,
    /// its stage's and its own `secrets:`, sorted, each once. Names only, never values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretName>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicePlan {
    pub name: StepName,
    /// 1-based, unique across the build's services.
    pub number: u32,
    pub commands: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The secrets this service receives: the pipeline's, its stage's and its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerPolicy {
    /// Every match starts a new instance of the stage.
    #[default]
    Create,
    /// A match stops the running instances of the stage.
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// CloudEvent types; several means fan-in: one instance once all have arrived.
    pub events: Vec<String>,
    /// Fields of the event's data that must equal these values.
    #[serde(default, rename = "where")]
    pub where_: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub policy: TriggerPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub name: String,
    pub providers: Vec<String>,
    /// The stage that builds it; without it any stage may report it.
    #[serde(default)]
    pub built_by: Option<StageName>,
}

impl Plan {
    pub fn stage(&self, name: &str) -> Option<&StagePlan> {
        self.stages.iter().find(|s| s.name.as_str() == name)
    }
}
