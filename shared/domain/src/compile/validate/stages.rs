//! Stages, and the steps and services in them.

use super::Checker;
use super::shape::Fields;
use crate::compile::Pos;
use crate::compile::duration::format_duration;
use crate::compile::tree::{Kind, Node, Value};
use crate::ids::StepName;
use crate::plan::{
    DEFAULT_STAGE_TIMEOUT_MS, LAMBDA_MAX_TIMEOUT_MS, RunsOn, ServicePlan, StepPlan, Trigger, TriggerPolicy,
};
use crate::secret::SecretName;
use std::collections::{BTreeMap, HashMap, HashSet};

pub(super) const STAGE_KEYS: &[&str] =
    &["steps", "services", "needs", "runs-on", "timeout", "env", "on", "secrets", "checkout"];
pub(super) const STEP_KEYS: &[&str] = &["name", "commands", "env", "timeout", "secrets"];
const SERVICE_KEYS: &[&str] = &["name", "commands", "env", "secrets"];

/// A stage as checked, before ordering and numbering.
pub(super) struct StageDraft<'a> {
    pub(super) name: String,
    pub(super) key: &'a Node,
    pub(super) needs: Vec<(String, Pos)>,
    pub(super) runs_on: RunsOn,
    pub(super) timeout_ms: u64,
    pub(super) env: BTreeMap<String, String>,
    pub(super) steps: Vec<StepPlan>,
    pub(super) services: Vec<ServicePlan>,
    pub(super) triggers: Vec<Trigger>,
    /// The stage's own `secrets:` (its steps and services also get the pipeline's).
    pub(super) secrets: Vec<SecretName>,
    /// Whether a git build checks the commit out before the first step (`checkout:`).
    pub(super) checkout: bool,
}

impl<'a> StageDraft<'a> {
    pub(super) fn new(name: &str, key: &'a Node) -> Self {
        StageDraft {
            name: name.to_string(),
            key,
            needs: Vec::new(),
            runs_on: RunsOn::Lambda,
            timeout_ms: LAMBDA_MAX_TIMEOUT_MS.min(DEFAULT_STAGE_TIMEOUT_MS),
            env: BTreeMap::new(),
            steps: Vec::new(),
            services: Vec::new(),
            triggers: Vec::new(),
            secrets: Vec::new(),
            checkout: true,
        }
    }
}

