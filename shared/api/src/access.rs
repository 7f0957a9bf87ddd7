//! The layer that enforces a route's [`Access`] from the table: it finds the caller
//! (401 without a valid token), checks the access kind (403), and hands the [`Caller`]
//! to the handler as a request extension. Handlers never check tokens themselves.

use crate::AppState;
use crate::auth::{Auth, Caller};
use crate::error::ApiError;
use crate::route::Access;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use kiln_domain::BuildId;
use kiln_domain::git::hook::MAX_HOOK_BYTES;
use std::collections::HashMap;

/// `method_router` behind the check for `access`.
pub fn guard(
    access: Access,
    state: &AppState,
    method_router: MethodRouter<AppState>,
) -> MethodRouter<AppState> {
    match access {
        Access::Open => method_router,
        Access::Signed => method_router.layer(DefaultBodyLimit::max(MAX_HOOK_BYTES)),
        Access::Admin => method_router.layer(middleware::from_fn_with_state(state.clone(), admin)),
        Access::BuildWriter => {
            method_router.layer(middleware::from_fn_with_state(state.clone(), build_writer))
        }
        Access::BuildRunner => {
            method_router.layer(middleware::from_fn_with_state(state.clone(), build_runner))
        }
    }
}

async fn admin(State(st): State<AppState>, req: Request, next: Next) -> Response {
    check(&st, Access::Admin, None, req, next).await
}

async fn build_writer(
    State(st): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    for_build(&st, Access::BuildWriter, &params, req, next).await
}

async fn build_runner(
    State(st): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    for_build(&st, Access::BuildRunner, &params, req, next).await
}

async fn for_build(
    st: &AppState,
    access: Access,
    params: &HashMap<String, String>,
    req: Request,
    next: Next,
) -> Response {
    let Some(id) = params.get("id") else {
        let e = ApiError::internal(None, "a build route without {id} in its path");
        return e.into_response();
    };
    let build = BuildId::new(id);
    check(st, access, Some(&build), req, next).await
}

async fn check(
    st: &AppState,
    access: Access,
    build: Option<&BuildId>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = match st.auth.caller(req.headers()).and_then(|c| Auth::allow(&c, access, build).map(|_| c)) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert::<Caller>(caller);
    next.run(req).await
}
