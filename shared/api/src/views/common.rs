//! Bodies every route shares: the error answer, health, and the ingest answer.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error answer: what went wrong, and the details when there are several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub message: String,
    pub details: Vec<ErrorDetail>,
}

/// One detail of an error: a pipeline error with its position, or one problem found in
/// a request (e.g. one of an event's invalid attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ErrorDetail {
    /// Where in the pipeline (1-based) and what.
    Position {
        line: usize,
        column: usize,
        message: String,
    },
    Problem(String),
}

impl std::fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorDetail::Position { line, column, message } => write!(f, "{line}:{column}: {message}"),
            ErrorDetail::Problem(p) => f.write_str(p),
        }
    }
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: HealthStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

/// What log ingest answers a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct IngestAnswer {
    /// The build was canceled, or this stage was ended: stop running steps.
    pub canceled: bool,
}
