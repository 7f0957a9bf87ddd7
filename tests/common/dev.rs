//! A `kiln dev` process on a free port for the end-to-end tests, and HTTP calls to it.

use super::{HANG, Scratch, repo_root};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-admin-token";
pub const SIGNING_KEY: &str = "test-signing-key";

/// A `kiln dev` process on a free port; stopped when dropped.
pub struct Dev {
    child: Child,
    pub url: String,
    pub scratch: Scratch,
}

impl Dev {
    pub fn start(scratch: Scratch) -> Self {
        Self::start_env(scratch, &[])
    }

    /// Started with these extra environment variables.
    pub fn start_env(scratch: Scratch, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(["dev", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(scratch.data_dir())
            .env("KILN_TOKEN", TOKEN)
            .env("KILN_SIGNING_KEY", SIGNING_KEY)
            // The local secret store's key: in the scratch dir, never the user's home.
            .env("KILN_SECRETS_KEY_FILE", key_file(&scratch))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start kiln dev");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Dev { child, url, scratch }
    }

    /// The server's process id (for its memory in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: impl AsRef<str>,
        token: &str,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let resp = reqwest::Client::new()
            .request(method, format!("{}{}", self.url, path.as_ref()))
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// GET with this token (or none): the status and the body.
    pub async fn get_as(&self, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
        let mut req = self.http().get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
    }

    /// POST with this token (or none): the status and the JSON body (null if not JSON).
    pub async fn post_as(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> (u16, serde_json::Value) {
        let mut req = self.http().post(format!("{}{path}", self.url)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn build(&self, id: &str) -> serde_json::Value {
        self.get_json(&format!("/v1/builds/{id}")).await
    }

    /// GET with the admin token; panics unless 200.
    pub async fn get(&self, path: &str) -> Vec<u8> {
        let (status, body) = self.call(reqwest::Method::GET, path, TOKEN, vec![]).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        body
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let body = self.get(path).await;
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)))
    }

    /// Submits a pipeline to acme/web: the build's id.
    pub async fn submit(&self, yaml: &str) -> String {
        let (status, body) = self
            .call(reqwest::Method::POST, "/v1/repos/acme/web/builds", TOKEN, yaml.as_bytes().to_vec())
            .await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        doc["id"].as_str().unwrap().to_string()
    }

    /// The build once it is neither pending nor running.
    pub async fn wait_ended(&self, id: &str) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let b = self.get_json(&format!("/v1/builds/{id}")).await;
            if !matches!(b["status"].as_str(), Some("pending" | "running")) {
                return b;
            }
            assert!(started.elapsed() < HANG, "build {id} did not end: {b}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kiln ARGS` against this server with the admin token.
    pub fn kiln(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("KILN_API", &self.url)
            .env("KILN_TOKEN", TOKEN)
            .current_dir(repo_root())
            .output()
            .unwrap()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let _ = self.child.wait();
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// The secrets key: in the scratch dir, outside the data dir.
pub fn key_file(scratch: &Scratch) -> std::path::PathBuf {
    scratch.dir.path().join("keys").join("secrets.key")
}
