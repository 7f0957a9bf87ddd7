//! State store checks: builds, commits, history, dispatch marks and leases.

use kiln_domain::event::StoredEvent;
use kiln_domain::state::{StageState, Target, Transition, TransitionError};
use kiln_domain::{BuildId, StageName, Status};
use kiln_store::{Commit, CommitOutcome, StateStore, StoreError};
use std::time::Duration;

use crate::catalog::*;
use crate::fixtures::*;
use crate::leases::*;

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
    state_run_status(s).await;
    state_claim_job(s).await;
    state_claim_finished(s).await;
    state_lease_survives_commits(s).await;
    catalog_round_trip(s).await;
    catalog_stale_write_refused(s).await;
    catalog_duplicate_event_writes_once(s).await;
    catalog_concurrent_writes(s).await;
    catalog_list(s).await;
    crate::scale::state_seq_and_parts(s).await;
    crate::scale::state_large_build(s).await;
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
    // Three ids made in order (UUIDv7 sort by time, then by a counter within the ms).
    let mut ids: Vec<BuildId> = (0..3).map(|_| BuildId::generate()).collect();
    ids.sort();
    for (i, id) in ids.iter().enumerate() {
        let mut b = sample_build_in(&repo);
        b.id = id.clone();
        b.created_ms += i as u64; // ids and times both increase
        s.create_build(&b).await.expect("create_build");
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

/// `run_status`: the build's status and one stage's (None: no such stage; no such build:
/// None), following commits. It may be a moment stale (eventually consistent on
/// DynamoDB), so a change is waited for, briefly.
pub async fn state_run_status(s: &dyn StateStore) {
    use kiln_store::RunStatus;
    let b = created(s, &unique_repo()).await;
    let (build, nope) = (StageName::new("build"), StageName::new("nope"));
    let status = |stage: Option<StageName>| {
        let id = b.id.clone();
        async move { s.run_status(&id, stage.as_ref()).await.expect("run_status") }
    };
    let pending = Some(RunStatus { build: Status::Pending, stage: Some(Status::Pending) });
    assert_eq!(status(Some(build.clone())).await, pending);
    assert_eq!(status(None).await, Some(RunStatus { build: Status::Pending, stage: None }));
    assert_eq!(status(Some(nope.clone())).await, Some(RunStatus { build: Status::Pending, stage: None }));
    assert_eq!(s.run_status(&BuildId::generate(), Some(&build)).await.expect("run_status"), None);
    let started = commit(
        "ev-run",
        vec![
            tr(Target::Build, Status::Pending, Status::Running),
            tr(stage("build"), Status::Pending, Status::Running),
        ],
        vec![],
    );
    s.commit(&b.id, &started).await.expect("commit");
    let running = Some(RunStatus { build: Status::Running, stage: Some(Status::Running) });
    let mut seen = status(Some(build.clone())).await;
    for _ in 0..50 {
        if seen == running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = status(Some(build.clone())).await;
    }
    assert_eq!(seen, running);
    assert_eq!(
        status(Some("test".into())).await,
        Some(RunStatus { build: Status::Running, stage: Some(Status::Pending) })
    );
}
