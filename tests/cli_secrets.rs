//! Repository secrets end to end: set over the API (or `kiln secrets` on the data dir),
//! delivered only to the steps that declare them, `***` in every stored log and view (also
//! when printed in two halves across two 1-second batches), never in the build, its events
//! or the data dir as clear text; a runner token of another build gets 403; a missing
//! secret fails the build with its name before any step runs.

mod common;
use common::Scratch;
use common::dev::{Dev, SIGNING_KEY, TOKEN, key_file};
use kiln_core::tokens::TokenSigner;
use kiln_domain::BuildId;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const VALUE: &str = "s3cr3t-Value-9f8e7d6c";

/// Steps that print the secret whole, in two halves 1.3 s apart on one line, and in an
/// event; one step that does not declare it.
const PIPELINE: &str = r#"version: "1"
stages:
  ship:
    steps:
      - name: show
        secrets: [DEPLOY_KEY]
        commands:
          - 'echo "whole: $DEPLOY_KEY"'
          - 'printf %s "${DEPLOY_KEY%????}"; sleep 1.3; printf "%s\n" "${DEPLOY_KEY#${DEPLOY_KEY%????}}"'
          - 'echo "::kiln::event leak {\"v\": \"$DEPLOY_KEY\"}"'
      - name: other
        commands:
          - 'echo "other:[${DEPLOY_KEY:-unset}]"'
"#;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every file under `dir` that holds `needle` as clear text.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| contains(&b, needle)) {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

