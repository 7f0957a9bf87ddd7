//! Prices the requests counted for the reference build with AWS list prices: the requests
//! the AWS SDK clients really sent (`price_real`, on LocalStack or AWS), or the hand model
//! of the counting decorators (`price`, the only figure on the local backend and a
//! cross-check on AWS); and the floor, the log batches alone.

use serde_json::{Value, json};
use std::collections::BTreeMap;

/// us-east-1 list prices, as published on the AWS pricing pages in 2025 (not fetched at
/// run time; the date the bench assumes is `PRICES_AS_OF`).
pub const PRICES_AS_OF: &str = "2025-11 (AWS public price pages, us-east-1; assumed unchanged at run date)";
pub const DDB_WRU_USD: f64 = 0.625 / 1e6; // on-demand write request unit
pub const DDB_RRU_USD: f64 = 0.125 / 1e6; // on-demand read request unit
pub const S3_PUT_LIST_USD: f64 = 0.005 / 1e3; // PUT, COPY, POST, LIST (S3 Standard)
pub const S3_GET_USD: f64 = 0.0004 / 1e3; // GET and others; DELETE is free
pub const SQS_STANDARD_USD: f64 = 0.40 / 1e6; // per request (64 KB chunk)
pub const SQS_FIFO_USD: f64 = 0.50 / 1e6;
pub const LAMBDA_REQUEST_USD: f64 = 0.20 / 1e6;
pub const LAMBDA_GB_S_ARM_USD: f64 = 0.000_013_333_4; // arm64, first 7.5 B GB-s tier
pub const APIGW_HTTP_USD: f64 = 1.00 / 1e6; // HTTP API, first 300 M requests/month
// S3 Express One Zone (directory buckets), after the 2025-04-10 price cut: requests only;
// the per-GB upload/retrieval charge applies to the part of a request over 512 KB, which
// 1-second log batches never reach.
pub const S3X_PUT_USD: f64 = 0.001_13 / 1e3; // PUT (incl. append with a write offset), COPY, POST, LIST
pub const S3X_GET_USD: f64 = 0.000_03 / 1e3; // GET and others

/// Assumed billed duration (ms) and memory (MB) of each orchestration function per
/// invocation: Rust on arm64, a handful of DynamoDB/S3/SQS calls at 5-20 ms each.
pub const FUNCTIONS: [(&str, f64, f64); 5] = [
    ("compile", 100.0, 256.0),
    ("event-fanin", 60.0, 256.0),
    ("dispatch", 40.0, 128.0),
    ("log-ingest", 40.0, 128.0),
    ("api (runner events)", 30.0, 128.0),
];

/// The orchestration functions' invocations from the decorators' counts (`c`): each
/// entry, their cost, and the API Gateway requests (the submit, and every runner call).
fn functions(c: &BTreeMap<String, f64>) -> (Vec<Value>, f64, f64) {
    let g = |k: &str| c.get(k).copied().unwrap_or(0.0);
    let invocations = [
        ("compile", 1.0),
        ("event-fanin", g("port.queue.events.messages")),
        ("dispatch", g("port.queue.dispatch.messages")),
        ("log-ingest", g("sink.put") + g("sink.append_init") + g("sink.complete") + g("sink.heartbeat")),
        ("api (runner events)", g("sink.emit")),
    ];
    let mut lambda = Vec::new();
    let mut lambda_usd = 0.0;
    for ((name, n), (_, ms, mb)) in invocations.iter().zip(FUNCTIONS) {
        let gb_s = n * ms / 1000.0 * mb / 1024.0;
        let usd = n * LAMBDA_REQUEST_USD + gb_s * LAMBDA_GB_S_ARM_USD;
        lambda_usd += usd;
        lambda.push(json!({"function": name, "invocations": n, "assumed_ms": ms, "memory_mb": mb, "gb_s": gb_s, "usd": usd}));
    }
    let api_requests = 1.0 + invocations[3].1 + invocations[4].1;
    (lambda, lambda_usd, api_requests)
}

