//! The runner against in-memory sinks, really spawning /bin/sh.

mod runner_support;

use kiln_core::runner::{StageOutcome, StepReason, run_job};
use kiln_domain::event::{CloudEvent, types};
use kiln_domain::logs::LogStream;
use runner_support::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Long enough that only a hang trips it on a loaded machine; how fast the runner is, is
/// measured by the benchmark (bench/), not asserted here.
const HANG: Duration = Duration::from_secs(60);

/// A shell command that holds a step until `file` exists (after a minute it fails the
/// step, so a test that never releases it does not hang).
fn wait_for_file(file: &std::path::Path) -> String {
    format!(
        "i=0; until [ -e {} ]; do i=$((i+1)); if [ $i -gt 1200 ]; then exit 9; fi; sleep 0.05; done",
        file.display()
    )
}

/// Waits until a put matching `pred` was recorded, then creates `gate`.
async fn release_after_put(mem: &Mem, gate: &std::path::Path, pred: impl Fn(usize, bool) -> bool) {
    let t0 = Instant::now();
    while !mem.recs().iter().any(|r| matches!(r, Rec::Put { len, failed, .. } if pred(*len, *failed))) {
        assert!(t0.elapsed() < HANG, "no such put after {:?}: {:?}", t0.elapsed(), mem.recs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(gate, b"").unwrap();
}

/// `run_job`, failing the test if it has not returned within [`HANG`].
async fn within_hang<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG, f).await.expect("run_job hung")
}

fn finished(mem: &Mem) -> Vec<CloudEvent> {
    mem.events().into_iter().filter(|e| e.ty == types::STEP_FINISHED).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_step_reports_in_order_and_logs_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Mem::new();
    let job = job("test", vec![step("say", 1, &["echo hello"])]);
    let (ctx, _cancel) = ctx(&mem, config(dir.path()));
    let out = run_job(&job, 1, &ctx).await.unwrap();
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(out.outcome, StageOutcome::Completed);

    assert_eq!(
        mem.event_types(),
        vec![types::STAGE_STARTED, types::STEP_STARTED, types::STEP_FINISHED, types::STAGE_FINISHED]
    );
    let ev = mem.events();
    let source = "kiln://runner/test-runner";
    assert!(ev.iter().all(|e| e.source == source && e.kilnbuild.as_ref() == Some(&job.build)));
    assert_eq!(ev[0].subject.as_deref(), Some("stage/test"));
    assert_eq!(ev[0].data, json!({"stage": "test", "attempt": 1, "runner": "test-runner"}));
    assert_eq!(ev[1].subject.as_deref(), Some("stage/test/step/say"));
    assert_eq!(ev[1].data, json!({"stage": "test", "step": "say", "number": 1, "attempt": 1}));
    assert_eq!(ev[2].data_i64("exit_code"), Some(0));
    assert!(ev[2].data.get("reason").is_none());
    assert!(ev[2].data_u64("duration_ms").is_some());
    assert_eq!(ev[3].data, json!({"stage": "test", "attempt": 1, "outcome": "completed"}));

    let key = step_key("test", "say", 1);
    assert_eq!(mem.log(&key), b"hello\n");
    // The log is complete before the step is reported finished.
    let recs = mem.recs();
    let complete = recs.iter().position(|r| matches!(r, Rec::Complete { stream, .. } if *stream == key));
    let fin =
        recs.iter().position(|r| matches!(r, Rec::Event { event, .. } if event.ty == types::STEP_FINISHED));
    assert!(complete.unwrap() < fin.unwrap());

    // Setup lines in the one init log; nothing from the step; the workspace is gone.
    let init = mem.init_text();
    assert!(init.contains("[test] attempt 1 on runner test-runner\n"), "{init}");
    assert!(init.contains("[test] workspace "), "{init}");
    assert!(init.contains("KILN_BUILD_ID"), "{init}");
    assert!(!init.contains("hello"), "{init}");
    let ws = kiln_core::runner::workspace_path(dir.path(), &job, 1);
    assert!(!ws.exists());
    let ids: Vec<String> = mem.init.lock().unwrap().iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids[0], "test/1/0");
}

