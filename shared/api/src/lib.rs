//! Kiln's HTTP API: the `/v1` routes, defined once in [`routes::ROUTES`] (which builds
//! both the axum router and the OpenAPI document), their bodies as types ([`views`]),
//! and the HTTP client the CLI and remote runners use. The same router serves `kiln dev`
//! and, on AWS, the api function.
//!
//! Layers, each depending only on those above it: `views`, `error`, `route` (what a route
//! is), `auth` and `access` (who may call), `openapi` (a document from any table),
//! `handlers` (one module per resource), `routes` (the table and the router), `ui` (the
//! web pages, served beside `/v1` but not part of it).

pub mod access;
pub mod auth;
pub mod client;
pub mod error;
pub mod events;
pub mod handlers;
pub mod openapi;
pub mod route;
pub mod routes;
pub mod ui;
pub mod views;

pub use routes::router;

use auth::Auth;
use kiln_core::ingest::Ingest;
use kiln_core::system::Ports;
use std::sync::Arc;

/// The largest request body accepted (a pipeline is at most 1 MiB; log batches 256 KiB).
pub const MAX_BODY_BYTES: usize = kiln_domain::compile::MAX_PIPELINE_BYTES;
/// The longest a log read may wait for new bytes: under API Gateway's 30 s limit.
pub const MAX_WAIT_SECS: u64 = 25;

/// What every handler can reach: the ports, the token rules, log ingest.
#[derive(Clone)]
pub struct AppState {
    pub ports: Ports,
    pub auth: Arc<Auth>,
    pub ingest: Ingest,
}

impl AppState {
    pub fn new(ports: Ports, auth: Auth) -> Self {
        let ingest = Ingest { logs: ports.logs.clone(), state: ports.state.clone() };
        Self { ports, auth: Arc::new(auth), ingest }
    }
}
