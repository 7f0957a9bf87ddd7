//! Builds of any size, and the reads that do not grow with them: `build_seq`,
//! `get_build_seq`, `get_build_part`, and commits to a build of 1,000 stages.

use crate::fixtures::*;
use kiln_domain::event::now_ms;
use kiln_domain::plan::{
    DEFAULT_BUILD_TIMEOUT_MS, DEFAULT_STAGE_TIMEOUT_MS, Plan, RunsOn, StagePlan, StepPlan,
};
use kiln_domain::state::{Build, Target};
use kiln_domain::{BuildId, StageName, Status};
use kiln_store::{CommitOutcome, StateStore};

/// A plan of `stages` stages of `steps` steps each, in layers of 10 (each stage needs the
/// one at its place in the layer before), every command a long line, so the plan is far
/// larger than any one item may be.
pub fn large_plan(stages: usize, steps: usize) -> Plan {
    let stage = |s: usize| StagePlan {
        name: StageName::new(format!("l{}s{}", s / 10, s % 10)),
        needs: if s >= 10 { vec![StageName::new(format!("l{}s{}", s / 10 - 1, s % 10))] } else { Vec::new() },
        runs_on: RunsOn::Lambda,
        timeout_ms: DEFAULT_STAGE_TIMEOUT_MS,
        env: Default::default(),
        steps: (0..steps)
            .map(|k| StepPlan {
                name: format!("step{k}").as_str().into(),
                number: (s * steps + k + 1) as u32,
                commands: vec![format!("echo stage {s} step {k} {}", "x".repeat(60))],
                env: Default::default(),
                timeout_ms: None,
                secrets: Vec::new(),
            })
            .collect(),
        services: Vec::new(),
        triggers: Vec::new(),
        checkout: true,
    };
    Plan {
        version: "1".to_string(),
        env: Default::default(),
        stages: (0..stages).map(stage).collect(),
        images: Vec::new(),
        timeout_ms: DEFAULT_BUILD_TIMEOUT_MS,
        git: None,
        cancel_superseded: false,
    }
}

/// `build_seq` follows the history; `get_build_seq` gives the build with the same number;
/// `get_build_part` gives the header, the plan and only the stages asked for.
pub async fn state_seq_and_parts(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    assert_eq!(s.build_seq(&b.id).await.expect("build_seq"), Some(0));
    let ev = vec![sample_event(&b.id, "dev.kiln.test")];
    let out = s
        .commit(&b.id, &commit("e1", vec![tr(Target::Build, Status::Pending, Status::Running)], ev))
        .await
        .expect("commit");
    assert_eq!(out, CommitOutcome::Applied { first_seq: 1 });
    assert_eq!(s.build_seq(&b.id).await.expect("build_seq"), Some(1));
    let (whole, seq) = s.get_build_seq(&b.id).await.expect("get_build_seq").expect("exists");
    assert_eq!(seq, 1);
    assert_eq!(whole, get(s, &b.id).await);
    assert_eq!(whole.status, Status::Running);

    let part = s
        .get_build_part(&b.id, &[StageName::new("test"), StageName::new("no-such-stage")])
        .await
        .expect("get_build_part")
        .expect("exists");
    assert_eq!(part.status, Status::Running);
    assert_eq!(part.plan, whole.plan, "the part carries the whole plan");
    let names: Vec<&str> = part.stages.iter().map(|st| st.name.as_str()).collect();
    assert_eq!(names, ["test"]);
    assert_eq!(part.stages[0], *whole.stage("test").expect("test"));

    let unknown = BuildId::generate();
    assert_eq!(s.build_seq(&unknown).await.expect("build_seq"), None);
    assert!(s.get_build_seq(&unknown).await.expect("get_build_seq").is_none());
    assert!(s.get_build_part(&unknown, &[]).await.expect("get_build_part").is_none());
}

/// A build of 1,000 stages and 5,000 steps is created, reads back equal, takes commits
/// that touch one stage, and its stages keep their order.
pub async fn state_large_build(s: &dyn StateStore) {
    let plan = large_plan(1000, 5);
    let b = Build::new(BuildId::generate(), unique_repo(), plan, now_ms());
    s.create_build(&b).await.expect("create a build of 1,000 stages");
    assert_eq!(get(s, &b.id).await, b);
    let last = b.stages[999].name.clone();
    let c = commit(
        "big-1",
        vec![
            tr(Target::Build, Status::Pending, Status::Running),
            tr(stage(last.as_str()), Status::Pending, Status::Canceled),
        ],
        vec![sample_event(&b.id, "dev.kiln.test"), sample_event(&b.id, "dev.kiln.test")],
    );
    assert!(matches!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Applied { .. }));
    let after = get(s, &b.id).await;
    assert_eq!(after.stages.len(), 1000);
    assert_eq!(after.stage(last.as_str()).map(|st| st.status), Some(Status::Canceled));
    assert!(after.stages[..999].iter().all(|st| st.status == Status::Pending));
    let order: Vec<_> = after.stages.iter().map(|st| st.name.clone()).collect();
    let created_order: Vec<_> = b.stages.iter().map(|st| st.name.clone()).collect();
    assert_eq!(order, created_order, "stages keep their order");
    assert_eq!(s.build_seq(&b.id).await.expect("build_seq"), Some(after_seq(&c)));
}

fn after_seq(c: &kiln_store::Commit) -> u64 {
    c.events.len() as u64
}
