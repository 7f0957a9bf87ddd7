//! How the fan-in reacts to an event: which transitions to apply and which lifecycle
//! events to record. Pure: the fan-in function does the I/O around it.
//!
//! The rules, in one place:
//! - a build starts when it is created; its stages start when a runner reports them;
//! - a step ends with its exit code; a stage ends when its runner says so: failed if a
//!   step failed or it timed out, canceled if canceled, else succeeded; steps it never ran
//!   are skipped;
//! - a stage whose `needs` ended without success is skipped, and so on down the graph;
//! - a pending stage that can no longer become ready (nothing running or queued could
//!   satisfy it) is skipped, so a build never waits forever;
//! - the build ends when every stage has ended: failed if any failed, else succeeded;
//! - a cancel ends the build at once as canceled; its pending stages are canceled and its
//!   running stages end as canceled when their runners report back.
//!
//! The image catalog's writes come from [`react_catalog`], over the records the fan-in
//! read ([`catalog_reads`]); its rules are in [`crate::catalog`].

use crate::catalog::{self, CatalogWrite, ImageRecord, ImageUpdate};
use crate::event::{CloudEvent, types};
use crate::ids::{StageName, StepName};
use crate::plan::{StagePlan, Trigger, TriggerPolicy};
use crate::protocol::{ImageOutcome, Phase};
use crate::state::{Build, Patch, StageState, Target, Transition};
use crate::status::Status;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What the fan-in should commit for one event.
#[derive(Debug, Clone, Default)]
pub struct Reaction {
    pub transitions: Vec<Transition>,
    /// Lifecycle events, one per transition, to record after the incoming event.
    pub events: Vec<CloudEvent>,
    pub new_stages: Vec<StageState>,
    /// Changes the event asked for that the state machine refused (logged, not applied).
    pub refused: Vec<String>,
    /// Reports about things that had already ended elsewhere (a runner finishing a stage
    /// that an event stopped, or a canceled build): expected, logged quietly.
    pub ignored: Vec<String>,
    /// The build as it will be once the reaction is committed.
    pub after: Option<Build>,
    /// When set, the build's fan-in trigger arrivals are to be replaced by this.
    pub arrivals: Option<crate::state::Arrivals>,
    /// Conditional writes to the image catalog (filled by [`react_catalog`]).
    pub catalog: Vec<CatalogWrite>,
}

/// Works out the reaction to `event` on `build`.
pub fn react(build: &Build, event: &CloudEvent, now_ms: u64) -> Reaction {
    let mut r = Reactor { b: build.clone(), out: Reaction::default(), now_ms, arrivals_changed: false };
    r.on_event(event);
    r.on_triggers(event);
    // Lifecycle events can trigger stages too (a cleanup stage when `build` fails): run the
    // triggers over each one, including those the triggers themselves cause, until quiet.
    // The build's own end is decided after, so it cannot trigger stages.
    let mut seen = 0;
    loop {
        r.skip_broken();
        let n = r.out.events.len();
        if seen == n || r.out.new_stages.len() > MAX_INSTANCES_PER_EVENT {
            break;
        }
        for i in seen..n {
            let e = r.out.events[i].clone();
            r.on_triggers(&e);
        }
        seen = n;
    }
    r.settle();
    if r.arrivals_changed {
        r.out.arrivals = Some(r.b.arrivals.clone());
    }
    let mut out = r.out;
    out.after = Some(r.b);
    out
}

/// A guard against triggers that set each other off forever.
const MAX_INSTANCES_PER_EVENT: usize = 100;

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

/// The images whose catalog records the fan-in reads before [`react_catalog`]: every
/// image of the plan when the reaction starts or ends the build, else the image an image
/// report is about (if the pipeline has it).
pub fn catalog_reads(build: &Build, event: &CloudEvent, reaction: &Reaction) -> Vec<String> {
    let after = reaction.after.as_ref().unwrap_or(build);
    if starts(reaction) || ends(build, after) {
        return build.plan.images.iter().map(|i| i.name.clone()).collect();
    }
    match event.data_str("image") {
        Some(image) if is_image_report(event) && build.plan.images.iter().any(|i| i.name == image) => {
            vec![image.to_string()]
        }
        _ => Vec::new(),
    }
}

/// Adds to `reaction` the catalog writes for `event` on `build`, given the current
/// records of the images [`catalog_reads`] named: the build's pairs are queued when it
/// starts, an image report updates its pair, and when the build ends its pairs still
/// open fail with "no result reported". One write per pair, conditional on the version
/// read; updates the rules ignore go to `refused`.
pub fn react_catalog(
    build: &Build,
    event: &CloudEvent,
    reaction: &mut Reaction,
    records: &[ImageRecord],
    now_ms: u64,
) {
    let after = reaction.after.as_ref().unwrap_or(build);
    let (starting, ending) = (starts(reaction), ends(build, after));
    let mut c =
        CatalogChanges { build, read: records, changed: BTreeMap::new(), now_ms, refused: Vec::new() };
    if starting {
        for (image, provider) in catalog::requested_pairs(build) {
            c.update(&image, &provider, &ImageUpdate::Queued);
        }
    }
    if is_image_report(event) {
        match image_report(build, event) {
            Ok((image, provider, update)) => c.update(&image, &provider, &update),
            Err(why) => c.refused.push(why),
        }
    }
    if ending {
        let open: Vec<(String, String)> = c
            .current_all()
            .filter(|r| r.build == build.id && !r.status.is_terminal())
            .map(|r| (r.image.clone(), r.provider.clone()))
            .collect();
        for (image, provider) in open {
            c.update(&image, &provider, &ImageUpdate::NoResult);
        }
    }
    let CatalogChanges { read, changed, refused, .. } = c;
    reaction.refused.extend(refused);
    reaction.catalog.extend(changed.into_values().map(|record| {
        let expected_version = read
            .iter()
            .find(|r| r.image == record.image && r.provider == record.provider)
            .map_or(0, |r| r.version);
        CatalogWrite { expected_version, record }
    }));
}

