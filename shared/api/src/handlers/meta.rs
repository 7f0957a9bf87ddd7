//! Health and the OpenAPI document.

use crate::views::{Health, HealthStatus};
use axum::{Extension, Json};
use serde_json::Value;
use std::sync::Arc;

/// The document, built once from the route table when the router is built.
#[derive(Clone)]
pub struct Document(pub Arc<Value>);

pub async fn health() -> Json<Health> {
    Json(Health { status: HealthStatus::Ok })
}

pub async fn openapi(Extension(doc): Extension<Document>) -> Json<Value> {
    Json(doc.0.as_ref().clone())
}
