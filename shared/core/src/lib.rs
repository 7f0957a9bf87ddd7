//! The logic of Kiln's functions, each over the storage ports: compile, event fan-in,
//! dispatch, runner and log ingest; and `system`, which runs them all in one process.

pub mod job;
pub mod runner;
pub mod sinks;
