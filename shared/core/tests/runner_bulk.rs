//! 50 MiB of random bytes through the runner's log path: exact bytes, contiguous offsets,
//! bounded batches, and what it costs. Its own test binary, so that the process's peak RSS
//! is the runner's (the sink keeps only a hash).

mod runner_support;

use kiln_core::runner::{peak_rss_kib, run_job};
use runner_support::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const SIZE: usize = 50 * 1024 * 1024;

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv =
        |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_mib_of_random_bytes_are_stored_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("printed");
    let mem = Mem::new();
    mem.hash_only.store(true, Ordering::SeqCst);
    let job = job(
        "bulk",
        vec![step(
            "flood",
            1,
            &[&format!("head -c {SIZE} /dev/urandom | tee {}", copy.display()), "echo done >&2"],
        )],
    );
    let config = config(&dir.path().join("ws"));
    let max = config.max_batch_bytes;
    let (ctx, _c) = ctx(&mem, config);

    let rss_before = peak_rss_kib().unwrap();
    let (t0, cpu0) = (Instant::now(), cpu_time());
    let out = run_job(&job, 1, &ctx).await.unwrap();
    let (elapsed, cpu) = (t0.elapsed(), cpu_time() - cpu0);
    let rss_after = peak_rss_kib().unwrap();
    assert!(out.succeeded(), "{out:?}");

    let printed = std::fs::read(&copy).unwrap();
    assert_eq!(printed.len(), SIZE);
    let expected = fnv(FNV_START, &[printed.as_slice(), b"done\n"].concat());
    drop(printed);

    let stored = mem.stored(&step_key("bulk", "flood", 1)).unwrap();
    assert_eq!(stored.len, SIZE as u64 + 5);
    assert_eq!(stored.hash, expected, "stored bytes differ from the printed ones");
    assert!(stored.batches.iter().all(|&b| b > 0 && b <= max), "a batch is empty or over {max}");
    // Puts were sent in order at contiguous offsets (the sink rejects gaps), never retried.
    let mut next = 0u64;
    for r in mem.recs() {
        if let Rec::Put { offset, len, failed, .. } = r {
            assert!(!failed);
            assert_eq!(offset, next);
            next += len as u64;
        }
    }
    eprintln!(
        "runner bulk: {} MiB in {:.2?} ({:.0} MiB/s), runner CPU {:.2?} (incl. the test sink's hashing), \
         {} puts, peak RSS {} -> {} KiB (+{} KiB)",
        SIZE >> 20,
        elapsed,
        SIZE as f64 / (1 << 20) as f64 / elapsed.as_secs_f64(),
        cpu,
        stored.batches.len(),
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before),
    );
    assert!(rss_after.saturating_sub(rss_before) < 64 * 1024, "peak RSS grew by more than 64 MiB");
}
