//! The contract suite: behaviour every adapter of a port must show. Each check is an async
//! function over a trait object; the local adapters' tests and the AWS adapters' tests
//! (on LocalStack) call the same functions.
//!
//! Checks panic (assert) on a violation. They make their own builds (fresh ids, and a
//! fresh repository where listings are compared) and their own queues (through a
//! [`QueueFactory`]), so one store may serve every check, in any order or concurrently.
//! Timing checks use visibility timeouts of 1 s or more and assert with slack.
//!
//! Entry points: [`state_suite`], [`log_suite`], [`queue_suite`], or each check alone.

/// Calls the macro `$m` with the name of every state store check, so each adapter's test file
/// runs them all without listing them again.
#[macro_export]
macro_rules! for_each_state_check {
    ($m:ident) => {
        $m!(
            state_create_get,
            state_create_twice_already_exists,
            state_unknown_build,
            state_list_newest_first,
            state_commit_numbers_events,
            state_duplicate_event_is_noop,
            state_empty_event_id_is_not_deduplicated,
            state_refused_commit_changes_nothing,
            state_new_stages,
            state_concurrent_commits,
            state_mark_dispatched_once,
            state_claim_job,
            state_claim_finished,
            catalog_round_trip,
            catalog_stale_write_refused,
            catalog_duplicate_event_writes_once,
            catalog_concurrent_writes,
            catalog_list,
        );
    };
}

/// Calls the macro `$m` with the name of every log store check, so each adapter's test file
/// runs them all without listing them again.
#[macro_export]
macro_rules! for_each_log_check {
    ($m:ident) => {
        $m!(
            logs_put_read_round_trip,
            logs_retry_is_idempotent,
            logs_conflict,
            logs_gap,
            logs_read_from_offset,
            logs_unknown_stream_not_found,
            logs_complete,
            logs_complete_empty_stream,
            logs_list_order,
            logs_init_append_batches,
            logs_large_stream,
            logs_binary_bytes,
        );
    };
}

/// Calls the macro `$m` with the name of every queue check, so each adapter's test file
/// runs them all without listing them again.
#[macro_export]
macro_rules! for_each_queue_check {
    ($m:ident) => {
        $m!(
            queue_send_receive_delete,
            queue_long_poll_wakes_on_send,
            queue_redelivery_after_visibility_timeout,
            queue_extend,
            queue_fifo_order_one_in_flight_per_group,
            queue_fifo_dedup,
        );
    };
}

use async_trait::async_trait;
use kiln_domain::catalog::{CatalogWrite, ImageRecord};
use kiln_domain::event::{CloudEvent, StoredEvent, now_ms};
use kiln_domain::logs::LogStream;
use kiln_domain::plan::{
    DEFAULT_BUILD_TIMEOUT_MS, DEFAULT_STAGE_TIMEOUT_MS, Plan, RunsOn, StagePlan, StepPlan,
};
use kiln_domain::state::{Build, Patch, StageState, Target, Transition, TransitionError};
use kiln_domain::status::ImageStatus;
use kiln_domain::{BuildId, Repo, StageName, Status};
pub mod secrets;

