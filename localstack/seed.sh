#!/usr/bin/env bash
# Creates Kiln's resources (table, bucket, queues) in the running LocalStack, idempotently, and
# prints them as JSON (also written to .state/resources.json).
#   --reset       delete them first, then recreate (for tests)
#   KILN_PREFIX   name prefix (default kiln)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$HERE/.state"
PY="$HERE/.venv/bin/python"
[ -x "$PY" ] || { echo "seed.sh: run localstack/start.sh first" >&2; exit 1; }

# Always the local LocalStack with test credentials, never a real account from the caller's env:
# the port given, else the one start.sh used.
PORT="${KILN_LOCALSTACK_PORT:-$(cat "$STATE/localstack.port" 2>/dev/null || echo 4566)}"
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test

"$PY" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/_localstack/health", timeout=2)' "$AWS_ENDPOINT_URL" 2>/dev/null \
  || { echo "seed.sh: no LocalStack at $AWS_ENDPOINT_URL; run localstack/start.sh first" >&2; exit 1; }

exec "$PY" "$HERE/seed.py" "$@"
