#!/usr/bin/env python3
"""Event-source bridge for LocalStack: runs whole builds through the real Lambda binaries.

  bridge.py deploy PREFIX ENVFILE   the template's stateful resources (table, bucket, queues with
                                    their DLQs and redrive) as a plain CloudFormation stack
                                    <PREFIX>-stateful; writes the KILN_* names read from the stack
  bridge.py run EXAMPLE...          with `cargo lambda watch` serving the functions: submit each
                                    example to `compile` (an HTTP API v2 request), then play the
                                    event source mappings (poll SQS, invoke the function with the
                                    batch, delete what it did not list in batchItemFailures) until
                                    the build ends; compare it with `kiln run --json`. Then a build
                                    from git: register a repository on a fake GitHub API (here),
                                    send a signed push webhook to `api`, and check the build, its
                                    checkout and the commit statuses `notify` posted
  bridge.py destroy PREFIX          delete the stack, then the table and bucket it retains

The runner's HTTP calls (KILN_API_URL) go to a small proxy here that turns them into HTTP API
v2 events for `log-ingest` (ingest routes) or `api` (the rest), as API Gateway would.
Environment: AWS_* (localstack/.state/env), KILN_LAMBDA_URL (the emulator), KILN_PROXY_PORT,
KILN_BIN (the kiln CLI), KILN_PUBLIC_URL (what the notify function links statuses to).
"""
import base64
import gzip
import hashlib
import hmac
import io
import tarfile
import uuid
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
         "DispatchQueue": "KILN_DISPATCH_QUEUE", "EventsQueue": "KILN_EVENTS_QUEUE", "JobsDlq": "KILN_JOBS_DLQ",
         "NotifyQueue": "KILN_NOTIFY_QUEUE"}
QUEUES = {"JobsQueue", "DispatchQueue", "EventsQueue", "JobsDlq", "NotifyQueue"}


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
                         ("JobsDlqUrl", "JobsDlq"), ("DispatchQueueUrl", "DispatchQueue"), ("EventsQueueUrl", "EventsQueue"),
                         ("NotifyQueueUrl", "NotifyQueue")]:
        assert outputs.get(key) == physical[logical], f"output {key}={outputs.get(key)} is not {logical}={physical[logical]}"
    # Queues by URL, as the template passes them (Ref of a queue is its URL: no GetQueueUrl).
    env = {var: physical[logical] if logical in QUEUES else physical[logical].rsplit("/", 1)[-1]
           for logical, var in NAMES.items()}
    # What CloudFormation made is what the template says: FIFO events queue, redrive to the DLQs.
    attrs = lambda logical: sqs.get_queue_attributes(QueueUrl=physical[logical], AttributeNames=["All"])["Attributes"]
    for fifo in ("EventsQueue", "NotifyQueue"):
        assert attrs(fifo).get("FifoQueue") == "true", attrs(fifo)
    for queue, dlq, count in [("JobsQueue", "JobsDlq", 3), ("DispatchQueue", "DispatchDlq", 5), ("EventsQueue", "EventsDlq", 5),
                              ("NotifyQueue", "NotifyDlq", 5)]:
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
    # The git credentials the push test registered (KILN_SECRETS_PREFIX=/<prefix>).
    ssm = client("ssm")
    try:
        names = [p["Name"] for page in ssm.get_paginator("get_parameters_by_path").paginate(Path=f"/{prefix}", Recursive=True)
                 for p in page["Parameters"]]
        for i in range(0, len(names), 10):
            ssm.delete_parameters(Names=names[i:i + 10])
    except Exception as e:
        log(f"delete parameters: {e}")
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
    if method == "POST" and path in ("/v1/hooks/github", "/v1/hooks/gitea"):
        return "api", f"POST {path}", {}
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
    return build, pump(sqs, mappings, build, os.path.basename(example), stats, limit)