/// The floor: the log batches that carried bytes (`sink.batches_with_bytes`), one S3 PUT
/// each, nothing else; at S3 Standard and S3 Express One Zone prices.
pub fn floor(c: &BTreeMap<String, f64>) -> (f64, f64, f64) {
    let batches = c.get("sink.batches_with_bytes").copied().unwrap_or(0.0);
    (batches, batches * S3_PUT_LIST_USD, batches * S3X_PUT_USD)
}

/// The reference build's cost by service: the total, and the `breakdown_usd` and
/// `breakdown_percent` sections of the report.
fn breakdown(ddb: f64, s3: f64, sqs: f64, lambda: f64, apigw: f64) -> (f64, Value, Value) {
    let total = ddb + s3 + sqs + lambda + apigw;
    let share = |x: f64| if total > 0.0 { (x / total * 1000.0).round() / 10.0 } else { 0.0 };
    let usd = json!({
        "dynamodb": ddb, "s3": s3, "sqs": sqs, "lambda_orchestration": lambda, "api_gateway": apigw,
    });
    let percent = json!({
        "dynamodb": share(ddb), "s3": share(s3), "sqs": share(sqs),
        "lambda_orchestration": share(lambda), "api_gateway": share(apigw),
    });
    (total, usd, percent)
}

/// The runner's own compute (its requests and GB-seconds): the build's work, priced apart.
/// Its GB-seconds and dollars.
fn runner_usd(c: &BTreeMap<String, f64>, runner_seconds: f64, runner_mb: f64) -> (f64, f64) {
    let jobs = c.get("port.queue.jobs.messages").copied().unwrap_or(0.0);
    let gb_s = runner_seconds * runner_mb / 1024.0;
    (gb_s, jobs * LAMBDA_REQUEST_USD + gb_s * LAMBDA_GB_S_ARM_USD)
}

fn ratio(x: f64, floor: f64) -> Value {
    if floor > 0.0 { json!(x / floor) } else { Value::Null }
}

/// The report's `cost` section from the hand model's counts of one reference build (`c`),
/// and the runner's busy seconds (its compute is the build's own work, priced apart).
pub fn price(c: &BTreeMap<String, f64>, runner_seconds: f64, runner_mb: f64) -> Value {
    let g = |k: &str| c.get(k).copied().unwrap_or(0.0);
    let (lambda, lambda_usd, api_requests) = functions(c);
    let ddb_usd = g("ddb.wru") * DDB_WRU_USD + g("ddb.rru") * DDB_RRU_USD;
    let s3_usd = g("s3.put") * S3_PUT_LIST_USD + g("s3.list") * S3_PUT_LIST_USD + g("s3.get") * S3_GET_USD;
    let sqs_usd = g("sqs.standard") * SQS_STANDARD_USD + g("sqs.fifo") * SQS_FIFO_USD;
    let apigw_usd = api_requests * APIGW_HTTP_USD;
    let (total, by_service, percent) = breakdown(ddb_usd, s3_usd, sqs_usd, lambda_usd, apigw_usd);
    let (runner_gb_s, runner_usd) = runner_usd(c, runner_seconds, runner_mb);
    let (batches, floor_usd, floor_x_usd) = floor(c);
    // The same requests with S3 at Express One Zone prices.
    let s3x_usd = (g("s3.put") + g("s3.list")) * S3X_PUT_USD + g("s3.get") * S3X_GET_USD;
    let total_x = total - s3_usd + s3x_usd;
    json!({
        "reference_build_usd": total,
        "counted_from": "model",
        "floor_usd": floor_usd,
        "ratio_to_floor": ratio(total, floor_usd),
        "log_batches_with_bytes": batches,
        "s3_express_one_zone": {
            "reference_build_usd": total_x, "floor_usd": floor_x_usd, "ratio_to_floor": ratio(total_x, floor_x_usd),
        },
        "region": "us-east-1",
        "prices_as_of": PRICES_AS_OF,
        "unit_prices_usd": {
            "dynamodb_write_request_unit": DDB_WRU_USD,
            "dynamodb_read_request_unit": DDB_RRU_USD,
            "s3_put_copy_post_list_request": S3_PUT_LIST_USD,
            "s3_get_request": S3_GET_USD,
            "sqs_standard_request": SQS_STANDARD_USD,
            "sqs_fifo_request": SQS_FIFO_USD,
            "lambda_request": LAMBDA_REQUEST_USD,
            "lambda_gb_second_arm64": LAMBDA_GB_S_ARM_USD,
            "apigw_http_api_request": APIGW_HTTP_USD,
            "s3_express_one_zone_put_append_copy_post_list_request": S3X_PUT_USD,
            "s3_express_one_zone_get_request": S3X_GET_USD,
        },
        "breakdown_usd": by_service,
        "breakdown_percent": percent,
        "aws_requests": {
            "dynamodb_query": g("ddb.query"), "dynamodb_getitem": g("ddb.getitem"), "dynamodb_batchgetitem": g("ddb.batchget"),
            "dynamodb_updateitem": g("ddb.updateitem"), "dynamodb_transactwriteitems": g("ddb.transact"),
            "dynamodb_wru": g("ddb.wru"), "dynamodb_rru": g("ddb.rru"),
            "s3_put": g("s3.put"), "s3_list": g("s3.list"), "s3_get": g("s3.get"),
            "s3_delete_objects_free": g("s3.delete_objects"),
            "sqs_standard": g("sqs.standard"), "sqs_fifo": g("sqs.fifo"),
            "api_gateway_http": api_requests,
        },
        "lambda": lambda,
        "runner_compute_not_in_total": {
            "seconds": runner_seconds, "memory_mb": runner_mb, "gb_s": runner_gb_s, "usd": runner_usd,
            "note": "the runner Lambda running the steps themselves: the build's own work, not orchestration",
        },
        "port_calls": c.iter().filter(|(k, _)| k.starts_with("port.") || k.starts_with("sink.")).map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "not_counted": [
            "idle long polls of SQS pollers (a fixed cost per queue, not per build)",
            "S3 storage and CloudWatch Logs",
            "the client's own status polling while it waits for the build",
            "free tiers",
        ],
    })
}

