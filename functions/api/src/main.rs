//! Lambda `api`: every other `/v1` route (reads, cancel, events, images) and `/healthz`,
//! behind API Gateway (HTTP API, payload v2).

#[tokio::main]
async fn main() -> Result<(), kiln_lambda::Error> {
    kiln_lambda::serve_api("api").await
}
