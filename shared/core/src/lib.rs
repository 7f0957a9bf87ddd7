//! The logic of Kiln's functions, each over the storage ports: compile ([`submit`]),
//! event fan-in, dispatch, runner and log ingest; and [`system`], which runs them all in
//! one process.

pub mod dispatch;
pub mod fanin;
pub mod git;
pub mod images;
pub mod ingest;
pub mod job;
pub mod notify;
pub mod queues;
pub mod runner;
pub mod secrets;
pub mod sinks;
pub mod submit;
pub mod system;
pub mod tokens;
pub mod watchdog;
pub mod webhook;
