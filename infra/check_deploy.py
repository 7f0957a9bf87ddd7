"""Checks what a deployment of the SAM template really creates: its IAM roles, HTTP routes and
event source mappings, as plain CloudFormation after SAM's own transform (aws-sam-translator,
the version `sam deploy` uses: pinned with the SAM CLI in localstack/constraints.txt).

Usage: check_deploy.py [TEMPLATE] [--requests FILE --prefix PREFIX]   (localstack/.venv's python)
       check_deploy.py --transform TEMPLATE OUT.json  (only write the transformed template)

The expectations come from the code and the README, not from a list kept here:
  - what the code can call: every aws-sdk fluent call (`.put_object()`, `.transact_write_items()`
    with the item kinds its transactions build, ...) in the sources the functions link
    (shared/*/src, functions/*/src), mapped to IAM actions by AWS's rule (the operation's name
    in PascalCase, with the service prefix), except the operations whose IAM action AWS names
    otherwise (S3_ACTIONS below: AWS's Service Authorization Reference, not Kiln's choice);
  - what the functions did call: with --requests, the AWS requests each function made during a
    whole build through the Lambda binaries (functions/test_bridge.sh records them with
    infra/record_requests.py);
  - routes: the function README's "Deploying to AWS" table names per route, and every route of
    the code's router (shared/api/src/routes.rs, ui.rs) must reach that function; no route is
    behind an API Gateway authorizer (the functions check bearer tokens; webhooks are signed);
  - event source mappings: the batch size and batching window the function's code states
    (kiln_lambda::batch's Mapping constants) and ReportBatchItemFailures (the code answers
    with batchItemFailures).
IAM is checked both ways: a role allows nothing the code cannot call and nothing on a resource the
function is not configured with (no "*" but for actions AWS gives no resource-level
permissions), and it allows what the function's code called (--requests) and what Lambda's SQS
poller needs on the function's own queue.
Exit 0 when everything holds; 1 with one line per problem.
"""

import fnmatch
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Operations whose IAM action is not their own name (AWS Service Authorization Reference:
# "Actions defined by Amazon S3" lists each API's required permissions).
S3_ACTIONS = {
    "HeadObject": ["s3:GetObject"],
    "ListObjectsV2": ["s3:ListBucket"],
    "DeleteObjects": ["s3:DeleteObject"],
    "CreateMultipartUpload": ["s3:PutObject"],
    "UploadPart": ["s3:PutObject"],
    "CompleteMultipartUpload": ["s3:PutObject"],
    "UploadPartCopy": ["s3:PutObject", "s3:GetObject"],
    "ListParts": ["s3:ListMultipartUploadParts"],
}
# IAM authorizes each item of a DynamoDB transaction by its own action.
TRANSACT_ITEMS = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem", "Delete": "dynamodb:DeleteItem",
                  "ConditionCheck": "dynamodb:ConditionCheckItem"}
# Actions AWS gives no resource-level permissions: only "*" can name their resource.
NO_RESOURCE_LEVEL = {"ssm:DescribeParameters"}
# What Lambda's SQS event source mapping calls with the function's role, on the mapped queue.
SQS_POLLER = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
# The one managed policy a role may carry: Lambda's own log delivery (CloudWatch Logs), which
# the service writes with the role, not Kiln's code.
LAMBDA_BASIC = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
SERVICE_OF_CRATE = {"aws_sdk_dynamodb": "dynamodb", "aws_sdk_s3": "s3", "aws_sdk_sqs": "sqs", "aws_sdk_ssm": "ssm"}
# Placeholder parameter values for the transform (the two without a default).
PARAMS = {"SigningKey": "x" * 32, "AdminTokens": "y" * 16}

errors = []
PREFIX = ["kiln"]  # the Prefix the recorded requests' resources were named with (--prefix)


def fail(msg):
    errors.append(msg)


def pascal(snake):
    return "".join(p[:1].upper() + p[1:] for p in snake.split("_"))


