//! The runner: takes a job and runs its stage.
