//! Local adapters: state in memory plus the data dir, logs as files, queues in process.
