"""Records which AWS requests each Lambda function makes: a small HTTP proxy in front of
LocalStack (the functions' AWS_ENDPOINT_URL) that forwards every request unchanged and notes the
function (the SDK's user agent carries `app/<function>`: kiln_lambda sets the app name to
AWS_LAMBDA_FUNCTION_NAME), the operation and the resource it names.

Usage: record_requests.py PORT UPSTREAM OUT.json   (runs until SIGTERM, rewriting OUT.json after
every request: {function: [{"operation", "action", "resource", "kind"}, ...]}, each once)
infra/check_deploy.py --requests OUT.json checks that every function's role allows them.
"""

import http.client
import json
import re
import signal
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# IAM action of each recorded operation: the same rules as check_deploy.py.
sys.path.insert(0, __import__("os").path.dirname(__file__))
from check_deploy import S3_ACTIONS, TRANSACT_ITEMS  # noqa: E402

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "trailer"}
lock = threading.Lock()
seen = {}  # function -> {json of a record}


def s3_operation(method, path, query, headers):
    """The S3 operation of a path-style REST request (the SDK uses path style with an endpoint)."""
    parts = path.lstrip("/").split("/", 1)
    bucket, key = parts[0], (parts[1] if len(parts) > 1 else "")
    q = urllib.parse.parse_qs(query, keep_blank_values=True)
    if not key:
        if method == "GET" and q.get("list-type") == ["2"]:
            return "ListObjectsV2", bucket, ""
        if method == "POST" and "delete" in q:
            return "DeleteObjects", bucket, ""
        return f"{method} bucket", bucket, ""
    if method == "PUT" and "partNumber" in q:
        return ("UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"), bucket, key
    if method == "PUT":
        return ("CopyObject" if "x-amz-copy-source" in headers else "PutObject"), bucket, key
    if method == "POST" and "uploads" in q:
        return "CreateMultipartUpload", bucket, key
    if method == "POST" and "uploadId" in q:
        return "CompleteMultipartUpload", bucket, key
    if method == "DELETE" and "uploadId" in q:
        return "AbortMultipartUpload", bucket, key
    if method == "GET" and "uploadId" in q:
        return "ListParts", bucket, key
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method), bucket, key


def records(service, method, path, query, headers, body):
    """(operation, IAM action, resource, resource kind) of one request."""
    target = headers.get("x-amz-target", "")
    op = target.rsplit(".", 1)[-1] if target else None
    doc = {}
    if body and headers.get("content-type", "").startswith("application/x-amz-json"):
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
    if service == "s3":
        op, bucket, key = s3_operation(method, path, query, headers)
        return [(op, a, f"{bucket}/{key}" if key else bucket, "AWS::S3::Bucket") for a in S3_ACTIONS.get(op, [f"s3:{op}"])]
    if op is None:  # the query protocol (Action=...)
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        op = (form.get("Action") or ["?"])[0]
        doc = {k: v[0] for k, v in form.items()}
    if service == "dynamodb":
        if op == "TransactWriteItems":
            return [(op, TRANSACT_ITEMS[kind], item[kind].get("TableName"), "AWS::DynamoDB::Table")
                    for item in doc.get("TransactItems", []) for kind in item if kind in TRANSACT_ITEMS]
        return [(op, f"dynamodb:{op}", doc.get("TableName"), "AWS::DynamoDB::Table")]
    if service == "sqs":
        url = doc.get("QueueUrl") or doc.get("QueueName") or ""
        return [(op, f"sqs:{op}", url.rstrip("/").rsplit("/", 1)[-1], "AWS::SQS::Queue")]
    if service == "ssm":
        names = doc.get("Names") or ([doc["Name"]] if "Name" in doc else [])
        return [(op, f"ssm:{op}", n, "AWS::SSM::Parameter") for n in names] or [(op, f"ssm:{op}", None, None)]
    return [(op, f"{service}:{op}", None, None)]


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None
    out = None

    def log_message(self, *args):
        pass

    def body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def forward(self):
        body = self.body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        agent = headers.get("x-amz-user-agent", "") + " " + headers.get("user-agent", "")
        app = re.search(r"\bapp/([\w.-]+)", agent)
        service = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", headers.get("authorization", ""))
        if app and service:
            url = urllib.parse.urlsplit(self.path)
            try:
                recs = records(service.group(1), self.command, url.path, url.query, headers, body)
            except Exception as e:  # never break the proxied request; the gap shows in the check
                recs = [("?", f"{service.group(1)}:?", str(e), None)]
            with lock:
                mine = seen.setdefault(app.group(1), set())
                for op, action, resource, kind in recs:
                    mine.add(json.dumps({"operation": op, "action": action, "resource": resource, "kind": kind},
                                        sort_keys=True))
                save(self.out)
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        fwd = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            fwd["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body if body or self.command in ("POST", "PUT") else None,
                     headers=fwd)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward


def save(out):
    doc = {fn: sorted((json.loads(r) for r in recs), key=json.dumps) for fn, recs in sorted(seen.items())}
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    __import__("os").replace(tmp, out)


def main():
    port, upstream, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    Proxy.upstream = urllib.parse.urlsplit(upstream).netloc
    Proxy.out = out
    with lock:
        save(out)
    server = ThreadingHTTPServer(("127.0.0.1", port), Proxy)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


if __name__ == "__main__":
    main()
