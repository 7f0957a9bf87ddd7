//! Fault injection for tests: an SDK interceptor that fails a chosen share of the requests
//! of each service (DynamoDB, S3, SQS, SSM), so tests can show that builds still end right
//! when AWS throttles, errs or cannot be reached. Off unless [`FAULTS_VAR`] is set; clients
//! made without it carry no interceptor.
//!
//! `KILN_TEST_FAULTS=dynamodb:0.2:throttle,sqs:0.1:500,s3:0.1:refused` (service, share of
//! requests, kind); `KILN_TEST_FAULTS_SEED` makes the choice repeatable. Kinds:
//! - `throttle`: the service's own throttling error (DynamoDB `ThrottlingException`, SQS
//!   `ThrottlingException`, S3 503 `SlowDown`);
//! - `500`: an internal server error;
//! - `refused`: the request is not sent (connection refused on 127.0.0.1:9), as when the
//!   service cannot be reached or a connection times out.
//!
//! `throttle` and `500` replace the response: the request was carried out and its answer is
//! lost, the harder case (a retry repeats work already done). The SDK retries all three
//! kinds, up to its attempt limit; what is still failing then reaches Kiln's own retries
//! and SQS redelivery.

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::http::StatusCode;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable that turns fault injection on (tests only).
pub const FAULTS_VAR: &str = "KILN_TEST_FAULTS";
/// The seed of the choice of failed requests (default: the clock).
pub const FAULTS_SEED_VAR: &str = "KILN_TEST_FAULTS_SEED";

/// What a failed request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Throttle,
    ServerError,
    Refused,
}

/// One service's faults: a share of its requests (0 to 1) fail with `kind`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub share: f64,
    pub kind: FaultKind,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{FAULTS_VAR}: {0} (expected service:share:kind, e.g. dynamodb:0.2:throttle)")]
pub struct FaultSpecError(String);

/// Faults by service (`dynamodb`, `s3`, `sqs`, `ssm`), and how many were injected.
#[derive(Debug)]
pub struct FaultPlan {
    faults: BTreeMap<String, Fault>,
    state: AtomicU64,
    injected: AtomicU64,
}

impl FaultPlan {
    /// Parses `service:share:kind,...`.
    pub fn parse(spec: &str, seed: u64) -> Result<Arc<Self>, FaultSpecError> {
        let mut faults = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || FaultSpecError(format!("{part:?}"));
            let mut it = part.split(':');
            let (Some(service), Some(share), Some(kind), None) = (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(bad());
            };
            let share: f64 = share.parse().map_err(|_| bad())?;
            if !(0.0..=1.0).contains(&share) {
                return Err(bad());
            }
            let kind = match kind {
                "throttle" => FaultKind::Throttle,
                "500" => FaultKind::ServerError,
                "refused" | "timeout" => FaultKind::Refused,
                _ => return Err(bad()),
            };
            if !matches!(service, "dynamodb" | "s3" | "sqs" | "ssm") {
                return Err(bad());
            }
            faults.insert(service.to_string(), Fault { share, kind });
        }
        // xorshift must not start at 0.
        Ok(Arc::new(Self { faults, state: AtomicU64::new(seed | 1), injected: AtomicU64::new(0) }))
    }

    /// From [`FAULTS_VAR`]; `None` when it is unset or empty (the normal case).
    pub fn from_env() -> Result<Option<Arc<Self>>, FaultSpecError> {
        let Some(spec) = std::env::var(FAULTS_VAR).ok().filter(|s| !s.trim().is_empty()) else {
            return Ok(None);
        };
        let seed = std::env::var(FAULTS_SEED_VAR).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        Self::parse(&spec, seed).map(Some)
    }

    /// Requests failed so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn kind(&self, service: &str) -> Option<FaultKind> {
        self.faults.get(service).map(|f| f.kind)
    }

    /// Whether this request of `service` fails, and how.
    fn pick(&self, service: &str) -> Option<FaultKind> {
        let f = self.faults.get(service)?;
        // xorshift64, shared by every client: a few bits of chance, no dependency.
        let mut x = self.state.load(Ordering::Relaxed);
        loop {
            let mut n = x;
            n ^= n << 13;
            n ^= n >> 7;
            n ^= n << 17;
            match self.state.compare_exchange_weak(x, n, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    x = n;
                    break;
                }
                Err(now) => x = now,
            }
        }
        let roll = (x >> 11) as f64 / (1u64 << 53) as f64;
        (roll < f.share).then(|| {
            self.injected.fetch_add(1, Ordering::Relaxed);
            f.kind
        })
    }
}

