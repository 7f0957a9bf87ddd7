//! Shapes: maps with known keys, lists, strings, names, durations and `env`, each
//! reporting what it found instead; and the typo suggestions ("did you mean").

use super::Checker;
use crate::compile::Pos;
use crate::compile::duration::parse_duration;
use crate::compile::tree::{Entry, Kind, Node, Value};
use crate::ids::is_valid_name;
use crate::secret::{SecretError, SecretName};
use std::collections::{BTreeMap, HashMap};

const NAME_RULE: &str =
    "use letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit, at most 63 characters";

/// A map's known entries by key text, first occurrence only, in file order.
pub(super) struct Fields<'a> {
    pub(super) known: Vec<(&'a str, &'a Node, &'a Node)>,
    /// Keys suggested for misspelt ones: "missing" errors for these would repeat the
    /// typo's error, so they are not reported.
    pub(super) suggested: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// The key node and the value node.
    pub(super) fn get(&self, key: &str) -> Option<(&'a Node, &'a Node)> {
        self.known.iter().find(|(k, _, _)| *k == key).map(|(_, k, v)| (*k, *v))
    }
    pub(super) fn value(&self, key: &str) -> Option<&'a Node> {
        self.get(key).map(|(_, v)| v)
    }
}

impl Checker {
    pub(super) fn map<'a>(&mut self, node: &'a Node, what: &str) -> Option<&'a [Entry]> {
        match &node.kind {
            Kind::Map(entries) => Some(entries),
            Kind::Alias => None,
            _ => {
                self.err(node.pos, format!("{what} must be a map, found {}", node.describe()));
                None
            }
        }
    }

    pub(super) fn seq<'a>(&mut self, node: &'a Node, what: &str) -> Option<&'a [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            Kind::Alias => None,
            _ => {
                self.err(node.pos, format!("{what} must be a list, found {}", node.describe()));
                None
            }
        }
    }

    /// A string scalar (quoted or plain, not a number, boolean or null).
    pub(super) fn string<'a>(&mut self, node: &'a Node, what: &str) -> Option<&'a str> {
        match &node.kind {
            Kind::Scalar(s) if s.value() == Value::Str => Some(&s.text),
            Kind::Alias => None,
            _ => {
                self.err(node.pos, format!("{what} must be a string, found {}", node.describe()));
                None
            }
        }
    }

    /// A name: a string, or a number written plainly (`name: 1`).
    pub(super) fn name_text<'a>(&mut self, node: &'a Node, what: &str) -> Option<&'a str> {
        match &node.kind {
            Kind::Scalar(s) if matches!(s.value(), Value::Str | Value::Int(_) | Value::Float(_)) => {
                Some(&s.text)
            }
            _ => self.string(node, what),
        }
    }

    /// A map's entries, reporting non-scalar keys and duplicates (keeping the first).
    pub(super) fn entries<'a>(
        &mut self,
        entries: &'a [Entry],
        duplicate: &str,
    ) -> Vec<(&'a str, &'a Node, &'a Node)> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::new();
        for Entry { key, value } in entries {
            let text = match &key.kind {
                Kind::Scalar(s) => s.text.as_str(),
                Kind::Alias => continue,
                _ => {
                    self.err(key.pos, format!("keys must be strings, found {}", key.describe()));
                    continue;
                }
            };
            if let Some(line) = seen.get(text) {
                self.err(key.pos, format!("duplicate {duplicate} \"{text}\" (first on line {line})"));
                continue;
            }
            seen.insert(text, key.pos.line);
            out.push((text, key, value));
        }
        out
    }

    /// A map with a fixed set of keys: unknown keys are reported with a suggestion.
    pub(super) fn fields<'a>(
        &mut self,
        entries: &'a [Entry],
        what: &str,
        allowed: &[&'static str],
    ) -> Fields<'a> {
        let all = self.entries(entries, "key");
        let mut known = Vec::new();
        let mut suggested = Vec::new();
        for (text, key, value) in all {
            if allowed.contains(&text) {
                known.push((text, key, value));
                continue;
            }
            let message = match nearest(text, allowed.iter().copied()) {
                Some(near) => {
                    suggested.push(near);
                    format!("unknown key \"{text}\" in {what}; did you mean \"{near}\"?")
                }
                None => format!("unknown key \"{text}\" in {what}; valid keys: {}", allowed.join(", ")),
            };
            self.err(key.pos, message);
        }
        Fields { known, suggested }
    }

    /// Reports a missing required key, unless a misspelling of it was already reported.
    pub(super) fn missing(&mut self, f: &Fields, key: &str, pos: Pos, message: impl Into<String>) {
        if !f.suggested.contains(&key) {
            self.err(pos, message);
        }
    }

    pub(super) fn duration(&mut self, node: &Node) -> Option<u64> {
        let text = match &node.kind {
            Kind::Scalar(s) if matches!(s.value(), Value::Str | Value::Int(_)) => s.text.as_str(),
            Kind::Alias => return None,
            _ => {
                let found = node.describe();
                self.err(node.pos, format!("\"timeout\" must be a duration like \"90s\", found {found}"));
                return None;
            }
        };
        match parse_duration(text) {
            Ok(ms) => Some(ms),
            Err(message) => {
                self.err(node.pos, message);
                None
            }
        }
    }

    pub(super) fn check_name(&mut self, node: &Node, name: &str, kind: &str) -> bool {
        let ok = is_valid_name(name);
        if !ok {
            self.err(node.pos, format!("invalid {kind} name \"{name}\": {NAME_RULE}"));
        }
        ok
    }

    pub(super) fn env(&mut self, node: &Node) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let Some(entries) = self.map(node, "\"env\"") else { return env };
        for (name, key, value) in self.entries(entries, "key") {
            if !is_env_name(name) {
                self.err(
                    key.pos,
                    format!(
                        "invalid environment variable name \"{name}\": use letters, digits and \"_\", \
                         not starting with a digit"
                    ),
                );
            }
            match &value.kind {
                Kind::Scalar(s) => {
                    let text = if s.value() == Value::Null { "" } else { s.text.as_str() };
                    env.insert(name.to_string(), text.to_string());
                }
                Kind::Alias => {}
                _ => self.err(
                    value.pos,
                    format!(
                        "env value for \"{name}\" must be a string, number or boolean, found {}",
                        value.describe()
                    ),
                ),
            }
        }
        env
    }
}

