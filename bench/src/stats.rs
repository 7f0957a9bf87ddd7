//! Percentiles, a small deterministic random generator, and the flush-rule replays the
//! log-latency workload compares the real runner with.

use serde_json::{Value, json};

/// The `q` quantile (0..=1) of `v` by nearest rank; 0 for an empty slice.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// `{n, mean, p50, p95, p99, max}` of `v`, each value multiplied by `scale` and rounded.
pub fn summary(v: &[f64], scale: f64) -> Value {
    let r = |x: f64| (x * scale * 10_000.0).round() / 10_000.0;
    json!({
        "n": v.len(),
        "mean": r(mean(v)),
        "p50": r(quantile(v, 0.50)),
        "p95": r(quantile(v, 0.95)),
        "p99": r(quantile(v, 0.99)),
        "max": r(v.iter().copied().fold(0.0, f64::max)),
    })
}

/// xorshift64*: reproducible draws for the replays (no dependency needed).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn pick<'a>(&mut self, v: &'a [f64]) -> &'a f64 {
        &v[(self.next_u64() % v.len() as u64) as usize]
    }
}

/// A flush rule replayed over printed lines.
#[derive(Debug, Clone, Copy)]
pub struct FlushRule {
    /// Flush every `interval` seconds (ticks at `phase + k * interval`); None: never on time.
    pub interval: Option<f64>,
    /// Flush as soon as this many bytes wait (`> threshold` when `strictly_more`).
    pub threshold: usize,
    pub strictly_more: bool,
}

/// Replays lines printed at `times` (seconds) with `sizes` (bytes) through `rule`, one
/// writer at a time, each write taking `write_time(bytes)`; the stream ends (final
/// flush) right after its last line, as a step that exits does. Returns each line's
/// latency: the end of the write that stored it minus the time it was printed.
pub fn replay(
    times: &[f64],
    sizes: &[usize],
    rule: FlushRule,
    phase: f64,
    mut write_time: impl FnMut(usize) -> f64,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(times.len());
    let mut pending: Vec<f64> = Vec::new();
    let mut bytes = 0usize;
    let mut writer_free = f64::MIN;
    let mut flush = |at: f64, pending: &mut Vec<f64>, bytes: &mut usize, out: &mut Vec<f64>| {
        if pending.is_empty() {
            return;
        }
        let start = at.max(writer_free);
        let done = start + write_time(*bytes);
        writer_free = done;
        out.extend(pending.drain(..).map(|t| done - t));
        *bytes = 0;
    };
    let mut next_tick = rule.interval.map(|i| {
        let t0 = times.first().copied().unwrap_or(0.0);
        t0 + (phase - t0).rem_euclid(i)
    });
    for (&t, &n) in times.iter().zip(sizes) {
        if let (Some(i), Some(tick)) = (rule.interval, next_tick.as_mut()) {
            while *tick <= t {
                let at = *tick;
                flush(at, &mut pending, &mut bytes, &mut out);
                *tick += i;
            }
        }
        pending.push(t);
        bytes += n;
        let full = if rule.strictly_more { bytes > rule.threshold } else { bytes >= rule.threshold };
        if full {
            flush(t, &mut pending, &mut bytes, &mut out);
        }
    }
    let end = times.last().copied().unwrap_or(0.0);
    flush(end, &mut pending, &mut bytes, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn one_second_ticks_wait_for_the_next_tick_plus_the_write() {
        let times = [0.1, 0.2, 1.5, 3.0];
        let sizes = [10, 10, 10, 10];
        let rule = FlushRule { interval: Some(1.0), threshold: usize::MAX, strictly_more: false };
        let l = replay(&times, &sizes, rule, 0.0, |_| 0.01);
        let want = [0.91, 0.81, 0.51, 0.01];
        for (a, b) in l.iter().zip(want) {
            assert!((a - b).abs() < 1e-9, "{l:?}");
        }
    }

    #[test]
    fn byte_threshold_waits_for_enough_bytes() {
        // 1 line/s of 100 bytes: a 1000-byte buffer flushes on the 11th line.
        let times: Vec<f64> = (0..11).map(f64::from).collect();
        let sizes = vec![100; 11];
        let rule = FlushRule { interval: None, threshold: 1000, strictly_more: true };
        let l = replay(&times, &sizes, rule, 0.0, |_| 0.0);
        assert_eq!(l[0], 10.0);
        assert_eq!(l[10], 0.0);
    }
}
