//! What Kiln's Lambda functions (`functions/*`) share, so each `main` stays a few lines:
//! JSON logs ([`init_tracing`]), configuration from the environment ([`env`]), the
//! partial-batch SQS helper ([`batch`]), the HTTP API on `lambda_http` ([`serve_api`]) and
//! the jobs dead-letter watchdog ([`watchdog`]).

pub mod batch;
pub mod env;
pub use kiln_core::watchdog;

pub use lambda_runtime::Error;

use std::str::FromStr;
use tracing_subscriber::filter::LevelFilter;

/// JSON log lines on stdout (CloudWatch keeps them), level from `KILN_LOG` (default
/// `info`). Each line carries the fields of its spans: the handlers open a span with
/// `build` for every message and request, so every line of a build's work names it.
pub fn init_tracing() {
    let level = std::env::var(env::LOG)
        .ok()
        .and_then(|v| LevelFilter::from_str(v.trim()).ok())
        .unwrap_or(LevelFilter::INFO);
    let _ = tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_current_span(true)
        .with_span_list(false)
        .with_ansi(false)
        .without_time() // Lambda stamps every line
        .try_init();
}

/// Serves the `/v1` router on `lambda_http` (API Gateway HTTP API, payload v2). The
/// `compile`, `log-ingest` and `api` functions all run it; API Gateway routes each path to
/// one of them, so each has only the permissions its routes need.
pub async fn serve_api(function: &'static str) -> Result<(), Error> {
    init_tracing();
    let config = env::Settings::from_env()?;
    let ports = env::ports().await?;
    let auth = kiln_api::auth::Auth::new(config.admin_tokens, config.signer);
    let app = kiln_api::router(kiln_api::AppState::new(ports, auth));
    tracing::info!(function, "ready");
    lambda_http::run(app).await
}
