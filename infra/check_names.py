"""Checks that the SAM template has every name, key and variable the code expects.

Usage: check_names.py [TEMPLATE]   (default: infra/template.yaml; run with localstack/.venv's python)

The expectations come from the code, not from a copy of it:
  - table, bucket and queue names: the defaults of kiln_store_aws::AwsConfig
    (shared/store-aws/src/lib.rs) and localstack/seed.py (names, FIFO-ness, DLQs,
    maxReceiveCount, key schema, GSI, TTL attribute), with the template's Prefix default;
  - the GSI name: shared/store-aws/src/dynamo/keys.rs;
  - environment variables: every "KILN_..." literal in the functions' sources
    (shared/store-aws/src/lib.rs, shared/lambda/src, functions/*/src);
  - function binaries: the [[bin]] names in functions/*/Cargo.toml;
  - webhook routes: every POST /v1/hooks/<host> route of shared/api/src/routes.rs is an explicit
    route of the api function, not behind an authorizer.
Exit 0 when everything matches; 1 with one line per mismatch.
"""

import re
import json
import sys
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "localstack"))
import seed  # noqa: E402  (names, key schema and queue specs the local resources are made with)

# Variables the code reads that a deployment may leave unset (they have defaults or are
# for one mode only).
OPTIONAL_ENV = {
    "KILN_S3_EXPRESS_APPEND",  # off unless the bucket is an S3 Express directory bucket
    "KILN_RUNNER_SLOTS",  # runner --poll only
    "KILN_SECRETS_KEY_FILE",  # the CLI's local secret store only
}
# Set on every function (Globals): the storage names and the token key.
GLOBAL_ENV = ["KILN_TABLE", "KILN_BUCKET", "KILN_JOBS_QUEUE", "KILN_DISPATCH_QUEUE", "KILN_EVENTS_QUEUE", "KILN_SIGNING_KEY"]
# Per function binary: what else it needs.
FUNCTION_ENV = {
    "api": ["KILN_ADMIN_TOKENS", "KILN_SECRETS_PREFIX", "KILN_SECRETS_KMS_KEY", "KILN_NOTIFY_QUEUE"],
    "compile": ["KILN_ADMIN_TOKENS"],
    "log-ingest": ["KILN_ADMIN_TOKENS"],
    "event-fanin": ["KILN_JOBS_DLQ", "KILN_NOTIFY_QUEUE"],
    "runner": ["KILN_API_URL"],
    "dispatch": [],
    "notify": ["KILN_NOTIFY_QUEUE", "KILN_PUBLIC_URL", "KILN_SECRETS_PREFIX"],
}
# The only functions whose role may read or write repository secrets (SSM, and KMS through
# SSM): the api function serves the secret routes and the runner's delivery route.
SECRET_FUNCTIONS = {"api"}
# Functions that may read git tokens only (SSM GetParameters on /<Prefix>/-git-*/*/TOKEN,
# kiln_domain::git::credentials_repo and token_name): notify posts commit statuses with them.
TOKEN_FUNCTIONS = {"notify"}
TOKEN_PARAMETER = ":parameter/${Prefix}/-git-*/*/TOKEN"
# Actions that cannot be limited to resources, allowed on "*": listing parameter names.
STAR_ACTIONS = {"ssm:DescribeParameters"}

# Function binary -> the queue key (seed.queue_specs) it consumes.
SQS_CONSUMERS = {"dispatch": "dispatch", "event-fanin": "events", "runner": "jobs", "notify": "notify"}
# Queue key -> the variable that names it (every function that has the variable gets !Ref).
QUEUE_ENV = {"jobs": "KILN_JOBS_QUEUE", "dispatch": "KILN_DISPATCH_QUEUE", "events": "KILN_EVENTS_QUEUE",
             "notify": "KILN_NOTIFY_QUEUE"}

errors = []


def fail(msg):
    errors.append(msg)


def rust_default(field):
    """A field's default in AwsConfig's Default impl."""
    src = (ROOT / "shared/store-aws/src/lib.rs").read_text()
    block = src[src.index("impl Default for AwsConfig") :]
    m = re.search(rf'{field}: "([^"]+)"\.to_string\(\)', block)
    if not m:
        sys.exit(f"check_names: cannot find the default of AwsConfig.{field}")
    return m.group(1)


