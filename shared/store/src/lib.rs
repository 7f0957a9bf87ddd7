//! Storage ports — the state store, the log store, the queues, the secret store and the repository store — and
//! nothing else. The adapters live in their own crates (`kiln-store-local`,
//! `kiln-store-aws`), and the one test suite both must pass in `kiln-store-contract`, so
//! code that depends on the ports alone links neither.

mod ports;
mod repos;
mod secrets;

pub use ports::*;
pub use repos::*;
pub use secrets::*;
