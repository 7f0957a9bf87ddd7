//! The secret store contract against SSM Parameter Store on LocalStack (SecureString
//! parameters). Needs LocalStack with `ssm` (`localstack/start.sh` enables it); run with
//! `--include-ignored` where it runs, as `scripts/test.sh` does.

use kiln_store_aws::SsmSecretStore;

async fn store() -> SsmSecretStore {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    SsmSecretStore::new(aws_sdk_ssm::Client::new(&shared), "/kiln-test", None)
}

#[tokio::test]
#[ignore = "needs LocalStack (scripts/test.sh starts it and runs ignored tests)"]
async fn ssm_secrets_round_trip() {
    kiln_store_contract::secrets::secrets_round_trip(&store().await).await;
}

#[tokio::test]
#[ignore = "needs LocalStack (scripts/test.sh starts it and runs ignored tests)"]
async fn ssm_secrets_large_values_and_rewrites() {
    kiln_store_contract::secrets::secrets_large_values_and_rewrites(&store().await).await;
}
