//! Lambda `compile`: API Gateway routes `POST /v1/repos/{org}/{repo}/builds` here. It serves the
//! same `/v1` router as `api` (the submit route compiles the pipeline and queues the build);
//! its role may only write the table and send to the events queue.

#[tokio::main]
async fn main() -> Result<(), kiln_lambda::Error> {
    kiln_lambda::serve_api("compile").await
}
