//! Identifiers and names as newtypes, so a stage name cannot be passed where a build id goes.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }
    };
}

string_newtype!(
    /// A build's id: a UUIDv7, so ids sort by creation time.
    BuildId
);
string_newtype!(
    /// A stage's name; an instance of an event-triggered stage is `name#n`.
    StageName
);
string_newtype!(
    /// A step's (or service's) name, unique within its stage.
    StepName
);

impl BuildId {
    /// A new, time-ordered build id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

impl StageName {
    /// The stage this is an instance of (`heads#2` → `heads`).
    pub fn template(&self) -> &str {
        self.0.split('#').next().unwrap_or(&self.0)
    }
}

/// Whether `s` is a valid stage, step or service name: ASCII letters, digits, `.`, `_`
/// and `-`, starting with a letter or digit, at most 63 characters. Names appear in log
/// keys and URLs, so they are kept plain.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The repository a build belongs to: `org/repo`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Repo {
    pub org: String,
    pub repo: String,
}

impl Repo {
    pub fn new(org: impl Into<String>, repo: impl Into<String>) -> Self {
        Self { org: org.into(), repo: repo.into() }
    }

    /// Parses `org/repo`.
    pub fn parse(s: &str) -> Option<Self> {
        let (org, repo) = s.split_once('/')?;
        (is_valid_name(org) && is_valid_name(repo)).then(|| Self::new(org, repo))
    }
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.org, self.repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name("build-1.x_y"));
        assert!(!is_valid_name("-x"));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name("a#1"));
        assert!(!is_valid_name(""));
        assert_eq!(StageName::new("heads#2").template(), "heads");
    }

    #[test]
    fn build_ids_sort_by_time() {
        let a = BuildId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = BuildId::generate();
        assert!(a < b);
    }

    #[test]
    fn repo_parse() {
        assert_eq!(Repo::parse("acme/web"), Some(Repo::new("acme", "web")));
        assert_eq!(Repo::parse("acme"), None);
        assert_eq!(Repo::parse("acme/we b"), None);
    }
}
