#!/usr/bin/env python3
"""Event-source bridge for LocalStack: runs whole builds through the real Lambda binaries.

  bridge.py deploy PREFIX ENVFILE   the template's stateful resources (table, bucket, queues with
                                    their DLQs and redrive) as a plain CloudFormation stack
                                    <PREFIX>-stateful; writes the KILN_* names read from the stack
  bridge.py run EXAMPLE...          with `cargo lambda watch` serving the functions: submit each
                                    example to `compile` (an HTTP API v2 request), then play the
                                    event source mappings (poll SQS, invoke the function with the
                                    batch, delete what it did not list in batchItemFailures) until
                                    the build ends; compare it with `kiln run --json`
  bridge.py destroy PREFIX          delete the stack, then the table and bucket it retains

The runner's HTTP calls (KILN_API_URL) go to a small proxy here that turns them into HTTP API
v2 events for `log-ingest` (ingest routes) or `api` (the rest), as API Gateway would.
Environment: AWS_* (localstack/.state/env), KILN_LAMBDA_URL (the emulator), KILN_PROXY_PORT,
KILN_BIN (the kiln CLI).
"""
import base64
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
from cfnlint.decode import cfn_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, "infra", "template.yaml")
STATEFUL = {"AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::S3::BucketPolicy", "AWS::SQS::Queue"}
TOKEN = "test-admin-token"
# Logical id in the template -> the variable the functions read its name from.
# LocalStack's CloudFormation provider cannot create a table with SSESpecification (CreateTable is
# retried and fails with "Table already exists"; localstack/localstack#10433): the one property
# left out here. DynamoDB tables are encrypted at rest on AWS with or without it.
LOCALSTACK_OMITS = {("StateTable", "SSESpecification")}
NAMES = {"StateTable": "KILN_TABLE", "LogBucket": "KILN_BUCKET", "JobsQueue": "KILN_JOBS_QUEUE",
         "DispatchQueue": "KILN_DISPATCH_QUEUE", "EventsQueue": "KILN_EVENTS_QUEUE", "JobsDlq": "KILN_JOBS_DLQ"}


def client(service):
    return boto3.client(service, endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ.get("AWS_REGION", "us-east-1"),
                        aws_access_key_id="test", aws_secret_access_key="test")


def log(msg):
    print(f"bridge: {msg}", flush=True)


# ---- 1. the stateful part of the template, through CloudFormation -------------------------------


