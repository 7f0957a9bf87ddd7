//! Steps never see Kiln's keys, and start from a clean environment: a step that runs
//! `env`, reads `/proc/$PPID/environ` and scans every readable `/proc/*/environ` and
//! `/proc/*/cmdline` finds none of the admin token, the signing key, or the AWS secret key
//! and session token given to Kiln — under `kiln run`, `kiln dev`, and the runner
//! function's poll mode (`runner --poll` beside `kiln dev --backend aws`, on LocalStack).
//! Run as root (as CI does), the steps run as "nobody"; run as another user, the runner's
//! non-dumpable flag is what keeps its environ closed.

mod common;
use common::{Scratch, private_resources, repo_root};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The step: what it can see of the environment and of every process.
const SCAN: &str = r#"version: "1"
steps:
  - name: scan
    commands:
      - |
        echo "uid $(id -u) groups $(id -G)"
        env | sed 's/^/env: /'
        echo "ppid cmdline: $(tr '\000' ' ' < /proc/$PPID/cmdline)"
        if tr '\000' '\n' 2>/dev/null < /proc/$PPID/environ > "$TMPDIR/pe"; then
          echo "ppid environ: readable"; sed 's/^/ppid: /' "$TMPDIR/pe"
        else
          echo "ppid environ: unreadable"
        fi
        t=0; e=0; c=0
        for d in /proc/[0-9]*; do
          t=$((t + 1))
          if tr '\000' '\n' 2>/dev/null < "$d/environ" > "$TMPDIR/e"; then
            e=$((e + 1)); sed "s|^|environ $d: |" "$TMPDIR/e"
          fi
          if tr '\000' ' ' 2>/dev/null < "$d/cmdline" > "$TMPDIR/c"; then
            c=$((c + 1)); echo "cmdline $d: $(cat "$TMPDIR/c")"
          fi
        done
        echo "scanned $t processes: $e environ, $c cmdline"
"#;

fn unique(what: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// Kiln's keys for one test, each value unique so that a hit cannot be a coincidence.
struct Keys {
    token: String,
    signing_key: String,
    aws_secret: String,
    aws_session: String,
}

impl Keys {
    fn new() -> Self {
        Keys {
            token: unique("admin-token"),
            signing_key: unique("signing-key"),
            aws_secret: unique("aws-secret"),
            aws_session: unique("aws-session"),
        }
    }

    /// As Kiln gets them: in its environment.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KILN_TOKEN", self.token.clone()),
            ("KILN_ADMIN_TOKENS", self.token.clone()),
            ("KILN_SIGNING_KEY", self.signing_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.aws_secret.clone()),
            ("AWS_SESSION_TOKEN", self.aws_session.clone()),
        ]
    }

    fn assert_absent(&self, what: &str, text: &str) {
        for (name, value) in [
            ("the admin token", &self.token),
            ("the signing key", &self.signing_key),
            ("the AWS secret key", &self.aws_secret),
            ("the AWS session token", &self.aws_session),
        ] {
            if let Some(at) = text.find(value.as_str()) {
                let line = text[..at].rsplit('\n').next().unwrap_or_default();
                panic!("{what}: {name} is readable by the step, after {line:?}");
            }
        }
    }
}

/// Checks the scan really ran and really read /proc; `parent` is in the runner's command
/// line.
fn assert_scanned(log: &str, parent: &str) {
    assert!(log.contains("env: KILN_BUILD_ID="), "the step did not run `env`:\n{log}");
    let ppid = log.lines().find_map(|l| l.strip_prefix("ppid cmdline: ")).unwrap_or_default();
    assert!(ppid.contains(parent), "the step's parent is not the runner ({parent}): {ppid:?}");
    assert!(log.contains("ppid environ: unreadable\n"), "the runner's environ is readable:\n{log}");
    let counts = log.lines().find_map(|l| l.strip_prefix("scanned ")).unwrap_or_else(|| panic!("{log}"));
    let n: Vec<u32> = counts.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    let (total, environ, cmdline) = (n[0], n[1], n[2]);
    eprintln!("scanned {total} processes: {environ} environ, {cmdline} cmdline readable");
    assert!(total >= 3 && cmdline >= 3, "too few processes scanned: {counts}");
    // Its own environ at least (so the scan can read one), and it holds the build's variables.
    assert!(environ >= 1 && log.contains(": KILN_BUILD_ID="), "{counts}");
    if effective_uid() == 0 {
        assert!(log.contains("uid 65534 groups 65534\n"), "a root runner's steps run as nobody:\n{log}");
    }
}

