//! Prices the requests counted for the reference build with AWS list prices.

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

/// Assumed billed duration (ms) and memory (MB) of each orchestration function per
/// invocation: Rust on arm64, a handful of DynamoDB/S3/SQS calls at 5-20 ms each.
pub const FUNCTIONS: [(&str, f64, f64); 5] = [
    ("compile", 100.0, 256.0),
    ("event-fanin", 60.0, 256.0),
    ("dispatch", 40.0, 128.0),
    ("log-ingest", 40.0, 128.0),
    ("api (runner events)", 30.0, 128.0),
];

/// The report's `cost` section from the counts of one reference build (`c`), and the
/// runner's busy seconds (its compute is the build's own work, priced apart).
pub fn price(c: &BTreeMap<String, f64>, runner_seconds: f64, runner_mb: f64) -> Value {
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
    let ddb_usd = g("ddb.wru") * DDB_WRU_USD + g("ddb.rru") * DDB_RRU_USD;
    let s3_usd = g("s3.put") * S3_PUT_LIST_USD + g("s3.list") * S3_PUT_LIST_USD + g("s3.get") * S3_GET_USD;
    let sqs_usd = g("sqs.standard") * SQS_STANDARD_USD + g("sqs.fifo") * SQS_FIFO_USD;
    let apigw_usd = api_requests * APIGW_HTTP_USD;
    let total = ddb_usd + s3_usd + sqs_usd + lambda_usd + apigw_usd;
    let runner_gb_s = runner_seconds * runner_mb / 1024.0;
    let runner_usd = g("port.queue.jobs.messages") * LAMBDA_REQUEST_USD + runner_gb_s * LAMBDA_GB_S_ARM_USD;
    let share = |x: f64| if total > 0.0 { (x / total * 1000.0).round() / 10.0 } else { 0.0 };
    json!({
        "reference_build_usd": total,
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
        },
        "breakdown_usd": {
            "dynamodb": ddb_usd, "s3": s3_usd, "sqs": sqs_usd, "lambda_orchestration": lambda_usd,
            "api_gateway": apigw_usd,
        },
        "breakdown_percent": {
            "dynamodb": share(ddb_usd), "s3": share(s3_usd), "sqs": share(sqs_usd),
            "lambda_orchestration": share(lambda_usd), "api_gateway": share(apigw_usd),
        },
        "aws_requests": {
            "dynamodb_query": g("ddb.query"), "dynamodb_getitem": g("ddb.getitem"),
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
