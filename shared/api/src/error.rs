//! API errors by kind. Each kind has its status; the answer is the JSON
//! [`ErrorBody`]. Backend failures keep their cause as the error's source: it is logged
//! (with the build, when there is one) and never sent to the client, who gets a generic
//! message.

use crate::views::{ErrorBody, ErrorDetail};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_domain::BuildId;

/// What caused a backend failure: a store, queue or sink error.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; `details` lists every problem found.
    #[error("{message}")]
    BadRequest { message: String, details: Vec<ErrorDetail> },
    /// No token, or not a valid one.
    #[error("{0}")]
    Unauthorized(String),
    /// The token may not use this route or build.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state (a build that already ended, different log
    /// bytes at an offset, nothing to build).
    #[error("{0}")]
    Conflict(String),
    /// A service Kiln called on the client's behalf (a git host) failed; says which.
    #[error("{0}")]
    BadGateway(String),
    /// A storage or queue hiccup: worth retrying.
    #[error("backend unavailable")]
    Unavailable {
        build: Option<BuildId>,
        #[source]
        source: Cause,
    },
    /// A bug or a misconfiguration: not worth retrying.
    #[error("internal error")]
    Internal {
        build: Option<BuildId>,
        #[source]
        source: Cause,
    },
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest { message: message.into(), details: Vec::new() }
    }

    /// A backend failure while serving `build` (if any): logged, answered with 503.
    pub fn unavailable(build: Option<&BuildId>, source: impl Into<Cause>) -> Self {
        ApiError::Unavailable { build: build.cloned(), source: source.into() }
    }

    pub fn internal(build: Option<&BuildId>, source: impl Into<Cause>) -> Self {
        ApiError::Internal { build: build.cloned(), source: source.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body the client gets: never the text of a backend error.
    pub fn body(&self) -> ErrorBody {
        let details = match self {
            ApiError::BadRequest { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        let message = match self {
            ApiError::Unavailable { .. } => "backend unavailable: try again".to_string(),
            ApiError::Internal { .. } => "internal error".to_string(),
            other => other.to_string(),
        };
        ErrorBody { message, details }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Unavailable { build, source } => {
                let build = build.as_ref().map(BuildId::as_str).unwrap_or("-");
                tracing::warn!(build, error = %source, "backend unavailable");
            }
            ApiError::Internal { build, source } => {
                let build = build.as_ref().map(BuildId::as_str).unwrap_or("-");
                tracing::error!(build, error = %source, "request failed");
            }
            _ => {}
        }
        (self.status(), axum::Json(self.body())).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_text_stays_on_the_server() {
        let e = ApiError::unavailable(Some(&BuildId::new("b1")), "dynamodb: secret table arn:aws:xyz");
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.body().message.contains("arn:aws"), "{:?}", e.body());
        assert!(std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("arn:aws")));
        let e = ApiError::internal(None, "boom at /var/secret");
        assert!(!e.body().message.contains("secret"));
        assert_eq!(ApiError::Conflict("already ended".into()).body().message, "already ended");
    }
}
