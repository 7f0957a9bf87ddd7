//! Kiln's domain: the pipeline model and its compiler, the compiled plan, the one state
//! machine shared by builds, stages and steps, the CloudEvents envelope and the rules that
//! turn events into transitions. Nothing here does I/O.

pub mod catalog;
pub mod commit;
pub mod compile;
pub mod event;
pub mod git;
pub mod ids;
pub mod logs;
pub mod plan;
pub mod protocol;
pub mod react;
pub mod report;
pub mod retention;
pub mod retry;
pub mod secret;
pub mod state;
pub mod status;

pub use ids::{BuildId, Repo, StageName, StepName};
pub use status::Status;