/// The reaction starts the build (it may end it too, when nothing can run).
fn starts(reaction: &Reaction) -> bool {
    reaction.transitions.iter().any(|t| t.target == Target::Build && t.to == Status::Running)
}

fn ends(before: &Build, after: &Build) -> bool {
    !before.status.is_terminal() && after.status.is_terminal()
}

fn is_image_report(e: &CloudEvent) -> bool {
    e.ty == types::IMAGE_PROGRESS || e.ty == types::IMAGE_RESULT
}

/// Reads an image report, checking it against the pipeline's `images:`.
fn image_report(build: &Build, e: &CloudEvent) -> Result<(String, String, ImageUpdate), String> {
    let (Some(image), Some(provider)) = (e.data_str("image"), e.data_str("provider")) else {
        return Err(format!("{} event {} lacks its image or provider", e.ty, e.id));
    };
    let Some(spec) = build.plan.images.iter().find(|i| i.name == image) else {
        return Err(format!("image {image} is not in the pipeline's images"));
    };
    if !spec.providers.iter().any(|p| p == provider) {
        return Err(format!("image {image} has no provider {provider} in the pipeline"));
    }
    if let Some(by) = &spec.built_by {
        match e.data_str("stage").map(StageName::new) {
            Some(s) if s.template() == by.as_str() => {}
            Some(s) => {
                return Err(format!("image {image} is built by stage {by}: stage {s} may not report it"));
            }
            None => {
                return Err(format!(
                    "image {image} is built by stage {by}: a report without a stage is refused"
                ));
            }
        }
    }
    let update = if e.ty == types::IMAGE_PROGRESS {
        let percent = match e.data_u64("percent") {
            Some(p) if p <= 100 => p as u8,
            _ => return Err(format!("{image}/{provider}: progress without a percent from 0 to 100")),
        };
        let phase = match e.data_str("phase") {
            None | Some("building") => Phase::Building,
            Some("pushing") => Phase::Pushing,
            Some(other) => return Err(format!("{image}/{provider}: unknown phase {other}")),
        };
        ImageUpdate::Progress { percent, phase }
    } else {
        match e.data.get("ok").and_then(Value::as_bool) {
            Some(true) => {
                ImageUpdate::Result(ImageOutcome::Ok { uri: e.data_str("uri").map(str::to_string) })
            }
            Some(false) => ImageUpdate::Result(ImageOutcome::Error {
                message: e.data_str("error").unwrap_or("failed").to_string(),
            }),
            None => return Err(format!("{image}/{provider}: result without ok")),
        }
    };
    Ok((image.to_string(), provider.to_string(), update))
}

/// The catalog as one reaction changes it: what was read, and the new records.
struct CatalogChanges<'a> {
    build: &'a Build,
    read: &'a [ImageRecord],
    changed: BTreeMap<(String, String), ImageRecord>,
    now_ms: u64,
    refused: Vec<String>,
}

impl CatalogChanges<'_> {
    fn current(&self, image: &str, provider: &str) -> Option<&ImageRecord> {
        self.changed
            .get(&(image.to_string(), provider.to_string()))
            .or_else(|| self.read.iter().find(|r| r.image == image && r.provider == provider))
    }

    fn current_all(&self) -> impl Iterator<Item = &ImageRecord> {
        let unchanged =
            self.read.iter().filter(|r| !self.changed.contains_key(&(r.image.clone(), r.provider.clone())));
        self.changed.values().chain(unchanged)
    }

    fn update(&mut self, image: &str, provider: &str, update: &ImageUpdate) {
        let current = self.current(image, provider);
        match catalog::apply(current, image, provider, &self.build.id, update, self.now_ms) {
            Ok(mut record) => {
                // Several changes of one pair in one reaction make one write.
                record.version = self
                    .read
                    .iter()
                    .find(|r| r.image == image && r.provider == provider)
                    .map_or(0, |r| r.version)
                    + 1;
                self.changed.insert((image.to_string(), provider.to_string()), record);
            }
            Err(why) => self.refused.push(why),
        }
    }
}

