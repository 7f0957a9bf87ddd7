//! Events as first-class citizens: stages started by events (one instance per event,
//! fan-in sets), stopped by events, event data only in the environment, build timeouts.

mod common;
use common::{HANG, Scratch, repo_root};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn events_of(s: &Scratch, id: &str) -> Vec<Value> {
    let out = s.kiln(&["events", id, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn coinflip_runs_until_heads_stops_the_flipper() {
    let s = Scratch::new();
    let (code, doc) = s.run_json(&repo_root().join("examples/coinflip.yml"), &[]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["status"], "succeeded");
    let stages = doc["stages"].as_array().unwrap();
    let flipper = stages.iter().find(|s| s["name"] == "flipper").unwrap();
    assert_eq!(flipper["status"], "stopped", "{flipper}");
    let heads: Vec<&Value> =
        stages.iter().filter(|s| s["name"].as_str().unwrap().starts_with("heads#")).collect();
    assert!(!heads.is_empty());
    assert!(heads.iter().all(|h| h["status"] == "succeeded"), "{heads:?}");
    // one instance per matching event, no more, no fewer
    let id = doc["id"].as_str().unwrap();
    let history = events_of(&s, id);
    let heads_events = history
        .iter()
        .filter(|e| e["event"]["type"] == "coin" && e["event"]["data"]["content"] == "heads")
        .count();
    assert_eq!(heads.len(), heads_events, "instances vs heads events");
    // the history is numbered in order, and holds the lifecycle
    let seqs: Vec<u64> = history.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(history.iter().any(|e| e["event"]["type"] == "dev.kiln.stage.stopped"));
    assert!(history.iter().any(|e| e["event"]["type"] == "dev.kiln.build.succeeded"));
    let say = s.log(id, "heads#1/say");
    assert!(
        String::from_utf8_lossy(&say).starts_with("it was heads (flip "),
        "{}",
        String::from_utf8_lossy(&say)
    );
}

#[test]
fn a_build_timeout_ends_a_build_that_would_run_on() {
    let s = Scratch::new();
    let p = s.pipeline(
        "p.yml",
        "version: \"1\"\ntimeout: 2s\nsteps:\n  - name: nap\n    commands: [\"sleep 30\"]\n",
    );
    let started = Instant::now();
    let (code, doc) = s.run_json(&p, &[]);
    assert_eq!(code, 1);
    assert!(started.elapsed() < HANG, "took {:?}", started.elapsed());
    assert_eq!(doc["status"], "failed");
    let reason = doc["stages"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("build timed out"), "{doc:#}");
}

/// The API side: external events, fan-in sets, delete stops a stage, 400s for bad events.
mod api {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};

    const TOKEN: &str = "events-test-token";

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
        fn start(s: &Scratch) -> Self {
            let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
                .args(["dev", "--addr", "127.0.0.1:0", "--data-dir"])
                .arg(s.data_dir())
                .env("KILN_TOKEN", TOKEN)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_string();
            Dev { child, url, http: reqwest::Client::new() }
        }

        async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
            let r = self
                .http
                .post(format!("{}{path}", self.url))
                .bearer_auth(TOKEN)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        }

        async fn emit(&self, id: &str, ty: &str, data: Value) -> u16 {
            let e = json!({ "specversion": "1.0", "id": uuid(), "source": "test", "type": ty, "data": data });
            self.post(&format!("/v1/builds/{id}/events"), e.to_string().into_bytes()).await.0
        }

        async fn build(&self, id: &str) -> Value {
            let r = self
                .http
                .get(format!("{}/v1/builds/{id}", self.url))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            r.json().await.unwrap()
        }

        async fn log(&self, id: &str, stage: &str, step: &str) -> Vec<u8> {
            let url = format!("{}/v1/builds/{id}/logs/{}/{step}", self.url, stage.replace('#', "%23"));
            self.http.get(url).bearer_auth(TOKEN).send().await.unwrap().bytes().await.unwrap().to_vec()
        }

        /// Waits until `pred` holds for the build (a hang-catching deadline).
        async fn until(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
            let started = Instant::now();
            loop {
                let b = self.build(id).await;
                if pred(&b) {
                    return b;
                }
                assert!(started.elapsed() < HANG, "timed out waiting for {what}: {b:#}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }

    fn uuid() -> String {
        kiln_domain::BuildId::generate().to_string()
    }

    fn stage<'a>(b: &'a Value, name: &str) -> Option<&'a Value> {
        b["stages"].as_array().unwrap().iter().find(|s| s["name"] == name)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn external_events_start_instances_fan_in_and_stop_a_stage() {
        let s = Scratch::new();
        let dev = Dev::start(&s);
        let pid_file = s.shared_dir().join("pid");
        let yaml = format!(
            r#"version: "1"
stages:
  wait:
    on: [{{ event: done, policy: delete }}]
    steps:
      - name: idle
        commands: ["echo $$ > {}; exec sleep 600"]
  greet:
    on: [{{ event: hello }}]
    steps:
      - name: say
        commands: ['printf "%s|%s\n" "$KILN_EVENT_X" "$KILN_EVENT_Y"', 'test -s "$KILN_EVENT_PATH"']
  pair:
    on: [{{ event: [left, right] }}]
    steps:
      - name: both
        commands: ['echo "$KILN_EVENT_L $KILN_EVENT_R"']
"#,
            pid_file.display()
        );
        let (status, created) = dev.post("/v1/repos/acme/web/builds", yaml.into_bytes()).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        dev.until(&id, "wait to run", |b| stage(b, "wait").is_some_and(|s| s["status"] == "running")).await;

        // three hellos: three instances; the data reaches steps only as variables
        let nasty = json!({ "x": "\"; rm -rf / #", "y": "$(id)" });
        for _ in 0..3 {
            assert_eq!(dev.emit(&id, "hello", nasty.clone()).await, 202);
        }
        // a fan-in set: left, left, right makes one instance (the later left wins)
        assert_eq!(dev.emit(&id, "left", json!({ "l": "L1" })).await, 202);
        assert_eq!(dev.emit(&id, "left", json!({ "l": "L2" })).await, 202);
        assert_eq!(dev.emit(&id, "right", json!({ "r": "R" })).await, 202);
        // a non-matching type changes nothing
        assert_eq!(dev.emit(&id, "unrelated", json!({})).await, 202);
        let b = dev
            .until(&id, "instances to finish", |b| {
                ["greet#1", "greet#2", "greet#3", "pair#1"]
                    .iter()
                    .all(|n| stage(b, n).is_some_and(|s| s["status"] == "succeeded"))
            })
            .await;
        let names: Vec<&str> =
            b["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names.iter().filter(|n| n.starts_with("greet#")).count(), 3, "{names:?}");
        assert_eq!(names.iter().filter(|n| n.starts_with("pair#")).count(), 1, "{names:?}");
        assert_eq!(dev.log(&id, "greet#2", "say").await, b"\"; rm -rf / #|$(id)\n");
        assert_eq!(dev.log(&id, "pair#1", "both").await, b"L2 R\n");

        // `done` stops the waiting stage and its process; stopped is not a failure. (How
        // fast: the benchmark's stop figures.)
        let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
        assert!(proc_dir.exists());
        let sent = Instant::now();
        assert_eq!(dev.emit(&id, "done", json!({})).await, 202);
        dev.until(&id, "wait to stop", |b| stage(b, "wait").is_some_and(|s| s["status"] == "stopped")).await;
        while proc_dir.exists() {
            assert!(sent.elapsed() < HANG, "the step's process outlived the stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("delete event stopped the stage and its process in {:?}", sent.elapsed());
        let b = dev.until(&id, "the build to end", |b| b["status"] != "running").await;
        assert_eq!(b["status"], "succeeded", "{b:#}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn invalid_events_get_a_400_that_says_why() {
        let s = Scratch::new();
        let dev = Dev::start(&s);
        let (_, created) = dev
            .post(
                "/v1/repos/acme/web/builds",
                b"version: \"1\"\nsteps:\n  - name: a\n    commands: [\"sleep 5\"]\n".to_vec(),
            )
            .await;
        let id = created["id"].as_str().unwrap();
        let path = format!("/v1/builds/{id}/events");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (br#"{"specversion":"1.0","source":"s","type":"t"}"#.to_vec(), "\"id\""),
            (br#"{"specversion":"1.0","id":"1","source":"s"}"#.to_vec(), "\"type\""),
            (br#"{"specversion":"1.0","id":"1","type":"t"}"#.to_vec(), "\"source\""),
            (b"not json".to_vec(), "not valid JSON"),
            (
                format!(
                    r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","data":{{"x":"{}"}}}}"#,
                    "a".repeat(70_000)
                )
                .into_bytes(),
                "limit",
            ),
            (
                br#"{"specversion":"1.0","id":"1","source":"s","type":"dev.kiln.report.stage-finished"}"#
                    .to_vec(),
                "reserved",
            ),
        ];
        for (body, says) in cases {
            let (status, answer) = dev.post(&path, body).await;
            assert_eq!(status, 400, "{answer}");
            assert!(answer["message"].as_str().unwrap().contains(says), "{answer} should mention {says}");
        }
        assert_eq!(dev.emit("no-such-build", "t", json!({})).await, 404);
    }
}
