//! Repository secrets: their names and the rules a value must meet. A secret reaches a step
//! only as an environment variable of its name, and only when its pipeline declares it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Smallest value accepted: shorter ones would mask ordinary words in every log.
pub const MIN_VALUE_BYTES: usize = 4;
/// Largest value accepted.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// A secret's name: an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`), not starting
/// with `KILN_` (those are the build's own variables).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "{0:?} is not a valid secret name: use letters, digits and `_`, not starting with a digit, \
         at most 128 characters"
    )]
    BadName(String),
    #[error("{0:?}: names starting with KILN_ are reserved for the build's own variables")]
    ReservedName(String),
    #[error("a secret value must be {MIN_VALUE_BYTES} to {MAX_VALUE_BYTES} bytes, this one is {0}")]
    BadLength(usize),
    #[error("a secret value must be UTF-8 text without NUL bytes (it becomes an environment variable)")]
    NotText,
}

impl SecretName {
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || s.len() > MAX_NAME_LEN || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(SecretError::BadName(s.to_string()));
        }
        if s.to_ascii_uppercase().starts_with("KILN_") {
            return Err(SecretError::ReservedName(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SecretName {
    type Error = SecretError;
    fn try_from(s: String) -> Result<Self, SecretError> {
        Self::parse(&s)
    }
}

impl From<SecretName> for String {
    fn from(n: SecretName) -> String {
        n.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a value as sent by a person: its size, and that it can be an environment variable.
pub fn check_value(value: &[u8]) -> Result<&str, SecretError> {
    if !(MIN_VALUE_BYTES..=MAX_VALUE_BYTES).contains(&value.len()) {
        return Err(SecretError::BadLength(value.len()));
    }
    let text = std::str::from_utf8(value).map_err(|_| SecretError::NotText)?;
    if text.contains('\0') {
        return Err(SecretError::NotText);
    }
    Ok(text)
}

/// What to mask in logs for a value: the value itself and, for a multi-line value, each of
/// its lines (a step may print one line of a key file) that is long enough to be told
/// apart from ordinary output.
pub fn mask_strings(value: &str) -> Vec<&str> {
    let mut out = vec![value];
    if value.contains('\n') {
        out.extend(
            value
                .lines()
                .map(|l| l.trim_end_matches('\r'))
                .filter(|l| l.len() >= MIN_VALUE_BYTES && *l != value),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_environment_variable_names() {
        for ok in ["DEPLOY_KEY", "_x", "a1", "npm_token"] {
            assert_eq!(SecretName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "é", &"A".repeat(129)] {
            assert!(matches!(SecretName::parse(bad), Err(SecretError::BadName(_))), "{bad}");
        }
        assert!(matches!(SecretName::parse("KILN_TOKEN"), Err(SecretError::ReservedName(_))));
        assert!(matches!(SecretName::parse("kiln_x"), Err(SecretError::ReservedName(_))));
        assert!(serde_json::from_str::<SecretName>("\"9x\"").is_err());
    }

    #[test]
    fn values_have_bounds_and_are_text() {
        assert_eq!(check_value(b"abcd"), Ok("abcd"));
        assert_eq!(check_value(b"abc"), Err(SecretError::BadLength(3)));
        assert!(check_value(&vec![b'a'; MAX_VALUE_BYTES]).is_ok());
        assert_eq!(
            check_value(&vec![b'a'; MAX_VALUE_BYTES + 1]),
            Err(SecretError::BadLength(MAX_VALUE_BYTES + 1))
        );
        assert_eq!(check_value(b"ab\0cd"), Err(SecretError::NotText));
        assert_eq!(check_value(b"\xff\xfe\xfd\xfc"), Err(SecretError::NotText));
    }

    #[test]
    fn multi_line_values_mask_each_long_line() {
        assert_eq!(mask_strings("single"), vec!["single"]);
        let v = "-----BEGIN KEY-----\r\nAAAABBBB\nxy\n-----END KEY-----\n";
        assert_eq!(mask_strings(v), vec![v, "-----BEGIN KEY-----", "AAAABBBB", "-----END KEY-----"]);
    }
}
