//! How long a build is kept: its item(s), stages, leases, event history and applied event
//! ids all expire together, a retention after the build was created — never before its own
//! timeout could have ended it. Logs follow the same number of days (the bucket's lifecycle
//! rule on AWS). The image catalog and repository settings are not builds: they are kept.

use crate::state::Build;

/// Days a build is kept when nothing says otherwise (`KILN_RETENTION_DAYS`).
pub const DEFAULT_RETENTION_DAYS: u64 = 90;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// When (ms since the epoch) everything of `build` may go: `retention_days` after it was
/// created, and at least a day after its own timeout ran out, so a running build never
/// expires under its runners.
pub fn expires_at_ms(build: &Build, retention_days: u64) -> u64 {
    expiry_ms(build.created_ms, build.plan.timeout_ms, retention_days)
}

/// [`expires_at_ms`] from the two numbers it depends on (for stores that read them alone).
pub fn expiry_ms(created_ms: u64, timeout_ms: u64, retention_days: u64) -> u64 {
    let kept = retention_days.max(1).saturating_mul(DAY_MS);
    let running = timeout_ms.saturating_add(DAY_MS);
    created_ms.saturating_add(kept.max(running))
}

/// Retention from a variable's text: a whole number of days, at least 1; anything else
/// (unset, empty, `0`, not a number) is the default.
pub fn retention_days(text: Option<&str>) -> u64 {
    text.and_then(|t| t.trim().parse::<u64>().ok()).filter(|d| *d >= 1).unwrap_or(DEFAULT_RETENTION_DAYS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;
    use crate::{BuildId, Repo};

    fn build(timeout_ms: u64) -> Build {
        let plan = Plan {
            version: "1".into(),
            env: Default::default(),
            stages: vec![],
            images: vec![],
            timeout_ms,
            git: None,
            cancel_superseded: false,
        };
        Build::new(BuildId::new("b"), Repo::new("o", "r"), plan, 1_000)
    }

    #[test]
    fn a_build_expires_after_the_retention_never_before_its_timeout() {
        assert_eq!(expires_at_ms(&build(2 * 3600 * 1000), 90), 1_000 + 90 * DAY_MS);
        // A build that may run 10 days is kept a day past that, whatever the retention.
        assert_eq!(expires_at_ms(&build(10 * DAY_MS), 1), 1_000 + 11 * DAY_MS);
        assert_eq!(expires_at_ms(&build(1000), 0), 1_000 + DAY_MS + 1000);
    }

    #[test]
    fn retention_days_parse_with_a_default() {
        assert_eq!(retention_days(None), DEFAULT_RETENTION_DAYS);
        assert_eq!(retention_days(Some(" 30 ")), 30);
        for bad in ["", "0", "-3", "ten", "1.5"] {
            assert_eq!(retention_days(Some(bad)), DEFAULT_RETENTION_DAYS, "{bad:?}");
        }
    }
}
