//! The handlers of the `/v1` routes, one module per resource. Access is checked before
//! they run (by the layer from the route table); they map errors by kind.

pub mod builds;
pub mod events;
pub mod images;
pub mod ingest;
pub mod logs;
pub mod meta;
pub mod repos;
pub mod secrets;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Repo, ids};

/// The build named in the path, or 404.
pub(crate) async fn load(st: &AppState, id: &BuildId) -> ApiResult<Build> {
    st.ports
        .state
        .get_build(id)
        .await
        .map_err(|e| ApiError::unavailable(Some(id), e))?
        .ok_or_else(|| ApiError::NotFound(format!("no build {id}")))
}

/// The repository named in the path, or 400.
pub(crate) fn repo(org: &str, repo: &str) -> ApiResult<Repo> {
    if ids::is_valid_name(org) && ids::is_valid_name(repo) {
        Ok(Repo::new(org, repo))
    } else {
        Err(ApiError::bad_request(format!(
            "invalid repository \"{org}/{repo}\": use letters, digits, \".\", \"_\" and \"-\""
        )))
    }
}