#[tokio::test(flavor = "multi_thread")]
async fn interleaving_and_failing_step_stops_the_stage() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Mem::new();
    let job = job(
        "build",
        vec![
            step("mix", 1, &["echo out1", "echo err1 >&2", "echo out2", "echo err2 >&2", "exit 3"]),
            step("never", 2, &["echo should not run"]),
        ],
    );
    let (ctx, _c) = ctx(&mem, config(dir.path()));
    let out = run_job(&job, 1, &ctx).await.unwrap();
    assert!(!out.succeeded());
    assert_eq!(out.outcome, StageOutcome::Completed);
    assert_eq!(out.steps.len(), 1);
    assert_eq!(out.steps[0].exit_code, 3);
    assert_eq!(mem.log_str(&step_key("build", "mix", 1)), "out1\nerr1\nout2\nerr2\n");
    let f = finished(&mem);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].data_i64("exit_code"), Some(3));
    assert!(mem.events().iter().all(|e| e.data_str("step") != Some("never")));
    assert!(mem.stored(&step_key("build", "never", 2)).is_none());
}

/// The step holds still after its first line until that line is stored.
#[tokio::test(flavor = "multi_thread")]
async fn first_line_is_stored_while_the_step_runs() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let mem = Mem::new();
    let job = job("t", vec![step("slow", 1, &["echo first", &wait_for_file(&gate), "echo second"])]);
    let (ctx, _c) = ctx(&mem, config(&dir.path().join("ws")));
    let (out, ()) = tokio::join!(run_job(&job, 1, &ctx), release_after_put(&mem, &gate, |_, _| true));
    assert!(out.unwrap().succeeded(), "the step was not released: its first line was not stored");
    let recs = mem.recs();
    let started = recs
        .iter()
        .find_map(|r| match r {
            Rec::Event { event, at } if event.ty == types::STEP_STARTED => Some(*at),
            _ => None,
        })
        .unwrap();
    let ended = recs
        .iter()
        .find_map(|r| match r {
            Rec::Event { event, at } if event.ty == types::STEP_FINISHED => Some(*at),
            _ => None,
        })
        .unwrap();
    let puts: Vec<(u64, usize, Instant)> = recs
        .iter()
        .filter_map(|r| match r {
            Rec::Put { offset, len, at, .. } => Some((*offset, *len, *at)),
            _ => None,
        })
        .collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert_eq!((puts[0].0, puts[0].1), (0, 6));
    assert!(started < puts[0].2 && puts[0].2 < ended, "the first line was stored while the step ran");
    assert_eq!(mem.log_str(&step_key("t", "slow", 1)), "first\nsecond\n");
}

