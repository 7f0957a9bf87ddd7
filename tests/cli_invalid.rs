//! Invalid pipelines: `kiln validate` and `kiln run` exit 2 and print `FILE:LINE:COL:
//! message` for every error. The cases are the fixtures in tests/fixtures/invalid, each
//! with its expected errors beside it.

mod common;
use common::{Scratch, repo_root};

fn fixtures() -> Vec<(std::path::PathBuf, String)> {
    let dir = repo_root().join("tests/fixtures/invalid");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|p| {
            let expected = std::fs::read_to_string(p.with_extension("expected")).expect("an .expected file");
            (p, expected)
        })
        .collect();
    v.sort();
    v
}

fn error_lines(stderr: &[u8], file: &str) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{file}:")).map(str::to_string))
        .collect()
}

#[test]
fn every_invalid_fixture_exits_2_with_line_and_column() {
    let s = Scratch::new();
    let cases = fixtures();
    assert!(cases.len() >= 15, "only {} invalid fixtures", cases.len());
    for (path, expected) in cases {
        let rel = path.strip_prefix(repo_root()).unwrap().to_str().unwrap().to_string();
        let expected: Vec<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
        for cmd in ["validate", "run"] {
            let out = s.kiln(&[cmd, &rel]);
            assert_eq!(
                out.status.code(),
                Some(2),
                "kiln {cmd} {rel}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(error_lines(&out.stderr, &rel), expected, "kiln {cmd} {rel}");
        }
    }
}

#[test]
fn a_file_over_one_mib_is_refused() {
    let s = Scratch::new();
    let mut yaml = String::from("version: \"1\"\nsteps:\n  - name: a\n    commands: [\"true\"]\n");
    while yaml.len() <= 1024 * 1024 {
        yaml.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let p = s.pipeline("big.yml", &yaml);
    let out = s.kiln(&["validate", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("big.yml:1:1:"), "{err}");
    assert!(err.contains("1 MiB") || err.contains("1048576"), "{err}");
}

#[test]
fn a_missing_file_exits_2() {
    let s = Scratch::new();
    let out = s.kiln(&["run", "no/such/pipeline.yml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/pipeline.yml: cannot read"));
}

#[test]
fn validate_prints_the_plan() {
    let s = Scratch::new();
    let out = s.kiln(&["validate", "examples/dag.yml"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok, 5 stage(s), 5 step(s)"), "{text}");
    assert!(text.contains("package (1 step(s)) needs lint, unit, integration"), "{text}");
}
