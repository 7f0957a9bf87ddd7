//! Webhooks of GitHub and Gitea/Forgejo: their headers, their HMAC-SHA256 signatures, and
//! what a delivery asks for (a build of a commit, or nothing, with the reason).
//!
//! Payload shapes follow the hosts' documented examples: GitHub's `push` and
//! `pull_request` events, and Gitea's (which copies GitHub's field names; its pushes carry
//! `pusher.login` and `pusher.username`, its pull requests `synchronized` for new commits).

use super::{GitEvent, GitInfo, Provider};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// GitHub's own cap on a webhook payload; a bigger body is refused (413) before parsing.
pub const MAX_HOOK_BYTES: usize = 25 * 1024 * 1024;

/// The header names a host sends its deliveries with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookHeaders {
    /// The event type: `push`, `pull_request`, `ping`, ...
    pub event: &'static str,
    /// The delivery's unique id (the same on a redelivery).
    pub delivery: &'static str,
    /// The HMAC-SHA256 of the body under the webhook secret.
    pub signature: &'static str,
}

pub fn headers(provider: Provider) -> HookHeaders {
    match provider {
        Provider::Github => HookHeaders {
            event: "X-GitHub-Event",
            delivery: "X-GitHub-Delivery",
            signature: "X-Hub-Signature-256",
        },
        Provider::Gitea => HookHeaders {
            event: "X-Gitea-Event",
            delivery: "X-Gitea-Delivery",
            signature: "X-Gitea-Signature",
        },
    }
}

const GITHUB_PREFIX: &str = "sha256=";

fn mac(secret: &[u8], body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac
}

/// The signature header value a host sends for `body` (GitHub: `sha256=<hex>`, Gitea: bare
/// hex); for tests and for `kiln` commands that replay a delivery.
pub fn sign(provider: Provider, secret: &[u8], body: &[u8]) -> String {
    let hex = hex::encode(mac(secret, body).finalize().into_bytes());
    match provider {
        Provider::Github => format!("{GITHUB_PREFIX}{hex}"),
        Provider::Gitea => hex,
    }
}

/// Whether `header_value` is the HMAC-SHA256 of the raw `body` under `secret`, compared in
/// constant time. A malformed value (wrong prefix, not hex, wrong length) is `false`, and
/// so is any value under an empty secret: a repository without a secret is not a door.
pub fn verify_signature(provider: Provider, secret: &[u8], body: &[u8], header_value: &str) -> bool {
    if secret.is_empty() {
        return false;
    }
    let value = header_value.trim();
    let hex_part = match provider {
        Provider::Github => match value.strip_prefix(GITHUB_PREFIX) {
            Some(h) => h,
            None => return false,
        },
        Provider::Gitea => value,
    };
    let Ok(tag) = hex::decode(hex_part) else {
        return false;
    };
    mac(secret, body).verify_slice(&tag).is_ok()
}

/// Why a delivery could not be read: the message of a 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("the webhook payload is not JSON ({0})")]
    Json(String),
    #[error("the webhook payload has no `{field}`")]
    Missing { field: &'static str },
    #[error("`{field}` in the webhook payload {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
}

/// What a delivery asks for.
// One per delivery, matched by value right away: a box would only cost callers a deref.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// The host checking the hook works (GitHub sends it when a hook is created).
    Ping,
    /// A build of a commit.
    Build(GitInfo),
    /// Nothing to build, and why (shown to the user as the answer's `reason`).
    Skip(String),
}

fn json(body: &[u8]) -> Result<Value, HookError> {
    if body.starts_with(b"payload=") {
        return Err(HookError::Json(
            "it is form-encoded: set the webhook's content type to application/json".into(),
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(HookError::Json("not a JSON object".into())),
        Err(e) => Err(HookError::Json(e.to_string())),
    }
}

/// The value at a dotted path; JSON `null` counts as absent.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| v.get(key)).filter(|v| !v.is_null())
}

/// A non-empty string at `path`, or absent; present with another type is an error.
fn opt_str<'a>(v: &'a Value, path: &'static str) -> Result<Option<&'a str>, HookError> {
    match at(v, path) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(HookError::Invalid { field: path, reason: "is not a string".into() }),
    }
}

