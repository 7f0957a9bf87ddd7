#!/usr/bin/env bash
# Offline checks of infra/template.yaml: cfn-lint, `sam validate --lint`, check_names.py
# (the template has every name, key and variable the code expects) and check_deploy.py (what
# SAM's transform makes: IAM roles, routes, event source mappings), plus negative tests: each
# deliberately broken copy of the template must make its check fail.
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
"$VENV/python" "$ROOT/infra/check_deploy.py" "$TEMPLATE"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
failures=0
# mutation NAME SED-EXPRESSION: the mutated template must be refused by check_names.py
# (deploy_mutation: by check_deploy.py).
mutation() { mutated check_names "$@"; }
deploy_mutation() { mutated check_deploy "$@"; }
mutated() {
  local check="$1" name="$2" expr="$3" out="$TMP/$2.yaml"
  sed -e "$expr" "$TEMPLATE" >"$out"
  if cmp -s "$TEMPLATE" "$out"; then
    echo "negative test $name: the mutation changed nothing (fix the test)" >&2
    failures=$((failures + 1))
  elif "$VENV/python" "$ROOT/infra/$check.py" "$out" 2>"$TMP/$name.err"; then
    echo "negative test $name: $check.py accepted a broken template" >&2
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
# What SAM's transform makes (check_deploy.py). Widened policies:
deploy_mutation widened-action '/Action: \[dynamodb:GetItem, dynamodb:Query, dynamodb:PutItem, dynamodb:ConditionCheckItem, dynamodb:BatchWriteItem\]$/s/\]$/, dynamodb:Scan]/'
deploy_mutation widened-wildcard-action 's/Action: \[s3:GetObject, s3:PutObject, s3:DeleteObject, s3:AbortMultipartUpload\]/Action: [s3:*]/'
deploy_mutation widened-star-resource '/Action: \[sqs:ChangeMessageVisibility\]/{n;s/Resource: .*/Resource: "*"/}'
deploy_mutation widened-whole-bucket 's|Resource: !Sub "${LogBucket.Arn}/logs/\*"|Resource: !Sub "${LogBucket.Arn}/*"|'
deploy_mutation widened-managed-policy '/^      Policies:$/a\        - arn:aws:iam::aws:policy/AmazonSQSFullAccess'
deploy_mutation widened-kms-without-ssm '/kms:ViaService: /d'
deploy_mutation sam-sqs-event '/^  RunnerFunction:/,/^      Policies:/{s/^      Policies:/      Events:\n        Jobs:\n          Type: SQS\n          Properties: { Queue: !GetAtt JobsQueue.Arn, BatchSize: 1 }\n      Policies:/}'
# Narrowed policies:
deploy_mutation narrowed-no-put-object 's/Action: \[s3:GetObject, s3:PutObject, s3:DeleteObject, s3:AbortMultipartUpload\]/Action: [s3:GetObject, s3:DeleteObject, s3:AbortMultipartUpload]/'
deploy_mutation narrowed-no-visibility '/Action: \[sqs:ChangeMessageVisibility\]/,+1d'
deploy_mutation narrowed-poller '0,/Action: \[sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes\]/s//Action: [sqs:ReceiveMessage, sqs:DeleteMessage]/'
# Event source mappings and routes:
deploy_mutation runner-batch-of-ten '/^  RunnerJobs:/,/BatchSize/s/BatchSize: 1$/BatchSize: 10/'
deploy_mutation fifo-batching-window '/^  EventFaninEvents:/,/BatchSize/s/BatchSize: 10$/BatchSize: 10\n      MaximumBatchingWindowInSeconds: 5/'
deploy_mutation no-report-failures '/^  NotifyRequests:/,/FunctionResponseTypes/s/FunctionResponseTypes: \[ReportBatchItemFailures\]/FunctionResponseTypes: []/'
deploy_mutation ingest-route-to-api 's|Path: "/v1/builds/{id}/ingest/{proxy+}", Method: POST|Path: "/v1/builds/{id}/ingest-v2/{proxy+}", Method: POST|'
deploy_mutation ui-route-missing '/Path: "\/ui\/{proxy+}", Method: GET/d'
deploy_mutation default-authorizer '/ThrottlingRateLimit: 100/a\      Auth:\n        Authorizers:\n          Tok:\n            FunctionArn: !GetAtt ApiFunction.Arn\n            AuthorizerPayloadFormatVersion: "2.0"\n            EnableSimpleResponses: true\n        DefaultAuthorizer: Tok'
if [ "$failures" -ne 0 ]; then
  echo "infra/test_template.sh: $failures negative test(s) failed" >&2
  exit 1
fi
echo "infra/test_template.sh: ok"
