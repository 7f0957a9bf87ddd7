//! Lambda `notify`: consumes the notify FIFO (one message group per build) and posts the
//! build's commit statuses to its git host. A status the host refused (after the client's
//! own retries) leaves its message for redelivery; nothing here can fail a build.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use kiln_core::notify::Notifier;
use kiln_lambda::Error;
use kiln_lambda::batch::{self, handle};
use kiln_lambda::env::{self, ConfigError};
use kiln_store::Received;
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    kiln_lambda::init_tracing();
    let ports = env::ports().await?;
    let git = ports.git.ok_or(ConfigError::Missing(env::NOTIFY_QUEUE))?;
    // Statuses link to the build's page on the host's commit view: a relative link there
    // would point into the host, so the public URL is required.
    if git.public_url.is_empty() {
        return Err(ConfigError::Missing(env::PUBLIC_URL).into());
    }
    let secrets = ports.secrets.ok_or(ConfigError::Missing("the secret store"))?;
    let notifier =
        Arc::new(Notifier { state: ports.state, repos: git.repos, secrets, public_url: git.public_url });
    tracing::info!(function = "notify", "ready");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let notifier = notifier.clone();
        async move {
            let response = handle(event, batch::NOTIFY, move |msg: Received| {
                let notifier = notifier.clone();
                async move { notifier.handle(&msg.body).await }
            })
            .await;
            Ok::<SqsBatchResponse, Error>(response)
        }
    }))
    .await
}
