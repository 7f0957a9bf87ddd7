//! The tree → [`Plan`] walk. Every check records its error and carries on, so one pass
//! reports everything; a plan is only built when nothing was wrong.
//!
//! One `Checker` walks the tree; its methods are split by what they check: `shape` (maps,
//! lists, strings, names, durations, env, and typo suggestions), `stages` (stages, steps,
//! services), `triggers` (`on:`), `images`, and `graph` (`needs`, cycles and plan order).
//! This file holds the pipeline itself and the numbering of steps and services.

mod git;
mod graph;
mod images;
mod shape;
mod stages;
mod triggers;

use super::tree::{Kind, Node, Value};
use super::{CompileError, Pos};
use crate::ids::StageName;
use crate::plan::{DEFAULT_BUILD_TIMEOUT_MS, Plan, StagePlan};
use crate::secret::SecretName;
use shape::nearest;
use stages::StageDraft;
use std::collections::{BTreeSet, HashSet};

const PIPELINE_KEYS: &[&str] =
    &["version", "env", "timeout", "images", "stages", "steps", "secrets", "on", "cancel-superseded"];

/// The one supported pipeline version.
const VERSION: &str = "1";
/// The stage a top-level `steps:` list becomes.
const SHORTHAND_STAGE: &str = "default";

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

impl Checker {
    fn err(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(CompileError::at(pos, message));
    }

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
        let secrets = f.value("secrets").map(|v| self.secrets(v)).unwrap_or_default();
        let timeout_ms =
            f.value("timeout").and_then(|v| self.duration(v)).unwrap_or(DEFAULT_BUILD_TIMEOUT_MS);
        let git = f.value("on").and_then(|v| self.git_triggers(v));
        let cancel_superseded =
            f.value("cancel-superseded").and_then(|v| self.flag(v, "\"cancel-superseded\"")).unwrap_or(false);

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
            // Secrets are inherited downwards: pipeline, then stage, then the step's own.
            let inherited = || secrets.iter().chain(&draft.secrets).cloned();
            let mut steps = draft.steps;
            for step in &mut steps {
                step_number += 1;
                step.number = step_number;
                step.secrets = merge(inherited(), &step.secrets);
            }
            let mut services = draft.services;
            for service in &mut services {
                service_number += 1;
                service.number = service_number;
                service.secrets = merge(inherited(), &service.secrets);
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
                checkout: draft.checkout,
            });
        }
        Some(Plan {
            version: VERSION.to_string(),
            env,
            stages: plan_stages,
            images: images.into_iter().map(|i| i.spec).collect(),
            timeout_ms,
            git,
            cancel_superseded,
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
}

/// Inherited names and a job's own, sorted, each once.
fn merge(inherited: impl Iterator<Item = SecretName>, own: &[SecretName]) -> Vec<SecretName> {
    inherited.chain(own.iter().cloned()).collect::<BTreeSet<_>>().into_iter().collect()
}