/// A line without its newline yet is stored while the step waits (the step holds still
/// until it is).
#[tokio::test(flavor = "multi_thread")]
async fn a_partial_line_is_stored_before_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let mem = Mem::new();
    let job = job(
        "t",
        vec![step("bar", 1, &["printf 'progress 10%%'", &wait_for_file(&gate), "printf ' 100%%\\n'"])],
    );
    let (ctx, _c) = ctx(&mem, config(&dir.path().join("ws")));
    let (out, ()) = tokio::join!(run_job(&job, 1, &ctx), release_after_put(&mem, &gate, |_, _| true));
    assert!(out.unwrap().succeeded(), "the partial line was not stored while the step waited");
    let puts: Vec<(usize, Instant)> = mem
        .recs()
        .iter()
        .filter_map(|r| match r {
            Rec::Put { len, at, .. } => Some((*len, *at)),
            _ => None,
        })
        .collect();
    assert_eq!(puts[0].0, "progress 10%".len());
    assert_eq!(mem.log_str(&step_key("t", "bar", 1)), "progress 10% 100%\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_and_last_line_without_newline_are_kept_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Mem::new();
    let job = job("t", vec![step("bytes", 1, &[r"printf '\377\376abc\n'", r"printf 'tail\000end'"])]);
    let (ctx, _c) = ctx(&mem, config(dir.path()));
    run_job(&job, 1, &ctx).await.unwrap();
    assert_eq!(mem.log(&step_key("t", "bytes", 1)), b"\xff\xfeabc\ntail\x00end");
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_put_failures_are_retried_at_the_same_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Mem::new();
    mem.fail_puts.store(2, Ordering::SeqCst);
    // "two" is printed only once "one" is stored: two batches, whatever the machine's speed.
    let gate = dir.path().join("gate");
    let job = job("t", vec![step("s", 1, &["echo one", &wait_for_file(&gate), "echo two"])]);
    let (ctx, _c) = ctx(&mem, config(&dir.path().join("ws")));
    let (out, ()) = tokio::join!(run_job(&job, 1, &ctx), release_after_put(&mem, &gate, |_, failed| !failed));
    assert!(out.unwrap().succeeded());
    assert_eq!(mem.log_str(&step_key("t", "s", 1)), "one\ntwo\n");
    let puts: Vec<(u64, usize, bool)> = mem
        .recs()
        .iter()
        .filter_map(|r| match r {
            Rec::Put { offset, len, failed, .. } => Some((*offset, *len, *failed)),
            _ => None,
        })
        .collect();
    assert_eq!(puts, vec![(0, 4, true), (0, 4, true), (0, 4, false), (4, 4, false)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn stage_timeout_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let mem = Mem::new();
    let mut job = job(
        "t",
        vec![
            step("hang", 1, &[&format!("sleep 600 & echo $! > {}", pidfile.display()), "sleep 600"]),
            step("after", 2, &["echo no"]),
        ],
    );
    job.plan.timeout_ms = 1000;
    let (ctx, _c) = ctx(&mem, config(&dir.path().join("ws")));
    let out = within_hang(run_job(&job, 1, &ctx)).await.unwrap();
    assert_eq!(out.outcome, StageOutcome::Timeout);
    assert_eq!(out.steps.len(), 1);
    assert_eq!(out.steps[0].reason, Some(StepReason::Timeout));
    assert_ne!(out.steps[0].exit_code, 0);
    let f = finished(&mem);
    assert_eq!(f[0].data_str("reason"), Some("timeout"));
    let last = mem.events().pop().unwrap();
    assert_eq!(last.ty, types::STAGE_FINISHED);
    assert_eq!(last.data_str("outcome"), Some("timeout"));
    assert!(process_gone(read_pid(&pidfile)), "the background sleep survived");
}

#[tokio::test(flavor = "multi_thread")]
async fn step_timeout_fails_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Mem::new();
    let mut s = step("hang", 1, &["echo before", "sleep 600"]);
    s.timeout_ms = Some(800);
    let job = job("t", vec![s, step("after", 2, &["echo no"])]);
    let (ctx, _c) = ctx(&mem, config(dir.path()));
    let out = within_hang(run_job(&job, 1, &ctx)).await.unwrap();
    assert_eq!(out.steps.len(), 1);
    assert_eq!(out.steps[0].reason, Some(StepReason::Timeout));
    assert_eq!(out.steps[0].exit_code, 128 + libc::SIGTERM);
    assert_eq!(out.outcome, StageOutcome::Completed);
    assert_eq!(mem.log_str(&step_key("t", "hang", 1)), "before\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_kills_the_step_and_stops_the_stage() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let mem = Mem::new();
    let job = job(
        "t",
        vec![
            step("hang", 1, &[&format!("sleep 600 & echo $! > {}", pidfile.display()), "sleep 600"]),
            step("after", 2, &["echo no"]),
        ],
    );
    let (ctx, cancel) = ctx(&mem, config(&dir.path().join("ws")));
    // Cancel once the step is under way (its background process has written its pid).
    let running = pidfile.clone();
    let canceler = tokio::spawn(async move {
        let t0 = Instant::now();
        while std::fs::read_to_string(&running).map_or(true, |s| !s.ends_with('\n')) {
            assert!(t0.elapsed() < HANG, "the step never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.send_replace(true);
        cancel
    });
    let out = within_hang(run_job(&job, 1, &ctx)).await.unwrap();
    let _cancel = canceler.await.unwrap();
    assert_eq!(out.outcome, StageOutcome::Canceled);
    assert_eq!(out.steps.len(), 1);
    assert_eq!(out.steps[0].reason, Some(StepReason::Canceled));
    let last = mem.events().pop().unwrap();
    assert_eq!(last.data_str("outcome"), Some("canceled"));
    assert!(process_gone(read_pid(&pidfile)), "the background sleep survived");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ingest_reply_can_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Mem::new();
    mem.cancel_on_put.store(true, Ordering::SeqCst);
    let job = job("t", vec![step("loop", 1, &["while true; do echo tick; sleep 0.1; done"])]);
    let (ctx, _c) = ctx(&mem, config(dir.path()));
    let out = within_hang(run_job(&job, 1, &ctx)).await.unwrap();
    assert_eq!(out.outcome, StageOutcome::Canceled);
    assert_eq!(out.steps[0].reason, Some(StepReason::Canceled));
}

#[tokio::test(flavor = "multi_thread")]
async fn services_run_beside_steps_and_are_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("svc.pid");
    // The step ends only once the ticker has printed twice.
    let ticked = dir.path().join("ticked-twice");
    let mem = Mem::new();
    let mut job = job("t", vec![step("wait", 1, &[&wait_for_file(&ticked), "echo step done"])]);
    job.plan.services = vec![
        service(
            "ticker",
            1,
            &[
                &format!("echo $$ > {}", pidfile.display()),
                "i=0",
                &format!(
                    "while true; do echo svc $i $KILN_SERVICE; i=$((i+1)); [ $i = 2 ] && touch {}; sleep 0.2; done",
                    ticked.display()
                ),
            ],
        ),
        service("quitter", 2, &["echo bye", "exit 4"]),
    ];
    let (ctx, _c) = ctx(&mem, config(&dir.path().join("ws")));
    let out = run_job(&job, 1, &ctx).await.unwrap();
    assert!(out.succeeded());
    let ticker =
        LogStream::Service { stage: "t".into(), service: "ticker".into(), number: 1, attempt: 1 }.key();
    let quitter =
        LogStream::Service { stage: "t".into(), service: "quitter".into(), number: 2, attempt: 1 }.key();
    let log = mem.log_str(&ticker);
    assert!(log.starts_with("svc 0 ticker\nsvc 1 ticker\n"), "{log}");
    assert_eq!(mem.log_str(&quitter), "bye\n");
    let completed = mem.completed();
    assert!(completed.contains(&ticker) && completed.contains(&quitter), "{completed:?}");
    assert!(process_gone(read_pid(&pidfile)));
    let init = mem.init_text();
    assert!(init.contains("[t] starting service ticker\n"), "{init}");
    assert!(init.contains("[t] service quitter exited early with code 4\n"), "{init}");
    assert!(!init.contains("svc 0"));
    // The stage finished after the services were stopped and their logs completed.
    let recs = mem.recs();
    let done =
        recs.iter().position(|r| matches!(r, Rec::Event { event, .. } if event.ty == types::STAGE_FINISHED));
    let comp = recs.iter().position(|r| matches!(r, Rec::Complete { stream, .. } if *stream == ticker));
    assert!(comp.unwrap() < done.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn masked_values_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Mem::new();
    let job = job(
        "t",
        vec![
            step(
                "mask",
                1,
                &[
                    "echo \"::kiln::mask s3cr3t\"",
                    "echo \"token=s3cr3t\"",
                    "printf 'ab s3c'",
                    "sleep 2.5",
                    "printf 'r3t cd\\n'",
                ],
            ),
            step("later", 2, &["echo again s3cr3t", "echo \"::kiln::event bad-json {s3cr3t\""]),
        ],
    );
    let (ctx, _c) = ctx(&mem, config(dir.path()));
    run_job(&job, 1, &ctx).await.unwrap();
    let log = mem.log_str(&step_key("t", "mask", 1));
    assert_eq!(log, "::kiln::mask ***\ntoken=***\nab *** cd\n");
    assert_eq!(mem.log_str(&step_key("t", "later", 2)), "again ***\n::kiln::event bad-json {***\n");
    let init = mem.init_text();
    assert!(!init.contains("s3cr3t"), "{init}");
    assert!(init.contains("[t/later] ignored malformed directive: event: invalid JSON"), "{init}");
}

#[tokio::test(flavor = "multi_thread")]
async fn directives_become_events() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Mem::new();
    let lines = [
        r#"echo '::kiln::event com.example.coin {"content":"heads"}'"#,
        "echo '::kiln::progress base-os aws 40'",
        "echo '::kiln::progress base-os aws 90 pushing'",
        "echo '::kiln::result base-os aws ok ami-123'",
        "echo '::kiln::result base-os gcp error quota exceeded'",
        "echo '::kiln::progress base-os aws 400'",
        "echo '::kiln::event dev.kiln.report.step-finished {}'",
        "printf '::kiln::result base-os azure ok'",
    ];
    let job = job("img", vec![step("bake", 1, &lines)]);
    let (ctx, _c) = ctx(&mem, config(dir.path()));
    run_job(&job, 1, &ctx).await.unwrap();
    let ev: Vec<CloudEvent> =
        mem.events().into_iter().filter(|e| !e.ty.starts_with("dev.kiln.report")).collect();
    assert_eq!(ev.len(), 6, "{ev:#?}");
    assert!(ev.iter().all(|e| e.subject.as_deref() == Some("stage/img/step/bake")));
    assert_eq!(ev[0].ty, "com.example.coin");
    assert_eq!(ev[0].data, json!({"content": "heads"}));
    assert_eq!(ev[1].ty, types::IMAGE_PROGRESS);
    assert_eq!(
        ev[1].data,
        json!({"image": "base-os", "provider": "aws", "percent": 40, "phase": "building", "stage": "img", "step": "bake"})
    );
    assert_eq!(ev[2].data["phase"], "pushing");
    assert_eq!(ev[3].ty, types::IMAGE_RESULT);
    assert_eq!(
        ev[3].data,
        json!({"image": "base-os", "provider": "aws", "ok": true, "uri": "ami-123", "stage": "img", "step": "bake"})
    );
    assert_eq!(
        ev[4].data,
        json!({"image": "base-os", "provider": "gcp", "ok": false, "error": "quota exceeded", "stage": "img", "step": "bake"})
    );
    assert_eq!(ev[5].data["provider"], "azure");
    // Every line stays in the log; bad ones are reported in the init log.
    let log = mem.log_str(&step_key("img", "bake", 1));
    assert_eq!(log.lines().count(), lines.len());
    let init = mem.init_text();
    assert!(init.contains("[img/bake] ignored malformed directive: progress: percent `400`"), "{init}");
    assert!(init.contains("reserved"), "{init}");
    // A step cannot forge a report.
    assert_eq!(mem.event_types().iter().filter(|t| *t == types::STEP_FINISHED).count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn event_data_and_environment_reach_steps_as_variables_only() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Mem::new();
    let mut s = step(
        "env",
        1,
        &[
            r#"printf '%s\n' "$KILN_EVENT_X" "$KILN_EVENT_Y" "$KILN_EVENT_N" "$KILN_EVENT_OBJ""#,
            r#"echo "$A $B $C $KILN_BUILD_ID $KILN_REPO $KILN_STAGE $KILN_STEP $KILN_ATTEMPT""#,
            r#"test "$(pwd)" = "$KILN_WORKSPACE""#,
            r#"test -z "$(ls -A)""#,
            r#"cat "$KILN_EVENT_PATH""#,
        ],
    );
    s.env.insert("B".into(), "step-b".into());
    let mut job = job("heads#2", vec![s]);
    job.env.insert("A".into(), "pipe-a".into());
    job.env.insert("SECRET_TOKEN".into(), "hunter2".into());
    job.plan.env.insert("B".into(), "stage-b".into());
    job.plan.env.insert("C".into(), "stage-c".into());
    let data = json!({"x": "\"; rm -rf / #", "y": "$(id)", "n": 5, "obj": {"k": [1, "two"]}});
    job.trigger_event = Some(CloudEvent::new("coin", "test", &job.build, data.clone()));
    let (ctx, _c) = ctx(&mem, config(dir.path()));
    let out = run_job(&job, 3, &ctx).await.unwrap();
    assert!(out.succeeded(), "{out:?} {}", mem.init_text());
    let key = LogStream::Step { stage: "heads#2".into(), step: "env".into(), number: 1, attempt: 3 }.key();
    let log = mem.log_str(&key);
    let expected_head = format!(
        "\"; rm -rf / #\n$(id)\n5\n{{\"k\":[1,\"two\"]}}\npipe-a step-b stage-c {} acme/web heads#2 env 3\n",
        job.build
    );
    assert!(log.starts_with(&expected_head), "{log}");
    let file: CloudEvent = serde_json::from_str(&log[expected_head.len()..]).unwrap();
    assert_eq!(file.data, data);
    let init = mem.init_text();
    assert!(init.contains("SECRET_TOKEN") && !init.contains("hunter2"), "{init}");
    assert!(init.contains("KILN_EVENT_X") && !init.contains("rm -rf"), "{init}");
    assert!(init.contains("[heads#2/env] step environment: B\n"), "{init}");
    assert_eq!(mem.init.lock().unwrap()[0].0, "heads#2/3/0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_that_cannot_be_created_fails_the_stage() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let mem = Mem::new();
    let job = job("t", vec![step("s", 1, &["echo hi"])]);
    let (ctx, _c) = ctx(&mem, config(&file));
    let out = run_job(&job, 1, &ctx).await.unwrap();
    assert_eq!(out.outcome, StageOutcome::Failed);
    assert!(out.steps.is_empty());
    assert_eq!(mem.event_types(), vec![types::STAGE_STARTED, types::STAGE_FINISHED]);
    let last = mem.events().pop().unwrap();
    assert_eq!(last.data_str("outcome"), Some("failed"));
    assert!(mem.init_text().contains("[t] cannot create the workspace"), "{}", mem.init_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_sink_that_is_down_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Mem::new();
    mem.fail_events.store(true, Ordering::SeqCst);
    let job = job("t", vec![step("s", 1, &["echo hi"])]);
    let (ctx, _c) = ctx(&mem, config(dir.path()));
    let err = run_job(&job, 1, &ctx).await.unwrap_err();
    assert!(err.to_string().contains(types::STAGE_STARTED), "{err}");
}

#[test]
fn run_job_is_send() {
    fn assert_send<T: Send>(_: T) {}
    let mem = Mem::new();
    let (ctx, _c) = ctx(&mem, config(std::path::Path::new("/nonexistent")));
    let job = job("t", vec![]);
    assert_send(run_job(&job, 1, &ctx));
}

#[test]
fn peak_rss_is_readable() {
    assert!(kiln_core::runner::peak_rss_kib().is_some_and(|k| k > 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_that_leaves_the_group_does_not_hang_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("escaped.pid");
    let mem = Mem::new();
    // The escaped process holds the output open for ten minutes: far past HANG.
    let cmd = format!("setsid sh -c 'echo $$ > {}; exec sleep 600' &", pidfile.display());
    let job = job("t", vec![step("escape", 1, &[&cmd, "sleep 0.5", "echo bye"])]);
    let (ctx, _c) = ctx(&mem, config(&dir.path().join("ws")));
    // kill_grace (2 s) for the end of the output, then 2 s after SIGKILL, then give up.
    let out = tokio::time::timeout(HANG, run_job(&job, 1, &ctx)).await;
    let pid = read_pid(&pidfile);
    // SAFETY: plain kill(2) of the process this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let out = out.expect("the step waited for the escaped process's output").unwrap();
    assert!(out.succeeded());
    assert_eq!(mem.log_str(&step_key("t", "escape", 1)), "bye\n");
    assert!(mem.completed().contains(&step_key("t", "escape", 1)));
    assert!(mem.init_text().contains("[t/escape] output still open"), "{}", mem.init_text());
}

/// A line after a quiet interval goes out at once; a busy stream still gets at most one
/// write per flush interval. The interval is an hour here, so "at once" and "held for the
/// next tick" cannot be mistaken for each other on a slow machine.
#[tokio::test(flavor = "multi_thread")]
async fn lone_lines_go_out_at_once_and_busy_streams_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let mem = Mem::new();
    let job = job(
        "t",
        vec![step(
            "s",
            1,
            &["echo lone", &wait_for_file(&gate), "for i in $(seq 30); do echo $i; sleep 0.01; done"],
        )],
    );
    let mut config = config(&dir.path().join("ws"));
    config.flush_interval = Duration::from_secs(3600);
    let (ctx, _c) = ctx(&mem, config);
    // "lone" is stored while the step waits: it was not held for the next (hourly) tick.
    let (out, ()) = tokio::join!(run_job(&job, 1, &ctx), release_after_put(&mem, &gate, |_, _| true));
    assert!(out.unwrap().succeeded(), "the lone line was held back");
    let key = step_key("t", "s", 1);
    let puts: Vec<usize> = mem
        .recs()
        .iter()
        .filter_map(|r| match r {
            Rec::Put { stream, len, failed: false, .. } if *stream == key => Some(*len),
            _ => None,
        })
        .collect();
    // The 30 busy lines came within the interval: they wait, and go out with the stream's end.
    let busy: String = (1..=30).map(|i| format!("{i}\n")).collect();
    assert_eq!(puts, vec!["lone\n".len(), busy.len()]);
    assert_eq!(mem.log_str(&key), format!("lone\n{busy}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn steps_start_from_a_clean_environment_as_the_policy_user() {
    // Cargo sets this for the test process: the runner has it, steps must not.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let dir = tempfile::tempdir().unwrap(); // 0700: a step user other than us cannot reach it
    let mem = Mem::new();
    let mut s = step(
        "env",
        1,
        &[
            "env | cut -d= -f1 | sort | tr '\\n' ' '; echo",
            "echo \"uid $(id -u) groups $(id -G)\"",
            r#"touch "$HOME/h" "$TMPDIR/t" "$KILN_WORKSPACE/w" && echo writable"#,
            r#"echo "$LANG $TZ $PASSED""#,
        ],
    );
    s.env.insert("OWN".into(), "1".into());
    let job = job("t", vec![s]);
    let mut config = config(&dir.path().join("ws"));
    config.step_env = kiln_core::runner::StepEnvPolicy::default(); // nobody when we are root
    config.step_env.passed = vec![("PASSED".into(), "p".into())];
    let user = config.step_env.user;
    let (ctx, _c) = ctx(&mem, config);
    let out = run_job(&job, 1, &ctx).await.unwrap();
    assert!(out.succeeded(), "{out:?} {}", mem.init_text());
    let log = mem.log_str(&step_key("t", "env", 1));
    let mut lines = log.lines();
    let names: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let expected = [
        "HOME",
        "KILN_ATTEMPT",
        "KILN_BUILD_ID",
        "KILN_REPO",
        "KILN_STAGE",
        "KILN_STEP",
        "KILN_WORKSPACE",
        "LANG",
        "OWN",
        "PASSED",
        "PATH",
        "PWD",
        "SHELL",
        "TMPDIR",
        "TZ",
    ];
    let rest: Vec<&str> = names.iter().copied().filter(|n| !matches!(*n, "USER" | "LOGNAME")).collect();
    assert_eq!(rest, expected, "{log}");
    // SAFETY: no preconditions.
    let me = unsafe { libc::geteuid() };
    let (uid, gid) = user.map_or((me, unsafe { libc::getegid() }), |u| (u.uid, u.gid));
    assert_eq!(lines.next(), Some(format!("uid {uid} groups {gid}").as_str()), "{log}");
    assert_eq!(lines.next(), Some("writable"), "{log}");
    assert_eq!(lines.next(), Some("C.UTF-8 UTC p"), "{log}");
    if me == 0 {
        assert!(mem.init_text().contains("steps run as uid 65534 gid 65534"), "{}", mem.init_text());
    }
}
