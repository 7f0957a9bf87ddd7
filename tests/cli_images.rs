//! The image catalog end to end: `examples/images.yml` builds `base-os` for aws, gcp and
//! azure, and azure fails; building the missing providers (the library function behind
//! `POST /v1/images/{name}/builds`, on the same data dir) rebuilds azure alone, and then
//! every provider is complete. `kiln images` prints the matrix.

mod common;
use common::{Scratch, repo_root};
use kiln_core::images::{ImagesError, build_missing};
use kiln_core::system::{Ports, System, SystemConfig};
use kiln_domain::catalog::ImageRecord;
use kiln_domain::status::ImageStatus;
use kiln_store_local::{LocalLogStore, LocalQueue, QueueOptions, SqliteStateStore};
use serde_json::Value;
use std::sync::Arc;

fn example() -> std::path::PathBuf {
    repo_root().join("examples/images.yml")
}

fn result<'a>(doc: &'a Value, provider: &str) -> &'a Value {
    doc["images"][0]["results"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["provider"] == provider))
        .unwrap_or_else(|| panic!("no result for {provider}: {doc:#}"))
}

fn local_ports(dir: &std::path::Path) -> Ports {
    let queue = |fifo: bool| Arc::new(LocalQueue::new(QueueOptions { fifo, ..QueueOptions::default() }));
    Ports {
        state: Arc::new(SqliteStateStore::open(dir).expect("state")),
        logs: Arc::new(LocalLogStore::open(dir).expect("logs")),
        events: queue(true),
        dispatch: queue(false),
        jobs: queue(false),
        secrets: None,
        git: None,
    }
}

fn record<'a>(records: &'a [ImageRecord], provider: &str) -> &'a ImageRecord {
    records.iter().find(|r| r.provider == provider).unwrap_or_else(|| panic!("no record for {provider}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_complete_one_failed_then_build_missing_rebuilds_only_the_failed_one() {
    let s = Scratch::new();
    // kiln run: the step builds three and fails one; two completes and one failure.
    let (code, doc) = tokio::task::block_in_place(|| s.run_json(&example(), &[]));
    assert_eq!(code, 1, "the step exits 1 after azure failed: {doc:#}");
    let id = doc["id"].as_str().expect("id").to_string();
    for p in ["aws", "gcp"] {
        let r = result(&doc, p);
        assert_eq!((r["status"].as_str(), r["percent"].as_u64()), (Some("complete"), Some(100)), "{r:#}");
        assert_eq!(r["uri"], format!("{p}://images/base-os/{id}"));
    }
    let azure = result(&doc, "azure");
    assert_eq!(azure["status"], "failed");
    assert_eq!(azure["error"], "quota exceeded: azure builds one image at a time");
    let status = tokio::task::block_in_place(|| s.kiln(&["status", &id]));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("base-os/aws    complete 100%  aws://images/base-os/"), "{text}");
    assert!(text.contains("base-os/azure  failed         quota exceeded"), "{text}");

    // The catalog in the data dir, and its history: while the build ran, each complete
    // pair's percent rose monotonically to 100.
    let data = s.data_dir();
    let system = System::start(local_ports(&data), SystemConfig::new(data.join("workspaces")));
    let (state, events) = (system.ports.state.clone(), system.ports.events.clone());
    let history = state.image_history("base-os").await.expect("history");
    for p in ["aws", "gcp"] {
        let seen: Vec<(ImageStatus, u8)> =
            history.iter().filter(|h| h.provider == p).map(|h| (h.status, h.percent)).collect();
        assert_eq!(
            seen,
            [
                (ImageStatus::Queued, 0),
                (ImageStatus::Building, 10),
                (ImageStatus::Building, 40),
                (ImageStatus::Building, 70),
                (ImageStatus::Pushing, 90),
                (ImageStatus::Complete, 100)
            ],
            "{p}"
        );
    }

    // Build the missing: azure alone (KILN_PROVIDERS=azure), which succeeds.
    let rebuild =
        build_missing(state.as_ref(), events.as_ref(), "base-os", None).await.expect("build_missing");
    assert_eq!(rebuild.providers, Some(vec!["azure".to_string()]));
    let done = system.wait(&rebuild.id).await.expect("wait");
    assert!(done.status.is_success(), "{:?}", done.reason);
    let records = state.get_image("base-os").await.expect("get_image");
    assert!(records.iter().all(|r| r.status == ImageStatus::Complete && r.percent == 100), "{records:#?}");
    assert_eq!(record(&records, "aws").build.as_str(), id, "aws was not rebuilt");
    assert_eq!(record(&records, "gcp").build.as_str(), id, "gcp was not rebuilt");
    let azure = record(&records, "azure");
    assert_eq!(azure.build, rebuild.id);
    assert_eq!(azure.uri.as_deref(), Some(format!("azure://images/base-os/{}", rebuild.id).as_str()));
    let again = build_missing(state.as_ref(), events.as_ref(), "base-os", None).await;
    assert!(matches!(again, Err(ImagesError::NothingMissing { .. })), "{again:?}");
    system.stop().await;

    // The rebuild's summary shows only azure as built by it.
    let status = tokio::task::block_in_place(|| s.kiln(&["status", rebuild.id.as_str()]));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("base-os/azure  complete 100%  azure://images/base-os/"), "{text}");
    assert!(text.contains("base-os/aws    -              not built by this build"), "{text}");
}

#[test]
fn kiln_images_prints_the_matrix() {
    let s = Scratch::new();
    let empty = s.kiln(&["images"]);
    assert_eq!(empty.status.code(), Some(1), "no data dir yet");
    let (code, doc) = s.run_json(&example(), &[]);
    assert_eq!(code, 1);
    let id = doc["id"].as_str().expect("id");
    let out = s.kiln(&["images"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        text,
        format!(
            "IMAGE    aws            azure   gcp\n\
             base-os  complete 100%  failed  complete 100%\n\
             errors:\n  base-os/azure: quota exceeded: azure builds one image at a time (build {id})\n"
        )
    );
    let out = s.kiln(&["images", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let image = &json["images"][0];
    assert_eq!(image["name"], "base-os");
    let cells: Vec<(String, String)> = image["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .map(|r| (r["provider"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        cells,
        [
            ("aws".into(), "complete".into()),
            ("azure".into(), "failed".into()),
            ("gcp".into(), "complete".into())
        ]
    );
}
