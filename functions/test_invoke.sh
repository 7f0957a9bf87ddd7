#!/usr/bin/env bash
# Invokes the function binaries through the Lambda runtime API emulator (`cargo lambda watch`
# from localstack/.venv) with real payloads, against LocalStack (already started by
# scripts/test.sh, or by localstack/start.sh):
#   api:         an API Gateway HTTP API (v2) request for GET /healthz      -> 200
#   compile:     POST /v1/repos/acme/app/builds with a pipeline (v2)         -> 201 and a build id
#   event-fanin: an SQS batch: the build-created event compile queued, and a malformed message
#                -> no batchItemFailures (the bad one is dropped), the build starts, a stage is
#                   sent to the dispatch queue
#   dispatch:    an SQS batch with that ready stage -> a job on the jobs queue
#   event-fanin: a scheduled (EventBridge) event -> the watchdog answers
#   notify:      an SQS batch off the notify FIFO: a request for that (not git) build and a
#                malformed message -> no batchItemFailures (nothing to post; the bad one dropped)
# Resources are made under their own prefix (kilnfn-*), so other tests' resources are untouched.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/localstack/.venv/bin"
DATA="$ROOT/functions/testdata"
PORT="${KILN_LAMBDA_PORT:-9009}"
PREFIX=kilnfn
# shellcheck disable=SC1091
source "$ROOT/localstack/.state/env"

