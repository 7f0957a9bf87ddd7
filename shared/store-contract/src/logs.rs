//! Log store checks: offsets, idempotent retries, completion, listing order.

use kiln_domain::BuildId;
use kiln_domain::logs::LogStream;
use kiln_store::{LogError, LogStore};

/// Every log check, one after the other.
pub async fn log_suite(l: &dyn LogStore) {
    logs_put_read_round_trip(l).await;
    logs_retry_is_idempotent(l).await;
    logs_conflict(l).await;
    logs_gap(l).await;
    logs_read_from_offset(l).await;
    logs_unknown_stream_not_found(l).await;
    logs_complete(l).await;
    logs_complete_empty_stream(l).await;
    logs_list_order(l).await;
    logs_init_append_batches(l).await;
    logs_large_stream(l).await;
    logs_binary_bytes(l).await;
}

/// A step log stream (`step/<n>/build/compile/1`).
pub fn step_stream(number: u32) -> LogStream {
    LogStream::Step { stage: "build".into(), step: "compile".into(), number, attempt: 1 }
}

/// Reads a whole stream, however many reads it takes.
pub async fn read_all(l: &dyn LogStore, build: &BuildId, stream: &LogStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let r = l.read(build, stream, out.len() as u64, 1 << 20).await.expect("read");
        assert_eq!(r.next_offset, (out.len() + r.bytes.len()) as u64);
        if r.bytes.is_empty() {
            return (out, r.complete);
        }
        out.extend_from_slice(&r.bytes);
    }
}

/// Batches written at increasing offsets read back as one stream.
pub async fn logs_put_read_round_trip(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    l.put_chunk(&b, &s, 0, b"hello\n").await.expect("put");
    l.put_chunk(&b, &s, 6, b"world\n").await.expect("put");
    let r = l.read(&b, &s, 0, 1 << 20).await.expect("read");
    assert_eq!(
        r,
        kiln_store::LogRead { bytes: b"hello\nworld\n".to_vec(), next_offset: 12, complete: false }
    );
    let info = l.list(&b).await.expect("list");
    assert_eq!(info.len(), 1);
    assert_eq!((info[0].stream.clone(), info[0].len, info[0].complete), (s, 12, false));
}

/// Resending a batch (same bytes, same offset) is a no-op, the last one included.
pub async fn logs_retry_is_idempotent(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    l.put_chunk(&b, &s, 0, b"one\n").await.expect("put");
    l.put_chunk(&b, &s, 4, b"two\n").await.expect("put");
    l.put_chunk(&b, &s, 0, b"one\n").await.expect("retry of the first batch");
    l.put_chunk(&b, &s, 4, b"two\n").await.expect("retry of the last batch");
    l.put_chunk(&b, &s, 8, b"").await.expect("an empty batch at the end");
    l.put_chunk(&b, &s, 8, b"three\n").await.expect("put");
    assert_eq!(read_all(l, &b, &s).await, (b"one\ntwo\nthree\n".to_vec(), false));
}

/// Different bytes where bytes are stored: `Conflict`, and nothing changes.
pub async fn logs_conflict(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    l.put_chunk(&b, &s, 0, b"one\n").await.expect("put");
    l.put_chunk(&b, &s, 4, b"two\n").await.expect("put");
    for (offset, bytes) in [(0u64, &b"uno\n"[..]), (4, b"TWO\n")] {
        let err = l.put_chunk(&b, &s, offset, bytes).await;
        assert!(matches!(err, Err(LogError::Conflict { offset: o, .. }) if o == offset), "{err:?}");
    }
    assert_eq!(read_all(l, &b, &s).await.0, b"one\ntwo\n");
}

/// A write past the end is a `Gap` that reports the length.
pub async fn logs_gap(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    let err = l.put_chunk(&b, &s, 5, b"late").await;
    assert!(matches!(err, Err(LogError::Gap { offset: 5, len: 0, .. })), "{err:?}");
    l.put_chunk(&b, &s, 0, b"0123").await.expect("put");
    let err = l.put_chunk(&b, &s, 10, b"late").await;
    assert!(matches!(err, Err(LogError::Gap { offset: 10, len: 4, .. })), "{err:?}");
    assert_eq!(read_all(l, &b, &s).await.0, b"0123");
}