use kiln_store::{
    Claim, Commit, CommitOutcome, LogError, LogStore, OutMessage, Queue, QueueError, Received, StateStore,
    StoreError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Fixtures

/// A plan of two stages: `build` (steps `compile` 1, `package` 2) and `test`, which
/// `needs` build (steps `unit` 3, `lint` 4).
pub fn sample_plan() -> Plan {
    let stage = |name: &str, needs: &[&str], steps: &[(&str, u32)]| StagePlan {
        name: name.into(),
        needs: needs.iter().map(|n| StageName::new(*n)).collect(),
        runs_on: RunsOn::Lambda,
        timeout_ms: DEFAULT_STAGE_TIMEOUT_MS,
        env: Default::default(),
        steps: steps
            .iter()
            .map(|(n, number)| StepPlan {
                name: (*n).into(),
                number: *number,
                commands: vec![format!("echo {n}")],
                env: Default::default(),
                timeout_ms: None,
            })
            .collect(),
        services: Vec::new(),
        triggers: Vec::new(),
    };
    Plan {
        version: "1".to_string(),
        env: Default::default(),
        stages: vec![
            stage("build", &[], &[("compile", 1), ("package", 2)]),
            stage("test", &["build"], &[("unit", 3), ("lint", 4)]),
        ],
        images: Vec::new(),
        timeout_ms: DEFAULT_BUILD_TIMEOUT_MS,
    }
}

/// A new pending build of [`sample_plan`] in `acme/web`.
pub fn sample_build() -> Build {
    sample_build_in(&Repo::new("acme", "web"))
}

/// A new pending build of [`sample_plan`] in `repo`.
pub fn sample_build_in(repo: &Repo) -> Build {
    Build::new(BuildId::generate(), repo.clone(), sample_plan(), now_ms())
}

/// A repository no other check uses: `acme/web-<random>`.
pub fn unique_repo() -> Repo {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Repo::new("acme", format!("web-{}", &id[..12]))
}

/// An event of type `ty` for `build`, with a fresh id.
pub fn sample_event(build: &BuildId, ty: &str) -> CloudEvent {
    CloudEvent::new(ty, "/kiln/contract", build, serde_json::json!({ "n": 1 }))
}

fn stage(name: &str) -> Target {
    Target::Stage { stage: name.into() }
}

fn step(stage: &str, step: &str) -> Target {
    Target::Step { stage: stage.into(), step: step.into() }
}

fn tr(target: Target, from: Status, to: Status) -> Transition {
    Transition { target, from, to, patch: Patch { at_ms: now_ms(), ..Patch::default() } }
}

fn commit(event_id: &str, transitions: Vec<Transition>, events: Vec<CloudEvent>) -> Commit {
    Commit {
        event_id: event_id.to_string(),
        transitions,
        new_stages: Vec::new(),
        events,
        images: Vec::new(),
        arrivals: None,
    }
}

async fn created(s: &dyn StateStore, repo: &Repo) -> Build {
    let b = sample_build_in(repo);
    s.create_build(&b).await.expect("create_build");
    b
}

async fn get(s: &dyn StateStore, id: &BuildId) -> Build {
    s.get_build(id).await.expect("get_build").expect("the build exists")
}

async fn all_events(s: &dyn StateStore, id: &BuildId) -> Vec<StoredEvent> {
    s.events(id, 0, 10_000).await.expect("events")
}

// ---------------------------------------------------------------------------------------
// State store

/// Every state check, one after the other.
pub async fn state_suite(s: &dyn StateStore) {
    state_create_get(s).await;
    state_create_twice_already_exists(s).await;
    state_unknown_build(s).await;
    state_list_newest_first(s).await;
    state_commit_numbers_events(s).await;
    state_duplicate_event_is_noop(s).await;
    state_empty_event_id_is_not_deduplicated(s).await;
    state_refused_commit_changes_nothing(s).await;
    state_new_stages(s).await;
    state_concurrent_commits(s).await;
    state_mark_dispatched_once(s).await;
    state_claim_job(s).await;
    state_claim_finished(s).await;
    catalog_round_trip(s).await;
    catalog_stale_write_refused(s).await;
    catalog_duplicate_event_writes_once(s).await;
    catalog_concurrent_writes(s).await;
    catalog_list(s).await;
}

/// A created build reads back equal.
pub async fn state_create_get(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    assert_eq!(get(s, &b.id).await, b);
    assert!(all_events(s, &b.id).await.is_empty());
}

/// A second create with the same id is `AlreadyExists` and leaves the first alone.
pub async fn state_create_twice_already_exists(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let mut other = b.clone();
    other.reason = Some("imposter".to_string());
    let err = s.create_build(&other).await.expect_err("second create must fail");
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
    assert_eq!(get(s, &b.id).await, b);
}

/// Unknown builds: `get_build` is None, the rest is `NotFound`.
pub async fn state_unknown_build(s: &dyn StateStore) {
    let id = BuildId::generate();
    assert_eq!(s.get_build(&id).await.expect("get_build"), None);
    let nf = |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    nf(s.commit(&id, &commit("e", vec![], vec![])).await.map(drop));
    nf(s.events(&id, 0, 10).await.map(drop));
    nf(s.mark_dispatched(&id, &"build".into()).await.map(drop));
    nf(s.claim_job(&id, &"build".into(), "r1", Duration::from_secs(60)).await.map(drop));
    // An unknown stage of a known build.
    let b = created(s, &unique_repo()).await;
    nf(s.mark_dispatched(&b.id, &"nope".into()).await.map(drop));
    nf(s.claim_job(&b.id, &"nope".into(), "r1", Duration::from_secs(60)).await.map(drop));
}

/// `list_builds`: the repository's builds only, newest first, at most `limit`.
pub async fn state_list_newest_first(s: &dyn StateStore) {
    let repo = unique_repo();
    let mut ids = Vec::new();
    for i in 0..3u64 {
        let mut b = sample_build_in(&repo);
        b.created_ms += i; // ids and times both increase
        s.create_build(&b).await.expect("create_build");
        ids.push(b.id.clone());
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    created(s, &unique_repo()).await; // another repository
    let list = s.list_builds(&repo, 10).await.expect("list_builds");
    let got: Vec<BuildId> = list.iter().map(|b| b.id.clone()).collect();
    ids.reverse();
    assert_eq!(got, ids, "newest first");
    assert!(list.iter().all(|b| b.repo == repo && b.status == Status::Pending && b.finished_ms.is_none()));
    let two = s.list_builds(&repo, 2).await.expect("list_builds");
    assert_eq!(two.iter().map(|b| b.id.clone()).collect::<Vec<_>>(), ids[..2]);
    assert!(s.list_builds(&unique_repo(), 10).await.expect("list_builds").is_empty());
}

/// A commit applies its transitions and numbers its events 1, 2, 3 in order.
pub async fn state_commit_numbers_events(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let (e1, e2, e3) =
        (sample_event(&b.id, "t.one"), sample_event(&b.id, "t.two"), sample_event(&b.id, "t.three"));
    let c1 = commit(
        "ev-1",
        vec![
            tr(Target::Build, Status::Pending, Status::Running),
            tr(stage("build"), Status::Pending, Status::Running),
        ],
        vec![e1.clone(), e2.clone()],
    );
    assert_eq!(s.commit(&b.id, &c1).await.expect("commit"), CommitOutcome::Applied { first_seq: 1 });
    let mut t = tr(step("build", "compile"), Status::Pending, Status::Running);
    t.patch.at_ms = 1234;
    let c2 = commit("ev-2", vec![t], vec![e3.clone()]);
    assert_eq!(s.commit(&b.id, &c2).await.expect("commit"), CommitOutcome::Applied { first_seq: 3 });

    let now = get(s, &b.id).await;
    assert_eq!(now.status, Status::Running);
    assert_eq!(now.stage("build").map(|x| x.status), Some(Status::Running));
    assert_eq!(now.stage("test").map(|x| x.status), Some(Status::Pending));
    let compile = &now.stage("build").expect("stage").steps[0];
    assert_eq!((compile.status, compile.started_ms), (Status::Running, Some(1234)));

    let evs = all_events(s, &b.id).await;
    assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(evs.iter().map(|e| e.event.clone()).collect::<Vec<_>>(), vec![e1, e2.clone(), e3.clone()]);
    let page = s.events(&b.id, 1, 1).await.expect("events");
    assert_eq!(page, vec![StoredEvent { seq: 2, event: e2 }]);
    assert_eq!(s.events(&b.id, 2, 10).await.expect("events"), vec![StoredEvent { seq: 3, event: e3 }]);
    assert!(s.events(&b.id, 3, 10).await.expect("events").is_empty());
    assert!(s.events(&b.id, 99, 10).await.expect("events").is_empty());
    // A commit without events still applies.
    let c3 = commit("ev-3", vec![tr(step("build", "compile"), Status::Running, Status::Succeeded)], vec![]);
    assert!(matches!(s.commit(&b.id, &c3).await.expect("commit"), CommitOutcome::Applied { .. }));
    assert_eq!(all_events(s, &b.id).await.len(), 3);
}

/// Applying the same event id again changes nothing and reports `Duplicate`.
pub async fn state_duplicate_event_is_noop(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let c = commit(
        "dup-1",
        vec![tr(Target::Build, Status::Pending, Status::Running)],
        vec![sample_event(&b.id, "t")],
    );
    assert_eq!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Applied { first_seq: 1 });
    let before = get(s, &b.id).await;
    assert_eq!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Duplicate);
    // Same id, different content (a redelivered event is the same event): still a no-op.
    let other = commit(
        "dup-1",
        vec![tr(Target::Build, Status::Running, Status::Failed)],
        vec![sample_event(&b.id, "t")],
    );
    assert_eq!(s.commit(&b.id, &other).await.expect("commit"), CommitOutcome::Duplicate);
    assert_eq!(get(s, &b.id).await, before);
    assert_eq!(all_events(s, &b.id).await.len(), 1);
}

