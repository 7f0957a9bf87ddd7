//! The tree → [`Plan`] walk. Every check records its error and carries on, so one pass
//! reports everything; a plan is only built when nothing was wrong.

use super::duration::{format_duration, parse_duration};
use super::tree::{Entry, Kind, Node, Value};
use super::{CompileError, Pos};
use crate::ids::{StageName, StepName, is_valid_name};
use crate::plan::{
    DEFAULT_BUILD_TIMEOUT_MS, DEFAULT_STAGE_TIMEOUT_MS, ImageSpec, LAMBDA_MAX_TIMEOUT_MS, Plan, RunsOn,
    ServicePlan, StagePlan, StepPlan, Trigger, TriggerPolicy,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

const PIPELINE_KEYS: &[&str] = &["version", "env", "timeout", "images", "stages", "steps"];
const STAGE_KEYS: &[&str] = &["steps", "services", "needs", "runs-on", "timeout", "env", "on"];
const STEP_KEYS: &[&str] = &["name", "commands", "env", "timeout"];
const SERVICE_KEYS: &[&str] = &["name", "commands", "env"];
const TRIGGER_KEYS: &[&str] = &["event", "where", "policy"];
const IMAGE_KEYS: &[&str] = &["name", "providers", "built-by"];

/// The one supported pipeline version.
const VERSION: &str = "1";
/// The stage a top-level `steps:` list becomes.
const SHORTHAND_STAGE: &str = "default";
const NAME_RULE: &str =
    "use letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit, at most 63 characters";

/// Checks the document and builds the plan; `None` if any error was recorded.
pub(super) fn check(root: &Node, errors: &mut Vec<CompileError>) -> Option<Plan> {
    let mut checker = Checker { errors: Vec::new(), suggestions: 100 };
    let plan = checker.pipeline(root);
    let failed = !checker.errors.is_empty();
    errors.append(&mut checker.errors);
    if failed { None } else { plan }
}

struct Checker {
    errors: Vec<CompileError>,
    /// How many more unknown stage names get a "did you mean": each costs a pass over all
    /// stage names, so a file full of them cannot make compiling slow.
    suggestions: usize,
}

/// A map's known entries by key text, first occurrence only, in file order.
struct Fields<'a> {
    known: Vec<(&'a str, &'a Node, &'a Node)>,
    /// Keys suggested for misspelt ones: "missing" errors for these would repeat the
    /// typo's error, so they are not reported.
    suggested: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// The key node and the value node.
    fn get(&self, key: &str) -> Option<(&'a Node, &'a Node)> {
        self.known.iter().find(|(k, _, _)| *k == key).map(|(_, k, v)| (*k, *v))
    }
    fn value(&self, key: &str) -> Option<&'a Node> {
        self.get(key).map(|(_, v)| v)
    }
}

/// A stage as checked, before ordering and numbering.
struct StageDraft<'a> {
    name: String,
    key: &'a Node,
    needs: Vec<(String, Pos)>,
    runs_on: RunsOn,
    timeout_ms: u64,
    env: BTreeMap<String, String>,
    steps: Vec<StepPlan>,
    services: Vec<ServicePlan>,
    triggers: Vec<Trigger>,
}

impl<'a> StageDraft<'a> {
    fn new(name: &str, key: &'a Node) -> Self {
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
        }
    }
}

/// An image as checked, with where its `built-by` was written.
struct ImageDraft {
    spec: ImageSpec,
    built_by_pos: Option<Pos>,
}

impl Checker {
    fn err(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(CompileError::at(pos, message));
    }

    // ----- shapes -------------------------------------------------------------------------

    /// `{prefix} unknown stage "x"`, with a suggestion while the budget lasts.
    fn unknown_stage(&mut self, prefix: &str, name: &str, stages: &[StageDraft]) -> String {
        let near = match self.suggestions.checked_sub(1) {
            Some(left) => {
                self.suggestions = left;
                nearest(name, stages.iter().map(|s| s.name.as_str()))
            }
            None => None,
        };
        match near {
            Some(near) => format!("{prefix} unknown stage \"{name}\"; did you mean \"{near}\"?"),
            None => format!("{prefix} unknown stage \"{name}\""),
        }
    }

