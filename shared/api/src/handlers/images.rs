//! The image catalog: the matrix, one image, and building the missing providers.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::views::{BuildMissingAnswer, BuildMissingRequest, ImageDetailView, ImageList};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kiln_core::images::ImagesError;

pub async fn list_images(State(st): State<AppState>) -> ApiResult<Json<ImageList>> {
    let images = kiln_core::images::list_images(st.ports.state.as_ref())
        .await
        .map_err(|e| ApiError::unavailable(None, e))?;
    Ok(Json(ImageList::new(images)))
}

fn images_error(e: ImagesError) -> ApiError {
    match e {
        ImagesError::NotFound(_) => ApiError::NotFound(e.to_string()),
        ImagesError::UnknownProvider { .. } => ApiError::bad_request(e.to_string()),
        ImagesError::NothingMissing { .. } => ApiError::Conflict(e.to_string()),
        ImagesError::Store(_) | ImagesError::Submit(_) => ApiError::unavailable(None, e),
    }
}

pub async fn get_image(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ImageDetailView>> {
    let detail = kiln_core::images::get_image(st.ports.state.as_ref(), &name).await.map_err(images_error)?;
    Ok(Json(detail.into()))
}

pub async fn build_missing(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<BuildMissingAnswer>)> {
    let req: BuildMissingRequest = if body.iter().all(u8::is_ascii_whitespace) {
        BuildMissingRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("body must be {{\"providers\": [...]}} or empty: {e}"))
        })?
    };
    let b = kiln_core::images::build_missing(
        st.ports.state.as_ref(),
        st.ports.events.as_ref(),
        &name,
        req.providers,
    )
    .await
    .map_err(images_error)?;
    let url = format!("/v1/builds/{}", b.id);
    Ok((
        StatusCode::CREATED,
        Json(BuildMissingAnswer { providers: b.providers.unwrap_or_default(), id: b.id, url }),
    ))
}
