//! Bad input at every door of `kiln dev`: HTTP bodies, pipelines, step output, webhook
//! payloads. Each gets a clear 4xx or a clear build result; the server stays up and its
//! memory stays bounded (its peak resident set, VmHWM, read from /proc).

mod common;
use common::dev::{Dev, TOKEN};
use common::{HANG, Scratch};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Instant;

/// The peak resident set of a process, in MiB (Linux: VmHWM in /proc/PID/status).
fn peak_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status");
    kib / 1024
}

/// What `kiln dev` may peak at while handling all of this: a few times its idle size plus
/// the 1 MiB pipeline and the 25 MB webhook caps, far below a 100 MB line held whole.
const PEAK_LIMIT_MIB: u64 = 256;

async fn send(
    dev: &Dev,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String) {
    let mut req = dev.http().request(method, format!("{}{path}", dev.url)).bearer_auth(TOKEN).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, String::from_utf8_lossy(&resp.bytes().await.unwrap_or_default()).into_owned())
        }
        // The server may close the connection on a body over its limit before reading it
        // all; that is a refusal too, as long as it is still up (checked after).
        Err(e) => (0, e.to_string()),
    }
}

async fn assert_up(dev: &Dev) {
    let (status, _) = dev.get_as("/healthz", None).await;
    assert_eq!(status, 200, "kiln dev is down");
}

fn assert_4xx(what: &str, (status, body): &(u16, String), says: &str) {
    assert!((400..500).contains(status), "{what}: {status} {body}");
    assert!(
        body.to_lowercase().contains(&says.to_lowercase()),
        "{what}: the answer does not say {says:?}: {body}"
    );
}