/// Commits with an empty `event_id` are not recorded, so they are never `Duplicate`.
pub async fn state_empty_event_id_is_not_deduplicated(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    for first_seq in [1, 2] {
        let c = commit("", vec![], vec![sample_event(&b.id, "t")]);
        assert_eq!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Applied { first_seq });
    }
}

/// A stale or illegal transition refuses the whole commit: no transition, no new stage,
/// no event applied, and its event id is not recorded.
pub async fn state_refused_commit_changes_nothing(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let new_stage = StageState::new("extra#1".into(), &sample_plan().stages[0], None);
    let bad = |last: Transition| Commit {
        event_id: "ev-x".to_string(),
        transitions: vec![
            tr(Target::Build, Status::Pending, Status::Running),
            tr(stage("build"), Status::Pending, Status::Running),
            last,
        ],
        new_stages: vec![new_stage.clone()],
        events: vec![sample_event(&b.id, "t")],
        images: Vec::new(),
        arrivals: None,
    };
    // Stale: the step is pending, not running.
    let err = s.commit(&b.id, &bad(tr(step("build", "compile"), Status::Running, Status::Succeeded))).await;
    assert!(matches!(err, Err(StoreError::Conflict(TransitionError::Stale { .. }))), "{err:?}");
    // Illegal: pending cannot become succeeded.
    let err = s.commit(&b.id, &bad(tr(step("build", "compile"), Status::Pending, Status::Succeeded))).await;
    assert!(matches!(err, Err(StoreError::Conflict(TransitionError::Illegal { .. }))), "{err:?}");
    // Missing: no such step.
    let err = s.commit(&b.id, &bad(tr(step("build", "nope"), Status::Pending, Status::Running))).await;
    assert!(matches!(err, Err(StoreError::Conflict(TransitionError::Missing(_)))), "{err:?}");
    assert_eq!(get(s, &b.id).await, b, "nothing of a refused commit is applied");
    assert!(all_events(s, &b.id).await.is_empty());
    // The event id was not recorded: a valid commit with it applies.
    let good = bad(tr(step("build", "compile"), Status::Pending, Status::Running));
    assert_eq!(s.commit(&b.id, &good).await.expect("commit"), CommitOutcome::Applied { first_seq: 1 });
    // The same transitions again are stale now (under another event id).
    let mut again = good.clone();
    again.event_id = "ev-y".to_string();
    again.new_stages.clear();
    let err = s.commit(&b.id, &again).await;
    assert!(matches!(err, Err(StoreError::Conflict(TransitionError::Stale { .. }))), "{err:?}");
    assert_eq!(all_events(s, &b.id).await.len(), 1);
}

/// New stage instances are added; a name that exists is `AlreadyExists` and the commit
/// changes nothing.
pub async fn state_new_stages(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let plan = sample_plan();
    let inst = StageState::new("test#1".into(), &plan.stages[1], Some(sample_event(&b.id, "coin")));
    let c = Commit {
        event_id: "ns-1".to_string(),
        transitions: vec![],
        new_stages: vec![inst.clone()],
        events: vec![sample_event(&b.id, "t")],
        images: Vec::new(),
        arrivals: None,
    };
    assert!(matches!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Applied { .. }));
    let now = get(s, &b.id).await;
    assert_eq!(now.stages.len(), 3);
    assert_eq!(now.stage("test#1"), Some(&inst));
    // A new instance can be moved on in the same commit; fan-in arrivals are replaced whole.
    let mut arrivals = kiln_domain::state::Arrivals::new();
    arrivals.entry("test/0".into()).or_default().insert("a".into(), sample_event(&b.id, "a"));
    let c = Commit {
        event_id: "ns-2".to_string(),
        transitions: vec![tr(stage("test#2"), Status::Pending, Status::Stopped)],
        new_stages: vec![StageState::new("test#2".into(), &plan.stages[1], None)],
        events: vec![sample_event(&b.id, "t")],
        images: Vec::new(),
        arrivals: Some(arrivals.clone()),
    };
    assert!(matches!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Applied { .. }));
    let now = get(s, &b.id).await;
    assert_eq!(now.stage("test#2").map(|s| s.status), Some(Status::Stopped));
    assert_eq!(now.arrivals, arrivals);
    for name in ["test#1", "build"] {
        let c = Commit {
            event_id: format!("ns-{name}"),
            transitions: vec![tr(Target::Build, Status::Pending, Status::Running)],
            new_stages: vec![StageState::new(name.into(), &plan.stages[1], None)],
            events: vec![sample_event(&b.id, "t")],
            images: Vec::new(),
            arrivals: None,
        };
        let err = s.commit(&b.id, &c).await;
        assert!(matches!(err, Err(StoreError::AlreadyExists(_))), "{name}: {err:?}");
    }
    assert_eq!(get(s, &b.id).await, now);
    assert_eq!(all_events(s, &b.id).await.len(), 2, "the two applied commits' events only");
}

/// Concurrent commits to one build are serialized: none is lost, sequence numbers are
/// unique and gapless, and of two commits with the same event id exactly one applies.
pub async fn state_concurrent_commits(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let c = |id: &str| commit(id, vec![], vec![sample_event(&b.id, "t"), sample_event(&b.id, "t")]);
    let (c1, c2, c3, c4) = (c("c1"), c("c2"), c("c3"), c("c4"));
    let (r1, r2, r3, r4, r5) = tokio::join!(
        s.commit(&b.id, &c1),
        s.commit(&b.id, &c2),
        s.commit(&b.id, &c3),
        s.commit(&b.id, &c4),
        s.commit(&b.id, &c4),
    );
    let outcomes = [r1, r2, r3, r4, r5].map(|r| r.expect("commit"));
    let mut firsts: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| match o {
            CommitOutcome::Applied { first_seq } => Some(*first_seq),
            CommitOutcome::Duplicate => None,
        })
        .collect();
    firsts.sort_unstable();
    assert_eq!(firsts, vec![1, 3, 5, 7], "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == CommitOutcome::Duplicate).count(), 1);
    let seqs: Vec<u64> = all_events(s, &b.id).await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());

    // Concurrent transitions from the same state: exactly one wins.
    let t = |id: &str| commit(id, vec![tr(Target::Build, Status::Pending, Status::Running)], vec![]);
    let (t1, t2) = (t("t1"), t("t2"));
    let (r1, r2) = tokio::join!(s.commit(&b.id, &t1), s.commit(&b.id, &t2));
    assert!(r1.is_ok() != r2.is_ok(), "{r1:?} {r2:?}");
}

