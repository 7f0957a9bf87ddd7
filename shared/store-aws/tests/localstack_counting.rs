//! The request counter (`Clients::from_sdk_config_counted`) on LocalStack: a few port calls
//! whose requests are known, counted by service and operation, with DynamoDB's capacity.
//! `#[ignore]`d without LocalStack, like `localstack_contract.rs`.

mod common;

use aws_sdk_sqs::types::QueueAttributeName;
use common::sdk_config;
use kiln_domain::logs::LogStream;
use kiln_domain::{BuildId, StepName};
use kiln_store::{LogStore, OutMessage, Queue, StateStore};
use kiln_store_aws::{AwsConfig, Clients, DynamoStateStore, RequestCounter, S3LogStore, SqsQueue};
use std::collections::BTreeMap;
use std::time::Duration;

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn counts_every_request_by_operation_with_dynamodb_capacity() {
    let shared = sdk_config().await;
    let config = AwsConfig::from_env();
    let plain = Clients::from_sdk_config(&shared);
    let counter = RequestCounter::new();
    let counted = Clients::from_sdk_config_counted(&shared, counter.clone());

    // A queue of its own, made and removed with the uncounted clients.
    let name = format!("kiln-count-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let url = plain.sqs.create_queue().queue_name(&name).send().await.unwrap().queue_url.unwrap();

    // DynamoDB: create a build (a GetItem to refuse an id in use, one BatchWriteItem of
    // its plan and stage items, the build item last with a conditional PutItem), read it
    // back (one Query of its hot items; the plan is known to this process) and read a
    // build that does not exist (one more Query).
    let state = DynamoStateStore::new(counted.dynamodb.clone(), config.table.clone());
    let build = kiln_store_contract::sample_build();
    state.create_build(&build).await.unwrap();
    assert!(state.get_build(&build.id).await.unwrap().is_some());
    assert!(state.get_build(&BuildId::generate()).await.unwrap().is_none());

    // S3: the first chunk of a new stream (a ListObjectsV2 to find the end, one PutObject).
    let logs = S3LogStore::new(counted.s3.clone(), config.bucket.clone());
    let stream = LogStream::Step {
        stage: build.stages[0].name.clone(),
        step: StepName::new("s"),
        number: 1,
        attempt: 1,
    };
    logs.put_chunk(&build.id, &stream, 0, b"hello\n").await.unwrap();

    // SQS: two sends, receives until both arrived, a delete each, one empty receive.
    let queue = SqsQueue::new(counted.sqs.clone(), url.clone());
    for body in ["a", "b"] {
        queue.send(OutMessage::new(body)).await.unwrap();
    }
    let (mut got, mut receives, mut empty) = (Vec::new(), 0, 0);
    while got.len() < 2 && receives < 20 {
        let batch = queue.receive(10, Duration::from_secs(1)).await.unwrap();
        empty += u64::from(batch.is_empty());
        got.extend(batch);
        receives += 1;
    }
    assert_eq!(got.len(), 2);
    for m in &got {
        queue.delete(&m.receipt).await.unwrap();
    }
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
    plain.sqs.delete_queue().queue_url(&url).send().await.unwrap();
    let standard = counter.snapshot();
    assert_eq!(standard.sqs_fifo, 0, "a standard queue");

    // A FIFO queue's requests are counted as such (priced apart): one send (its body naming
    // `.fifo"` too, escaped in the request), one receive.
    let fifo_url = plain
        .sqs
        .create_queue()
        .queue_name(format!("{name}.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let fifo = SqsQueue::new(counted.sqs.clone(), fifo_url.clone());
    let sent = fifo.send(OutMessage::grouped("x.fifo\"", "g", "d1")).await;
    let received = fifo.receive(10, Duration::ZERO).await;
    plain.sqs.delete_queue().queue_url(&fifo_url).send().await.unwrap();
    sent.unwrap();
    received.unwrap();
    let f = counter.snapshot().since(&standard);
    assert_eq!(f.operations(), counts(&[("sqs.ReceiveMessage", 1), ("sqs.SendMessage", 1)]));
    assert_eq!(f.sqs_fifo, 2 + f.retries.values().sum::<u64>());

    let c = counter.snapshot();
    assert_eq!(
        c.operations(),
        counts(&[
            ("dynamodb.BatchWriteItem", 1),
            ("dynamodb.GetItem", 1),
            ("dynamodb.PutItem", 1),
            ("dynamodb.Query", 2),
            ("s3.ListObjectsV2", 1),
            ("s3.PutObject", 1),
            ("sqs.DeleteMessage", 2),
            ("sqs.ReceiveMessage", receives + 1 + 1),
            ("sqs.SendMessage", 2 + 1),
        ])
    );
    assert_eq!(c.empty_receives, empty + 1 + f.empty_receives);
    assert_eq!(c.empty_receives_fifo, f.empty_receives);
    // Requests are billed per attempt: the SDK's retries (none, on a calm LocalStack) on top.
    let sqs_retries: u64 = c.retries.iter().filter(|(k, _)| k.starts_with("sqs.")).map(|(_, n)| n).sum();
    assert_eq!(c.service_total("sqs"), 4 + receives + 1 + 2 + sqs_retries);
    // The batch writes the plan's item and one per stage, each at least one unit (not
    // transactional: no double price).
    let batch = c.dynamodb_capacity["dynamodb.BatchWriteItem"];
    assert!(batch.write_units >= (build.stages.len() + 1) as f64, "{batch:?}");
    let q = c.dynamodb_capacity["dynamodb.Query"];
    assert!(q.read_units > 0.0 && q.write_units == 0.0, "{q:?}");

    // Counting again from a snapshot: only what came after.
    let before = counter.snapshot();
    assert!(state.get_build(&build.id).await.unwrap().is_some());
    let after = counter.snapshot().since(&before);
    assert_eq!(after.operations(), counts(&[("dynamodb.Query", 1)]));
    // The uncounted clients were never seen.
    let all = counter.snapshot();
    let ddb_operations: u64 =
        all.operations().iter().filter(|(k, _)| k.starts_with("dynamodb.")).map(|(_, n)| n).sum();
    assert_eq!(ddb_operations, 6, "{all:?}");
}

/// The requests of a stream's life in the chunked layout: the first batch scans (one
/// ListObjectsV2), later batches at the end the store remembers are one PutObject each;
/// `complete` scans once, reads the chunks back, writes `log` (which alone marks the
/// stream complete) and deletes the chunks it compacted (no second listing). `run_status` is two GetItems.
#[tokio::test]
#[ignore = "needs LocalStack: localstack/start.sh && localstack/seed.sh, then cargo test -- --include-ignored"]
async fn a_stream_scans_once_and_run_status_reads_two_items() {
    let shared = sdk_config().await;
    let config = AwsConfig::from_env();
    let counter = RequestCounter::new();
    let counted = Clients::from_sdk_config_counted(&shared, counter.clone());
    let plain = Clients::from_sdk_config(&shared);
    let build = kiln_store_contract::sample_build();
    DynamoStateStore::new(plain.dynamodb.clone(), config.table.clone()).create_build(&build).await.unwrap();

    let logs = S3LogStore::new(counted.s3.clone(), config.bucket.clone());
    let stream = LogStream::Step {
        stage: build.stages[0].name.clone(),
        step: StepName::new("s"),
        number: 1,
        attempt: 1,
    };
    let mut offset = 0;
    for line in ["one\n", "two\n", "three\n"] {
        logs.put_chunk(&build.id, &stream, offset, line.as_bytes()).await.unwrap();
        offset += line.len() as u64;
    }
    // A retry of the last batch (its bytes are there): the conditional PUT fails, a scan
    // finds the same bytes.
    logs.put_chunk(&build.id, &stream, 4, b"two\n").await.unwrap();
    let writes = counter.snapshot();
    assert_eq!(
        writes.operations(),
        counts(&[("s3.GetObject", 1), ("s3.ListObjectsV2", 2), ("s3.PutObject", 3)]),
        "first batch: LIST + PUT; two more: a PUT each; the retry: LIST + GET"
    );
    logs.complete(&build.id, &stream).await.unwrap();
    let completed = counter.snapshot().since(&writes);
    assert_eq!(
        completed.operations(),
        counts(&[("s3.DeleteObjects", 1), ("s3.GetObject", 3), ("s3.ListObjectsV2", 1), ("s3.PutObject", 1)])
    );
    let read = S3LogStore::new(plain.s3.clone(), config.bucket.clone());
    assert_eq!(
        kiln_store_contract::read_all(&read, &build.id, &stream).await,
        (b"one\ntwo\nthree\n".to_vec(), true)
    );

    let state = DynamoStateStore::new(counted.dynamodb.clone(), config.table.clone());
    let before = counter.snapshot();
    let st = state.run_status(&build.id, Some(&build.stages[0].name)).await.unwrap().unwrap();
    assert_eq!((st.build, st.stage), (build.status, Some(build.stages[0].status)));
    let after = counter.snapshot().since(&before);
    assert_eq!(after.operations(), counts(&[("dynamodb.GetItem", 2)]));
}