/// Our effective uid: the owner of our /proc entry.
fn effective_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").expect("/proc/self").uid()
}

#[test]
fn kiln_run_steps_never_see_kilns_keys() {
    let s = Scratch::new();
    let keys = Keys::new();
    let file = s.pipeline("scan.yml", SCAN);
    let env = keys.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, doc) = s.run_json(&file, &env);
    assert_eq!(code, 0, "{doc:#}");
    let id = doc["id"].as_str().unwrap();
    let log = String::from_utf8_lossy(&s.log(id, "default/scan")).to_string();
    assert_scanned(&log, "kiln run");
    keys.assert_absent("kiln run, step log", &log);
    let init = s.kiln(&["logs", id, "--init"]);
    keys.assert_absent("kiln run, init log", &String::from_utf8_lossy(&init.stdout));
}

#[test]
fn only_named_variables_of_kilns_environment_reach_steps() {
    let s = Scratch::new();
    let (named, listed, unnamed) = (unique("named"), unique("listed"), unique("unnamed"));
    let file = s.pipeline(
        "env.yml",
        "version: \"1\"\nsteps:\n  - name: env\n    commands:\n      - env | sort\n      - touch \"$HOME/h\" \"$TMPDIR/t\" && echo writable\n",
    );
    let out = s.kiln_env(
        &["run", "--json", "--pass-env", "KILN_T_NAMED", file.to_str().unwrap()],
        &[
            ("KILN_T_NAMED", &named),
            ("KILN_T_LISTED", &listed),
            ("KILN_T_UNNAMED", &unnamed),
            ("KILN_PASS_ENV", "KILN_T_LISTED, KILN_T_NOT_SET"),
            ("LANG", "de_DE.UTF-8"),
        ],
    );
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let log = format!("\n{}", String::from_utf8_lossy(&s.log(doc["id"].as_str().unwrap(), "default/env")));
    assert!(log.contains(&format!("KILN_T_NAMED={named}\n")), "--pass-env passes:\n{log}");
    assert!(log.contains(&format!("KILN_T_LISTED={listed}\n")), "KILN_PASS_ENV passes:\n{log}");
    assert!(!log.contains(&unnamed) && !log.contains("KILN_T_NOT_SET"), "{log}");
    assert!(!log.contains("KILN_PASS_ENV"), "{log}");
    // The neutral variables are the runner's choice, not inherited.
    assert!(log.contains("\nLANG=C.UTF-8\n") && log.contains("\nTZ=UTC\n"), "{log}");
    assert!(log.contains("\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"), "{log}");
    assert!(log.contains("\nHOME=/") && log.contains("\nTMPDIR=/") && log.ends_with("writable\n"), "{log}");

    // Kiln's own keys are never passed, even when named.
    let out = s.kiln_env(&["run", "--pass-env", "KILN_SIGNING_KEY", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never passed to steps"));
}

/// A `kiln dev` (or any server printing its URL first) on a free port; killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn dev(s: &Scratch, args: &[&str], env: &[(String, String)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(["dev", "--addr", "127.0.0.1:0", "--data-dir"]).arg(s.data_dir()).args(args);
        cmd.envs(env.iter().map(|(k, v)| (k, v))).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start kiln dev");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Server { child, url }
    }

    async fn submit(&self, token: &str, yaml: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/repos/acme/web/builds", self.url))
            .bearer_auth(token)
            .body(yaml.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Vec<u8>) {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.url) };
        let r = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    async fn ended(&self, token: &str, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let (_, body) = self.get(token, &format!("/v1/builds/{id}")).await;
            let b: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if matches!(b["status"].as_str(), Some("succeeded" | "failed" | "canceled")) {
                return b;
            }
            assert!(started.elapsed() < Duration::from_secs(90), "the build did not end: {b:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The scan step's log, and every log of the build (init included) as one text.
    async fn logs(&self, token: &str, id: &str) -> (String, String) {
        let (_, scan) = self.get(token, &format!("/v1/builds/{id}/logs/default/scan?max=67108864")).await;
        let (_, list) = self.get(token, &format!("/v1/builds/{id}/logs")).await;
        let list: Value = serde_json::from_slice(&list).unwrap();
        let mut all = Vec::new();
        for l in list["logs"].as_array().unwrap() {
            let url = format!("{}&max=67108864", l["url"].as_str().unwrap());
            all.extend(self.get(token, &url).await.1);
        }
        (String::from_utf8_lossy(&scan).to_string(), String::from_utf8_lossy(&all).to_string())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kiln_dev_steps_never_see_kilns_keys() {
    let s = Scratch::new();
    let keys = Keys::new();
    let env: Vec<(String, String)> = keys.env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let dev = Server::dev(&s, &[], &env);
    let id = dev.submit(&keys.token, SCAN).await;
    let b = dev.ended(&keys.token, &id).await;
    assert_eq!(b["status"], "succeeded", "{b:#}");
    let (scan, all) = dev.logs(&keys.token, &id).await;
    assert_scanned(&scan, "kiln dev");
    keys.assert_absent("kiln dev", &all);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_file_keeps_the_token_off_the_command_line() {
    let s = Scratch::new();
    let token = unique("file-token");
    let file = s.dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let dev = Server::dev(&s, &["--token-file", file.to_str().unwrap()], &[]);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", dev.child.id())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&token));
    assert_eq!(dev.get(&token, "/v1/builds/01234567-89ab-7def-8123-456789abcdef").await.0, 404);
    assert_eq!(dev.get("wrong", "/v1/builds/01234567-89ab-7def-8123-456789abcdef").await.0, 401);
    // the client commands read it too
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["submit", "--api", &dev.url, "--token-file", file.to_str().unwrap()])
        .arg(repo_root().join("examples/hello.yml"))
        .env_remove("KILN_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let help = Command::new(env!("CARGO_BIN_EXE_kiln")).args(["status", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--token-file"));
}

/// The runner function's binary, built beside `kiln` (`cargo build -p kiln-fn-runner`).
fn runner_binary() -> std::path::PathBuf {
    let kiln = std::path::Path::new(env!("CARGO_BIN_EXE_kiln"));
    let runner = kiln.with_file_name("runner");
    assert!(
        runner.exists(),
        "{} is missing: build it first (cargo build -p kiln-fn-runner)",
        runner.display()
    );
    runner
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack (scripts/test.sh starts it and runs ignored tests)"]
async fn runner_poll_steps_never_see_kilns_keys() {
    assert_eq!(
        std::env::var("KILN_LOCALSTACK").as_deref(),
        Ok("1"),
        "run with LocalStack's environment (scripts/test.sh sets KILN_LOCALSTACK=1)"
    );
    let s = Scratch::new();
    let keys = Keys::new();
    let mut env: Vec<(String, String)> = keys.env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    env.extend(private_resources("poll"));
    // This kiln dev serves the API, fan-in and dispatch; the poller runs every job.
    let mut dev_env = env.clone();
    dev_env.push(("KILN_RUNNER_SLOTS".into(), "0".into()));
    let dev = Server::dev(&s, &["--backend", "aws"], &dev_env);
    let mut runner = Command::new(runner_binary());
    runner.arg("--poll").envs(env.iter().map(|(k, v)| (k, v))).env("KILN_API_URL", &dev.url);
    let child = runner.stdout(Stdio::null()).spawn().expect("start runner --poll");
    let runner = Server { child, url: String::new() }; // killed when dropped
    let id = dev.submit(&keys.token, SCAN).await;
    let b = dev.ended(&keys.token, &id).await;
    assert_eq!(b["status"], "succeeded", "{b:#}");
    let (scan, all) = dev.logs(&keys.token, &id).await;
    assert_scanned(&scan, "runner --poll");
    keys.assert_absent("runner --poll", &all);
    drop(runner);
}
