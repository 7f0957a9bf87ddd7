//! Storage ports — the state store, the log store and the queues — and nothing else. The
//! adapters live in their own crates (`kiln-store-local`, `kiln-store-aws`), and the one
//! test suite both must pass in `kiln-store-contract`, so code that depends on the ports
//! alone links neither.

mod ports;

pub use ports::*;
