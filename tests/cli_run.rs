//! `kiln run` end to end on the embedded backend: real processes, real logs in the data
//! dir, the exit codes and output users rely on.

mod common;
use common::{HANG, Scratch, release, stage_status, step_statuses, wait_for_file};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn hello_runs_with_exit_0_as_the_readme_says() {
    let s = Scratch::new();
    let out = s.kiln(&["run", "examples/hello.yml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("default/greet | hello from kiln"), "{stdout}");
    assert!(stdout.contains("default/count | tick 3"), "{stdout}");
    assert!(stdout.contains("succeeded"), "summary missing:\n{stdout}");
}

#[test]
fn a_failing_step_fails_its_stage_and_the_build_and_skips_what_needs_it() {
    let s = Scratch::new();
    let (code, doc) = s.run_json(&common::repo_root().join("examples/dag.yml"), &[]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(doc["status"], "failed");
    assert_eq!(stage_status(&doc, "build"), "succeeded");
    assert_eq!(stage_status(&doc, "lint"), "succeeded");
    assert_eq!(stage_status(&doc, "unit"), "succeeded");
    assert_eq!(stage_status(&doc, "integration"), "failed");
    assert_eq!(stage_status(&doc, "package"), "skipped");
    let integration = doc["stages"].as_array().unwrap().iter().find(|s| s["name"] == "integration").unwrap();
    assert_eq!(integration["steps"][0]["exit_code"], 3);
    // stderr of the step is in its log
    let id = doc["id"].as_str().unwrap();
    assert_eq!(s.log(id, "integration/test"), b"integration: 1 failed\n");
}

#[test]
fn a_failing_step_stops_its_stage() {
    let s = Scratch::new();
    let p = s.pipeline(
        "p.yml",
        r#"version: "1"
steps:
  - name: one
    commands: ["echo one"]
  - name: two
    commands: ["echo two; false; echo not reached"]
  - name: three
    commands: ["echo three"]
"#,
    );
    let (code, doc) = s.run_json(&p, &[]);
    assert_eq!(code, 1);
    let statuses: Vec<String> = step_statuses(&doc).into_iter().map(|(_, _, st)| st).collect();
    assert_eq!(statuses, ["succeeded", "failed", "skipped"]);
    assert_eq!(
        s.log(doc["id"].as_str().unwrap(), "default/two"),
        b"two\n",
        "`sh -e` stops at the first failure"
    );
}

#[test]
fn logs_list_init_then_steps_then_services_with_one_init_log() {
    let s = Scratch::new();
    let (code, doc) = s.run_json(&common::repo_root().join("examples/service.yml"), &[]);
    assert_eq!(code, 0, "{doc:#}");
    let id = doc["id"].as_str().unwrap();
    let out = s.kiln(&["logs", id]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with("==> ")).collect();
    assert_eq!(headers, ["==> init <==", "==> test/wait <==", "==> test/web <=="], "{text}");
    let init = String::from_utf8_lossy(&s.kiln(&["logs", id, "--init"]).stdout).to_string();
    assert!(init.contains("workspace"), "init log holds the setup output:\n{init}");
    assert!(init.contains("web"), "init log mentions the service:\n{init}");
    assert!(!init.contains("<h1>ok</h1>"), "no step output in the init log:\n{init}");
    assert!(String::from_utf8_lossy(&s.log(id, "test/wait")).contains("<h1>ok</h1>"));
}

/// Each stage waits for the other to have started: run one after the other, the first
/// would wait in vain and fail (after a minute).
#[test]
fn two_independent_stages_run_in_parallel() {
    let s = Scratch::new();
    let shared = s.shared_dir();
    let (left, right) = (shared.join("left-started"), shared.join("right-started"));
    let p = s.pipeline(
        "p.yml",
        &format!(
            r#"version: "1"
stages:
  left:
    steps:
      - name: meet
        commands:
          - touch {}
          - {}
  right:
    steps:
      - name: meet
        commands:
          - touch {}
          - {}
"#,
            left.display(),
            wait_for_file(&right),
            right.display(),
            wait_for_file(&left)
        ),
    );
    let (code, doc) = s.run_json(&p, &[]);
    assert_eq!(code, 0, "the stages did not run side by side: {doc:#}");
}

#[test]
fn step_logs_hold_exactly_the_bytes_printed_even_invalid_utf8() {
    let s = Scratch::new();
    let p = s.pipeline(
        "p.yml",
        r#"version: "1"
steps:
  - name: bytes
    commands:
      - printf 'caf\303\251 \377\376 raw\r\nno newline at end'
"#,
    );
    let (code, doc) = s.run_json(&p, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        s.log(doc["id"].as_str().unwrap(), "default/bytes"),
        b"caf\xc3\xa9 \xff\xfe raw\r\nno newline at end"
    );
}

/// Runs `kiln run --json FILE` while sampling its peak resident memory (VmHWM) from
/// /proc; returns the exit code, the build document and the last peak seen, in KiB.
fn run_measuring_rss(s: &Scratch, file: &std::path::Path) -> (i32, serde_json::Value, u64) {
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "--json", file.to_str().unwrap()])
        .env("KILN_DATA_DIR", s.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while let Ok(text) = std::fs::read_to_string(&status_path) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            match hwm {
                Some(kib) => peak = peak.max(kib),
                None => break, // a zombie: it has exited
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let out = child.wait_with_output().unwrap();
    let peak = sampler.join().unwrap();
    let doc = serde_json::from_slice(&out.stdout).expect("kiln run --json prints JSON");
    (out.status.code().unwrap_or(-1), doc, peak)
}

#[test]
fn fifty_megabytes_are_stored_byte_exact_with_bounded_memory() {
    let s = Scratch::new();
    let copy = s.shared_dir().join("printed.txt");
    let p = s.pipeline(
        "p.yml",
        &format!(
            r#"version: "1"
steps:
  - name: flood
    commands:
      - seq 1 7000000 | tee {}
"#,
            copy.display()
        ),
    );
    let started = Instant::now();
    let (code, doc, rss_kib) = run_measuring_rss(&s, &p);
    let took = started.elapsed();
    assert_eq!(code, 0, "{doc:#}");
    let printed = std::fs::read(&copy).unwrap();
    assert!(printed.len() > 50_000_000, "printed {} bytes", printed.len());
    let stored = s.log(doc["id"].as_str().unwrap(), "default/flood");
    assert_eq!(stored.len(), printed.len());
    assert!(stored == printed, "stored log differs from the printed bytes");
    let rss_mib = rss_kib / 1024;
    eprintln!("50 MB step: kiln run took {took:?}, peak RSS of kiln {rss_mib} MiB");
    assert!(rss_mib < 64, "kiln used {rss_mib} MiB while a step printed 50 MB: memory is not bounded");
}

/// The step holds still after its first line until the test has read that line from
/// `kiln run`'s output: the line is shown while the step runs, not at its end. (How soon:
/// the benchmark's log latency figures.)
#[test]
fn a_line_is_visible_while_the_step_still_runs() {
    let s = Scratch::new();
    let gate = s.shared_dir().join("first-line-seen");
    let p = s.pipeline(
        "p.yml",
        &format!(
            r#"version: "1"
steps:
  - name: slow
    commands:
      - echo first
      - {}
      - echo second
"#,
            wait_for_file(&gate)
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", p.to_str().unwrap()])
        .env("KILN_DATA_DIR", s.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(word) = line.strip_prefix("default/slow | ") {
            if word == "first" {
                release(&gate);
            }
            seen.push(word.to_string());
        }
    }
    // Had the line been held until the step ended, the step would have waited in vain and
    // failed.
    assert!(child.wait().unwrap().success(), "the first line was not shown while the step ran");
    assert_eq!(seen, ["first", "second"]);
}

/// The statuses, exit codes and log bytes of a finished build, to compare two runs.
fn outcome(s: &Scratch, doc: &serde_json::Value) -> Vec<String> {
    let id = doc["id"].as_str().unwrap();
    let mut v = vec![doc["status"].to_string()];
    for st in doc["stages"].as_array().unwrap() {
        v.push(format!("{} {} attempt {}", st["name"], st["status"], st["attempt"]));
        for t in st["steps"].as_array().unwrap() {
            v.push(format!("  {} {} {}", t["name"], t["status"], t["exit_code"]));
            if t["status"] != "skipped" {
                let log =
                    s.log(id, &format!("{}/{}", st["name"].as_str().unwrap(), t["name"].as_str().unwrap()));
                // The workspace path in the log names the build and the scratch dir.
                let log = String::from_utf8_lossy(&log)
                    .replace(id, "<build>")
                    .replace(&s.dir.path().display().to_string(), "<dir>");
                // Under a root runner whose data dir "nobody" cannot reach, the workspace
                // is a fresh job area in the temp dir instead.
                let log = job_area(&log);
                v.push(format!("  log {log}"));
            }
        }
    }
    v
}

#[test]
fn delivering_every_message_twice_changes_nothing() {
    for example in ["examples/dag.yml", "examples/hello.yml"] {
        let p = common::repo_root().join(example);
        let once = Scratch::new();
        let (code1, doc1) = once.run_json(&p, &[]);
        let twice = Scratch::new();
        let (code2, doc2) = twice.run_json(&p, &[("KILN_TEST_DELIVER_TWICE", "1")]);
        assert_eq!(code1, code2, "{example}");
        assert_eq!(outcome(&once, &doc1), outcome(&twice, &doc2), "{example}");
        // The history has each event once.
        let out = twice.kiln(&["events", doc2["id"].as_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["id"].to_string())
            .collect();
        let n = ids.len();
        assert!(n > 5, "{example}: the history was read ({n} events)");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "an event was recorded twice");
    }
}

#[test]
fn status_reads_a_finished_build_from_the_data_dir() {
    let s = Scratch::new();
    let (_, doc) = s.run_json(&common::repo_root().join("examples/hello.yml"), &[]);
    let out = s.kiln(&["status", doc["id"].as_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("succeeded") && text.contains("greet") && text.contains("count"), "{text}");
    let missing = s.kiln(&["status", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn a_step_timeout_fails_the_step_quickly() {
    let s = Scratch::new();
    let p = s.pipeline(
        "p.yml",
        r#"version: "1"
steps:
  - name: hang
    timeout: 1s
    commands: ["sleep 60"]
"#,
    );
    let started = Instant::now();
    let (code, doc) = s.run_json(&p, &[]);
    assert_eq!(code, 1);
    assert!(started.elapsed() < HANG, "{:?}", started.elapsed());
    let step = &doc["stages"][0]["steps"][0];
    assert_eq!(step["status"], "failed");
    assert_eq!(step["reason"], "timeout", "{step}");
}

/// `log` with each job area of the system temp dir (`.../kiln-job-<hex>`) written `<dir>`.
fn job_area(log: &str) -> String {
    let mut out = String::new();
    let mut rest = log;
    while let Some(at) = rest.find("/kiln-job-") {
        let start = rest[..at].rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let hex_end =
            rest[at + 10..].find(|c: char| !c.is_ascii_hexdigit()).map_or(rest.len(), |i| at + 10 + i);
        out.push_str(&rest[..start]);
        out.push_str("<dir>");
        rest = &rest[hex_end..];
    }
    out.push_str(rest);
    out
}
