//! Log ingest against the local log store (files in a temp dir): any sequence of batches
//! at any offsets and sizes, redelivered, out of order, conflicting, past the end, after
//! the stream ended, with init-log appends by batch id. What is stored and read back is
//! always exactly what a model of the stream says: no byte lost or doubled.
#![no_main]

use kiln_domain::logs::LogStream;
use kiln_domain::{BuildId, StageName, StepName};
use kiln_store::{LogError, LogStore};
use kiln_store_local::LocalLogStore;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct World {
    rt: tokio::runtime::Runtime,
    store: LocalLogStore,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        // tmpfs where there is one: the store syncs every write, which a disk makes slow.
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("a temp dir");
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        let store = LocalLogStore::open(dir.path()).expect("open the log store");
        World { rt, store, _dir: dir }
    })
}

/// Reads bytes off the input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
}

fuzz_target!(|data: &[u8]| {
    static N: AtomicU64 = AtomicU64::new(0);
    let w = world();
    // A build of its own per run: nothing carries over between inputs.
    let build = BuildId::new(format!("fz{}", N.fetch_add(1, Ordering::Relaxed)));
    let step =
        LogStream::Step { stage: StageName::new("s"), step: StepName::new("t"), number: 1, attempt: 1 };
    w.rt.block_on(run(&w.store, &build, &step, Input(data)));
    let _ = w.store.remove_build(&build);
});

async fn run(store: &LocalLogStore, build: &BuildId, step: &LogStream, mut input: Input<'_>) {
    // The model: the bytes the step printed so far, the batches sent, whether it ended.
    let mut model: Vec<u8> = Vec::new();
    let mut batches: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut complete = false;
    let mut init: Vec<u8> = Vec::new();
    let mut init_batches: HashMap<u8, (u64, usize)> = HashMap::new();
    let mut counter = 0u8;

    while let Some(op) = input.byte() {
        let arg = input.byte().unwrap_or(0);
        match op % 8 {
            // The next batch, of `arg * 37` bytes (batches up to ~9 KiB, empty ones too).
            0 => {
                let n = usize::from(arg) * 37;
                let bytes: Vec<u8> = (0..n).map(|i| (model.len() + i) as u8 ^ counter).collect();
                counter = counter.wrapping_add(1);
                let offset = model.len() as u64;
                let r = store.put_chunk(build, step, offset, &bytes).await;
                if complete {
                    assert!(
                        matches!(r, Err(LogError::Complete { .. })) || (bytes.is_empty() && r.is_ok()),
                        "write after the end: {r:?}"
                    );
                } else {
                    r.expect("the next batch is stored");
                    model.extend_from_slice(&bytes);
                    batches.push((offset, bytes));
                }
            }
            // A batch sent again (SQS redelivery, a retry after a lost reply): a no-op.
            1 => {
                if let Some((offset, bytes)) = pick(&batches, arg) {
                    store
                        .put_chunk(build, step, offset, &bytes)
                        .await
                        .expect("a redelivered batch is accepted");
                }
            }
            // A batch whose bytes differ from what is stored there: refused.
            2 => {
                if let Some((offset, mut bytes)) = pick(&batches, arg).filter(|(_, b)| !b.is_empty()) {
                    let i = usize::from(arg) % bytes.len();
                    bytes[i] ^= 0x5a;
                    let r = store.put_chunk(build, step, offset, &bytes).await;
                    assert!(
                        matches!(r, Err(LogError::Conflict { .. }))
                            || (complete && matches!(r, Err(LogError::Complete { .. }))),
                        "conflicting bytes: {r:?}"
                    );
                }
            }
            // A batch past the end: a gap, refused.
            3 => {
                let offset = model.len() as u64 + 1 + u64::from(arg);
                let r = store.put_chunk(build, step, offset, b"x").await;
                assert!(
                    matches!(r, Err(LogError::Gap { .. }))
                        || (complete && matches!(r, Err(LogError::Complete { .. }))),
                    "gap: {r:?}"
                );
            }
            // A batch that overlaps the end: the stored part must match, the rest appends.
            4 => {
                if complete || model.is_empty() {
                    continue;
                }
                let back = (usize::from(arg) % model.len()) + 1;
                let offset = model.len() - back;
                let mut bytes = model[offset..].to_vec();
                bytes.extend((0..usize::from(arg)).map(|i| i as u8));
                store.put_chunk(build, step, offset as u64, &bytes).await.expect("an overlapping batch");
                model.extend_from_slice(&bytes[back..]);
                batches.push((offset as u64, bytes));
            }
            // Read from any offset, any amount.
            5 => {
                let offset = (usize::from(arg) * 131) % (model.len() + 2);
                let max = usize::from(input.byte().unwrap_or(255)) * 53 + 1;
                match store.read(build, step, offset as u64, max).await {
                    Ok(r) => {
                        let (want, next) = if offset >= model.len() {
                            (&[][..], model.len())
                        } else {
                            let end = (offset + max).min(model.len());
                            (&model[offset..end], end)
                        };
                        assert_eq!(r.bytes, want, "read at {offset} max {max}");
                        assert_eq!(r.next_offset, next as u64, "next offset after a read at {offset}");
                        assert_eq!(
                            r.complete,
                            complete && next == model.len(),
                            "complete after a read at {offset}"
                        );
                    }
                    Err(LogError::NotFound(_)) => {
                        assert!(batches.is_empty() && !complete, "a stream with bytes is found")
                    }
                    Err(e) => panic!("read: {e}"),
                }
            }
            // The step ends: the stream is completed (idempotent).
            6 => {
                store.complete(build, step).await.expect("complete");
                complete = true;
            }
            // The init log: appends by batch id from several writers, each id once.
            _ => {
                let id = arg % 16;
                let len = usize::from(input.byte().unwrap_or(0));
                let bytes = vec![id; len];
                let offset = store
                    .append(build, &LogStream::Init, &format!("batch-{id}"), &bytes)
                    .await
                    .expect("an init append");
                match init_batches.get(&id) {
                    Some(&(first, _)) => assert_eq!(offset, first, "a batch id appends once"),
                    None => {
                        assert_eq!(offset, init.len() as u64);
                        init_batches.insert(id, (offset, len));
                        init.extend_from_slice(&bytes);
                    }
                }
            }
        }
    }

    // In the end the stored stream is exactly the model.
    let mut stored = Vec::new();
    let mut at = 0u64;
    loop {
        match store.read(build, step, at, 4096).await {
            Ok(r) => {
                stored.extend_from_slice(&r.bytes);
                if r.bytes.is_empty() {
                    break;
                }
                at = r.next_offset;
            }
            Err(LogError::NotFound(_)) => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    assert_eq!(stored, model, "the stored log is what the step printed");
    if !init.is_empty() {
        let r = store.read(build, &LogStream::Init, 0, init.len() + 1).await.expect("read init");
        assert_eq!(r.bytes, init, "the init log holds each batch once");
    }
}

fn pick(batches: &[(u64, Vec<u8>)], arg: u8) -> Option<(u64, Vec<u8>)> {
    if batches.is_empty() {
        return None;
    }
    Some(batches[usize::from(arg) % batches.len()].clone())
}