fn req_str<'a>(v: &'a Value, path: &'static str) -> Result<&'a str, HookError> {
    opt_str(v, path)?.ok_or(HookError::Missing { field: path })
}

/// The first non-empty string among `paths` (ignoring ones of another type: these are
/// best-effort display fields, not worth refusing a delivery over).
fn first_str(v: &Value, paths: &[&'static str]) -> Option<String> {
    paths.iter().find_map(|p| opt_str(v, p).ok().flatten()).map(str::to_string)
}

/// Whether `s` is a full commit id: 40 hex digits (SHA-1), or 64 (SHA-256 repositories).
/// Commit ids go into API paths; nothing else may.
pub fn is_commit_sha(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn commit_sha(v: &Value, path: &'static str) -> Result<String, HookError> {
    let sha = req_str(v, path)?;
    if is_commit_sha(sha) {
        Ok(sha.to_ascii_lowercase())
    } else {
        Err(HookError::Invalid { field: path, reason: format!("is not a commit SHA: {sha:?}") })
    }
}

/// The payload's `repository.full_name` (`owner/name`): the repository whose secret
/// verifies the delivery, so it is read before the signature is checked.
pub fn repository_full_name(body: &[u8]) -> Result<String, HookError> {
    Ok(req_str(&json(body)?, "repository.full_name")?.to_string())
}

/// What a delivery of `event` asks for. `api_url` and `delivery` are recorded on the
/// build as given. Call it only on a verified body.
pub fn parse(
    provider: Provider,
    api_url: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> Result<Hook, HookError> {
    let names = headers(provider);
    let event = event.trim();
    if event.is_empty() {
        return Err(HookError::MissingHeader(names.event));
    }
    if event == "ping" {
        return Ok(Hook::Ping);
    }
    if event != "push" && event != "pull_request" {
        return Ok(Hook::Skip(format!("`{event}` events do not build")));
    }
    let delivery = delivery.trim();
    if delivery.is_empty() {
        return Err(HookError::MissingHeader(names.delivery));
    }
    let v = json(body)?;
    let base = Base {
        provider,
        repo: req_str(&v, "repository.full_name")?.to_string(),
        api_url: api_url.to_string(),
        delivery: delivery.to_string(),
    };
    if event == "push" { push(&v, base) } else { pull_request(&v, base) }
}

/// What every build from one delivery shares.
struct Base {
    provider: Provider,
    repo: String,
    api_url: String,
    delivery: String,
}

fn push(v: &Value, base: Base) -> Result<Hook, HookError> {
    let git_ref = req_str(v, "ref")?;
    let after = req_str(v, "after")?;
    let (kind, name) = if let Some(b) = git_ref.strip_prefix("refs/heads/") {
        ("branch", b)
    } else if let Some(t) = git_ref.strip_prefix("refs/tags/") {
        ("tag", t)
    } else {
        return Ok(Hook::Skip(format!("a push to `{git_ref}` (neither a branch nor a tag) does not build")));
    };
    let deleted = at(v, "deleted").and_then(Value::as_bool).unwrap_or(false);
    if deleted || (!after.is_empty() && after.bytes().all(|b| b == b'0')) {
        return Ok(Hook::Skip(format!("{kind} `{name}` was deleted")));
    }
    let commit = commit_sha(v, "after")?;
    let author = first_str(
        v,
        &[
            "head_commit.author.username",
            "head_commit.author.name",
            "pusher.name",
            "pusher.login",
            "pusher.username",
            "sender.login",
        ],
    );
    // Gitea before 1.13 sent no `head_commit`: the pushed commit is then in `commits`.
    let message = first_str(v, &["head_commit.message"]).or_else(|| {
        at(v, "commits")?
            .as_array()?
            .iter()
            .find(|c| c.get("id").and_then(Value::as_str).is_some_and(|id| id.eq_ignore_ascii_case(after)))
            .and_then(|c| c.get("message")?.as_str())
            .filter(|m| !m.is_empty())
            .map(str::to_string)
    });
    let (branch, tag) =
        if kind == "branch" { (Some(name.to_string()), None) } else { (None, Some(name.to_string())) };
    Ok(Hook::Build(GitInfo {
        provider: base.provider,
        repo: base.repo,
        api_url: base.api_url,
        event: GitEvent::Push,
        git_ref: git_ref.to_string(),
        branch,
        tag,
        commit,
        pull_request: None,
        base_branch: None,
        fork: false,
        author,
        message,
        delivery: base.delivery,
    }))
}

/// Pull request actions that put a new head commit up for building (`synchronized` is
/// Gitea's spelling of GitHub's `synchronize`).
const BUILD_ACTIONS: [&str; 4] = ["opened", "synchronize", "synchronized", "reopened"];

fn pull_request(v: &Value, base: Base) -> Result<Hook, HookError> {
    let action = req_str(v, "action")?;
    if !BUILD_ACTIONS.contains(&action) {
        return Ok(Hook::Skip(format!("pull_request action `{action}` does not build")));
    }
    if at(v, "pull_request").is_none() {
        return Err(HookError::Missing { field: "pull_request" });
    }
    let number = at(v, "pull_request.number")
        .or_else(|| at(v, "number"))
        .ok_or(HookError::Missing { field: "pull_request.number" })?
        .as_u64()
        .ok_or(HookError::Invalid {
            field: "pull_request.number",
            reason: "is not a positive integer".into(),
        })?;
    let commit = commit_sha(v, "pull_request.head.sha")?;
    let head_branch = req_str(v, "pull_request.head.ref")?.to_string();
    let base_branch = req_str(v, "pull_request.base.ref")?.to_string();
    // A head repository that is gone (a deleted fork) is not known to be the base: treat
    // it as a fork, which only withholds secrets.
    let head_repo = opt_str(v, "pull_request.head.repo.full_name")?;
    let base_repo = opt_str(v, "pull_request.base.repo.full_name")?.unwrap_or(&base.repo);
    let fork = head_repo != Some(base_repo);
    Ok(Hook::Build(GitInfo {
        provider: base.provider,
        repo: base.repo,
        api_url: base.api_url,
        event: GitEvent::PullRequest,
        git_ref: format!("refs/pull/{number}/head"),
        branch: Some(head_branch),
        tag: None,
        commit,
        pull_request: Some(number),
        base_branch: Some(base_branch),
        fork,
        author: first_str(v, &["pull_request.user.login", "sender.login"]),
        message: first_str(v, &["pull_request.title"]),
        delivery: base.delivery,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
    const SHA2: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
    const API: &str = "https://api.github.com";

    fn bytes(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    /// Trimmed from GitHub's documented `push` example.
    fn github_push(git_ref: &str, after: &str, deleted: bool) -> Vec<u8> {
        bytes(json!({
            "ref": git_ref,
            "before": SHA2,
            "after": after,
            "created": false,
            "deleted": deleted,
            "forced": false,
            "base_ref": null,
            "compare": "https://github.com/Codertocat/Hello-World/compare/ec26c3e57ca3...0d1a26e67d8f",
            "commits": [],
            "head_commit": if deleted { serde_json::Value::Null } else { json!({
                "id": after,
                "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
                "distinct": true,
                "message": "Update README.md",
                "timestamp": "2019-05-15T15:20:41Z",
                "author": { "name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com", "username": "Codertocat" },
                "committer": { "name": "GitHub", "email": "noreply@github.com", "username": "web-flow" },
                "added": [], "removed": [], "modified": ["README.md"]
            })},
            "repository": {
                "id": 186853002,
                "name": "Hello-World",
                "full_name": "Codertocat/Hello-World",
                "private": false,
                "owner": { "login": "Codertocat", "id": 21031067 },
                "default_branch": "master"
            },
            "pusher": { "name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com" },
            "sender": { "login": "Codertocat", "id": 21031067, "type": "User" }
        }))
    }

    /// Trimmed from GitHub's documented `pull_request` example.
    fn github_pr(action: &str, head_repo: Option<&str>) -> Vec<u8> {
        let repo = |full: &str| json!({ "id": 1, "name": full.split('/').nth(1), "full_name": full, "owner": { "login": full.split('/').next() } });
        bytes(json!({
            "action": action,
            "number": 2,
            "pull_request": {
                "url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/2",
                "id": 279147437,
                "number": 2,
                "state": "open",
                "locked": false,
                "title": "Update the README with new information.",
                "user": { "login": "Codertocat", "id": 21031067 },
                "body": "This is a pretty simple change that we need to pull into master.",
                "head": {
                    "label": "Codertocat:changes",
                    "ref": "changes",
                    "sha": SHA,
                    "user": { "login": "Codertocat" },
                    "repo": head_repo.map(repo)
                },
                "base": {
                    "label": "Codertocat:master",
                    "ref": "master",
                    "sha": SHA2,
                    "user": { "login": "Codertocat" },
                    "repo": repo("Codertocat/Hello-World")
                },
                "merged": false
            },
            "repository": repo("Codertocat/Hello-World"),
            "sender": { "login": "Codertocat", "id": 21031067 }
        }))
    }

    /// Trimmed from Gitea's documented push example.
    fn gitea_push() -> Vec<u8> {
        bytes(json!({
            "ref": "refs/heads/develop",
            "before": "28e1879d029cb852e4844d9c718537df08844e03",
            "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
            "compare_url": "http://localhost:3000/gitea/webhooks/compare/28e1879d029cb852e4844d9c718537df08844e03...bffeb74224043ba2feb48d137756c8a9331c449a",
            "commits": [{
                "id": "bffeb74224043ba2feb48d137756c8a9331c449a",
                "message": "Webhooks Yay!",
                "url": "http://localhost:3000/gitea/webhooks/commit/bffeb74224043ba2feb48d137756c8a9331c449a",
                "author": { "name": "Gitea", "email": "someone@gitea.io", "username": "gitea" },
                "committer": { "name": "Gitea", "email": "someone@gitea.io", "username": "gitea" },
                "timestamp": "2017-03-13T13:52:11-04:00"
            }],
            "repository": {
                "id": 140,
                "owner": { "id": 1, "login": "gitea", "full_name": "Gitea", "username": "gitea" },
                "name": "webhooks",
                "full_name": "gitea/webhooks",
                "private": false,
                "default_branch": "master"
            },
            "pusher": { "id": 1, "login": "gitea", "full_name": "Gitea", "email": "someone@gitea.io", "username": "gitea" },
            "sender": { "id": 1, "login": "gitea", "full_name": "Gitea", "email": "someone@gitea.io", "username": "gitea" }
        }))
    }

    /// A Gitea pull request delivery (its `PullRequestPayload`).
    fn gitea_pr(action: &str, head_repo: &str) -> Vec<u8> {
        let repo = |full: &str| json!({ "id": 7, "full_name": full, "name": full.split('/').nth(1) });
        bytes(json!({
            "action": action,
            "number": 12,
            "pull_request": {
                "id": 33,
                "number": 12,
                "user": { "id": 3, "login": "alice", "username": "alice" },
                "title": "Speed up the parser",
                "body": "",
                "state": "open",
                "head": { "label": "fast", "ref": "fast", "sha": SHA, "repo_id": 8, "repo": repo(head_repo) },
                "base": { "label": "main", "ref": "main", "sha": SHA2, "repo_id": 7, "repo": repo("org/app") }
            },
            "repository": repo("org/app"),
            "sender": { "id": 3, "login": "alice" }
        }))
    }

    fn build(hook: Hook) -> GitInfo {
        match hook {
            Hook::Build(info) => info,
            other => panic!("expected a build, got {other:?}"),
        }
    }

    fn skip(hook: Hook) -> String {
        match hook {
            Hook::Skip(reason) => reason,
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn github_push_to_a_branch_builds_after() {
        let body = github_push("refs/heads/main", SHA, false);
        let info = build(parse(Provider::Github, API, "push", "d-1", &body).unwrap());
        assert_eq!(
            info,
            GitInfo {
                provider: Provider::Github,
                repo: "Codertocat/Hello-World".into(),
                api_url: API.into(),
                event: GitEvent::Push,
                git_ref: "refs/heads/main".into(),
                branch: Some("main".into()),
                tag: None,
                commit: SHA.into(),
                pull_request: None,
                base_branch: None,
                fork: false,
                author: Some("Codertocat".into()),
                message: Some("Update README.md".into()),
                delivery: "d-1".into(),
            }
        );
        assert_eq!(repository_full_name(&body).unwrap(), "Codertocat/Hello-World");
    }

    #[test]
    fn a_branch_with_slashes_keeps_them() {
        let body = github_push("refs/heads/feature/a/b", SHA, false);
        let info = build(parse(Provider::Github, API, "push", "d", &body).unwrap());
        assert_eq!(info.branch.as_deref(), Some("feature/a/b"));
    }

    #[test]
    fn github_tag_push_builds_the_tag() {
        let body = github_push("refs/tags/v1.2.0", SHA, false);
        let info = build(parse(Provider::Github, API, "push", "d-2", &body).unwrap());
        assert_eq!(info.tag.as_deref(), Some("v1.2.0"));
        assert_eq!(info.branch, None);
        assert_eq!(info.git_ref, "refs/tags/v1.2.0");
        assert_eq!(info.commit, SHA);
    }

    #[test]
    fn deleted_branches_and_tags_do_not_build() {
        let zeros = "0".repeat(40);
        let body = github_push("refs/heads/old", &zeros, true);
        assert_eq!(
            skip(parse(Provider::Github, API, "push", "d", &body).unwrap()),
            "branch `old` was deleted"
        );
        // `after` all zeros alone is enough (some hosts omit `deleted`).
        let mut v: serde_json::Value =
            serde_json::from_slice(&github_push("refs/tags/v1", &zeros, false)).unwrap();
        v.as_object_mut().unwrap().remove("deleted");
        assert_eq!(
            skip(parse(Provider::Github, API, "push", "d", &bytes(v)).unwrap()),
            "tag `v1` was deleted"
        );
    }

    #[test]
    fn pushes_to_other_refs_do_not_build() {
        let body = github_push("refs/notes/commits", SHA, false);
        let reason = skip(parse(Provider::Github, API, "push", "d", &body).unwrap());
        assert!(reason.contains("refs/notes/commits"), "{reason}");
    }

    #[test]
    fn author_falls_back_to_the_pusher() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&github_push("refs/heads/main", SHA, false)).unwrap();
        v["head_commit"] = serde_json::Value::Null;
        v["pusher"]["name"] = json!("octo-pusher");
        let info = build(parse(Provider::Github, API, "push", "d", &bytes(v)).unwrap());
        assert_eq!(info.author.as_deref(), Some("octo-pusher"));
        assert_eq!(info.message, None);
    }

    #[test]
    fn github_pull_request_from_the_same_repo_builds_its_head() {
        for action in ["opened", "synchronize", "reopened"] {
            let body = github_pr(action, Some("Codertocat/Hello-World"));
            let info = build(parse(Provider::Github, API, "pull_request", "d-3", &body).unwrap());
            assert_eq!(
                info,
                GitInfo {
                    provider: Provider::Github,
                    repo: "Codertocat/Hello-World".into(),
                    api_url: API.into(),
                    event: GitEvent::PullRequest,
                    git_ref: "refs/pull/2/head".into(),
                    branch: Some("changes".into()),
                    tag: None,
                    commit: SHA.into(),
                    pull_request: Some(2),
                    base_branch: Some("master".into()),
                    fork: false,
                    author: Some("Codertocat".into()),
                    message: Some("Update the README with new information.".into()),
                    delivery: "d-3".into(),
                },
                "{action}"
            );
        }
    }

    #[test]
    fn pull_requests_from_forks_or_deleted_forks_are_forks() {
        let body = github_pr("opened", Some("mallory/Hello-World"));
        assert!(build(parse(Provider::Github, API, "pull_request", "d", &body).unwrap()).fork);
        let body = github_pr("synchronize", None);
        let info = build(parse(Provider::Github, API, "pull_request", "d", &body).unwrap());
        assert!(info.fork);
        assert_eq!(info.repo, "Codertocat/Hello-World", "statuses go to the base repository");
    }

    #[test]
    fn other_pull_request_actions_do_not_build() {
        for action in ["closed", "edited", "labeled", "synchronized_not"] {
            let body = github_pr(action, Some("Codertocat/Hello-World"));
            let reason = skip(parse(Provider::Github, API, "pull_request", "d", &body).unwrap());
            assert_eq!(reason, format!("pull_request action `{action}` does not build"));
        }
    }

    #[test]
    fn ping_and_other_events() {
        let body = br#"{"zen":"Keep it logically awesome.","hook_id":1,"repository":{"full_name":"a/b"}}"#;
        assert_eq!(parse(Provider::Github, API, "ping", "d", body).unwrap(), Hook::Ping);
        assert_eq!(
            skip(parse(Provider::Github, API, "issues", "d", body).unwrap()),
            "`issues` events do not build"
        );
        assert_eq!(
            parse(Provider::Github, API, "", "d", body),
            Err(HookError::MissingHeader("X-GitHub-Event"))
        );
        assert_eq!(
            parse(Provider::Gitea, API, "push", " ", &gitea_push()),
            Err(HookError::MissingHeader("X-Gitea-Delivery"))
        );
    }

    #[test]
    fn gitea_push_builds_after() {
        let body = gitea_push();
        let api = "http://localhost:3000/api/v1";
        let info = build(parse(Provider::Gitea, api, "push", "f6266f16", &body).unwrap());
        assert_eq!(info.provider, Provider::Gitea);
        assert_eq!(info.repo, "gitea/webhooks");
        assert_eq!(info.api_url, api);
        assert_eq!(info.branch.as_deref(), Some("develop"));
        assert_eq!(info.commit, "bffeb74224043ba2feb48d137756c8a9331c449a");
        assert_eq!(info.author.as_deref(), Some("gitea"));
        // No `head_commit` in this (older) example: the message comes from `commits`.
        assert_eq!(info.message.as_deref(), Some("Webhooks Yay!"));
        assert_eq!(info.delivery, "f6266f16");
        assert_eq!(repository_full_name(&body).unwrap(), "gitea/webhooks");
    }

    #[test]
    fn gitea_pull_requests() {
        let body = gitea_pr("synchronized", "org/app");
        let info =
            build(parse(Provider::Gitea, "https://git.example/api/v1", "pull_request", "x", &body).unwrap());
        assert_eq!(info.git_ref, "refs/pull/12/head");
        assert_eq!(info.pull_request, Some(12));
        assert_eq!(info.branch.as_deref(), Some("fast"));
        assert_eq!(info.base_branch.as_deref(), Some("main"));
        assert_eq!(info.author.as_deref(), Some("alice"));
        assert_eq!(info.message.as_deref(), Some("Speed up the parser"));
        assert!(!info.fork);
        let body = gitea_pr("opened", "bob/app");
        assert!(build(parse(Provider::Gitea, "u", "pull_request", "x", &body).unwrap()).fork);
        let body = gitea_pr("closed", "org/app");
        assert_eq!(
            skip(parse(Provider::Gitea, "u", "pull_request", "x", &body).unwrap()),
            "pull_request action `closed` does not build"
        );
    }

    #[test]
    fn bad_payloads_say_what_is_wrong() {
        assert!(matches!(parse(Provider::Github, API, "push", "d", b"{not json"), Err(HookError::Json(_))));
        assert!(matches!(parse(Provider::Github, API, "push", "d", b"[1]"), Err(HookError::Json(_))));
        let form = parse(Provider::Github, API, "push", "d", b"payload=%7B%7D").unwrap_err();
        assert!(form.to_string().contains("application/json"), "{form}");
        assert!(matches!(repository_full_name(b""), Err(HookError::Json(_))));
        assert_eq!(
            repository_full_name(br#"{"repository":{}}"#),
            Err(HookError::Missing { field: "repository.full_name" })
        );

        let mut v: serde_json::Value =
            serde_json::from_slice(&github_push("refs/heads/main", SHA, false)).unwrap();
        v.as_object_mut().unwrap().remove("after");
        let err = parse(Provider::Github, API, "push", "d", &bytes(v)).unwrap_err();
        assert_eq!(err, HookError::Missing { field: "after" });
        assert_eq!(err.to_string(), "the webhook payload has no `after`");

        let body = github_push("refs/heads/main", "../../etc", false);
        let err = parse(Provider::Github, API, "push", "d", &body).unwrap_err();
        assert!(matches!(err, HookError::Invalid { field: "after", .. }), "{err}");

        let mut v: serde_json::Value =
            serde_json::from_slice(&github_pr("opened", Some("Codertocat/Hello-World"))).unwrap();
        v["pull_request"]["head"]["sha"] = json!(42);
        let err = parse(Provider::Github, API, "pull_request", "d", &bytes(v)).unwrap_err();
        assert!(matches!(err, HookError::Invalid { field: "pull_request.head.sha", .. }), "{err}");
    }

    #[test]
    fn signatures_verify_in_both_formats() {
        let body = github_push("refs/heads/main", SHA, false);
        let secret = b"It's a Secret to Everybody";
        let gh = sign(Provider::Github, secret, &body);
        assert!(gh.starts_with("sha256=") && gh.len() == 7 + 64, "{gh}");
        assert!(verify_signature(Provider::Github, secret, &body, &gh));
        let gt = sign(Provider::Gitea, secret, &body);
        assert_eq!(gh.strip_prefix("sha256="), Some(gt.as_str()));
        assert!(verify_signature(Provider::Gitea, secret, &body, &gt));

        // Wrong secret, changed body, missing prefix, a prefix Gitea does not send,
        // not hex, truncated, empty.
        assert!(!verify_signature(Provider::Github, b"another secret", &body, &gh));
        let mut changed = body.clone();
        changed.push(b' ');
        assert!(!verify_signature(Provider::Github, secret, &changed, &gh));
        assert!(!verify_signature(Provider::Github, secret, &body, &gt));
        assert!(!verify_signature(Provider::Gitea, secret, &body, &gh));
        assert!(!verify_signature(Provider::Github, secret, &body, "sha256=zz"));
        assert!(!verify_signature(Provider::Github, secret, &body, &gh[..gh.len() - 2]));
        assert!(!verify_signature(Provider::Github, secret, &body, ""));
        assert!(!verify_signature(Provider::Github, secret, &body, "sha1=abc"));
        // No secret: nothing verifies, not even a signature made with the empty key.
        assert!(!verify_signature(Provider::Github, b"", &body, &sign(Provider::Github, b"", &body)));
    }

    #[test]
    fn signature_matches_githubs_documented_example() {
        // GitHub's "Validating webhook deliveries" test values.
        let sig = sign(Provider::Github, b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(sig, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
    }

    #[test]
    fn header_names() {
        assert_eq!(headers(Provider::Github).signature, "X-Hub-Signature-256");
        assert_eq!(headers(Provider::Gitea).event, "X-Gitea-Event");
        assert!(is_commit_sha(SHA) && is_commit_sha(&"a".repeat(64)));
        assert!(!is_commit_sha("abc") && !is_commit_sha(&"g".repeat(40)));
    }
}
