//! Kiln's storage ports on AWS, with the official SDK crates: the state store on DynamoDB
//! ([`DynamoStateStore`], one table, which [`DynamoRepoStore`] shares), the log store on S3 ([`S3LogStore`], chunk objects
//! keyed by byte offset, compacted when a stream ends) and the queues on SQS
//! ([`SqsQueue`]). They pass the same contract suite as the local adapters
//! (`kiln-store-contract`), run against LocalStack in `tests/localstack_contract.rs`.
//!
//! Configured the usual way: `AWS_ENDPOINT_URL`, `AWS_REGION`, the credentials chain; the
//! resource names from [`AwsConfig::from_env`]. [`connect`] builds everything at once.

mod counting;
mod dynamo;
pub mod faults;
mod s3logs;
mod sqs;
mod ssm;

pub use counting::{Capacity, RequestCounter, RequestCounts};
pub use dynamo::{DynamoRepoStore, DynamoStateStore, MAX_ITEM_BYTES, largest_item_bytes};
pub use s3logs::S3LogStore;
pub use sqs::SqsQueue;
pub use ssm::SsmSecretStore;

use aws_config::BehaviorVersion;
use kiln_domain::retry::Backoff;
use kiln_store::{LogStore, Queue, RepoStore, SecretStore, StateStore};
use std::sync::Arc;

/// Where Kiln's resources are. Queue fields take a queue URL or a queue name (a name is
/// resolved with GetQueueUrl by [`connect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// DynamoDB table (`KILN_TABLE`, default `kiln-state`).
    pub table: String,
    /// S3 bucket for logs (`KILN_BUCKET`, default `kiln-logs`).
    pub bucket: String,
    /// The jobs queue (`KILN_JOBS_QUEUE`, default `kiln-jobs`).
    pub jobs_queue_url: String,
    /// The dispatch queue (`KILN_DISPATCH_QUEUE`, default `kiln-dispatch`).
    pub dispatch_queue_url: String,
    /// The events queue, FIFO (`KILN_EVENTS_QUEUE`, default `kiln-events.fifo`).
    pub events_queue_url: String,
    /// Logs on an S3 Express One Zone directory bucket, appended in place with PutObject's
    /// write offset (`KILN_S3_EXPRESS_APPEND=1`). Not testable on LocalStack.
    pub s3_express_append: bool,
    /// The SSM path repository secrets live under (`KILN_SECRETS_PREFIX`, default `/kiln`):
    /// `<prefix>/<org>/<repo>/<NAME>`.
    pub secrets_prefix: String,
    /// The KMS key SecureString secrets are encrypted with (`KILN_SECRETS_KMS_KEY`, an id,
    /// ARN or alias); unset: SSM's AWS managed key (`alias/aws/ssm`).
    pub secrets_kms_key: Option<String>,
    /// The commit-status queue, FIFO (`KILN_NOTIFY_QUEUE`); unset: builds from git are not
    /// served (no repository store, no webhooks).
    pub notify_queue_url: Option<String>,
    /// Days builds (and claims) are kept in the table before DynamoDB's TTL removes them
    /// (`KILN_RETENTION_DAYS`, default 90; see `kiln_domain::retention`).
    pub retention_days: u64,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            table: "kiln-state".to_string(),
            bucket: "kiln-logs".to_string(),
            jobs_queue_url: "kiln-jobs".to_string(),
            dispatch_queue_url: "kiln-dispatch".to_string(),
            events_queue_url: "kiln-events.fifo".to_string(),
            s3_express_append: false,
            secrets_prefix: "/kiln".to_string(),
            secrets_kms_key: None,
            notify_queue_url: None,
            retention_days: kiln_domain::retention::DEFAULT_RETENTION_DAYS,
        }
    }
}

impl AwsConfig {
    /// The defaults, overridden by `KILN_TABLE`, `KILN_BUCKET`, `KILN_JOBS_QUEUE`,
    /// `KILN_DISPATCH_QUEUE`, `KILN_EVENTS_QUEUE`, `KILN_S3_EXPRESS_APPEND`,
    /// `KILN_SECRETS_PREFIX` and `KILN_SECRETS_KMS_KEY`.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`AwsConfig::from_env`], reading variables through `var`.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let d = Self::default();
        let get = |k: &str, default: String| var(k).filter(|v| !v.trim().is_empty()).unwrap_or(default);
        Self {
            table: get("KILN_TABLE", d.table),
            bucket: get("KILN_BUCKET", d.bucket),
            jobs_queue_url: get("KILN_JOBS_QUEUE", d.jobs_queue_url),
            dispatch_queue_url: get("KILN_DISPATCH_QUEUE", d.dispatch_queue_url),
            events_queue_url: get("KILN_EVENTS_QUEUE", d.events_queue_url),
            s3_express_append: var("KILN_S3_EXPRESS_APPEND")
                .is_some_and(|v| matches!(v.trim(), "1" | "true")),
            secrets_prefix: get("KILN_SECRETS_PREFIX", d.secrets_prefix),
            secrets_kms_key: var("KILN_SECRETS_KMS_KEY")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            retention_days: kiln_domain::retention::retention_days(var("KILN_RETENTION_DAYS").as_deref()),
            notify_queue_url: var(NOTIFY_QUEUE_VAR).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()),
        }
    }
}