fn nested(depth: usize) -> Vec<u8> {
    let mut v = vec![b'['; depth];
    v.extend(std::iter::repeat_n(b']', depth));
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn http_bodies_get_a_clear_4xx_and_the_server_stays_up() {
    let dev = Dev::start(Scratch::new());
    let id = dev.submit("version: \"1\"\nsteps:\n  - name: a\n    commands: [\"true\"]\n").await;
    dev.wait_ended(&id).await;
    let events = format!("/v1/builds/{id}/events");
    let json_ct = [("content-type", "application/json")];

    // Sizes: over the 1 MiB body limit, and over the 64 KiB event limit.
    let r = send(&dev, Method::POST, "/v1/repos/acme/web/builds", &[], vec![b'#'; 8 << 20]).await;
    assert!(r.0 == 413 || r.0 == 0, "8 MiB pipeline: {r:?}");
    assert_up(&dev).await;
    let big = json!({"specversion": "1.0", "id": "1", "source": "t", "type": "t", "data": {"x": "a".repeat(100_000)}});
    let r = send(&dev, Method::POST, &events, &json_ct, big.to_string().into_bytes()).await;
    assert_4xx("100 KB event", &r, "limit");
    // Deep nesting under the 64 KiB limit: far past serde_json's recursion limit.
    let r = send(&dev, Method::POST, &events, &json_ct, nested(30_000)).await;
    assert_4xx("deeply nested event", &r, "recursion limit");
    let deep_obj = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let r = send(&dev, Method::POST, &events, &json_ct, deep_obj.into_bytes()).await;
    assert_4xx("deeply nested object", &r, "recursion limit");
    // Encodings: invalid UTF-8 inside a JSON string, UTF-16, a BOM, form encoding.
    let r = send(&dev, Method::POST, &events, &json_ct, b"{\"id\":\"\xff\xfe\"}".to_vec()).await;
    assert_4xx("invalid UTF-8 event", &r, "json");
    let utf16: Vec<u8> = "{\"id\":\"1\"}".encode_utf16().flat_map(u16::to_le_bytes).collect();
    let r = send(&dev, Method::POST, &events, &json_ct, utf16).await;
    assert_4xx("UTF-16 event", &r, "json");
    let r = send(
        &dev,
        Method::POST,
        &events,
        &[("content-type", "application/x-www-form-urlencoded")],
        b"id=1&type=x".to_vec(),
    )
    .await;
    assert_4xx("form-encoded event", &r, "json");
    // Wrong types.
    let wrong = json!({"specversion": 1.0, "id": 7, "source": ["s"], "type": null, "data": "text"});
    let r = send(&dev, Method::POST, &events, &json_ct, wrong.to_string().into_bytes()).await;
    assert_4xx("wrongly typed event", &r, "must be a string");
    assert!(r.1.contains("must be a JSON object"), "{}", r.1);
    let r = send(&dev, Method::POST, &events, &json_ct, b"[1,2,3]".to_vec()).await;
    assert_4xx("an array for an event", &r, "object");
    let r = send(&dev, Method::POST, &events, &json_ct, Vec::new()).await;
    assert_4xx("an empty event", &r, "json");
    // Repository settings with wrong types and nesting.
    let r = send(
        &dev,
        Method::PUT,
        "/v1/repos/acme/web",
        &json_ct,
        json!({"provider": 3, "api_url": []}).to_string().into_bytes(),
    )
    .await;
    assert!((400..500).contains(&r.0), "wrongly typed repo settings: {r:?}");
    let r = send(&dev, Method::PUT, "/v1/repos/acme/web", &json_ct, nested(50_000)).await;
    assert!((400..500).contains(&r.0), "nested repo settings: {r:?}");
    // Secrets: a value that is not UTF-8, an absurd name.
    let r = send(&dev, Method::PUT, "/v1/repos/acme/web/secrets/A", &[], vec![0xff, 0xfe, 0]).await;
    assert!((200..500).contains(&r.0) && r.0 != 500, "binary secret: {r:?}");
    let name = "N".repeat(10_000);
    let r = send(&dev, Method::PUT, &format!("/v1/repos/acme/web/secrets/{name}"), &[], b"v".to_vec()).await;
    assert!((400..500).contains(&r.0), "a 10,000-character secret name: {}", r.0);
    // Query strings of the wrong type.
    let r =
        send(&dev, Method::GET, &format!("/v1/builds/{id}/logs/default/a?offset=-1&wait=abc"), &[], vec![])
            .await;
    assert!((400..500).contains(&r.0), "bad query: {r:?}");

    assert_up(&dev).await;
    // Still serving builds.
    let id = dev.submit("version: \"1\"\nsteps:\n  - name: b\n    commands: [\"echo ok\"]\n").await;
    assert_eq!(dev.wait_ended(&id).await["status"], "succeeded");
    let peak = peak_mib(dev.pid());
    println!("kiln dev peak resident memory: {peak} MiB");
    assert!(peak < PEAK_LIMIT_MIB, "kiln dev peaked at {peak} MiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_pipelines_get_compile_errors_quickly_in_bounded_memory() {
    let dev = Dev::start(Scratch::new());
    let billion_laughs = {
        let mut y =
            String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for (prev, name) in
            ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            let refs = vec![format!("*{prev}"); 9].join(",");
            y.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        y.push_str("version: \"1\"\nsteps:\n  - name: x\n    commands: *i\n");
        y.into_bytes()
    };
    let merge_bomb =
        b"base: &b {name: x, commands: [\"true\"]}\nversion: \"1\"\nsteps:\n  - <<: *b\n".to_vec();
    let huge_scalar =
        format!("version: \"1\"\nsteps:\n  - name: {}\n    commands: [\"true\"]\n", "a".repeat(1_000_000))
            .into_bytes();
    let deep_flow = nested(300_000);
    let deep_block: Vec<u8> =
        (0..2_000).flat_map(|i| format!("{}k{i}:\n", " ".repeat(i)).into_bytes()).collect();
    let deep_seq: Vec<u8> = (0..200_000).flat_map(|_| b"- ".to_vec()).chain(*b"x\n").collect();
    let not_utf8 = b"version: \"1\"\nsteps:\n  - name: \xff\xfe\n".to_vec();
    let nul = b"version: \"1\"\x00\nsteps: []\n".to_vec();
    let many_keys: Vec<u8> = (0..60_000).flat_map(|i| format!("k{i}: {i}\n").into_bytes()).collect();
    let cases: [(&str, Vec<u8>, &str); 9] = [
        ("alias bomb", billion_laughs, "alias"),
        ("merge key alias", merge_bomb, "alias"),
        ("1 MB scalar", huge_scalar, "name"),
        ("300,000 nested flow sequences", deep_flow, "recursion limit"),
        ("2,000 nested block mappings", deep_block, ""),
        ("200,000 nested block sequences", deep_seq, "nested too deeply"),
        ("not UTF-8", not_utf8, "utf-8"),
        ("a NUL byte", nul, ""),
        ("60,000 unknown keys", many_keys, ""),
    ];
    for (what, yaml, says) in cases {
        let started = Instant::now();
        let r = send(&dev, Method::POST, "/v1/repos/acme/web/builds", &[], yaml).await;
        assert!((400..500).contains(&r.0), "{what}: {} {}", r.0, &r.1[..r.1.len().min(300)]);
        assert!(r.1.to_lowercase().contains(says), "{what}: no {says:?} in {}", &r.1[..r.1.len().min(300)]);
        assert!(started.elapsed() < HANG, "{what} took {:?}", started.elapsed());
        assert_up(&dev).await;
    }
    let peak = peak_mib(dev.pid());
    println!("kiln dev peak resident memory: {peak} MiB");
    assert!(peak < PEAK_LIMIT_MIB, "kiln dev peaked at {peak} MiB");
}

/// A step whose output is hostile: the build ends with a clear result, the stored log is
/// byte-exact, and `kiln dev` neither dies nor holds the output in memory.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_step_output_ends_the_build_and_keeps_memory_bounded() {
    let dev = Dev::start(Scratch::new());
    let id = dev
        .submit(
            r#"version: "1"
steps:
  - name: long-line
    commands:
      - head -c 100000000 /dev/zero | tr '\0' 'a'
  - name: nul
    commands:
      - printf 'a\0b\0\0c\n\0'
  - name: big-directive
    commands:
      - printf '::kiln::event big {"x":"%s"}\n' "$(head -c 1000000 /dev/zero | tr '\0' x)"
      - echo after
  - name: long-directive-line
    commands:
      - printf '::kiln::event huge '; head -c 30000000 /dev/zero | tr '\0' 'y'; echo
"#,
        )
        .await;
    let b = dev.wait_ended(&id).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    assert_up(&dev).await;

    let long = read_all(&dev, &id, "long-line").await;
    assert_eq!(long.len(), 100_000_000);
    assert!(long.iter().all(|&b| b == b'a'), "the 100 MB line is stored as printed");
    assert_eq!(read_all(&dev, &id, "nul").await, b"a\0b\0\0c\n\0");
    let big = read_all(&dev, &id, "big-directive").await;
    let expected = format!("::kiln::event big {{\"x\":\"{}\"}}\nafter\n", "x".repeat(1_000_000));
    assert_eq!(big, expected.as_bytes(), "the directive line stays in the log, byte-exact");
    let huge = read_all(&dev, &id, "long-directive-line").await;
    assert_eq!(huge.len(), "::kiln::event huge ".len() + 30_000_000 + 1);

    // The directives over the batch size were not acted on, and the build says so.
    let events: Value = dev.get_json(&format!("/v1/builds/{id}/events")).await;
    let types = events.to_string();
    assert!(!types.contains("\"huge\""), "a 30 MB directive became an event");
    let init = String::from_utf8_lossy(&dev.get(&format!("/v1/builds/{id}/logs/init")).await).into_owned();
    assert!(init.contains("ignored malformed directive"), "no warning in the init log: {init}");

    let peak = peak_mib(dev.pid());
    println!("kiln dev peak resident memory: {peak} MiB");
    assert!(peak < PEAK_LIMIT_MIB, "kiln dev peaked at {peak} MiB for 130 MB of output");
}

/// A step's whole log, read by offsets (each read is capped by the server).
async fn read_all(dev: &Dev, id: &str, step: &str) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let resp = dev
            .http()
            .get(format!("{}/v1/builds/{id}/logs/default/{step}?offset={}", dev.url, out.len()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let complete = resp.headers().get("kiln-complete").is_some_and(|v| v == "true");
        let bytes = resp.bytes().await.unwrap();
        out.extend_from_slice(&bytes);
        if bytes.is_empty() || complete {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_webhook_payloads_get_a_clear_4xx() {
    let dev = Dev::start(Scratch::new());
    const SECRET: &str = "door-secret";
    let settings = json!({"provider": "github", "api_url": "http://127.0.0.1:9", "webhook_secret": SECRET, "token": "door-token"});
    let r = send(
        &dev,
        Method::PUT,
        "/v1/repos/acme/web",
        &[("content-type", "application/json")],
        settings.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);

    let sign = |body: &[u8]| {
        kiln_domain::git::hook::sign(kiln_domain::git::Provider::Github, SECRET.as_bytes(), body)
    };
    let deliver = |body: Vec<u8>, signature: Option<String>, event: &'static str| {
        let dev = &dev;
        async move {
            let mut req = dev
                .http()
                .post(format!("{}/v1/hooks/github", dev.url))
                .header("content-type", "application/json")
                .header("x-github-event", event)
                .header("x-github-delivery", uuid::Uuid::new_v4().to_string())
                .body(body);
            if let Some(s) = signature {
                req = req.header("x-hub-signature-256", s);
            }
            match req.send().await {
                Ok(resp) => (resp.status().as_u16(), resp.text().await.unwrap_or_default()),
                Err(e) => (0, e.to_string()),
            }
        }
    };
    let push = |repo: Value, after: Value| {
        json!({"ref": "refs/heads/main", "after": after, "repository": {"full_name": repo}})
            .to_string()
            .into_bytes()
    };
    let good_sha = json!("0123456789abcdef0123456789abcdef01234567");

    // Unsigned, badly signed: 401, whatever the body.
    let r = deliver(push(json!("acme/web"), good_sha.clone()), None, "push").await;
    assert_4xx("unsigned", &r, "signature");
    let r = deliver(push(json!("acme/web"), good_sha.clone()), Some("sha256=00".into()), "push").await;
    assert_4xx("badly signed", &r, "signature");
    // Not JSON, form-encoded, nested, wrong types, a SHA that is not one.
    for (what, body) in [
        ("not JSON", b"\xff\xfe not json".to_vec()),
        ("form-encoded", b"payload=%7B%7D".to_vec()),
        ("deeply nested", nested(50_000)),
        ("wrong types", push(json!(42), json!(["x"]))),
        ("unknown repository", push(json!("nobody/nothing"), good_sha.clone())),
    ] {
        let r = deliver(body.clone(), Some(sign(&body)), "push").await;
        assert!((400..500).contains(&r.0), "{what}: {r:?}");
    }
    let body = push(json!("acme/web"), json!("../../etc/passwd"));
    let r = deliver(body.clone(), Some(sign(&body)), "push").await;
    assert_4xx("a path for a SHA", &r, "commit");
    // Over the 25 MB cap.
    let body = vec![b' '; 30 << 20];
    let r = deliver(body.clone(), Some(sign(&body)), "push").await;
    assert!(r.0 == 413 || r.0 == 0, "30 MB delivery: {r:?}");
    assert_up(&dev).await;
    let peak = peak_mib(dev.pid());
    println!("kiln dev peak resident memory: {peak} MiB");
    assert!(peak < PEAK_LIMIT_MIB, "kiln dev peaked at {peak} MiB");
}