# ---- the template, as CloudFormation will see it ------------------------------------------------
def transform(path):
    """SAM's transform, offline: local CodeUris become S3 locations, as `sam package` makes them."""
    from samtranslator.translator.transform import transform as sam_transform
    from samtranslator.yaml_helper import yaml_parse
    import os

    # Only the ARN partition comes from the region; the check never calls AWS.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    template = yaml_parse(Path(path).read_text())
    for r in template.get("Resources", {}).values():
        if r.get("Type") == "AWS::Serverless::Function" and isinstance(r["Properties"].get("CodeUri"), str):
            r["Properties"]["CodeUri"] = "s3://kiln-check/code.zip"

    class NoManagedPolicies:  # inline policies only: nothing to look up in IAM
        def load(self):
            return {}

    return sam_transform(template, PARAMS, NoManagedPolicies())


# ---- the code ---------------------------------------------------------------------------------
def rust_sources():
    files = sorted((ROOT / "shared").glob("*/src/**/*.rs")) + sorted((ROOT / "functions").glob("*/src/**/*.rs"))
    return [f for f in files if "/store-local/" not in str(f)]


def strip_tests(text):
    """The file without its `#[cfg(test)] mod tests { ... }` (tests' calls are not the function's)."""
    m = re.search(r"#\[cfg\(test\)\]\s*mod \w+\s*\{", text)
    return text[: m.start()] if m else text


def code_calls():
    """IAM action -> ["file:line", ...] for every aws-sdk call in the sources the functions link."""
    calls = {}
    for f in rust_sources():
        text = strip_tests(f.read_text())
        crates = {SERVICE_OF_CRATE[c] for c in re.findall(r"\b(aws_sdk_\w+)::", text) if c in SERVICE_OF_CRATE}
        if not crates:
            continue
        # A fluent call on an SDK client (`self.client.put_object()`, `client.get_queue_url()`):
        # the operation is the client's method called without arguments.
        for m in re.finditer(r"\bclient\s*\.\s*([a-z][a-z0-9_]*)\(\)", text):
            if m.group(1) in ("clone", "config"):
                continue
            op = pascal(m.group(1))
            line = text.count("\n", 0, m.start()) + 1
            where = f"{f.relative_to(ROOT)}:{line}"
            if len(crates) != 1:
                fail(f"{where}: cannot tell which AWS service .{m.group(1)}() calls ({sorted(crates)})")
                continue
            service = next(iter(crates))
            stmt = text[m.start(): text.find(";", m.start())]
            for action in iam_actions(service, op, stmt, text):
                calls.setdefault(action, []).append(where)
    return calls


def iam_actions(service, op, call, file_text):
    if service == "s3":
        return S3_ACTIONS.get(op, [f"s3:{op}"])
    if service == "dynamodb" and op == "TransactWriteItems":
        # The item kinds the code's transactions are built of (in any of the sources).
        kinds = set()
        for f in rust_sources():
            kinds |= set(re.findall(r"TransactWriteItem::builder\(\)\s*\.\s*(put|update|delete|condition_check)\(",
                                    strip_tests(f.read_text())))
        return sorted(TRANSACT_ITEMS[pascal(k)] for k in kinds)
    if service == "ssm":
        # SecureString values go through KMS on the caller's behalf (kms:ViaService ssm):
        # a standard-tier put encrypts with the key, a get with decryption decrypts.
        extra = []
        if op == "GetParameters" and "with_decryption(true)" in call:
            extra = ["kms:Decrypt"]
        if op == "PutParameter" and "SecureString" in call:
            extra = ["kms:GenerateDataKey"] if "ParameterTier::Advanced" in call else ["kms:Encrypt"]
        return [f"ssm:{op}"] + extra
    return [f"{service}:{op}"]


def batch_mappings():
    """Mapping constant name -> (batch size, batching window) stated in kiln_lambda::batch."""
    text = (ROOT / "shared/lambda/src/batch.rs").read_text()
    out = {}
    for name, body in re.findall(r"pub const (\w+): Mapping = Mapping \{(.*?)\};", text, re.S):
        size = re.search(r"batch_size:\s*(\d+)", body)
        window = re.search(r"max_batching_window_secs:\s*(\d+)", body)
        if size and window:
            out[name] = (int(size.group(1)), int(window.group(1)))
    return out


def function_mappings(binaries):
    """Binary -> the Mapping constant its main hands to kiln_lambda::batch::handle."""
    out = {}
    for binary, folder in binaries.items():
        text = (ROOT / "functions" / folder / "src/main.rs").read_text()
        used = set(re.findall(r"\bhandle\(\s*\w+\s*,\s*(?:batch::)?([A-Z][A-Z0-9_]*)\b", text))
        if used:
            out[binary] = used
    return out