def pump(sqs, mappings, build, what, stats, limit=90, until=None):
    """Plays the event source mappings until the build has ended (and `until()` holds,
    when given), then returns the build's document."""
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
            if terminal(doc) and (until is None or until()):
                return doc
            time.sleep(0.2)
    sys.exit(f"bridge: build {build} of {what} did not end within {limit}s")


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
    for var, function, batch in [("KILN_EVENTS_QUEUE", "event-fanin", 10), ("KILN_DISPATCH_QUEUE", "dispatch", 10), ("KILN_JOBS_QUEUE", "runner", 1),
                                 ("KILN_NOTIFY_QUEUE", "notify", 10)]:
        url = os.environ[var]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        mappings.append((url.rsplit("/", 1)[-1], url, arn, function, batch))
    status, body = api_get("/healthz")
    assert status == 200, f"/healthz: {status} {body!r}"
    for example in examples:
        t0, stats = time.time(), {}
        build, doc = run_build(sqs, mappings, os.path.abspath(example), stats)
        log(f"{os.path.basename(example)}: ended {doc['status']} in {time.time() - t0:.1f}s; invocations {stats}")
        compare(os.path.abspath(example), build, doc)
    git_push(sqs, mappings)
    server.shutdown()


# ---- 3. a build from git: a signed push webhook, a fake GitHub, commit statuses -----------------

GIT_REPO = "acme/site"
GIT_SECRET = "bridge-webhook-secret-0123"
GIT_TOKEN = "ghp_bridgeTokenForTheFakeHost"
GIT_PIPELINE = """version: "1"
on:
  push: { branches: [main] }
stages:
  build:
    steps:
      - name: show
        commands:
          - cat hello.txt
          - echo "commit=$KILN_COMMIT branch=$KILN_BRANCH event=$KILN_GIT_EVENT"
"""


def tarball(top, files):
    """A commit's tarball as GitHub serves it: gzip'd tar, everything under one top dir."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        d = tarfile.TarInfo(top)
        d.type, d.mode = tarfile.DIRTYPE, 0o775
        t.addfile(d)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), 0o664
            t.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


class FakeGitHub(http.server.BaseHTTPRequestHandler):
    """GitHub's REST shapes for one repository: contents (raw), tarball, statuses (recorded).
    `server.commits`: sha -> {path: bytes}; `server.statuses`: (sha, body, authorization)."""
    protocol_version = "HTTP/1.1"

    def answer(self, status, body=b"", content_type="application/json"):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if self.headers.get("authorization") != f"Bearer {GIT_TOKEN}":
            return self.answer(404, b'{"message":"Not Found"}')  # GitHub hides private repositories
        m = re.fullmatch(rf"/repos/{GIT_REPO}/contents/(.+)", url.path)
        if m:
            ref = urllib.parse.parse_qs(url.query).get("ref", [""])[0]
            data = self.server.commits.get(ref, {}).get(m[1])
            if data is None:
                return self.answer(404, b'{"message":"Not Found"}')
            return self.answer(200, data, "application/vnd.github.raw")
        m = re.fullmatch(rf"/repos/{GIT_REPO}/tarball/([0-9a-f]{{40}})", url.path)
        if m and m[1] in self.server.commits:
            top = f"{GIT_REPO.replace('/', '-')}-{m[1][:7]}"
            return self.answer(200, tarball(top, self.server.commits[m[1]]), "application/x-gzip")
        self.answer(404, b'{"message":"Not Found"}')

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        m = re.fullmatch(rf"/repos/{GIT_REPO}/statuses/([0-9a-f]{{40}})", self.path)
        if not m:
            return self.answer(404, b'{"message":"Not Found"}')
        self.server.statuses.append((m[1], json.loads(body), self.headers.get("authorization")))
        self.answer(201, json.dumps({"id": len(self.server.statuses), **json.loads(body)}).encode())

    def log_message(self, *args):
        pass


def push_payload(after, message):
    """A `push` webhook payload, GitHub's documented example trimmed: main moved to `after`."""
    owner, name = GIT_REPO.split("/")
    commit = {"id": after, "tree_id": hashlib.sha1(after.encode()).hexdigest(), "distinct": True, "message": message,
              "timestamp": "2026-01-02T03:04:05Z", "url": f"https://github.com/{GIT_REPO}/commit/{after}",
              "author": {"name": "The Octocat", "email": "octocat@github.com", "username": "octocat"},
              "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
              "added": ["hello.txt"], "removed": [], "modified": [".kiln.yml"]}
    return {"ref": "refs/heads/main", "before": "0" * 39 + "1", "after": after, "created": False, "deleted": False,
            "forced": False, "base_ref": None, "compare": f"https://github.com/{GIT_REPO}/compare/0000001...{after[:7]}",
            "commits": [commit], "head_commit": commit,
            "repository": {"id": 35129377, "name": name, "full_name": GIT_REPO, "private": True,
                           "owner": {"login": owner, "id": 21031067, "type": "Organization"},
                           "html_url": f"https://github.com/{GIT_REPO}", "default_branch": "main"},
            "pusher": {"name": "octocat", "email": "octocat@github.com"},
            "sender": {"login": "octocat", "id": 583231, "type": "User"}}


