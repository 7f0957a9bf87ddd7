//! Builds as the API shows them: a build with its stages and steps, a repository's list,
//! and the answers to submit and cancel.

use super::images::ImageRecordView;
use super::schema;
use kiln_domain::BuildId;
use kiln_domain::Status;
use kiln_domain::state::Build;
use kiln_store::BuildSummary;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn span(start: Option<u64>, end: Option<u64>) -> Option<u64> {
    Some(end?.saturating_sub(start?))
}

/// A build with its stages and steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Build)]
pub struct BuildView {
    #[schema(value_type = String)]
    pub id: BuildId,
    /// `org/repo`.
    pub repo: String,
    #[schema(schema_with = schema::status)]
    pub status: Status,
    /// Why it ended as it did (failed, canceled, ...).
    pub reason: Option<String>,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub stages: Vec<StageView>,
    pub images: Vec<BuildImageView>,
    /// The git event the build is of (builds started by webhooks).
    pub git: Option<super::GitView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Stage)]
pub struct StageView {
    pub name: String,
    #[schema(schema_with = schema::status)]
    pub status: Status,
    pub attempt: u32,
    pub reason: Option<String>,
    pub duration_ms: Option<u64>,
    /// The stages this one waits for (its template's `needs`, for an instance `name#n`).
    #[serde(default)]
    pub needs: Vec<String>,
    pub steps: Vec<StepView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Step)]
pub struct StepView {
    pub name: String,
    pub number: u32,
    #[schema(schema_with = schema::status)]
    pub status: Status,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    pub reason: Option<String>,
}

/// An image the build's pipeline declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = BuildImage)]
pub struct BuildImageView {
    pub name: String,
    pub providers: Vec<String>,
    /// The build's catalog record per provider: added by the CLI (`kiln run`, `kiln
    /// status` on the data dir); the API leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<ImageRecordView>>,
}

impl BuildView {
    /// Whether the build and all its stages have ended: nothing more will happen.
    pub fn has_ended(&self) -> bool {
        kiln_domain::state::is_settled(self.status, self.stages.iter().map(|s| s.status))
    }

    /// Adds to each image its `results`: the build's catalog records for it.
    pub fn attach_images(&mut self, records: impl IntoIterator<Item = ImageRecordView>) {
        let records: Vec<ImageRecordView> = records.into_iter().collect();
        for image in &mut self.images {
            image.results = Some(records.iter().filter(|r| r.image == image.name).cloned().collect());
        }
    }
}

impl From<&Build> for BuildView {
    fn from(b: &Build) -> Self {
        BuildView {
            id: b.id.clone(),
            repo: b.repo.to_string(),
            status: b.status,
            reason: b.reason.clone(),
            created_ms: b.created_ms,
            started_ms: b.started_ms,
            finished_ms: b.finished_ms,
            duration_ms: span(b.started_ms, b.finished_ms),
            git: b.git.as_ref().map(super::GitView::from),
            stages: b
                .stages
                .iter()
                .map(|s| StageView {
                    name: s.name.to_string(),
                    status: s.status,
                    attempt: s.attempt,
                    reason: s.reason.clone(),
                    duration_ms: span(s.started_ms, s.finished_ms),
                    needs: b
                        .plan
                        .stage(s.name.template())
                        .map(|p| p.needs.iter().map(|n| n.to_string()).collect())
                        .unwrap_or_default(),
                    steps: s
                        .steps
                        .iter()
                        .map(|t| StepView {
                            name: t.name.to_string(),
                            number: t.number,
                            status: t.status,
                            exit_code: t.exit_code,
                            duration_ms: t.duration_ms,
                            reason: t.reason.clone(),
                        })
                        .collect(),
                })
                .collect(),
            images: b
                .plan
                .images
                .iter()
                .map(|i| BuildImageView {
                    name: i.name.clone(),
                    providers: i.providers.clone(),
                    results: None,
                })
                .collect(),
        }
    }
}

/// One build of a repository's list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = BuildSummary)]
pub struct BuildSummaryView {
    #[schema(value_type = String)]
    pub id: BuildId,
    pub repo: String,
    #[schema(schema_with = schema::status)]
    pub status: Status,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
}

impl From<&BuildSummary> for BuildSummaryView {
    fn from(b: &BuildSummary) -> Self {
        BuildSummaryView {
            id: b.id.clone(),
            repo: b.repo.to_string(),
            status: b.status,
            created_ms: b.created_ms,
            finished_ms: b.finished_ms,
        }
    }
}

/// A repository's builds, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BuildList {
    pub builds: Vec<BuildSummaryView>,
}

/// The answer to a submitted pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    #[schema(value_type = String)]
    pub id: BuildId,
    #[schema(schema_with = schema::status)]
    pub status: Status,
    /// The build's path, e.g. `/v1/builds/ID`.
    pub url: String,
}

/// The answer to a cancel request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CancelAnswer {
    #[schema(value_type = String)]
    pub id: BuildId,
    pub cancel: CancelState,
}

/// Cancel is asynchronous: it is requested, and the build ends soon after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CancelState {
    Requested,
}