def function_binaries():
    bins = {}
    for cargo in sorted((ROOT / "functions").glob("*/Cargo.toml")):
        for name in re.findall(r'\[\[bin\]\]\s*\nname\s*=\s*"([^"]+)"', cargo.read_text()):
            bins[name] = cargo.parent.name
    return bins


def code_routes():
    """(METHOD, path, access) of the code's router: the /v1 route table and the UI's pages."""
    routes = [(m, p, a) for m, p, a in re.findall(
        r'method: Method::(\w+),\s*path: "([^"]+)",.*?access: Access::(\w+)',
        (ROOT / "shared/api/src/routes.rs").read_text(), re.S)]
    ui = (ROOT / "shared/api/src/ui.rs").read_text()
    pages = re.search(r"pub const PAGES: &\[&str\] = &\[(.*?)\];", ui, re.S)
    for p in re.findall(r'"([^"]+)"', pages.group(1) if pages else ""):
        routes.append(("GET", p, "Open"))
    for p in re.findall(r'\.route\("(/ui/[^"]+)"', ui):
        routes.append(("GET", p, "Open"))
    return routes


def readme_routes():
    """Function -> [(METHOD or ANY, path)] from the README's "Deploying to AWS" table."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Deploying to AWS"):]
    section = section[: section.index("\n## ", 4)]
    out = {}
    for fn, trigger in re.findall(r"^\| `([a-z-]+)` \| HTTP API: ([^|]*?) \|", section, re.M):
        for item in re.findall(r"`([^`]+)`", trigger):
            method, _, path = item.rpartition(" ")
            out.setdefault(fn, []).append((method or "ANY", path.replace("*", "{proxy+}")))
    return out


# ---- helpers on the transformed template --------------------------------------------------------
def as_list(v):
    return v if isinstance(v, list) else [v]


def target_of(ref):
    """The logical id an ARN expression names ({"Fn::GetAtt": [X, "Arn"]}, ${X.Arn}/..., Ref)."""
    if isinstance(ref, dict):
        if "Fn::GetAtt" in ref:
            return ref["Fn::GetAtt"][0], ""
        if "Ref" in ref:
            return ref["Ref"], ""
        if "Fn::Sub" in ref and isinstance(ref["Fn::Sub"], str):
            s = ref["Fn::Sub"]
            m = re.fullmatch(r"\$\{(\w+)\.Arn\}(.*)", s)
            if m:
                return m.group(1), m.group(2)
            return None, s
    return None, ref


def gateway_match(routes, method, path):
    """The route API Gateway picks for a request: an exact path before a greedy {proxy+}, the longest
    greedy prefix first; a route's method before ANY."""
    def matches(route_path):
        if route_path.endswith("/{proxy+}"):
            prefix = route_path[: -len("{proxy+}")]
            return path.startswith(prefix) and len(path) > len(prefix), len(prefix)
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(route_path))
        return re.fullmatch(pattern, re.sub(r"\{[^/]+\}", "x", path)) is not None, 10_000 + len(route_path)

    best = None
    for (m, p), fn in routes.items():
        ok, score = matches(p)
        if ok and m in (method, "ANY"):
            key = (score, m != "ANY")
            if best is None or key > best[0]:
                best = (key, (m, p), fn)
    return best