def refs(node):
    """Logical ids and parameters a template fragment refers to (Ref, GetAtt, Sub)."""
    out = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "Ref":
                out.add(v)
            elif k == "Fn::GetAtt":
                out.add(v[0] if isinstance(v, list) else v.split(".")[0])
            elif k == "Fn::Sub":
                s = v[0] if isinstance(v, list) else v
                out |= {m.split(".")[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", s)}
                if isinstance(v, list):
                    out |= refs(v[1])
            else:
                out |= refs(v)
    elif isinstance(node, list):
        for v in node:
            out |= refs(v)
    return {r for r in out if not r.startswith("AWS::")}


def stateful_template():
    """The template's stateful resources, their properties and policies exactly as written,
    with the parameters and outputs they need (SAM resources and functions left out)."""
    t = json.loads(json.dumps(cfn_yaml.load(TEMPLATE)))
    resources = {k: v for k, v in t["Resources"].items() if v["Type"] in STATEFUL}
    for logical, prop in LOCALSTACK_OMITS:
        resources[logical]["Properties"].pop(prop)
    params = {k: v for k, v in t["Parameters"].items() if k in refs(resources)}
    missing = refs(resources) - set(resources) - set(params)
    if missing:
        sys.exit(f"bridge: the stateful resources refer to {sorted(missing)}, which are not stateful")
    outputs = {k: v for k, v in t.get("Outputs", {}).items() if refs(v) <= set(resources) | set(params)}
    return {"AWSTemplateFormatVersion": "2010-09-09", "Description": "Kiln's stateful resources (from infra/template.yaml)",
            "Parameters": params, "Resources": resources, "Outputs": outputs}


def deploy(prefix, envfile):
    cf, sqs = client("cloudformation"), client("sqs")
    body = stateful_template()
    log(f"stack {prefix}-stateful: {', '.join(sorted(body['Resources']))}")
    t0 = time.time()
    cf.create_stack(StackName=f"{prefix}-stateful", TemplateBody=json.dumps(body),
                    Parameters=[{"ParameterKey": "Prefix", "ParameterValue": prefix}])
    try:
        cf.get_waiter("stack_create_complete").wait(StackName=f"{prefix}-stateful", WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    except Exception as e:
        events = cf.describe_stack_events(StackName=f"{prefix}-stateful")["StackEvents"]
        for ev in events[:15]:
            print(ev["LogicalResourceId"], ev["ResourceStatus"], ev.get("ResourceStatusReason", ""), file=sys.stderr)
        sys.exit(f"bridge: stack {prefix}-stateful failed: {e}")
    stack = cf.describe_stacks(StackName=f"{prefix}-stateful")["Stacks"][0]
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                for r in cf.describe_stack_resources(StackName=f"{prefix}-stateful")["StackResources"]}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    log(f"{stack['StackStatus']} in {time.time() - t0:.1f}s; outputs {sorted(outputs)}")
    # The outputs name the same resources; the names are the ones the code expects.
    for key, logical in [("TableName", "StateTable"), ("BucketName", "LogBucket"), ("JobsQueueUrl", "JobsQueue"),
                         ("JobsDlqUrl", "JobsDlq"), ("DispatchQueueUrl", "DispatchQueue"), ("EventsQueueUrl", "EventsQueue")]:
        assert outputs.get(key) == physical[logical], f"output {key}={outputs.get(key)} is not {logical}={physical[logical]}"
    env = {var: physical[logical].rsplit("/", 1)[-1] for logical, var in NAMES.items()}
    # What CloudFormation made is what the template says: FIFO events queue, redrive to the DLQs.
    attrs = lambda logical: sqs.get_queue_attributes(QueueUrl=physical[logical], AttributeNames=["All"])["Attributes"]
    assert attrs("EventsQueue").get("FifoQueue") == "true", attrs("EventsQueue")
    for queue, dlq, count in [("JobsQueue", "JobsDlq", 3), ("DispatchQueue", "DispatchDlq", 5), ("EventsQueue", "EventsDlq", 5)]:
        redrive = json.loads(attrs(queue)["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == attrs(dlq)["QueueArn"] and int(redrive["maxReceiveCount"]) == count, redrive
    ttl = client("dynamodb").describe_time_to_live(TableName=env["KILN_TABLE"])["TimeToLiveDescription"]
    assert ttl.get("AttributeName") == "expires_at", ttl
    with open(envfile, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in env.items()))
    log("names: " + ", ".join(f"{k}={v}" for k, v in env.items()))


def destroy(prefix):
    cf, ddb, s3 = client("cloudformation"), client("dynamodb"), client("s3")
    name = f"{prefix}-stateful"
    try:
        physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in cf.describe_stack_resources(StackName=name)["StackResources"]}
    except Exception:
        physical = {}
    try:
        cf.delete_stack(StackName=name)
        cf.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    except Exception as e:
        log(f"delete stack: {e}")
    # The table and bucket are DeletionPolicy: Retain; delete them by hand.
    table, bucket = physical.get("StateTable", f"{prefix}-state"), physical.get("LogBucket", f"{prefix}-logs")
    try:
        ddb.delete_table(TableName=table)
    except Exception:
        pass
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=bucket)
    except Exception:
        pass
    sqs = client("sqs")  # in case the stack's delete left any
    for q in sqs.list_queues(QueueNamePrefix=f"{prefix}-").get("QueueUrls", []):
        sqs.delete_queue(QueueUrl=q)
    log(f"deleted stack {name}, table {table}, bucket {bucket}")


# ---- 2. the functions, as API Gateway and the event source mappings call them -------------------


def invoke(function, payload):
    url = f"{os.environ['KILN_LAMBDA_URL']}/2015-03-31/functions/{function}/invocations"
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        out = json.loads(r.read() or b"null")
    if isinstance(out, dict) and "errorType" in out:
        raise RuntimeError(f"{function} failed: {out}")
    return out


def route(method, path):
    """API Gateway's routes (infra/template.yaml): the function, route key and path parameters."""
    m = re.fullmatch(r"/v1/builds/([^/]+)/ingest/(.+)", path)
    if method == "POST" and m:
        return "log-ingest", "POST /v1/builds/{id}/ingest/{proxy+}", {"id": m[1], "proxy": m[2]}
    m = re.fullmatch(r"/v1/repos/([^/]+)/([^/]+)/builds", path)
    if method == "POST" and m:
        return "compile", "POST /v1/repos/{org}/{repo}/builds", {"org": m[1], "repo": m[2]}
    if path == "/healthz":
        return "api", "GET /healthz", {}
    return "api", "ANY /v1/{proxy+}", {"proxy": path[len("/v1/"):]}


def http_call(method, path_qs, headers=None, body=b""):
    """An HTTP request as an HTTP API (payload v2) event -> (status, headers, body bytes)."""
    path, _, qs = path_qs.partition("?")
    function, route_key, params = route(method, path)
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    headers.setdefault("host", "bridge.execute-api.us-east-1.amazonaws.com")
    event = {
        "version": "2.0", "routeKey": route_key, "rawPath": path, "rawQueryString": qs, "headers": headers,
        "requestContext": {
            "accountId": "000000000000", "apiId": "bridge", "domainName": headers["host"], "domainPrefix": "bridge",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": headers.get("user-agent", "")},
            "requestId": f"req-{time.time_ns()}", "routeKey": route_key, "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()), "timeEpoch": int(time.time() * 1000),
        },
        "pathParameters": params, "isBase64Encoded": True, "body": base64.b64encode(body).decode(),
    }
    if qs:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in urllib.parse.parse_qs(qs, keep_blank_values=True).items()}
    out = invoke(function, event)
    data = out.get("body") or ""
    data = base64.b64decode(data) if out.get("isBase64Encoded") else data.encode()
    return out.get("statusCode", 200), out.get("headers") or {}, data


