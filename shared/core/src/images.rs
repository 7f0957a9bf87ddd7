//! The image catalog's operations for clients: the matrix, one image with its history,
//! and "build the missing images" (`GET /v1/images`, `GET /v1/images/{name}`, `POST
//! /v1/images/{name}/builds`). Reads only: the catalog itself is written by the fan-in
//! alone; building the missing images submits a build like any other.

use crate::submit::{SubmitError, submit_plan};
use kiln_domain::catalog::{CatalogImage, ImageHistoryEntry, ImageRecord, build_results, by_image};
use kiln_domain::state::Build;
use kiln_domain::status::ImageStatus;
use kiln_store::{Queue, StateStore, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// No build has reported or queued this image (HTTP 404).
    #[error("image {0} is not in the catalog")]
    NotFound(String),
    /// A provider was named that the image's pipeline does not list (HTTP 400).
    #[error("image {image} has no provider {provider} (its providers: {})", .known.join(", "))]
    UnknownProvider { image: String, provider: String, known: Vec<String> },
    /// Every provider is complete or being built: nothing to start (HTTP 409).
    #[error(
        "image {image}: no provider is missing or failed (complete: {}; in progress: {})",
        list(.complete),
        list(.in_progress)
    )]
    NothingMissing { image: String, complete: Vec<String>, in_progress: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

fn list(v: &[String]) -> String {
    if v.is_empty() { "none".to_string() } else { v.join(", ") }
}

/// One image: its record per provider, and every version of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDetail {
    pub name: String,
    /// Sorted by provider.
    pub providers: Vec<ImageRecord>,
    /// Sorted by build (oldest first), provider, version.
    pub history: Vec<ImageHistoryEntry>,
}

/// The catalog's matrix: images by name, each with its records by provider.
pub async fn list_images(state: &dyn StateStore) -> Result<Vec<CatalogImage>, StoreError> {
    Ok(by_image(state.list_images().await?))
}

/// One image with its history; `NotFound` if the catalog has no record of it.
pub async fn get_image(state: &dyn StateStore, image: &str) -> Result<ImageDetail, ImagesError> {
    let providers = state.get_image(image).await?;
    if providers.is_empty() {
        return Err(ImagesError::NotFound(image.to_string()));
    }
    let history = state.image_history(image).await?;
    Ok(ImageDetail { name: image.to_string(), providers, history })
}

/// Where `build` left each of its images' providers, from the catalog's history (a newer
/// build may have superseded the records since): for a build's summary. Best effort: an
/// image whose history cannot be read is left out (and logged).
pub async fn build_images(state: &dyn StateStore, build: &Build) -> Vec<ImageRecord> {
    let mut out = Vec::new();
    for image in &build.plan.images {
        match state.image_history(&image.name).await {
            Ok(history) => out.extend(build_results(&history, &build.id)),
            Err(e) => {
                tracing::warn!(build = %build.id, image = %image.name, error = %e, "cannot read the image history")
            }
        }
    }
    out
}

/// Starts a build of the pipeline that defines `image` (the plan of the latest build
/// that queued or reported it, in that build's repository) for `providers`, or, when
/// `None` (or empty), for every provider of the image that is missing from the catalog
/// or failed. Steps see the list in `KILN_PROVIDERS`; the build queues only those pairs
/// (and the same providers of the pipeline's other images, if any).
pub async fn build_missing(
    state: &dyn StateStore,
    events: &dyn Queue,
    image: &str,
    providers: Option<Vec<String>>,
) -> Result<Build, ImagesError> {
    let records = state.get_image(image).await?;
    let not_found = || ImagesError::NotFound(image.to_string());
    let latest = records.iter().map(|r| &r.build).max().ok_or_else(not_found)?;
    let defining = state.get_build(latest).await?.ok_or_else(not_found)?;
    let spec = defining.plan.images.iter().find(|i| i.name == image).ok_or_else(not_found)?;
    let record = |p: &str| records.iter().find(|r| r.provider == p);
    let chosen: Vec<String> = match providers.filter(|p| !p.is_empty()) {
        Some(named) => {
            if let Some(bad) = named.iter().find(|p| !spec.providers.contains(p)) {
                return Err(ImagesError::UnknownProvider {
                    image: image.to_string(),
                    provider: bad.clone(),
                    known: spec.providers.clone(),
                });
            }
            spec.providers.iter().filter(|p| named.contains(p)).cloned().collect()
        }
        None => spec
            .providers
            .iter()
            .filter(|p| record(p).is_none_or(|r| r.status == ImageStatus::Failed))
            .cloned()
            .collect(),
    };
    if chosen.is_empty() {
        let with = |f: fn(ImageStatus) -> bool| -> Vec<String> {
            spec.providers.iter().filter(|p| record(p).is_some_and(|r| f(r.status))).cloned().collect()
        };
        return Err(ImagesError::NothingMissing {
            image: image.to_string(),
            complete: with(|s| s == ImageStatus::Complete),
            in_progress: with(|s| !s.is_terminal()),
        });
    }
    tracing::info!(image, providers = %chosen.join(","), from = %defining.id, "building the missing providers");
    let plan = (*defining.plan).clone();
    Ok(submit_plan(state, events, defining.repo.clone(), plan, Some(chosen)).await?)
}
