#!/usr/bin/env bash
# A whole build through the real Lambda binaries, on what the SAM template creates:
#   1. infra/template.yaml's stateful resources (table, bucket + policy, queues with their DLQs
#      and redrive) are deployed to LocalStack as a plain CloudFormation stack under a private
#      prefix (functions/bridge.py deploy); the functions get the names read from the stack.
#   2. `cargo lambda watch` serves the seven binaries; functions/bridge.py submits examples/dag.yml
#      and hello.yml to `compile` (HTTP API v2), then plays the event source mappings (events
#      FIFO -> event-fanin, dispatch -> dispatch, jobs -> runner: poll, invoke with the SQS batch,
#      delete all but the batchItemFailures) until each build ends. The runner's KILN_API_URL is a
#      proxy in the bridge that turns its requests into HTTP API v2 events for log-ingest / api.
#   3. Each build must end with the statuses, exit codes and step logs of `kiln run --json`.
#   4. A build from git: a repository registered through `api` on a fake GitHub API (served by
#      the bridge), a signed push webhook to `api`; the build must check out the commit, run
#      its .kiln.yml, and `notify` (notify FIFO) must post `pending` then `success` to the fake.
# The stack (and the table and bucket it retains) is deleted at the end, pass or fail.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/localstack/.venv/bin"
PORT="${KILN_BRIDGE_LAMBDA_PORT:-9019}"
export KILN_PROXY_PORT="${KILN_BRIDGE_PROXY_PORT:-9018}"
export KILN_LAMBDA_URL="http://127.0.0.1:$PORT"
# The functions reach LocalStack through infra/record_requests.py, which notes each function's
# AWS requests; infra/check_deploy.py then checks every role allows what its code called.
AWS_PORT="${KILN_BRIDGE_AWS_PORT:-9017}"
REQUESTS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/deploy/requests.json"
export KILN_PUBLIC_URL="https://kiln.example.com"
PREFIX="kilnbr-$(date +%s)-$$"
# shellcheck disable=SC1091
source "$ROOT/localstack/.state/env"
cd "$ROOT"
cargo build -q -p kiln-cli --bin kiln --locked  # the `kiln run` to compare with

TMP="$(mktemp -d)"
WATCH_PID=""
REC_PID=""
cleanup() {
  if [ -n "$WATCH_PID" ]; then kill "$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; fi
  if [ -n "$REC_PID" ]; then kill "$REC_PID" 2>/dev/null || true; wait "$REC_PID" 2>/dev/null || true; fi
  "$VENV/python" functions/bridge.py destroy "$PREFIX" || true
  rm -rf "$TMP"
}
trap cleanup EXIT

t0=$(date +%s)
"$VENV/python" functions/bridge.py deploy "$PREFIX" "$TMP/names.env"
vars="$(paste -sd, "$TMP/names.env")"
set -a
# shellcheck disable=SC1091
source "$TMP/names.env"
set +a

mkdir -p "$(dirname "$REQUESTS")"
"$VENV/python" infra/record_requests.py "$AWS_PORT" "$AWS_ENDPOINT_URL" "$REQUESTS" &
REC_PID=$!
export SAM_CLI_TELEMETRY=0 KILN_WORKSPACE_ROOT="$TMP/runner"
"$VENV/cargo-lambda" lambda watch --ignore-changes -A 127.0.0.1 -P "$PORT" --concurrency 2 \
  --env-var "$vars" \
  --env-var "KILN_SIGNING_KEY=test-signing-key-0123456789abcdef,KILN_ADMIN_TOKENS=test-admin-token,KILN_LOG=info" \
  --env-var "KILN_API_URL=http://127.0.0.1:$KILN_PROXY_PORT,KILN_WORKSPACE_ROOT=$KILN_WORKSPACE_ROOT" \
  --env-var "KILN_PUBLIC_URL=$KILN_PUBLIC_URL,KILN_SECRETS_PREFIX=/$PREFIX" \
  --env-var "AWS_ENDPOINT_URL=http://127.0.0.1:$AWS_PORT,AWS_REGION=$AWS_REGION" \
  --env-var "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY" \
  >"$TMP/watch.log" 2>&1 &
WATCH_PID=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.2
done

if ! "$VENV/python" functions/bridge.py run examples/dag.yml examples/hello.yml; then
  echo "test_bridge.sh: failed; cargo lambda watch log:" >&2
  tail -40 "$TMP/watch.log" >&2
  exit 1
fi
# Every AWS request a function made is allowed by its role in the template, on that resource;
# and a role narrowed by one action the code called (compile sending build-created) is refused.
"$VENV/python" infra/check_deploy.py infra/template.yaml --requests "$REQUESTS" --prefix "$PREFIX"
sed '/^  CompileFunction:/,/^  [A-Za-z]*Function:/{/Action: \[sqs:SendMessage\]/{n;s/EventsQueue/DispatchQueue/}}' \
  infra/template.yaml >"$TMP/narrowed.yaml"
if cmp -s infra/template.yaml "$TMP/narrowed.yaml"; then
  echo "test_bridge.sh: the narrowed-policy mutation changed nothing (fix the test)" >&2
  exit 1
elif "$VENV/python" infra/check_deploy.py "$TMP/narrowed.yaml" --requests "$REQUESTS" --prefix "$PREFIX" 2>"$TMP/narrowed.err"; then
  echo "test_bridge.sh: check_deploy.py accepted compile without SendMessage on the events queue" >&2
  exit 1
fi
echo "negative test compile-cannot-send-events: refused ($(grep -m1 CompileFunction "$TMP/narrowed.err" | sed 's/^[^:]*: [^:]*: //'))"
echo "test_bridge.sh: ok ($(( $(date +%s) - t0 ))s)"
