//! Helpers for the end-to-end tests: run the real `kiln` binary in a scratch directory.
#![allow(dead_code)]

pub mod dev;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// How long a test waits for something that should take a second or two: long enough that
/// only a hang trips it on a loaded machine. How fast things are is measured by the
/// benchmark (bench/), not asserted here.
pub const HANG: Duration = Duration::from_secs(60);

/// A shell command that holds a step until `file` exists, so a test can keep a step
/// running until it has seen what it waits for. After a minute it gives up and fails the
/// step (exit 9), so a test that never releases it does not hang.
pub fn wait_for_file(file: &Path) -> String {
    format!(
        "i=0; until [ -e {} ]; do i=$((i+1)); if [ $i -gt 1200 ]; then exit 9; fi; sleep 0.05; done",
        file.display()
    )
}

/// Creates `file`: releases a step held by [`wait_for_file`].
pub fn release(file: &Path) {
    std::fs::write(file, b"").expect("write release file");
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
}

/// A scratch dir with a data dir inside.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A directory of the scratch dir that steps can write to whatever user they run as
    /// (a root runner runs them as "nobody"): for pid files and the like.
    pub fn shared_dir(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let d = self.dir.path().join("shared");
        std::fs::create_dir_all(&d).expect("create the shared dir");
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        d
    }

    /// Writes a pipeline file and returns its path.
    pub fn pipeline(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).expect("write pipeline");
        p
    }

    /// `kiln ARGS` with this scratch's data dir.
    pub fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_env(args, &[])
    }

    pub fn kiln_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(args).env("KILN_DATA_DIR", self.data_dir()).env_remove("KILN_TEST_DELIVER_TWICE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.current_dir(repo_root()).output().expect("run kiln")
    }

    /// `kiln run --json FILE`: the exit code and the finished build.
    pub fn run_json(&self, file: &Path, env: &[(&str, &str)]) -> (i32, serde_json::Value) {
        let out = self.kiln_env(&["run", "--json", file.to_str().expect("utf-8 path")], env);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}):\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr))
        });
        (out.status.code().unwrap_or(-1), doc)
    }

    /// The bytes of one log, read back with `kiln logs BUILD STAGE/STEP`.
    pub fn log(&self, build: &str, stream: &str) -> Vec<u8> {
        let out = self.kiln(&["logs", build, stream]);
        assert!(out.status.success(), "kiln logs {build} {stream}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }
}

/// `(stage, step) → status` pairs of a finished build document.
pub fn step_statuses(doc: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut v = Vec::new();
    for s in doc["stages"].as_array().expect("stages") {
        for t in s["steps"].as_array().expect("steps") {
            v.push((
                s["name"].as_str().unwrap_or_default().to_string(),
                t["name"].as_str().unwrap_or_default().to_string(),
                t["status"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    v
}

pub fn stage_status(doc: &serde_json::Value, stage: &str) -> String {
    doc["stages"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == stage))
        .and_then(|s| s["status"].as_str())
        .unwrap_or("<missing>")
        .to_string()
}

/// A private set of table, bucket and queues on LocalStack (`localstack/seed.sh` under a
/// prefix of its own), so nothing else using LocalStack can take a test's messages: the
/// `KILN_*` resource variables to start Kiln with.
pub fn private_resources(name: &str) -> Vec<(String, String)> {
    let prefix = format!("kt{}-{name}", std::process::id());
    let out = Command::new(repo_root().join("localstack/seed.sh"))
        .env("KILN_PREFIX", &prefix)
        .output()
        .expect("run localstack/seed.sh");
    assert!(out.status.success(), "seed: {}", String::from_utf8_lossy(&out.stderr));
    [
        ("KILN_TABLE", format!("{prefix}-state")),
        ("KILN_BUCKET", format!("{prefix}-logs")),
        ("KILN_JOBS_QUEUE", format!("{prefix}-jobs")),
        ("KILN_DISPATCH_QUEUE", format!("{prefix}-dispatch")),
        ("KILN_EVENTS_QUEUE", format!("{prefix}-events.fifo")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