def check(template, requests):
    res = template["Resources"]
    functions = {k: r for k, r in res.items() if r["Type"] == "AWS::Lambda::Function"}
    binaries = function_binaries()
    queues = {k for k, r in res.items() if r["Type"] == "AWS::SQS::Queue"}
    tables = {k for k, r in res.items() if r["Type"] == "AWS::DynamoDB::Table"}
    buckets = {k for k, r in res.items() if r["Type"] == "AWS::S3::Bucket"}
    prefix_param = "${Prefix}"

    def binary_of(logical):
        # The function's binary: the ...Function logical id SAM kept (Metadata is dropped), by
        # the FunctionName's suffix after the prefix.
        name = res[logical]["Properties"].get("FunctionName", {})
        s = name.get("Fn::Sub", "") if isinstance(name, dict) else ""
        return s.replace(f"{prefix_param}-", "", 1) if s.startswith(f"{prefix_param}-") else None

    by_binary = {}
    for logical in functions:
        b = binary_of(logical)
        if b not in binaries:
            fail(f"{logical}: FunctionName {res[logical]['Properties'].get('FunctionName')} names no binary of functions/*")
        by_binary[b] = logical

    calls = code_calls()
    # A queue named by its URL needs no GetQueueUrl: that is how the template passes them (Ref
    # of an AWS::SQS::Queue is its URL). A name would need sqs:GetQueueUrl.
    queue_env_by_url = True
    for logical in functions:
        env = res[logical]["Properties"].get("Environment", {}).get("Variables", {})
        for var, value in env.items():
            if var.endswith(("_QUEUE", "_DLQ")) and not (isinstance(value, dict) and value.get("Ref") in queues):
                queue_env_by_url = False
                fail(f"{logical}: {var} is not a Ref of a queue (its URL): the code would need sqs:GetQueueUrl")
    if queue_env_by_url:
        calls.pop("sqs:GetQueueUrl", None)

    # ---- IAM ----
    granted_anywhere = {}
    for logical, fn in functions.items():
        props = fn["Properties"]
        role_id, _ = target_of(props.get("Role"))
        role = res.get(role_id, {}).get("Properties", {})
        binary = binary_of(logical)
        for arn in role.get("ManagedPolicyArns", []):
            if arn != LAMBDA_BASIC:
                fail(f"{logical}: role carries the managed policy {arn} (its statements are not checked here "
                     f"and AWS's SQS/other service-role policies allow '*': put what is needed inline)")
        env = props.get("Environment", {}).get("Variables", {})
        configured = {target_of(v)[0] for v in env.values() if isinstance(v, dict)}
        mapped = {target_of(m["Properties"]["EventSourceArn"])[0] for m in res.values()
                  if m["Type"] == "AWS::Lambda::EventSourceMapping"
                  and m["Properties"].get("FunctionName") == {"Ref": logical}}
        granted = {}  # action -> set of (logical target, suffix)
        for policy in role.get("Policies", []):
            for st in policy["PolicyDocument"].get("Statement", []):
                if st.get("Effect") != "Allow":
                    continue
                actions = as_list(st.get("Action", []))
                for r in as_list(st.get("Resource", [])):
                    if r == "*":
                        for a in actions:
                            if a not in NO_RESOURCE_LEVEL:
                                fail(f"{logical}: {a} on Resource '*'")
                            granted.setdefault(a, set()).add(("*", ""))
                        continue
                    target, suffix = target_of(r)
                    for a in actions:
                        granted.setdefault(a, set()).add((target, suffix))
                        check_resource(logical, binary, a, target, suffix, st, configured, mapped,
                                       queues, tables, buckets, env)
        for a, targets in granted.items():
            if "*" in a:
                fail(f"{logical}: wildcard action {a}")
            elif a not in calls and not (a in SQS_POLLER and targets & {(q, "") for q in mapped}):
                fail(f"{logical}: allows {a}, which no code calls"
                     + (" (and it is not Lambda's poller on the function's own queue)" if a.startswith("sqs:") else ""))
            granted_anywhere.setdefault(a, set()).update(targets)
        for q in mapped:
            for a in sorted(SQS_POLLER):
                if (q, "") not in granted.get(a, set()):
                    fail(f"{logical}: its event source mapping needs {a} on {q} (Lambda polls with the function's role)")
        if requests is not None:
            for call in requests.get(binary, []):
                check_request(logical, call, granted, res)

    # Every action the code calls is allowed to some function, or that call always fails.
    for action, where in sorted(calls.items()):
        if action not in granted_anywhere:
            fail(f"no function may {action}, which the code calls ({', '.join(where[:3])})")
    if requests is not None:
        for binary in sorted(set(requests) - set(by_binary)):
            fail(f"recorded requests of {binary!r}, which is no function of the template")

    # ---- routes ----
    api = [k for k, r in res.items() if r["Type"] == "AWS::ApiGatewayV2::Api"]
    routes = {}
    for a in api:
        body = res[a]["Properties"].get("Body", {})
        if body.get("components", {}).get("securitySchemes") or body.get("security"):
            fail(f"{a}: the HTTP API has an authorizer (Kiln's functions check bearer tokens; webhooks carry none)")
        for path, methods in body.get("paths", {}).items():
            for method, op in methods.items():
                m = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
                uri = json.dumps(op.get("x-amazon-apigateway-integration", {}).get("uri", ""))
                target = re.search(r"\$\{(\w+)\.Arn\}", uri)
                fn = binary_of(target.group(1)) if target else None
                routes[(m, path)] = fn
                if op.get("security"):
                    fail(f"{m} {path}: behind an authorizer ({op['security']})")
    for a in [k for k, r in res.items() if r["Type"] == "AWS::ApiGatewayV2::Authorizer"]:
        fail(f"{a}: an API Gateway authorizer (the routes' tokens are checked by the functions)")
    readme = readme_routes()
    named = {}
    for fn, items in readme.items():
        for item in items:
            named[item] = fn
            if item not in routes:
                fail(f"README names {item[0]} {item[1]} -> {fn}, and the HTTP API has no such route")
            elif routes[item] != fn:
                fail(f"{item[0]} {item[1]}: reaches {routes[item]}, README says {fn}")
    for item, fn in sorted(routes.items(), key=str):
        if item not in named:
            fail(f"{item[0]} {item[1]} -> {fn}: a route of the HTTP API the README's table does not name")
    served = {}
    for method, path, access in code_routes():
        best = gateway_match(routes, method, path)
        want = gateway_match(named, method, path)
        if best is None:
            fail(f"{method} {path} (the code's router, {access}): no route of the HTTP API reaches it")
            continue
        served.setdefault(best[2], []).append(f"{method} {path}")
        if want is not None and want[2] != best[2]:
            fail(f"{method} {path} (the code's router): reaches {best[2]} through {best[1][0]} {best[1][1]}; "
                 f"the README's table sends it to {want[2]} ({want[1][0]} {want[1][1]})")
    if not served:
        fail("no route of the code's router found (shared/api/src/routes.rs, ui.rs): has the route table moved?")

    # ---- event source mappings ----
    stated = batch_mappings()
    uses = function_mappings(binaries)
    queue_props = {k: res[k]["Properties"] for k in queues}
    for binary, consts in sorted(uses.items()):
        logical = by_binary.get(binary)
        if logical is None:
            continue
        esms = [m["Properties"] for m in res.values() if m["Type"] == "AWS::Lambda::EventSourceMapping"
                and m["Properties"].get("FunctionName") == {"Ref": logical}]
        if len(consts) != 1 or next(iter(consts)) not in stated:
            fail(f"{binary}: main.rs hands batch::handle {sorted(consts)}, not one Mapping of shared/lambda/src/batch.rs")
            continue
        size, window = stated[next(iter(consts))]
        if len(esms) != 1:
            fail(f"{logical}: {len(esms)} event source mappings; its code handles SQS batches from one")
            continue
        e = esms[0]
        q, _ = target_of(e.get("EventSourceArn"))
        fifo = queue_props.get(q, {}).get("FifoQueue") is True
        if e.get("BatchSize") != size:
            fail(f"{logical}: BatchSize {e.get('BatchSize')}, the code states {size} ({next(iter(consts))})")
        got_window = e.get("MaximumBatchingWindowInSeconds", 0)
        if fifo and "MaximumBatchingWindowInSeconds" in e:
            fail(f"{logical}: a batching window on the FIFO queue {q} (Lambda does not support one)")
        elif got_window != window:
            fail(f"{logical}: MaximumBatchingWindowInSeconds {got_window}, the code states {window}")
        if e.get("FunctionResponseTypes") != ["ReportBatchItemFailures"]:
            fail(f"{logical}: FunctionResponseTypes {e.get('FunctionResponseTypes')}: the code answers with "
                 f"batchItemFailures (ReportBatchItemFailures), else one failure redelivers the whole batch")
    for m in [m for m in res.values() if m["Type"] == "AWS::Lambda::EventSourceMapping"]:
        fn = binary_of(m["Properties"]["FunctionName"]["Ref"])
        if fn not in uses:
            fail(f"an event source mapping to {fn}, whose code handles no SQS batch")
    return served


