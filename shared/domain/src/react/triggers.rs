//! The pipeline's `on:` triggers: which events create stage instances (`name#n`), collect
//! a fan-in set, or stop a stage's open instances.

use super::Reactor;
use super::lifecycle;
use crate::event::{CloudEvent, RESERVED_PREFIX};
use crate::ids::StageName;
use crate::plan::{StagePlan, Trigger, TriggerPolicy};
use crate::report::{LifecycleData, Report};
use crate::state::StageState;
use crate::status::Status;
use serde_json::Value;
use std::collections::BTreeMap;

/// Whether `event` matches a trigger's `where`: every field equal (a string in the
/// pipeline also matches a number or boolean that prints the same).
fn matches_where(trigger: &Trigger, event: &CloudEvent) -> bool {
    trigger.where_.iter().all(|(field, want)| match event.data.get(field) {
        Some(got) if got == want => true,
        Some(got) => match (want, got) {
            (Value::String(w), Value::Number(_) | Value::Bool(_)) => w.as_str() == got.to_string().as_str(),
            (Value::Number(_) | Value::Bool(_), Value::String(g)) => g.as_str() == want.to_string().as_str(),
            _ => false,
        },
        None => false,
    })
}

/// The pipeline stage one of Kiln's own events (a report or a lifecycle event) is
/// about; `None` for other events.
fn about_stage(e: &CloudEvent) -> Option<String> {
    if !e.ty.starts_with(RESERVED_PREFIX) {
        return None;
    }
    if let Ok(Some(r)) = Report::from_event(e) {
        return r.stage().map(|s| s.template().to_string());
    }
    match LifecycleData::from_event(e) {
        Ok(Some(d)) => d.stage_template().map(str::to_string),
        _ => None,
    }
}

impl Reactor {
    /// Runs the pipeline's `on:` triggers against one event: `create` starts an instance
    /// (a set of several event types starts one once all have arrived); `delete` stops
    /// the stage's open instances.
    pub(super) fn on_triggers(&mut self, e: &CloudEvent) {
        if self.b.status != Status::Running {
            return;
        }
        // A stage's own lifecycle never triggers it again.
        let about = about_stage(e);
        let stages: Vec<StagePlan> =
            self.b.plan.stages.iter().filter(|s| !s.triggers.is_empty()).cloned().collect();
        for plan in stages {
            if about.as_deref() == Some(plan.name.as_str()) {
                continue;
            }
            for (i, t) in plan.triggers.iter().enumerate() {
                if !t.events.contains(&e.ty) || !matches_where(t, e) {
                    continue;
                }
                match t.policy {
                    TriggerPolicy::Delete => self.stop_instances(&plan, e),
                    TriggerPolicy::Create if t.events.len() == 1 => self.create_instance(&plan, e.clone()),
                    TriggerPolicy::Create => {
                        let key = format!("{}/{i}", plan.name);
                        let set = self.b.arrivals.entry(key.clone()).or_default();
                        set.insert(e.ty.clone(), e.clone());
                        self.arrivals_changed = true;
                        if t.events.iter().all(|ty| set.contains_key(ty)) {
                            let set = self.b.arrivals.remove(&key).unwrap_or_default();
                            self.create_instance(&plan, merged(t, &set, e));
                        }
                    }
                }
            }
        }
    }

    fn create_instance(&mut self, plan: &StagePlan, trigger: CloudEvent) {
        let n = self
            .b
            .stages
            .iter()
            .filter(|s| s.name.template() == plan.name.as_str() && s.name.as_str().contains('#'))
            .count();
        let name = StageName::new(format!("{}#{}", plan.name, n + 1));
        let data = LifecycleData {
            stage: Some(name.clone()),
            template: Some(plan.name.to_string()),
            step: None,
            status: Status::Pending,
            from: None,
            exit_code: None,
            duration_ms: None,
            reason: None,
            trigger: Some(trigger.id.clone()),
            trigger_type: Some(trigger.ty.clone()),
        };
        let state = StageState::new(name.clone(), plan, Some(trigger));
        self.b.stages.push(state.clone());
        self.out.new_stages.push(state);
        let ty = LifecycleData::event_type("stage", Status::Pending);
        self.out.events.push(lifecycle::event(&self.b, ty, data).with_subject(format!("stage/{name}")));
    }

    fn stop_instances(&mut self, plan: &StagePlan, e: &CloudEvent) {
        let open: Vec<StageName> = self
            .b
            .stages
            .iter()
            .filter(|s| s.name.template() == plan.name.as_str() && !s.status.is_terminal())
            .map(|s| s.name.clone())
            .collect();
        for stage in open {
            let reason = Some(format!("stopped by event {} ({})", e.ty, e.id));
            self.end_stage(&stage, Status::Stopped, Status::Canceled, reason);
        }
    }
}

/// The event that starts a fan-in instance: the last one to arrive, with the data of
/// the whole set merged in trigger order (later types win on clashes).
fn merged(t: &Trigger, set: &BTreeMap<String, CloudEvent>, last: &CloudEvent) -> CloudEvent {
    let mut data = serde_json::Map::new();
    for ty in &t.events {
        if let Some(Value::Object(o)) = set.get(ty).map(|e| &e.data) {
            data.extend(o.clone());
        }
    }
    let mut e = last.clone();
    e.data = Value::Object(data);
    e
}
