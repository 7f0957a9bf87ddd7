"""Creates Kiln's AWS resources in the local LocalStack, idempotently (run it through seed.sh).

--reset deletes them first (for tests). Prints a JSON map of names, URLs and ARNs and writes it to
localstack/.state/resources.json. Names come from KILN_PREFIX (default "kiln").
"""

import argparse
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

STATE = Path(__file__).resolve().parent / ".state"
REGION = "us-east-1"
ACCOUNT = "000000000000"  # LocalStack's default account
TTL_ATTRIBUTE = "expires_at"
WAIT_S = 30


def log(msg):
    print(f"seed: {msg}", file=sys.stderr)


def code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def wait_for(what, check):
    deadline = time.time() + WAIT_S
    while not check():
        if time.time() > deadline:
            sys.exit(f"seed: timed out waiting for {what}")
        time.sleep(0.2)


# ---- DynamoDB --------------------------------------------------------------------------------

KEY_SCHEMA = [
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
]
GSI1_KEY_SCHEMA = [
    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
]


def describe_table(ddb, name):
    try:
        return ddb.describe_table(TableName=name)["Table"]
    except ddb.exceptions.ResourceNotFoundException:
        return None


def delete_table(ddb, name):
    if describe_table(ddb, name) is None:
        return
    ddb.delete_table(TableName=name)
    wait_for(f"table {name} to go", lambda: describe_table(ddb, name) is None)
    log(f"deleted table {name}")


def ensure_table(ddb, name):
    table = describe_table(ddb, name)
    if table is None:
        ddb.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "gsi1pk", "gsi1sk")
            ],
            KeySchema=KEY_SCHEMA,
            GlobalSecondaryIndexes=[
                {"IndexName": "gsi1", "KeySchema": GSI1_KEY_SCHEMA, "Projection": {"ProjectionType": "ALL"}}
            ],
        )
        log(f"created table {name}")
    else:
        # An existing table is kept, but only if it has the shape the code expects.
        gsis = {g["IndexName"]: g["KeySchema"] for g in table.get("GlobalSecondaryIndexes", [])}
        if table["KeySchema"] != KEY_SCHEMA or gsis.get("gsi1") != GSI1_KEY_SCHEMA:
            sys.exit(f"seed: table {name} exists with another key schema; run seed.sh --reset")
    wait_for(f"table {name} to be ACTIVE", lambda: describe_table(ddb, name)["TableStatus"] == "ACTIVE")
    table = describe_table(ddb, name)

    # TTL: enabled when the emulator supports it; Kiln never relies on expiry for correctness.
    try:
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )
            ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        ttl_status = ttl.get("TimeToLiveStatus", "UNKNOWN")
    except ClientError as e:
        log(f"TTL not available here ({code(e)}); ignored")
        ttl_status = "UNSUPPORTED"

    return {
        "name": name,
        "arn": table["TableArn"],
        "gsi": ["gsi1"],
        "ttl_attribute": TTL_ATTRIBUTE,
        "ttl_status": ttl_status,
    }


# ---- S3 --------------------------------------------------------------------------------------


def bucket_exists(s3, name):
    try:
        s3.head_bucket(Bucket=name)
        return True
    except ClientError as e:
        if code(e) in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise


def delete_bucket(s3, name):
    if not bucket_exists(s3, name):
        return
    # A bucket must be empty (every version) before it can be deleted.
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        objects = [
            {"Key": o["Key"], "VersionId": o["VersionId"]}
            for o in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if objects:
            s3.delete_objects(Bucket=name, Delete={"Objects": objects, "Quiet": True})
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=name):
        for u in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
    s3.delete_bucket(Bucket=name)
    log(f"deleted bucket {name}")


def ensure_bucket(s3, name):
    if not bucket_exists(s3, name):
        try:
            s3.create_bucket(Bucket=name)  # us-east-1: no LocationConstraint
            log(f"created bucket {name}")
        except ClientError as e:
            if code(e) != "BucketAlreadyOwnedByYou":
                raise
    return {"name": name, "arn": f"arn:aws:s3:::{name}"}


# ---- SQS -------------------------------------------------------------------------------------


def queue_url(sqs, name):
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as e:
        if code(e) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            return None
        raise


def delete_queue(sqs, name):
    url = queue_url(sqs, name)
    if url:
        sqs.delete_queue(QueueUrl=url)
        log(f"deleted queue {name}")


def ensure_queue(sqs, name, attributes):
    url = queue_url(sqs, name)
    if url is None:
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        log(f"created queue {name}")
    else:
        # Existing queue: bring its settings up to date (FifoQueue cannot change, and is in the name).
        mutable = {k: v for k, v in attributes.items() if k != "FifoQueue"}
        if mutable:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=mutable)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return {"name": name, "url": url, "arn": arn}


def queue_specs(prefix):
    """(key, name, attributes, dlq key, maxReceiveCount); a DLQ comes before its queue."""
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}  # Kiln sends dedup ids
    return [
        ("jobs_dlq", f"{prefix}-jobs-dlq", {}, None, None),
        ("jobs", f"{prefix}-jobs", {"VisibilityTimeout": "60"}, "jobs_dlq", 3),
        ("dispatch_dlq", f"{prefix}-dispatch-dlq", {}, None, None),
        ("dispatch", f"{prefix}-dispatch", {}, "dispatch_dlq", 5),
        ("events_dlq", f"{prefix}-events-dlq.fifo", dict(fifo), None, None),
        ("events", f"{prefix}-events.fifo", dict(fifo), "events_dlq", 5),
        ("notify_dlq", f"{prefix}-notify-dlq.fifo", dict(fifo), None, None),
        ("notify", f"{prefix}-notify.fifo", dict(fifo), "notify_dlq", 5),
    ]


# ---- main ------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reset", action="store_true", help="delete the resources first")
    args = parser.parse_args()

    endpoint = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    host = urllib.parse.urlparse(endpoint).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"seed: refusing to seed a non-local endpoint: {endpoint}")
    prefix = os.environ.get("KILN_PREFIX") or "kiln"

    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
    )
    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=2,
        read_timeout=30,
    )
    ddb, s3, sqs = (session.client(s, endpoint_url=endpoint, config=config) for s in ("dynamodb", "s3", "sqs"))

    table_name = f"{prefix}-state"
    bucket_name = f"{prefix}-logs"
    specs = queue_specs(prefix)

    if args.reset:
        delete_table(ddb, table_name)
        delete_bucket(s3, bucket_name)
        for _, name, _, _, _ in reversed(specs):  # queues before their DLQs
            delete_queue(sqs, name)

    queues = {}
    for key, name, attributes, dlq, max_receive in specs:
        attributes = dict(attributes)
        if dlq:
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": queues[dlq]["arn"], "maxReceiveCount": max_receive}
            )
        queues[key] = ensure_queue(sqs, name, attributes)
        if dlq:
            queues[key]["dlq"] = queues[dlq]["name"]
            queues[key]["max_receive_count"] = max_receive

    resources = {
        "endpoint": endpoint,
        "region": REGION,
        "account": ACCOUNT,
        "prefix": prefix,
        "table": ensure_table(ddb, table_name),
        "bucket": ensure_bucket(s3, bucket_name),
        "queues": queues,
    }
    text = json.dumps(resources, indent=2) + "\n"
    # Tests seed private sets under their own prefix: only the default set is recorded.
    if prefix == "kiln":
        STATE.mkdir(parents=True, exist_ok=True)
        tmp = STATE / "resources.json.tmp"
        tmp.write_text(text)
        tmp.replace(STATE / "resources.json")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
