//! Lambda `log-ingest`: API Gateway routes `/v1/builds/{id}/ingest/*` (runners' log batches,
//! completion, heartbeat) here. It serves the same `/v1` router as `api`; its role may write
//! the log bucket and read the table.

#[tokio::main]
async fn main() -> Result<(), kiln_lambda::Error> {
    kiln_lambda::serve_api("log-ingest").await
}
