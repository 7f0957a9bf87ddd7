//! Storage ports — the state store, the log store and the queues — and their local
//! adapters (memory plus a data dir). The AWS adapters implement the same traits, and
//! [`contract`] holds the one test suite both must pass.

pub mod contract;
pub mod local;
mod ports;
pub mod redeliver;

pub use ports::*;