/// The masked `show` log: the whole value and the two halves both `***`.
fn assert_masked_show_log(log: &[u8]) {
    let text = String::from_utf8_lossy(log);
    assert!(!contains(log, VALUE) && !contains(log, &VALUE[..VALUE.len() - 4]), "value in the log:\n{text}");
    assert!(text.contains("whole: ***\n***\n"), "not masked as expected:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_secrets_reach_declaring_steps_masked_everywhere() {
    let dev = Dev::start(Scratch::new());
    use reqwest::Method;
    let put = |name: &str, v: &[u8]| {
        dev.call(Method::PUT, format!("/v1/repos/acme/web/secrets/{name}"), TOKEN, v.to_vec())
    };
    assert_eq!(put("DEPLOY_KEY", VALUE.as_bytes()).await.0, 204);
    let (status, body) = put("1BAD", b"abcdef").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, body) = put("SHORT", b"abc").await;
    assert_eq!(status, 400);
    assert!(contains(&body, "4 to 65536 bytes"), "{}", String::from_utf8_lossy(&body));
    assert_eq!(put("NUL", b"ab\0cd").await.0, 400);

    // The list: names and times, never a value.
    let list = dev.get("/v1/repos/acme/web/secrets").await;
    let doc: serde_json::Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(doc["secrets"][0]["name"], "DEPLOY_KEY");
    assert!(doc["secrets"][0]["updated_ms"].as_u64().unwrap() > 0);
    assert!(!contains(&list, VALUE));
    let out = dev.kiln(&["secrets", "list", "acme/web", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(contains(&out.stdout, "DEPLOY_KEY") && !contains(&out.stdout, VALUE));

    let id = dev.submit(PIPELINE).await;
    let build = dev.wait_ended(&id).await;
    assert_eq!(build["status"], "succeeded", "{build}");

    // Every log route: the stream, read from an offset, the list, `kiln logs`.
    let show = dev.get(&format!("/v1/builds/{id}/logs/ship/show")).await;
    assert_masked_show_log(&show);
    for offset in [1, 3, 7] {
        let tail = dev.get(&format!("/v1/builds/{id}/logs/ship/show?offset={offset}")).await;
        assert_eq!(tail, show[offset..], "offset {offset}");
    }
    let other = dev.get(&format!("/v1/builds/{id}/logs/ship/other")).await;
    assert_eq!(String::from_utf8_lossy(&other), "other:[unset]\n", "a step that did not declare it");
    let init = dev.get(&format!("/v1/builds/{id}/logs/init")).await;
    assert!(contains(&init, "DEPLOY_KEY") && !contains(&init, VALUE), "{}", String::from_utf8_lossy(&init));
    assert!(!contains(&dev.get(&format!("/v1/builds/{id}/logs")).await, VALUE));
    let out = dev.kiln(&["logs", &id, "ship/show"]);
    assert!(out.status.success());
    assert_masked_show_log(&out.stdout);

    // Not in the build, its events (the step's own event is masked too), the data dir.
    assert!(!build.to_string().contains(VALUE));
    let events = dev.get(&format!("/v1/builds/{id}/events?limit=1000")).await;
    assert!(contains(&events, "leak") && !contains(&events, VALUE), "{}", String::from_utf8_lossy(&events));
    assert_eq!(files_containing(&dev.scratch.data_dir(), VALUE), Vec::<String>::new());

    // The runner route: that build's runner only (it got the value: the step printed it),
    // and only while the stage runs: a token that outlives its job gets nothing.
    let signer = TokenSigner::new(SIGNING_KEY.as_bytes().to_vec());
    let path = format!("/v1/builds/{id}/secrets?stage=ship");
    let own = signer.sign(&BuildId::new(&id), u64::MAX);
    let (status, body) = dev.call(Method::GET, &path, &own, vec![]).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(contains(&body, "has ended") && !contains(&body, VALUE), "{}", String::from_utf8_lossy(&body));
    let another = signer.sign(&BuildId::new("0190aaaa-0000-7000-8000-000000000000"), u64::MAX);
    let (status, body) = dev.call(Method::GET, &path, &another, vec![]).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(!contains(&body, VALUE));
    let (status, body) = dev.call(Method::GET, &path, TOKEN, vec![]).await;
    assert_eq!(status, 403, "no value to a person, not even an admin");
    assert!(!contains(&body, VALUE));

    // Removal.
    let del =
        |name: &str| dev.call(Method::DELETE, format!("/v1/repos/acme/web/secrets/{name}"), TOKEN, vec![]);
    assert_eq!(del("DEPLOY_KEY").await.0, 204);
    assert_eq!(del("DEPLOY_KEY").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_fails_the_build_before_any_step() {
    let dev = Dev::start(Scratch::new());
    let marker = dev.scratch.dir.path().join("ran");
    let yaml = format!(
        "version: \"1\"\nsecrets: [NOT_SET_ANYWHERE]\nsteps:\n  - name: first\n    commands: [\"touch {}\"]\n",
        marker.display()
    );
    let id = dev.submit(&yaml).await;
    let build = dev.wait_ended(&id).await;
    assert_eq!(build["status"], "failed", "{build}");
    let reason = build["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("NOT_SET_ANYWHERE") && reason.contains("acme/web"), "{reason}");
    assert_ne!(build["stages"][0]["steps"][0]["status"], "succeeded");
    assert!(!marker.exists(), "a step ran");
    let init = dev.get(&format!("/v1/builds/{id}/logs/init")).await;
    let init = String::from_utf8_lossy(&init);
    assert!(init.contains("NOT_SET_ANYWHERE") && init.contains("acme/web"), "{init}");
}

#[test]
fn kiln_secrets_and_kiln_run_use_the_data_dir_store() {
    let scratch = Scratch::new();
    let key = key_file(&scratch);
    let env = [("KILN_SECRETS_KEY_FILE", key.to_str().unwrap())];
    let set = |name: &str, value: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["secrets", "set", "acme/web", name])
            .env("KILN_DATA_DIR", scratch.data_dir())
            .env("KILN_SECRETS_KEY_FILE", &key)
            .env_remove("KILN_API")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(value).unwrap();
        child.wait_with_output().unwrap()
    };
    // From a pipe the value is taken byte for byte: the trailing newline is part of it.
    let out = set("DEPLOY_KEY", format!("{VALUE}\n").as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!set("BAD-NAME", b"abcdef").status.success());
    assert!(!set("TINY", b"ab").status.success());
    let list = scratch.kiln_env(&["secrets", "list", "acme/web", "--json"], &env);
    assert!(list.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(doc["secrets"].as_array().unwrap().len(), 1);
    assert!(!contains(&list.stdout, VALUE));

    let file = scratch.pipeline("p.yml", PIPELINE);
    let out = scratch.kiln_env(&["run", "--json", "--repo", "acme/web", file.to_str().unwrap()], &env);
    assert!(!contains(&out.stdout, VALUE) && !contains(&out.stderr, VALUE), "the live view shows it");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let id = doc["id"].as_str().unwrap();
    // The value ends with a newline here: the line `whole: VALUE\n` masks as `whole: ***`
    // (then the newline of the echo).
    let log = scratch.log(id, "ship/show");
    assert!(!contains(&log, VALUE), "{}", String::from_utf8_lossy(&log));
    assert!(contains(&log, "whole: ***"), "{}", String::from_utf8_lossy(&log));
    assert_eq!(files_containing(&scratch.data_dir(), VALUE), Vec::<String>::new());

    let rm = scratch.kiln_env(&["secrets", "rm", "acme/web", "DEPLOY_KEY"], &env);
    assert!(rm.status.success());
    assert!(!scratch.kiln_env(&["secrets", "rm", "acme/web", "DEPLOY_KEY"], &env).status.success());
    // Without it, the same pipeline fails before its first step.
    let (code, doc) = scratch.run_json(&file, &env);
    assert_eq!(code, 1);
    assert!(doc.to_string().contains("DEPLOY_KEY"), "{doc}");
}
