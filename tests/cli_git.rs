//! Builds from git end to end, against a fake GitHub (tests/common/fake_git.rs): signed
//! webhooks start builds of the pushed commit or of a pull request's head, with the
//! repository's `.kiln.yml` and its files checked out; the commit statuses come back with
//! the token and a link; bad signatures, redeliveries, filtered branches and closed pull
//! requests start nothing; forks get no secrets; a tarball that climbs out of the workspace
//! fails its stage and writes nothing; `kiln repos add/list`.

mod common;
#[path = "common/fake_git.rs"]
mod fake_git;

use common::dev::{Dev, TOKEN};
use common::{HANG, Scratch};
use fake_git::{Commit, FakeGit, Hostile, Origin, PostedStatus};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REPO: &str = "acme/web";
const HOOK_SECRET: &str = "hook-secret-5e1f0c2a";
const GIT_TOKEN: &str = "ghs_fakeRepoToken0123456789";
/// Where the status links point: not the server's own address, so the test sees that
/// `KILN_PUBLIC_URL` is what they use.
const PUBLIC_URL: &str = "https://kiln.example.test";

// ---------------------------------------------------------------------------------------
// Harness: a fake host and a `kiln dev` with acme/web registered on it.

struct Git {
    dev: Dev,
    fake: FakeGit,
}

async fn setup() -> Git {
    let fake = FakeGit::start(GIT_TOKEN).await;
    let dev = Dev::start_env(Scratch::new(), &[("KILN_PUBLIC_URL", PUBLIC_URL)]);
    let settings = register(&dev, REPO, &fake.api_url, HOOK_SECRET).await;
    assert_eq!(settings["repo"], REPO, "{settings}");
    assert_eq!(settings["provider"], "github", "{settings}");
    assert_eq!(settings["api_url"], fake.api_url.as_str(), "{settings}");
    Git { dev, fake }
}

async fn send(
    dev: &Dev,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", dev.url)).body(body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

fn as_json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// `PUT /v1/repos/{repo}`: the settings it answers, checked to hold neither credential.
async fn register(dev: &Dev, repo: &str, api_url: &str, secret: &str) -> Value {
    let body =
        json!({"provider": "github", "api_url": api_url, "webhook_secret": secret, "token": GIT_TOKEN});
    let (status, answer) = send(
        dev,
        Method::PUT,
        &format!("/v1/repos/{repo}"),
        Some(TOKEN),
        &[("content-type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status, 200, "register {repo}: {text}");
    assert!(!text.contains(secret) && !text.contains(GIT_TOKEN), "a credential in the answer: {text}");
    as_json(&answer)
}

/// `sha256=<hex HMAC-SHA256 of body>`, as GitHub signs a delivery.
fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn delivery() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A webhook delivery as GitHub sends it (no bearer token); `signature` is the
/// `X-Hub-Signature-256` header, if any.
async fn hook(dev: &Dev, event: &str, delivery: &str, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("user-agent", "GitHub-Hookshot/8c3ee2f"),
        ("x-github-event", event),
        ("x-github-delivery", delivery),
        ("x-github-hook-id", "501234567"),
        ("x-github-hook-installation-target-type", "repository"),
        ("x-github-hook-installation-target-id", "35129377"),
    ];
    if let Some(s) = signature {
        headers.push(("x-hub-signature-256", s));
    }
    let (status, body) = send(dev, Method::POST, "/v1/hooks/github", None, &headers, body.to_vec()).await;
    (status, as_json(&body))
}

/// A correctly signed delivery of `payload`.
async fn signed(dev: &Dev, event: &str, delivery: &str, payload: &Value) -> (u16, Value) {
    let body = payload.to_string().into_bytes();
    hook(dev, event, delivery, &body, Some(&sign(HOOK_SECRET, &body))).await
}

/// A signed push that must start exactly one build: its id.
async fn push_builds(g: &Git, delivery: &str, payload: &Value) -> String {
    let (status, answer) = signed(&g.dev, "push", delivery, payload).await;
    assert_eq!(status, 201, "{answer}");
    let builds = answer["builds"].as_array().unwrap_or_else(|| panic!("no builds in {answer}"));
    assert_eq!(builds.len(), 1, "{answer}");
    builds[0].as_str().unwrap().to_string()
}

/// A signed delivery that must start nothing: the reason given.
async fn starts_nothing(g: &Git, event: &str, payload: &Value) -> String {
    let (status, answer) = signed(&g.dev, event, &delivery(), payload).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["builds"], json!([]), "{answer}");
    let reason = answer["reason"].as_str().unwrap_or_default().to_string();
    assert!(!reason.is_empty(), "no reason: {answer}");
    reason
}

/// The ids of the repository's builds.
async fn builds_of(dev: &Dev, repo: &str) -> Vec<String> {
    let list = dev.get_json(&format!("/v1/repos/{repo}/builds")).await;
    list["builds"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_string()).collect()
}

async fn log(dev: &Dev, id: &str, stage: &str, step: &str) -> String {
    String::from_utf8_lossy(&dev.get(&format!("/v1/builds/{id}/logs/{stage}/{step}")).await).into_owned()
}

fn stage<'a>(build: &'a Value, name: &str) -> &'a Value {
    build["stages"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no stage {name} in {build}"))
}

/// A commit id: 40 hex digits derived from `label`.
fn sha(label: &str) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(label.as_bytes()))[..40].to_string()
}

fn repository(full_name: &str) -> Value {
    let (owner, name) = full_name.split_once('/').unwrap();
    json!({
        "id": 35129377,
        "node_id": "MDEwOlJlcG9zaXRvcnkzNTEyOTM3Nw==",
        "name": name,
        "full_name": full_name,
        "private": true,
        "owner": {"login": owner, "id": 21031067, "type": "Organization"},
        "html_url": format!("https://github.com/{full_name}"),
        "clone_url": format!("https://github.com/{full_name}.git"),
        "default_branch": "main"
    })
}