/// `mark_dispatched` is true once, then false; the flag is stored.
pub async fn state_mark_dispatched_once(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let name = StageName::new("build");
    assert!(s.mark_dispatched(&b.id, &name).await.expect("mark_dispatched"));
    assert!(!s.mark_dispatched(&b.id, &name).await.expect("mark_dispatched"));
    let now = get(s, &b.id).await;
    assert!(now.stage("build").expect("stage").dispatched);
    assert!(!now.stage("test").expect("stage").dispatched);
    let test = StageName::new("test");
    let (a, b2) = tokio::join!(s.mark_dispatched(&b.id, &test), s.mark_dispatched(&b.id, &test));
    assert!(a.expect("mark_dispatched") != b2.expect("mark_dispatched"), "exactly one wins");
}

/// Claims: the first runner gets attempt 1, another runner is `Busy` while the lease is
/// live, the holder renews with the same attempt, and after the lease runs out another
/// runner takes attempt 2.
pub async fn state_claim_job(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let name = StageName::new("build");
    let long = Duration::from_secs(600);
    assert_eq!(s.claim_job(&b.id, &name, "r1", long).await.expect("claim"), Claim::Claimed { attempt: 1 });
    let lease =
        get(s, &b.id).await.stage("build").and_then(|st| st.lease.clone()).expect("a lease is recorded");
    assert_eq!((lease.runner.as_str(), lease.attempt), ("r1", 1));
    assert!(lease.until_ms >= now_ms() + 500_000);
    assert_eq!(s.claim_job(&b.id, &name, "r2", long).await.expect("claim"), Claim::Busy);
    // Renewal by the holder: same attempt.
    let short = Duration::from_millis(150);
    assert_eq!(s.claim_job(&b.id, &name, "r1", short).await.expect("claim"), Claim::Claimed { attempt: 1 });
    assert_eq!(s.claim_job(&b.id, &name, "r2", long).await.expect("claim"), Claim::Busy);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Expired: the next runner gets the next attempt, and holds it.
    assert_eq!(s.claim_job(&b.id, &name, "r2", long).await.expect("claim"), Claim::Claimed { attempt: 2 });
    assert_eq!(s.claim_job(&b.id, &name, "r1", long).await.expect("claim"), Claim::Busy);
    assert_eq!(s.claim_job(&b.id, &name, "r2", long).await.expect("claim"), Claim::Claimed { attempt: 2 });
    let lease = get(s, &b.id).await.stage("build").and_then(|st| st.lease.clone()).expect("lease");
    assert_eq!((lease.runner.as_str(), lease.attempt), ("r2", 2));
    // Another stage has its own lease.
    assert_eq!(
        s.claim_job(&b.id, &"test".into(), "r3", long).await.expect("claim"),
        Claim::Claimed { attempt: 1 }
    );
}

/// A stage that has ended, or a stage of a build that has ended, is `Finished`.
pub async fn state_claim_finished(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let long = Duration::from_secs(600);
    let c = commit("f-1", vec![tr(stage("test"), Status::Pending, Status::Skipped)], vec![]);
    s.commit(&b.id, &c).await.expect("commit");
    assert_eq!(s.claim_job(&b.id, &"test".into(), "r1", long).await.expect("claim"), Claim::Finished);
    assert_eq!(
        s.claim_job(&b.id, &"build".into(), "r1", long).await.expect("claim"),
        Claim::Claimed { attempt: 1 }
    );
    let c = commit("f-2", vec![tr(Target::Build, Status::Pending, Status::Canceled)], vec![]);
    s.commit(&b.id, &c).await.expect("commit");
    // The build stage is still pending, but the build is over.
    assert_eq!(s.claim_job(&b.id, &"build".into(), "r1", long).await.expect("claim"), Claim::Finished);
}

// ---------------------------------------------------------------------------------------
// Image catalog (in the state store; written only through commits)

/// An image name no other check uses: `img-<random>`.
pub fn unique_image() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("img-{}", &id[..12])
}

/// A record of `image` for `provider` as `build` left it, at `version`.
pub fn image_record(
    image: &str,
    provider: &str,
    build: &BuildId,
    status: ImageStatus,
    version: u64,
) -> ImageRecord {
    ImageRecord {
        image: image.to_string(),
        provider: provider.to_string(),
        status,
        percent: if status == ImageStatus::Complete { 100 } else { 40 },
        error: (status == ImageStatus::Failed).then(|| "quota exceeded".to_string()),
        build: build.clone(),
        uri: (status == ImageStatus::Complete).then(|| format!("{provider}://{image}")),
        updated_ms: now_ms(),
        version,
    }
}

/// A write of `record` over the version before it.
pub fn image_write(record: &ImageRecord) -> CatalogWrite {
    CatalogWrite { expected_version: record.version - 1, record: record.clone() }
}

fn image_commit(event_id: &str, build: &BuildId, writes: Vec<CatalogWrite>) -> Commit {
    Commit {
        images: writes,
        ..commit(event_id, vec![], vec![sample_event(build, "dev.kiln.image.progress")])
    }
}

/// Records written by commits read back equal, per image sorted by provider; every
/// version is in the history, sorted by build, provider, version. Unknown images are empty.
pub async fn catalog_round_trip(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let img = unique_image();
    let gcp = image_record(&img, "gcp", &b.id, ImageStatus::Queued, 1);
    let aws = image_record(&img, "aws", &b.id, ImageStatus::Queued, 1);
    let c = image_commit("img-1", &b.id, vec![image_write(&gcp), image_write(&aws)]);
    assert_eq!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Applied { first_seq: 1 });
    assert_eq!(s.get_image(&img).await.expect("get_image"), vec![aws.clone(), gcp.clone()]);
    let aws2 = image_record(&img, "aws", &b.id, ImageStatus::Building, 2);
    let aws3 = image_record(&img, "aws", &b.id, ImageStatus::Complete, 3);
    for (i, r) in [&aws2, &aws3].into_iter().enumerate() {
        let c = image_commit(&format!("img-{}", i + 2), &b.id, vec![image_write(r)]);
        assert!(matches!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Applied { .. }));
    }
    assert_eq!(s.get_image(&img).await.expect("get_image"), vec![aws3.clone(), gcp.clone()]);
    // A newer build's record, and the order of the history.
    let b2 = created(s, &unique_repo()).await;
    let aws4 = image_record(&img, "aws", &b2.id, ImageStatus::Queued, 4);
    s.commit(&b2.id, &image_commit("img-4", &b2.id, vec![image_write(&aws4)])).await.expect("commit");
    assert_eq!(
        s.image_history(&img).await.expect("history"),
        vec![aws, aws2, aws3, gcp.clone(), aws4.clone()],
        "by build, provider, version"
    );
    assert_eq!(s.get_image(&img).await.expect("get_image"), vec![aws4, gcp]);
    let unknown = unique_image();
    assert!(s.get_image(&unknown).await.expect("get_image").is_empty());
    assert!(s.image_history(&unknown).await.expect("history").is_empty());
}

