"""Measures each function binary's cold init: from process start to its first request for work
(GET /2018-06-01/runtime/invocation/next) on a stand-in Lambda runtime API. Prints a Markdown
table with the stripped binary sizes. Run after `cargo build --release -p kiln-fn-...`, with
LocalStack up and seeded (the functions connect at init; queue URLs are given, as the SAM
template gives them, so no GetQueueUrl is made):

    localstack/.venv/bin/python functions/measure_init.py [RUNS]
"""

import http.server
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARIES = ["api", "compile", "log-ingest", "dispatch", "event-fanin", "runner"]
ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
QUEUE = f"{ENDPOINT}/000000000000/"


class Runtime(http.server.BaseHTTPRequestHandler):
    first_next = None

    def do_GET(self):
        if Runtime.first_next is None and self.path.endswith("/invocation/next"):
            Runtime.first_next = time.perf_counter()
        time.sleep(0.5)  # hold the long poll; the process is killed meanwhile
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


def measure(binary, port):
    env = dict(
        os.environ,
        AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{port}",
        AWS_LAMBDA_FUNCTION_NAME=binary,
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
        AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        AWS_LAMBDA_LOG_STREAM_NAME="s",
        AWS_LAMBDA_LOG_GROUP_NAME="g",
        AWS_ENDPOINT_URL=ENDPOINT,
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        KILN_TABLE="kiln-state",
        KILN_BUCKET="kiln-logs",
        KILN_JOBS_QUEUE=QUEUE + "kiln-jobs",
        KILN_DISPATCH_QUEUE=QUEUE + "kiln-dispatch",
        KILN_EVENTS_QUEUE=QUEUE + "kiln-events.fifo",
        KILN_JOBS_DLQ=QUEUE + "kiln-jobs-dlq",
        KILN_SIGNING_KEY="k" * 32,
        KILN_ADMIN_TOKENS="t" * 16,
        KILN_API_URL="http://127.0.0.1:1",
        KILN_LOG="warn",
    )
    Runtime.first_next = None
    start = time.perf_counter()
    proc = subprocess.Popen([ROOT / "target/release" / binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while Runtime.first_next is None and proc.poll() is None and time.perf_counter() - start < 10:
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    if Runtime.first_next is None:
        sys.exit(f"measure_init: {binary} never asked for work")
    return (Runtime.first_next - start) * 1000


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Runtime)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    print("| function | stripped binary | cold init (median of %d) |" % runs)
    print("|---|---|---|")
    for b in BINARIES:
        size = (ROOT / "target/release" / b).stat().st_size / 1e6
        times = [measure(b, port) for _ in range(runs)]
        print(f"| `{b}` | {size:.1f} MB | {statistics.median(times):.1f} ms |")
    server.shutdown()


if __name__ == "__main__":
    main()
