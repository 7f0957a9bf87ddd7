//! The web UI in a real headless Chromium, driven over WebDriver (chromedriver), against a
//! real `kiln dev`: sign-in, a live log, cancel, the repository page, the image matrix, a
//! 60 MB log, and no console errors. Screenshots go to `target/ui-screenshots/`.
//!
//! Chromium and chromedriver come from Debian's packages (`scripts/test.sh` installs them;
//! `KILN_CHROMIUM` and `KILN_CHROMEDRIVER` say where, default `/usr/bin`). Ignored by a plain
//! `cargo test`; run with `--include-ignored`, it fails when they are missing.
//!
//! The WebDriver client is the few W3C commands the test needs, over reqwest (already a
//! dependency of the tests): no WebDriver crate, no Python.

mod common;

use common::dev::{Dev, TOKEN};
use common::{HANG, Scratch, repo_root};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The element key of the W3C WebDriver protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn tool(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    assert!(
        p.exists(),
        "{} not found ({var}): this test needs Debian's chromium and chromium-driver \
         (scripts/test.sh installs them: apt-get install chromium chromium-driver)",
        p.display()
    );
    p
}

/// A headless Chromium behind chromedriver, in a fresh profile; quit when dropped.
struct Browser {
    http: reqwest::Client,
    driver: Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        let chromium = tool("KILN_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = tool("KILN_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let addr = format!("127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        while http.get(format!("http://{addr}/status")).send().await.is_err() {
            assert!(started.elapsed() < HANG, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // The flags that work on a closed network as root (see the machine notes).
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--enable-precise-memory-info",
            "--window-size=1280,800",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let resp: Value = http
            .post(format!("http://{addr}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {resp}"))
            .to_string();
        Browser { http, driver, addr, session, _profile: profile }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("http://{}/session/{}{path}", self.addr, self.session);
        let mut req = self.http.request(method.clone(), url);
        if method != reqwest::Method::GET {
            req = req.json(&body);
        }
        let resp: Value = req.send().await.unwrap().json().await.unwrap();
        if let Some(err) = resp["value"].get("error") {
            panic!("WebDriver {method} {path}: {err}: {}", resp["value"]["message"]);
        }
        resp["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn js(&self, script: &str) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// Waits until `script` returns something truthy; that value, and how long it took.
    async fn until(&self, what: &str, limit: Duration, script: &str) -> (Value, Duration) {
        let started = Instant::now();
        loop {
            let v = self.js(script).await;
            let truthy = !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return (v, started.elapsed());
            }
            assert!(started.elapsed() < limit, "{what}: not seen within {limit:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(reqwest::Method::POST, "/element", json!({ "using": "css selector", "value": css }))
            .await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{id}/click"), json!({})).await;
    }

    async fn type_in(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{id}/value"), json!({ "text": text })).await;
    }

    async fn accept_alert(&self) {
        let started = Instant::now();
        loop {
            let url = format!("http://{}/session/{}/alert/accept", self.addr, self.session);
            let resp: Value =
                self.http.post(url).json(&json!({})).send().await.unwrap().json().await.unwrap();
            if resp["value"].get("error").is_none() {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no confirmation dialog: {resp}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&self, path: &Path) {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", Value::Null).await;
        let png = base64_decode(v.as_str().expect("a base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The browser console since the last call (chromedriver's log endpoint).
    async fn console(&self) -> Vec<Value> {
        let body = json!({ "type": "browser" });
        for path in ["/se/log", "/log"] {
            let url = format!("http://{}/session/{}{path}", self.addr, self.session);
            let resp: Value = self.http.post(url).json(&body).send().await.unwrap().json().await.unwrap();
            if let Some(entries) = resp["value"].as_array() {
                return entries.clone();
            }
        }
        panic!("chromedriver gave no browser log");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (and Chromium with it) even when the test panicked: a plain
        // HTTP DELETE, as Drop cannot await.
        if let Ok(mut s) = std::net::TcpStream::connect(&self.addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let req = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session, self.addr
            );
            if s.write_all(req.as_bytes()).is_ok() {
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = s.bytes().filter_map(val).collect();
    digits
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().fold(0u32, |n, d| (n << 6) | u32::from(*d)) << (6 * (4 - c.len()));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(c.len().saturating_sub(1))
        })
        .collect()
}

fn shots() -> PathBuf {
    repo_root().join("target/ui-screenshots")
}

/// A string as a JavaScript literal.
fn lit(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A JavaScript expression: the text of a log on the page (`data-log` is `stage/step`).
fn log_text(name: &str) -> String {
    format!(
        "(() => {{ const e = document.querySelector('[data-log=\"' + CSS.escape({}) + '\"]'); return e ? e.textContent : ''; }})()",
        lit(name)
    )
}

fn status_is(status: &str) -> String {
    format!(
        "const e = document.getElementById('build-status'); return e && e.textContent === {}",
        lit(status)
    )
}

/// Submits a pipeline and waits until its first step runs: the build id and `stage/step`.
async fn running(dev: &Dev, yaml: &str) -> (String, String) {
    let id = dev.submit(yaml).await;
    let started = Instant::now();
    loop {
        let b = dev.build(&id).await;
        let stage = &b["stages"][0];
        let step = &stage["steps"][0];
        if step["status"] == "running" {
            return (id, format!("{}/{}", stage["name"].as_str().unwrap(), step["name"].as_str().unwrap()));
        }
        let over = !matches!(b["status"].as_str(), Some("pending" | "running"));
        assert!(!over && started.elapsed() < HANG, "build {id} did not start: {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Chromium: run by scripts/test.sh"]
async fn the_web_ui_in_headless_chromium() {
    let dev = Dev::start(Scratch::new());
    let browser = Browser::start().await;
    let ui = &dev.url;

    // Sign in: the form, a token typed in, the home page.
    browser.goto(&format!("{ui}/")).await;
    browser
        .until("the sign-in form", HANG, "return document.querySelector('input[name=token]') !== null")
        .await;
    browser.type_in("input[name=token]", TOKEN).await;
    browser.click("form button[type=submit]").await;
    browser.until("the home page", HANG, "return document.title.startsWith('Repositories')").await;
    let stored = browser.js("return sessionStorage.getItem('kiln.token')").await;
    assert_eq!(stored, json!(TOKEN), "the token is kept in session storage");

    // A live log: the first line within 2.5 s of opening, before the second, which comes
    // without a reload; then the build's end.
    // Two stages, so the graph has an edge: `talk` prints, sleeps 4 s, prints again.
    let (live, step) = running(
        &dev,
        r#"version: "1"
stages:
  talk:
    steps:
      - name: say
        commands:
          - 'printf "first line \033[32mgreen\033[0m\n"'
          - sleep 4
          - echo second line
  after:
    needs: [talk]
    steps:
      - name: done
        commands: ["echo '::kiln::event talked {}'"]
"#,
    )
    .await;
    browser.goto(&format!("{ui}/builds/{live}")).await;
    let opened = Instant::now();
    browser.js("window.kilnNotReloaded = true; return true").await;
    let text = log_text(&step);
    let (first, _) = browser
        .until(
            "the first line",
            Duration::from_millis(2500),
            &format!("const t = {text}; return t.includes('first line') && t"),
        )
        .await;
    let first_at = opened.elapsed();
    assert!(first_at < Duration::from_millis(2500), "the first line took {first_at:?}");
    assert!(
        !first.as_str().unwrap_or("").contains("second line"),
        "the second line came with the first: {first}"
    );
    let green = browser
        .js(&format!(
            "return [...document.querySelectorAll('[data-log=\"' + CSS.escape({}) + '\"] .f32')].map(e => e.textContent).join()",
            lit(&step)
        ))
        .await;
    assert_eq!(green, json!("green"), "ANSI green is rendered as a colour");
    browser.until("the second line", HANG, &format!("return {text}.includes('second line')")).await;
    browser.until("the build's end", HANG, &status_is("succeeded")).await;
    assert_eq!(
        browser.js("return window.kilnNotReloaded === true").await,
        json!(true),
        "the page was reloaded"
    );
    browser
        .until(
            "both stages succeeded in the graph",
            HANG,
            "return document.querySelectorAll('.graph .stage.s-succeeded').length === 2",
        )
        .await;
    let edges = browser.js("return document.querySelectorAll('.graph svg path').length").await;
    assert_eq!(edges, json!(1), "the graph draws the `needs` edge");
    browser
        .until(
            "the event history",
            HANG,
            "return [...document.querySelectorAll('.events td')].some(td => td.textContent === 'talked')",
        )
        .await;
    browser.screenshot(&shots().join("build.png")).await;
    // At phone width: nothing wider than the screen.
    browser.cmd(reqwest::Method::POST, "/window/rect", json!({ "width": 390, "height": 844 })).await;
    let (fits, _) = browser
        .until("the narrow layout", HANG, "return document.documentElement.scrollWidth <= window.innerWidth ? 'fits' : document.documentElement.scrollWidth + ' > ' + window.innerWidth")
        .await;
    assert_eq!(fits, json!("fits"), "the build page is wider than a phone");
    browser.screenshot(&shots().join("build-phone.png")).await;
    browser.cmd(reqwest::Method::POST, "/window/rect", json!({ "width": 1280, "height": 800 })).await;

    // Cancel from the page ends a 60 s step.
    let (long, _) = running(
        &dev,
        "version: \"1\"\nsteps:\n  - name: long\n    commands: [\"echo started\", \"sleep 60\"]\n",
    )
    .await;
    browser.goto(&format!("{ui}/builds/{long}")).await;
    browser.until("the cancel button", HANG, "return document.getElementById('cancel') !== null").await;
    let asked = Instant::now();
    browser.click("#cancel").await;
    browser.accept_alert().await;
    browser.until("the canceled build", Duration::from_secs(30), &status_is("canceled")).await;
    assert!(asked.elapsed() < Duration::from_secs(30), "cancel took {:?}", asked.elapsed());
    assert_eq!(dev.wait_ended(&long).await["status"], "canceled");

    // The repository page lists both builds, newest first.
    browser.goto(&format!("{ui}/repos/acme/web")).await;
    let (order, _) = browser
        .until(
            "the repository's builds",
            HANG,
            "const ids = [...document.querySelectorAll('table.builds a')].map(a => a.textContent); return ids.length >= 2 && ids",
        )
        .await;
    let order: Vec<&str> = order.as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let (at_long, at_live) = (order.iter().position(|i| *i == long), order.iter().position(|i| *i == live));
    assert!(at_long.is_some() && at_live.is_some() && at_long < at_live, "newest first: {order:?}");

    // The image page: complete and failed cells, the error, then "Build missing".
    let images = std::fs::read_to_string(repo_root().join("examples/images.yml")).unwrap();
    let bake = dev.submit(&images).await;
    assert_eq!(dev.wait_ended(&bake).await["status"], "failed", "examples/images.yml fails azure");
    browser.goto(&format!("{ui}/images")).await;
    browser
        .until(
            "complete and failed cells",
            HANG,
            "return document.querySelectorAll('td.c-complete').length === 2 \
             && [...document.querySelectorAll('td.c-failed')].some(c => c.textContent.includes('quota exceeded'))",
        )
        .await;
    let links = browser.js("return document.querySelectorAll('td.cell a[href^=\"/builds/\"]').length").await;
    assert_eq!(links, json!(3), "each cell links the build that produced it");
    browser.screenshot(&shots().join("images.png")).await;
    browser.click("tbody button").await;
    browser
        .until(
            "the started build",
            HANG,
            "return document.querySelector('[role=status] a[href^=\"/builds/\"]') !== null",
        )
        .await;

    // A 60 MB log opens at its end, fast, in little memory.
    let big = dev
        .submit(
            "version: \"1\"\nsteps:\n  - name: big\n    commands:\n      - \"yes 'a line of a very big log, to see that only its end is loaded' | head -c 60000000\"\n      - echo END-OF-BIG-LOG\n",
        )
        .await;
    assert_eq!(dev.wait_ended(&big).await["status"], "succeeded");
    let list = dev.get_json(&format!("/v1/builds/{big}/logs")).await;
    let len = list["logs"].as_array().unwrap().iter().map(|l| l["len"].as_u64().unwrap()).max().unwrap();
    assert!(len >= 60_000_000, "the log is {len} bytes");
    browser.goto(&format!("{ui}/builds/{big}")).await;
    let opened = Instant::now();
    browser
        .until(
            "the end of the big log",
            Duration::from_secs(5),
            "return [...document.querySelectorAll('[data-log]')].some(e => e.textContent.includes('END-OF-BIG-LOG'))",
        )
        .await;
    let took = opened.elapsed();
    assert!(took < Duration::from_secs(5), "the big log took {took:?}");
    let heap = browser.js("return performance.memory.usedJSHeapSize").await.as_u64().unwrap();
    assert!(heap < 200 << 20, "JS heap {heap} bytes");
    let lines = browser.js("return document.querySelectorAll('.log .ln').length").await.as_u64().unwrap();
    assert!(lines <= 3100, "{lines} lines in the page: only the end is rendered");
    eprintln!("60 MB log: end shown after {took:?}, heap {} MiB, {lines} lines in the page", heap >> 20);

    // Nothing went wrong in the console on the way.
    let errors: Vec<Value> = browser.console().await.into_iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // A token the API refuses sends the person back to the form.
    browser.js("sessionStorage.setItem('kiln.token', 'not-a-token'); location.reload(); return true").await;
    browser
        .until("the sign-in form again", HANG, "return document.querySelector('input[name=token]') !== null && document.querySelector('[role=alert]') !== null")
        .await;
}
