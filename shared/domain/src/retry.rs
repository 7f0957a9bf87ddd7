//! The one retry policy: capped exponential backoff with jitter. The AWS adapters (commits
//! and claims that lost a race) and the runner's sinks (transient errors) both take their
//! delays from here, so they cannot drift apart. Pure: the caller sleeps.

use std::time::Duration;

/// How often to try and how long to wait between tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The delay cap before the first retry; it doubles per retry up to `max`.
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// For requests to a service that failed transiently (network, throttling, 5xx).
    pub const TRANSIENT: Backoff =
        Backoff { attempts: 6, first: Duration::from_millis(100), max: Duration::from_secs(5) };
    /// For an optimistic write that lost a race to another writer: short waits, many tries.
    pub const CONTENDED: Backoff =
        Backoff { attempts: 40, first: Duration::from_millis(5), max: Duration::from_millis(100) };

    /// Whether another try is allowed after `tries` tries (1 = the first one failed).
    pub fn again(&self, tries: u32) -> bool {
        tries < self.attempts
    }

    /// The wait after the `retry`-th failure (0-based), with "equal jitter": half of the
    /// capped exponential delay, plus a random share of the other half, so that writers
    /// that collided do not collide again in lockstep.
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, random_unit())
    }

    /// [`delay`](Self::delay) with the random draw given (0.0 ..= 1.0), for tests.
    pub fn delay_with(&self, retry: u32, unit: f64) -> Duration {
        let cap = self.first.saturating_mul(1u32 << retry.min(20)).min(self.max);
        cap / 2 + cap.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }
}

fn random_unit() -> f64 {
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    (r >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff { attempts: 5, first: Duration::from_millis(100), max: Duration::from_millis(350) };
        assert_eq!(b.delay_with(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay_with(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay_with(1, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay_with(2, 1.0), Duration::from_millis(350));
        assert_eq!(b.delay_with(30, 0.5), Duration::from_micros(262_500));
        for retry in 0..10 {
            let d = b.delay(retry);
            assert!(d <= b.max && d >= b.delay_with(retry, 0.0), "{d:?} at {retry}");
        }
    }

    #[test]
    fn attempts_count_the_first_try() {
        let b = Backoff::TRANSIENT;
        assert!(b.again(1) && b.again(5));
        assert!(!b.again(6));
    }
}
