//! The image catalog through the functions: the runner's per-artifact results, and
//! "build the missing images" on the in-process system over the local adapters (with
//! every message delivered twice, so the catalog must be idempotent).

mod runner_support;

use kiln_core::images::{ImagesError, build_missing, get_image, list_images};
use kiln_core::runner::run_job;
use kiln_core::system::{Ports, System, SystemConfig};
use kiln_domain::Repo;
use kiln_domain::catalog::{ImageRecord, PROVIDERS_ENV};
use kiln_domain::event::types;
use kiln_domain::status::ImageStatus;
use kiln_store_local::{LocalLogStore, LocalQueue, LocalStateStore, QueueOptions};
use runner_support::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_reports_an_error_for_each_pair_it_left_open() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Mem::new();
    let mut job = job(
        "bake",
        vec![step(
            "build",
            1,
            &[
                "echo \"providers=$KILN_PROVIDERS\"",
                "echo '::kiln::progress os aws 50'",
                "echo '::kiln::progress os gcp 30 pushing'",
                "echo '::kiln::result os aws ok ami-1'",
                "exit 3",
            ],
        )],
    );
    job.env.insert(PROVIDERS_ENV.into(), "aws,gcp".into());
    job.plan.env.insert(PROVIDERS_ENV.into(), "overridden".into());
    let (ctx, _cancel) = ctx(&mem, config(dir.path()));
    run_job(&job, 1, &ctx).await.unwrap();
    assert_eq!(mem.log_str(&step_key("bake", "build", 1)).lines().next(), Some("providers=aws,gcp"));
    let types: Vec<String> = mem.event_types();
    assert_eq!(
        types[2..7],
        [
            types::IMAGE_PROGRESS,
            types::IMAGE_PROGRESS,
            types::IMAGE_RESULT,
            types::IMAGE_RESULT,
            types::STEP_FINISHED
        ]
    );
    let results: Vec<_> = mem.events().into_iter().filter(|e| e.ty == types::IMAGE_RESULT).collect();
    assert_eq!(results[0].data_str("provider"), Some("aws"));
    assert_eq!(results[0].data["ok"], true);
    assert_eq!(results[1].data_str("provider"), Some("gcp"));
    assert_eq!(results[1].data["ok"], false);
    assert_eq!(results[1].data_str("error"), Some("step build failed (exit code 3) without a result"));
    assert_eq!((results[1].data_str("stage"), results[1].data_str("step")), (Some("bake"), Some("build")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_succeeding_step_leaves_its_open_pairs_to_later_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Mem::new();
    let job = job(
        "bake",
        vec![
            step("build", 1, &["echo '::kiln::progress os aws 50'"]),
            step("push", 2, &["echo '::kiln::result os aws ok ami-1'"]),
        ],
    );
    let (ctx, _cancel) = ctx(&mem, config(dir.path()));
    assert!(run_job(&job, 1, &ctx).await.unwrap().succeeded());
    let results: Vec<_> = mem.events().into_iter().filter(|e| e.ty == types::IMAGE_RESULT).collect();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].data_str("step"), Some("push"));
}

/// The local backend in `dir`, every queue delivering each message twice.
fn ports(dir: &Path) -> Ports {
    let queue = |fifo: bool| {
        Arc::new(LocalQueue::new(QueueOptions {
            fifo,
            deliver_twice: true,
            visibility_timeout: Duration::from_secs(30),
            ..QueueOptions::default()
        }))
    };
    Ports {
        state: Arc::new(LocalStateStore::open(dir).unwrap()),
        logs: Arc::new(LocalLogStore::open(dir).unwrap()),
        events: queue(true),
        dispatch: queue(false),
        jobs: queue(false),
        secrets: None,
        git: None,
    }
}

/// `os` for p1, p2 and p3; p3 fails unless it is built alone; p2 reports no result.
const PIPELINE: &str = r#"version: "1"
images:
  - name: os
    providers: [p1, p2, p3]
steps:
  - name: build
    commands:
      - |
        for p in $(echo "$KILN_PROVIDERS" | tr ',' ' '); do
          for pct in 20 50 80; do echo "::kiln::progress os $p $pct"; done
          if [ "$p" = p3 ] && [ "$KILN_PROVIDERS" != p3 ]; then
            echo "::kiln::result os p3 error no capacity"
          elif [ "$p" != p2 ] || [ "$KILN_PROVIDERS" = p2 ]; then
            echo "::kiln::result os $p ok $p://os/$KILN_BUILD_ID"
          fi
        done
