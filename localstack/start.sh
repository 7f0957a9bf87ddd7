#!/usr/bin/env bash
# Starts LocalStack (no Docker) in the background for Kiln's tests, or reuses the one already
# running from this checkout; waits until S3, SQS and DynamoDB answer; writes .state/env.
#   KILN_LOCALSTACK_PORT  gateway port on 127.0.0.1 (default 4566)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$HERE/.state"
PY="$HERE/.venv/bin/python"
PORT="${KILN_LOCALSTACK_PORT:-4566}"
ENDPOINT="http://127.0.0.1:$PORT"
PIDFILE="$STATE/localstack.pid"
PORTFILE="$STATE/localstack.port"
LOG="$STATE/localstack.log"
TIMEOUT=60

die() { echo "start.sh: $*" >&2; exit 1; }
[[ "$PORT" =~ ^[0-9]+$ ]] || die "KILN_LOCALSTACK_PORT must be a number, got '$PORT'"

# Instant when already installed.
"$HERE/install.sh"

# The pid in our pid file, if that process is alive and is our LocalStack (not a recycled pid).
running_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] || return 1
  grep -q ' Z ' <(cut -d')' -f2 "/proc/$pid/stat" 2>/dev/null) && return 1   # zombie: dead
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'localstack.runtime.main' || return 1
  echo "$pid"
}

port_in_use() {
  "$PY" -c 'import socket, sys
s = socket.socket(); s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)' "$PORT"
}

STARTED=0
if PID="$(running_pid)"; then
  OLD_PORT="$(cat "$PORTFILE" 2>/dev/null || echo '?')"
  [ "$OLD_PORT" = "$PORT" ] || die "LocalStack (pid $PID) already runs on port $OLD_PORT; run stop.sh first"
  echo "localstack: reusing running pid $PID"
  T0="$(date +%s.%N)"
else
  rm -f "$PIDFILE" "$PORTFILE"
  if port_in_use; then die "port $PORT is taken by another process (set KILN_LOCALSTACK_PORT)"; fi
  mkdir -p "$STATE"
  if [ -f "$LOG" ]; then mv -f "$LOG" "$LOG.prev"; fi
  T0="$(date +%s.%N)"
  # Host mode (OVERRIDE_IN_DOCKER=0: this machine may itself be a container) with every file under
  # .state (CONFIG_DIR and XDG_CACHE_HOME too: plux caches entry points in ~/.cache otherwise);
  # path-style queue URLs (the default host names do not resolve offline); no event telemetry,
  # no certificate download, no DNS server. setsid: own session and process group, so stop.sh
  # can kill the whole group and the terminal's signals do not reach it.
  env OVERRIDE_IN_DOCKER=0 \
    FILESYSTEM_ROOT="$STATE" \
    CONFIG_DIR="$STATE/config" \
    XDG_CACHE_HOME="$STATE/cache" \
    GATEWAY_LISTEN="127.0.0.1:$PORT" \
    LOCALSTACK_HOST="127.0.0.1:$PORT" \
    SQS_ENDPOINT_STRATEGY=path \
    SERVICES=s3,sqs,dynamodb,cloudformation,iam,sts,ssm,kms \
    DISABLE_EVENTS=1 \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    DNS_ADDRESS=0 \
    setsid "$PY" -m localstack.runtime.main >"$LOG" 2>&1 </dev/null &
  PID=$!
  echo "$PID" >"$PIDFILE"
  echo "$PORT" >"$PORTFILE"
  STARTED=1
  echo "localstack: started pid $PID on port $PORT (log: $LOG)"
fi

# Wait for health, then make one DynamoDB call: the first one starts the JVM (seconds), so tests
# do not pay for it. Exit codes: 2 health timeout, 3 process died, 4 DynamoDB timeout.
set +e
"$PY" - "$ENDPOINT" "$PID" "$T0" "$TIMEOUT" <<'PY'
import json, os, sys, time, urllib.request

endpoint, pid, t0, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
WANTED = ("s3", "sqs", "dynamodb")

def alive():
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

deadline = time.time() + timeout
last = None
while True:
    if not alive():
        print("localstack: the process exited", file=sys.stderr); sys.exit(3)
    try:
        with urllib.request.urlopen(endpoint + "/_localstack/health", timeout=2) as r:
            services = json.load(r).get("services", {})
        last = {s: services.get(s) for s in WANTED}
        if all(v in ("available", "running") for v in last.values()):
            break
    except Exception as e:  # not listening yet
        last = repr(e)
    if time.time() > deadline:
        print(f"localstack: not healthy after {timeout:.0f} s (last: {last})", file=sys.stderr); sys.exit(2)
    time.sleep(0.2)
t1 = time.time()
print(f"localstack: healthy after {t1 - t0:.1f} s")

import boto3
from botocore.config import Config

ddb = boto3.client(
    "dynamodb", endpoint_url=endpoint, region_name="us-east-1",
    aws_access_key_id="test", aws_secret_access_key="test",
    config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30),
)
deadline = time.time() + timeout
while True:
    try:
        ddb.list_tables(Limit=1)
        break
    except Exception as e:
        if not alive():
            print("localstack: the process exited", file=sys.stderr); sys.exit(3)
        if time.time() > deadline:
            print(f"localstack: DynamoDB not answering after {timeout:.0f} s: {e}", file=sys.stderr); sys.exit(4)
        time.sleep(0.5)
print(f"localstack: DynamoDB warm after {time.time() - t1:.1f} s more")
PY
RC=$?
set -e
if [ "$RC" != 0 ]; then
  echo "---- last lines of $LOG" >&2
  tail -n 40 "$LOG" >&2 || true
  # Do not leave a broken instance behind; keep one we did not start for inspection.
  if [ "$STARTED" = 1 ]; then "$HERE/stop.sh" >&2 || true; fi
  exit 1
fi

# For tests and tools: `source localstack/.state/env` (export lines, so child processes see them).
cat >"$STATE/env" <<EOF
export AWS_ENDPOINT_URL=$ENDPOINT
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
EOF
echo "localstack: ready at $ENDPOINT (source $STATE/env)"