/// A catalog write whose record is not at the version it expects refuses the whole
/// commit (`Conflict`, `StaleImage`): no record, history, transition or event changes,
/// and its event id stays unused. A stale transition refuses the commit's catalog writes.
pub async fn catalog_stale_write_refused(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let img = unique_image();
    let v1 = image_record(&img, "aws", &b.id, ImageStatus::Queued, 1);
    s.commit(&b.id, &image_commit("st-1", &b.id, vec![image_write(&v1)])).await.expect("commit");
    let before =
        (get(s, &b.id).await, all_events(s, &b.id).await, s.image_history(&img).await.expect("history"));
    let other = image_record(&img, "gcp", &b.id, ImageStatus::Queued, 1);
    for stale in [
        // Written as if there were no record yet.
        CatalogWrite {
            expected_version: 0,
            record: image_record(&img, "aws", &b.id, ImageStatus::Building, 1),
        },
        // Written over a version never stored.
        CatalogWrite {
            expected_version: 5,
            record: image_record(&img, "aws", &b.id, ImageStatus::Building, 6),
        },
    ] {
        let mut c = image_commit("st-2", &b.id, vec![image_write(&other), stale]);
        c.transitions = vec![tr(Target::Build, Status::Pending, Status::Running)];
        let err = s.commit(&b.id, &c).await;
        assert!(matches!(err, Err(StoreError::Conflict(TransitionError::StaleImage { .. }))), "{err:?}");
    }
    // A stale transition: the catalog write is not applied either.
    let mut c = image_commit("st-2", &b.id, vec![image_write(&other)]);
    c.transitions = vec![tr(Target::Build, Status::Running, Status::Succeeded)];
    let err = s.commit(&b.id, &c).await;
    assert!(matches!(err, Err(StoreError::Conflict(TransitionError::Stale { .. }))), "{err:?}");
    let after =
        (get(s, &b.id).await, all_events(s, &b.id).await, s.image_history(&img).await.expect("history"));
    assert_eq!(after, before, "nothing of a refused commit is applied");
    assert_eq!(s.get_image(&img).await.expect("get_image"), vec![v1.clone()]);
    // The event id was not recorded.
    let v2 = image_record(&img, "aws", &b.id, ImageStatus::Building, 2);
    let c = image_commit("st-2", &b.id, vec![image_write(&v2)]);
    assert!(matches!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Applied { .. }));
    assert_eq!(s.get_image(&img).await.expect("get_image"), vec![v2]);
}

/// A commit with catalog writes applied again (same event id) is a duplicate: the
/// records and the history do not change.
pub async fn catalog_duplicate_event_writes_once(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let img = unique_image();
    let v1 = image_record(&img, "aws", &b.id, ImageStatus::Queued, 1);
    let c = image_commit("dup-1", &b.id, vec![image_write(&v1)]);
    assert!(matches!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Applied { .. }));
    assert_eq!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Duplicate);
    assert_eq!(s.get_image(&img).await.expect("get_image"), vec![v1.clone()]);
    assert_eq!(s.image_history(&img).await.expect("history"), vec![v1]);
}

/// Two builds writing the same record from the same version at once: one applies, the
/// other is a `Conflict`.
pub async fn catalog_concurrent_writes(s: &dyn StateStore) {
    let img = unique_image();
    let repo = unique_repo();
    let (b1, b2) = (created(s, &repo).await, created(s, &repo).await);
    let w1 = image_write(&image_record(&img, "aws", &b1.id, ImageStatus::Queued, 1));
    let w2 = image_write(&image_record(&img, "aws", &b2.id, ImageStatus::Queued, 1));
    let (c1, c2) =
        (image_commit("cc-1", &b1.id, vec![w1.clone()]), image_commit("cc-2", &b2.id, vec![w2.clone()]));
    let (r1, r2) = tokio::join!(s.commit(&b1.id, &c1), s.commit(&b2.id, &c2));
    let applied = [&r1, &r2].iter().filter(|r| matches!(r, Ok(CommitOutcome::Applied { .. }))).count();
    let refused = [&r1, &r2]
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict(TransitionError::StaleImage { .. }))))
        .count();
    assert_eq!((applied, refused), (1, 1), "{r1:?} {r2:?}");
    let winner = if r1.is_ok() { w1 } else { w2 };
    assert_eq!(s.get_image(&img).await.expect("get_image"), vec![winner.record.clone()]);
    assert_eq!(s.image_history(&img).await.expect("history"), vec![winner.record]);
}

/// The list holds every record, sorted by image, then provider.
pub async fn catalog_list(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let (i1, i2) = (unique_image(), unique_image());
    let mut mine = vec![
        image_record(&i2, "gcp", &b.id, ImageStatus::Failed, 1),
        image_record(&i1, "azure", &b.id, ImageStatus::Complete, 1),
        image_record(&i2, "aws", &b.id, ImageStatus::Building, 1),
    ];
    let c = image_commit("ls-1", &b.id, mine.iter().map(image_write).collect());
    s.commit(&b.id, &c).await.expect("commit");
    let list = s.list_images().await.expect("list_images");
    let keys: Vec<(&str, &str)> = list.iter().map(|r| (r.image.as_str(), r.provider.as_str())).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted by image, then provider");
    let listed: Vec<ImageRecord> = list.into_iter().filter(|r| r.image == i1 || r.image == i2).collect();
    mine.sort_by(|a, b| (&a.image, &a.provider).cmp(&(&b.image, &b.provider)));
    assert_eq!(listed, mine);
}

// ---------------------------------------------------------------------------------------
// Log store

/// Every log check, one after the other.
pub async fn log_suite(l: &dyn LogStore) {
    logs_put_read_round_trip(l).await;
    logs_retry_is_idempotent(l).await;
    logs_conflict(l).await;
    logs_gap(l).await;
    logs_read_from_offset(l).await;
    logs_unknown_stream_not_found(l).await;
    logs_complete(l).await;
    logs_complete_empty_stream(l).await;
    logs_list_order(l).await;
    logs_init_append_batches(l).await;
    logs_large_stream(l).await;
    logs_binary_bytes(l).await;
}

/// A step log stream (`step/<n>/build/compile/1`).
pub fn step_stream(number: u32) -> LogStream {
    LogStream::Step { stage: "build".into(), step: "compile".into(), number, attempt: 1 }
}

