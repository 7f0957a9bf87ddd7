//! Image catalog checks (in the state store; written only through commits).

use kiln_domain::catalog::{CatalogWrite, ImageRecord};
use kiln_domain::event::now_ms;
use kiln_domain::state::{Target, TransitionError};
use kiln_domain::status::ImageStatus;
use kiln_domain::{BuildId, Status};
use kiln_store::{Commit, CommitOutcome, StateStore, StoreError};

use crate::fixtures::*;

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

pub(crate) fn image_commit(event_id: &str, build: &BuildId, writes: Vec<CatalogWrite>) -> Commit {
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