/// Reads start at any offset and return at most `max` bytes; from the end (or past it)
/// they return nothing, with `next_offset` the length.
pub async fn logs_read_from_offset(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    l.put_chunk(&b, &s, 0, b"0123456789").await.expect("put");
    let r = l.read(&b, &s, 3, 4).await.expect("read");
    assert_eq!((r.bytes.as_slice(), r.next_offset, r.complete), (&b"3456"[..], 7, false));
    let r = l.read(&b, &s, 7, 100).await.expect("read");
    assert_eq!((r.bytes.as_slice(), r.next_offset), (&b"789"[..], 10));
    for offset in [10, 25] {
        let r = l.read(&b, &s, offset, 100).await.expect("read");
        assert_eq!((r.bytes.len(), r.next_offset, r.complete), (0, 10, false), "read at {offset}");
    }
    // Tailing: new bytes show up from where the last read ended.
    l.put_chunk(&b, &s, 10, b"ab").await.expect("put");
    let r = l.read(&b, &s, 10, 100).await.expect("read");
    assert_eq!((r.bytes.as_slice(), r.next_offset), (&b"ab"[..], 12));
}

/// Reading a stream nobody wrote is `NotFound`.
pub async fn logs_unknown_stream_not_found(l: &dyn LogStore) {
    let b = BuildId::generate();
    let err = l.read(&b, &LogStream::Init, 0, 100).await;
    assert!(matches!(err, Err(LogError::NotFound(_))), "{err:?}");
    l.put_chunk(&b, &step_stream(1), 0, b"x").await.expect("put");
    let err = l.read(&b, &step_stream(2), 0, 100).await;
    assert!(matches!(err, Err(LogError::NotFound(_))), "{err:?}");
    assert!(l.list(&BuildId::generate()).await.expect("list").is_empty());
}

/// After `complete`: new bytes are refused, a retry of stored bytes is still fine, reads
/// say `complete` once they reach the end, and `complete` again is a no-op.
pub async fn logs_complete(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    l.put_chunk(&b, &s, 0, b"first\n").await.expect("put");
    l.put_chunk(&b, &s, 6, b"last\n").await.expect("put");
    l.complete(&b, &s).await.expect("complete");
    l.complete(&b, &s).await.expect("complete is idempotent");
    let err = l.put_chunk(&b, &s, 11, b"more\n").await;
    assert!(matches!(err, Err(LogError::Complete { .. })), "{err:?}");
    let err = l.put_chunk(&b, &s, 6, b"LAST\n").await;
    assert!(matches!(err, Err(LogError::Complete { .. }) | Err(LogError::Conflict { .. })), "{err:?}");
    l.put_chunk(&b, &s, 6, b"last\n").await.expect("a retry of the last batch");
    l.put_chunk(&b, &s, 0, b"first\n").await.expect("a retry of the first batch");
    let r = l.read(&b, &s, 0, 3).await.expect("read");
    assert_eq!((r.bytes.as_slice(), r.next_offset, r.complete), (&b"fir"[..], 3, false));
    let r = l.read(&b, &s, 3, 100).await.expect("read");
    assert_eq!((r.bytes.as_slice(), r.next_offset, r.complete), (&b"st\nlast\n"[..], 11, true));
    let r = l.read(&b, &s, 11, 100).await.expect("read");
    assert_eq!((r.bytes.len(), r.next_offset, r.complete), (0, 11, true));
    assert_eq!(read_all(l, &b, &s).await, (b"first\nlast\n".to_vec(), true));
    let err = l.append(&b, &s, "late-batch", b"more\n").await;
    assert!(matches!(err, Err(LogError::Complete { .. })), "{err:?}");
    let info = l.list(&b).await.expect("list");
    assert_eq!((info[0].len, info[0].complete), (11, true));
}

/// Completing a stream nobody wrote makes an empty, complete stream (a step that
/// printed nothing).
pub async fn logs_complete_empty_stream(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(3));
    l.complete(&b, &s).await.expect("complete");
    let r = l.read(&b, &s, 0, 100).await.expect("read");
    assert_eq!(r, kiln_store::LogRead { bytes: Vec::new(), next_offset: 0, complete: true });
    let info = l.list(&b).await.expect("list");
    assert_eq!(info.len(), 1);
    assert_eq!((info[0].stream.clone(), info[0].len, info[0].complete), (s, 0, true));
}

