//! Storage ports — the state store, the log store, the queues and the secret store — and
//! nothing else. The adapters live in their own crates (`kiln-store-local`,
//! `kiln-store-aws`), and the one test suite both must pass in `kiln-store-contract`, so
//! code that depends on the ports alone links neither.

mod ports;
mod secrets;

pub use ports::*;
pub use secrets::*;
