//! Configuration from environment variables, each name defined once here or in
//! `kiln_store_aws::AwsConfig` (`infra/check_names.py` checks the SAM template sets them).

use kiln_core::system::{GitPorts, Ports};
use kiln_core::tokens::TokenSigner;
use kiln_store_aws::{AwsConfig, Clients, connect_with};

/// Log level (`error`, `warn`, `info`, `debug`, `trace`).
pub const LOG: &str = "KILN_LOG";
/// Admin bearer tokens for the HTTP API, comma-separated.
pub const ADMIN_TOKENS: &str = "KILN_ADMIN_TOKENS";
/// The key runner tokens are signed with (dispatch signs, the API verifies).
pub const SIGNING_KEY: &str = "KILN_SIGNING_KEY";
/// The API's base URL, for runners (log batches and events go over HTTP).
pub const API_URL: &str = "KILN_API_URL";
/// The jobs dead-letter queue (name or URL), drained by the watchdog.
pub const JOBS_DLQ: &str = "KILN_JOBS_DLQ";
/// Where a runner makes workspaces (default `/tmp/kiln`: Lambda's only writable place).
pub const WORKSPACE: &str = "KILN_WORKSPACE_ROOT";
/// The notify queue (FIFO, name or URL). Set, the function has the git ports
/// ([`Ports::git`]): the API (repositories, webhooks), the fan-in (sends commit-status
/// requests) and `notify` (consumes them).
pub const NOTIFY_QUEUE: &str = kiln_store_aws::NOTIFY_QUEUE_VAR;
/// The public base URL of Kiln: commit statuses link to `{KILN_PUBLIC_URL}/builds/{id}`.
/// Required by `notify` (a relative link means nothing on the host's commit page).
pub const PUBLIC_URL: &str = "KILN_PUBLIC_URL";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{0}")]
    Connect(#[from] kiln_store_aws::ConnectError),
}

/// The settings beyond storage names.
#[derive(Clone)]
pub struct Settings {
    pub admin_tokens: Vec<String>,
    pub signer: TokenSigner,
    pub api_url: Option<String>,
    pub jobs_dlq: Option<String>,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Settings::from_env`], reading variables through `var`. A signing key is
    /// required: functions in different processes must accept each other's tokens.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| var(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let key = get(SIGNING_KEY).ok_or(ConfigError::Missing(SIGNING_KEY))?;
        let admin_tokens = get(ADMIN_TOKENS)
            .map(|v| v.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        Ok(Self {
            admin_tokens,
            signer: TokenSigner::new(key.into_bytes()),
            api_url: get(API_URL),
            jobs_dlq: get(JOBS_DLQ),
        })
    }
}

/// The function's name, set by Lambda (and by `cargo lambda watch`).
pub const FUNCTION_NAME: &str = "AWS_LAMBDA_FUNCTION_NAME";

/// The SDK's app name for the function: every AWS request's user agent then says which
/// function sent it (`app/<name>`: CloudTrail's userAgent; `infra/record_requests.py`
/// attributes requests with it to check each role against what its function really calls).
pub fn app_name(function: Option<&str>) -> Option<aws_config::AppName> {
    aws_config::AppName::new(function?.trim().to_string()).ok()
}

/// The AWS adapters of every port, from `AwsConfig::from_env` and the usual AWS variables.
pub async fn ports() -> Result<Ports, ConfigError> {
    Ok(connect_all().await?.0)
}

/// Like [`ports`], with the SDK clients (for resources beyond the ports, like the DLQ).
pub async fn connect_all() -> Result<(Ports, Clients), ConfigError> {
    let config = AwsConfig::from_env();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(app) = app_name(std::env::var(FUNCTION_NAME).ok().as_deref()) {
        loader = loader.app_name(app);
    }
    let b = connect_with(Clients::from_sdk_config(&loader.load().await), &config).await?;
    // Builds from git when the notify queue is configured (`KILN_NOTIFY_QUEUE`).
    let public_url = std::env::var(PUBLIC_URL).map(|v| v.trim().to_string()).unwrap_or_default();
    let git = b.notify.clone().map(|notify| GitPorts { repos: b.repos.clone(), notify, public_url });
    let ports = Ports {
        state: b.state,
        logs: b.logs,
        events: b.events,
        dispatch: b.dispatch,
        jobs: b.jobs,
        secrets: Some(b.secrets),
        git,
    };
    Ok((ports, b.clients))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_name_is_the_function_name() {
        assert_eq!(app_name(Some("kiln-api")).map(|a| a.to_string()), Some("kiln-api".to_string()));
        assert!(app_name(None).is_none());
        assert!(app_name(Some("no spaces")).is_none());
    }

    #[test]
    fn settings_need_a_signing_key_and_split_tokens() {
        assert!(matches!(Settings::from_lookup(|_| None), Err(ConfigError::Missing(SIGNING_KEY))));
        let s = Settings::from_lookup(|k| match k {
            SIGNING_KEY => Some("k".into()),
            ADMIN_TOKENS => Some(" a, ,b ".into()),
            API_URL => Some(" ".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.admin_tokens, ["a", "b"]);
        assert_eq!(s.api_url, None);
    }
}