def env_names_in_code():
    files = [ROOT / "shared/store-aws/src/lib.rs"]
    files += sorted((ROOT / "shared/lambda/src").rglob("*.rs"))
    files += sorted((ROOT / "functions").glob("*/src/**/*.rs"))
    names = set()
    for f in files:
        names |= set(re.findall(r'"(KILN_[A-Z0-9_]+)"', f.read_text()))
    return names


def function_binaries():
    bins = {}
    for cargo in sorted((ROOT / "functions").glob("*/Cargo.toml")):
        for name in re.findall(r'\[\[bin\]\]\s*\nname\s*=\s*"([^"]+)"', cargo.read_text()):
            bins[name] = cargo.parent.name
    return bins


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "infra/template.yaml"
    template, matches = decode(str(path))
    if matches or template is None:
        sys.exit(f"check_names: cannot parse {path}: {matches}")
    prefix = template.get("Parameters", {}).get("Prefix", {}).get("Default")
    if prefix is None:
        sys.exit("check_names: the template has no Prefix parameter with a default")
    resources = template.get("Resources", {})

    def resolve(value):
        """A name as deployed with the default Prefix (!Sub "${Prefix}-..." or a string)."""
        if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
            return value["Fn::Sub"].replace("${Prefix}", prefix)
        return value if isinstance(value, str) else None

    def of_type(ty):
        return {k: r.get("Properties", {}) for k, r in resources.items() if r.get("Type") == ty}

    def is_ref(value, logical_id):
        return value == {"Ref": logical_id}

    # ---- the names the code defaults to are the ones the template makes (default Prefix) ----
    expected = {
        "table": rust_default("table"),
        "bucket": rust_default("bucket"),
        "jobs": rust_default("jobs_queue_url"),
        "dispatch": rust_default("dispatch_queue_url"),
        "events": rust_default("events_queue_url"),
    }
    if expected["table"] != f"{prefix}-state" or expected["bucket"] != f"{prefix}-logs":
        fail(f"AwsConfig defaults {expected} do not follow the template's Prefix {prefix!r}")

    # ---- table ----
    tables = {k: p for k, p in of_type("AWS::DynamoDB::Table").items() if resolve(p.get("TableName")) == expected["table"]}
    if len(tables) != 1:
        fail(f"no DynamoDB table named {expected['table']} (TableName !Sub \"${{Prefix}}-state\")")
    table_id = next(iter(tables), None)
    for props in tables.values():
        if props.get("KeySchema") != seed.KEY_SCHEMA:
            fail(f"table key schema {props.get('KeySchema')} != {seed.KEY_SCHEMA}")
        gsi_name = re.search(r'const GSI1: &str = "([^"]+)"', (ROOT / "shared/store-aws/src/dynamo/keys.rs").read_text())
        gsi_name = gsi_name.group(1) if gsi_name else "gsi1"
        gsis = {g.get("IndexName"): g for g in props.get("GlobalSecondaryIndexes", [])}
        gsi = gsis.get(gsi_name)
        if gsi is None:
            fail(f"table has no GSI {gsi_name}")
        else:
            if gsi.get("KeySchema") != seed.GSI1_KEY_SCHEMA:
                fail(f"GSI {gsi_name} key schema {gsi.get('KeySchema')} != {seed.GSI1_KEY_SCHEMA}")
            if gsi.get("Projection", {}).get("ProjectionType") != "ALL":
                fail(f"GSI {gsi_name} must project ALL attributes")
        defined = {a["AttributeName"]: a["AttributeType"] for a in props.get("AttributeDefinitions", [])}
        for k in seed.KEY_SCHEMA + seed.GSI1_KEY_SCHEMA:
            if defined.get(k["AttributeName"]) != "S":
                fail(f"attribute {k['AttributeName']} must be defined as a string (S)")
        if props.get("BillingMode") != "PAY_PER_REQUEST":
            fail("table must be PAY_PER_REQUEST")
        ttl = props.get("TimeToLiveSpecification", {})
        if ttl.get("AttributeName") != seed.TTL_ATTRIBUTE or ttl.get("Enabled") is not True:
            fail(f"table TTL must be enabled on {seed.TTL_ATTRIBUTE}")
        if props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is not True:
            fail("table must have point-in-time recovery")

    # ---- bucket ----
    buckets = {k: p for k, p in of_type("AWS::S3::Bucket").items() if resolve(p.get("BucketName")) == expected["bucket"]}
    if len(buckets) != 1:
        fail(f"no S3 bucket named {expected['bucket']}")
    bucket_id = next(iter(buckets), None)
    for props in buckets.values():
        if not props.get("BucketEncryption"):
            fail("bucket must be encrypted")
        pab = props.get("PublicAccessBlockConfiguration", {})
        if not all(pab.get(k) is True for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")):
            fail("bucket must block all public access")
        if not props.get("LifecycleConfiguration", {}).get("Rules"):
            fail("bucket must have lifecycle rules")

    # ---- queues, as seed.py makes them ----
    queues = {resolve(p.get("QueueName")): (k, p) for k, p in of_type("AWS::SQS::Queue").items()}
    specs = {key: (name, attrs, dlq, max_receive) for key, name, attrs, dlq, max_receive in seed.queue_specs(prefix)}
    for key in ("jobs", "dispatch", "events"):
        if specs[key][0] != expected[key]:
            fail(f"seed.py's {key} queue {specs[key][0]} != AwsConfig default {expected[key]}")
    queue_ids = {}
    for key, (name, attrs, dlq, max_receive) in specs.items():
        if name not in queues:
            fail(f"no SQS queue named {name} ({key})")
            continue
        logical, props = queues[name]
        queue_ids[key] = logical
        fifo = attrs.get("FifoQueue") == "true"
        if bool(props.get("FifoQueue", False)) != fifo or name.endswith(".fifo") != fifo:
            fail(f"queue {name}: FifoQueue must be {fifo}")
        if fifo and props.get("ContentBasedDeduplication", False) is not False:
            fail(f"queue {name}: Kiln sends deduplication ids; ContentBasedDeduplication must be false")
        if dlq:
            redrive = props.get("RedrivePolicy", {})
            target = redrive.get("deadLetterTargetArn", {}).get("Fn::GetAtt", [None])[0]
            dlq_name = specs[dlq][0]
            if dlq_name not in queues or target != queues[dlq_name][0]:
                fail(f"queue {name}: dead-letter queue must be {dlq_name}")
            if redrive.get("maxReceiveCount") != max_receive:
                fail(f"queue {name}: maxReceiveCount must be {max_receive} (as seed.py)")

    # ---- functions ----
    globals_fn = template.get("Globals", {}).get("Function", {})
    if globals_fn.get("Runtime") != "provided.al2023" or globals_fn.get("Architectures") != ["arm64"]:
        fail("functions must run on provided.al2023, arm64 (Globals)")
    global_env = globals_fn.get("Environment", {}).get("Variables", {})
    functions = {}
    for logical, r in resources.items():
        if r.get("Type") != "AWS::Serverless::Function":
            continue
        meta = r.get("Metadata", {})
        if meta.get("BuildMethod") != "rust-cargolambda":
            fail(f"{logical}: BuildMethod must be rust-cargolambda")
        functions[meta.get("BuildProperties", {}).get("Binary")] = (logical, r.get("Properties", {}))
    for binary, folder in function_binaries().items():
        if binary not in functions:
            fail(f"no function builds the binary {binary} (functions/{folder})")

    set_anywhere = set(global_env)
    for binary, (logical, props) in functions.items():
        env = dict(global_env, **props.get("Environment", {}).get("Variables", {}))
        set_anywhere |= set(env)
        for var in GLOBAL_ENV + FUNCTION_ENV.get(binary, []):
            if var not in env:
                fail(f"{logical} ({binary}): environment variable {var} is not set")
        refs = {"KILN_TABLE": table_id, "KILN_BUCKET": bucket_id}
        refs |= {var: queue_ids.get(k) for k, var in QUEUE_ENV.items()}
        if binary == "event-fanin":
            refs["KILN_JOBS_DLQ"] = queue_ids.get("jobs_dlq")
        for var, target in refs.items():
            if var in env and target and not is_ref(env[var], target):
                fail(f"{logical}: {var} must be !Ref {target}")
        if binary in SQS_CONSUMERS:
            target = queue_ids.get(SQS_CONSUMERS[binary])
            # Event source mappings written out (AWS::Lambda::EventSourceMapping), or SAM SQS events.
            sqs = [dict(r["Properties"], Queue=r["Properties"].get("EventSourceArn")) for r in resources.values()
                   if r.get("Type") == "AWS::Lambda::EventSourceMapping"
                   and r.get("Properties", {}).get("FunctionName") == {"Ref": logical}]
            sqs += [e["Properties"] for e in props.get("Events", {}).values() if e.get("Type") == "SQS"]
            if not any(e.get("Queue") == {"Fn::GetAtt": [target, "Arn"]} for e in sqs):
                fail(f"{logical}: no SQS event source on {target}")
            for e in sqs:
                if "ReportBatchItemFailures" not in e.get("FunctionResponseTypes", []):
                    fail(f"{logical}: SQS event source without ReportBatchItemFailures")
                if not e.get("BatchSize"):
                    fail(f"{logical}: SQS event source without BatchSize")
        # Least privilege: every Allow names its resources; secrets only where delivered.
        for policy in props.get("Policies", []):
            for st in policy.get("Statement", []) if isinstance(policy, dict) else []:
                if st.get("Effect") != "Allow":
                    continue
                actions = st.get("Action", [])
                actions = [actions] if isinstance(actions, str) else actions
                if st.get("Resource") in ("*", ["*"]) and not set(actions) <= STAR_ACTIONS:
                    fail(f"{logical}: an Allow statement on Resource '*'")
                secret_actions = [a for a in actions if a.startswith(("ssm:", "kms:")) or a in ("ssm:*", "kms:*", "*")]
                if secret_actions and binary in TOKEN_FUNCTIONS:
                    for a in secret_actions:
                        if a not in ("ssm:GetParameters", "kms:Decrypt"):
                            fail(f"{logical}: {a}: a token reader may only ssm:GetParameters and kms:Decrypt")
                        elif a == "ssm:GetParameters" and not json.dumps(st.get("Resource")).endswith(TOKEN_PARAMETER + '"}'):
                            fail(f"{logical}: {a} must be limited to parameter/${{Prefix}}/-git-*/*/TOKEN")
                elif secret_actions and binary not in SECRET_FUNCTIONS:
                    fail(f"{logical}: {', '.join(secret_actions)}: only {', '.join(sorted(SECRET_FUNCTIONS))} may reach secrets")
                if binary in SECRET_FUNCTIONS:
                    for a in actions:
                        if a.startswith("ssm:") and a not in STAR_ACTIONS:
                            res = json.dumps(st.get("Resource"))
                            if ":parameter/${Prefix}/*" not in res:
                                fail(f"{logical}: {a} must be limited to parameter/${{Prefix}}/*")

    # ---- webhook routes: explicit on the api function, never behind an authorizer ----
    hooks = re.findall(r'path: "(/v1/hooks/[a-z]+)"', (ROOT / "shared/api/src/routes.rs").read_text())
    if not hooks:
        fail("no /v1/hooks/<host> route in shared/api/src/routes.rs (has the route table moved?)")
    api = functions.get("api", (None, {}))[1]
    routes = {(e["Properties"].get("Path"), e["Properties"].get("Method")): e["Properties"]
              for e in api.get("Events", {}).values() if e.get("Type") == "HttpApi"}
    default_authorizer = any(r.get("Properties", {}).get("Auth", {}).get("DefaultAuthorizer")
                             for r in resources.values() if r.get("Type") == "AWS::Serverless::HttpApi")
    for hook in hooks:
        route = routes.get((hook, "POST"))
        if route is None:
            fail(f"the api function has no POST {hook} route")
            continue
        authorizer = route.get("Auth", {}).get("Authorizer")
        if authorizer not in (None, "NONE") or (default_authorizer and authorizer != "NONE"):
            fail(f"POST {hook} is behind an authorizer (webhooks carry no bearer token: Auth: {{ Authorizer: NONE }})")

    for var in sorted(env_names_in_code() - OPTIONAL_ENV):
        if var not in set_anywhere:
            fail(f"the code reads {var}, and no function sets it")

    if errors:
        for e in errors:
            print(f"check_names: {path}: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"check_names: {path}: names, keys and variables match the code")


if __name__ == "__main__":
    main()
