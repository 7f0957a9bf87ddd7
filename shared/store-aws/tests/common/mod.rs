//! The LocalStack set-up the AWS adapters' test binaries share.

use aws_sdk_s3::config::{Credentials, Region};
use std::collections::HashMap;

/// `localstack/.state/env` (written by `localstack/start.sh`): `export K=V` lines.
pub fn env_file() -> HashMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../localstack/.state/env");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
        .collect()
}

/// The SDK configuration for LocalStack: the environment first, then the env file.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let file = env_file();
    let var = |k: &str, default: &str| {
        std::env::var(k).ok().or_else(|| file.get(k).cloned()).unwrap_or_else(|| default.to_string())
    };
    let creds = Credentials::new(
        var("AWS_ACCESS_KEY_ID", "test"),
        var("AWS_SECRET_ACCESS_KEY", "test"),
        None,
        None,
        "kiln-tests",
    );
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(var("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"))
        .region(Region::new(var("AWS_REGION", "us-east-1")))
        .credentials_provider(creds)
        .load()
        .await
}