/// `list`: init first, then steps by number (10 after 9), then services.
pub async fn logs_list_order(l: &dyn LogStore) {
    let b = BuildId::generate();
    let svc = |n: u32| LogStream::Service {
        stage: "test".into(),
        service: format!("db{n}").as_str().into(),
        number: n,
        attempt: 1,
    };
    let st = |stage: &str, name: &str, n: u32, attempt: u32| LogStream::Step {
        stage: stage.into(),
        step: name.into(),
        number: n,
        attempt,
    };
    let expected = vec![
        LogStream::Init,
        st("build", "compile", 2, 1),
        st("build", "package", 9, 1),
        st("test", "unit", 10, 1),
        st("test", "unit", 10, 2),
        svc(1),
        svc(2),
    ];
    // Written in a scrambled order.
    for i in [6usize, 3, 0, 5, 2, 4, 1] {
        l.put_chunk(&b, &expected[i], 0, format!("stream {i}\n").as_bytes()).await.expect("put");
    }
    l.complete(&b, &expected[1]).await.expect("complete");
    let info = l.list(&b).await.expect("list");
    assert_eq!(info.iter().map(|i| i.stream.clone()).collect::<Vec<_>>(), expected);
    assert!(info.iter().all(|i| i.len == 9));
    assert_eq!(
        info.iter().map(|i| i.complete).collect::<Vec<_>>(),
        vec![false, true, false, false, false, false, false]
    );
}

/// The init log takes batches from several writers: each batch id is stored once, at
/// the offset `append` returned, whole.
pub async fn logs_init_append_batches(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), LogStream::Init);
    let o1 = l.append(&b, &s, "runner-a:1", b"a one\n").await.expect("append");
    assert_eq!(o1, 0);
    let o2 = l.append(&b, &s, "runner-b:1", b"b one\n").await.expect("append");
    assert_eq!(o2, 6);
    assert_eq!(
        l.append(&b, &s, "runner-a:1", b"a one\n").await.expect("append"),
        o1,
        "a resend appends once"
    );
    // Two writers at once.
    let (ra, rb) = tokio::join!(
        l.append(&b, &s, "runner-a:2", b"a two: a longer line\n"),
        l.append(&b, &s, "runner-b:2", b"b two\n"),
    );
    let (oa, ob) = (ra.expect("append"), rb.expect("append"));
    assert_ne!(oa, ob);
    let (all, complete) = read_all(l, &b, &s).await;
    assert!(!complete);
    assert_eq!(all.len(), 12 + 21 + 6);
    assert_eq!(&all[..12], b"a one\nb one\n");
    assert_eq!(&all[oa as usize..oa as usize + 21], b"a two: a longer line\n");
    assert_eq!(&all[ob as usize..ob as usize + 6], b"b two\n");
    assert_eq!(l.append(&b, &s, "runner-b:2", b"b two\n").await.expect("append"), ob);
    assert_eq!(read_all(l, &b, &s).await.0.len(), all.len());
}

/// Deterministic bytes that are not text.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A few MB written in 256 KiB batches read back byte-exact.
pub async fn logs_large_stream(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    let data = noise(5 * 1024 * 1024 + 123, 42);
    let chunk = kiln_domain::logs::MAX_BATCH_BYTES;
    for (i, part) in data.chunks(chunk).enumerate() {
        l.put_chunk(&b, &s, (i * chunk) as u64, part).await.expect("put");
    }
    // A retry in the middle is still recognised.
    l.put_chunk(&b, &s, (3 * chunk) as u64, &data[3 * chunk..4 * chunk]).await.expect("retry");
    l.complete(&b, &s).await.expect("complete");
    let (all, complete) = read_all(l, &b, &s).await;
    assert!(complete);
    assert!(all == data, "bytes differ");
    let r = l.read(&b, &s, 4_000_000, 1000).await.expect("read");
    assert_eq!(r.bytes, data[4_000_000..4_001_000]);
}

/// Logs are bytes: invalid UTF-8 and NULs round trip.
pub async fn logs_binary_bytes(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    let bytes = [0xff, 0xfe, 0x00, b'a', 0xc3, 0x28, 0xe2, 0x82, b'\n', 0xf0, 0x9f];
    l.put_chunk(&b, &s, 0, &bytes).await.expect("put");
    l.put_chunk(&b, &s, 0, &bytes).await.expect("retry");
    let o = l.append(&b, &LogStream::Init, "x", &bytes).await.expect("append");
    assert_eq!(o, 0);
    assert_eq!(read_all(l, &b, &s).await.0, bytes);
    assert_eq!(read_all(l, &b, &LogStream::Init).await.0, bytes);
}
