//! Who is calling: an admin (a configured token, compared in constant time) or a runner
//! (a signed token scoped to one build). Every route but `/healthz` needs one of them;
//! [`Auth::allow`] is the one rule for which caller may use which [`Access`].

use crate::error::ApiError;
use crate::route::Access;
use axum::http::{HeaderMap, header};
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

    /// Whether `caller` may use a route with `access` (for the build in its path, if
    /// any): 403 otherwise.
    pub fn allow(caller: &Caller, access: Access, build: Option<&BuildId>) -> Result<(), ApiError> {
        match (access, caller) {
            (Access::BuildRunner, Caller::Admin) => {
                Err(forbidden("only the build's runner may use this route, not an admin token"))
            }
            (Access::Open | Access::Signed, _) | (_, Caller::Admin) => Ok(()),
            (Access::Admin, Caller::Runner(_)) => Err(forbidden("a runner token cannot use this route")),
            (Access::BuildWriter | Access::BuildRunner, Caller::Runner(b)) => match build {
                Some(build) if build == b => Ok(()),
                Some(build) => Err(forbidden(&format!("this runner token is for build {b}, not {build}"))),
                None => Err(forbidden("a runner token needs a build in the path")),
            },
        }
    }
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::Unauthorized(msg.to_string())
}

fn forbidden(msg: &str) -> ApiError {
    ApiError::Forbidden(msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_tokens_reach_only_their_build_and_only_writer_routes() {
        let (a, b) = (BuildId::new("a"), BuildId::new("b"));
        let runner = Caller::Runner(a.clone());
        assert!(Auth::allow(&runner, Access::BuildWriter, Some(&a)).is_ok());
        assert!(matches!(Auth::allow(&runner, Access::BuildWriter, Some(&b)), Err(ApiError::Forbidden(_))));
        assert!(matches!(Auth::allow(&runner, Access::Admin, Some(&a)), Err(ApiError::Forbidden(_))));
        assert!(Auth::allow(&Caller::Admin, Access::Admin, None).is_ok());
        assert!(Auth::allow(&Caller::Admin, Access::BuildWriter, Some(&b)).is_ok());
        // Runner-only routes: that build's runner, nobody else (no admin either).
        assert!(Auth::allow(&runner, Access::BuildRunner, Some(&a)).is_ok());
        assert!(matches!(Auth::allow(&runner, Access::BuildRunner, Some(&b)), Err(ApiError::Forbidden(_))));
        assert!(matches!(Auth::allow(&runner, Access::BuildRunner, None), Err(ApiError::Forbidden(_))));
        assert!(matches!(
            Auth::allow(&Caller::Admin, Access::BuildRunner, Some(&a)),
            Err(ApiError::Forbidden(_))
        ));
    }
}