    fn map<'a>(&mut self, node: &'a Node, what: &str) -> Option<&'a [Entry]> {
        match &node.kind {
            Kind::Map(entries) => Some(entries),
            Kind::Alias => None,
            _ => {
                self.err(node.pos, format!("{what} must be a map, found {}", node.describe()));
                None
            }
        }
    }

    fn seq<'a>(&mut self, node: &'a Node, what: &str) -> Option<&'a [Node]> {
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
    fn string<'a>(&mut self, node: &'a Node, what: &str) -> Option<&'a str> {
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
    fn name_text<'a>(&mut self, node: &'a Node, what: &str) -> Option<&'a str> {
        match &node.kind {
            Kind::Scalar(s) if matches!(s.value(), Value::Str | Value::Int(_) | Value::Float(_)) => {
                Some(&s.text)
            }
            _ => self.string(node, what),
        }
    }

    /// A map's entries, reporting non-scalar keys and duplicates (keeping the first).
    fn entries<'a>(&mut self, entries: &'a [Entry], duplicate: &str) -> Vec<(&'a str, &'a Node, &'a Node)> {
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
    fn fields<'a>(&mut self, entries: &'a [Entry], what: &str, allowed: &[&'static str]) -> Fields<'a> {
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
    fn missing(&mut self, f: &Fields, key: &str, pos: Pos, message: impl Into<String>) {
        if !f.suggested.contains(&key) {
            self.err(pos, message);
        }
    }

    fn duration(&mut self, node: &Node) -> Option<u64> {
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

    fn check_name(&mut self, node: &Node, name: &str, kind: &str) -> bool {
        let ok = is_valid_name(name);
        if !ok {
            self.err(node.pos, format!("invalid {kind} name \"{name}\": {NAME_RULE}"));
        }
        ok
    }

    fn env(&mut self, node: &Node) -> BTreeMap<String, String> {
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

    // ----- the pipeline --------------------------------------------------------------------

    fn pipeline(&mut self, root: &Node) -> Option<Plan> {
        let Kind::Map(entries) = &root.kind else {
            if !matches!(root.kind, Kind::Alias) {
                self.err(
                    root.pos,
                    format!(
                        "a pipeline must be a map with keys like \"version\" and \"stages\", found {}",
                        root.describe()
                    ),
                );
            }
            return None;
        };
        let f = self.fields(entries, "pipeline", PIPELINE_KEYS);

        match f.value("version") {
            None => self.missing(&f, "version", root.pos, "pipeline is missing \"version\""),
            Some(v) => self.version(v),
        }
        let env = f.value("env").map(|v| self.env(v)).unwrap_or_default();
        let timeout_ms =
            f.value("timeout").and_then(|v| self.duration(v)).unwrap_or(DEFAULT_BUILD_TIMEOUT_MS);

        let mut stages = Vec::new();
        match (f.get("stages"), f.get("steps")) {
            (None, None) if !f.suggested.iter().any(|k| *k == "stages" || *k == "steps") => {
                self.err(root.pos, "pipeline is missing \"stages\" (or \"steps\" for a single stage)")
            }
            (Some((stages_key, _)), Some((steps_key, _))) => {
                let later = stages_key.pos.max(steps_key.pos);
                self.err(later, "use either \"stages\" or \"steps\", not both");
            }
            _ => {}
        }
        if let Some(value) = f.value("stages") {
            stages = self.stages(value);
        }
        if let Some((key, value)) = f.get("steps") {
            let mut stage = StageDraft::new(SHORTHAND_STAGE, key);
            stage.steps = self.steps(value, SHORTHAND_STAGE);
            stages.push(stage);
        }

        let images = f.value("images").map(|v| self.images(v)).unwrap_or_default();
        let order = self.graph(&stages);
        let names: HashSet<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        for image in &images {
            if let (Some(stage), Some(pos)) = (&image.spec.built_by, image.built_by_pos)
                && !names.contains(stage.as_str())
            {
                let message = self.unknown_stage("\"built-by\" names", stage.as_str(), &stages);
                self.err(pos, message);
            }
        }
        if !self.errors.is_empty() {
            return None;
        }
        let order = order?;

        // Number steps, then services, across the build in plan order.
        let mut slots: Vec<Option<StageDraft>> = stages.into_iter().map(Some).collect();
        let mut plan_stages = Vec::new();
        let (mut step_number, mut service_number) = (0u32, 0u32);
        for index in order {
            let Some(draft) = slots[index].take() else { continue };
            let mut steps = draft.steps;
            for step in &mut steps {
                step_number += 1;
                step.number = step_number;
            }
            let mut services = draft.services;
            for service in &mut services {
                service_number += 1;
                service.number = service_number;
            }
            plan_stages.push(StagePlan {
                name: StageName::new(draft.name),
                needs: draft.needs.into_iter().map(|(n, _)| StageName::new(n)).collect(),
                runs_on: draft.runs_on,
                timeout_ms: draft.timeout_ms,
                env: draft.env,
                steps,
                services,
                triggers: draft.triggers,
            });
        }
        Some(Plan {
            version: VERSION.to_string(),
            env,
            stages: plan_stages,
            images: images.into_iter().map(|i| i.spec).collect(),
            timeout_ms,
        })
    }

    fn version(&mut self, node: &Node) {
        match &node.kind {
            Kind::Scalar(s) if matches!(s.value(), Value::Str | Value::Int(_) | Value::Float(_)) => {
                if s.text != VERSION {
                    self.err(
                        node.pos,
                        format!("unsupported version \"{}\" (supported: \"{VERSION}\")", s.text),
                    );
                }
            }
            _ => {
                self.string(node, "\"version\"");
            }
        }
    }

    // ----- stages --------------------------------------------------------------------------

    fn stages<'a>(&mut self, node: &'a Node) -> Vec<StageDraft<'a>> {
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

    fn stage<'a>(&mut self, name: &str, key: &'a Node, node: &'a Node) -> StageDraft<'a> {
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

    fn needs(&mut self, node: &Node) -> Vec<(String, Pos)> {
        let items: Vec<&Node> = match &node.kind {
            Kind::Scalar(s) if s.value() == Value::Str => vec![node],
            Kind::Seq(items) => items.iter().collect(),
            Kind::Alias => return Vec::new(),
            _ => {
                let found = node.describe();
                self.err(node.pos, format!("\"needs\" must be a list of stage names, found {found}"));
                return Vec::new();
            }
        };
        let mut needs: Vec<(String, Pos)> = Vec::new();
        let mut seen = HashSet::new();
        for item in items {
            let Some(name) = self.name_text(item, "a stage name in \"needs\"") else { continue };
            if !seen.insert(name) {
                self.err(item.pos, format!("stage \"{name}\" is listed twice in \"needs\""));
                continue;
            }
            needs.push((name.to_string(), item.pos));
        }
        needs
    }

    // ----- steps and services --------------------------------------------------------------

    fn steps(&mut self, node: &Node, stage: &str) -> Vec<StepPlan> {
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
            let Some((name, pos)) = name else { continue };
            if let Some(line) = lines.get(&name) {
                self.err(
                    pos,
                    format!("duplicate step \"{name}\" in stage \"{stage}\" (first on line {line})"),
                );
                continue;
            }
            lines.insert(name.clone(), pos.line);
            steps.push(StepPlan { name: StepName::new(name), number: 0, commands, env, timeout_ms });
        }
        steps
    }

    fn services(&mut self, node: &Node, stage: &str, steps: &[StepPlan]) -> Vec<ServicePlan> {
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
            services.push(ServicePlan { name: StepName::new(name), number: 0, commands, env });
        }
        services
    }

    /// A step's or service's `name`: required, valid. Returns it with its position.
    fn job_name(&mut self, f: &Fields, item: &Node, kind: &str) -> Option<(String, Pos)> {
        let Some(node) = f.value("name") else {
            self.missing(f, "name", item.pos, format!("{kind} is missing \"name\""));
            return None;
        };
        let name = self.name_text(node, "\"name\"")?;
        self.check_name(node, name, kind).then(|| (name.to_string(), node.pos))
    }

    fn commands(&mut self, f: &Fields, item: &Node, kind: &str, name: Option<&str>) -> Vec<String> {
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

    // ----- triggers ------------------------------------------------------------------------

    fn triggers(&mut self, node: &Node) -> Vec<Trigger> {
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

    fn events(&mut self, node: &Node) -> Vec<String> {
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

    fn where_(&mut self, node: &Node) -> BTreeMap<String, serde_json::Value> {
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

    fn json(&mut self, node: &Node) -> Option<serde_json::Value> {
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

    // ----- images --------------------------------------------------------------------------

    fn images(&mut self, node: &Node) -> Vec<ImageDraft> {
        let Some(items) = self.seq(node, "\"images\"") else { return Vec::new() };
        let mut images: Vec<ImageDraft> = Vec::new();
        let mut lines: HashMap<String, usize> = HashMap::new();
        for item in items {
            let Some(entries) = self.map(item, "image") else { continue };
            let f = self.fields(entries, "image", IMAGE_KEYS);
            let mut name = None;
            match f.value("name") {
                None => self.missing(&f, "name", item.pos, "image is missing \"name\""),
                Some(v) => {
                    if let Some(text) = self.name_text(v, "\"name\"")
                        && self.check_name(v, text, "image")
                    {
                        if let Some(line) = lines.get(text) {
                            self.err(v.pos, format!("duplicate image \"{text}\" (first on line {line})"));
                        } else {
                            lines.insert(text.to_string(), v.pos.line);
                            name = Some(text.to_string());
                        }
                    }
                }
            }
            let who = name.as_ref().map_or_else(|| "image".to_string(), |n| format!("image \"{n}\""));
            let mut providers: Vec<String> = Vec::new();
            match f.value("providers") {
                None => self.missing(&f, "providers", item.pos, format!("{who} is missing \"providers\"")),
                Some(v) => {
                    if let Some(list) = self.seq(v, "\"providers\"") {
                        if list.is_empty() {
                            self.err(v.pos, format!("{who} has no providers: list at least one"));
                        }
                        let mut first: HashMap<&str, usize> = HashMap::new();
                        for p in list {
                            let Some(provider) = self.name_text(p, "a provider") else { continue };
                            if !self.check_name(p, provider, "provider") {
                                continue;
                            }
                            if let Some(line) = first.get(provider) {
                                self.err(
                                    p.pos,
                                    format!(
                                        "duplicate provider \"{provider}\" in {who} (first on line {line})"
                                    ),
                                );
                                continue;
                            }
                            first.insert(provider, p.pos.line);
                            providers.push(provider.to_string());
                        }
                    }
                }
            }
            let mut built_by = None;
            let mut built_by_pos = None;
            if let Some(v) = f.value("built-by")
                && let Some(stage) = self.name_text(v, "\"built-by\"")
            {
                built_by = Some(StageName::new(stage));
                built_by_pos = Some(v.pos);
            }
            if let Some(name) = name {
                images.push(ImageDraft { spec: ImageSpec { name, providers, built_by }, built_by_pos });
            }
        }
        images
    }

    // ----- the needs graph -----------------------------------------------------------------

    /// Checks `needs` (unknown stages, self, cycles) and returns the plan order: Kahn's
    /// algorithm, always taking the earliest-declared ready stage. `None` on any problem.
    fn graph(&mut self, stages: &[StageDraft]) -> Option<Vec<usize>> {
        let index: HashMap<&str, usize> =
            stages.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let mut needs: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
        let mut ok = true;
        for (i, stage) in stages.iter().enumerate() {
            for (name, pos) in &stage.needs {
                match index.get(name.as_str()) {
                    Some(&j) if j == i => {
                        self.err(*pos, format!("stage \"{name}\" needs itself"));
                        ok = false;
                    }
                    Some(&j) => needs[i].push(j),
                    None => {
                        let message = self.unknown_stage("needs", name, stages);
                        self.err(*pos, message);
                        ok = false;
                    }
                }
            }
        }

        for cycle in cycles(&needs) {
            let mut names: Vec<String> = cycle.iter().map(|&i| stages[i].name.clone()).collect();
            names.push(names[0].clone());
            // A very long cycle keeps its ends; the middle is counted, not listed.
            const SHOWN: usize = 6;
            if names.len() > 2 * SHOWN + 1 {
                let hidden = names.len() - 2 * SHOWN;
                names.splice(SHOWN..names.len() - SHOWN, [format!("({hidden} more)")]);
            }
            let first = stages[cycle[0]].key.pos;
            self.err(first, format!("cycle in needs: {}", names.join(" -> ")));
            ok = false;
        }
        if !ok {
            return None;
        }

        let mut waiting: Vec<usize> = needs.iter().map(Vec::len).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
        for (i, list) in needs.iter().enumerate() {
            for &j in list {
                dependents[j].push(i);
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..stages.len()).filter(|&i| waiting[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(stages.len());
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for &d in &dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    ready.push(Reverse(d));
                }
            }
        }
        (order.len() == stages.len()).then_some(order)
    }
}

/// One cycle per strongly connected component of more than one stage (self-needs are
/// reported on their own): the shortest cycle through the component's earliest-declared
/// stage, as stage indexes starting with it, following `needs` edges.
fn cycles(needs: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = needs.len();
    // Kosaraju, iteratively. Pass 1: finishing order.
    let mut visited = vec![false; n];
    let mut finished = Vec::with_capacity(n);
    for start in 0..n {
        if visited[start] {
            continue;
        }
        visited[start] = true;
        let mut stack = vec![(start, 0usize)];
        while let Some((node, edge)) = stack.last_mut() {
            if let Some(&next) = needs[*node].get(*edge) {
                *edge += 1;
                if !visited[next] {
                    visited[next] = true;
                    stack.push((next, 0));
                }
            } else {
                finished.push(*node);
                stack.pop();
            }
        }
    }
    // Pass 2: components on the reversed graph.
    let mut reverse: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, list) in needs.iter().enumerate() {
        for &j in list {
            reverse[j].push(i);
        }
    }
    let mut component = vec![usize::MAX; n];
    let mut components: Vec<Vec<usize>> = Vec::new();
    for &start in finished.iter().rev() {
        if component[start] != usize::MAX {
            continue;
        }
        let id = components.len();
        let mut members = vec![start];
        component[start] = id;
        let mut stack = vec![start];
        while let Some(node) = stack.pop() {
            for &prev in &reverse[node] {
                if component[prev] == usize::MAX {
                    component[prev] = id;
                    members.push(prev);
                    stack.push(prev);
                }
            }
        }
        components.push(members);
    }

    let mut out = Vec::new();
    let mut parent = vec![usize::MAX; n];
    for members in components.iter().filter(|m| m.len() > 1) {
        let start = *members.iter().min().expect("non-empty component");
        let id = component[start];
        // BFS inside the component until an edge leads back to the start.
        let mut queue = std::collections::VecDeque::from([start]);
        parent[start] = start;
        let mut last = None;
        'search: while let Some(node) = queue.pop_front() {
            for &next in &needs[node] {
                if component[next] != id {
                    continue;
                }
                if next == start {
                    last = Some(node);
                    break 'search;
                }
                if parent[next] == usize::MAX {
                    parent[next] = node;
                    queue.push_back(next);
                }
            }
        }
        let Some(mut node) = last else { continue };
        let mut path = vec![node];
        while node != start {
            node = parent[node];
            path.push(node);
        }
        path.reverse();
        out.push(path);
    }
    out.sort_by_key(|c| c[0]);
    out
}

fn is_env_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The candidate closest to `word` (case-insensitively), if it is close enough to be a
/// likely typo: at most two edits, and fewer edits than `word` has characters.
fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let limit = 2.min(word.chars().count().saturating_sub(1));
    candidates
        .map(|c| (levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
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

    #[test]
    fn cycles_once_per_component() {
        // 0 -> 1 -> 2 -> 0, and 3 -> 4 -> 3, 5 -> 0 (downstream, no cycle of its own).
        let needs = vec![vec![1], vec![2], vec![0], vec![4], vec![3], vec![0]];
        assert_eq!(cycles(&needs), vec![vec![0, 1, 2], vec![3, 4]]);
        // Two cycles sharing a stage form one component: reported once, shortest first.
        let needs = vec![vec![1, 2], vec![0], vec![3], vec![0]];
        assert_eq!(cycles(&needs), vec![vec![0, 1]]);
        assert!(cycles(&[vec![], vec![0]]).is_empty());
    }
}
