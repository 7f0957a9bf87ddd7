//! Who is calling: an admin (a configured token, compared in constant time) or a runner
//! (a signed token scoped to one build). Every route but `/healthz` needs one of them.

use crate::error::ApiError;
use axum::http::{HeaderMap, StatusCode, header};
use kiln_core::tokens::{TokenSigner, constant_time_eq};
use kiln_domain::BuildId;
use kiln_domain::event::now_ms;

pub struct Auth {
    admin_tokens: Vec<String>,
    pub signer: TokenSigner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Runner(BuildId),
}

impl Auth {
    pub fn new(admin_tokens: Vec<String>, signer: TokenSigner) -> Self {
        Self { admin_tokens: admin_tokens.into_iter().filter(|t| !t.is_empty()).collect(), signer }
    }

    /// 401 without a valid token.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("missing bearer token (Authorization: Bearer TOKEN)"))?;
        if TokenSigner::is_runner_token(token) {
            return self
                .signer
                .verify(token, now_ms())
                .map(Caller::Runner)
                .map_err(|e| unauthorized(&e.to_string()));
        }
        // Compare against every token, so timing does not tell which one nearly matched.
        let ok = self
            .admin_tokens
            .iter()
            .fold(false, |ok, t| ok | constant_time_eq(t.as_bytes(), token.as_bytes()));
        if ok { Ok(Caller::Admin) } else { Err(unauthorized("invalid token")) }
    }

    /// Admin routes: 403 for runner tokens.
    pub fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.caller(headers)? {
            Caller::Admin => Ok(()),
            Caller::Runner(_) => Err(forbidden("a runner token cannot use this route")),
        }
    }

    /// Writes for one build: admins, or that build's runner (403 for another build's).
    pub fn writer_for(&self, headers: &HeaderMap, build: &BuildId) -> Result<Caller, ApiError> {
        match self.caller(headers)? {
            Caller::Admin => Ok(Caller::Admin),
            Caller::Runner(b) if &b == build => Ok(Caller::Runner(b)),
            Caller::Runner(b) => Err(forbidden(&format!("this runner token is for build {b}, not {build}"))),
        }
    }
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, msg)
}

fn forbidden(msg: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, msg)
}