def api_get(path):
    status, _, body = http_call("GET", path, {"authorization": f"Bearer {TOKEN}"})
    return status, body


class Proxy(http.server.BaseHTTPRequestHandler):
    """KILN_API_URL for the runner: HTTP -> HTTP API v2 event -> log-ingest / api."""
    protocol_version = "HTTP/1.1"

    def handle_any(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            status, headers, data = http_call(self.command, self.path, dict(self.headers.items()), body)
        except Exception as e:  # the function failed: API Gateway answers 500
            status, headers, data = 500, {}, str(e).encode()
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = handle_any

    def log_message(self, *args):
        pass


def sqs_event(arn, msgs):
    return {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                         "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                         "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1"} for m in msgs]}


def terminal(doc):
    busy = ("pending", "running")
    return doc.get("status") not in busy and all(s.get("status") not in busy for s in doc.get("stages", []))


def run_build(sqs, mappings, example, stats, limit=90):
    status, _, body = http_call("POST", "/v1/repos/acme/app/builds",
                                {"authorization": f"Bearer {TOKEN}", "content-type": "application/yaml"}, open(example, "rb").read())
    assert status == 201, f"submit {example}: {status} {body[:500]!r}"
    build = json.loads(body)["id"]
    log(f"{os.path.basename(example)}: compile -> 201, build {build}")
    deadline = time.time() + limit
    while time.time() < deadline:
        idle = True
        for queue, url, arn, function, batch in mappings:
            msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=batch, WaitTimeSeconds=0, AttributeNames=["All"]).get("Messages", [])
            if not msgs:
                continue
            idle = False
            out = invoke(function, sqs_event(arn, msgs))
            failed = {f["itemIdentifier"] for f in (out or {}).get("batchItemFailures", [])}
            for m in msgs:
                if m["MessageId"] in failed:  # retried after the visibility timeout, as with Lambda (shortened here)
                    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=1)
                else:
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            stats[function] = stats.get(function, 0) + 1
            stats["messages"] = stats.get("messages", 0) + len(msgs)
            stats["failures"] = stats.get("failures", 0) + len(failed)
        if idle:
            status, body = api_get(f"/v1/builds/{build}")
            assert status == 200, f"GET /v1/builds/{build}: {status} {body[:300]!r}"
            doc = json.loads(body)
            if terminal(doc):
                return build, doc
            time.sleep(0.2)
    sys.exit(f"bridge: build {build} of {example} did not end within {limit}s")


