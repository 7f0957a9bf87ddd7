//! The pipeline's top-level `on:`: which git events build it (`push` with branch and tag
//! globs, `pull_request` with base-branch globs), and `cancel-superseded`.

use super::Checker;
use crate::compile::tree::{Kind, Node, Value};
use crate::git::{GitTriggers, RefFilter};

const EVENTS: &[&str] = &["push", "pull_request"];
const PUSH_KEYS: &[&str] = &["branches", "tags"];
const PULL_REQUEST_KEYS: &[&str] = &["branches"];

impl Checker {
    pub(super) fn git_triggers(&mut self, node: &Node) -> Option<GitTriggers> {
        if let Kind::Seq(_) = node.kind {
            self.err(
                node.pos,
                "the top-level \"on\" is a map of git events (push, pull_request); \
                 triggers on CloudEvents go on a stage",
            );
            return None;
        }
        let entries = self.map(node, "the top-level \"on\"")?;
        let f = self.fields(entries, "\"on\"", EVENTS);
        Some(GitTriggers {
            push: f.value("push").map(|v| self.ref_filter(v, "push", PUSH_KEYS)),
            pull_request: f
                .value("pull_request")
                .map(|v| self.ref_filter(v, "pull_request", PULL_REQUEST_KEYS)),
        })
    }

    /// `push:` alone (null) or `{}`: every branch and tag.
    fn ref_filter(&mut self, node: &Node, event: &str, keys: &[&'static str]) -> RefFilter {
        if let Kind::Scalar(s) = &node.kind
            && s.value() == Value::Null
        {
            return RefFilter::default();
        }
        let Some(entries) = self.map(node, &format!("\"{event}\"")) else { return RefFilter::default() };
        let f = self.fields(entries, &format!("\"{event}\""), keys);
        RefFilter {
            branches: f.value("branches").map(|v| self.globs(v, "branches")),
            tags: f.value("tags").map(|v| self.globs(v, "tags")),
        }
    }

    /// A glob or a list of them; none may be empty.
    fn globs(&mut self, node: &Node, what: &str) -> Vec<String> {
        let items: Vec<&Node> = match &node.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut out = Vec::new();
        for item in items {
            let Some(text) = self.name_text(item, &format!("a pattern in \"{what}\"")) else { continue };
            if text.trim().is_empty() {
                self.err(item.pos, format!("empty pattern in \"{what}\""));
            } else {
                out.push(text.to_string());
            }
        }
        out
    }

    pub(super) fn flag(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.kind {
            Kind::Scalar(s) => match s.value() {
                Value::Bool(b) => Some(b),
                _ => {
                    self.err(node.pos, format!("{what} must be true or false, found {}", node.describe()));
                    None
                }
            },
            Kind::Alias => None,
            _ => {
                self.err(node.pos, format!("{what} must be true or false, found {}", node.describe()));
                None
            }
        }
    }
}
