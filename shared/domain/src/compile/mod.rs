//! The pipeline compiler: YAML text → [`Plan`], or every error at once with its line and
//! column.
//!
//! Three steps: `tree` parses the YAML (yaml-rust2's event parser) into a small tree that
//! keeps every node's position and whether a scalar was quoted; `validate` walks that
//! tree against the pipeline format, recording every problem rather than stopping at the
//! first, and builds the [`Plan`] when there were none; the errors are then sorted by
//! position. Invalid YAML is the one error that stops everything: nothing after it can be
//! trusted.
//!
//! YAML aliases (`*name`) are rejected, and so are tags other than `!!str` (see `tree`).
//! A `runs-on: lambda` stage without a `timeout` gets Lambda's ceiling
//! ([`crate::plan::LAMBDA_MAX_TIMEOUT_MS`]) rather than [`crate::plan::DEFAULT_STAGE_TIMEOUT_MS`],
//! which only container stages can have.

mod duration;
pub use duration::format_duration;
#[cfg(test)]
mod tests;
mod tree;
mod validate;

use crate::plan::Plan;
use serde::Serialize;
use std::fmt;

/// Pipelines larger than this are refused before parsing.
pub const MAX_PIPELINE_BYTES: usize = 1024 * 1024;

/// One compile error at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompileError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl CompileError {
    fn at(pos: Pos, message: impl Into<String>) -> Self {
        Self { line: pos.line, column: pos.column, message: message.into() }
    }
}

/// A 1-based line and column; orders by line, then column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    line: usize,
    column: usize,
}

const START: Pos = Pos { line: 1, column: 1 };

/// Compiles a pipeline. On failure returns every error found, sorted by position.
pub fn compile(source: &[u8]) -> Result<Plan, Vec<CompileError>> {
    if source.len() > MAX_PIPELINE_BYTES {
        return Err(vec![CompileError::at(
            START,
            format!("pipeline is {} bytes, more than the limit of {MAX_PIPELINE_BYTES} bytes", source.len()),
        )]);
    }
    let text = match std::str::from_utf8(source) {
        Ok(text) => text,
        Err(e) => {
            // The valid prefix is text: count lines and characters in it.
            let valid = std::str::from_utf8(&source[..e.valid_up_to()]).unwrap_or_default();
            let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
            let pos = Pos {
                line: valid.matches('\n').count() + 1,
                column: valid[line_start..].chars().count() + 1,
            };
            let byte = source[e.valid_up_to()];
            return Err(vec![CompileError::at(
                pos,
                format!("pipeline is not valid utf-8 (byte 0x{byte:02x} here)"),
            )]);
        }
    };
    // A byte-order mark is invisible in editors: drop it so columns match what people see.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let mut errors = Vec::new();
    let root = tree::parse(text, &mut errors).map_err(|fatal| vec![fatal])?;
    let plan = match &root {
        Some(node) if !is_null(node) => validate::check(node, &mut errors),
        _ => {
            errors.push(CompileError::at(START, "pipeline is empty"));
            None
        }
    };
    match plan {
        Some(plan) if errors.is_empty() => Ok(plan),
        _ => {
            errors.sort_by_key(|e| (e.line, e.column));
            errors.dedup();
            Err(errors)
        }
    }
}

fn is_null(node: &tree::Node) -> bool {
    matches!(&node.kind, tree::Kind::Scalar(s) if s.value() == tree::Value::Null)
}
