//! The embedded default survives a crash: `kill -9` of a real `kiln dev` process, then a
//! restart on the same data dir, resumes every accepted build; other processes (`kiln run`,
//! `kiln status`) work on the data dir of a running `kiln dev`.

mod common;
use common::{Scratch, repo_root};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-admin-token";

/// How long a test waits for the whole batch of builds: only a hang trips it.
const BATCH_HANG: Duration = Duration::from_secs(600);

/// A `kiln dev` process on a data dir. Without `KILN_SIGNING_KEY`: the restarted process
/// must accept the tokens of jobs queued before the crash (the key kept in the data dir).
struct Dev {
    child: Child,
    url: String,
}

impl Dev {
    fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(["dev", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("KILN_TOKEN", TOKEN)
            .env_remove("KILN_SIGNING_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start kiln dev");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Dev { child, url }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    async fn submit(&self, http: &reqwest::Client, yaml: &str) -> Result<String, String> {
        let resp = http
            .post(format!("{}/v1/repos/acme/web/builds", self.url))
            .bearer_auth(TOKEN)
            .body(yaml.as_bytes().to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
        if status != 201 {
            return Err(format!("{status}: {body}"));
        }
        Ok(body["id"].as_str().expect("id").to_string())
    }

    async fn get(&self, http: &reqwest::Client, path: &str) -> serde_json::Value {
        let resp = http.get(format!("{}{path}", self.url)).bearer_auth(TOKEN).send().await.expect("get");
        assert_eq!(resp.status().as_u16(), 200, "GET {path}");
        resp.json().await.expect("json")
    }

    /// Waits until every build has ended; returns their documents.
    async fn wait_all(&self, http: &reqwest::Client, ids: &[String]) -> Vec<serde_json::Value> {
        let started = Instant::now();
        let mut out = Vec::new();
        for id in ids {
            loop {
                let b = self.get(http, &format!("/v1/builds/{id}")).await;
                if !matches!(b["status"].as_str(), Some("pending" | "running")) {
                    out.push(b);
                    break;
                }
                assert!(started.elapsed() < BATCH_HANG, "build {id} did not end: {b}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        out
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Files in `dir` whose names start with `prefix`.
fn markers(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn assert_all_ended_well(docs: &[serde_json::Value]) {
    for b in docs {
        assert_eq!(b["status"], "succeeded", "{b}");
        for s in b["stages"].as_array().expect("stages") {
            assert_eq!(s["status"], "succeeded", "{b}");
            for t in s["steps"].as_array().expect("steps") {
                assert_eq!(t["status"], "succeeded", "{b}");
            }
        }
    }
}

/// `kill -9` while 5 builds run a 4 s step and 60 more are queued; a restart on the same
/// data dir finishes every one: the interrupted stages as attempt 2, once their lease
/// (3 s here) ran out, with attempt 1's log kept apart.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_running_and_restart_resumes_every_build() {
    let scratch = Scratch::new();
    let shared = scratch.shared_dir();
    let env = [("KILN_LEASE_SECS", "3"), ("KILN_RUNNER_SLOTS", "5")];
    let mut dev = Dev::start(&scratch.data_dir(), &env);
    let http = reqwest::Client::new();
    // Each run leaves a marker named after the build, so the test knows which runs the
    // kill interrupted.
    let yaml = format!(
        "version: \"1\"\nsteps:\n  - name: slow\n    commands:\n      - echo started\n      - \
         touch {}/run-$KILN_BUILD_ID-$$\n      - sleep 4\n      - echo finished\n",
        shared.display()
    );
    let mut ids = Vec::new();
    for _ in 0..65 {
        ids.push(dev.submit(&http, &yaml).await.expect("submit"));
    }
    // Five runs under way (the runner has five slots), and their first lines flushed.
    let started = Instant::now();
    while markers(&shared, "run-").len() < 5 {
        assert!(started.elapsed() < Duration::from_secs(120), "the first five never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    dev.kill9();
    let interrupted: Vec<String> =
        ids.iter().filter(|id| !markers(&shared, &format!("run-{id}-")).is_empty()).cloned().collect();
    assert!(!interrupted.is_empty(), "some builds were running at the kill");

    let dev = Dev::start(&scratch.data_dir(), &env);
    let docs = dev.wait_all(&http, &ids).await;
    assert_all_ended_well(&docs);
    for id in &interrupted {
        let b = dev.get(&http, &format!("/v1/builds/{id}")).await;
        assert_eq!(b["stages"][0]["attempt"], 2, "{b}");
        let logs = dev.get(&http, &format!("/v1/builds/{id}/logs")).await;
        let attempts: Vec<u64> = logs
            .as_array()
            .or_else(|| logs["logs"].as_array())
            .expect("a list of logs")
            .iter()
            .filter(|l| l["step"] == "slow")
            .filter_map(|l| l["attempt"].as_u64())
            .collect();
        assert!(attempts.contains(&1) && attempts.contains(&2), "{logs}");
        // Attempt 1 never finished; attempt 2 ran the whole step.
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["logs", id, "default/slow"])
            .env("KILN_DATA_DIR", scratch.data_dir())
            .current_dir(repo_root())
            .output()
            .expect("kiln logs");
        let latest = String::from_utf8_lossy(&out.stdout);
        assert!(latest.contains("started") && latest.contains("finished"), "{latest}");
        let first = std::fs::read_to_string(
            scratch.data_dir().join(format!("logs/{id}/step/0001/default/slow/1.log")),
        )
        .expect("attempt 1's log");
        assert!(first.contains("started") && !first.contains("finished"), "{first}");
    }
    // Nothing left pending or running in the data dir either (as `kiln status` sees it).
    for id in ids.iter().take(3) {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["status", id, "--json"])
            .env("KILN_DATA_DIR", scratch.data_dir())
            .current_dir(repo_root())
            .output()
            .expect("kiln status");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        assert_eq!(doc["status"], "succeeded", "{doc}");
    }
}

/// A submit answered 201 is on disk: killing the process right after loses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_201_is_never_lost() {
    let scratch = Scratch::new();
    let mut dev = Dev::start(&scratch.data_dir(), &[]);
    let http = reqwest::Client::new();
    let yaml = "version: \"1\"\nsteps:\n  - name: quick\n    commands: [\"true\"]\n";
    let mut accepted = Vec::new();
    for _ in 0..10 {
        accepted.push(dev.submit(&http, yaml).await.expect("submit"));
    }
    // Killed as soon as the last 201 arrived: nothing had a chance to run for it.
    dev.kill9();
    let dev = Dev::start(&scratch.data_dir(), &[]);
    let docs = dev.wait_all(&http, &accepted).await;
    assert_eq!(docs.len(), accepted.len());
    assert_all_ended_well(&docs);
}

/// `kiln run`, `kiln status` and `kiln events` on the data dir of a running `kiln dev`.
#[tokio::test(flavor = "multi_thread")]
async fn run_and_status_beside_a_running_dev() {
    let scratch = Scratch::new();
    let dev = Dev::start(&scratch.data_dir(), &[]);
    let http = reqwest::Client::new();
    let yaml = "version: \"1\"\nsteps:\n  - name: hello\n    commands: [\"echo hello\", \"sleep 1\"]\n";
    let id = dev.submit(&http, yaml).await.expect("submit");
    let p = scratch.pipeline("p.yml", yaml);
    let (code, doc) = scratch.run_json(&p, &[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let run_id = doc["id"].as_str().expect("id").to_string();
    dev.wait_all(&http, std::slice::from_ref(&id)).await;
    for build in [&id, &run_id] {
        let out = scratch.kiln(&["status", build, "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        assert_eq!(doc["status"], "succeeded", "{doc}");
        let out = scratch.kiln(&["events", build]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("dev.kiln."), "events of {build}");
    }
    // And the server sees the build `kiln run` made.
    assert_eq!(dev.get(&http, &format!("/v1/builds/{run_id}")).await["status"], "succeeded");
}

/// A data dir of the earlier file layout is refused with what to do.
#[test]
fn the_earlier_file_layout_is_refused() {
    let scratch = Scratch::new();
    let builds = scratch.data_dir().join("builds");
    std::fs::create_dir_all(&builds).expect("mkdir");
    std::fs::write(builds.join("0190-old.json"), b"{}").expect("write");
    let p = scratch.pipeline("p.yml", "version: \"1\"\nsteps:\n  - name: x\n    commands: [\"true\"]\n");
    let out = scratch.kiln(&["run", p.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("earlier file layout") && err.contains("--data-dir"), "{err}");
}
