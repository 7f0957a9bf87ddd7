//! The contract suite: behaviour every adapter of a port must show. Each check is an async
//! function over a trait object; the local adapters' tests and the AWS adapters' tests
//! (on LocalStack) call the same functions.
//!
//! Checks panic (assert) on a violation. They make their own builds (fresh ids, and a
//! fresh repository where listings are compared) and their own queues (through a
//! [`QueueFactory`]), so one store may serve every check, in any order or concurrently.
//! Timing checks use visibility timeouts of 1 s or more and assert with slack; they wait
//! and measure on tokio's clock, so the local adapters run them on paused time.
//!
//! Entry points: [`state_suite`], [`log_suite`], [`queue_suite`], [`repos_suite`], or each
//! check alone.

/// Calls the macro `$m` with the name of every state store check, so each adapter's test file
/// runs them all without listing them again.
#[macro_export]
macro_rules! for_each_state_check {
    ($m:ident) => {
        $m!(
            state_create_get,
            state_create_twice_already_exists,
            state_unknown_build,
            state_list_newest_first,
            state_commit_numbers_events,
            state_duplicate_event_is_noop,
            state_empty_event_id_is_not_deduplicated,
            state_refused_commit_changes_nothing,
            state_new_stages,
            state_concurrent_commits,
            state_mark_dispatched_once,
            state_run_status,
            catalog_round_trip,
            catalog_stale_write_refused,
            catalog_duplicate_event_writes_once,
            catalog_concurrent_writes,
            catalog_list,
            state_seq_and_parts,
            state_large_build,
        );
    };
}

/// Calls the macro `$m` with the name of every lease check (state store checks that wait
/// for leases to run out: adapters whose leases follow tokio's clock run them on paused
/// time).
#[macro_export]
macro_rules! for_each_lease_check {
    ($m:ident) => {
        $m!(state_claim_job, state_claim_finished, state_lease_survives_commits,);
    };
}

/// Calls the macro `$m` with the name of every log store check, so each adapter's test file
/// runs them all without listing them again.
#[macro_export]
macro_rules! for_each_log_check {
    ($m:ident) => {
        $m!(
            logs_put_read_round_trip,
            logs_retry_is_idempotent,
            logs_conflict,
            logs_gap,
            logs_read_from_offset,
            logs_unknown_stream_not_found,
            logs_complete,
            logs_complete_empty_stream,
            logs_list_order,
            logs_init_append_batches,
            logs_large_stream,
            logs_binary_bytes,
        );
    };
}

/// Calls the macro `$m` with the name of every queue check, so each adapter's test file
/// runs them all without listing them again.
#[macro_export]
macro_rules! for_each_queue_check {
    ($m:ident) => {
        $m!(
            queue_send_receive_delete,
            queue_long_poll_wakes_on_send,
            queue_redelivery_after_visibility_timeout,
            queue_extend,
            queue_fifo_order_one_in_flight_per_group,
            queue_fifo_dedup,
        );
    };
}

/// Calls the macro `$m` with the name of every repository store check, so each adapter's
/// test file runs them all without listing them again.
#[macro_export]
macro_rules! for_each_repo_check {
    ($m:ident) => {
        $m!(
            repos_round_trip,
            repos_replace_keeps_one,
            repos_unknown_is_none,
            repos_list_sorted,
            repos_claim_once,
            repos_release_then_claim,
            repos_concurrent_claims_one_winner,
            repos_claim_keys_any_shape,
        );
    };
}

mod catalog;
mod fixtures;
mod leases;
mod logs;
mod queues;
mod repos;
mod scale;
pub mod secrets;
mod state;

pub use catalog::*;
pub use fixtures::*;
pub use leases::*;
pub use logs::*;
pub use queues::*;
pub use repos::*;
pub use scale::*;
pub use state::*;