impl Checker {
    pub(super) fn stages<'a>(&mut self, node: &'a Node) -> Vec<StageDraft<'a>> {
        let Some(entries) = self.map(node, "\"stages\"") else { return Vec::new() };
        if entries.is_empty() {
            self.err(node.pos, "\"stages\" is empty: add at least one stage");
        }
        let mut stages = Vec::new();
        for (name, key, value) in self.entries(entries, "stage") {
            self.check_name(key, name, "stage");
            stages.push(self.stage(name, key, value));
        }
        stages
    }

    pub(super) fn stage<'a>(&mut self, name: &str, key: &'a Node, node: &'a Node) -> StageDraft<'a> {
        let mut stage = StageDraft::new(name, key);
        let Some(entries) = self.map(node, &format!("stage \"{name}\"")) else { return stage };
        let f = self.fields(entries, "stage", STAGE_KEYS);

        match f.value("steps") {
            Some(v) => stage.steps = self.steps(v, name),
            None => self.missing(&f, "steps", node.pos, format!("stage \"{name}\" is missing \"steps\"")),
        }
        if let Some(v) = f.value("services") {
            stage.services = self.services(v, name, &stage.steps);
        }
        if let Some(v) = f.value("needs") {
            stage.needs = self.needs(v);
        }
        if let Some(v) = f.value("runs-on")
            && let Some(text) = self.string(v, "\"runs-on\"")
        {
            match text {
                "lambda" => stage.runs_on = RunsOn::Lambda,
                "container" => stage.runs_on = RunsOn::Container,
                other => self.err(v.pos, format!("bad runs-on \"{other}\": use \"lambda\" or \"container\"")),
            }
        }
        let timeout = f.value("timeout").and_then(|v| self.duration(v).map(|ms| (ms, v)));
        match timeout {
            Some((ms, v)) => {
                stage.timeout_ms = ms;
                if stage.runs_on == RunsOn::Lambda && ms > LAMBDA_MAX_TIMEOUT_MS {
                    let text = match &v.kind {
                        Kind::Scalar(s) => s.text.as_str(),
                        _ => "",
                    };
                    self.err(
                        v.pos,
                        format!(
                            "timeout {text} is longer than runs-on: lambda allows ({}); \
                             use runs-on: container for longer stages",
                            format_duration(LAMBDA_MAX_TIMEOUT_MS)
                        ),
                    );
                }
            }
            None if stage.runs_on == RunsOn::Container => stage.timeout_ms = DEFAULT_STAGE_TIMEOUT_MS,
            None => {}
        }
        if let Some(v) = f.value("env") {
            stage.env = self.env(v);
        }
        if let Some(v) = f.value("on") {
            stage.triggers = self.triggers(v);
        }
        if let Some(v) = f.value("secrets") {
            stage.secrets = self.secrets(v);
        }
        if let Some(v) = f.value("checkout") {
            stage.checkout = self.flag(v, "\"checkout\"").unwrap_or(true);
        }
        let event_triggered = stage.triggers.iter().any(|t| t.policy == TriggerPolicy::Create);
        if let (true, false, Some((needs_key, _))) = (event_triggered, stage.needs.is_empty(), f.get("needs"))
        {
            self.err(
                needs_key.pos,
                "\"needs\" cannot be combined with a create trigger: an event-triggered stage \
                 starts on events, not after other stages",
            );
        }
        stage
    }

    pub(super) fn steps(&mut self, node: &Node, stage: &str) -> Vec<StepPlan> {
        let Some(items) = self.seq(node, "\"steps\"") else { return Vec::new() };
        if items.is_empty() {
            self.err(node.pos, "\"steps\" is empty: add at least one step");
        }
        let mut steps: Vec<StepPlan> = Vec::new();
        let mut lines: HashMap<String, usize> = HashMap::new();
        for item in items {
            let Some(entries) = self.map(item, "step") else { continue };
            let f = self.fields(entries, "step", STEP_KEYS);
            let name = self.job_name(&f, item, "step");
            let commands = self.commands(&f, item, "step", name.as_ref().map(|(n, _)| n.as_str()));
            let env = f.value("env").map(|v| self.env(v)).unwrap_or_default();
            let timeout_ms = f.value("timeout").and_then(|v| self.duration(v));
            let secrets = f.value("secrets").map(|v| self.secrets(v)).unwrap_or_default();
            let Some((name, pos)) = name else { continue };
            if let Some(line) = lines.get(&name) {
                self.err(
                    pos,
                    format!("duplicate step \"{name}\" in stage \"{stage}\" (first on line {line})"),
                );
                continue;
            }
            lines.insert(name.clone(), pos.line);
            steps.push(StepPlan { name: StepName::new(name), number: 0, commands, env, timeout_ms, secrets });
        }
        steps
    }

    pub(super) fn services(&mut self, node: &Node, stage: &str, steps: &[StepPlan]) -> Vec<ServicePlan> {
        let Some(items) = self.seq(node, "\"services\"") else { return Vec::new() };
        let mut services: Vec<ServicePlan> = Vec::new();
        let step_names: HashSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        let mut lines: HashMap<String, usize> = HashMap::new();
        for item in items {
            let Some(entries) = self.map(item, "service") else { continue };
            let f = self.fields(entries, "service", SERVICE_KEYS);
            let name = self.job_name(&f, item, "service");
            let commands = self.commands(&f, item, "service", name.as_ref().map(|(n, _)| n.as_str()));
            let env = f.value("env").map(|v| self.env(v)).unwrap_or_default();
            let secrets = f.value("secrets").map(|v| self.secrets(v)).unwrap_or_default();
            let Some((name, pos)) = name else { continue };
            if let Some(line) = lines.get(&name) {
                self.err(
                    pos,
                    format!("duplicate service \"{name}\" in stage \"{stage}\" (first on line {line})"),
                );
                continue;
            }
            if step_names.contains(name.as_str()) {
                self.err(
                    pos,
                    format!(
                        "service \"{name}\" in stage \"{stage}\" has the same name as a step; rename one"
                    ),
                );
                continue;
            }
            lines.insert(name.clone(), pos.line);
            services.push(ServicePlan { name: StepName::new(name), number: 0, commands, env, secrets });
        }
        services
    }

    /// A step's or service's `name`: required, valid. Returns it with its position.
    pub(super) fn job_name(&mut self, f: &Fields, item: &Node, kind: &str) -> Option<(String, Pos)> {
        let Some(node) = f.value("name") else {
            self.missing(f, "name", item.pos, format!("{kind} is missing \"name\""));
            return None;
        };
        let name = self.name_text(node, "\"name\"")?;
        self.check_name(node, name, kind).then(|| (name.to_string(), node.pos))
    }

    pub(super) fn commands(
        &mut self,
        f: &Fields,
        item: &Node,
        kind: &str,
        name: Option<&str>,
    ) -> Vec<String> {
        let Some(node) = f.value("commands") else {
            let who = name.map_or_else(|| kind.to_string(), |n| format!("{kind} \"{n}\""));
            self.missing(f, "commands", item.pos, format!("{who} is missing \"commands\""));
            return Vec::new();
        };
        let items: Vec<&Node> = match &node.kind {
            Kind::Seq(items) => {
                if items.is_empty() {
                    self.err(node.pos, "\"commands\" is empty: add at least one command");
                }
                items.iter().collect()
            }
            Kind::Scalar(s) if s.value() != Value::Null => vec![node],
            Kind::Alias => return Vec::new(),
            _ => {
                let found = node.describe();
                self.err(node.pos, format!("\"commands\" must be a list of strings, found {found}"));
                return Vec::new();
            }
        };
        let mut commands = Vec::new();
        for item in items {
            match &item.kind {
                Kind::Scalar(s) if s.value() != Value::Null => {
                    if s.text.trim().is_empty() {
                        self.err(item.pos, "empty command");
                    } else {
                        commands.push(s.text.clone());
                    }
                }
                Kind::Alias => {}
                Kind::Map(_) => self.err(
                    item.pos,
                    "command must be a string, found a map (quote a command that contains \": \")",
                ),
                _ => self.err(item.pos, format!("command must be a string, found {}", item.describe())),
            }
        }
        commands
    }
}
