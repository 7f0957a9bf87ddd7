//! The contract suite: behaviour every adapter of a port must show. Each check is an async
//! function over a trait object; the local adapters' tests and the AWS adapters' tests
//! (on LocalStack) call the same functions.
