//! `kiln dev` end to end: a real server process, real HTTP, the CLI's client commands.

mod common;
// Only part of the fake host is used here.
#[allow(dead_code)]
#[path = "common/fake_git.rs"]
mod fake_git;
use common::dev::{Dev, SIGNING_KEY, TOKEN};
use common::{HANG, Scratch, release, repo_root, wait_for_file};
use kiln_core::tokens::TokenSigner;
use kiln_domain::BuildId;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn submit_follow_and_the_followed_bytes_equal_the_stored_log() {
    let dev = Dev::start(Scratch::new());
    let p = dev.scratch.pipeline(
        "p.yml",
        r#"version: "1"
steps:
  - name: talk
    commands:
      - for i in 1 2 3 4 5; do echo "line $i"; sleep 0.3; done
      - printf 'no newline'
"#,
    );
    let out = dev.kiln(&["submit", p.to_str().unwrap(), "--repo", "acme/web"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // Follow the step's log while it runs.
    let followed = dev.kiln(&["logs", &id, "default/talk", "--follow"]);
    assert!(followed.status.success(), "{}", String::from_utf8_lossy(&followed.stderr));
    let b = dev.wait_ended(&id).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    assert_eq!(followed.stdout, b"line 1\nline 2\nline 3\nline 4\nline 5\nno newline");
    // The stored log, read back whole.
    let (status, stored) = dev.get_as(&format!("/v1/builds/{id}/logs/default/talk"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(stored, followed.stdout);
    // `kiln status --api` sees the same build.
    let st = dev.kiln(&["status", &id]);
    assert!(String::from_utf8_lossy(&st.stdout).contains("succeeded"));
    // `kiln submit --follow` streams and exits like `kiln run`.
    let out = dev.kiln(&["submit", "examples/hello.yml", "--follow"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("default/greet | hello from kiln"));
    let out = dev.kiln(&["submit", "examples/dag.yml", "--follow"]);
    assert_eq!(out.status.code(), Some(1));
}

/// The step holds still after its line until the client has it: a tailing client gets a
/// line while the step runs. (How soon: the benchmark's log latency figures.)
#[tokio::test(flavor = "multi_thread")]
async fn a_tailing_client_gets_a_printed_line_while_the_step_runs() {
    let dev = Dev::start(Scratch::new());
    let gate = dev.scratch.shared_dir().join("line-seen");
    let id = dev
        .submit(&format!(
            r#"version: "1"
steps:
  - name: slow
    commands:
      - echo first
      - {}
      - echo second
"#,
            wait_for_file(&gate)
        ))
        .await;
    let started = Instant::now();
    let mut offset = 0u64;
    let mut got = Vec::new();
    loop {
        assert!(started.elapsed() < HANG, "no line after {:?}", started.elapsed());
        let resp = dev
            .http()
            .get(format!("{}/v1/builds/{id}/logs/default/slow?offset={offset}&wait=20", dev.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        offset = resp.headers()["kiln-next-offset"].to_str().unwrap().parse().unwrap();
        got.extend_from_slice(&resp.bytes().await.unwrap());
        if got.contains(&b'\n') {
            break;
        }
    }
    assert_eq!(got, b"first\n");
    assert_eq!(dev.build(&id).await["status"], "running", "the step is still running");
    release(&gate);
    let b = dev.wait_ended(&id).await;
    assert_eq!(b["status"], "succeeded", "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_errors() {
    let dev = Dev::start(Scratch::new());
    // health needs no token; everything else does
    assert_eq!(dev.get_as("/healthz", None).await.0, 200);
    assert_eq!(dev.get_as("/v1/builds/x", None).await.0, 401);
    assert_eq!(dev.get_as("/v1/builds/x", Some("wrong")).await.0, 401);
    assert_eq!(dev.get_as("/v1/builds/x", Some(TOKEN)).await.0, 404);
    // a runner token works only for its own build, and only on runner routes
    let a = dev.submit("version: \"1\"\nsteps:\n  - name: a\n    commands: [\"true\"]\n").await;
    let b = dev.submit("version: \"1\"\nsteps:\n  - name: b\n    commands: [\"true\"]\n").await;
    let signer = TokenSigner::new(SIGNING_KEY.as_bytes().to_vec());
    let runner_a = signer.sign(&BuildId::new(&a), u64::MAX);
    assert_eq!(
        dev.post_as(&format!("/v1/builds/{a}/ingest/heartbeat?stage=default"), Some(&runner_a), vec![])
            .await
            .0,
        200
    );
    let (status, body) =
        dev.post_as(&format!("/v1/builds/{b}/ingest/heartbeat?stage=default"), Some(&runner_a), vec![]).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = dev
        .post_as(
            &format!("/v1/builds/{b}/ingest/logs?stream=step/0001/default/b/1&offset=0"),
            Some(&runner_a),
            b"x".to_vec(),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(dev.get_as(&format!("/v1/builds/{a}"), Some(&runner_a)).await.0, 403);
    let expired = signer.sign(&BuildId::new(&a), 1);
    assert_eq!(
        dev.post_as(&format!("/v1/builds/{a}/ingest/heartbeat?stage=default"), Some(&expired), vec![])
            .await
            .0,
        401
    );
    // a broken pipeline: 400 with every error and its line and column
    let (status, body) = dev
        .post_as(
            "/v1/repos/acme/web/builds",
            Some(TOKEN),
            b"version: \"1\"\nsteps:\n  - name: x\n    comands: [a]\n".to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let d = &body["details"][0];
    assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(4), Some(5)), "{body}");
    assert!(d["message"].as_str().unwrap().contains("did you mean \"commands\""));
    // an oversized body: 413
    let (status, _) =
        dev.post_as("/v1/repos/acme/web/builds", Some(TOKEN), vec![b'#'; 2 * 1024 * 1024]).await;
    assert_eq!(status, 413);
    // bad repository name, unknown build for cancel
    assert_eq!(dev.post_as("/v1/repos/ac%20me/web/builds", Some(TOKEN), b"x".to_vec()).await.0, 400);
    assert_eq!(dev.post_as("/v1/builds/nope/cancel", Some(TOKEN), vec![]).await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_sleeping_step_and_its_process() {
    let dev = Dev::start(Scratch::new());
    let pid_file = dev.scratch.shared_dir().join("pid");
    let id = dev
        .submit(&format!(
            "version: \"1\"\nsteps:\n  - name: nap\n    commands: [\"echo $$ > {}; exec sleep 600\"]\n",
            pid_file.display()
        ))
        .await;
    let started = Instant::now();
    let pid = loop {
        if let Ok(p) = std::fs::read_to_string(&pid_file)
            && let Ok(p) = p.trim().parse::<u32>()
        {
            break p;
        }
        assert!(started.elapsed() < HANG, "step never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists());
    let out = dev.kiln(&["cancel", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let asked = Instant::now();
    loop {
        let b = dev.build(&id).await;
        let step = b["stages"][0]["steps"][0]["status"].clone();
        if b["status"] == "canceled" && step == "canceled" && !proc_dir.exists() {
            break;
        }
        assert!(
            asked.elapsed() < HANG,
            "not canceled after {:?}: {b} (process alive: {})",
            asked.elapsed(),
            proc_dir.exists()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("canceled and process gone after {:?}", asked.elapsed());
    assert_eq!(dev.post_as(&format!("/v1/builds/{id}/cancel"), Some(TOKEN), vec![]).await.0, 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_lists_and_routes_every_route() {
    let dev = Dev::start(Scratch::new());
    let (status, body) = dev.get_as("/v1/openapi.json", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for r in kiln_api::routes::ROUTES {
        let method = r.method.as_str().to_lowercase();
        assert!(doc["paths"][r.path][&method].is_object(), "{method} {} is not documented", r.path);
        // The router answers the documented method and path (a handler's own 404 has a body).
        let path = r.path.replace("{id}", "nope").replace(['{', '}'], "");
        let resp = dev
            .http()
            .request(r.method.clone(), format!("{}{path}", dev.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}");
        assert!(status != 404 || text.contains("message"), "{method} {path} is not routed");
    }
}

/// The Python with the OpenAPI validators (`scripts/tools.sh` installs it): from
/// `KILN_OPENAPI_VALIDATOR_PYTHON`, else the repository's `.tools/venv`. Tests that need it
/// are `#[ignore]`d, so a plain `cargo test` reports them as not run; `scripts/test.sh` runs
/// them, and there a missing validator is a failure, not a skip.
fn validator_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("KILN_OPENAPI_VALIDATOR_PYTHON") {
        return p.into();
    }
    let venv = repo_root().join(".tools/venv/bin/python");
    assert!(
        venv.exists(),
        "no OpenAPI validator: run scripts/tools.sh (or set KILN_OPENAPI_VALIDATOR_PYTHON)"
    );
    venv
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the OpenAPI validator (scripts/tools.sh installs it; scripts/test.sh runs ignored tests)"]
async fn the_openapi_document_passes_a_real_validator() {
    let dev = Dev::start(Scratch::new());
    let (status, body) = dev.get_as("/v1/openapi.json", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let file = dev.scratch.dir.path().join("openapi.json");
    std::fs::write(&file, &body).unwrap();
    let out =
        Command::new(validator_python()).args(["-m", "openapi_spec_validator"]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_catalog_over_http_and_build_missing() {
    let dev = Dev::start(Scratch::new());
    let yaml = std::fs::read_to_string(repo_root().join("examples/images.yml")).unwrap();
    let first = dev.submit(&yaml).await;
    assert_eq!(dev.wait_ended(&first).await["status"], "failed");
    let cell = |doc: &serde_json::Value, provider: &str| {
        doc["images"][0]["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["provider"] == provider)
            .cloned()
            .unwrap()
    };
    let (status, body) = dev.get_as("/v1/images", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(cell(&doc, "aws")["status"], "complete");
    assert_eq!(cell(&doc, "gcp")["status"], "complete");
    assert_eq!(cell(&doc, "azure")["status"], "failed");
    assert!(cell(&doc, "azure")["error"].as_str().unwrap().contains("quota exceeded"));
    // build what is missing: azure only
    let (status, body) = dev.post_as("/v1/images/base-os/builds", Some(TOKEN), vec![]).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["providers"], serde_json::json!(["azure"]));
    let second = body["id"].as_str().unwrap().to_string();
    assert_eq!(dev.wait_ended(&second).await["status"], "succeeded");
    let (_, body) = dev.get_as("/v1/images", Some(TOKEN)).await;
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for p in ["aws", "gcp", "azure"] {
        assert_eq!(cell(&doc, p)["status"], "complete", "{p}: {doc}");
        assert_eq!(cell(&doc, p)["percent"], 100);
    }
    // nothing missing now: 409; unknown image: 404; unknown provider: 400
    assert_eq!(dev.post_as("/v1/images/base-os/builds", Some(TOKEN), vec![]).await.0, 409);
    assert_eq!(dev.post_as("/v1/images/nope/builds", Some(TOKEN), vec![]).await.0, 404);
    let (status, _) =
        dev.post_as("/v1/images/base-os/builds", Some(TOKEN), br#"{"providers":["mars"]}"#.to_vec()).await;
    assert_eq!(status, 400);
    // the CLI prints the matrix from the API
    let out = dev.kiln(&["images"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("base-os") && text.contains("complete 100%"), "{text}");
}

/// A response the server really sent: which route (as in the document), its status and
/// its JSON body.
#[derive(serde::Serialize)]
struct Recorded {
    method: String,
    path: String,
    status: u16,
    body: serde_json::Value,
}

/// Calls routes and keeps what they answered.
struct Recorder<'a> {
    dev: &'a Dev,
    seen: Vec<Recorded>,
}

impl Recorder<'_> {
    /// `method` on `url` (a path with its values), recorded under `route` (its template).
    async fn call(
        &mut self,
        method: reqwest::Method,
        route: &str,
        url: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        self.call_with(method, route, url, token, &[], body).await
    }

    async fn call_with(
        &mut self,
        method: reqwest::Method,
        route: &str,
        url: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.dev.http().request(method.clone(), format!("{}{url}", self.dev.url)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {url}: {status} not JSON ({e}): {text}"));
        self.seen.push(Recorded {
            method: method.as_str().to_lowercase(),
            path: route.to_string(),
            status,
            body: body.clone(),
        });
        (status, body)
    }
}

/// Checks each recorded body against the document's schema for its route and status,
/// with the OpenAPI 3.1 schema validator scripts/tools.sh installs.
const VALIDATE_RESPONSES: &str = r##"
import json, sys
from openapi_schema_validator import OAS31Validator
doc = json.load(open(sys.argv[1]))
seen = json.load(open(sys.argv[2]))
bad = []
for r in seen:
    op = doc["paths"][r["path"]][r["method"]]
    resp = op["responses"].get(str(r["status"]))
    where = f'{r["method"].upper()} {r["path"]} -> {r["status"]}'
    if resp is None or "application/json" not in resp.get("content", {}):
        bad.append(f"{where}: no JSON response documented")
        continue
    # The schema's "#/components/..." references resolve against this root.
    schema = dict(resp["content"]["application/json"]["schema"], components=doc["components"])
    for e in OAS31Validator(schema).iter_errors(r["body"]):
        bad.append(f"{where}: {e.message} at {list(e.absolute_path)}")
print(f"{len(seen)} responses checked")
if bad:
    print("\n".join(bad))
    sys.exit(1)
"##;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the OpenAPI validator (scripts/tools.sh installs it; scripts/test.sh runs ignored tests)"]
async fn real_responses_validate_against_the_document() {
    use reqwest::Method;
    let dev = Dev::start(Scratch::new());
    let mut r = Recorder { dev: &dev, seen: Vec::new() };
    let signer = TokenSigner::new(SIGNING_KEY.as_bytes().to_vec());
    let builds = "/v1/repos/{org}/{repo}/builds";
    let (status, doc) =
        r.call(Method::GET, "/v1/openapi.json", "/v1/openapi.json", Some(TOKEN), vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(r.call(Method::GET, "/healthz", "/healthz", None, vec![]).await.0, 200);
    // A build with images (it fails: azure), and the catalog routes.
    let yaml = std::fs::read(repo_root().join("examples/images.yml")).unwrap();
    let (status, created) =
        r.call(Method::POST, builds, "/v1/repos/acme/web/builds", Some(TOKEN), yaml).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(dev.wait_ended(&id).await["status"], "failed");
    // Secrets: the list (names only), a bad name, and the runner route (its runner only).
    let secret = "/v1/repos/{org}/{repo}/secrets/{name}";
    let put = dev.http().put(format!("{}/v1/repos/acme/web/secrets/SOME_KEY", dev.url));
    assert_eq!(put.bearer_auth(TOKEN).body("value-1234").send().await.unwrap().status(), 204);
    let url = "/v1/repos/acme/web/secrets/9bad";
    assert_eq!(r.call(Method::PUT, secret, url, Some(TOKEN), b"value".to_vec()).await.0, 400);
    let (status, listed) = r
        .call(
            Method::GET,
            "/v1/repos/{org}/{repo}/secrets",
            "/v1/repos/acme/web/secrets",
            Some(TOKEN),
            vec![],
        )
        .await;
    assert_eq!((status, listed["secrets"][0]["name"].as_str()), (200, Some("SOME_KEY")));
    // The runner route answers only while the stage runs: a build held by a gate.
    let gate = dev.scratch.shared_dir().join("secrets-gate");
    let held =
        format!("version: \"1\"\nsteps:\n  - name: wait\n    commands: [\"{}\"]\n", wait_for_file(&gate));
    let running = dev.submit(&held).await;
    let url = format!("/v1/builds/{running}/secrets?stage=default");
    let own = signer.sign(&BuildId::new(&running), u64::MAX);
    assert_eq!(r.call(Method::GET, "/v1/builds/{id}/secrets", &url, Some(&own), vec![]).await.0, 200);
    assert_eq!(r.call(Method::GET, "/v1/builds/{id}/secrets", &url, Some(TOKEN), vec![]).await.0, 403);
    release(&gate);
    assert_eq!(dev.wait_ended(&running).await["status"], "succeeded");
    let url = format!("/v1/builds/{running}/secrets?stage=default");
    assert_eq!(
        r.call(Method::GET, "/v1/builds/{id}/secrets", &url, Some(&own), vec![]).await.0,
        403,
        "ended"
    );
    let broken = b"version: \"1\"\nsteps:\n  - name: x\n    comands: [a]\n".to_vec();
    assert_eq!(r.call(Method::POST, builds, "/v1/repos/acme/web/builds", Some(TOKEN), broken).await.0, 400);
    assert_eq!(
        r.call(Method::POST, builds, "/v1/repos/a%20b/web/builds", Some(TOKEN), b"x".to_vec()).await.0,
        400
    );
    assert_eq!(r.call(Method::GET, builds, "/v1/repos/acme/web/builds", Some(TOKEN), vec![]).await.0, 200);
    let one = "/v1/builds/{id}";
    assert_eq!(r.call(Method::GET, one, &format!("/v1/builds/{id}"), Some(TOKEN), vec![]).await.0, 200);
    assert_eq!(r.call(Method::GET, one, "/v1/builds/nope", Some(TOKEN), vec![]).await.0, 404);
    assert_eq!(r.call(Method::GET, one, "/v1/builds/nope", None, vec![]).await.0, 401);
    let runner = signer.sign(&BuildId::new(&id), u64::MAX);
    assert_eq!(r.call(Method::GET, one, &format!("/v1/builds/{id}"), Some(&runner), vec![]).await.0, 403);
    let cancel = "/v1/builds/{id}/cancel";
    assert_eq!(
        r.call(Method::POST, cancel, &format!("/v1/builds/{id}/cancel"), Some(TOKEN), vec![]).await.0,
        409
    );
    assert_eq!(r.call(Method::POST, cancel, "/v1/builds/nope/cancel", Some(TOKEN), vec![]).await.0, 404);
    let logs = "/v1/builds/{id}/logs";
    assert_eq!(r.call(Method::GET, logs, &format!("/v1/builds/{id}/logs"), Some(TOKEN), vec![]).await.0, 200);
    let step_log = "/v1/builds/{id}/logs/{stage}/{step}";
    let url = format!("/v1/builds/{id}/logs/bake/nope");
    assert_eq!(r.call(Method::GET, step_log, &url, Some(TOKEN), vec![]).await.0, 404);
    let events = "/v1/builds/{id}/events";
    let (status, page) =
        r.call(Method::GET, events, &format!("/v1/builds/{id}/events"), Some(TOKEN), vec![]).await;
    assert_eq!(status, 200);
    assert!(!page["events"].as_array().unwrap().is_empty());
    let images = "/v1/images/{name}";
    assert_eq!(r.call(Method::GET, "/v1/images", "/v1/images", Some(TOKEN), vec![]).await.0, 200);
    assert_eq!(r.call(Method::GET, images, "/v1/images/base-os", Some(TOKEN), vec![]).await.0, 200);
    assert_eq!(r.call(Method::GET, images, "/v1/images/nope", Some(TOKEN), vec![]).await.0, 404);
    let missing = "/v1/images/{name}/builds";
    let mars = br#"{"providers":["mars"]}"#.to_vec();
    assert_eq!(r.call(Method::POST, missing, "/v1/images/base-os/builds", Some(TOKEN), mars).await.0, 400);
    let (status, started) =
        r.call(Method::POST, missing, "/v1/images/base-os/builds", Some(TOKEN), vec![]).await;
    assert_eq!(status, 201, "{started}");
    let second = started["id"].as_str().unwrap().to_string();
    dev.wait_ended(&second).await;
    assert_eq!(r.call(Method::POST, missing, "/v1/images/base-os/builds", Some(TOKEN), vec![]).await.0, 409);
    // A running build: events in (and a refused one), runner ingest, then cancel.
    let running = dev.submit("version: \"1\"\nsteps:\n  - name: nap\n    commands: [\"sleep 30\"]\n").await;
    let url = format!("/v1/builds/{running}/events");
    let event = br#"{"specversion":"1.0","id":"e1","source":"test","type":"coin","data":{"side":"heads"}}"#;
    assert_eq!(r.call(Method::POST, events, &url, Some(TOKEN), event.to_vec()).await.0, 202);
    let (status, refused) =
        r.call(Method::POST, events, &url, Some(TOKEN), br#"{"type":"x"}"#.to_vec()).await;
    assert_eq!(status, 400);
    assert!(refused["details"].as_array().is_some_and(|d| d.len() > 1), "{refused}");
    let runner = signer.sign(&BuildId::new(&running), u64::MAX);
    let heartbeat = "/v1/builds/{id}/ingest/heartbeat";
    let url = format!("/v1/builds/{running}/ingest/heartbeat?stage=default");
    assert_eq!(r.call(Method::POST, heartbeat, &url, Some(&runner), vec![]).await.0, 200);
    let url = format!("/v1/builds/{id}/ingest/heartbeat?stage=default");
    assert_eq!(r.call(Method::POST, heartbeat, &url, Some(&runner), vec![]).await.0, 403);
    let url = "/v1/builds/nope/ingest/heartbeat?stage=default";
    assert_eq!(r.call(Method::POST, heartbeat, url, Some(TOKEN), vec![]).await.0, 404);
    let ingest = "/v1/builds/{id}/ingest/logs";
    let url = format!("/v1/builds/{running}/ingest/logs?stream=nonsense&offset=0");
    assert_eq!(r.call(Method::POST, ingest, &url, Some(&runner), b"x".to_vec()).await.0, 400);
    let url = format!("/v1/builds/{running}/ingest/logs?stream=service/0009/default/db/9&offset=0");
    assert_eq!(r.call(Method::POST, ingest, &url, Some(&runner), b"x".to_vec()).await.0, 200);
    // A gap: the stream has 1 byte, so offset 100 leaves a hole.
    let url = format!("/v1/builds/{running}/ingest/logs?stream=service/0009/default/db/9&offset=100");
    assert_eq!(r.call(Method::POST, ingest, &url, Some(&runner), b"x".to_vec()).await.0, 409);
    let url = format!("/v1/builds/{running}/ingest/init?batch=b1");
    assert_eq!(
        r.call(Method::POST, "/v1/builds/{id}/ingest/init", &url, Some(&runner), b"x\n".to_vec()).await.0,
        200
    );
    let url = format!("/v1/builds/{running}/ingest/complete?stream=service/0009/default/db/9");
    assert_eq!(
        r.call(Method::POST, "/v1/builds/{id}/ingest/complete", &url, Some(&runner), vec![]).await.0,
        200
    );
    let url = format!("/v1/builds/{running}/cancel");
    assert_eq!(r.call(Method::POST, cancel, &url, Some(TOKEN), vec![]).await.0, 202);
    assert_eq!(
        r.call(Method::GET, logs, &format!("/v1/builds/{running}/logs"), Some(TOKEN), vec![]).await.0,
        200
    );

    // Repositories and webhooks, against a fake host that serves the commit's pipeline.
    let fake = fake_git::FakeGit::start("host-token-1234").await;
    let commit = "c0ffee".repeat(7)[..40].to_string();
    let pipeline = "version: \"1\"\nsteps:\n  - name: s\n    commands: [\"true\"]\n";
    fake.put_commit("acme/web", &commit, fake_git::Commit::new().file(".kiln.yml", pipeline));
    let repo_route = "/v1/repos/{org}/{repo}";
    for (provider, bad) in [("github", "{\"provider\": \"svn\"}"), ("gitea", "{\"provider\": \"gitea\"}")] {
        let url = "/v1/repos/acme/web";
        assert_eq!(r.call(Method::PUT, repo_route, url, Some(TOKEN), bad.as_bytes().to_vec()).await.0, 400);
        let body = serde_json::json!({"provider": provider, "api_url": fake.api_url, "webhook_secret": "hook-secret", "token": "host-token-1234"});
        let (status, view) =
            r.call(Method::PUT, repo_route, url, Some(TOKEN), body.to_string().into_bytes()).await;
        assert_eq!(status, 200, "{view}");
        let push = serde_json::json!({"ref": "refs/heads/main", "after": commit, "before": "0".repeat(40),
            "repository": {"full_name": "acme/web"}, "head_commit": {"id": commit, "message": "m"}});
        let raw = push.to_string().into_bytes();
        let names = kiln_domain::git::hook::headers(provider.parse().unwrap());
        let signature = kiln_domain::git::hook::sign(provider.parse().unwrap(), b"hook-secret", &raw);
        let delivery = format!("delivery-{provider}");
        let hook = format!("/v1/hooks/{provider}");
        let headers = [
            (names.event, "push"),
            (names.delivery, delivery.as_str()),
            ("content-type", "application/json"),
        ];
        assert_eq!(r.call_with(Method::POST, &hook, &hook, None, &headers, raw.clone()).await.0, 401);
        let mut signed = headers.to_vec();
        signed.push((names.signature, signature.as_str()));
        let (status, answer) = r.call_with(Method::POST, &hook, &hook, None, &signed, raw.clone()).await;
        assert_eq!(status, 201, "{answer}");
        // Redelivered: nothing new, and why.
        let (status, again) = r.call_with(Method::POST, &hook, &hook, None, &signed, raw).await;
        assert_eq!((status, again["builds"].as_array().map(Vec::len)), (200, Some(0)), "{again}");
    }
    let (status, one) = r.call(Method::GET, repo_route, "/v1/repos/acme/web", Some(TOKEN), vec![]).await;
    assert_eq!((status, one["provider"].as_str()), (200, Some("gitea")), "{one}");
    assert_eq!(r.call(Method::GET, repo_route, "/v1/repos/acme/none", Some(TOKEN), vec![]).await.0, 404);
    let (status, all) = r.call(Method::GET, "/v1/repos", "/v1/repos", Some(TOKEN), vec![]).await;
    assert_eq!((status, all["repos"].as_array().map(Vec::len)), (200, Some(1)), "{all}");

    // Every answer's status is one the document lists for its route, with a JSON body.
    for s in &r.seen {
        let response = &doc["paths"][&s.path][&s.method]["responses"][s.status.to_string()];
        assert!(
            response["content"]["application/json"]["schema"].is_object(),
            "{} {} answered {} which the document does not describe: {}",
            s.method,
            s.path,
            s.status,
            s.body
        );
    }
    // Every JSON route was called.
    for route in kiln_api::routes::ROUTES {
        let method = route.method.as_str().to_lowercase();
        let ok = &doc["paths"][route.path][&method]["responses"][route.ok.0.to_string()];
        if ok["content"]["application/json"].is_object() {
            assert!(
                r.seen.iter().any(|s| s.path == route.path && s.method == method && s.status == route.ok.0),
                "no success answer of {method} {} was checked",
                route.path
            );
        }
    }
    // And every body validates against its schema.
    let python = validator_python();
    let dir = dev.scratch.dir.path();
    std::fs::write(dir.join("openapi.json"), serde_json::to_vec(&doc).unwrap()).unwrap();
    std::fs::write(dir.join("seen.json"), serde_json::to_vec(&r.seen).unwrap()).unwrap();
    let out = Command::new(python)
        .args(["-c", VALIDATE_RESPONSES])
        .arg(dir.join("openapi.json"))
        .arg(dir.join("seen.json"))
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{said}");
    assert!(out.status.success(), "{said}");
}