def git_push(sqs, mappings):
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    fake.commits, fake.statuses = {}, []
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    api_url = f"http://127.0.0.1:{fake.server_address[1]}"
    t0, stats = time.time(), {}
    sha = hashlib.sha1(f"bridge {time.time_ns()}".encode()).hexdigest()
    fake.commits[sha] = {".kiln.yml": GIT_PIPELINE.encode(), "hello.txt": f"hello from {sha}\n".encode()}

    # Registered through the api function (admin), as `kiln repos add` does.
    settings = {"provider": "github", "api_url": api_url, "webhook_secret": GIT_SECRET, "token": GIT_TOKEN}
    status, _, body = http_call("PUT", f"/v1/repos/{GIT_REPO}", {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
                                json.dumps(settings).encode())
    assert status == 200, f"PUT /v1/repos/{GIT_REPO}: {status} {body[:300]!r}"
    assert GIT_SECRET.encode() not in body and GIT_TOKEN.encode() not in body, f"a credential in the answer: {body!r}"

    # The webhook, as GitHub delivers it: no bearer token, an HMAC signature.
    payload = json.dumps(push_payload(sha, "Make the greeting friendlier")).encode()
    delivery = str(uuid.uuid4())
    headers = {"content-type": "application/json", "user-agent": "GitHub-Hookshot/8c3ee2f", "x-github-event": "push",
               "x-github-delivery": delivery, "x-github-hook-id": "501234567"}
    status, _, body = http_call("POST", "/v1/hooks/github", dict(headers, **{"x-hub-signature-256": "sha256=" + "0" * 64}), payload)
    assert status == 401, f"a wrong signature: {status} {body[:300]!r}"
    headers["x-hub-signature-256"] = "sha256=" + hmac.new(GIT_SECRET.encode(), payload, hashlib.sha256).hexdigest()
    status, _, body = http_call("POST", "/v1/hooks/github", headers, payload)
    assert status == 201, f"push webhook: {status} {body[:500]!r}"
    builds = json.loads(body)["builds"]
    assert len(builds) == 1, body
    build = builds[0]
    log(f"git: push to main of {sha[:12]} -> 201, build {build}")

    kiln_states = lambda: [b["state"] for s, b, _ in fake.statuses if s == sha and b.get("context") == "kiln"]
    doc = pump(sqs, mappings, build, f"push {sha[:12]}", stats, until=lambda: len(kiln_states()) >= 2)
    assert doc["status"] == "succeeded", f"git build: {json.dumps(doc)[:1500]}"
    assert doc.get("git", {}).get("commit") == sha and doc["git"].get("branch") == "main", doc.get("git")
    status, out = api_get(f"/v1/builds/{build}/logs/build/show")
    assert status == 200, f"GET logs build/show: {status} {out[:300]!r}"
    out = out.decode(errors="replace")
    assert f"hello from {sha}\n" in out, f"the step did not see the checked-out file: {out!r}"
    assert f"commit={sha} branch=main event=push\n" in out, f"the step's git variables: {out!r}"
    assert kiln_states() == ["pending", "success"], f"statuses of context kiln: {fake.statuses}"
    link = f"{os.environ.get('KILN_PUBLIC_URL', '').rstrip('/')}/builds/{build}"
    for s, b, authorization in fake.statuses:
        assert authorization == f"Bearer {GIT_TOKEN}", f"a status without the token: {b}"
        assert b.get("target_url") == link, f"status link {b.get('target_url')} != {link}"
    # A redelivery (same X-GitHub-Delivery) starts nothing.
    status, _, body = http_call("POST", "/v1/hooks/github", headers, payload)
    assert status == 200 and json.loads(body)["builds"] == [], f"redelivered hook: {status} {body[:300]!r}"
    log(f"git: {doc['status']} in {time.time() - t0:.1f}s, step saw hello.txt and KILN_COMMIT; statuses "
        + ", ".join(f"{b['context']}={b['state']}" for _, b, _ in fake.statuses) + f"; invocations {stats}")
    fake.shutdown()


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
