//! Branch and tag globs of a pipeline's top-level `on:` (helper B fills this in).

/// Placeholder until the real matcher lands (exact match only).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    pattern == text
}