# Fresh resources for this run (seed.py's functions; its resources.json is not touched).
"$VENV/python" - "$PREFIX" <<'PY'
import os, sys, boto3
sys.path.insert(0, "localstack")
import seed
prefix = sys.argv[1]
kw = dict(endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
ddb, s3, sqs = (boto3.client(s, **kw) for s in ("dynamodb", "s3", "sqs"))
seed.delete_table(ddb, f"{prefix}-state"); seed.ensure_table(ddb, f"{prefix}-state")
seed.delete_bucket(s3, f"{prefix}-logs"); seed.ensure_bucket(s3, f"{prefix}-logs")
for _, name, attrs, _, _ in seed.queue_specs(prefix):
    seed.delete_queue(sqs, name)
    sqs.create_queue(QueueName=name, Attributes=attrs)
PY

TMP="$(mktemp -d)"
WATCH_PID=""
cleanup() { if [ -n "$WATCH_PID" ]; then kill "$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; fi; rm -rf "$TMP"; }
trap cleanup EXIT

cd "$ROOT"
export SAM_CLI_TELEMETRY=0
"$VENV/cargo-lambda" lambda watch --ignore-changes -A 127.0.0.1 -P "$PORT" \
  --env-var "KILN_TABLE=$PREFIX-state,KILN_BUCKET=$PREFIX-logs,KILN_JOBS_QUEUE=$PREFIX-jobs" \
  --env-var "KILN_DISPATCH_QUEUE=$PREFIX-dispatch,KILN_EVENTS_QUEUE=$PREFIX-events.fifo,KILN_JOBS_DLQ=$PREFIX-jobs-dlq" \
  --env-var "KILN_SIGNING_KEY=test-signing-key-0123456789abcdef,KILN_ADMIN_TOKENS=test-admin-token,KILN_LOG=info" \
  --env-var "KILN_API_URL=http://127.0.0.1:1,AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL,AWS_REGION=$AWS_REGION" \
  --env-var "KILN_NOTIFY_QUEUE=$PREFIX-notify.fifo,KILN_PUBLIC_URL=https://kiln.example.com,KILN_SECRETS_PREFIX=/$PREFIX" \
  --env-var "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY" \
  >"$TMP/watch.log" 2>&1 &
WATCH_PID=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.2
done

fail() { echo "test_invoke.sh: $*" >&2; echo "--- cargo lambda watch log:" >&2; tail -40 "$TMP/watch.log" >&2; exit 1; }
invoke() { # FUNCTION FILE -> the response on stdout
  "$VENV/cargo-lambda" lambda invoke -A 127.0.0.1 -P "$PORT" "$1" --data-file "$2" --output-format json \
    || fail "invoke $1 failed"
}
json() { "$VENV/python" -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d, 'json': json}))" "$1"; }
# An SQS batch (what the event source mapping delivers) from messages received off QUEUE,
# plus the bodies given as extra arguments.
sqs_batch() { # QUEUE [EXTRA_BODY...]
  "$VENV/python" - "$@" <<'PY'
import json, os, sys, boto3
kw = dict(endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
sqs = boto3.client("sqs", **kw)
url = sqs.get_queue_url(QueueName=sys.argv[1])["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5, AttributeNames=["All"]).get("Messages", [])
records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1"} for m in msgs]
for i, body in enumerate(sys.argv[2:]):
    records.append({"messageId": f"extra-{i}", "receiptHandle": f"extra-{i}", "body": body, "attributes": {},
                    "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": arn,
                    "awsRegion": "us-east-1"})
print(json.dumps({"Records": records}))
PY
}

t0=$(date +%s%N)
out="$(invoke api "$DATA/healthz.json")"
[ "$(echo "$out" | json 'd["statusCode"]')" = 200 ] || fail "GET /healthz: $out"
echo "api: GET /healthz -> 200 ($(( ($(date +%s%N) - t0) / 1000000 )) ms, first invocation)"

# The submit request: the pipeline as the body of an HTTP API v2 event.
"$VENV/python" - "$DATA/healthz.json" "$ROOT/examples/hello.yml" >"$TMP/submit.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
path = "/v1/repos/acme/app/builds"
e["routeKey"] = e["requestContext"]["routeKey"] = f"POST {path}"
e["rawPath"] = e["requestContext"]["http"]["path"] = path
e["requestContext"]["http"]["method"] = "POST"
e["pathParameters"] = {"org": "acme", "repo": "app"}
e["headers"].update({"authorization": "Bearer test-admin-token", "content-type": "application/yaml"})
e["body"] = open(sys.argv[2]).read()
print(json.dumps(e))
PY
out="$(invoke compile "$TMP/submit.json")"
[ "$(echo "$out" | json 'd["statusCode"]')" = 201 ] || fail "submit: $out"
build="$(echo "$out" | json 'json.loads(d["body"])["id"]')"
echo "compile: POST /v1/repos/acme/app/builds -> 201, build $build"

sqs_batch "$PREFIX-events.fifo" 'not a cloud event' >"$TMP/events.json"
[ "$(json 'len(d["Records"])' <"$TMP/events.json")" -ge 2 ] || fail "no build-created event on the events queue"
out="$(invoke event-fanin "$TMP/events.json")"
[ "$(echo "$out" | json 'len(d["batchItemFailures"])')" = 0 ] || fail "event-fanin: $out"
echo "event-fanin: SQS batch of $(json 'len(d["Records"])' <"$TMP/events.json") (one malformed, dropped) -> no batchItemFailures"

sqs_batch "$PREFIX-dispatch" >"$TMP/dispatch.json"
[ "$(json 'len(d["Records"])' <"$TMP/dispatch.json")" -ge 1 ] || fail "event-fanin sent nothing to the dispatch queue"
out="$(invoke dispatch "$TMP/dispatch.json")"
[ "$(echo "$out" | json 'len(d["batchItemFailures"])')" = 0 ] || fail "dispatch: $out"
sqs_batch "$PREFIX-jobs" >"$TMP/jobs.json"
[ "$(json 'd["Records"][0]["body"]' <"$TMP/jobs.json" | json 'd["build"]')" = "$build" ] || fail "no job for $build on the jobs queue"
echo "dispatch: SQS batch -> a job for $build on the jobs queue"

echo '{"version":"0","id":"e1","detail-type":"Scheduled Event","source":"aws.events","account":"000000000000","time":"2026-11-22T05:00:00Z","region":"us-east-1","resources":[],"detail":{}}' >"$TMP/schedule.json"
out="$(invoke event-fanin "$TMP/schedule.json")"
[ "$(echo "$out" | json 'd["reported"]')" = 0 ] || fail "watchdog: $out"
echo "event-fanin: scheduled event -> watchdog reported 0 dead jobs"

# What the fan-in sends for a git build: a request grouped by build, deduplicated by event.
"$VENV/python" - "$PREFIX-notify.fifo" "$build" <<'PY'
import json, os, sys, boto3
kw = dict(endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
sqs = boto3.client("sqs", **kw)
url = sqs.get_queue_url(QueueName=sys.argv[1])["QueueUrl"]
for body, dedup in [(json.dumps({"build": sys.argv[2]}), "notify-e1"), ("not a notify request", "notify-e2")]:
    sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=sys.argv[2], MessageDeduplicationId=dedup)
PY
sqs_batch "$PREFIX-notify.fifo" >"$TMP/notify.json"
[ "$(json 'len(d["Records"])' <"$TMP/notify.json")" = 2 ] || fail "the notify requests are not on the notify queue"
out="$(invoke notify "$TMP/notify.json")"
[ "$(echo "$out" | json 'len(d["batchItemFailures"])')" = 0 ] || fail "notify: $out"
grep -q '"message dropped"' "$TMP/watch.log" && grep -q 'not a notify request' "$TMP/watch.log" \
  || fail "notify did not drop the malformed request"
echo "notify: SQS batch of 2 (a build not from git: nothing to post; one malformed, dropped) -> no batchItemFailures"

# Every log line of the functions is JSON; the message lines carry the build id.
grep -q "\"build\":\"$build\"" "$TMP/watch.log" || fail "no JSON log line carries the build id"
echo "test_invoke.sh: ok"