/// Reads a whole stream, however many reads it takes.
pub async fn read_all(l: &dyn LogStore, build: &BuildId, stream: &LogStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let r = l.read(build, stream, out.len() as u64, 1 << 20).await.expect("read");
        assert_eq!(r.next_offset, (out.len() + r.bytes.len()) as u64);
        if r.bytes.is_empty() {
            return (out, r.complete);
        }
        out.extend_from_slice(&r.bytes);
    }
}

/// Batches written at increasing offsets read back as one stream.
pub async fn logs_put_read_round_trip(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    l.put_chunk(&b, &s, 0, b"hello\n").await.expect("put");
    l.put_chunk(&b, &s, 6, b"world\n").await.expect("put");
    let r = l.read(&b, &s, 0, 1 << 20).await.expect("read");
    assert_eq!(
        r,
        kiln_store::LogRead { bytes: b"hello\nworld\n".to_vec(), next_offset: 12, complete: false }
    );
    let info = l.list(&b).await.expect("list");
    assert_eq!(info.len(), 1);
    assert_eq!((info[0].stream.clone(), info[0].len, info[0].complete), (s, 12, false));
}

/// Resending a batch (same bytes, same offset) is a no-op, the last one included.
pub async fn logs_retry_is_idempotent(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    l.put_chunk(&b, &s, 0, b"one\n").await.expect("put");
    l.put_chunk(&b, &s, 4, b"two\n").await.expect("put");
    l.put_chunk(&b, &s, 0, b"one\n").await.expect("retry of the first batch");
    l.put_chunk(&b, &s, 4, b"two\n").await.expect("retry of the last batch");
    l.put_chunk(&b, &s, 8, b"").await.expect("an empty batch at the end");
    l.put_chunk(&b, &s, 8, b"three\n").await.expect("put");
    assert_eq!(read_all(l, &b, &s).await, (b"one\ntwo\nthree\n".to_vec(), false));
}

/// Different bytes where bytes are stored: `Conflict`, and nothing changes.
pub async fn logs_conflict(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    l.put_chunk(&b, &s, 0, b"one\n").await.expect("put");
    l.put_chunk(&b, &s, 4, b"two\n").await.expect("put");
    for (offset, bytes) in [(0u64, &b"uno\n"[..]), (4, b"TWO\n")] {
        let err = l.put_chunk(&b, &s, offset, bytes).await;
        assert!(matches!(err, Err(LogError::Conflict { offset: o, .. }) if o == offset), "{err:?}");
    }
    assert_eq!(read_all(l, &b, &s).await.0, b"one\ntwo\n");
}

/// A write past the end is a `Gap` that reports the length.
pub async fn logs_gap(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    let err = l.put_chunk(&b, &s, 5, b"late").await;
    assert!(matches!(err, Err(LogError::Gap { offset: 5, len: 0, .. })), "{err:?}");
    l.put_chunk(&b, &s, 0, b"0123").await.expect("put");
    let err = l.put_chunk(&b, &s, 10, b"late").await;
    assert!(matches!(err, Err(LogError::Gap { offset: 10, len: 4, .. })), "{err:?}");
    assert_eq!(read_all(l, &b, &s).await.0, b"0123");
}

/// Reads start at any offset and return at most `max` bytes; from the end (or past it)
/// they return nothing, with `next_offset` the length.
pub async fn logs_read_from_offset(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    l.put_chunk(&b, &s, 0, b"0123456789").await.expect("put");
    let r = l.read(&b, &s, 3, 4).await.expect("read");
    assert_eq!((r.bytes.as_slice(), r.next_offset, r.complete), (&b"3456"[..], 7, false));
    let r = l.read(&b, &s, 7, 100).await.expect("read");
    assert_eq!((r.bytes.as_slice(), r.next_offset), (&b"789"[..], 10));
    for offset in [10, 25] {
        let r = l.read(&b, &s, offset, 100).await.expect("read");
        assert_eq!((r.bytes.len(), r.next_offset, r.complete), (0, 10, false), "read at {offset}");
    }
    // Tailing: new bytes show up from where the last read ended.
    l.put_chunk(&b, &s, 10, b"ab").await.expect("put");
    let r = l.read(&b, &s, 10, 100).await.expect("read");
    assert_eq!((r.bytes.as_slice(), r.next_offset), (&b"ab"[..], 12));
}

/// Reading a stream nobody wrote is `NotFound`.
pub async fn logs_unknown_stream_not_found(l: &dyn LogStore) {
    let b = BuildId::generate();
    let err = l.read(&b, &LogStream::Init, 0, 100).await;
    assert!(matches!(err, Err(LogError::NotFound(_))), "{err:?}");
    l.put_chunk(&b, &step_stream(1), 0, b"x").await.expect("put");
    let err = l.read(&b, &step_stream(2), 0, 100).await;
    assert!(matches!(err, Err(LogError::NotFound(_))), "{err:?}");
    assert!(l.list(&BuildId::generate()).await.expect("list").is_empty());
}

/// After `complete`: new bytes are refused, a retry of stored bytes is still fine, reads
/// say `complete` once they reach the end, and `complete` again is a no-op.
pub async fn logs_complete(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    l.put_chunk(&b, &s, 0, b"first\n").await.expect("put");
    l.put_chunk(&b, &s, 6, b"last\n").await.expect("put");
    l.complete(&b, &s).await.expect("complete");
    l.complete(&b, &s).await.expect("complete is idempotent");
    let err = l.put_chunk(&b, &s, 11, b"more\n").await;
    assert!(matches!(err, Err(LogError::Complete { .. })), "{err:?}");
    let err = l.put_chunk(&b, &s, 6, b"LAST\n").await;
    assert!(matches!(err, Err(LogError::Complete { .. }) | Err(LogError::Conflict { .. })), "{err:?}");
    l.put_chunk(&b, &s, 6, b"last\n").await.expect("a retry of the last batch");
    l.put_chunk(&b, &s, 0, b"first\n").await.expect("a retry of the first batch");
    let r = l.read(&b, &s, 0, 3).await.expect("read");
    assert_eq!((r.bytes.as_slice(), r.next_offset, r.complete), (&b"fir"[..], 3, false));
    let r = l.read(&b, &s, 3, 100).await.expect("read");
    assert_eq!((r.bytes.as_slice(), r.next_offset, r.complete), (&b"st\nlast\n"[..], 11, true));
    let r = l.read(&b, &s, 11, 100).await.expect("read");
    assert_eq!((r.bytes.len(), r.next_offset, r.complete), (0, 11, true));
    assert_eq!(read_all(l, &b, &s).await, (b"first\nlast\n".to_vec(), true));
    let err = l.append(&b, &s, "late-batch", b"more\n").await;
    assert!(matches!(err, Err(LogError::Complete { .. })), "{err:?}");
    let info = l.list(&b).await.expect("list");
    assert_eq!((info[0].len, info[0].complete), (11, true));
}