/// A `push` payload (GitHub's documented shape, trimmed): `git_ref` moved to `after`.
fn push_payload(git_ref: &str, after: &str, message: &str) -> Value {
    let deleted = after.chars().all(|c| c == '0');
    let head_commit = if deleted {
        Value::Null
    } else {
        json!({
            "id": after,
            "tree_id": sha(&format!("tree of {after}")),
            "distinct": true,
            "message": message,
            "timestamp": "2026-01-02T03:04:05Z",
            "url": format!("https://github.com/{REPO}/commit/{after}"),
            "author": {"name": "The Octocat", "email": "octocat@github.com", "username": "octocat"},
            "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
            "added": [], "removed": [], "modified": ["hello.txt"]
        })
    };
    json!({
        "ref": git_ref,
        "before": sha(&format!("before {after}")),
        "after": after,
        "created": false,
        "deleted": deleted,
        "forced": false,
        "base_ref": null,
        "compare": format!("https://github.com/{REPO}/compare/abc...def"),
        "commits": if deleted { json!([]) } else { json!([head_commit.clone()]) },
        "head_commit": head_commit,
        "repository": repository(REPO),
        "pusher": {"name": "octocat", "email": "octocat@github.com"},
        "sender": {"login": "octocat", "id": 583231, "type": "User"}
    })
}

/// A `pull_request` payload: `head_repo`'s `head_ref` at `head_sha` into acme/web's `base_ref`.
fn pr_payload(
    action: &str,
    number: u64,
    head_repo: &str,
    head_ref: &str,
    head_sha: &str,
    base_ref: &str,
) -> Value {
    let user = head_repo.split('/').next().unwrap();
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "url": format!("https://api.github.com/repos/{REPO}/pulls/{number}"),
            "id": 1000 + number,
            "number": number,
            "state": if action == "closed" { "closed" } else { "open" },
            "title": "Make the greeting friendlier",
            "user": {"login": user, "id": 99, "type": "User"},
            "body": "Please pull.",
            "merged": false,
            "head": {
                "label": format!("{user}:{head_ref}"),
                "ref": head_ref,
                "sha": head_sha,
                "user": {"login": user},
                "repo": repository(head_repo)
            },
            "base": {
                "label": format!("acme:{base_ref}"),
                "ref": base_ref,
                "sha": sha(&format!("base {base_ref}")),
                "user": {"login": "acme"},
                "repo": repository(REPO)
            }
        },
        "repository": repository(REPO),
        "sender": {"login": user, "id": 99, "type": "User"}
    })
}