/// Stages that may be dispatched now: pending, not yet queued, every need succeeded.
pub fn ready_stages(build: &Build) -> Vec<StageName> {
    if build.status != Status::Running {
        return Vec::new();
    }
    build
        .stages
        .iter()
        .filter(|s| s.status == Status::Pending && !s.dispatched && needs_state(build, s) == NeedsState::Met)
        .map(|s| s.name.clone())
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
enum NeedsState {
    Met,
    Waiting,
    /// A need ended without success (or cannot happen): the stage can never run.
    Broken(String),
}

fn needs_state(build: &Build, stage: &StageState) -> NeedsState {
    let Some(plan) = build.plan.stage(stage.name.template()) else {
        return NeedsState::Broken(format!("stage {} is not in the plan", stage.name));
    };
    let mut waiting = false;
    for need in &plan.needs {
        match build.stage(need.as_str()).map(|s| s.status) {
            Some(s) if s.is_success() => {}
            Some(s) if s.is_terminal() => return NeedsState::Broken(format!("needs {need}, which {s}")),
            Some(_) => waiting = true,
            None => return NeedsState::Broken(format!("needs {need}, which never ran")),
        }
    }
    if waiting { NeedsState::Waiting } else { NeedsState::Met }
}

struct Reactor {
    b: Build,
    out: Reaction,
    now_ms: u64,
    arrivals_changed: bool,
}

impl Reactor {
    fn on_event(&mut self, e: &CloudEvent) {
        let stage = e.data_str("stage").map(StageName::new);
        let step = e.data_str("step").map(StepName::new);
        let attempt = e.data_u64("attempt").map(|a| a as u32);
        match e.ty.as_str() {
            types::BUILD_CREATED => self.go(Target::Build, Status::Running, Patch::default()),
            types::STAGE_STARTED => {
                let Some(stage) = stage else { return self.malformed(e) };
                if self.b.status != Status::Running {
                    return self.refuse(format!("stage {stage} started but the build is {}", self.b.status));
                }
                let retry = self
                    .b
                    .stage(stage.as_str())
                    .filter(|s| s.status == Status::Running && attempt.is_some_and(|a| a > s.attempt));
                if let Some(s) = retry {
                    // The runner of the earlier attempt was lost: start over with this one.
                    let steps: Vec<StepName> = s
                        .steps
                        .iter()
                        .filter(|t| t.status != Status::Pending)
                        .map(|t| t.name.clone())
                        .collect();
                    let reason = Some(format!(
                        "attempt {} after the runner of attempt {} was lost",
                        attempt.unwrap_or(0),
                        s.attempt
                    ));
                    self.go(
                        Target::Stage { stage: stage.clone() },
                        Status::Running,
                        Patch { attempt, reason, ..Patch::default() },
                    );
                    for step in steps {
                        let target = Target::Step { stage: stage.clone(), step };
                        self.go(target, Status::Pending, Patch { attempt, ..Patch::default() });
                    }
                    return;
                }
                self.go(Target::Stage { stage }, Status::Running, Patch { attempt, ..Patch::default() });
            }
            types::STEP_STARTED => {
                let (Some(stage), Some(step)) = (stage, step) else { return self.malformed(e) };
                if !self.current_attempt(&stage, attempt) {
                    return;
                }
                self.go(Target::Step { stage, step }, Status::Running, Patch::default());
            }
            types::STEP_FINISHED => {
                let (Some(stage), Some(step)) = (stage, step) else { return self.malformed(e) };
                if !self.current_attempt(&stage, attempt) {
                    return;
                }
                let exit_code = e.data_i64("exit_code").map(|c| c as i32);
                let reason = e.data_str("reason").map(str::to_string);
                let to = match (exit_code, reason.as_deref()) {
                    (_, Some("canceled")) => Status::Canceled,
                    (Some(0), _) => Status::Succeeded,
                    _ => Status::Failed,
                };
                let target = Target::Step { stage, step };
                if self.b.status_of(&target) == Some(Status::Pending) {
                    self.go(target.clone(), Status::Running, Patch::default());
                }
                let patch =
                    Patch { exit_code, duration_ms: e.data_u64("duration_ms"), reason, ..Patch::default() };
                self.go(target, to, patch);
            }
            types::STAGE_FINISHED => {
                let Some(stage) = stage else { return self.malformed(e) };
                if !self.current_attempt(&stage, attempt) {
                    return;
                }
                let outcome = e.data_str("outcome").unwrap_or("completed").to_string();
                let reason = e.data_str("reason").map(str::to_string);
                self.finish_stage(&stage, &outcome, reason);
            }
            types::JOB_FAILED => {
                let Some(stage) = stage else { return self.malformed(e) };
                let reason = e.data_str("reason").unwrap_or("the job could not be run").to_string();
                self.finish_stage(&stage, "failed", Some(reason));
            }
            types::CANCEL_REQUESTED => {
                if self.b.status.is_terminal() {
                    return self.refuse(format!("cancel: build is already {}", self.b.status));
                }
                let reason = Some(e.data_str("reason").unwrap_or("canceled").to_string());
                self.go(Target::Build, Status::Canceled, Patch { reason, ..Patch::default() });
                let pending: Vec<StageName> = self
                    .b
                    .stages
                    .iter()
                    .filter(|s| s.status == Status::Pending)
                    .map(|s| s.name.clone())
                    .collect();
                for stage in pending {
                    self.end_stage(&stage, Status::Canceled, Status::Canceled, Some("build canceled".into()));
                }
            }
            // Other events are recorded, not applied (image reports go to the catalog:
            // `react_catalog`).
            _ => {}
        }
    }

    /// Ends a stage after its runner stopped: steps it did not finish are closed too.
    fn finish_stage(&mut self, stage: &StageName, outcome: &str, reason: Option<String>) {
        let Some(s) = self.b.stage(stage.as_str()) else {
            return self.refuse(format!("stage {stage} does not exist"));
        };
        let any_failed = s.steps.iter().any(|x| x.status == Status::Failed);
        let (to, step_to, reason) = match outcome {
            "canceled" => (Status::Canceled, Status::Canceled, reason),
            "stopped" => (Status::Stopped, Status::Canceled, reason.or(Some("stopped by event".into()))),
            "timeout" => {
                let build_deadline = self.b.created_ms + self.b.plan.timeout_ms;
                let why = if self.now_ms >= build_deadline {
                    format!(
                        "the build timed out (timeout {})",
                        crate::compile::format_duration(self.b.plan.timeout_ms)
                    )
                } else {
                    "stage timed out".to_string()
                };
                (Status::Failed, Status::Skipped, reason.or(Some(why)))
            }
            "failed" => (Status::Failed, Status::Skipped, reason),
            _ if any_failed => (Status::Failed, Status::Skipped, reason),
            _ => (Status::Succeeded, Status::Skipped, reason),
        };
        if s.status == Status::Pending && to != Status::Canceled && to != Status::Failed {
            return self.refuse(format!("stage {stage} finished but never started"));
        }
        self.end_stage(stage, to, step_to, reason);
    }

    /// Moves a stage to `to`; its unfinished steps go to `step_to` (running ones fail,
    /// unless canceled).
    fn end_stage(&mut self, stage: &StageName, to: Status, step_to: Status, reason: Option<String>) {
        let Some(s) = self.b.stage(stage.as_str()) else { return };
        let open: Vec<(StepName, Status)> =
            s.steps.iter().filter(|x| !x.status.is_terminal()).map(|x| (x.name.clone(), x.status)).collect();
        for (step, status) in open {
            let step_status = match (status, step_to) {
                (Status::Running, Status::Skipped) => Status::Failed,
                (Status::Pending, Status::Failed) => Status::Skipped,
                (_, s) => s,
            };
            let step_reason = match step_status {
                Status::Skipped => Some("an earlier step did not succeed".to_string()),
                Status::Failed => Some("the runner ended the stage while the step ran".to_string()),
                _ => reason.clone(),
            };
            let target = Target::Step { stage: stage.clone(), step };
            self.go(target, step_status, Patch { reason: step_reason, ..Patch::default() });
        }
        self.go(Target::Stage { stage: stage.clone() }, to, Patch { reason, ..Patch::default() });
    }

    /// Skips pending stages whose needs ended without success, and so on down the graph.
    fn skip_broken(&mut self) {
        if self.b.status != Status::Running {
            return;
        }
        loop {
            let broken: Vec<(StageName, String)> = self
                .b
                .stages
                .iter()
                .filter(|s| s.status == Status::Pending)
                .filter_map(|s| match needs_state(&self.b, s) {
                    NeedsState::Broken(why) => Some((s.name.clone(), why)),
                    _ => None,
                })
                .collect();
            if broken.is_empty() {
                break;
            }
            for (stage, why) in broken {
                self.end_stage(&stage, Status::Skipped, Status::Skipped, Some(why));
            }
        }
    }

    /// Ends the build once every stage has ended and nothing can start. Event-triggered
    /// stages do not hold a build open by themselves: once everything else has ended, a
    /// later event finds the build over.
    fn settle(&mut self) {
        if self.b.status != Status::Running {
            return;
        }
        self.skip_broken();
        let active = self.b.stages.iter().any(|s| {
            s.status == Status::Running
                || (s.status == Status::Pending
                    && (s.dispatched || needs_state(&self.b, s) == NeedsState::Met))
        });
        if active {
            return;
        }
        // Nothing running or runnable: whatever still waits can never start.
        let stuck: Vec<StageName> =
            self.b.stages.iter().filter(|s| s.status == Status::Pending).map(|s| s.name.clone()).collect();
        for stage in stuck {
            self.end_stage(&stage, Status::Skipped, Status::Skipped, Some("never became ready".into()));
        }
        let failed = self.b.stages.iter().filter(|s| s.status == Status::Failed).count();
        let canceled = self.b.stages.iter().any(|s| s.status == Status::Canceled);
        let (to, reason) = if failed > 0 {
            (Status::Failed, Some(format!("{failed} stage(s) failed")))
        } else if canceled {
            (Status::Canceled, None)
        } else {
            (Status::Succeeded, None)
        };
        self.go(Target::Build, to, Patch { reason, ..Patch::default() });
    }

    /// Runs the pipeline's `on:` triggers against one event: `create` starts an instance
    /// (a set of several event types starts one once all have arrived); `delete` stops
    /// the stage's open instances.
    fn on_triggers(&mut self, e: &CloudEvent) {
        if self.b.status != Status::Running {
            return;
        }
        // A stage's own lifecycle never triggers it again.
        let about =
            e.data_str("template").or_else(|| e.data_str("stage").map(|s| s.split('#').next().unwrap_or(s)));
        let own = |stage: &str| e.ty.starts_with(types::LIFECYCLE_PREFIX) && about == Some(stage);
        let stages: Vec<StagePlan> =
            self.b.plan.stages.iter().filter(|s| !s.triggers.is_empty()).cloned().collect();
        for plan in stages {
            if own(plan.name.as_str()) {
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
        let mut data =
            json!({ "stage": name, "template": plan.name, "status": "pending", "trigger": trigger.id });
        data["trigger_type"] = Value::from(trigger.ty.as_str());
        let state = StageState::new(name.clone(), plan, Some(trigger));
        self.b.stages.push(state.clone());
        self.out.new_stages.push(state);
        self.out.events.push(
            CloudEvent::new("dev.kiln.stage.pending", "kiln://fanin", &self.b.id, data)
                .with_subject(format!("stage/{name}")),
        );
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

    /// Reports from an attempt other than the stage's current one are stale.
    fn current_attempt(&mut self, stage: &StageName, attempt: Option<u32>) -> bool {
        let Some(s) = self.b.stage(stage.as_str()) else {
            self.refuse(format!("stage {stage} does not exist"));
            return false;
        };
        match attempt {
            Some(a) if s.attempt != 0 && a != s.attempt => {
                let current = s.attempt;
                self.refuse(format!("stage {stage}: report from attempt {a}, current attempt is {current}"));
                false
            }
            _ => true,
        }
    }

    /// Records a transition if the state machine allows it, else refuses it.
    fn go(&mut self, target: Target, to: Status, mut patch: Patch) {
        let Some(from) = self.b.status_of(&target) else {
            return self.refuse(format!("{target} does not exist"));
        };
        patch.at_ms = self.now_ms;
        let t = Transition { target, from, to, patch };
        if let Err(e) = self.b.apply(&t) {
            if from.is_terminal() {
                return self.out.ignored.push(e.to_string());
            }
            return self.refuse(e.to_string());
        }
        self.out.events.push(lifecycle_event(&self.b, &t));
        self.out.transitions.push(t);
    }

    fn malformed(&mut self, e: &CloudEvent) {
        self.refuse(format!("{} event {} lacks its stage or step", e.ty, e.id));
    }

    fn refuse(&mut self, why: String) {
        self.out.refused.push(why);
    }
}

/// The event that starts a fan-in instance: the last one to arrive, with the data of
/// the whole set merged in trigger order (later types win on clashes).
fn merged(
    t: &Trigger,
    set: &std::collections::BTreeMap<String, CloudEvent>,
    last: &CloudEvent,
) -> CloudEvent {
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

/// The lifecycle event recorded for a transition: `dev.kiln.{build,stage,step}.<status>`.
fn lifecycle_event(b: &Build, t: &Transition) -> CloudEvent {
    let (entity, subject, mut data) = match &t.target {
        Target::Build => ("build", "build".to_string(), json!({})),
        Target::Stage { stage } => ("stage", format!("stage/{stage}"), json!({ "stage": stage })),
        Target::Step { stage, step } => {
            ("step", format!("stage/{stage}/step/{step}"), json!({ "stage": stage, "step": step }))
        }
    };
    let obj = data.as_object_mut().expect("built as an object");
    obj.insert("status".into(), Value::from(t.to.as_str()));
    obj.insert("from".into(), Value::from(t.from.as_str()));
    if let Some(c) = t.patch.exit_code {
        obj.insert("exit_code".into(), Value::from(c));
    }
    if let Some(d) = t.patch.duration_ms {
        obj.insert("duration_ms".into(), Value::from(d));
    }
    if let Some(r) = &t.patch.reason {
        obj.insert("reason".into(), Value::from(r.as_str()));
    }
    if let Target::Stage { stage } = &t.target
        && let Some((template, _)) = stage.as_str().split_once('#')
    {
        obj.insert("template".into(), Value::from(template));
    }
    CloudEvent::new(format!("dev.kiln.{entity}.{}", t.to), "kiln://fanin", &b.id, data).with_subject(subject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BuildId, Repo};
    use crate::plan::{Plan, RunsOn, StagePlan, StepPlan};

    fn plan(stages: &[(&str, &[&str], usize)]) -> Plan {
        let mut n = 0;
        Plan {
            version: "1".into(),
            env: Default::default(),
            images: vec![],
            timeout_ms: 1000,
            stages: stages
                .iter()
                .map(|(name, needs, steps)| StagePlan {
                    name: (*name).into(),
                    needs: needs.iter().map(|s| StageName::new(*s)).collect(),
                    runs_on: RunsOn::Lambda,
                    timeout_ms: 1000,
                    env: Default::default(),
                    services: vec![],
                    triggers: vec![],
                    steps: (0..*steps)
                        .map(|i| {
                            n += 1;
                            StepPlan {
                                name: StepName::new(format!("s{i}")),
                                number: n,
                                commands: vec!["true".into()],
                                env: Default::default(),
                                timeout_ms: None,
                            }
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn ev(b: &Build, ty: &str, data: Value) -> CloudEvent {
        CloudEvent::new(ty, "test", &b.id, data)
    }

    /// Applies an event and returns the resulting build.
    fn step(b: &Build, ty: &str, data: Value) -> (Build, Reaction) {
        let r = react(b, &ev(b, ty, data), 1);
        (r.after.clone().unwrap(), r)
    }

    fn run_stage(b: Build, stage: &str, exits: &[i32]) -> Build {
        let (mut b, _) = step(&b, types::STAGE_STARTED, json!({"stage": stage, "attempt": 1}));
        for (i, code) in exits.iter().enumerate() {
            let s = format!("s{i}");
            b = step(&b, types::STEP_STARTED, json!({"stage": stage, "step": s, "attempt": 1})).0;
            b = step(
                &b,
                types::STEP_FINISHED,
                json!({"stage": stage, "step": s, "attempt": 1, "exit_code": code}),
            )
            .0;
        }
        step(&b, types::STAGE_FINISHED, json!({"stage": stage, "attempt": 1})).0
    }

    fn new_build(p: Plan) -> Build {
        let b = Build::new(BuildId::generate(), Repo::new("a", "b"), p, 0);
        step(&b, types::BUILD_CREATED, json!({})).0
    }

    #[test]
    fn dag_runs_to_success() {
        let b = new_build(plan(&[("a", &[], 1), ("b", &["a"], 1), ("c", &["a"], 1)]));
        assert_eq!(b.status, Status::Running);
        assert_eq!(ready_stages(&b), vec![StageName::new("a")]);
        let b = run_stage(b, "a", &[0]);
        assert_eq!(ready_stages(&b), vec![StageName::new("b"), StageName::new("c")]);
        let b = run_stage(b, "b", &[0]);
        assert_eq!(b.status, Status::Running);
        let b = run_stage(b, "c", &[0]);
        assert_eq!(b.status, Status::Succeeded);
    }

    #[test]
    fn failure_skips_rest_of_stage_and_dependents() {
        let b = new_build(plan(&[("a", &[], 3), ("b", &["a"], 1), ("c", &["b"], 1), ("d", &[], 1)]));
        let b = run_stage(b, "a", &[0, 2]);
        let a = b.stage("a").unwrap();
        assert_eq!(a.status, Status::Failed);
        let steps: Vec<Status> = a.steps.iter().map(|s| s.status).collect();
        assert_eq!(steps, vec![Status::Succeeded, Status::Failed, Status::Skipped]);
        assert_eq!(a.steps[1].exit_code, Some(2));
        assert_eq!(b.stage("b").unwrap().status, Status::Skipped);
        assert_eq!(b.stage("c").unwrap().status, Status::Skipped);
        assert_eq!(b.status, Status::Running, "d has not run yet");
        let b = run_stage(b, "d", &[0]);
        assert_eq!(b.status, Status::Failed);
    }

    #[test]
    fn repeated_report_is_refused_not_applied() {
        let b = new_build(plan(&[("a", &[], 1)]));
        let (b, r) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 1}));
        assert_eq!(r.transitions.len(), 1);
        let (_, r) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 1}));
        assert!(r.transitions.is_empty());
        assert_eq!(r.refused.len(), 1, "{:?}", r.refused);
    }

    #[test]
    fn every_transition_has_a_lifecycle_event() {
        let b = new_build(plan(&[("a", &[], 1)]));
        let (_, r) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 1}));
        assert_eq!(r.events.len(), r.transitions.len());
        assert_eq!(r.events[0].ty, "dev.kiln.stage.running");
        assert_eq!(r.events[0].data_str("stage"), Some("a"));
    }

    #[test]
    fn cancel_ends_build_and_pending_stages() {
        let b = new_build(plan(&[("a", &[], 1), ("b", &["a"], 1)]));
        let (b, _) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 1}));
        let (b, _) = step(&b, types::CANCEL_REQUESTED, json!({}));
        assert_eq!(b.status, Status::Canceled);
        assert_eq!(b.stage("b").unwrap().status, Status::Canceled);
        assert!(ready_stages(&b).is_empty());
        let (b, _) =
            step(&b, types::STAGE_FINISHED, json!({"stage": "a", "attempt": 1, "outcome": "canceled"}));
        assert_eq!(b.stage("a").unwrap().status, Status::Canceled);
        assert_eq!(b.stage("a").unwrap().steps[0].status, Status::Canceled);
    }

    #[test]
    fn stale_attempt_is_ignored() {
        let b = new_build(plan(&[("a", &[], 1)]));
        let (b, _) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 2}));
        let (_, r) = step(&b, types::STEP_STARTED, json!({"stage": "a", "step": "s0", "attempt": 1}));
        assert!(r.transitions.is_empty());
    }

    // ----- the image catalog ------------------------------------------------------------

    use crate::catalog::{CatalogWrite, ImageRecord, NO_RESULT};
    use crate::plan::ImageSpec;
    use crate::status::ImageStatus;
    use std::collections::BTreeMap;

    /// A store of records, as the fan-in sees it.
    type Records = BTreeMap<(String, String), ImageRecord>;

    fn image_plan(built_by: Option<&str>) -> Plan {
        let mut p = plan(&[("bake", &[], 1), ("other", &[], 1)]);
        p.images = vec![ImageSpec {
            name: "os".into(),
            providers: vec!["aws".into(), "gcp".into(), "azure".into()],
            built_by: built_by.map(StageName::new),
        }];
        p
    }

    /// What the fan-in does: react, read what the catalog needs, react_catalog, commit.
    fn fan_in(b: &Build, records: &mut Records, e: &CloudEvent) -> (Build, Reaction) {
        let mut r = react(b, e, 7);
        let wanted = catalog_reads(b, e, &r);
        let read: Vec<ImageRecord> =
            records.values().filter(|x| wanted.contains(&x.image)).cloned().collect();
        react_catalog(b, e, &mut r, &read, 7);
        for w in &r.catalog {
            let key = (w.record.image.clone(), w.record.provider.clone());
            w.check(records.get(&key)).expect("the write's condition holds");
            records.insert(key, w.record.clone());
        }
        (r.after.clone().unwrap(), r)
    }

    fn report(b: &Build, ty: &str, stage: &str, data: Value) -> CloudEvent {
        let mut data = data;
        data["stage"] = json!(stage);
        data["step"] = json!("s0");
        ev(b, ty, data)
    }

    fn progress(b: &Build, provider: &str, percent: u8) -> CloudEvent {
        report(
            b,
            types::IMAGE_PROGRESS,
            "bake",
            json!({"image": "os", "provider": provider, "percent": percent}),
        )
    }

    fn result(b: &Build, provider: &str, ok: bool) -> CloudEvent {
        let data = if ok {
            json!({"image": "os", "provider": provider, "ok": true, "uri": format!("{provider}://os")})
        } else {
            json!({"image": "os", "provider": provider, "ok": false, "error": "quota exceeded"})
        };
        report(b, types::IMAGE_RESULT, "bake", data)
    }

    fn status_of(records: &Records, provider: &str) -> (ImageStatus, u8) {
        let r = &records[&("os".to_string(), provider.to_string())];
        (r.status, r.percent)
    }

    fn created(p: Plan, providers: Option<&[&str]>, records: &mut Records) -> Build {
        let mut b = Build::new(BuildId::generate(), Repo::new("a", "b"), p, 0);
        b.providers = providers.map(|p| p.iter().map(|s| s.to_string()).collect());
        let e = ev(&b, types::BUILD_CREATED, json!({}));
        fan_in(&b, records, &e).0
    }

    #[test]
    fn a_new_build_queues_its_requested_pairs() {
        let mut records = Records::new();
        created(image_plan(None), None, &mut records);
        assert_eq!(records.len(), 3);
        assert!(records.values().all(|r| r.status == ImageStatus::Queued && r.version == 1));
        let mut only = Records::new();
        created(image_plan(None), Some(&["azure"]), &mut only);
        assert_eq!(only.keys().map(|k| k.1.as_str()).collect::<Vec<_>>(), vec!["azure"]);
    }

    #[test]
    fn two_completes_and_one_failure_and_unreported_pairs_fail_at_the_end() {
        let mut records = Records::new();
        let b = created(image_plan(Some("bake")), None, &mut records);
        let (b, _) = step(&b, types::STAGE_STARTED, json!({"stage": "bake", "attempt": 1}));
        for e in [
            progress(&b, "aws", 50),
            result(&b, "aws", true),
            result(&b, "azure", false),
            progress(&b, "gcp", 40),
        ] {
            let (_, r) = fan_in(&b, &mut records, &e);
            assert_eq!(r.catalog.len(), 1, "{:?}", r.refused);
        }
        assert_eq!(status_of(&records, "aws"), (ImageStatus::Complete, 100));
        assert_eq!(status_of(&records, "gcp"), (ImageStatus::Building, 40));
        let azure = &records[&("os".to_string(), "azure".to_string())];
        assert_eq!((azure.status, azure.error.as_deref()), (ImageStatus::Failed, Some("quota exceeded")));
        // The build ends (both stages): gcp never got a result.
        let b = run_stage(b, "other", &[0]);
        let e = ev(&b, types::STEP_STARTED, json!({"stage": "bake", "step": "s0", "attempt": 1}));
        let (b, _) = fan_in(&b, &mut records, &e);
        let e = ev(
            &b,
            types::STEP_FINISHED,
            json!({"stage": "bake", "step": "s0", "attempt": 1, "exit_code": 1}),
        );
        let (b, _) = fan_in(&b, &mut records, &e);
        let e = ev(&b, types::STAGE_FINISHED, json!({"stage": "bake", "attempt": 1}));
        let (b, r) = fan_in(&b, &mut records, &e);
        assert_eq!(b.status, Status::Failed);
        assert_eq!(r.catalog.len(), 1, "only the open pair: {:?}", r.catalog);
        let gcp = &records[&("os".to_string(), "gcp".to_string())];
        assert_eq!(
            (gcp.status, gcp.percent, gcp.error.as_deref()),
            (ImageStatus::Failed, 40, Some(NO_RESULT))
        );
        assert_eq!(status_of(&records, "aws"), (ImageStatus::Complete, 100), "untouched");
    }

    #[test]
    fn duplicate_and_out_of_order_image_events_end_as_if_each_arrived_once_in_order() {
        let mut in_order = Records::new();
        let b = created(image_plan(None), Some(&["aws"]), &mut in_order);
        let mut shuffled = in_order.clone();
        let events = [progress(&b, "aws", 20), progress(&b, "aws", 70), result(&b, "aws", true)];
        for e in &events {
            fan_in(&b, &mut in_order, e);
        }
        for i in [1, 0, 2, 1, 2, 0] {
            let (_, r) = fan_in(&b, &mut shuffled, &events[i]);
            assert!(r.transitions.is_empty());
        }
        let strip = |r: &Records| -> Vec<(ImageStatus, u8, Option<String>, Option<String>)> {
            r.values().map(|x| (x.status, x.percent, x.uri.clone(), x.error.clone())).collect()
        };
        assert_eq!(strip(&shuffled), strip(&in_order));
        assert_eq!(status_of(&in_order, "aws"), (ImageStatus::Complete, 100));
    }

    #[test]
    fn older_builds_late_report_is_ignored() {
        let mut records = Records::new();
        let old = created(image_plan(None), Some(&["aws"]), &mut records);
        let new = created(image_plan(None), Some(&["aws"]), &mut records);
        fan_in(&new, &mut records, &progress(&new, "aws", 30));
        let (_, r) = fan_in(&old, &mut records, &result(&old, "aws", true));
        assert!(r.catalog.is_empty());
        assert!(r.refused[0].contains("is newer"), "{:?}", r.refused);
        let rec = &records[&("os".to_string(), "aws".to_string())];
        assert_eq!((rec.build.clone(), rec.status, rec.percent), (new.id.clone(), ImageStatus::Building, 30));
        // The old build ending leaves the newer build's record alone.
        let (old, r) = fan_in(&old, &mut records, &ev(&old, types::CANCEL_REQUESTED, json!({})));
        assert!(old.status.is_terminal());
        assert!(r.catalog.is_empty(), "{:?}", r.catalog);
    }

    #[test]
    fn built_by_and_unknown_images_or_providers_are_refused() {
        let mut records = Records::new();
        let b = created(image_plan(Some("bake")), None, &mut records);
        let before = records.clone();
        let refused = |e: CloudEvent, records: &mut Records| {
            let (_, r) = fan_in(&b, records, &e);
            assert!(r.catalog.is_empty(), "{:?}", r.catalog);
            r.refused.join("; ")
        };
        let other =
            report(&b, types::IMAGE_RESULT, "other", json!({"image": "os", "provider": "aws", "ok": true}));
        assert!(refused(other, &mut records).contains("built by stage bake"));
        let unknown =
            report(&b, types::IMAGE_RESULT, "bake", json!({"image": "nope", "provider": "aws", "ok": true}));
        assert!(refused(unknown, &mut records).contains("not in the pipeline"));
        let provider =
            report(&b, types::IMAGE_RESULT, "bake", json!({"image": "os", "provider": "ibm", "ok": true}));
        assert!(refused(provider, &mut records).contains("no provider ibm"));
        assert_eq!(records, before);
        // Without built-by, any stage may report.
        let mut records = Records::new();
        let b = created(image_plan(None), None, &mut records);
        let e =
            report(&b, types::IMAGE_RESULT, "other", json!({"image": "os", "provider": "aws", "ok": true}));
        assert_eq!(fan_in(&b, &mut records, &e).1.catalog.len(), 1);
    }

    #[test]
    fn one_write_per_pair_even_when_a_build_starts_and_ends_at_once() {
        // A build whose only stage is event-triggered starts and ends on build-created.
        let mut p = image_plan(None);
        p.stages.iter_mut().for_each(|s| {
            s.triggers = vec![crate::plan::Trigger {
                events: vec!["go".into()],
                where_: Default::default(),
                policy: crate::plan::TriggerPolicy::Create,
            }]
        });
        let mut records = Records::new();
        let b = Build::new(BuildId::generate(), Repo::new("a", "b"), p, 0);
        let (after, r) = fan_in(&b, &mut records, &ev(&b, types::BUILD_CREATED, json!({})));
        assert!(after.status.is_terminal());
        assert_eq!(r.catalog.len(), 3);
        assert!(r.catalog.iter().all(|w: &CatalogWrite| w.expected_version == 0 && w.record.version == 1));
        assert!(records.values().all(|x| x.status == ImageStatus::Failed));
    }

    #[test]
    fn job_failure_fails_stage_and_build() {
        let b = new_build(plan(&[("a", &[], 2)]));
        let (b, _) = step(&b, types::JOB_FAILED, json!({"stage": "a", "reason": "poison"}));
        assert_eq!(b.stage("a").unwrap().status, Status::Failed);
        assert_eq!(b.stage("a").unwrap().reason.as_deref(), Some("poison"));
        assert_eq!(b.status, Status::Failed);
    }

    fn triggered(triggers: Vec<(&str, Vec<&str>, Value, crate::plan::TriggerPolicy)>) -> Build {
        let mut p = plan(&[("main", &[], 1)]);
        for (name, events, where_, policy) in triggers {
            let mut st = p.stages[0].clone();
            st.name = name.into();
            st.triggers.push(crate::plan::Trigger {
                events: events.iter().map(|s| s.to_string()).collect(),
                where_: serde_json::from_value(where_).unwrap(),
                policy,
            });
            p.stages.push(st);
        }
        new_build(p)
    }

    #[test]
    fn every_matching_event_starts_an_instance() {
        use crate::plan::TriggerPolicy::Create;
        let b = triggered(vec![("heads", vec!["coin"], json!({"content": "heads"}), Create)]);
        assert!(b.stage("heads").is_none(), "event-triggered stages start with no instance");
        let (b, r) = step(&b, "coin", json!({"content": "heads"}));
        assert_eq!(r.new_stages.len(), 1);
        let (b, _) = step(&b, "coin", json!({"content": "tails"}));
        let (b, _) = step(&b, "coin", json!({"content": "heads"}));
        let names: Vec<&str> = b.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["main", "heads#1", "heads#2"]);
        assert_eq!(
            b.stage("heads#2").unwrap().trigger_event.as_ref().unwrap().data_str("content"),
            Some("heads")
        );
        assert_eq!(ready_stages(&b).len(), 3);
    }

    #[test]
    fn a_set_of_event_types_starts_one_instance_once_all_arrived() {
        use crate::plan::TriggerPolicy::Create;
        let b = triggered(vec![("pair", vec!["left", "right"], json!({}), Create)]);
        let (b, r) = step(&b, "left", json!({"l": 1}));
        assert!(r.new_stages.is_empty());
        assert_eq!(r.arrivals.as_ref().map(|a| a.len()), Some(1));
        let (b, _) = step(&b, "left", json!({"l": 2}));
        let (b, r) = step(&b, "right", json!({"r": 3}));
        assert_eq!(r.new_stages.len(), 1);
        let ev = b.stage("pair#1").unwrap().trigger_event.clone().unwrap();
        assert_eq!(ev.data, json!({"l": 2, "r": 3}));
        assert!(b.arrivals.is_empty(), "the set starts over");
    }

    #[test]
    fn delete_stops_open_instances_and_stopped_is_not_failure() {
        use crate::plan::TriggerPolicy::{Create, Delete};
        let b = triggered(vec![
            ("heads", vec!["coin"], json!({}), Create),
            ("main2", vec!["stop"], json!({}), Delete),
        ]);
        // main2 has only a delete trigger: it starts with the build, by needs.
        assert!(b.stage("main2").is_some());
        let (b, _) = step(&b, types::STAGE_STARTED, json!({"stage": "main2", "attempt": 1}));
        let (b, r) = step(&b, "stop", json!({}));
        assert_eq!(b.stage("main2").unwrap().status, Status::Stopped);
        assert!(r.events.iter().any(|e| e.ty == "dev.kiln.stage.stopped"));
        // the runner's late report is ignored, quietly
        let (b, r) =
            step(&b, types::STAGE_FINISHED, json!({"stage": "main2", "attempt": 1, "outcome": "canceled"}));
        assert!(r.refused.is_empty() && !r.ignored.is_empty(), "{r:?}");
        let b = run_stage(b, "main", &[0]);
        assert_eq!(b.status, Status::Succeeded);
    }

    #[test]
    fn lifecycle_events_trigger_stages_but_never_their_own() {
        use crate::plan::TriggerPolicy::Create;
        let b = triggered(vec![("cleanup", vec!["dev.kiln.stage.failed"], json!({"stage": "main"}), Create)]);
        let b = run_stage(b, "main", &[1]);
        assert!(b.stage("cleanup#1").is_some(), "a cleanup instance when main fails");
        assert_eq!(b.status, Status::Running, "the cleanup keeps the build open");
        let (b, _) = step(&b, types::STAGE_STARTED, json!({"stage": "cleanup#1", "attempt": 1}));
        let (b, _) = step(&b, types::STEP_STARTED, json!({"stage": "cleanup#1", "step": "s0", "attempt": 1}));
        let (b, _) = step(
            &b,
            types::STEP_FINISHED,
            json!({"stage": "cleanup#1", "step": "s0", "attempt": 1, "exit_code": 1}),
        );
        let (b, _) = step(&b, types::STAGE_FINISHED, json!({"stage": "cleanup#1", "attempt": 1}));
        assert!(b.stage("cleanup#2").is_none(), "its own failure does not trigger it again");
        assert_eq!(b.status, Status::Failed);
    }

    #[test]
    fn events_after_the_build_ended_start_nothing() {
        use crate::plan::TriggerPolicy::Create;
        let b = triggered(vec![("late", vec!["ping"], json!({}), Create)]);
        let b = run_stage(b, "main", &[0]);
        assert_eq!(b.status, Status::Succeeded, "event-triggered stages do not hold the build open");
        let (_, r) = step(&b, "ping", json!({}));
        assert!(r.new_stages.is_empty());
    }

    #[test]
    fn a_later_attempt_restarts_a_stage_whose_runner_was_lost() {
        let b = new_build(plan(&[("a", &[], 2)]));
        let (b, _) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 1}));
        let (b, _) = step(&b, types::STEP_STARTED, json!({"stage": "a", "step": "s0", "attempt": 1}));
        let (b, _) =
            step(&b, types::STEP_FINISHED, json!({"stage": "a", "step": "s0", "attempt": 1, "exit_code": 0}));
        let (b, _) = step(&b, types::STEP_STARTED, json!({"stage": "a", "step": "s1", "attempt": 1}));
        // the runner dies; attempt 2 starts over
        let (b, r) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 2}));
        assert!(r.refused.is_empty(), "{:?}", r.refused);
        let a = b.stage("a").unwrap();
        assert_eq!((a.status, a.attempt), (Status::Running, 2));
        assert!(a.steps.iter().all(|s| s.status == Status::Pending));
        // attempt 1's late reports are stale; attempt 2's apply
        let (b, r) =
            step(&b, types::STEP_FINISHED, json!({"stage": "a", "step": "s1", "attempt": 1, "exit_code": 0}));
        assert!(r.transitions.is_empty());
        let mut b = b;
        for s in ["s0", "s1"] {
            b = step(&b, types::STEP_STARTED, json!({"stage": "a", "step": s, "attempt": 2})).0;
            b = step(
                &b,
                types::STEP_FINISHED,
                json!({"stage": "a", "step": s, "attempt": 2, "exit_code": 0}),
            )
            .0;
        }
        let (b, _) = step(&b, types::STAGE_FINISHED, json!({"stage": "a", "attempt": 2}));
        assert_eq!(b.status, Status::Succeeded);
        // an older attempt number never restarts it
        let (_, r) = step(&b, types::STAGE_STARTED, json!({"stage": "a", "attempt": 1}));
        assert!(r.transitions.is_empty());
    }
}