/// Completing a stream nobody wrote makes an empty, complete stream (a step that
/// printed nothing).
pub async fn logs_complete_empty_stream(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(3));
    l.complete(&b, &s).await.expect("complete");
    let r = l.read(&b, &s, 0, 100).await.expect("read");
    assert_eq!(r, kiln_store::LogRead { bytes: Vec::new(), next_offset: 0, complete: true });
    let info = l.list(&b).await.expect("list");
    assert_eq!(info.len(), 1);
    assert_eq!((info[0].stream.clone(), info[0].len, info[0].complete), (s, 0, true));
}

/// `list`: init first, then steps by number (10 after 9), then services.
pub async fn logs_list_order(l: &dyn LogStore) {
    let b = BuildId::generate();
    let svc = |n: u32| LogStream::Service {
        stage: "test".into(),
        service: format!("db{n}").as_str().into(),
        number: n,
        attempt: 1,
    };
    let st = |stage: &str, name: &str, n: u32, attempt: u32| LogStream::Step {
        stage: stage.into(),
        step: name.into(),
        number: n,
        attempt,
    };
    let expected = vec![
        LogStream::Init,
        st("build", "compile", 2, 1),
        st("build", "package", 9, 1),
        st("test", "unit", 10, 1),
        st("test", "unit", 10, 2),
        svc(1),
        svc(2),
    ];
    // Written in a scrambled order.
    for i in [6usize, 3, 0, 5, 2, 4, 1] {
        l.put_chunk(&b, &expected[i], 0, format!("stream {i}\n").as_bytes()).await.expect("put");
    }
    l.complete(&b, &expected[1]).await.expect("complete");
    let info = l.list(&b).await.expect("list");
    assert_eq!(info.iter().map(|i| i.stream.clone()).collect::<Vec<_>>(), expected);
    assert!(info.iter().all(|i| i.len == 9));
    assert_eq!(
        info.iter().map(|i| i.complete).collect::<Vec<_>>(),
        vec![false, true, false, false, false, false, false]
    );
}

/// The init log takes batches from several writers: each batch id is stored once, at
/// the offset `append` returned, whole.
pub async fn logs_init_append_batches(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), LogStream::Init);
    let o1 = l.append(&b, &s, "runner-a:1", b"a one\n").await.expect("append");
    assert_eq!(o1, 0);
    let o2 = l.append(&b, &s, "runner-b:1", b"b one\n").await.expect("append");
    assert_eq!(o2, 6);
    assert_eq!(
        l.append(&b, &s, "runner-a:1", b"a one\n").await.expect("append"),
        o1,
        "a resend appends once"
    );
    // Two writers at once.
    let (ra, rb) = tokio::join!(
        l.append(&b, &s, "runner-a:2", b"a two: a longer line\n"),
        l.append(&b, &s, "runner-b:2", b"b two\n"),
    );
    let (oa, ob) = (ra.expect("append"), rb.expect("append"));
    assert_ne!(oa, ob);
    let (all, complete) = read_all(l, &b, &s).await;
    assert!(!complete);
    assert_eq!(all.len(), 12 + 21 + 6);
    assert_eq!(&all[..12], b"a one\nb one\n");
    assert_eq!(&all[oa as usize..oa as usize + 21], b"a two: a longer line\n");
    assert_eq!(&all[ob as usize..ob as usize + 6], b"b two\n");
    assert_eq!(l.append(&b, &s, "runner-b:2", b"b two\n").await.expect("append"), ob);
    assert_eq!(read_all(l, &b, &s).await.0.len(), all.len());
}

/// Deterministic bytes that are not text.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A few MB written in 256 KiB batches read back byte-exact.
pub async fn logs_large_stream(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    let data = noise(5 * 1024 * 1024 + 123, 42);
    let chunk = kiln_domain::logs::MAX_BATCH_BYTES;
    for (i, part) in data.chunks(chunk).enumerate() {
        l.put_chunk(&b, &s, (i * chunk) as u64, part).await.expect("put");
    }
    // A retry in the middle is still recognised.
    l.put_chunk(&b, &s, (3 * chunk) as u64, &data[3 * chunk..4 * chunk]).await.expect("retry");
    l.complete(&b, &s).await.expect("complete");
    let (all, complete) = read_all(l, &b, &s).await;
    assert!(complete);
    assert!(all == data, "bytes differ");
    let r = l.read(&b, &s, 4_000_000, 1000).await.expect("read");
    assert_eq!(r.bytes, data[4_000_000..4_001_000]);
}

/// Logs are bytes: invalid UTF-8 and NULs round trip.
pub async fn logs_binary_bytes(l: &dyn LogStore) {
    let (b, s) = (BuildId::generate(), step_stream(1));
    let bytes = [0xff, 0xfe, 0x00, b'a', 0xc3, 0x28, 0xe2, 0x82, b'\n', 0xf0, 0x9f];
    l.put_chunk(&b, &s, 0, &bytes).await.expect("put");
    l.put_chunk(&b, &s, 0, &bytes).await.expect("retry");
    let o = l.append(&b, &LogStream::Init, "x", &bytes).await.expect("append");
    assert_eq!(o, 0);
    assert_eq!(read_all(l, &b, &s).await.0, bytes);
    assert_eq!(read_all(l, &b, &LogStream::Init).await.0, bytes);
}

// ---------------------------------------------------------------------------------------
// Queues

/// Makes fresh, empty queues for the queue checks (each check makes its own).
#[async_trait]
pub trait QueueFactory: Send + Sync {
    /// A standard queue whose visibility timeout is `visibility`.
    async fn standard(&self, visibility: Duration) -> Arc<dyn Queue>;
    /// A FIFO queue whose visibility timeout is `visibility`.
    async fn fifo(&self, visibility: Duration) -> Arc<dyn Queue>;
}

/// Every queue check, one after the other.
pub async fn queue_suite(f: &dyn QueueFactory) {
    queue_send_receive_delete(f).await;
    queue_long_poll_wakes_on_send(f).await;
    queue_redelivery_after_visibility_timeout(f).await;
    queue_extend(f).await;
    queue_fifo_order_one_in_flight_per_group(f).await;
    queue_fifo_dedup(f).await;
}

