#!/usr/bin/env bash
# Offline checks of infra/template.yaml: cfn-lint, `sam validate --lint`, and check_names.py
# (the template has every name, key and variable the code expects), plus negative tests:
# each deliberately broken copy of the template must make check_names.py fail.
# Needs localstack/.venv (localstack/install.sh installs cfn-lint and the SAM CLI there).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/localstack/.venv/bin"
TEMPLATE="$ROOT/infra/template.yaml"
# No telemetry, no writes to ~/.aws-sam: the SAM CLI's app dir lives in the ignored target/.
export SAM_CLI_TELEMETRY=0 __SAM_CLI_APP_DIR="$ROOT/target/sam-cli"
mkdir -p "$__SAM_CLI_APP_DIR"

"$VENV/cfn-lint" "$TEMPLATE"
echo "cfn-lint: ok"
"$VENV/sam" validate --lint --region us-east-1 -t "$TEMPLATE" >/dev/null
echo "sam validate --lint: ok"
"$VENV/python" "$ROOT/infra/check_names.py" "$TEMPLATE"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
failures=0
# mutation NAME SED-EXPRESSION: the mutated template must be refused.
mutation() {
  local name="$1" expr="$2" out="$TMP/$1.yaml"
  sed -e "$expr" "$TEMPLATE" >"$out"
  if cmp -s "$TEMPLATE" "$out"; then
    echo "negative test $name: the mutation changed nothing (fix the test)" >&2
    failures=$((failures + 1))
  elif "$VENV/python" "$ROOT/infra/check_names.py" "$out" 2>"$TMP/$name.err"; then
    echo "negative test $name: check_names.py accepted a broken template" >&2
    failures=$((failures + 1))
  else
    echo "negative test $name: refused ($(head -1 "$TMP/$name.err" | sed 's/^[^:]*: [^:]*: //'))"
  fi
}
mutation renamed-jobs-queue 's/QueueName: !Sub "${Prefix}-jobs"$/QueueName: !Sub "${Prefix}-work"/'
mutation renamed-table 's/TableName: !Sub "${Prefix}-state"/TableName: !Sub "${Prefix}-builds"/'
mutation renamed-gsi 's/IndexName: gsi1/IndexName: byrepo/'
mutation events-not-fifo '/QueueName: !Sub "${Prefix}-events.fifo"/{n;s/FifoQueue: true/FifoQueue: false/}'
mutation missing-env-var '/^        KILN_EVENTS_QUEUE: /d'
mutation no-batch-failures '0,/FunctionResponseTypes: \[ReportBatchItemFailures\]/s//FunctionResponseTypes: []/'
mutation sort-key-renamed 's/{ AttributeName: sk, KeyType: RANGE }/{ AttributeName: sortkey, KeyType: RANGE }/'
mutation runner-reads-secrets '/Action: \[sqs:ChangeMessageVisibility\]/s/\]/, ssm:GetParameters]/'
mutation secrets-path-widened 's|parameter/${Prefix}/\*"|parameter/*"|'
mutation no-secrets-prefix '/^          KILN_SECRETS_PREFIX: /d'
mutation hook-behind-authorizer 's|Path: /v1/hooks/github, Method: POST }|Path: /v1/hooks/github, Method: POST, Auth: { Authorizer: Bearer } }|'
mutation hook-route-missing 's|Path: /v1/hooks/gitea, Method: POST|Path: /v1/hook/gitea, Method: POST|'
mutation notify-reads-all-secrets 's|parameter/${Prefix}/-git-\*/\*/TOKEN"|parameter/${Prefix}/*"|'
mutation fanin-without-notify-queue '/KILN_JOBS_DLQ: !Ref JobsDlq/{n;n;d}'
mutation notify-not-fifo '/QueueName: !Sub "${Prefix}-notify.fifo"/{n;s/FifoQueue: true/FifoQueue: false/}'
if [ "$failures" -ne 0 ]; then
  echo "infra/test_template.sh: $failures negative test(s) failed" >&2
  exit 1
fi
echo "infra/test_template.sh: ok"
