//! `kiln dev --backend aws` on LocalStack: the examples end as they do locally with their
//! logs byte-exact in S3; redelivering every SQS message changes nothing; a runner killed
//! mid-step leaves its job to attempt 2 with the logs of both attempts kept apart.
//!
//! Needs LocalStack with the seeded resources: every test is `#[ignore]`d, so a plain
//! `cargo test` reports them as ignored rather than passed; `scripts/test.sh` starts
//! LocalStack and runs them with `-- --include-ignored`.

mod common;
use common::{Scratch, private_resources, repo_root};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "aws-test-token";
/// Every `kiln dev` here shares the queues, so any of them may run any job: they share
/// the key that signs runner tokens too.
const SIGNING_KEY: &str = "aws-test-signing-key";
/// LocalStack is one machine's worth of resources: one test at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Run with `--include-ignored` but without LocalStack's environment: fail loudly rather
/// than pass having checked nothing.
fn require_localstack() {
    assert!(
        std::env::var("KILN_LOCALSTACK").is_ok_and(|v| v == "1"),
        "these tests need LocalStack: `source localstack/.state/env` (scripts/test.sh does) and KILN_LOCALSTACK=1"
    );
}

struct Dev {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    fn start(s: &Scratch, resources: &[(String, String)], env: &[(&str, &str)]) -> Dev {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(["dev", "--backend", "aws", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(s.data_dir())
            .env("KILN_TOKEN", TOKEN)
            .env("KILN_SIGNING_KEY", SIGNING_KEY)
            .stdout(Stdio::piped());
        for (k, v) in resources {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_string();
        Dev { child, url, http: reqwest::Client::new() }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.url)).bearer_auth(TOKEN).send().await.unwrap()
    }