/// Receives until `n` messages arrived or `within` passed.
pub async fn receive_n(q: &dyn Queue, n: usize, within: Duration) -> Vec<Received> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let got = q.receive(n - out.len(), left.min(Duration::from_secs(5))).await.expect("receive");
        out.extend(got);
    }
    out
}

fn bodies(r: &[Received]) -> Vec<&str> {
    let mut v: Vec<&str> = r.iter().map(|m| m.body.as_str()).collect();
    v.sort_unstable();
    v
}

/// Messages are received once each (receive count 1) and, once deleted, never again.
pub async fn queue_send_receive_delete(f: &dyn QueueFactory) {
    let q = f.standard(Duration::from_secs(1)).await;
    for body in ["a", "b", "c"] {
        q.send(OutMessage::new(body)).await.expect("send");
    }
    let got = receive_n(&*q, 3, Duration::from_secs(10)).await;
    assert_eq!(bodies(&got), vec!["a", "b", "c"]);
    assert!(got.iter().all(|m| m.receive_count == 1), "{got:?}");
    for m in &got {
        q.delete(&m.receipt).await.expect("delete");
    }
    // Well past the visibility timeout: nothing comes back.
    let again = q.receive(10, Duration::from_secs(3)).await.expect("receive");
    assert!(again.is_empty(), "{again:?}");
    let err = q.delete("not-a-receipt").await;
    assert!(matches!(err, Err(QueueError::BadReceipt) | Err(QueueError::Backend(_))), "{err:?}");
}

/// A receive that is waiting returns as soon as a message is sent.
pub async fn queue_long_poll_wakes_on_send(f: &dyn QueueFactory) {
    let q = f.standard(Duration::from_secs(5)).await;
    let start = Instant::now();
    let (got, sent) = tokio::join!(q.receive(1, Duration::from_secs(10)), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        q.send(OutMessage::new("late")).await
    });
    sent.expect("send");
    let got = got.expect("receive");
    let elapsed = start.elapsed();
    assert_eq!(bodies(&got), vec!["late"]);
    assert!(elapsed < Duration::from_secs(5), "long poll took {elapsed:?}");
    q.delete(&got[0].receipt).await.expect("delete");
}

/// A message received and not deleted comes back after the visibility timeout, with
/// receive count 2 and a new receipt.
pub async fn queue_redelivery_after_visibility_timeout(f: &dyn QueueFactory) {
    let q = f.standard(Duration::from_secs(1)).await;
    q.send(OutMessage::new("again")).await.expect("send");
    let first = receive_n(&*q, 1, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1);
    let t0 = Instant::now();
    let second = receive_n(&*q, 1, Duration::from_secs(10)).await;
    assert_eq!(second.len(), 1, "redelivered");
    assert!(t0.elapsed() >= Duration::from_millis(700), "redelivered after {:?}", t0.elapsed());
    assert_eq!((second[0].body.as_str(), second[0].receive_count), ("again", 2));
    assert_ne!(second[0].receipt, first[0].receipt);
    q.delete(&second[0].receipt).await.expect("delete with the new receipt");
    assert!(q.receive(10, Duration::from_secs(2)).await.expect("receive").is_empty());
}

/// `extend` keeps a message hidden past its visibility timeout; `extend` to 0 makes it
/// visible at once.
pub async fn queue_extend(f: &dyn QueueFactory) {
    let q = f.standard(Duration::from_secs(1)).await;
    q.send(OutMessage::new("slow")).await.expect("send");
    let m = receive_n(&*q, 1, Duration::from_secs(10)).await.pop().expect("a message");
    q.extend(&m.receipt, Duration::from_secs(6)).await.expect("extend");
    let none = q.receive(10, Duration::from_secs(2)).await.expect("receive");
    assert!(none.is_empty(), "still hidden: {none:?}");
    q.extend(&m.receipt, Duration::ZERO).await.expect("extend to 0");
    let back = receive_n(&*q, 1, Duration::from_secs(3)).await;
    assert_eq!(back.len(), 1, "visible again");
    assert_eq!((back[0].body.as_str(), back[0].receive_count), ("slow", 2));
    q.delete(&back[0].receipt).await.expect("delete");
}

/// FIFO: a group's messages come in send order, and none while an earlier one of the
/// group is in flight; other groups are not held up.
pub async fn queue_fifo_order_one_in_flight_per_group(f: &dyn QueueFactory) {
    let q = f.fifo(Duration::from_secs(20)).await;
    for (body, group) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a"), ("b2", "b")] {
        q.send(OutMessage::grouped(body, group, body)).await.expect("send");
    }
    // One at a time, so a receiver that batches a group's messages still shows the rule.
    let one = |q: Arc<dyn Queue>, wait: u64| async move {
        q.receive(1, Duration::from_secs(wait)).await.expect("receive")
    };
    let mut heads = one(q.clone(), 5).await;
    heads.extend(one(q.clone(), 5).await);
    assert_eq!(bodies(&heads), vec!["a1", "b1"]);
    assert!(one(q.clone(), 1).await.is_empty(), "both groups have a message in flight");
    let receipt = |body: &str| heads.iter().find(|m| m.body == body).expect("received").receipt.clone();
    q.delete(&receipt("a1")).await.expect("delete");
    let next = one(q.clone(), 5).await;
    assert_eq!(bodies(&next), vec!["a2"]);
    assert!(one(q.clone(), 1).await.is_empty());
    q.delete(&next[0].receipt).await.expect("delete");
    q.delete(&receipt("b1")).await.expect("delete");
    let mut rest = one(q.clone(), 5).await;
    rest.extend(one(q.clone(), 5).await);
    assert_eq!(bodies(&rest), vec!["a3", "b2"]);
    for m in &rest {
        q.delete(&m.receipt).await.expect("delete");
    }
    assert!(one(q.clone(), 1).await.is_empty());
}

/// FIFO: a resend with the same dedup id is dropped.
pub async fn queue_fifo_dedup(f: &dyn QueueFactory) {
    let q = f.fifo(Duration::from_secs(20)).await;
    q.send(OutMessage::grouped("one", "g", "d1")).await.expect("send");
    q.send(OutMessage::grouped("one", "g", "d1")).await.expect("resend");
    q.send(OutMessage::grouped("two", "g", "d2")).await.expect("send");
    let mut seen = Vec::new();
    loop {
        let got = q.receive(10, Duration::from_secs(2)).await.expect("receive");
        if got.is_empty() {
            break;
        }
        for m in got {
            assert_eq!(m.receive_count, 1);
            q.delete(&m.receipt).await.expect("delete");
            seen.push(m.body);
        }
    }
    assert_eq!(seen, vec!["one", "two"]);
}