/// [`FaultPlan::from_env`], saying on stderr that faults are on, or why the setting was
/// refused (then nothing is injected).
pub(crate) fn from_env_logged() -> Option<Arc<FaultPlan>> {
    match FaultPlan::from_env() {
        Ok(Some(plan)) => {
            tracing::warn!(faults = ?plan.faults, "fault injection is on ({FAULTS_VAR}): for tests only");
            Some(plan)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!("{e}: no faults injected");
            None
        }
    }
}

/// The interceptor; one per client, all sharing one [`FaultPlan`].
#[derive(Debug, Clone)]
pub(crate) struct InjectFaults(pub Arc<FaultPlan>);

fn service(cfg: &ConfigBag) -> Option<String> {
    Some(cfg.load::<Metadata>()?.service().to_ascii_lowercase())
}

/// The error body each protocol uses: DynamoDB and SQS speak JSON, S3 XML.
fn error_response(service: &str, kind: FaultKind) -> (u16, &'static str, String) {
    let (status, code) = match (service, kind) {
        ("s3", FaultKind::Throttle) => (503, "SlowDown"),
        ("s3", _) => (500, "InternalError"),
        (_, FaultKind::Throttle) => (400, "ThrottlingException"),
        _ => (500, "InternalServerError"),
    };
    if service == "s3" {
        let body = format!("<Error><Code>{code}</Code><Message>injected by {FAULTS_VAR}</Message></Error>");
        (status, "application/xml", body)
    } else {
        let prefix = match service {
            "dynamodb" => "com.amazonaws.dynamodb.v20120810",
            "sqs" => "com.amazonaws.sqs",
            _ => "com.amazonaws.ssm",
        };
        let body = format!(r#"{{"__type":"{prefix}#{code}","message":"injected by {FAULTS_VAR}"}}"#);
        (status, "application/x-amz-json-1.0", body)
    }
}

impl Intercept for InjectFaults {
    fn name(&self) -> &'static str {
        "InjectFaults"
    }

    fn modify_before_transmit(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Each service has one kind: `refused` is decided here, the others on the response.
        let Some(service) = service(cfg) else { return Ok(()) };
        if self.0.kind(&service) == Some(FaultKind::Refused) && self.0.pick(&service).is_some() {
            tracing::info!(target: "kiln_faults", service, kind = "refused", "injected fault");
            // The discard port on loopback: nothing listens, the connection is refused.
            ctx.request_mut().set_uri("http://127.0.0.1:9/")?;
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(service) = service(cfg) else { return Ok(()) };
        if matches!(self.0.kind(&service), None | Some(FaultKind::Refused)) {
            return Ok(());
        }
        let Some(kind) = self.0.pick(&service) else { return Ok(()) };
        tracing::info!(target: "kiln_faults", service, ?kind, "injected fault");
        let (status, content_type, body) = error_response(&service, kind);
        let resp = ctx.response_mut();
        *resp.status_mut() = StatusCode::try_from(status)?;
        resp.headers_mut().insert("content-type", content_type);
        resp.headers_mut().remove("content-length");
        if service == "sqs" {
            // SQS (JSON, compatible with its old query protocol) names the error here too.
            let code = if kind == FaultKind::Throttle {
                "ThrottlingException;Sender"
            } else {
                "InternalError;Receiver"
            };
            resp.headers_mut().insert("x-amzn-query-error", code);
        }
        *resp.body_mut() = SdkBody::from(body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let p = FaultPlan::parse("dynamodb:0.25:throttle, sqs:1:500,s3:0:refused", 7).unwrap();
        assert_eq!(p.faults["dynamodb"], Fault { share: 0.25, kind: FaultKind::Throttle });
        assert_eq!(p.faults["sqs"].kind, FaultKind::ServerError);
        for bad in ["dynamodb:2:throttle", "dynamo:0.1:throttle", "s3:0.1", "s3:0.1:teapot", "s3:x:500"] {
            assert!(FaultPlan::parse(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn fails_about_the_share_asked_for() {
        let p = FaultPlan::parse("sqs:0.3:500,s3:1:throttle", 42).unwrap();
        let failed = (0..10_000).filter(|_| p.pick("sqs").is_some()).count();
        assert!((2_700..3_300).contains(&failed), "{failed} of 10,000");
        assert!((0..100).all(|_| p.pick("s3") == Some(FaultKind::Throttle)));
        assert!((0..100).all(|_| p.pick("dynamodb").is_none()));
        assert_eq!(p.injected(), failed as u64 + 100);
    }
}