def outcome(doc):
    v = [f"build {doc['status']}"]
    for s in doc["stages"]:
        v.append(f"{s['name']} {s['status']} attempt {s['attempt']}")
        v += [f"  {t['name']} {t['status']} {t['exit_code']}" for t in s["steps"]]
    return v


def mask(text, build, root):
    """Build ids and workspace paths differ between the two runs: under ROOT, or (steps run
    as an unprivileged user under a root runner that user cannot reach) in a fresh job area
    of the system temp dir, `kiln-job-<random>`."""
    text = re.sub(re.escape(root) + r"\S*", "<workspace>", text)
    text = re.sub(r"/\S*/kiln-job-[0-9a-f]+\S*", "<workspace>", text)
    return text.replace(build, "<build>")


def compare(example, build, doc):
    kiln = os.environ.get("KILN_BIN", os.path.join(ROOT, "target", "debug", "kiln"))
    with tempfile.TemporaryDirectory() as data:
        p = subprocess.run([kiln, "run", example, "--json", "--data-dir", data], cwd=data, capture_output=True)
        local = json.loads(p.stdout)
        assert outcome(doc) == outcome(local), f"{example}: Lambda {outcome(doc)} != kiln run {outcome(local)}"
        n = 0
        for s in local["stages"]:
            for t in s["steps"]:
                stream = f"{s['name']}/{t['name']}"
                lp = subprocess.run([kiln, "logs", local["id"], stream, "--data-dir", data], cwd=data, capture_output=True)
                status, body = api_get(f"/v1/builds/{build}/logs/{stream}?max=67108864")
                # a step that never ran has no log locally, an empty one through the API
                mine = mask(lp.stdout.decode(errors="replace"), local["id"], os.path.realpath(data)) if lp.returncode == 0 else ""
                assert status in (200, 404), f"GET logs {stream}: {status} {body[:300]!r}"
                theirs = mask(body.decode(errors="replace"), build, os.environ.get("KILN_WORKSPACE_ROOT", "/tmp/kiln")) if status == 200 else ""
                assert mine == theirs, f"{example} {stream}: Lambda log {theirs!r} != kiln run log {mine!r}"
                n += theirs != ""
    log(f"{os.path.basename(example)}: {doc['status']}, same statuses and {n} step logs as `kiln run` (exit {p.returncode})")


def run(examples):
    sqs = client("sqs")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["KILN_PROXY_PORT"])), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    mappings = []  # the template's event source mappings: queue -> function, batch size
    for var, function, batch in [("KILN_EVENTS_QUEUE", "event-fanin", 10), ("KILN_DISPATCH_QUEUE", "dispatch", 10), ("KILN_JOBS_QUEUE", "runner", 1)]:
        url = sqs.get_queue_url(QueueName=os.environ[var])["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        mappings.append((os.environ[var], url, arn, function, batch))
    status, body = api_get("/healthz")
    assert status == 200, f"/healthz: {status} {body!r}"
    for example in examples:
        t0, stats = time.time(), {}
        build, doc = run_build(sqs, mappings, os.path.abspath(example), stats)
        log(f"{os.path.basename(example)}: ended {doc['status']} in {time.time() - t0:.1f}s; invocations {stats}")
        compare(os.path.abspath(example), build, doc)
    server.shutdown()


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "deploy" and len(sys.argv) == 4:
        deploy(sys.argv[2], sys.argv[3])
    elif cmd == "destroy" and len(sys.argv) == 3:
        destroy(sys.argv[2])
    elif cmd == "run" and len(sys.argv) > 2:
        run(sys.argv[2:])
    elif cmd == "template":
        print(json.dumps(stateful_template(), indent=2))
    else:
        sys.exit(__doc__)