def check_resource(logical, binary, action, target, suffix, st, configured, mapped, queues, tables, buckets, env):
    """The resource of one allowed action is one the function is configured with, of the right kind."""
    service = action.split(":")[0]
    where = f"{logical}: {action} on {target or suffix}{suffix if target else ''}"
    if service == "dynamodb":
        if target not in tables or suffix not in ("", "/index/gsi1") or target not in configured:
            fail(f"{where}: not the state table (or its index) the function is configured with")
    elif service == "s3":
        ok_suffix = "" if action == "s3:ListBucket" else "/logs/*"
        if target not in buckets or target not in configured or suffix != ok_suffix:
            fail(f"{where}: must be the log bucket{' ' + ok_suffix if ok_suffix else ''}, as the code keys objects")
    elif service == "sqs":
        if target not in queues or suffix or (target not in configured and target not in mapped):
            fail(f"{where}: not a queue the function is configured with or mapped to")
    elif service == "ssm":
        prefix = env.get("KILN_SECRETS_PREFIX")
        prefix = prefix.get("Fn::Sub") if isinstance(prefix, dict) else None
        if not prefix:
            fail(f"{where}: the function has no KILN_SECRETS_PREFIX, so no parameter to reach")
        elif target is not None or f":parameter{prefix}/" not in suffix:
            fail(f"{where}: must be limited to parameters under {prefix}/")
    elif service == "kms":
        cond = json.dumps(st.get("Condition", {}))
        if "kms:ViaService" not in cond or "ssm." not in cond:
            fail(f"{where}: KMS only through SSM (a kms:ViaService ssm condition)")
    else:
        fail(f"{where}: a service the code does not use")


