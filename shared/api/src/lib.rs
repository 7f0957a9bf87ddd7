//! Kiln's HTTP API: the `/v1` routes, defined once in [`routes::ROUTES`] (which builds
//! both the axum router and the OpenAPI document), and the HTTP client the CLI and remote
//! runners use. The same router serves `kiln dev` and, on AWS, the api function.

pub mod auth;
pub mod client;
pub mod error;
pub mod events;
pub mod openapi;
pub mod routes;
pub mod views;

pub use routes::{AppState, router};

/// The largest request body accepted (a pipeline is at most 1 MiB; log batches 256 KiB).
pub const MAX_BODY_BYTES: usize = kiln_domain::compile::MAX_PIPELINE_BYTES;
/// The longest a log read may wait for new bytes: under API Gateway's 30 s limit.
pub const MAX_WAIT_SECS: u64 = 25;
