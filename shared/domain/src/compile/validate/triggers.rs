//! Triggers (`on:`): the event types, the `where` filter, the policy.

use super::Checker;
use crate::compile::tree::{Kind, Node, Value};
use crate::plan::{Trigger, TriggerPolicy};
use std::collections::{BTreeMap, HashSet};

const TRIGGER_KEYS: &[&str] = &["event", "where", "policy"];

impl Checker {
    pub(super) fn triggers(&mut self, node: &Node) -> Vec<Trigger> {
        let Some(items) = self.seq(node, "\"on\"") else { return Vec::new() };
        let mut triggers = Vec::new();
        for item in items {
            let Some(entries) = self.map(item, "trigger") else { continue };
            let f = self.fields(entries, "trigger", TRIGGER_KEYS);
            let events = match f.value("event") {
                Some(v) => self.events(v),
                None => {
                    self.missing(&f, "event", item.pos, "trigger is missing \"event\"");
                    Vec::new()
                }
            };
            let where_ = f.value("where").map(|v| self.where_(v)).unwrap_or_default();
            let mut policy = TriggerPolicy::Create;
            if let Some(v) = f.value("policy") {
                match self.string(v, "\"policy\"") {
                    Some("create") => {}
                    Some("delete") => policy = TriggerPolicy::Delete,
                    Some(other) => {
                        self.err(v.pos, format!("bad policy \"{other}\": use \"create\" or \"delete\""))
                    }
                    None => {}
                }
            }
            triggers.push(Trigger { events, where_, policy });
        }
        triggers
    }

    pub(super) fn events(&mut self, node: &Node) -> Vec<String> {
        let items: Vec<&Node> = match &node.kind {
            Kind::Seq(items) => {
                if items.is_empty() {
                    self.err(node.pos, "\"event\" is empty: list at least one event type");
                }
                items.iter().collect()
            }
            _ => vec![node],
        };
        let mut events: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for item in items {
            let Some(event) = self.string(item, "an event type") else { continue };
            if event.trim().is_empty() {
                self.err(item.pos, "empty event type");
            } else if !seen.insert(event) {
                self.err(item.pos, format!("event type \"{event}\" is listed twice"));
            } else {
                events.push(event.to_string());
            }
        }
        events
    }

    pub(super) fn where_(&mut self, node: &Node) -> BTreeMap<String, serde_json::Value> {
        let mut out = BTreeMap::new();
        let Some(entries) = self.map(node, "\"where\"") else { return out };
        for (field, key, value) in self.entries(entries, "key") {
            if field.is_empty() {
                self.err(key.pos, "empty field name in \"where\"");
                continue;
            }
            if let Some(json) = self.json(value) {
                out.insert(field.to_string(), json);
            }
        }
        out
    }

    pub(super) fn json(&mut self, node: &Node) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        Some(match &node.kind {
            Kind::Alias => return None,
            Kind::Scalar(s) => match s.value() {
                Value::Null => J::Null,
                Value::Bool(b) => J::Bool(b),
                Value::Int(i) => match (i64::try_from(i), u64::try_from(i)) {
                    (Ok(i), _) => J::from(i),
                    (_, Ok(u)) => J::from(u),
                    _ => serde_json::Number::from_f64(i as f64)
                        .map_or_else(|| J::String(s.text.clone()), J::Number),
                },
                Value::Float(x) => {
                    serde_json::Number::from_f64(x).map_or_else(|| J::String(s.text.clone()), J::Number)
                }
                Value::Str => J::String(s.text.clone()),
            },
            Kind::Seq(items) => J::Array(items.iter().filter_map(|i| self.json(i)).collect()),
            Kind::Map(entries) => {
                let mut object = serde_json::Map::new();
                for (k, _, v) in self.entries(entries, "key") {
                    if let Some(j) = self.json(v) {
                        object.insert(k.to_string(), j);
                    }
                }
                J::Object(object)
            }
        })
    }
}
