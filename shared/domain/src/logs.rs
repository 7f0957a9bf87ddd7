//! Log streams: the build's one init log, a log per step run and per service run. Their
//! keys and the stable order every backend lists them in: init, then steps by number,
//! then services by number.

use crate::ids::{StageName, StepName};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The runner flushes each stream at least this often.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 1000;
/// ... or sooner, when this many bytes are waiting.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Which log of a build. Attempts of the same job keep separate logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LogStream {
    /// The build's one setup log (workspace, environment, services), written by runners.
    Init,
    Step {
        stage: StageName,
        step: StepName,
        number: u32,
        attempt: u32,
    },
    Service {
        stage: StageName,
        service: StepName,
        number: u32,
        attempt: u32,
    },
}

impl LogStream {
    /// The stream's key within its build: `init`, `step/0003/test/unit/1`,
    /// `service/0001/test/cache/1`. Numbers are zero-padded so keys sort in list order.
    pub fn key(&self) -> String {
        match self {
            LogStream::Init => "init".to_string(),
            LogStream::Step { stage, step, number, attempt } => {
                format!("step/{number:04}/{stage}/{step}/{attempt}")
            }
            LogStream::Service { stage, service, number, attempt } => {
                format!("service/{number:04}/{stage}/{service}/{attempt}")
            }
        }
    }

    /// Parses a key made by [`LogStream::key`].
    pub fn from_key(key: &str) -> Option<Self> {
        if key == "init" {
            return Some(LogStream::Init);
        }
        let parts: Vec<&str> = key.split('/').collect();
        let [kind, number, stage, name, attempt] = parts.as_slice() else {
            return None;
        };
        let number = number.parse().ok()?;
        let attempt = attempt.parse().ok()?;
        let (stage, name) = (StageName::new(*stage), StepName::new(*name));
        match *kind {
            "step" => Some(LogStream::Step { stage, step: name, number, attempt }),
            "service" => Some(LogStream::Service { stage, service: name, number, attempt }),
            _ => None,
        }
    }

    /// The stable listing order: init, steps by number, services by number; stage
    /// instances and attempts after that.
    pub fn sort_key(&self) -> (u8, u32, String, u32) {
        match self {
            LogStream::Init => (0, 0, String::new(), 0),
            LogStream::Step { stage, number, attempt, .. } => (1, *number, stage.to_string(), *attempt),
            LogStream::Service { stage, number, attempt, .. } => (2, *number, stage.to_string(), *attempt),
        }
    }

    /// `stage/step` as users name it (`init` for the init log).
    pub fn display_name(&self) -> String {
        match self {
            LogStream::Init => "init".to_string(),
            LogStream::Step { stage, step, .. } => format!("{stage}/{step}"),
            LogStream::Service { stage, service, .. } => format!("{stage}/{service}"),
        }
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// Sorts streams in the stable listing order.
pub fn sort_streams(streams: &mut [LogStream]) {
    streams.sort_by_key(LogStream::sort_key);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(stage: &str, n: u32) -> LogStream {
        LogStream::Step { stage: stage.into(), step: "s".into(), number: n, attempt: 1 }
    }

    #[test]
    fn keys_round_trip() {
        for s in [
            LogStream::Init,
            step("build", 12),
            LogStream::Service { stage: "t#2".into(), service: "db".into(), number: 1, attempt: 2 },
        ] {
            assert_eq!(LogStream::from_key(&s.key()), Some(s));
        }
        assert_eq!(LogStream::from_key("step/x/a/b/1"), None);
    }

    #[test]
    fn stable_order() {
        let svc = LogStream::Service { stage: "a".into(), service: "db".into(), number: 1, attempt: 1 };
        let mut v = vec![svc.clone(), step("b", 10), LogStream::Init, step("a", 2)];
        sort_streams(&mut v);
        assert_eq!(v, vec![LogStream::Init, step("a", 2), step("b", 10), svc]);
    }
}