def check_request(logical, call, granted, res):
    """One recorded request of the function is allowed by its role."""
    action, resource = call["action"], call.get("resource")
    targets = granted.get(action)
    if not targets:
        fail(f"{logical}: its code called {action} (recorded: {call.get('operation')}"
             f"{' on ' + resource if resource else ''}), and its role does not allow it")
        return
    kind = call.get("kind")
    if kind and not any(t == "*" or t is None or res.get(t, {}).get("Type") == kind for t, _ in targets):
        fail(f"{logical}: its code called {action} on a {kind}, and its role allows it only on {sorted(map(str, targets))}")
    if kind == "AWS::SSM::Parameter" and resource:
        patterns = [sfx.split(":parameter", 1)[1].replace("${Prefix}", PREFIX[0]) for t, sfx in targets
                    if t is None and ":parameter" in sfx]
        if not any(fnmatch.fnmatchcase(resource, p) for p in patterns):
            fail(f"{logical}: its code called {action} on the parameter {resource}, and its role allows it only "
                 f"on {patterns}")
    if kind in ("AWS::SQS::Queue", "AWS::DynamoDB::Table") and resource:
        # The recorded name, as the template names it (with the recording's prefix).
        name_prop = {"AWS::SQS::Queue": "QueueName", "AWS::DynamoDB::Table": "TableName"}[kind]
        owner = [k for k, r in res.items() if r["Type"] == kind
                 and isinstance(r["Properties"].get(name_prop), dict)
                 and r["Properties"][name_prop].get("Fn::Sub", "").replace("${Prefix}", PREFIX[0]) == resource]
        if not owner:
            fail(f"{logical}: its code called {action} on {resource}, which the template does not make "
                 f"(recorded with prefix {PREFIX[0]!r})")
        elif not any(t == owner[0] for t, _ in targets):
            fail(f"{logical}: its code called {action} on {owner[0]}, and its role allows it only on "
                 f"{sorted(str(t) for t, _ in targets)}")


def main(argv):
    if argv[:1] == ["--transform"]:
        out = transform(argv[1])
        Path(argv[2]).write_text(json.dumps(out, indent=1))
        return
    requests = None
    if "--requests" in argv:
        i = argv.index("--requests")
        requests = json.loads(Path(argv[i + 1]).read_text())
        argv = argv[:i] + argv[i + 2:]
    if "--prefix" in argv:
        i = argv.index("--prefix")
        PREFIX[0] = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    path = argv[0] if argv else str(ROOT / "infra/template.yaml")
    try:
        template = transform(path)
    except Exception as e:  # the translator's own errors: the template would not deploy
        sys.exit(f"check_deploy: {path}: SAM's transform refused it: {e}")
    check(template, requests)
    if errors:
        for e in errors:
            print(f"check_deploy: {path}: {e}", file=sys.stderr)
        sys.exit(1)
    n = sum(1 for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function")
    print(f"check_deploy: {path}: IAM, routes and event source mappings of {n} functions match the code"
          + (" and the recorded requests" if requests is not None else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