/// Polls the fake until `done` holds for the statuses posted for `sha`.
async fn wait_statuses(
    fake: &FakeGit,
    sha: &str,
    done: impl Fn(&[PostedStatus]) -> bool,
) -> Vec<PostedStatus> {
    let started = Instant::now();
    loop {
        let of_sha: Vec<PostedStatus> = fake.statuses().into_iter().filter(|s| s.sha == sha).collect();
        if done(&of_sha) {
            return of_sha;
        }
        assert!(started.elapsed() < HANG, "statuses of {sha} so far: {of_sha:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The states the fake accepted for `context`, in order.
fn states(statuses: &[PostedStatus], context: &str) -> Vec<String> {
    statuses
        .iter()
        .filter(|s| s.context() == context && s.answered == 201)
        .map(|s| s.state().to_string())
        .collect()
}

fn ended(statuses: &[PostedStatus], context: &str) -> bool {
    states(statuses, context).iter().any(|s| s != "pending")
}

/// Waits for the `kiln` context and `kiln/<stage>` to reach an end state, then checks each
/// posted state came once, in order `pending` … `want`.
async fn assert_statuses(fake: &FakeGit, sha: &str, stage: &str, want: &str) -> Vec<PostedStatus> {
    let stage_context = format!("kiln/{stage}");
    let got = wait_statuses(fake, sha, |s| ended(s, "kiln") && ended(s, &stage_context)).await;
    let kiln = states(&got, "kiln");
    assert_eq!(kiln.first().map(String::as_str), Some("pending"), "{got:#?}");
    assert_eq!(kiln.last().map(String::as_str), Some(want), "{got:#?}");
    let mut once = kiln.clone();
    once.dedup();
    assert_eq!(once, kiln, "a state posted twice: {got:#?}");
    assert_eq!(states(&got, &stage_context).last().map(String::as_str), Some(want), "{got:#?}");
    got
}

/// Whether `text` names line `n` as `n:COL` (as `LINE:COL: message`) or `line n`.
fn mentions_line(text: &str, n: u32) -> bool {
    let digits = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
    let needle = format!("{n}:");
    text.contains(&format!("line {n}"))
        || text.match_indices(&needle).any(|(i, _)| {
            !digits(text[..i].chars().next_back()) && digits(text[i + needle.len()..].chars().next())
        })
}

fn pipeline_commit(yaml: &str, label: &str) -> Commit {
    Commit::new().file(".kiln.yml", yaml).file("hello.txt", &format!("hello from {label}\n"))
}

fn files_named(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if names.iter().any(|n| e.file_name() == *n) {
                found.push(p.clone());
            }
            if is_dir {
                stack.push(p);
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------

const MAIN_ONLY: &str = r#"version: "1"
on:
  push: { branches: [main] }
stages:
  build:
    steps:
      - name: show
        commands:
          - cat hello.txt
          - ./tools/greet.sh
          - echo "commit=$KILN_COMMIT branch=$KILN_BRANCH tag=[$KILN_TAG] pr=[$KILN_PULL_REQUEST] event=$KILN_GIT_EVENT"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_push_to_main_builds_that_commit_and_reports_pending_then_success() {
    let g = setup().await;
    let commit = sha("push to main");
    g.fake.put_commit(
        REPO,
        &commit,
        pipeline_commit(MAIN_ONLY, &commit)
            .executable("tools/greet.sh", "#!/bin/sh\necho \"greet: executable\"\n"),
    );
    let id_delivery = delivery();
    let message = "Make the greeting friendlier\n\nA longer body.";
    let id = push_builds(&g, &id_delivery, &push_payload("refs/heads/main", &commit, message)).await;

    let build = g.dev.wait_ended(&id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(build["repo"], REPO);
    // The step ran in the checked-out commit: its file, its executable script, its variables.
    let out = log(&g.dev, &id, "build", "show").await;
    assert!(out.contains(&format!("hello from {commit}\n")), "{out}");
    assert!(out.contains("greet: executable\n"), "{out}");
    assert!(out.contains(&format!("commit={commit} branch=main tag=[] pr=[] event=push\n")), "{out}");

    // What started it, on the build.
    let git = &build["git"];
    assert_eq!(git["provider"], "github", "{git}");
    assert_eq!(git["repo"], REPO, "{git}");
    assert_eq!(git["event"], "push", "{git}");
    assert_eq!(git["ref"], "refs/heads/main", "{git}");
    assert_eq!(git["branch"], "main", "{git}");
    assert_eq!(git["commit"], commit.as_str(), "{git}");
    assert_eq!(git["delivery"], id_delivery.as_str(), "{git}");
    assert!(git["message"].as_str().is_some_and(|m| m.starts_with("Make the greeting friendlier")), "{git}");
    assert!(git["tag"].is_null() && git["pull_request"].is_null(), "{git}");
    assert!(git["author"].as_str().is_some_and(|a| a.to_lowercase().contains("octocat")), "{git}");

    // The webhook is the first event of its history.
    let events = g.dev.get_json(&format!("/v1/builds/{id}/events?limit=5")).await;
    let first = &events["events"][0]["event"];
    assert_eq!(first["type"], "dev.kiln.git.push", "{events}");
    assert!(first["data"].to_string().contains(&id_delivery), "{first}");

    // Statuses: pending then success, with the token, linking to the build.
    let got = assert_statuses(&g.fake, &commit, "build", "success").await;
    for s in &got {
        assert_eq!(s.repo, REPO, "{s:?}");
        assert_eq!(s.authorization.as_deref(), Some(format!("Bearer {GIT_TOKEN}").as_str()), "{s:?}");
        assert_eq!(s.body["target_url"], format!("{PUBLIC_URL}/builds/{id}"), "{s:?}");
    }

    // The token went to the API (contents at that commit, the tarball) and never to the
    // host the tarball redirect points at.
    let requests = g.fake.requests();
    let api_with_token = |path: &str, query: &str| {
        requests.iter().any(|r| {
            r.origin == Origin::Api
                && r.method == "GET"
                && r.uri.starts_with(path)
                && r.uri.contains(query)
                && r.authorization.as_deref().is_some_and(|a| a.contains(GIT_TOKEN))
        })
    };
    let contents = format!("/repos/{REPO}/contents/.kiln.yml?");
    assert!(api_with_token(&contents, &format!("ref={commit}")), "{requests:#?}");
    assert!(api_with_token(&format!("/repos/{REPO}/tarball/{commit}"), ""), "{requests:#?}");
    let codeload: Vec<_> = requests.iter().filter(|r| r.origin == Origin::Codeload).collect();
    assert!(!codeload.is_empty(), "the redirect was not followed: {requests:#?}");
    assert!(
        codeload.iter().all(|r| r.authorization.is_none()),
        "a header went to the other host: {codeload:#?}"
    );

    // The settings read back without their credentials.
    let (status, body) =
        send(&g.dev, Method::GET, &format!("/v1/repos/{REPO}"), Some(TOKEN), &[], vec![]).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(&g.fake.api_url) && !text.contains(HOOK_SECRET) && !text.contains(GIT_TOKEN),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_missing_signatures_get_401_and_start_nothing() {
    let g = setup().await;
    let commit = sha("unsigned");
    g.fake.put_commit(REPO, &commit, pipeline_commit(MAIN_ONLY, &commit));
    let body = push_payload("refs/heads/main", &commit, "unsigned").to_string().into_bytes();

    let (status, answer) = hook(&g.dev, "push", &delivery(), &body, None).await;
    assert_eq!(status, 401, "missing: {answer}");
    let (status, answer) =
        hook(&g.dev, "push", &delivery(), &body, Some(&sign("not-the-secret", &body))).await;
    assert_eq!(status, 401, "another secret: {answer}");
    // Signed, then changed on the way.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (status, answer) =
        hook(&g.dev, "push", &delivery(), &tampered, Some(&sign(HOOK_SECRET, &body))).await;
    assert_eq!(status, 401, "a changed body: {answer}");
    let (status, answer) = hook(&g.dev, "push", &delivery(), &body, Some("sha256=zz")).await;
    assert_eq!(status, 401, "not hex: {answer}");

    assert_eq!(builds_of(&g.dev, REPO).await, Vec::<String>::new());
    // Nothing was fetched for an unauthenticated delivery.
    assert_eq!(g.fake.requests().len(), 0, "{:#?}", g.fake.requests());

    // A well-signed ping starts nothing; an unknown repository is a 404.
    let ping = json!({"zen": "Keep it logically awesome.", "hook_id": 501234567,
        "hook": {"type": "Repository", "id": 501234567, "events": ["push", "pull_request"], "active": true},
        "repository": repository(REPO), "sender": {"login": "octocat"}});
    starts_nothing(&g, "ping", &ping).await;
    let mut other = push_payload("refs/heads/main", &commit, "elsewhere");
    other["repository"] = repository("acme/not-registered");
    let (status, answer) = signed(&g.dev, "push", &delivery(), &other).await;
    assert_eq!(status, 404, "{answer}");

    // Over GitHub's own 25 MB limit.
    let mut big = push_payload("refs/heads/main", &commit, "big");
    big["padding"] = json!("x".repeat(26 * 1024 * 1024));
    let (status, _) = signed(&g.dev, "push", &delivery(), &big).await;
    assert_eq!(status, 413);
    assert_eq!(builds_of(&g.dev, REPO).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_hook_starts_no_second_build() {
    let g = setup().await;
    let commit = sha("redelivered");
    g.fake.put_commit(
        REPO,
        &commit,
        pipeline_commit(MAIN_ONLY, &commit).executable("tools/greet.sh", "#!/bin/sh\n"),
    );
    let once = delivery();
    let payload = push_payload("refs/heads/main", &commit, "twice");
    let id = push_builds(&g, &once, &payload).await;
    let (status, answer) = signed(&g.dev, "push", &once, &payload).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["builds"], json!([]), "{answer}");
    assert!(answer["reason"].as_str().is_some_and(|r| !r.is_empty()), "{answer}");
    g.dev.wait_ended(&id).await;
    assert_eq!(builds_of(&g.dev, REPO).await, vec![id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_branches_and_tags_the_pipeline_names_build() {
    let g = setup().await;
    let yaml = r#"version: "1"
on:
  push: { branches: [main, "release/*"], tags: ["v*"] }
stages:
  build:
    steps:
      - name: show
        commands:
          - echo "branch=[$KILN_BRANCH] tag=[$KILN_TAG] event=$KILN_GIT_EVENT"
"#;
    let commit = sha("filtered");
    g.fake.put_commit(REPO, &commit, pipeline_commit(yaml, &commit));

    starts_nothing(&g, "push", &push_payload("refs/heads/feature/x", &commit, "a feature")).await;
    // `*` stays within a path segment.
    starts_nothing(&g, "push", &push_payload("refs/heads/release/1/hotfix", &commit, "nested")).await;
    starts_nothing(&g, "push", &push_payload("refs/tags/nightly", &commit, "a tag")).await;
    // A deleted branch: nothing to build.
    starts_nothing(&g, "push", &push_payload("refs/heads/main", &"0".repeat(40), "")).await;
    // A commit without a .kiln.yml.
    let bare = sha("no pipeline");
    g.fake.put_commit(REPO, &bare, Commit::new().file("README.md", "no pipeline here\n"));
    starts_nothing(&g, "push", &push_payload("refs/heads/main", &bare, "bare")).await;
    assert_eq!(builds_of(&g.dev, REPO).await, Vec::<String>::new());

    let release =
        push_builds(&g, &delivery(), &push_payload("refs/heads/release/1.2", &commit, "release")).await;
    let tag = push_builds(&g, &delivery(), &push_payload("refs/tags/v1.2.0", &commit, "tag")).await;
    for (id, want) in [(&release, "branch=[release/1.2] tag=[]"), (&tag, "branch=[] tag=[v1.2.0]")] {
        let build = g.dev.wait_ended(id).await;
        assert_eq!(build["status"], "succeeded", "{build}");
        let out = log(&g.dev, id, "build", "show").await;
        assert!(out.contains(want), "{want}: {out}");
    }
    let tag_build = g.dev.get_json(&format!("/v1/builds/{tag}")).await;
    assert_eq!(tag_build["git"]["tag"], "v1.2.0", "{tag_build}");
    assert_eq!(tag_build["git"]["ref"], "refs/tags/v1.2.0", "{tag_build}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_and_invalid_pipelines_end_failed_and_post_failure() {
    let g = setup().await;
    let failing = sha("failing");
    let yaml = r#"version: "1"
stages:
  test:
    steps:
      - name: check
        commands:
          - echo "about to fail"
          - exit 3
"#;
    g.fake.put_commit(REPO, &failing, pipeline_commit(yaml, &failing));
    let id = push_builds(&g, &delivery(), &push_payload("refs/heads/main", &failing, "broken")).await;
    let build = g.dev.wait_ended(&id).await;
    assert_eq!(build["status"], "failed", "{build}");
    let got = assert_statuses(&g.fake, &failing, "test", "failure").await;
    let last = got.iter().rev().find(|s| s.context() == "kiln" && s.answered == 201).unwrap();
    assert!(last.body["description"].as_str().is_some_and(|d| !d.is_empty()), "no reason: {last:?}");
    assert_eq!(last.body["target_url"], format!("{PUBLIC_URL}/builds/{id}"));

    // Two errors, lines 6 and 8: the build fails at compile with both.
    let invalid = sha("invalid");
    let yaml = r#"version: "1"
stages:
  build:
    steps:
      - name: a
        comands: [make]
  other:
    steps: make
"#;
    g.fake.put_commit(REPO, &invalid, pipeline_commit(yaml, &invalid));
    let id = push_builds(&g, &delivery(), &push_payload("refs/heads/main", &invalid, "typo")).await;
    let build = g.dev.wait_ended(&id).await;
    assert_eq!(build["status"], "failed", "{build}");
    let reason = build["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("comands") && reason.contains("must be a list"), "{reason}");
    assert!(mentions_line(reason, 6) && mentions_line(reason, 8), "lines 6 and 8 in {reason}");
    let got = wait_statuses(&g.fake, &invalid, |s| ended(s, "kiln")).await;
    assert_eq!(states(&got, "kiln").last().map(String::as_str), Some("failure"), "{got:#?}");
}

const SECRET_VALUE: &str = "pr-s3cr3t-Value-4a5b6c7d";

const PR_PIPELINE: &str = r#"version: "1"
on:
  pull_request: { branches: [main] }
stages:
  test:
    steps:
      - name: show
        commands:
          - cat hello.txt
          - echo "commit=$KILN_COMMIT pr=$KILN_PULL_REQUEST event=$KILN_GIT_EVENT branch=$KILN_BRANCH"
  ship:
    secrets: [DEPLOY_KEY]
    steps:
      - name: deploy
        commands:
          - echo "key-length=${#DEPLOY_KEY}"
          - echo "key=$DEPLOY_KEY"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn pull_requests_build_their_head_commit_and_forks_get_no_secrets() {
    let g = setup().await;
    let (status, body) = g
        .dev
        .call(
            Method::PUT,
            format!("/v1/repos/{REPO}/secrets/DEPLOY_KEY"),
            TOKEN,
            SECRET_VALUE.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));

    // From a branch of the repository itself: built with its secrets. GitHub serves a pull
    // request's head commit from the base repository, so that is where the fake holds it.
    let head = sha("pr head");
    g.fake.put_commit(REPO, &head, pipeline_commit(PR_PIPELINE, &head));
    let (status, answer) = signed(
        &g.dev,
        "pull_request",
        &delivery(),
        &pr_payload("opened", 7, REPO, "feature/x", &head, "main"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["builds"][0].as_str().unwrap().to_string();
    let build = g.dev.wait_ended(&id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(build["git"]["event"], "pull_request", "{build}");
    assert_eq!(build["git"]["pull_request"], 7, "{build}");
    assert_eq!(build["git"]["commit"], head.as_str(), "{build}");
    let out = log(&g.dev, &id, "test", "show").await;
    assert!(out.contains(&format!("hello from {head}\n")), "{out}");
    assert!(out.contains(&format!("commit={head} pr=7 event=pull_request branch=feature/x\n")), "{out}");
    let out = log(&g.dev, &id, "ship", "deploy").await;
    assert!(
        out.contains(&format!("key-length={}\n", SECRET_VALUE.len())),
        "the secret was not delivered: {out}"
    );
    assert!(!out.contains(SECRET_VALUE), "{out}");
    let got = assert_statuses(&g.fake, &head, "test", "success").await;
    assert!(got.iter().all(|s| s.repo == REPO), "{got:#?}");

    // From a fork: built, but without secrets: the stage that declares one fails before its
    // first step, and the value is nowhere.
    let fork_head = sha("fork head");
    g.fake.put_commit(REPO, &fork_head, pipeline_commit(PR_PIPELINE, &fork_head));
    let (status, answer) = signed(
        &g.dev,
        "pull_request",
        &delivery(),
        &pr_payload("opened", 8, "mallory/web", "main", &fork_head, "main"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let fork = answer["builds"][0].as_str().unwrap().to_string();
    let build = g.dev.wait_ended(&fork).await;
    assert_eq!(build["status"], "failed", "{build}");
    assert_eq!(build["git"]["pull_request"], 8, "{build}");
    assert_eq!(stage(&build, "test")["status"], "succeeded", "{build}");
    let ship = stage(&build, "ship");
    assert_eq!(ship["status"], "failed", "{build}");
    assert!(ship["reason"].as_str().is_some_and(|r| r.contains("DEPLOY_KEY")), "{ship}");
    assert_ne!(ship["steps"][0]["status"], "succeeded", "{ship}");
    assert!(!build.to_string().contains(SECRET_VALUE));
    let out = log(&g.dev, &fork, "test", "show").await;
    assert!(out.contains("pr=8 event=pull_request"), "{out}");
    for path in [format!("/v1/builds/{fork}/logs"), format!("/v1/builds/{fork}/logs/init")] {
        let text = String::from_utf8_lossy(&g.dev.get(&path).await).into_owned();
        assert!(!text.contains(SECRET_VALUE), "{path}: {text}");
    }
    let (_, deploy) =
        g.dev.call(Method::GET, format!("/v1/builds/{fork}/logs/ship/deploy"), TOKEN, vec![]).await;
    let deploy = String::from_utf8_lossy(&deploy);
    assert!(!deploy.contains(SECRET_VALUE) && !deploy.contains("key-length="), "{deploy}");

    // Closed, or into a branch the pipeline leaves out: nothing.
    starts_nothing(&g, "pull_request", &pr_payload("closed", 7, REPO, "feature/x", &head, "main")).await;
    starts_nothing(&g, "pull_request", &pr_payload("opened", 9, REPO, "feature/y", &head, "develop")).await;
    assert_eq!(builds_of(&g.dev, REPO).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tarball_entry_climbing_out_fails_the_stage_and_writes_nothing_outside() {
    let g = setup().await;
    // A directory anyone may write to, outside the data dir: where the hostile entries aim.
    let outside = g.dev.scratch.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let yaml = r#"version: "1"
stages:
  build:
    steps:
      - name: show
        commands: ["ls -la"]
  notes:
    checkout: false
    steps:
      - name: plain
        commands: ['echo "files=$(ls -A | wc -l | tr -d " ")"']
"#;
    let dotdot = sha("dot dot");
    g.fake.put_commit(
        REPO,
        &dotdot,
        pipeline_commit(yaml, &dotdot).hostile(Hostile::DotDot { target: outside.join("escape.txt") }),
    );
    let link = sha("symlink");
    g.fake.put_commit(
        REPO,
        &link,
        pipeline_commit(yaml, &link).hostile(Hostile::SymlinkOut {
            link: "sneaky-link".into(),
            target_dir: outside.clone(),
            file: "escape-through-link.txt".into(),
        }),
    );

    for (commit, entry) in [(&dotdot, "escape.txt"), (&link, "sneaky-link")] {
        let id = push_builds(&g, &delivery(), &push_payload("refs/heads/main", commit, "hostile")).await;
        let build = g.dev.wait_ended(&id).await;
        assert_eq!(build["status"], "failed", "{build}");
        let checked_out = stage(&build, "build");
        assert_eq!(checked_out["status"], "failed", "{build}");
        assert!(checked_out["reason"].as_str().is_some_and(|r| r.contains(entry)), "{entry}: {checked_out}");
        assert_ne!(checked_out["steps"][0]["status"], "succeeded", "{checked_out}");
        // The stage that skips the checkout ran in an empty workspace.
        assert_eq!(stage(&build, "notes")["status"], "succeeded", "{build}");
        assert_eq!(log(&g.dev, &id, "notes", "plain").await, "files=0\n");
    }

    let written: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(written, Vec::<PathBuf>::new(), "written outside the workspace");
    let anywhere = files_named(g.dev.scratch.dir.path(), &["escape.txt", "escape-through-link.txt"]);
    assert_eq!(anywhere, Vec::<PathBuf>::new(), "a refused entry was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_posts_are_retried_after_server_errors() {
    let g = setup().await;
    g.fake.fail_next_status_posts(2);
    let commit = sha("retried");
    let yaml =
        "version: \"1\"\nstages:\n  build:\n    steps:\n      - name: ok\n        commands: [\"true\"]\n";
    g.fake.put_commit(REPO, &commit, pipeline_commit(yaml, &commit));
    let id = push_builds(&g, &delivery(), &push_payload("refs/heads/main", &commit, "flaky host")).await;
    let build = g.dev.wait_ended(&id).await;
    assert_eq!(build["status"], "succeeded", "a status failure must not fail the build: {build}");
    let got = wait_statuses(&g.fake, &commit, |s| states(s, "kiln").iter().any(|st| st == "success")).await;
    let failed: Vec<&PostedStatus> = got.iter().filter(|s| s.answered == 500).collect();
    assert_eq!(failed.len(), 2, "{got:#?}");
    // A refused post came again and was taken (not just later states posted).
    let taken = |f: &&PostedStatus| {
        got.iter().any(|s| s.answered == 201 && s.context() == f.context() && s.state() == f.state())
    };
    assert!(failed.iter().any(taken), "nothing retried: {got:#?}");
    // A retried `pending` never lands after the `success` that followed it.
    let kiln = states(&got, "kiln");
    assert_eq!(kiln.last().map(String::as_str), Some("success"), "{got:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kiln_repos_add_and_list() {
    let fake = FakeGit::start(GIT_TOKEN).await;
    let dev = Dev::start_env(Scratch::new(), &[("KILN_PUBLIC_URL", PUBLIC_URL)]);
    let other_secret = "second-hook-secret-77aa";
    let kiln = |args: &[&str], env: &[(&str, &str)], stdin: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(args)
            .args(["--api", &dev.url])
            .env("KILN_TOKEN", TOKEN)
            .env_remove("KILN_API")
            .env_remove("KILN_WEBHOOK_SECRET")
            .env_remove("KILN_GIT_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kiln {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        for secret in [HOOK_SECRET, other_secret, GIT_TOKEN] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "kiln {args:?} printed a credential"
            );
        }
        stdout
    };
    let api_url = fake.api_url.as_str();
    // From the environment, and from stdin (first line the webhook secret, then the token).
    kiln(
        &["repos", "add", REPO, "--provider", "github", "--api-url", api_url],
        &[("KILN_WEBHOOK_SECRET", HOOK_SECRET), ("KILN_GIT_TOKEN", GIT_TOKEN)],
        None,
    );
    kiln(
        &["repos", "add", "acme/api", "--provider", "github", "--api-url", api_url],
        &[],
        Some(&format!("{other_secret}\n{GIT_TOKEN}\n")),
    );

    let text = kiln(&["repos", "list"], &[], None);
    for repo in [REPO, "acme/api"] {
        assert!(
            text.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w == [repo, "github", api_url]
            }),
            "{repo}: {text}"
        );
    }
    let doc: Value = serde_json::from_str(&kiln(&["repos", "list", "--json"], &[], None)).unwrap();
    let list = doc.as_array().or_else(|| doc["repos"].as_array()).unwrap_or_else(|| panic!("{doc}"));
    let mut names: Vec<&str> = list.iter().filter_map(|r| r["repo"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["acme/api", REPO], "{doc}");
    assert!(list.iter().all(|r| r["provider"] == "github" && r["api_url"] == api_url), "{doc}");

    let (status, body) = send(&dev, Method::GET, "/v1/repos", Some(TOKEN), &[], vec![]).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("acme/api") && text.contains(REPO), "{text}");
    assert!(
        !text.contains(HOOK_SECRET) && !text.contains(other_secret) && !text.contains(GIT_TOKEN),
        "{text}"
    );

    // The secret read from stdin is the one hooks are checked with, and the token is what
    // the host gets asked with.
    let ping = json!({"zen": "Design for failure.", "hook_id": 1, "repository": repository("acme/api")});
    let body = ping.to_string().into_bytes();
    let (status, answer) = hook(&dev, "ping", &delivery(), &body, Some(&sign(HOOK_SECRET, &body))).await;
    assert_eq!(status, 401, "acme/web's secret on acme/api: {answer}");
    let (status, answer) = hook(&dev, "ping", &delivery(), &body, Some(&sign(other_secret, &body))).await;
    assert_eq!(status, 200, "{answer}");
    let mut push = push_payload("refs/heads/main", &sha("api commit"), "no pipeline");
    push["repository"] = repository("acme/api");
    let body = push.to_string().into_bytes();
    let (status, answer) = hook(&dev, "push", &delivery(), &body, Some(&sign(other_secret, &body))).await;
    assert_eq!(status, 200, "the fake has no such commit: no .kiln.yml, no build: {answer}");
    let requests = fake.requests();
    assert!(
        requests.iter().any(|r| r.uri.starts_with("/repos/acme/api/contents/.kiln.yml")
            && r.authorization.as_deref().is_some_and(|a| a.contains(GIT_TOKEN))),
        "{requests:#?}"
    );
}

/// The fake itself, so a failure above is Kiln's and not the fake's: GitHub's contents
/// shapes, a tarball behind a redirect to another origin laid out as `git archive` makes
/// it, the hostile entries as a tar reader sees them, failing status posts.
#[tokio::test(flavor = "multi_thread")]
async fn the_fake_host_follows_githubs_shapes() {
    let fake = FakeGit::start(GIT_TOKEN).await;
    let commit = sha("fake");
    let yaml = "version: \"1\"\n# a comment long enough to need more than one line of base64 in the answer\n";
    fake.put_commit(
        REPO,
        &commit,
        Commit::new()
            .file(".kiln.yml", yaml)
            .executable("tools/x.sh", "#!/bin/sh\n")
            .hostile(Hostile::DotDot { target: PathBuf::from("/nowhere/escape.txt") }),
    );
    let http = reqwest::Client::new();
    let contents = format!("{}/repos/{REPO}/contents/.kiln.yml?ref={commit}", fake.api_url);
    let resp = http
        .get(&contents)
        .bearer_auth(GIT_TOKEN)
        .header("accept", "application/vnd.github.raw+json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), yaml);
    let doc: Value = http.get(&contents).bearer_auth(GIT_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!((doc["type"].as_str(), doc["encoding"].as_str()), (Some("file"), Some("base64")), "{doc}");
    let b64 = doc["content"].as_str().unwrap();
    assert!(b64.lines().count() > 1 && b64.lines().all(|l| l.len() <= 60), "{b64}");
    assert_eq!(fake_git::base64_lines(b"hello"), "aGVsbG8=\n");
    assert_eq!(fake_git::base64_lines(b"hi"), "aGk=\n");
    assert_eq!(http.get(&contents).send().await.unwrap().status(), 404, "no token");
    let absent = format!("{}/repos/{REPO}/contents/nope.yml?ref={commit}", fake.api_url);
    let resp = http.get(&absent).bearer_auth(GIT_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["message"], "Not Found");

    // reqwest follows the redirect and leaves the token behind.
    let tarball = format!("{}/repos/{REPO}/tarball/{commit}", fake.api_url);
    let resp = http.get(&tarball).bearer_auth(GIT_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    let codeload: Vec<_> = fake.requests().into_iter().filter(|r| r.origin == Origin::Codeload).collect();
    assert_eq!(codeload.len(), 1);
    assert_eq!(codeload[0].authorization, None);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let entries: Vec<(String, tar::EntryType, u32)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            (path, e.header().entry_type(), e.header().mode().unwrap())
        })
        .collect();
    let top = format!("acme-web-{}", &commit[..7]);
    assert_eq!(entries[0].0, "pax_global_header");
    assert_eq!(entries[0].1, tar::EntryType::XGlobalHeader);
    assert_eq!(entries[1].0, format!("{top}/"));
    assert!(entries.contains(&(format!("{top}/tools/x.sh"), tar::EntryType::Regular, 0o775)), "{entries:?}");
    assert!(entries.contains(&(format!("{top}/.kiln.yml"), tar::EntryType::Regular, 0o664)), "{entries:?}");
    let last = &entries.last().unwrap().0;
    assert!(last.starts_with(&format!("{top}/../../")) && last.ends_with("/nowhere/escape.txt"), "{last}");

    let hostile = Commit::new().file("a.txt", "a\n").hostile(Hostile::SymlinkOut {
        link: "l".into(),
        target_dir: PathBuf::from("/nowhere"),
        file: "f.txt".into(),
    });
    let bytes = fake_git::tarball("t", &commit, &hostile);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let entries: Vec<(String, tar::EntryType, Option<String>)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let link = e.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned());
            (String::from_utf8_lossy(&e.path_bytes()).into_owned(), e.header().entry_type(), link)
        })
        .collect();
    let n = entries.len();
    assert_eq!(
        (entries[n - 2].0.as_str(), entries[n - 2].1),
        ("t/l", tar::EntryType::Symlink),
        "{entries:?}"
    );
    let to = entries[n - 2].2.clone().unwrap();
    assert!(to.starts_with("../../") && to.ends_with("/nowhere"), "{to}");
    assert_eq!((entries[n - 1].0.as_str(), entries[n - 1].1), ("t/l/f.txt", tar::EntryType::Regular));

    fake.fail_next_status_posts(1);
    let statuses = format!("{}/repos/{REPO}/statuses/{commit}", fake.api_url);
    let body = json!({"state": "pending", "context": "kiln", "target_url": "https://x/builds/1"});
    for want in [500, 201] {
        let resp = http.post(&statuses).bearer_auth(GIT_TOKEN).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), want);
    }
    assert_eq!(fake.statuses().iter().map(|s| s.answered).collect::<Vec<_>>(), [500, 201]);
}

const SUPERSEDE: &str = r#"version: "1"
cancel-superseded: true
steps:
  - name: work
    commands: ["cat hello.txt", "if [ -f slow ]; then sleep 600; fi"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_push_to_the_branch_cancels_the_older_build() {
    let g = setup().await;
    let (slow, fast) = (sha("slow push"), sha("fast push"));
    g.fake.put_commit(REPO, &slow, pipeline_commit(SUPERSEDE, &slow).file("slow", "1"));
    g.fake.put_commit(REPO, &fast, pipeline_commit(SUPERSEDE, &fast));
    let older = push_builds(&g, &delivery(), &push_payload("refs/heads/main", &slow, "slow")).await;
    // The older build is running its (long) step before the newer push arrives.
    let started = Instant::now();
    loop {
        let b = g.dev.get_json(&format!("/v1/builds/{older}")).await;
        if b["stages"][0]["steps"][0]["status"] == "running" {
            break;
        }
        assert!(started.elapsed() < HANG, "the older build never ran its step: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A push to another branch supersedes nothing.
    let other = sha("other branch");
    g.fake.put_commit(REPO, &other, pipeline_commit(SUPERSEDE, &other));
    let sibling = push_builds(&g, &delivery(), &push_payload("refs/heads/feature/x", &other, "other")).await;
    let newer = push_builds(&g, &delivery(), &push_payload("refs/heads/main", &fast, "fast")).await;

    let old = g.dev.wait_ended(&older).await;
    assert_eq!(old["status"], "canceled", "{old}");
    assert_eq!(old["reason"], format!("superseded by {newer}"), "{old}");
    assert_eq!(g.dev.wait_ended(&newer).await["status"], "succeeded");
    assert_eq!(g.dev.wait_ended(&sibling).await["status"], "succeeded");
    // The commit shows why: `error`, with the reason.
    let got = wait_statuses(&g.fake, &slow, |s| ended(s, "kiln")).await;
    let last = got.iter().rev().find(|s| s.context() == "kiln").unwrap();
    assert_eq!(last.state(), "error", "{got:#?}");
    assert_eq!(last.body["description"], format!("superseded by {newer}"), "{got:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_gitea_push_builds_and_reports_with_a_gitea_token() {
    let fake = FakeGit::start(GIT_TOKEN).await;
    let dev = Dev::start_env(Scratch::new(), &[("KILN_PUBLIC_URL", PUBLIC_URL)]);
    let body = json!({"provider": "gitea", "api_url": fake.api_url, "webhook_secret": HOOK_SECRET, "token": GIT_TOKEN});
    let (status, answer) = send(
        &dev,
        Method::PUT,
        &format!("/v1/repos/{REPO}"),
        Some(TOKEN),
        &[("content-type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let commit = sha("gitea push");
    fake.put_commit(
        REPO,
        &commit,
        pipeline_commit(MAIN_ONLY, &commit).executable("tools/greet.sh", "#!/bin/sh\necho hi\n"),
    );
    // Shaped like Gitea's documented push payload.
    let payload = json!({
        "ref": "refs/heads/main",
        "before": "0".repeat(40),
        "after": commit,
        "compare_url": "",
        "commits": [{"id": commit, "message": "From Gitea\n", "url": "https://gitea.example/acme/web/commit/x",
                     "author": {"name": "Gitea User", "email": "u@example.com", "username": "gitea-user"}}],
        "head_commit": {"id": commit, "message": "From Gitea\n",
                        "author": {"name": "Gitea User", "email": "u@example.com", "username": "gitea-user"}},
        "repository": {"id": 1, "owner": {"id": 1, "login": "acme", "username": "acme"}, "name": "web",
                       "full_name": REPO, "private": true, "default_branch": "main"},
        "pusher": {"id": 1, "login": "gitea-user", "username": "gitea-user"},
        "sender": {"id": 1, "login": "gitea-user", "username": "gitea-user"}
    });
    let raw = payload.to_string().into_bytes();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(&raw);
    let signature = hex::encode(mac.finalize().into_bytes());
    let id = delivery();
    let headers = [
        ("content-type", "application/json"),
        ("x-gitea-event", "push"),
        ("x-gitea-delivery", id.as_str()),
        ("x-gitea-signature", signature.as_str()),
    ];
    // A GitHub-style signature header is not Gitea's: refused.
    let (status, _) = send(&dev, Method::POST, "/v1/hooks/gitea", None, &headers[..3], raw.clone()).await;
    assert_eq!(status, 401);
    let (status, answer) = send(&dev, Method::POST, "/v1/hooks/gitea", None, &headers, raw).await;
    let answer = as_json(&answer);
    assert_eq!(status, 201, "{answer}");
    let build_id = answer["builds"][0].as_str().unwrap().to_string();
    let build = dev.wait_ended(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(build["git"]["provider"], "gitea", "{build}");
    let out = log(&dev, &build_id, "build", "show").await;
    assert!(out.contains(&format!("hello from {commit}\n")), "{out}");
    let got = assert_statuses(&fake, &commit, "build", "success").await;
    assert!(
        got.iter().all(|s| s.authorization.as_deref() == Some(format!("token {GIT_TOKEN}").as_str())),
        "{got:#?}"
    );
    // The archive came from Gitea's own endpoint, with the token.
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.uri.contains(&format!("/archive/{commit}.tar.gz")) && r.authorization.is_some()),
        "{:#?}",
        fake.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_delivered_twice_still_posts_each_status_once() {
    // Every queue of this `kiln dev` (events, dispatch, jobs, commit statuses) delivers each
    // message twice.
    let fake = FakeGit::start(GIT_TOKEN).await;
    let dev =
        Dev::start_env(Scratch::new(), &[("KILN_PUBLIC_URL", PUBLIC_URL), ("KILN_TEST_REDELIVER", "1")]);
    register(&dev, REPO, &fake.api_url, HOOK_SECRET).await;
    let g = Git { dev, fake };
    let commit = sha("twice");
    g.fake.put_commit(
        REPO,
        &commit,
        pipeline_commit(MAIN_ONLY, &commit).executable("tools/greet.sh", "#!/bin/sh\necho hi\n"),
    );
    let id = push_builds(&g, &delivery(), &push_payload("refs/heads/main", &commit, "twice")).await;
    assert_eq!(g.dev.wait_ended(&id).await["status"], "succeeded");
    let got = assert_statuses(&g.fake, &commit, "build", "success").await;
    // Settle: a late duplicate would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all: Vec<PostedStatus> = g.fake.statuses().into_iter().filter(|s| s.sha == commit).collect();
    assert_eq!(states(&all, "kiln"), ["pending", "success"], "{all:#?}");
    assert_eq!(states(&all, "kiln/build"), ["pending", "success"], "{all:#?}");
    assert_eq!(got.len(), all.len(), "{all:#?}");
}
