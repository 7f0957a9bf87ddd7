use super::*;
use crate::event::types;
use crate::ids::{BuildId, Repo};
use crate::plan::{Plan, RunsOn, StagePlan, StepPlan};
use crate::report::{
    BuildCreated, CancelRequested, JobFailed, LifecycleData, StageFinished, StageStarted, StepFinished,
    StepStarted,
};
use serde_json::{Value, json};

fn plan(stages: &[(&str, &[&str], usize)]) -> Plan {
    let mut n = 0;
    Plan {
        version: "1".into(),
        env: Default::default(),
        images: vec![],
        timeout_ms: 1000,
        git: None,
        cancel_superseded: false,
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
                checkout: true,
                steps: (0..*steps)
                    .map(|i| {
                        n += 1;
                        StepPlan {
                            name: StepName::new(format!("s{i}")),
                            number: n,
                            commands: vec!["true".into()],
                            env: Default::default(),
                            timeout_ms: None,
                            secrets: Vec::new(),
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

/// Applies a report and returns the resulting build.
fn apply(b: &Build, r: impl Into<Report>) -> (Build, Reaction) {
    let r = react(b, &rev(b, r), 1);
    (r.after.clone().unwrap(), r)
}

fn rev(b: &Build, r: impl Into<Report>) -> CloudEvent {
    r.into().to_event(&b.id, "test")
}

fn created_report(b: &Build) -> BuildCreated {
    BuildCreated { repo: b.repo.to_string(), stages: b.plan.stages.len() }
}

fn started(stage: &str, attempt: u32) -> StageStarted {
    StageStarted { stage: StageName::new(stage), attempt, runner: None }
}

fn step_started(stage: &str, step: &str, attempt: u32) -> StepStarted {
    StepStarted { stage: StageName::new(stage), step: StepName::new(step), number: 1, attempt }
}

fn step_finished(stage: &str, step: &str, attempt: u32, exit_code: i32) -> StepFinished {
    StepFinished {
        stage: StageName::new(stage),
        step: StepName::new(step),
        number: 1,
        attempt,
        exit_code,
        duration_ms: 3,
        reason: None,
    }
}

fn finished(stage: &str, attempt: u32, outcome: StageOutcome) -> StageFinished {
    StageFinished { stage: StageName::new(stage), attempt, outcome, reason: None }
}

fn run_stage(b: Build, stage: &str, exits: &[i32]) -> Build {
    let (mut b, _) = apply(&b, started(stage, 1));
    for (i, code) in exits.iter().enumerate() {
        let s = format!("s{i}");
        b = apply(&b, step_started(stage, &s, 1)).0;
        b = apply(&b, step_finished(stage, &s, 1, *code)).0;
    }
    apply(&b, finished(stage, 1, StageOutcome::Completed)).0
}

fn new_build(p: Plan) -> Build {
    let b = Build::new(BuildId::generate(), Repo::new("a", "b"), p, 0);
    apply(&b, created_report(&b)).0
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
    let (b, r) = apply(&b, started("a", 1));
    assert_eq!(r.transitions.len(), 1);
    let (_, r) = apply(&b, started("a", 1));
    assert!(r.transitions.is_empty());
    assert_eq!(r.refused.len(), 1, "{:?}", r.refused);
}

#[test]
fn every_transition_has_a_lifecycle_event() {
    let b = new_build(plan(&[("a", &[], 1)]));
    let (_, r) = apply(&b, started("a", 1));
    assert_eq!(r.events.len(), r.transitions.len());
    assert_eq!(r.events[0].ty, "dev.kiln.stage.running");
    assert_eq!(r.events[0].data_str("stage"), Some("a"));
}

#[test]
fn cancel_ends_build_and_pending_stages() {
    let b = new_build(plan(&[("a", &[], 1), ("b", &["a"], 1)]));
    let (b, _) = apply(&b, started("a", 1));
    let (b, _) = apply(&b, CancelRequested::default());
    assert_eq!(b.status, Status::Canceled);
    assert_eq!(b.stage("b").unwrap().status, Status::Canceled);
    assert!(ready_stages(&b).is_empty());
    let (b, _) = apply(&b, finished("a", 1, StageOutcome::Canceled));
    assert_eq!(b.stage("a").unwrap().status, Status::Canceled);
    assert_eq!(b.stage("a").unwrap().steps[0].status, Status::Canceled);
}

#[test]
fn stale_attempt_is_ignored() {
    let b = new_build(plan(&[("a", &[], 1)]));
    let (b, _) = apply(&b, started("a", 2));
    let (_, r) = apply(&b, step_started("a", "s0", 1));
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
    let read: Vec<ImageRecord> = records.values().filter(|x| wanted.contains(&x.image)).cloned().collect();
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
    report(b, types::IMAGE_PROGRESS, "bake", json!({"image": "os", "provider": provider, "percent": percent}))
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
    let e = rev(&b, created_report(&b));
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
    let (b, _) = apply(&b, started("bake", 1));
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
    let e = rev(&b, step_started("bake", "s0", 1));
    let (b, _) = fan_in(&b, &mut records, &e);
    let e = rev(&b, step_finished("bake", "s0", 1, 1));
    let (b, _) = fan_in(&b, &mut records, &e);
    let e = rev(&b, finished("bake", 1, StageOutcome::Completed));
    let (b, r) = fan_in(&b, &mut records, &e);
    assert_eq!(b.status, Status::Failed);
    assert_eq!(r.catalog.len(), 1, "only the open pair: {:?}", r.catalog);
    let gcp = &records[&("os".to_string(), "gcp".to_string())];
    assert_eq!((gcp.status, gcp.percent, gcp.error.as_deref()), (ImageStatus::Failed, 40, Some(NO_RESULT)));
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
    let (old, r) = fan_in(&old, &mut records, &rev(&old, CancelRequested::default()));
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
    let e = report(&b, types::IMAGE_RESULT, "other", json!({"image": "os", "provider": "aws", "ok": true}));
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
    let (after, r) = fan_in(&b, &mut records, &rev(&b, created_report(&b)));
    assert!(after.status.is_terminal());
    assert_eq!(r.catalog.len(), 3);
    assert!(r.catalog.iter().all(|w: &CatalogWrite| w.expected_version == 0 && w.record.version == 1));
    assert!(records.values().all(|x| x.status == ImageStatus::Failed));
}

#[test]
fn job_failure_fails_stage_and_build() {
    let b = new_build(plan(&[("a", &[], 2)]));
    let (b, _) = apply(&b, JobFailed { stage: StageName::new("a"), attempt: None, reason: "poison".into() });
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
    let (b, _) = apply(&b, started("main2", 1));
    let (b, r) = step(&b, "stop", json!({}));
    assert_eq!(b.stage("main2").unwrap().status, Status::Stopped);
    assert!(r.events.iter().any(|e| e.ty == "dev.kiln.stage.stopped"));
    // the runner's late report is ignored, quietly
    let (b, r) = apply(&b, finished("main2", 1, StageOutcome::Canceled));
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
    let (b, _) = apply(&b, started("cleanup#1", 1));
    let (b, _) = apply(&b, step_started("cleanup#1", "s0", 1));
    let (b, _) = apply(&b, step_finished("cleanup#1", "s0", 1, 1));
    let (b, _) = apply(&b, finished("cleanup#1", 1, StageOutcome::Completed));
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
    let (b, _) = apply(&b, started("a", 1));
    let (b, _) = apply(&b, step_started("a", "s0", 1));
    let (b, _) = apply(&b, step_finished("a", "s0", 1, 0));
    let (b, _) = apply(&b, step_started("a", "s1", 1));
    // the runner dies; attempt 2 starts over
    let (b, r) = apply(&b, started("a", 2));
    assert!(r.refused.is_empty(), "{:?}", r.refused);
    let a = b.stage("a").unwrap();
    assert_eq!((a.status, a.attempt), (Status::Running, 2));
    assert!(a.steps.iter().all(|s| s.status == Status::Pending));
    // attempt 1's late reports are stale; attempt 2's apply
    let (b, r) = apply(&b, step_finished("a", "s1", 1, 0));
    assert!(r.transitions.is_empty());
    let mut b = b;
    for s in ["s0", "s1"] {
        b = apply(&b, step_started("a", s, 2)).0;
        b = apply(&b, step_finished("a", s, 2, 0)).0;
    }
    let (b, _) = apply(&b, finished("a", 2, StageOutcome::Completed));
    assert_eq!(b.status, Status::Succeeded);
    // an older attempt number never restarts it
    let (_, r) = apply(&b, started("a", 1));
    assert!(r.transitions.is_empty());
}

#[test]
fn malformed_reports_are_refused_with_the_field_and_not_applied() {
    let b = new_build(plan(&[("a", &[], 1)]));
    let (b, _) = apply(&b, started("a", 1));
    let (after, r) = step(&b, types::STAGE_FINISHED, json!({"stage": "a", "attempt": 1, "outcome": "maybe"}));
    assert!(r.transitions.is_empty());
    assert_eq!(r.refused.len(), 1, "{:?}", r.refused);
    assert!(r.refused[0].contains("`outcome`") && r.refused[0].contains("maybe"), "{}", r.refused[0]);
    assert_eq!(after.stage("a").unwrap().status, Status::Running);
    let (_, r) = step(&b, types::STEP_FINISHED, json!({"stage": "a", "step": "s0", "attempt": 1}));
    assert!(r.transitions.is_empty() && r.refused[0].contains("number"), "{:?}", r.refused);
}

#[test]
fn lifecycle_events_carry_typed_data() {
    let b = new_build(plan(&[("a", &[], 1)]));
    let (b, _) = apply(&b, started("a", 1));
    let (_, r) = apply(&b, step_finished("a", "s0", 1, 3));
    let data: Vec<LifecycleData> =
        r.events.iter().map(|e| LifecycleData::from_event(e).unwrap().unwrap()).collect();
    let step = data.iter().find(|d| d.step.is_some() && d.status == Status::Failed).unwrap();
    assert_eq!((step.exit_code, step.duration_ms, step.from), (Some(3), Some(3), Some(Status::Running)));
    let (b, _) = apply(&b, step_finished("a", "s0", 1, 3));
    let (_, r) = apply(&b, finished("a", 1, StageOutcome::Completed));
    let stage = r.events.iter().find(|e| e.ty == "dev.kiln.stage.failed").unwrap();
    let d = LifecycleData::from_event(stage).unwrap().unwrap();
    assert_eq!((d.stage.as_ref().map(|s| s.as_str()), d.step.as_ref()), (Some("a"), None));
}

/// A plan of `n` stages of 2 steps, each needing the one before (a chain).
fn chain(n: usize) -> Plan {
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let needs: Vec<Vec<&str>> =
        (0..n).map(|i| if i == 0 { vec![] } else { vec![names[i - 1].as_str()] }).collect();
    let stages: Vec<(&str, &[&str], usize)> =
        (0..n).map(|i| (names[i].as_str(), needs[i].as_slice(), 2)).collect();
    plan(&stages)
}

/// Applies CONTINUE events until a reaction is finished; returns the build and how many
/// it took. Every reaction stays within its budget.
fn continue_until_done(mut b: Build, first: Reaction) -> (Build, usize) {
    let mut r = first;
    let mut rounds = 0;
    while r.unfinished {
        assert!(r.events.len() <= MAX_EVENTS_PER_REACTION + 3, "{} events", r.events.len());
        assert_ne!(b.status, Status::Succeeded);
        rounds += 1;
        assert!(rounds < 100, "continuations never end");
        (b, r) = step(&b, CONTINUE, json!({}));
    }
    (b, rounds)
}

#[test]
fn a_failure_in_a_large_build_skips_the_rest_in_bounded_reactions() {
    let b = new_build(chain(200));
    let (b, _) = apply(&b, started("c0", 1));
    let (b, r) =
        apply(&b, JobFailed { stage: StageName::new("c0"), attempt: Some(1), reason: "boom".into() });
    assert!(r.unfinished, "199 stages of 3 transitions each do not fit one reaction");
    assert_eq!(b.status, Status::Running, "the build does not end while stages are left to skip");
    let (b, rounds) = continue_until_done(b, r);
    assert!(rounds >= 10, "{rounds}");
    assert_eq!(b.status, Status::Failed);
    assert!(b.stages[1..].iter().all(|s| s.status == Status::Skipped));
    assert!(b.is_settled());
}

#[test]
fn a_cancel_of_a_large_build_cancels_every_stage_in_bounded_reactions() {
    let b = new_build(chain(200));
    let (b, r) = apply(&b, CancelRequested::default());
    assert_eq!(b.status, Status::Canceled);
    assert!(r.unfinished);
    let (b, _) = continue_until_done(b, r);
    assert!(b.stages.iter().all(|s| s.status == Status::Canceled));
    // Nothing more to do: a further continuation changes nothing.
    let (_, r) = step(&b, CONTINUE, json!({}));
    assert!(r.transitions.is_empty() && !r.unfinished);
}

#[test]
fn newly_ready_names_the_stages_a_success_made_ready() {
    let b = new_build(plan(&[("a", &[], 1), ("b", &["a"], 1), ("c", &["a", "b"], 1), ("d", &[], 1)]));
    // At the start: every stage without needs.
    let start = Build::new(BuildId::generate(), Repo::new("a", "b"), b.plan.as_ref().clone(), 0);
    let r = react(&start, &rev(&start, created_report(&start)), 1);
    assert_eq!(
        newly_ready(r.after.as_ref().unwrap(), &r.transitions, &r.new_stages),
        ["a", "d"].map(StageName::new)
    );
    // A step event makes nothing ready.
    let (b, r) = apply(&b, started("a", 1));
    assert!(newly_ready(&b, &r.transitions, &r.new_stages).is_empty());
    // `a` succeeding makes `b` ready, not `c` (it needs `b` too).
    let (b, _) = apply(&b, step_started("a", "s0", 1));
    let (b, _) = apply(&b, step_finished("a", "s0", 1, 0));
    let (b, r) = apply(&b, finished("a", 1, StageOutcome::Completed));
    assert_eq!(newly_ready(&b, &r.transitions, &r.new_stages), [StageName::new("b")]);
    let b = run_stage(b, "d", &[0]);
    assert_eq!(b.stage("d").unwrap().status, Status::Succeeded);
    let (_, r) = apply(&b, started("b", 1));
    assert!(newly_ready(&b, &r.transitions, &r.new_stages).is_empty());
}