/// The variable that names the commit-status queue ([`AwsConfig::notify_queue_url`]).
pub const NOTIFY_QUEUE_VAR: &str = "KILN_NOTIFY_QUEUE";

/// The SDK clients, from one shared configuration.
#[derive(Debug, Clone)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ssm: aws_sdk_ssm::Client,
}

impl Clients {
    /// Loads the configuration the usual way (`aws_config::defaults`: `AWS_ENDPOINT_URL`,
    /// `AWS_REGION`, the credentials chain). S3 uses path-style addressing when an endpoint
    /// URL is set (LocalStack and other emulators need it).
    pub async fn from_env() -> Self {
        let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::from_sdk_config(&shared)
    }

    /// Like [`Clients::from_env`], counting every request in `counter`
    /// ([`Clients::from_sdk_config_counted`]).
    pub async fn from_env_counted(counter: Arc<RequestCounter>) -> Self {
        let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::from_sdk_config_counted(&shared, counter)
    }

    pub fn from_sdk_config(shared: &aws_config::SdkConfig) -> Self {
        Self::build(shared, None)
    }

    /// Like [`Clients::from_sdk_config`], with every request the clients send counted in
    /// `counter` (by service and operation; DynamoDB requests also ask for and record their
    /// consumed capacity). For measuring (the cost benchmark); production clients have no
    /// interceptor.
    pub fn from_sdk_config_counted(shared: &aws_config::SdkConfig, counter: Arc<RequestCounter>) -> Self {
        Self::build(shared, Some(counting::CountRequests(counter)))
    }

    fn build(shared: &aws_config::SdkConfig, count: Option<counting::CountRequests>) -> Self {
        let mut s3 =
            aws_sdk_s3::config::Builder::from(shared).force_path_style(shared.endpoint_url().is_some());
        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(shared);
        let mut sqs = aws_sdk_sqs::config::Builder::from(shared);
        let mut ssm = aws_sdk_ssm::config::Builder::from(shared);
        if let Some(c) = count {
            s3 = s3.interceptor(c.clone());
            dynamodb = dynamodb.interceptor(c.clone());
            sqs = sqs.interceptor(c.clone());
            ssm = ssm.interceptor(c);
        }
        // Tests only: fails a share of requests when KILN_TEST_FAULTS is set (see faults.rs).
        if let Some(f) = faults::from_env_logged() {
            let f = faults::InjectFaults(f);
            (s3, dynamodb, sqs, ssm) = (
                s3.interceptor(f.clone()),
                dynamodb.interceptor(f.clone()),
                sqs.interceptor(f.clone()),
                ssm.interceptor(f),
            );
        }
        Self {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
            ssm: aws_sdk_ssm::Client::from_conf(ssm.build()),
        }
    }
}

/// Everything `kiln dev --backend aws` (and the Lambda functions) need, built by
/// [`connect`].
#[derive(Clone)]
pub struct AwsBackend {
    pub state: Arc<dyn StateStore>,
    pub logs: Arc<dyn LogStore>,
    pub jobs: Arc<dyn Queue>,
    pub dispatch: Arc<dyn Queue>,
    pub events: Arc<dyn Queue>,
    /// SSM SecureString parameters under `secrets_prefix`.
    pub secrets: Arc<dyn SecretStore>,
    /// Repositories' git settings and claims (the state table).
    pub repos: Arc<dyn RepoStore>,
    /// The commit-status queue, when `notify_queue_url` is set.
    pub notify: Option<Arc<dyn Queue>>,
    pub clients: Clients,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("queue {name}: {message}")]
    Queue { name: String, message: String },
}

/// Connects to the resources `config` names, with clients configured from the
/// environment. Queue names are resolved to URLs here (one GetQueueUrl each).
pub async fn connect(config: &AwsConfig) -> Result<AwsBackend, ConnectError> {
    connect_with(Clients::from_env().await, config).await
}

