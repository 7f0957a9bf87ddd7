//! Lease checks: claiming a stage's job, renewing, running out, and how leases and
//! commits leave each other alone. They wait for leases to run out with
//! `tokio::time::sleep`, so an adapter whose leases follow tokio's clock runs them on
//! paused time.

use crate::fixtures::*;
use kiln_domain::event::now_ms;
use kiln_domain::state::Target;
use kiln_domain::{StageName, Status};
use kiln_store::{Claim, CommitOutcome, StateStore};
use std::time::Duration;

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
    // Renewal by the holder: same attempt. The short lease must outlast the next claim
    // even on a loaded machine against an emulator (a real-time wait on AWS, none locally).
    let short = Duration::from_secs(3);
    assert_eq!(s.claim_job(&b.id, &name, "r1", short).await.expect("claim"), Claim::Claimed { attempt: 1 });
    assert_eq!(s.claim_job(&b.id, &name, "r2", long).await.expect("claim"), Claim::Busy);
    tokio::time::sleep(Duration::from_secs(4)).await;
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

/// A lease and the stage's state are independent: a commit that moves the stage and its
/// steps on keeps the lease, and renewing the lease changes nothing a commit wrote.
pub async fn state_lease_survives_commits(s: &dyn StateStore) {
    let b = created(s, &unique_repo()).await;
    let name = StageName::new("build");
    let long = Duration::from_secs(600);
    assert_eq!(s.claim_job(&b.id, &name, "r1", long).await.expect("claim"), Claim::Claimed { attempt: 1 });
    let moves = vec![
        tr(Target::Build, Status::Pending, Status::Running),
        tr(stage("build"), Status::Pending, Status::Running),
        tr(step("build", "compile"), Status::Pending, Status::Running),
    ];
    let c = commit("l-1", moves, vec![sample_event(&b.id, "dev.kiln.test")]);
    // Renewals racing the commit: neither loses anything.
    let (committed, renewed) = tokio::join!(s.commit(&b.id, &c), s.claim_job(&b.id, &name, "r1", long));
    assert!(matches!(committed.expect("commit"), CommitOutcome::Applied { .. }));
    assert_eq!(renewed.expect("renew"), Claim::Claimed { attempt: 1 });
    let now = get(s, &b.id).await;
    let st = now.stage("build").expect("stage");
    assert_eq!((st.status, st.steps[0].status), (Status::Running, Status::Running));
    let lease = st.lease.clone().expect("the lease is kept");
    assert_eq!((lease.runner.as_str(), lease.attempt), ("r1", 1));
    assert_eq!(s.claim_job(&b.id, &name, "r1", long).await.expect("renew"), Claim::Claimed { attempt: 1 });
    let again = get(s, &b.id).await;
    let mut without_lease = again.clone();
    let mut before = now.clone();
    for b in [&mut without_lease, &mut before] {
        for st in &mut b.stages {
            st.lease = None;
        }
    }
    assert_eq!(without_lease, before, "a renewal changes the lease only");
    let c = commit("l-2", vec![tr(step("build", "compile"), Status::Running, Status::Succeeded)], vec![]);
    assert!(matches!(s.commit(&b.id, &c).await.expect("commit"), CommitOutcome::Applied { .. }));
    assert_eq!(
        s.claim_job(&b.id, &"test".into(), "r2", long).await.expect("claim"),
        Claim::Claimed { attempt: 1 }
    );
}