    async fn submit(&self, yaml: &[u8]) -> String {
        let r = self
            .http
            .post(format!("{}/v1/repos/aws/tests/builds", self.url))
            .bearer_auth(TOKEN)
            .body(yaml.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }

    async fn build(&self, id: &str) -> Value {
        self.get(&format!("/v1/builds/{id}")).await.json().await.unwrap()
    }

    /// The build, or the request's error: for a server that may crash under the request.
    async fn try_build(&self, id: &str) -> Result<Value, reqwest::Error> {
        let url = format!("{}/v1/builds/{id}", self.url);
        self.http.get(url).bearer_auth(TOKEN).send().await?.json().await
    }

    async fn until(&self, id: &str, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let b = self.build(id).await;
            if pred(&b) {
                return b;
            }
            assert!(started.elapsed() < limit, "timed out waiting for {what}: {b:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ended(&self, id: &str) -> Value {
        ended_within(self, id, Duration::from_secs(90)).await
    }

    /// Waits until the log `key` of a build reads `want` (a hang-catching deadline).
    async fn until_log(&self, id: &str, key: &str, want: &[u8]) {
        let started = Instant::now();
        loop {
            let logs = self.logs(id).await;
            let got = logs.iter().find(|(k, _)| k == key).map(|(_, b)| b.as_slice());
            if got == Some(want) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "timed out waiting for {key} to read {:?}: {:?}",
                String::from_utf8_lossy(want),
                got.map(String::from_utf8_lossy)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every log of a build, as `(name key, bytes)`.
    async fn logs(&self, id: &str) -> Vec<(String, Vec<u8>)> {
        let list: Value = self.get(&format!("/v1/builds/{id}/logs")).await.json().await.unwrap();
        let mut out = Vec::new();
        for l in list["logs"].as_array().unwrap() {
            if l["kind"] == "init" {
                continue; // setup output names runners and paths
            }
            let bytes = self
                .get(&format!("{}&max=67108864", l["url"].as_str().unwrap()))
                .await
                .bytes()
                .await
                .unwrap();
            out.push((l["key"].as_str().unwrap().to_string(), bytes.to_vec()));
        }
        out
    }
}

/// Statuses, exit codes and step logs of a finished build, with ids and paths masked.
async fn outcome(dev: &Dev, doc: &Value) -> Vec<String> {
    let id = doc["id"].as_str().unwrap();
    let mut v = vec![format!("build {}", doc["status"])];
    for s in doc["stages"].as_array().unwrap() {
        v.push(format!("{} {} attempt {}", s["name"], s["status"], s["attempt"]));
        for t in s["steps"].as_array().unwrap() {
            v.push(format!("  {} {} {}", t["name"], t["status"], t["exit_code"]));
        }
    }
    for (key, bytes) in dev.logs(id).await {
        let text = String::from_utf8_lossy(&bytes).replace(id, "<build>");
        let text = text.split("/workspaces/").next().unwrap_or_default().to_string();
        v.push(format!("log {key}: {text}"));
    }
    v
}

/// The same outcome from `kiln run` on the embedded backend.
fn local_outcome(file: &std::path::Path) -> (i32, Value) {
    Scratch::new().run_json(file, &[])
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack (scripts/test.sh starts it)"]
async fn examples_end_as_they_do_locally_with_logs_byte_exact_in_s3() {
    require_localstack();
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scratch::new();
    let dev = Dev::start(&s, &private_resources("examples"), &[]);
    for example in ["examples/hello.yml", "examples/dag.yml", "examples/service.yml"] {
        let file = repo_root().join(example);
        let id = dev.submit(&std::fs::read(&file).unwrap()).await;
        let aws = dev.ended(&id).await;
        let (_, local) = local_outcome(&file);
        assert_eq!(aws["status"], local["status"], "{example}");
        let statuses = |d: &Value| common::step_statuses(d);
        assert_eq!(statuses(&aws), statuses(&local), "{example}");
        // byte-exact: the log read back from S3 is what the step printed
        if example.ends_with("dag.yml") {
            let log = dev.get(&format!("/v1/builds/{id}/logs/integration/test")).await.bytes().await.unwrap();
            assert_eq!(&log[..], b"integration: 1 failed\n");
        }
    }
    // a step's exact bytes, invalid UTF-8 and no final newline included, through S3
    let id = dev.submit(b"version: \"1\"\nsteps:\n  - name: b\n    commands: [\"printf 'caf\\\\303\\\\251 \\\\377 x\\\\r\\\\nend'; seq 1 20000\"]\n").await;
    assert_eq!(dev.ended(&id).await["status"], "succeeded");
    let mut expected = b"caf\xc3\xa9 \xff x\r\nend".to_vec();
    for i in 1..=20000 {
        expected.extend_from_slice(format!("{i}\n").as_bytes());
    }
    let got = dev.get(&format!("/v1/builds/{id}/logs/default/b?max=67108864")).await.bytes().await.unwrap();
    assert!(got[..] == expected[..], "log differs: {} vs {} bytes", got.len(), expected.len());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack (scripts/test.sh starts it)"]
async fn redelivering_every_sqs_message_changes_nothing() {
    require_localstack();
    let _one = ONE_AT_A_TIME.lock().await;
    let file = repo_root().join("examples/dag.yml");
    let yaml = std::fs::read(&file).unwrap();
    let (plain, twice) = (Scratch::new(), Scratch::new());
    let resources = private_resources("redeliver");
    let a = {
        let dev = Dev::start(&plain, &resources, &[]);
        let id = dev.submit(&yaml).await;
        let doc = dev.ended(&id).await;
        outcome(&dev, &doc).await
    };
    let b = {
        let dev = Dev::start(&twice, &resources, &[("KILN_TEST_REDELIVER", "1")]);
        let id = dev.submit(&yaml).await;
        let doc = dev.ended(&id).await;
        // each event of the history once
        let page: Value = dev.get(&format!("/v1/builds/{id}/events?limit=1000")).await.json().await.unwrap();
        let mut ids: Vec<String> =
            page["events"].as_array().unwrap().iter().map(|e| e["event"]["id"].to_string()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "an event was applied twice");
        outcome(&dev, &doc).await
    };
    assert_eq!(a, b);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack (scripts/test.sh starts it)"]
async fn a_runner_killed_mid_step_leaves_the_job_to_attempt_two() {
    require_localstack();
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scratch::new();
    let lease = [("KILN_LEASE_SECS", "3")];
    let resources = private_resources("attempt");
    let first = Dev::start(&s, &resources, &lease);
    let id = first
        .submit(
            br#"version: "1"
steps:
  - name: one
    commands: ["echo one"]
  - name: two
    commands: ['echo "attempt $KILN_ATTEMPT"', 'if [ "$KILN_ATTEMPT" = 1 ]; then sleep 60; fi', "echo done"]
"#,
        )
        .await;
    // Attempt 1 holds still after its first line (it cannot finish before the kill); wait
    // until that line is readable from S3.
    first.until_log(&id, "step/0002/default/two/1", b"attempt 1\n").await;
    drop(first); // SIGKILL: the runner is gone mid-step, without a word
    let second = Dev::start(&s, &resources, &lease);
    let b = second.ended(&id).await;
    assert_eq!(b["status"], "succeeded", "{b:#}");
    assert_eq!(b["stages"][0]["attempt"], 2, "{b:#}");
    let logs: std::collections::BTreeMap<String, Vec<u8>> = second.logs(&id).await.into_iter().collect();
    let log = |key: &str| {
        String::from_utf8_lossy(logs.get(key).unwrap_or_else(|| panic!("no {key}: {:?}", logs.keys())))
            .to_string()
    };
    assert_eq!(log("step/0002/default/two/1"), "attempt 1\n", "attempt 1's log is kept apart");
    assert_eq!(log("step/0002/default/two/2"), "attempt 2\ndone\n");
    assert_eq!(log("step/0001/default/one/2"), "one\n", "no line lost or doubled");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack (scripts/test.sh starts it)"]
async fn a_job_that_kills_every_runner_is_dead_lettered_and_fails_its_build() {
    require_localstack();
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scratch::new();
    let mut resources = private_resources("poison");
    let dlq =
        resources.iter().find(|(k, _)| k == "KILN_JOBS_QUEUE").map(|(_, v)| format!("{v}-dlq")).unwrap();
    resources.push(("KILN_JOBS_DLQ".into(), dlq));
    // Steps stay root here: as "nobody" (the default under a root runner) a step cannot
    // kill its runner, and this test needs one that does.
    let env = [("KILN_LEASE_SECS", "2"), ("KILN_STEP_USER", "root")];
    let mut dev = Dev::start(&s, &resources, &env);
    // The step kills the process running it (its parent): a poison job for any runner.
    let id =
        dev.submit(b"version: \"1\"\nsteps:\n  - name: crash\n    commands: [\"kill -9 $PPID\"]\n").await;
    let started = Instant::now();
    let mut runners = 1;
    let build = loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the poison job never reached the dead-letter queue"
        );
        if dev.child.try_wait().unwrap().is_some() {
            // Like a supervisor would: a new runner process after each crash.
            dev = Dev::start(&s, &resources, &env);
            runners += 1;
            continue;
        }
        // The runner in this process may crash while it answers: then look again.
        if let Ok(b) = dev.try_build(&id).await
            && b["status"] != "running"
            && b["status"] != "pending"
        {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(build["status"], "failed", "{build:#}");
    let reason = build["stages"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("dead-lettered"), "{build:#}");
    assert!(runners >= 3, "the queue's maxReceiveCount is 3: {runners} runner(s) ran it");
}

/// A secret set over the API of `kiln dev --backend aws` (SSM SecureString on LocalStack)
/// is `***` in the S3 logs, both whole and printed in two halves 1.3 s apart, and is in
/// no item of the DynamoDB table.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack (scripts/test.sh starts it)"]
async fn secrets_on_aws_are_masked_in_s3_and_absent_from_dynamodb() {
    require_localstack();
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scratch::new();
    let resources = private_resources("secrets");
    let prefix = format!("/kt{}-secrets", std::process::id());
    let dev = Dev::start(&s, &resources, &[("KILN_SECRETS_PREFIX", &prefix)]);
    const VALUE: &str = "aws-s3cr3t-Value-7a6b5c4d";
    let put = dev
        .http
        .put(format!("{}/v1/repos/aws/tests/secrets/DEPLOY_KEY", dev.url))
        .bearer_auth(TOKEN)
        .body(VALUE)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let list = dev.get("/v1/repos/aws/tests/secrets").await.text().await.unwrap();
    assert!(list.contains("DEPLOY_KEY") && !list.contains(VALUE), "{list}");

    let yaml = r#"version: "1"
steps:
  - name: show
    secrets: [DEPLOY_KEY]
    commands:
      - 'echo "whole: $DEPLOY_KEY"'
      - 'printf %s "${DEPLOY_KEY%????}"; sleep 1.3; printf "%s\n" "${DEPLOY_KEY#${DEPLOY_KEY%????}}"'
"#;
    let id = dev.submit(yaml.as_bytes()).await;
    let build = dev.ended(&id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    let log = dev.get(&format!("/v1/builds/{id}/logs/default/show")).await.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&log);
    assert_eq!(text, "whole: ***\n***\n");
    let events = dev.get(&format!("/v1/builds/{id}/events?limit=1000")).await.text().await.unwrap();
    assert!(!events.contains(VALUE) && !build.to_string().contains(VALUE));

    // Every item of the build's table, as the SDK shows it.
    let table = &resources.iter().find(|(k, _)| k == "KILN_TABLE").unwrap().1;
    let dynamo = kiln_store_aws::Clients::from_env().await.dynamodb;
    let (mut items, mut start) = (0, None);
    loop {
        let page = dynamo.scan().table_name(table).set_exclusive_start_key(start).send().await.unwrap();
        for item in page.items() {
            items += 1;
            assert!(!format!("{item:?}").contains(VALUE), "the value is in an item of {table}: {item:?}");
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    assert!(items > 3, "scanned only {items} items");
}

/// A pipeline of `stages` stages in layers of 10, each stage needing every stage of the
/// layer before; the first stage runs `first`, every other `true`.
fn layered(stages: usize, first: &str) -> String {
    let mut y = String::from("version: \"1\"\nstages:\n");
    for s in 0..stages {
        let (layer, i) = (s / 10, s % 10);
        y.push_str(&format!("  l{layer}s{i}:\n"));
        if layer > 0 {
            let needs: Vec<String> = (0..10).map(|j| format!("l{}s{j}", layer - 1)).collect();
            y.push_str(&format!("    needs: [{}]\n", needs.join(", ")));
        }
        let cmd = if s == 0 { first } else { "true" };
        y.push_str(&format!("    steps:\n      - name: k\n        commands: [\"{cmd}\"]\n"));
    }
    y
}

/// Waits (a generous, hang-catching deadline) until the build and all its stages ended.
async fn ended_within(dev: &Dev, id: &str, limit: Duration) -> Value {
    dev.until(id, "the build to end", limit, |b| {
        !matches!(b["status"].as_str(), Some("pending" | "running"))
            && b["stages"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| !matches!(s["status"].as_str(), Some("pending" | "running")))
    })
    .await
}

/// A failure in the first layer of a build of 200 stages skips the other 199 (in as many
/// bounded reactions as one DynamoDB transaction each allows, chained by continuation
/// events) and the build ends failed: nothing left running or pending.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack (scripts/test.sh starts it)"]
async fn a_failure_in_a_large_build_skips_the_rest_and_ends_it() {
    require_localstack();
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scratch::new();
    let dev = Dev::start(&s, &private_resources("large-fail"), &[]);
    let id = dev.submit(layered(200, "exit 3").as_bytes()).await;
    let b = ended_within(&dev, &id, Duration::from_secs(300)).await;
    assert_eq!(b["status"], "failed", "{:#}", b["reason"]);
    let stages = b["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 200);
    let count = |st: &str| stages.iter().filter(|s| s["status"] == st).count();
    assert_eq!(count("failed"), 1);
    // The nine other stages of the first layer ran; every later one was skipped.
    assert_eq!(count("succeeded"), 9);
    assert_eq!(count("skipped"), 190);
    let (mut after, mut types) = (0, Vec::new());
    loop {
        let page: Value =
            dev.get(&format!("/v1/builds/{id}/events?limit=1000&after={after}")).await.json().await.unwrap();
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        types.extend(events.iter().map(|e| e["event"]["type"].as_str().unwrap_or_default().to_string()));
        after = page["next_after"].as_u64().unwrap();
    }
    let continued = types.iter().filter(|t| *t == "dev.kiln.fanin.continue").count();
    assert!(
        continued >= 5,
        "the skips took several bounded reactions: {continued} continuations in {} events",
        types.len()
    );
}

/// A pipeline of 1,000 stages (layers of 10 with `needs`) runs to the end on `kiln dev
/// --backend aws`: created in several writes, every stage dispatched, run and reported.
/// Long (minutes on LocalStack): run with KILN_LONG=1.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack (scripts/test.sh starts it)"]
async fn a_thousand_stage_pipeline_runs_to_the_end() {
    require_localstack();
    if std::env::var("KILN_LONG").is_err() {
        eprintln!("not run: set KILN_LONG=1 (minutes on LocalStack)");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scratch::new();
    let dev = Dev::start(&s, &private_resources("large-run"), &[]);
    let started = Instant::now();
    let id = dev.submit(layered(1000, "true").as_bytes()).await;
    let b = ended_within(&dev, &id, Duration::from_secs(1800)).await;
    eprintln!("1,000 stages ended {} in {:.0} s", b["status"], started.elapsed().as_secs_f64());
    assert_eq!(b["status"], "succeeded", "{:#}", b["reason"]);
    let stages = b["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 1000);
    assert!(stages.iter().all(|s| s["status"] == "succeeded"));
}