impl Checker {
    /// A `secrets:` list: names of repository secrets, each an environment variable name.
    pub(super) fn secrets(&mut self, node: &Node) -> Vec<SecretName> {
        let Some(items) = self.seq(node, "\"secrets\"") else { return Vec::new() };
        let mut names: Vec<SecretName> = Vec::new();
        let mut lines: HashMap<String, usize> = HashMap::new();
        for item in items {
            let Some(text) = self.string(item, "a secret name") else { continue };
            let name = match SecretName::parse(text) {
                Ok(name) => name,
                Err(e) => {
                    let why = match e {
                        SecretError::ReservedName(_) => {
                            "names starting with KILN_ are reserved for the build's own variables"
                        }
                        _ => {
                            "use letters, digits and \"_\", not starting with a digit, at most 128 characters"
                        }
                    };
                    self.err(item.pos, format!("invalid secret name \"{text}\": {why}"));
                    continue;
                }
            };
            if let Some(line) = lines.get(text) {
                self.err(item.pos, format!("duplicate secret \"{text}\" (first on line {line})"));
                continue;
            }
            lines.insert(text.to_string(), item.pos.line);
            names.push(name);
        }
        names
    }
}

pub(super) fn is_env_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The candidate closest to `word` (case-insensitively), if it is close enough to be a
/// likely typo: at most two edits, and fewer edits than `word` has characters.
pub(super) fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let limit = 2.min(word.chars().count().saturating_sub(1));
    candidates
        .map(|c| (levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(super) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::validate::stages::{STAGE_KEYS, STEP_KEYS};

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("comands", "commands"), 1);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(nearest("comands", STEP_KEYS.iter().copied()), Some("commands"));
        assert_eq!(nearest("Steps", STAGE_KEYS.iter().copied()), Some("steps"));
        assert_eq!(nearest("x", STAGE_KEYS.iter().copied()), None);
        assert_eq!(nearest("banana", STAGE_KEYS.iter().copied()), None);
    }
}