/// What the SDK clients really sent during one reference build (from
/// `kiln_store_aws::RequestCounts`, kept apart so this file builds without the AWS SDK).
#[cfg(feature = "aws")]
#[derive(Debug, Default)]
pub struct Real {
    /// By `service.Operation`, every request sent (idle polls included).
    pub requests: BTreeMap<String, u64>,
    pub empty_receives: u64,
    pub empty_receives_fifo: u64,
    pub sqs_fifo: u64,
    /// DynamoDB capacity units as the responses reported them, by operation: (read, write).
    pub capacity: BTreeMap<String, (f64, f64)>,
}

/// How S3 bills an operation: the PUT/COPY/POST/LIST tier, the GET tier, or free.
#[cfg(feature = "aws")]
fn s3_class(op: &str) -> &'static str {
    match op {
        "PutObject"
        | "CopyObject"
        | "PostObject"
        | "ListObjectsV2"
        | "ListObjects"
        | "ListObjectVersions"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "ListMultipartUploads"
        | "ListParts" => "put",
        "DeleteObject" | "DeleteObjects" | "AbortMultipartUpload" => "free",
        _ => "get",
    }
}

/// The report's `cost` section from the real requests (`r`) of one reference build, with
/// the runner's HTTP calls and the functions' invocations from the decorators' counts
/// (`c`), and the hand model's price of the same build (`model`) as a cross-check.
#[cfg(feature = "aws")]
pub fn price_real(
    r: &Real,
    c: &BTreeMap<String, f64>,
    model: Value,
    runner_seconds: f64,
    runner_mb: f64,
) -> Value {
    let (lambda, lambda_usd, api_requests) = functions(c);
    let read_units: f64 = r.capacity.values().map(|c| c.0).sum();
    let write_units: f64 = r.capacity.values().map(|c| c.1).sum();
    let ddb_usd = read_units * DDB_RRU_USD + write_units * DDB_WRU_USD;
    let (mut s3_put, mut s3_get, mut s3_free) = (0u64, 0u64, 0u64);
    let (mut sqs_all, mut other) = (0u64, BTreeMap::new());
    for (k, n) in &r.requests {
        match k.split_once('.') {
            Some(("s3", op)) => match s3_class(op) {
                "put" => s3_put += n,
                "free" => s3_free += n,
                _ => s3_get += n,
            },
            Some(("sqs", _)) => sqs_all += n,
            Some(("dynamodb", _)) => {}
            _ => {
                other.insert(k.clone(), *n);
            }
        }
    }
    let s3_usd = s3_put as f64 * S3_PUT_LIST_USD + s3_get as f64 * S3_GET_USD;
    let s3x_usd = s3_put as f64 * S3X_PUT_USD + s3_get as f64 * S3X_GET_USD;
    // Idle long polls (no message) are the pollers' fixed cost, not the build's: apart.
    let sqs_fifo = r.sqs_fifo.saturating_sub(r.empty_receives_fifo);
    let empty_standard = r.empty_receives.saturating_sub(r.empty_receives_fifo);
    let sqs_standard = sqs_all.saturating_sub(r.sqs_fifo).saturating_sub(empty_standard);
    let sqs_usd = sqs_standard as f64 * SQS_STANDARD_USD + sqs_fifo as f64 * SQS_FIFO_USD;
    let apigw_usd = api_requests * APIGW_HTTP_USD;
    let (total, by_service, percent) = breakdown(ddb_usd, s3_usd, sqs_usd, lambda_usd, apigw_usd);
    let total_x = total - s3_usd + s3x_usd;
    let (batches, floor_usd, floor_x_usd) = floor(c);
    let (runner_gb_s, runner_usd) = runner_usd(c, runner_seconds, runner_mb);
    let model_usd = model["reference_build_usd"].as_f64();
    json!({
        "reference_build_usd": total,
        "counted_from": "aws_sdk_requests",
        "model_usd": model_usd,
        "floor_usd": floor_usd,
        "ratio_to_floor": ratio(total, floor_usd),
        "log_batches_with_bytes": batches,
        "s3_express_one_zone": {
            "reference_build_usd": total_x, "floor_usd": floor_x_usd, "ratio_to_floor": ratio(total_x, floor_x_usd),
            "note": "the same counted requests with S3 priced at S3 Express One Zone rates (append mode \
                     writes each batch with one PutObject at a write offset); LocalStack has no directory \
                     buckets, so append mode's own request pattern is not measured",
        },
        "region": "us-east-1",
        "prices_as_of": PRICES_AS_OF,
        "unit_prices_usd": model["unit_prices_usd"].clone(),
        "breakdown_usd": by_service,
        "breakdown_percent": percent,
        "aws_requests": r.requests,
        "aws_request_classes": {
            "s3_put_copy_post_list": s3_put, "s3_get_and_other": s3_get, "s3_free_deletes": s3_free,
            "sqs_standard_billed": sqs_standard, "sqs_fifo_billed": sqs_fifo,
            "sqs_idle_receives_not_in_total": r.empty_receives,
            "api_gateway_http": api_requests,
            "not_priced": other,
        },
        "dynamodb_capacity_units": {
            "read": read_units, "write": write_units,
            "by_operation": r.capacity.iter().map(|(k, (rd, w))| (k.clone(), json!({"read": rd, "write": w}))).collect::<serde_json::Map<_, _>>(),
        },
        "lambda": lambda,
        "runner_compute_not_in_total": {
            "seconds": runner_seconds, "memory_mb": runner_mb, "gb_s": runner_gb_s, "usd": runner_usd,
            "note": "the runner Lambda running the steps themselves: the build's own work, not orchestration",
        },
        "port_calls": model["port_calls"].clone(),
        "model": {
            "reference_build_usd": model_usd,
            "aws_requests": model["aws_requests"].clone(),
            "breakdown_usd": model["breakdown_usd"].clone(),
        },
        "not_counted": [
            "idle long polls of SQS pollers (counted, reported as sqs_idle_receives_not_in_total)",
            "capacity of DynamoDB requests that failed (a condition not met): the request is counted, its capacity is not reported",
            "S3 storage and CloudWatch Logs",
            "the client's own status polling while it waits for the build",
            "free tiers",
        ],
    })
}