/// Like [`connect`], with clients made elsewhere.
pub async fn connect_with(clients: Clients, config: &AwsConfig) -> Result<AwsBackend, ConnectError> {
    let queue = |name: &str| SqsQueue::connect(clients.sqs.clone(), name.to_string());
    let (jobs, dispatch, events) = tokio::join!(
        queue(&config.jobs_queue_url),
        queue(&config.dispatch_queue_url),
        queue(&config.events_queue_url)
    );
    let state = DynamoStateStore::new(clients.dynamodb.clone(), config.table.clone())
        .with_retention(config.retention_days);
    let logs = S3LogStore::new(clients.s3.clone(), config.bucket.clone())
        .with_express_append(config.s3_express_append);
    let secrets = SsmSecretStore::new(
        clients.ssm.clone(),
        config.secrets_prefix.clone(),
        config.secrets_kms_key.clone(),
    );
    let notify = match &config.notify_queue_url {
        Some(name) => Some(Arc::new(queue(name).await?) as Arc<dyn Queue>),
        None => None,
    };
    Ok(AwsBackend {
        repos: Arc::new(
            DynamoRepoStore::new(clients.dynamodb.clone(), config.table.clone())
                .with_retention(config.retention_days),
        ),
        notify,
        secrets: Arc::new(secrets),
        state: Arc::new(state),
        logs: Arc::new(logs),
        jobs: Arc::new(jobs?),
        dispatch: Arc::new(dispatch?),
        events: Arc::new(events?),
        clients,
    })
}

/// The error's code (`ConditionalCheckFailedException`, `PreconditionFailed`, ...) and a
/// one-line description, for any SDK error.
pub(crate) fn describe<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
    }
}

/// Runs `try_once` until it returns `Some`: `None` means it lost a race to another writer
/// (a conditional write failed), so it is tried again from a fresh read after a pause of
/// the one retry policy for contended writes, [`Backoff::CONTENDED`] (jittered, so writers
/// that collided do not collide again in step). `retrying` is told before each pause;
/// `gave_up` words the error once the tries run out.
pub(crate) async fn retry_races<T, E, Fut>(
    mut try_once: impl FnMut() -> Fut,
    retrying: impl Fn(u32),
    gave_up: impl FnOnce(u32) -> String,
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<Option<T>, E>>,
    E: From<RacesLost>,
{
    let policy = Backoff::CONTENDED;
    let mut tries = 0;
    loop {
        if let Some(done) = try_once().await? {
            return Ok(done);
        }
        tries += 1;
        if !policy.again(tries) {
            return Err(RacesLost(gave_up(tries)).into());
        }
        retrying(tries);
        tokio::time::sleep(policy.delay(tries - 1)).await;
    }
}

/// A write that kept losing races until the retry policy gave up.
#[derive(Debug)]
pub(crate) struct RacesLost(pub String);

impl From<RacesLost> for kiln_store::StoreError {
    fn from(e: RacesLost) -> Self {
        Self::Backend(e.0)
    }
}

impl From<RacesLost> for kiln_store::LogError {
    fn from(e: RacesLost) -> Self {
        Self::Backend(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_env_and_defaults() {
        let c = AwsConfig::from_lookup(|_| None);
        assert_eq!(c, AwsConfig::default());
        assert_eq!(c.events_queue_url, "kiln-events.fifo");
        let c = AwsConfig::from_lookup(|k| match k {
            "KILN_TABLE" => Some("t".into()),
            "KILN_JOBS_QUEUE" => Some("http://127.0.0.1:4566/000000000000/j".into()),
            "KILN_BUCKET" => Some(" ".into()),
            "KILN_S3_EXPRESS_APPEND" => Some("1".into()),
            "KILN_SECRETS_PREFIX" => Some("/acme/kiln".into()),
            "KILN_SECRETS_KMS_KEY" => Some(" alias/kiln ".into()),
            "KILN_NOTIFY_QUEUE" => Some(" kiln-notify.fifo ".into()),
            "KILN_RETENTION_DAYS" => Some("30".into()),
            _ => None,
        });
        // Builds from git only with a notify queue; a blank one is none.
        assert_eq!(c.notify_queue_url.as_deref(), Some("kiln-notify.fifo"));
        assert_eq!(AwsConfig::default().notify_queue_url, None);
        assert_eq!((c.retention_days, AwsConfig::default().retention_days), (30, 90));
        let blank = AwsConfig::from_lookup(|k| (k == NOTIFY_QUEUE_VAR).then(|| " ".into()));
        assert_eq!(blank.notify_queue_url, None);
        assert_eq!(c.secrets_prefix, "/acme/kiln");
        assert_eq!(c.secrets_kms_key.as_deref(), Some("alias/kiln"));
        assert_eq!(AwsConfig::default().secrets_prefix, "/kiln");
        assert_eq!(c.table, "t");
        assert_eq!(c.bucket, "kiln-logs");
        assert_eq!(c.jobs_queue_url, "http://127.0.0.1:4566/000000000000/j");
        assert!(c.s3_express_append);
    }
}
