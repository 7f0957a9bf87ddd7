//! Lambda `dispatch`: consumes the dispatch queue; each ready stage becomes a job (with a
//! runner token signed by `KILN_SIGNING_KEY`) on the jobs queue.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use kiln_core::dispatch::handle_dispatch;
use kiln_core::queues::{DispatchRequest, HandleError};
use kiln_lambda::batch::{self, handle};
use kiln_lambda::{Error, env};
use kiln_store::Received;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    kiln_lambda::init_tracing();
    let signer = Some(env::Settings::from_env()?.signer);
    let ports = env::ports().await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let (ports, signer) = (ports.clone(), signer.clone());
        async move {
            let response = handle(event, batch::DISPATCH, move |msg: Received| {
                let (ports, signer) = (ports.clone(), signer.clone());
                async move {
                    let req: DispatchRequest = serde_json::from_str(&msg.body)
                        .map_err(|e| HandleError::Drop(format!("bad dispatch request: {e}")))?;
                    handle_dispatch(ports.state.as_ref(), ports.jobs.as_ref(), signer.as_ref(), &req).await
                }
            })
            .await;
            Ok::<SqsBatchResponse, Error>(response)
        }
    }))
    .await
}
