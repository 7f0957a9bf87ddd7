use super::*;
use crate::ids::{StageName, StepName};
use crate::plan::*;
use std::collections::BTreeMap;

fn ok(src: &str) -> Plan {
    match compile(src.as_bytes()) {
        Ok(plan) => plan,
        Err(errors) => panic!("expected a plan, got:\n{}", lines(&errors)),
    }
}

fn errors(src: &str) -> Vec<String> {
    match compile(src.as_bytes()) {
        Ok(plan) => panic!("expected errors, got a plan: {plan:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn lines(errors: &[CompileError]) -> String {
    errors.iter().map(|e| format!("{e}\n")).collect()
}

#[track_caller]
fn assert_errors(src: &str, expected: &[&str]) {
    assert_eq!(errors(src), expected, "for:\n{src}");
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const BRIEF_EXAMPLE: &str = r#"version: "1"
images:                      # catalog entries this pipeline builds
  - name: base-os
    providers: [aws, gcp, azure]
stages:
  build:
    steps:
      - name: compile
        commands: ["make"]
  test:
    needs: [build]
    services:
      - name: cache
        commands: ["redis-server --port 6390"]
    steps:
      - name: unit
        commands: ["make test"]
  heads:
    on:
      - event: coin                 # CloudEvent type
        where: { content: heads }   # match on fields of the event's data
        policy: create              # create (default): start an instance per event
    steps:
      - name: say
        commands: ['echo "it was $KILN_EVENT_CONTENT"']   # event data reaches steps as env vars
"#;

fn step(name: &str, number: u32, commands: &[&str]) -> StepPlan {
    StepPlan {
        name: StepName::new(name),
        number,
        commands: commands.iter().map(|c| c.to_string()).collect(),
        env: BTreeMap::new(),
        timeout_ms: None,
        secrets: Vec::new(),
    }
}

fn stage(name: &str, needs: &[&str], steps: Vec<StepPlan>) -> StagePlan {
    StagePlan {
        name: StageName::new(name),
        needs: needs.iter().map(|n| StageName::new(*n)).collect(),
        runs_on: RunsOn::Lambda,
        timeout_ms: LAMBDA_MAX_TIMEOUT_MS,
        env: BTreeMap::new(),
        steps,
        services: Vec::new(),
        triggers: Vec::new(),
        checkout: true,
    }
}

// ----- happy paths ------------------------------------------------------------------------

#[test]
fn brief_example() {
    let plan = ok(BRIEF_EXAMPLE);
    let mut test = stage("test", &["build"], vec![step("unit", 2, &["make test"])]);
    test.services = vec![ServicePlan {
        name: StepName::new("cache"),
        number: 1,
        commands: vec!["redis-server --port 6390".into()],
        env: BTreeMap::new(),
        secrets: Vec::new(),
    }];
    let mut heads = stage("heads", &[], vec![step("say", 3, &["echo \"it was $KILN_EVENT_CONTENT\""])]);
    heads.triggers = vec![Trigger {
        events: vec!["coin".into()],
        where_: [("content".to_string(), serde_json::json!("heads"))].into_iter().collect(),
        policy: TriggerPolicy::Create,
    }];
    let expected = Plan {
        version: "1".into(),
        env: BTreeMap::new(),
        stages: vec![stage("build", &[], vec![step("compile", 1, &["make"])]), test, heads],
        images: vec![ImageSpec {
            name: "base-os".into(),
            providers: vec!["aws".into(), "gcp".into(), "azure".into()],
            built_by: None,
        }],
        timeout_ms: DEFAULT_BUILD_TIMEOUT_MS,
        git: None,
        cancel_superseded: false,
    };
    assert_eq!(plan, expected);
    assert!(plan.stage("heads").unwrap().is_event_triggered());
}

#[test]
fn topological_order_keeps_file_order_for_ties() {
    let plan = ok(r#"
version: 1
stages:
  deploy:
    needs: [test, lint]
    steps: [{name: ship, commands: [./ship]}]
  test:
    needs: build
    steps: [{name: t1, commands: [a]}, {name: t2, commands: [b]}]
  lint:
    steps: [{name: l, commands: [c]}]
  build:
    services: [{name: db, commands: [db]}]
    steps: [{name: b, commands: [d]}]
  docs:
    services: [{name: web, commands: [w]}]
    steps: [{name: d, commands: [e]}]
"#);
    let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    // Ready at first: lint, build, docs → lint (declared first of those); then build; then
    // test and docs are ready → test; then deploy (declared before docs); then docs.
    assert_eq!(names, ["lint", "build", "test", "deploy", "docs"]);
    let steps: Vec<(&str, u32)> =
        plan.stages.iter().flat_map(|s| s.steps.iter().map(|p| (p.name.as_str(), p.number))).collect();
    assert_eq!(steps, [("l", 1), ("b", 2), ("t1", 3), ("t2", 4), ("ship", 5), ("d", 6)]);
    let services: Vec<(&str, u32)> =
        plan.stages.iter().flat_map(|s| s.services.iter().map(|p| (p.name.as_str(), p.number))).collect();
    assert_eq!(services, [("db", 1), ("web", 2)]);
    assert_eq!(plan.stage("deploy").unwrap().needs, [StageName::new("test"), StageName::new("lint")]);
    assert_eq!(plan.stage("test").unwrap().needs, [StageName::new("build")]);
}

#[test]
fn shorthand_steps() {
    let plan = ok(r#"version: "1"
env:
  GREETING: hello
  COUNT: 3
  DEBUG: true
  EMPTY:
timeout: 30m
steps:
  - name: hi
    commands: echo "$GREETING"
    timeout: 90s
    env: { WHO: world }
  - name: bye
    commands:
      - echo one
      - |
        echo two
"#);
    assert_eq!(plan.env, env(&[("GREETING", "hello"), ("COUNT", "3"), ("DEBUG", "true"), ("EMPTY", "")]));
    assert_eq!(plan.timeout_ms, 30 * 60 * 1000);
    assert_eq!(plan.stages.len(), 1);
    let s = &plan.stages[0];
    assert_eq!(s.name.as_str(), "default");
    assert_eq!(s.runs_on, RunsOn::Lambda);
    assert_eq!(s.timeout_ms, LAMBDA_MAX_TIMEOUT_MS);
    assert_eq!(s.steps[0].commands, ["echo \"$GREETING\""]);
    assert_eq!(s.steps[0].timeout_ms, Some(90_000));
    assert_eq!(s.steps[0].env, env(&[("WHO", "world")]));
    assert_eq!(s.steps[0].number, 1);
    assert_eq!(s.steps[1].commands, ["echo one", "echo two\n"]);
    assert_eq!(s.steps[1].number, 2);
    assert_eq!(s.steps[1].timeout_ms, None);
}

#[test]
fn durations_runs_on_and_triggers() {
    let plan = ok(r#"version: "1"
timeout: 1h30m
stages:
  quick:
    timeout: 250ms
    steps: [{name: a, commands: [x], timeout: 100ms}]
  edge:
    timeout: 15m
    steps: [{name: a, commands: [x]}]
  long:
    runs-on: container
    timeout: 2h
    env: {MODE: slow}
    steps: [{name: a, commands: [x], timeout: 1h59m59s}]
  default-container:
    runs-on: container
    steps: [{name: a, commands: [x]}]
  fanin:
    on:
      - event: [build.done, tests.done]
        where:
          branch: main
          attempt: 2
          ratio: 0.5
          ok: true
          none: null
          tags: [a, 1]
          nested: {k: "v"}
      - event: stop
        policy: delete
    steps: [{name: a, commands: [x]}]
  stoppable:
    needs: [quick]
    on:
      - event: halt
        policy: delete
    steps: [{name: a, commands: [x]}]
"#);
    let timeouts: Vec<u64> = plan.stages.iter().map(|s| s.timeout_ms).collect();
    // Defaults: a lambda stage gets Lambda's ceiling, a container stage the stage default.
    assert_eq!(
        timeouts,
        [
            250,
            15 * 60_000,
            2 * 3_600_000,
            DEFAULT_STAGE_TIMEOUT_MS,
            LAMBDA_MAX_TIMEOUT_MS,
            LAMBDA_MAX_TIMEOUT_MS
        ]
    );
    assert_eq!(plan.timeout_ms, 5_400_000);
    assert_eq!(plan.stage("quick").unwrap().timeout_ms, 250);
    assert_eq!(plan.stage("quick").unwrap().steps[0].timeout_ms, Some(100));
    assert_eq!(plan.stage("edge").unwrap().timeout_ms, LAMBDA_MAX_TIMEOUT_MS);
    let long = plan.stage("long").unwrap();
    assert_eq!((long.runs_on, long.timeout_ms), (RunsOn::Container, 7_200_000));
    assert_eq!(long.env, env(&[("MODE", "slow")]));
    assert_eq!(long.steps[0].timeout_ms, Some(7_199_000));
    let dc = plan.stage("default-container").unwrap();
    assert_eq!((dc.runs_on, dc.timeout_ms), (RunsOn::Container, DEFAULT_STAGE_TIMEOUT_MS));
    let fanin = plan.stage("fanin").unwrap();
    assert!(fanin.is_event_triggered());
    assert_eq!(fanin.triggers.len(), 2);
    assert_eq!(fanin.triggers[0].events, ["build.done", "tests.done"]);
    assert_eq!(fanin.triggers[0].policy, TriggerPolicy::Create);
    let expected_where: BTreeMap<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
        "branch": "main", "attempt": 2, "ratio": 0.5, "ok": true, "none": null,
        "tags": ["a", 1], "nested": {"k": "v"}
    }))
    .unwrap();
    assert_eq!(fanin.triggers[0].where_, expected_where);
    assert_eq!(fanin.triggers[1].events, ["stop"]);
    assert_eq!(fanin.triggers[1].policy, TriggerPolicy::Delete);
    let stoppable = plan.stage("stoppable").unwrap();
    assert!(!stoppable.is_event_triggered());
    assert_eq!(stoppable.needs, [StageName::new("quick")]);
}

#[test]
fn images_and_names() {
    let plan = ok(r#"version: "1"
images:
  - name: base-os
    providers: [aws, gcp]
    built-by: bake
  - name: "1.0"
    providers: [local]
stages:
  bake:
    steps:
      - name: 1
        commands: [true, 42]
"#);
    assert_eq!(
        plan.images,
        [
            ImageSpec {
                name: "base-os".into(),
                providers: vec!["aws".into(), "gcp".into()],
                built_by: Some(StageName::new("bake")),
            },
            ImageSpec { name: "1.0".into(), providers: vec!["local".into()], built_by: None },
        ]
    );
    assert_eq!(plan.stages[0].steps[0].name.as_str(), "1");
    assert_eq!(plan.stages[0].steps[0].commands, ["true", "42"]);
}

#[test]
fn bom_crlf_and_anchors() {
    let src = "\u{feff}version: \"1\"\r\nsteps:\r\n  - &s {name: a, commands: [x]}\r\n";
    assert_eq!(ok(src).stages[0].steps[0].name.as_str(), "a");
    // Columns after a BOM match what an editor shows.
    assert_eq!(
        errors("\u{feff}version: 2\nsteps: []\n")[0],
        "1:10: unsupported version \"2\" (supported: \"1\")"
    );
}

// ----- errors -----------------------------------------------------------------------------

#[test]
fn file_level_errors() {
    let big = vec![b'#'; MAX_PIPELINE_BYTES + 1];
    assert_eq!(
        compile(&big).unwrap_err(),
        [CompileError {
            line: 1,
            column: 1,
            message: format!(
                "pipeline is {} bytes, more than the limit of 1048576 bytes",
                MAX_PIPELINE_BYTES + 1
            )
        }]
    );
    assert_eq!(
        compile(b"version: \"1\"\nsteps: [\xff]\n").unwrap_err()[0].to_string(),
        "2:9: pipeline is not valid utf-8 (byte 0xff here)"
    );
    assert_errors("", &["1:1: pipeline is empty"]);
    assert_errors("# nothing\n\n", &["1:1: pipeline is empty"]);
    assert_errors("---\n", &["1:1: pipeline is empty"]);
    assert_errors(
        "- a\n- b\n",
        &["1:1: a pipeline must be a map with keys like \"version\" and \"stages\", found a list"],
    );
    assert_errors(
        "just text\n",
        &["1:1: a pipeline must be a map with keys like \"version\" and \"stages\", found a string"],
    );
    assert_errors(
        "version: \"1\"\nsteps: [a\nb: c\n",
        &["3:2: invalid yaml: illegal placement of ':' indicator"],
    );
    assert_errors(
        "version: \"1\"\nsteps:\n  - name: a\n    commands: [x]\n---\nversion: \"1\"\n",
        &["5:1: a pipeline is a single yaml document; remove the second one (after \"---\")"],
    );
    let deep = format!("version: \"1\"\nsteps: {}{}\n", "[".repeat(100), "]".repeat(100));
    assert_errors(&deep, &["2:71: lists and maps are nested too deeply (more than 64 levels)"]);
}

#[test]
fn aliases_and_tags() {
    assert_errors(
        r#"version: !!str 1
stages:
  a:
    steps: &s
      - name: x
        commands: [make]
  b:
    steps: *s
  c:
    steps: !custom [x]
"#,
        &[
            "8:12: yaml aliases (\"*name\") are not supported; write the value out",
            "10:20: yaml tags are not supported (found \"!custom\")",
            "10:21: step must be a map, found a string",
        ],
    );
}

#[test]
fn top_level_errors() {
    assert_errors(
        "env: {}\n",
        &[
            "1:1: pipeline is missing \"version\"",
            "1:1: pipeline is missing \"stages\" (or \"steps\" for a single stage)",
        ],
    );
    assert_errors(
        "version: \"2\"\nsteps: [{name: a, commands: [x]}]\n",
        &["1:10: unsupported version \"2\" (supported: \"1\")"],
    );
    assert_errors(
        "version: 1.0\nsteps: [{name: a, commands: [x]}]\n",
        &["1:10: unsupported version \"1.0\" (supported: \"1\")"],
    );
    assert_errors(
        "version: [1]\nsteps: [{name: a, commands: [x]}]\n",
        &["1:10: \"version\" must be a string, found a list"],
    );
    assert_errors(
        "version: \"1\"\nstages:\n  a:\n    steps: [{name: a, commands: [x]}]\nsteps: [{name: a, commands: [x]}]\n",
        &["5:1: use either \"stages\" or \"steps\", not both"],
    );
    assert_errors(
        "version: \"1\"\nstage:\n  a: {}\n",
        &["2:1: unknown key \"stage\" in pipeline; did you mean \"stages\"?"],
    );
    assert_errors("version: \"1\"\nstages: []\n", &["2:9: \"stages\" must be a map, found a list"]);
    assert_errors("version: \"1\"\nstages: {}\n", &["2:9: \"stages\" is empty: add at least one stage"]);
    assert_errors("version: \"1\"\nsteps: []\n", &["2:8: \"steps\" is empty: add at least one step"]);
    assert_errors("version: \"1\"\nsteps:\n", &["2:1: \"steps\" must be a list, found nothing"]);
    assert_errors(
        "version: \"1\"\nversion: \"1\"\nsteps: [{name: a, commands: [x]}]\n",
        &["2:1: duplicate key \"version\" (first on line 1)"],
    );
    assert_errors(
        "version: \"1\"\nwhatever: 1\nsteps: [{name: a, commands: [x]}]\n",
        &[
            "2:1: unknown key \"whatever\" in pipeline; valid keys: version, env, timeout, images, stages, steps, secrets, on, cancel-superseded",
        ],
    );
    assert_errors(
        "version: \"1\"\n[a]: 1\nsteps: [{name: a, commands: [x]}]\n",
        &["2:1: keys must be strings, found a list"],
    );
}

#[test]
fn key_and_type_errors() {
    assert_errors(
        r#"version: "1"
stages:
  build:
    step:
      - name: a
  test:
    steps: "make"
    needs: {build: true}
    runs-on: 3
    on: {event: x}
  lint:
    steps:
      - name: a
        comands: [x]
      - make
      - name: b
        commands: [{echo: hi}, [x], ~, "", "  "]
      - name: c
        commands: []
      - name: d
        commands: 7
"#,
        &[
            "4:5: unknown key \"step\" in stage; did you mean \"steps\"?",
            "7:12: \"steps\" must be a list, found a string",
            "8:12: \"needs\" must be a list of stage names, found a map",
            "9:14: \"runs-on\" must be a string, found a number",
            "10:9: \"on\" must be a list, found a map",
            "14:9: unknown key \"comands\" in step; did you mean \"commands\"?",
            "15:9: step must be a map, found a string",
            "17:20: command must be a string, found a map (quote a command that contains \": \")",
            "17:32: command must be a string, found a list",
            "17:37: command must be a string, found nothing",
            "17:40: empty command",
            "17:44: empty command",
            "19:19: \"commands\" is empty: add at least one command",
        ],
    );
}

#[test]
fn names_and_duplicates() {
    assert_errors(
        r#"version: "1"
images:
  - name: base os
    providers: []
  - name: img
    providers: [aws, aws, "a b"]
    built-by: biuld
  - name: img
    providers: [x]
  - providers: [x]
  - name: lonely
stages:
  build:
    services:
      - name: db
        commands: [d]
      - name: db
        commands: [d]
      - name: one
        commands: [x]
    steps:
      - name: one
        commands: [x]
      - name: one
        commands: [y]
      - name: "two words"
        commands: [z]
      - commands: [w]
  build:
    steps: [{name: a, commands: [x]}]
  "-bad":
    env:
      GOOD_1: x
      1BAD: y
      GOOD_1: z
      LIST: [a]
    steps: [{name: a, commands: [x]}]
"#,
        &[
            "3:11: invalid image name \"base os\": use letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit, at most 63 characters",
            "4:16: image has no providers: list at least one",
            "6:22: duplicate provider \"aws\" in image \"img\" (first on line 6)",
            "6:27: invalid provider name \"a b\": use letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit, at most 63 characters",
            "7:15: \"built-by\" names unknown stage \"biuld\"; did you mean \"build\"?",
            "8:11: duplicate image \"img\" (first on line 5)",
            "10:5: image is missing \"name\"",
            "11:5: image \"lonely\" is missing \"providers\"",
            "17:15: duplicate service \"db\" in stage \"build\" (first on line 15)",
            "19:15: service \"one\" in stage \"build\" has the same name as a step; rename one",
            "24:15: duplicate step \"one\" in stage \"build\" (first on line 22)",
            "26:15: invalid step name \"two words\": use letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit, at most 63 characters",
            "28:9: step is missing \"name\"",
            "29:3: duplicate stage \"build\" (first on line 13)",
            "31:3: invalid stage name \"-bad\": use letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit, at most 63 characters",
            "34:7: invalid environment variable name \"1BAD\": use letters, digits and \"_\", not starting with a digit",
            "35:7: duplicate key \"GOOD_1\" (first on line 33)",
            "36:13: env value for \"LIST\" must be a string, number or boolean, found a list",
        ],
    );
}

#[test]
fn needs_errors() {
    assert_errors(
        r#"version: "1"
stages:
  a:
    needs: [b]
    steps: [{name: s, commands: [x]}]
  b:
    needs: [c, c]
    steps: [{name: s, commands: [x]}]
  c:
    needs: a
    steps: [{name: s, commands: [x]}]
  d:
    needs: [d, tset, zzzzzz, a]
    steps: [{name: s, commands: [x]}]
  e:
    needs: [f]
    steps: [{name: s, commands: [x]}]
  f:
    needs: [e]
    steps: [{name: s, commands: [x]}]
  g:
    needs: [e]
    steps: [{name: s, commands: [x]}]
"#,
        &[
            "3:3: cycle in needs: a -> b -> c -> a",
            "7:16: stage \"c\" is listed twice in \"needs\"",
            "13:13: stage \"d\" needs itself",
            "13:16: needs unknown stage \"tset\"",
            "13:22: needs unknown stage \"zzzzzz\"",
            "15:3: cycle in needs: e -> f -> e",
        ],
    );
    assert_errors(
        r#"version: "1"
stages:
  build:
    steps: [{name: s, commands: [x]}]
  test:
    needs: [biuld]
    steps: [{name: s, commands: [x]}]
"#,
        &["6:13: needs unknown stage \"biuld\"; did you mean \"build\"?"],
    );
}

#[test]
fn timeouts_runs_on_and_triggers_errors() {
    assert_errors(
        r#"version: "1"
timeout: 10
stages:
  a:
    timeout: 20m
    steps: [{name: s, commands: [x], timeout: 0s}]
  b:
    runs-on: fargate
    timeout: 1h 30m
    steps: [{name: s, commands: [x], timeout: [1]}]
  c:
    needs: [a]
    on:
      - event: go
      - policy: remove
      - event: [x, x, "", 3]
        where: [a]
        when: now
      - event: []
    steps: [{name: s, commands: [x]}]
"#,
        &[
            "2:10: bad duration \"10\": use a unit, e.g. \"10s\"",
            "5:14: timeout 20m is longer than runs-on: lambda allows (15m); use runs-on: container for longer stages",
            "6:47: bad duration \"0s\": must be more than zero",
            "8:14: bad runs-on \"fargate\": use \"lambda\" or \"container\"",
            "9:14: bad duration \"1h 30m\": use a number and a unit (ms, s, m, h), e.g. \"90s\" or \"1h30m\"",
            "10:47: \"timeout\" must be a duration like \"90s\", found a list",
            "12:5: \"needs\" cannot be combined with a create trigger: an event-triggered stage starts on events, not after other stages",
            "15:9: trigger is missing \"event\"",
            "15:17: bad policy \"remove\": use \"create\" or \"delete\"",
            "16:20: event type \"x\" is listed twice",
            "16:23: empty event type",
            "16:27: an event type must be a string, found a number",
            "17:16: \"where\" must be a map, found a list",
            "18:9: unknown key \"when\" in trigger; did you mean \"where\"?",
            "19:16: \"event\" is empty: list at least one event type",
        ],
    );
}

#[test]
fn positions_of_missing_values_and_long_cycles() {
    // An empty list item is reported at its dash, an empty value at its key.
    assert_errors(
        "version: \"1\"\nsteps:\n  - name: a\n    commands:\n      -\n      - make\n  - name:\n    commands: [x]\n",
        &["5:7: command must be a string, found nothing", "7:5: \"name\" must be a string, found nothing"],
    );
    let mut src = String::from("version: \"1\"\nstages:\n");
    for i in 0..20 {
        src.push_str(&format!(
            "  s{i}:\n    needs: [s{}]\n    steps: [{{name: a, commands: [x]}}]\n",
            (i + 1) % 20
        ));
    }
    assert_errors(
        &src,
        &[
            "3:3: cycle in needs: s0 -> s1 -> s2 -> s3 -> s4 -> s5 -> (9 more) -> s15 -> s16 -> s17 -> s18 -> s19 -> s0",
        ],
    );
}

#[test]
fn container_stage_may_run_long_and_errors_come_sorted() {
    let plan = ok(
        "version: \"1\"\nstages:\n  a:\n    timeout: 3h\n    runs-on: container\n    steps: [{name: s, commands: [x]}]\n",
    );
    assert_eq!(plan.stages[0].timeout_ms, 3 * 3_600_000);
    // Several errors across the file: all reported, ordered by line then column.
    let all = errors("stages:\n  x y:\n    steps:\n      - name: a\n        comands: [x]\nversion: 3\n");
    assert_eq!(
        all,
        [
            "2:3: invalid stage name \"x y\": use letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit, at most 63 characters",
            "5:9: unknown key \"comands\" in step; did you mean \"commands\"?",
            "6:10: unsupported version \"3\" (supported: \"1\")",
        ]
    );
}

// ----- fixtures ---------------------------------------------------------------------------

/// Every `tests/fixtures/invalid/*.yml` compiles to exactly the errors in its `.expected`.
#[test]
fn invalid_fixtures_match_expected() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/invalid");
    let mut checked = 0;
    let mut entries: Vec<_> =
        std::fs::read_dir(&dir).expect("fixtures dir").map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        let source = std::fs::read(&path).unwrap();
        let expected = std::fs::read_to_string(path.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", path.display()));
        let got = match compile(&source) {
            Ok(_) => panic!("{} compiled, but it should not", path.display()),
            Err(errors) => lines(&errors),
        };
        assert_eq!(got, expected, "fixture {}", path.display());
        checked += 1;
    }
    assert!(checked >= 18, "only {checked} fixtures");
}

// ----- property tests ---------------------------------------------------------------------
//
// `proptest` draws a pipeline description (`PipelineSpec`), which is rendered to YAML; a
// failing case is shrunk to a small pipeline before it is reported. The seed is fixed, so
// every run checks the same cases.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x9e37_79b9_7f4a_7c15),
        // Fixed seed: no regression files to keep.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// How a scalar is written.
#[derive(Debug, Clone, Copy)]
enum Quote {
    Plain,
    Double,
    Single,
}

impl Quote {
    fn apply(self, s: &str) -> String {
        match self {
            Quote::Plain => s.to_string(),
            Quote::Double => format!("\"{s}\""),
            Quote::Single => format!("'{s}'"),
        }
    }
}

fn quote() -> impl Strategy<Value = Quote> {
    prop_oneof![Just(Quote::Plain), Just(Quote::Double), Just(Quote::Single)]
}

/// What follows a name's fixed prefix (which keeps names unique): up to five name characters.
fn name_tail() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{0,5}"
}

#[derive(Debug, Clone, Copy)]
enum StepForm {
    /// `- {name: x, commands: [c]}`
    Flow,
    /// `commands: c`
    BlockScalar,
    /// `commands:` then a list
    BlockList,
}

#[derive(Debug, Clone)]
struct StepSpec {
    tail: String,
    name_quote: Quote,
    command_quote: Quote,
    form: StepForm,
    timeout: bool,
}

fn step_spec() -> impl Strategy<Value = StepSpec> {
    let form = prop_oneof![Just(StepForm::Flow), Just(StepForm::BlockScalar), Just(StepForm::BlockList)];
    (name_tail(), quote(), quote(), form, prop::bool::weighted(0.3)).prop_map(
        |(tail, name_quote, command_quote, form, timeout)| StepSpec {
            tail,
            name_quote,
            command_quote,
            form,
            timeout,
        },
    )
}

fn steps(min: usize) -> impl Strategy<Value = Vec<StepSpec>> {
    prop::collection::vec(step_spec(), min..5)
}

#[derive(Debug, Clone, Copy)]
enum RunsOnSpec {
    Default,
    Container,
    LambdaWithTimeout,
}

#[derive(Debug, Clone, Copy)]
enum TriggerSpec {
    None,
    /// Create and delete triggers (only on a stage without needs; otherwise none).
    Create,
    DeleteOnly,
}

/// The stage of topological rank `rank`: it may need any earlier rank.
#[derive(Debug, Clone)]
struct StageSpec {
    tail: String,
    quote: Quote,
    /// `needs[r]`: whether it needs rank `r` (every `r` < this rank).
    needs: Vec<bool>,
    /// One need written as a scalar, or no needs as `needs: []`.
    needs_alt: bool,
    runs_on: RunsOnSpec,
    trigger: TriggerSpec,
    services: usize,
    steps: Vec<StepSpec>,
}

fn stage_spec(rank: usize) -> impl Strategy<Value = StageSpec> {
    let runs_on = prop_oneof![
        5 => Just(RunsOnSpec::Default),
        3 => Just(RunsOnSpec::Container),
        2 => Just(RunsOnSpec::LambdaWithTimeout),
    ];
    let trigger = prop_oneof![
        7 => Just(TriggerSpec::None),
        2 => Just(TriggerSpec::Create),
        1 => Just(TriggerSpec::DeleteOnly),
    ];
    (
        name_tail(),
        quote(),
        prop::collection::vec(prop::bool::weighted(0.3), rank),
        any::<bool>(),
        runs_on,
        trigger,
        0..3usize,
        steps(1),
    )
        .prop_map(|(tail, quote, needs, needs_alt, runs_on, trigger, services, steps)| StageSpec {
            tail,
            quote,
            needs,
            needs_alt,
            runs_on,
            trigger,
            services,
            steps,
        })
}

#[derive(Debug, Clone)]
enum BodySpec {
    /// A top-level `steps:` list.
    Shorthand(Vec<StepSpec>),
    /// Stages by rank, and the order they are declared in (a permutation of the ranks), so
    /// the compiler has to sort.
    Stages { by_rank: Vec<StageSpec>, declared: Vec<usize> },
}

#[derive(Debug, Clone)]
struct PipelineSpec {
    version_quoted: bool,
    env: bool,
    timeout: bool,
    body: BodySpec,
}

fn pipeline_spec() -> impl Strategy<Value = PipelineSpec> {
    let stages = (1..10usize).prop_flat_map(|n| {
        let by_rank: Vec<_> = (0..n).map(stage_spec).collect();
        let declared = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
        (by_rank, declared).prop_map(|(by_rank, declared)| BodySpec::Stages { by_rank, declared })
    });
    let body = prop_oneof![
        15 => steps(1).prop_map(BodySpec::Shorthand),
        85 => stages,
    ];
    (any::<bool>(), prop::bool::weighted(0.3), prop::bool::weighted(0.3), body)
        .prop_map(|(version_quoted, env, timeout, body)| PipelineSpec { version_quoted, env, timeout, body })
}

struct Generated {
    yaml: String,
    /// Stage names in declaration order, each with the indexes it needs.
    stages: Vec<(String, Vec<usize>)>,
    steps_per_stage: Vec<Vec<String>>,
    services_per_stage: Vec<usize>,
    shorthand: bool,
}

fn step_yaml(step: &StepSpec, name: &str, indent: &str) -> String {
    let name_text = step.name_quote.apply(name);
    let cmd = step.command_quote.apply(&format!("echo {name} && true"));
    match step.form {
        StepForm::Flow => {
            let timeout = if step.timeout { ", timeout: 1m30s" } else { "" };
            format!("{indent}- {{name: {name_text}, commands: [{cmd}]{timeout}}}\n")
        }
        StepForm::BlockScalar | StepForm::BlockList => {
            let mut s = format!("{indent}- name: {name_text}\n");
            if matches!(step.form, StepForm::BlockScalar) {
                s.push_str(&format!("{indent}  commands: {cmd}\n"));
            } else {
                s.push_str(&format!("{indent}  commands:\n{indent}    - {cmd}\n{indent}    - ls\n"));
            }
            if step.timeout {
                s.push_str(&format!("{indent}  timeout: 250ms\n"));
            }
            s
        }
    }
}

fn render(spec: &PipelineSpec) -> Generated {
    let mut yaml = String::new();
    yaml.push_str(if spec.version_quoted { "version: \"1\"\n" } else { "version: 1\n" });
    if spec.env {
        yaml.push_str("env:\n  A_B: x\n  N: 3\n");
    }
    if spec.timeout {
        yaml.push_str("timeout: 3h\n");
    }
    let (by_rank, declared) = match &spec.body {
        BodySpec::Shorthand(steps) => {
            yaml.push_str("steps:\n");
            let mut names = Vec::new();
            for (i, step) in steps.iter().enumerate() {
                let name = format!("s{i}{}", step.tail);
                yaml.push_str(&step_yaml(step, &name, "  "));
                names.push(name);
            }
            return Generated {
                yaml,
                stages: vec![("default".into(), vec![])],
                steps_per_stage: vec![names],
                services_per_stage: vec![0],
                shorthand: true,
            };
        }
        BodySpec::Stages { by_rank, declared } => (by_rank, declared),
    };
    let position_of = |rank: usize| declared.iter().position(|&r| r == rank).unwrap();
    let names: Vec<String> =
        by_rank.iter().enumerate().map(|(rank, s)| format!("st{rank}{}", s.tail)).collect();
    yaml.push_str("stages:\n");
    let mut stages = Vec::new();
    let mut steps_per_stage = Vec::new();
    let mut services_per_stage = Vec::new();
    for &rank in declared {
        let stage = &by_rank[rank];
        let needs_ranks: Vec<usize> = (0..rank).filter(|&r| stage.needs[r]).collect();
        yaml.push_str(&format!("  {}:\n", stage.quote.apply(&names[rank])));
        let needs: Vec<String> = needs_ranks.iter().map(|&r| stage.quote.apply(&names[r])).collect();
        if needs.len() == 1 && stage.needs_alt {
            yaml.push_str(&format!("    needs: {}\n", needs[0]));
        } else if !needs.is_empty() {
            yaml.push_str(&format!("    needs: [{}]\n", needs.join(", ")));
        } else if stage.needs_alt {
            yaml.push_str("    needs: []\n");
        }
        match stage.runs_on {
            RunsOnSpec::Default => {}
            RunsOnSpec::Container => yaml.push_str("    runs-on: container\n    timeout: 4h\n"),
            RunsOnSpec::LambdaWithTimeout => yaml.push_str("    timeout: 14m59s\n"),
        }
        match stage.trigger {
            // A create trigger cannot be combined with needs.
            TriggerSpec::Create if needs_ranks.is_empty() => yaml.push_str(
                "    on:\n      - event: [a.b, c]\n        where: {k: v, n: 1}\n      - event: stop\n        policy: delete\n",
            ),
            TriggerSpec::Create | TriggerSpec::None => {}
            TriggerSpec::DeleteOnly => yaml.push_str("    on: [{event: halt, policy: delete}]\n"),
        }
        if stage.services > 0 {
            yaml.push_str("    services:\n");
            for i in 0..stage.services {
                yaml.push_str(&format!("      - name: svc{i}\n        commands: [sleep 1]\n"));
            }
        }
        yaml.push_str("    steps:\n");
        let mut step_names = Vec::new();
        for (i, step) in stage.steps.iter().enumerate() {
            let name = format!("p{i}{}", step.tail);
            yaml.push_str(&step_yaml(step, &name, "      "));
            step_names.push(name);
        }
        stages.push((names[rank].clone(), needs_ranks.iter().map(|&r| position_of(r)).collect()));
        steps_per_stage.push(step_names);
        services_per_stage.push(stage.services);
    }
    Generated { yaml, stages, steps_per_stage, services_per_stage, shorthand: false }
}

proptest! {
    #![proptest_config(proptest_config(500))]

    /// Any valid pipeline compiles: stages in an order that respects needs (ties broken by
    /// file order), steps and services numbered across the build, the plan round-trips.
    #[test]
    fn random_valid_pipelines_compile(spec in pipeline_spec()) {
        let g = render(&spec);
        let plan = match compile(g.yaml.as_bytes()) {
            Ok(plan) => plan,
            Err(errors) => panic!("failed:\n{}\n{}", g.yaml, lines(&errors)),
        };
        let context = || g.yaml.clone();
        assert_eq!(plan.stages.len(), g.stages.len(), "{}", context());
        if g.shorthand {
            assert_eq!(plan.stages[0].name.as_str(), "default");
        }

        // Plan order: every stage after its needs, and always the earliest-declared ready one.
        let declared_index = |name: &str| g.stages.iter().position(|(n, _)| n == name).unwrap();
        let order: Vec<usize> = plan.stages.iter().map(|s| declared_index(s.name.as_str())).collect();
        let mut done = vec![false; g.stages.len()];
        for &i in &order {
            let ready = |j: usize| !done[j] && g.stages[j].1.iter().all(|&k| done[k]);
            assert!(ready(i), "stage {} placed before its needs; {}", g.stages[i].0, context());
            let earliest = (0..g.stages.len()).find(|&j| ready(j)).unwrap();
            assert_eq!(i, earliest, "tie not broken by file order; {}", context());
            done[i] = true;
        }

        // Steps numbered 1..n across the build in plan order; services likewise.
        let numbers: Vec<u32> = plan.stages.iter().flat_map(|s| s.steps.iter().map(|p| p.number)).collect();
        assert_eq!(numbers, (1..=numbers.len() as u32).collect::<Vec<_>>(), "{}", context());
        let services: Vec<u32> =
            plan.stages.iter().flat_map(|s| s.services.iter().map(|p| p.number)).collect();
        assert_eq!(services, (1..=services.len() as u32).collect::<Vec<_>>(), "{}", context());
        for (stage, &i) in plan.stages.iter().zip(&order) {
            let names: Vec<&str> = stage.steps.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, g.steps_per_stage[i], "{}", context());
            assert_eq!(stage.services.len(), g.services_per_stage[i], "{}", context());
            assert!(stage.runs_on == RunsOn::Container || stage.timeout_ms <= LAMBDA_MAX_TIMEOUT_MS);
        }
        // The plan survives a JSON round trip (it travels in job messages).
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
    }
}

proptest! {
    #![proptest_config(proptest_config(300))]

    /// Mutating valid pipelines (cutting them short, dropping a character) never panics,
    /// and every error it yields has a real position.
    #[test]
    fn random_mutations_never_panic(spec in pipeline_spec(), cut in any::<Index>(), drop in any::<Index>()) {
        let g = render(&spec);
        let bytes = g.yaml.as_bytes();
        let mut dropped = bytes.to_vec();
        dropped.remove(drop.index(bytes.len()));
        for source in [&bytes[..cut.index(bytes.len())], &dropped[..]] {
            if let Err(errors) = compile(source) {
                prop_assert!(!errors.is_empty());
                for e in &errors {
                    prop_assert!(e.line >= 1 && e.column >= 1, "{}", e);
                    prop_assert!(!e.message.is_empty());
                }
            }
        }
    }
}

/// A ring of `k` stages, declared in a shuffled order.
fn ring() -> impl Strategy<Value = (usize, Vec<usize>)> {
    (2..8usize).prop_flat_map(|k| (Just(k), Just((0..k).collect::<Vec<usize>>()).prop_shuffle()))
}

proptest! {
    #![proptest_config(proptest_config(200))]

    /// A ring of needs (each stage needs the next, the last the first), among stages that
    /// need nothing, is one cycle error: at the ring's first-declared stage, naming the ring
    /// from there in needs order.
    #[test]
    fn a_ring_of_needs_is_one_cycle_error((k, declared) in ring(), extra in 0..3usize) {
        let mut yaml = String::from("version: \"1\"\nstages:\n");
        for &r in &declared {
            yaml.push_str(&format!(
                "  r{r}:\n    needs: [r{}]\n    steps: [{{name: a, commands: [x]}}]\n",
                (r + 1) % k
            ));
        }
        for i in 0..extra {
            yaml.push_str(&format!("  x{i}:\n    steps: [{{name: a, commands: [x]}}]\n"));
        }
        let start = declared[0];
        let mut names: Vec<String> = (0..=k).map(|i| format!("r{}", (start + i) % k)).collect();
        names.dedup();
        let expected = format!("3:3: cycle in needs: {}", names.join(" -> "));
        prop_assert_eq!(errors(&yaml), vec![expected]);
    }
}

// ----- secrets ----------------------------------------------------------------------------

#[test]
fn secrets_are_inherited_downwards_sorted_and_once() {
    let plan = ok(r#"version: "1"
secrets: [NPM_TOKEN]
stages:
  build:
    secrets: [DEPLOY_KEY, NPM_TOKEN]
    services:
      - name: db
        commands: [postgres]
        secrets: [DB_PASSWORD]
    steps:
      - name: compile
        commands: [make]
        secrets: [AWS_KEY]
      - name: test
        commands: [make test]
  other:
    steps:
      - name: lint
        commands: [make lint]
"#);
    let names = |v: &[crate::secret::SecretName]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let build = plan.stage("build").unwrap();
    assert_eq!(names(&build.steps[0].secrets), ["AWS_KEY", "DEPLOY_KEY", "NPM_TOKEN"]);
    assert_eq!(names(&build.steps[1].secrets), ["DEPLOY_KEY", "NPM_TOKEN"]);
    // A service gets the pipeline's and its stage's, plus its own; not a step's.
    assert_eq!(names(&build.services[0].secrets), ["DB_PASSWORD", "DEPLOY_KEY", "NPM_TOKEN"]);
    assert_eq!(names(&build.secret_names()), ["AWS_KEY", "DB_PASSWORD", "DEPLOY_KEY", "NPM_TOKEN"]);
    assert_eq!(names(&plan.stage("other").unwrap().steps[0].secrets), ["NPM_TOKEN"]);
    // Shorthand steps get the pipeline's.
    let plan = ok("version: \"1\"\nsecrets: [A_B]\nsteps:\n  - name: x\n    commands: [true]\n");
    assert_eq!(names(&plan.stages[0].steps[0].secrets), ["A_B"]);
    // No secrets: nothing in the plan's JSON either (old plans read back the same).
    let plan = ok("version: \"1\"\nsteps:\n  - name: x\n    commands: [true]\n");
    assert!(!serde_json::to_string(&plan).unwrap().contains("secrets"));
}

#[test]
fn bad_secret_lists_are_reported_with_positions() {
    assert_errors(
        "version: \"1\"\nsecrets: NAME\nsteps:\n  - name: x\n    commands: [true]\n",
        &["2:10: \"secrets\" must be a list, found a string"],
    );
    assert_errors(
        "version: \"1\"\nsteps:\n  - name: x\n    commands: [true]\n    secrets: [\"A B\", [X]]\n",
        &[
            "5:15: invalid secret name \"A B\": use letters, digits and \"_\", not starting with a digit, at most 128 characters",
            "5:22: a secret name must be a string, found a list",
        ],
    );
}

#[test]
fn git_triggers_checkout_and_cancel_superseded() {
    use crate::git::{GitTriggers, RefFilter};
    let plan = ok(
        "version: \"1\"\non:\n  push: { branches: [main, \"release/*\"], tags: [\"v*\"] }\n  pull_request: { branches: main }\ncancel-superseded: true\nstages:\n  a:\n    checkout: false\n    steps: [{name: s, commands: [x]}]\n",
    );
    let globs = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        plan.git,
        Some(GitTriggers {
            push: Some(RefFilter { branches: globs(&["main", "release/*"]), tags: globs(&["v*"]) }),
            pull_request: Some(RefFilter { branches: globs(&["main"]), tags: None }),
        })
    );
    assert!(plan.cancel_superseded);
    assert!(!plan.stages[0].checkout);
    // Without them: no filter (pushes and pull requests build), checkout on.
    let plan = ok("version: \"1\"\non:\n  push:\nsteps: [{name: s, commands: [x]}]\n");
    assert_eq!(plan.git, Some(GitTriggers { push: Some(RefFilter::default()), pull_request: None }));
    let plan = ok("version: \"1\"\nsteps: [{name: s, commands: [x]}]\n");
    assert_eq!((plan.git, plan.cancel_superseded, plan.stages[0].checkout), (None, false, true));

    assert_errors(
        "version: \"1\"\non:\n  - event: coin\nsteps: [{name: s, commands: [x]}]\n",
        &[
            "3:3: the top-level \"on\" is a map of git events (push, pull_request); triggers on CloudEvents go on a stage",
        ],
    );
    assert_errors(
        "version: \"1\"\non:\n  pushh: {}\n  pull_request: { tags: [v1], branches: [\"\"] }\ncancel-superseded: yes\nsteps: [{name: s, commands: [x], checkout: false}]\n",
        &[
            "3:3: unknown key \"pushh\" in \"on\"; did you mean \"push\"?",
            "4:19: unknown key \"tags\" in \"pull_request\"; valid keys: branches",
            "4:42: empty pattern in \"branches\"",
            "5:20: \"cancel-superseded\" must be true or false, found a string",
            "6:34: unknown key \"checkout\" in step; valid keys: name, commands, env, timeout, secrets",
        ],
    );
}