"#;

fn record<'a>(records: &'a [ImageRecord], provider: &str) -> &'a ImageRecord {
    records.iter().find(|r| r.provider == provider).unwrap_or_else(|| panic!("no record for {provider}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn build_missing_rebuilds_what_is_missing_or_failed() {
    let dir = tempfile::tempdir().unwrap();
    let system = System::start(ports(dir.path()), SystemConfig::new(dir.path().join("ws")));
    let (state, events) = (system.ports.state.clone(), system.ports.events.clone());
    let unknown = build_missing(state.as_ref(), events.as_ref(), "os", None).await;
    assert!(matches!(unknown, Err(ImagesError::NotFound(_))), "{unknown:?}");

    let first = system.submit(Repo::new("acme", "images"), PIPELINE.as_bytes()).await.unwrap();
    assert_eq!(first.plan.env.get(PROVIDERS_ENV).map(String::as_str), Some("p1,p2,p3"));
    let first = system.wait(&first.id).await.unwrap();
    assert!(first.status.is_success(), "the step exits 0: {:?}", first.reason);
    let records = state.get_image("os").await.unwrap();
    assert_eq!(record(&records, "p1").status, ImageStatus::Complete);
    let p2 = record(&records, "p2");
    assert_eq!(
        (p2.status, p2.percent, p2.error.as_deref()),
        (ImageStatus::Failed, 80, Some("no result reported"))
    );
    let p3 = record(&records, "p3");
    assert_eq!((p3.status, p3.error.as_deref()), (ImageStatus::Failed, Some("no capacity")));

    // Delivered twice, every event was still applied once: one history entry per version,
    // and p1's percent rose step by step to 100.
    let history = get_image(state.as_ref(), "os").await.unwrap().history;
    let p1: Vec<(u64, ImageStatus, u8)> =
        history.iter().filter(|h| h.provider == "p1").map(|h| (h.version, h.status, h.percent)).collect();
    assert_eq!(
        p1,
        [
            (1, ImageStatus::Queued, 0),
            (2, ImageStatus::Building, 20),
            (3, ImageStatus::Building, 50),
            (4, ImageStatus::Building, 80),
            (5, ImageStatus::Complete, 100)
        ]
    );

    // The missing ones: p2 and p3. Named: only those asked for; unknown names refused.
    let bad = build_missing(state.as_ref(), events.as_ref(), "os", Some(vec!["p9".into()])).await;
    assert!(
        matches!(&bad, Err(ImagesError::UnknownProvider { provider, .. }) if provider == "p9"),
        "{bad:?}"
    );
    let second = build_missing(state.as_ref(), events.as_ref(), "os", None).await.unwrap();
    assert_eq!(second.providers, Some(vec!["p2".to_string(), "p3".to_string()]));
    assert_eq!(second.plan.env.get(PROVIDERS_ENV).map(String::as_str), Some("p2,p3"));
    assert_eq!(second.repo, Repo::new("acme", "images"));
    system.wait(&second.id).await.unwrap();
    let records = state.get_image("os").await.unwrap();
    assert_eq!(record(&records, "p1").build, first.id, "p1 was not rebuilt");
    assert_eq!(record(&records, "p2").error.as_deref(), Some("no result reported"), "built with p3");
    assert_eq!(record(&records, "p3").error.as_deref(), Some("no capacity"));
    for p in ["p2", "p3"] {
        let third = build_missing(state.as_ref(), events.as_ref(), "os", Some(vec![p.into()])).await.unwrap();
        assert_eq!(third.plan.env.get(PROVIDERS_ENV).map(String::as_str), Some(p));
        system.wait(&third.id).await.unwrap();
    }
    let records = state.get_image("os").await.unwrap();
    assert!(records.iter().all(|r| r.status == ImageStatus::Complete), "{records:#?}");
    let nothing = build_missing(state.as_ref(), events.as_ref(), "os", None).await;
    match nothing {
        Err(ImagesError::NothingMissing { complete, in_progress, .. }) => {
            assert_eq!((complete.len(), in_progress.len()), (3, 0));
        }
        other => panic!("{other:?}"),
    }
    let matrix = list_images(state.as_ref()).await.unwrap();
    assert_eq!(matrix.len(), 1);
    assert_eq!(
        matrix[0].providers.iter().map(|r| r.provider.as_str()).collect::<Vec<_>>(),
        ["p1", "p2", "p3"]
    );
    system.stop().await;
}
