//! The git host's API as Kiln uses it: a commit's `.kiln.yml` (the contents API) and commit
//! statuses, for GitHub and Gitea/Forgejo (same paths, different auth and media types).
//!
//! Transient failures (connection errors, 5xx, 429, GitHub's secondary rate limit) are
//! retried with [`Backoff`], honouring `Retry-After` up to [`MAX_RETRY_AFTER`]; any other
//! answer is final. The token is sent only to the API's own origin (reqwest drops
//! `Authorization` on a redirect to another host) and never appears in an error.

use kiln_domain::git::hook::is_commit_sha;
use kiln_domain::git::{Provider, USER_AGENT};
use kiln_domain::retry::Backoff;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use std::time::Duration;

/// The file a repository's pipeline is read from, at the root of the commit.
pub const PIPELINE_FILE: &str = ".kiln.yml";

/// A pipeline bigger than this is refused (GitHub's contents API serves up to 1 MB).
pub const MAX_PIPELINE_BYTES: usize = 1024 * 1024;

/// GitHub's limit on a commit status description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 140;

/// The longest `Retry-After` waited for; a host asking for longer gets the error instead.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The default retry policy: [`Backoff::TRANSIENT`]'s delays, five tries in all.
pub const RETRY: Backoff = Backoff { attempts: 5, ..Backoff::TRANSIENT };

const GITHUB_API_VERSION: &str = "2022-11-28";

/// The state of a commit status (the values both hosts accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    /// The state as the hosts spell it (and as it is serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
        }
    }
}

/// A commit status as posted: one line per `context` on the commit, the latest wins.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommitStatus {
    pub state: StatusState,
    /// `kiln` for the build, `kiln/<stage>` per stage.
    pub context: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    /// Truncated to [`MAX_DESCRIPTION_CHARS`] when posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Why a call to the host failed. Messages name the repository and commit, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("`{0}` is not a repository name of the form owner/name")]
    BadRepo(String),
    #[error("`{0}` is not a full commit SHA")]
    BadCommit(String),
    /// The host answered with an error status (after the retries, if it was transient).
    #[error("{what}: the host answered {status}{}", if message.is_empty() { String::new() } else { format!(" ({message})") })]
    Status { what: String, status: u16, message: String },
    /// No answer: connection refused, timed out, reset.
    #[error("{what}: {message}")]
    Request { what: String, message: String },
    /// An answer Kiln cannot use (not the documented shape, too big).
    #[error("{what}: {message}")]
    Unusable { what: String, message: String },
}

impl HostError {
    /// Whether trying again later may succeed (the retries here were used up).
    pub fn is_transient(&self) -> bool {
        match self {
            HostError::Status { status, .. } => *status == 429 || *status >= 500,
            HostError::Request { .. } => true,
            _ => false,
        }
    }

    /// The host's HTTP status, when it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            HostError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one host's API, with one repository's token.
#[derive(Clone)]
pub struct GitHost {
    client: reqwest::Client,
    provider: Provider,
    api_url: String,
    token: Option<String>,
    retry: Backoff,
}

impl std::fmt::Debug for GitHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHost")
            .field("provider", &self.provider)
            .field("api_url", &self.api_url)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

impl GitHost {
    /// `api_url` is the API root (`https://api.github.com`, `https://gitea.example/api/v1`).
    pub fn new(provider: Provider, api_url: &str, token: Option<String>) -> GitHost {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        GitHost {
            client,
            provider,
            api_url: api_url.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            retry: RETRY,
        }
    }

    /// Another retry policy (tests use short delays).
    pub fn with_retry(mut self, retry: Backoff) -> GitHost {
        self.retry = retry;
        self
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The commit's `.kiln.yml`, or `None` when the commit has none (404; GitHub also
    /// answers 404 for a repository the token cannot read).
    pub async fn pipeline_file(&self, repo: &str, commit: &str) -> Result<Option<Vec<u8>>, HostError> {
        let (owner, name) = split_repo(repo)?;
        check_commit(commit)?;
        let what = format!("fetching {PIPELINE_FILE} of {repo} at {}", short(commit));
        let url = format!("{}/repos/{owner}/{name}/contents/{PIPELINE_FILE}", self.api_url);
        let accept = match self.provider {
            // Raw when GitHub obliges; the JSON form is handled too.
            Provider::Github => "application/vnd.github.raw+json",
            Provider::Gitea => "application/json",
        };
        let response = self
            .send(&what, || {
                self.request(reqwest::Method::GET, &url).header(ACCEPT, accept).query(&[("ref", commit)])
            })
            .await;
        let response = match response {
            Err(HostError::Status { status: 404, .. }) => return Ok(None),
            other => other?,
        };
        let form = contents_form(response.headers());
        let body = read_capped(response, MAX_PIPELINE_BYTES, &what, self.token.as_deref()).await?;
        decode_contents(&body, form).map(Some).map_err(|message| HostError::Unusable { what, message })
    }

    /// Posts a commit status on `commit` of `repo`.
    pub async fn post_status(
        &self,
        repo: &str,
        commit: &str,
        status: &CommitStatus,
    ) -> Result<(), HostError> {
        let (owner, name) = split_repo(repo)?;
        check_commit(commit)?;
        let what = format!("posting status `{}` to {repo} at {}", status.context, short(commit));
        let url = format!("{}/repos/{owner}/{name}/statuses/{commit}", self.api_url);
        let mut body = status.clone();
        body.description = body.description.map(|d| truncate_chars(&d, MAX_DESCRIPTION_CHARS));
        let accept = match self.provider {
            Provider::Github => "application/vnd.github+json",
            Provider::Gitea => "application/json",
        };
        self.send(&what, || self.request(reqwest::Method::POST, &url).header(ACCEPT, accept).json(&body))
            .await
            .map(drop)
    }

    /// A request with the headers every call carries.
    fn request(&self, method: reqwest::Method, url: &str) -> RequestBuilder {
        let mut request = self.client.request(method, url);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, self.provider.authorization(token));
        }
        if self.provider == Provider::Github {
            request = request.header("X-GitHub-Api-Version", GITHUB_API_VERSION);
        }
        request
    }

    /// Sends the request `make` builds, retrying transient failures; a success status
    /// gives the response, any other the error with the host's message.
    async fn send(&self, what: &str, make: impl Fn() -> RequestBuilder) -> Result<Response, HostError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let again = self.retry.again(tries);
            let wait = self.retry.delay(tries - 1);
            match make().send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || status.is_server_error()
                        // GitHub's secondary rate limit: a 403 that says when to come back.
                        || (status == StatusCode::FORBIDDEN && retry_after.is_some());
                    let too_long = retry_after.is_some_and(|d| d > MAX_RETRY_AFTER);
                    if retryable && again && !too_long {
                        tokio::time::sleep(wait.max(retry_after.unwrap_or_default())).await;
                        continue;
                    }
                    let message = error_message(response, self.token.as_deref()).await;
                    return Err(HostError::Status {
                        what: what.to_string(),
                        status: status.as_u16(),
                        message,
                    });
                }
                Err(e) => {
                    let transient = !(e.is_builder() || e.is_redirect() || e.is_decode());
                    if transient && again {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(HostError::Request {
                        what: what.to_string(),
                        message: scrub(&super::error_chain(e), self.token.as_deref()),
                    });
                }
            }
        }
    }
}

/// `owner/name`, each part of the characters hosts allow: they go into a URL path.
fn split_repo(repo: &str) -> Result<(&str, &str), HostError> {
    let ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match repo.split_once('/') {
        Some((owner, name)) if ok(owner) && ok(name) => Ok((owner, name)),
        _ => Err(HostError::BadRepo(repo.to_string())),
    }
}

fn check_commit(commit: &str) -> Result<(), HostError> {
    if is_commit_sha(commit) { Ok(()) } else { Err(HostError::BadCommit(commit.to_string())) }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// At most `max` characters; a cut one ends in `…`.
fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `Retry-After` in seconds (the HTTP-date form is not worth a date parser here: the
/// backoff's own delay applies then).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// What a contents answer's `Content-Type` says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// The JSON object (`application/json`, GitHub's `+json` types other than raw).
    Json,
    /// The file itself (GitHub's `application/vnd.github.raw`).
    Raw,
    /// Missing or generic (`text/plain`, `application/octet-stream`): told by the body.
    Unknown,
}

fn contents_form(headers: &HeaderMap) -> Form {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Form::Unknown;
    };
    let media = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media.contains(".raw") {
        Form::Raw
    } else if media == "application/json" || media.ends_with("+json") {
        Form::Json
    } else {
        Form::Unknown
    }
}

/// The file from a contents answer: the JSON form when the content type says so (or, with
/// no telling content type, when the body is a contents object), else the raw bytes.
fn decode_contents(body: &[u8], form: Form) -> Result<Vec<u8>, String> {
    let parsed = match form {
        Form::Raw => None,
        Form::Json => Some(
            serde_json::from_slice::<serde_json::Value>(body)
                .map_err(|e| format!("the host's contents answer is not JSON ({e})"))?,
        ),
        // A pipeline is YAML, never an object with these three keys.
        Form::Unknown => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .filter(|v| v.get("encoding").is_some() && v.get("content").is_some() && v.get("type").is_some()),
    };
    let Some(v) = parsed else {
        return Ok(body.to_vec());
    };
    if v.is_array() {
        return Err(format!("{PIPELINE_FILE} is a directory"));
    }
    match v.get("type").and_then(|t| t.as_str()) {
        None | Some("file") => {}
        Some(other) => return Err(format!("{PIPELINE_FILE} is a {other}, not a file")),
    }
    let content = v.get("content").and_then(|c| c.as_str()).unwrap_or("");
    match v.get("encoding").and_then(|e| e.as_str()) {
        Some("base64") => {
            base64_decode(content).ok_or_else(|| "the file's base64 content is invalid".to_string())
        }
        // GitHub sends `"encoding": "none"` and no content for files over 1 MB.
        Some("none") | Some("") | None if content.is_empty() => {
            Err(format!("{PIPELINE_FILE} is too big for the contents API"))
        }
        Some(other) => Err(format!("unknown content encoding {other:?}")),
        None => Err("the contents answer has no encoding".to_string()),
    }
}

/// Standard base64 (the contents API's), ignoring the line breaks GitHub puts in it.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let pad = clean.iter().rev().take_while(|&&b| b == b'=').count();
    let data = &clean[..clean.len() - pad];
    // Padding only ever completes the last group of four; one leftover character is no byte.
    if pad > 2 || (pad > 0 && !clean.len().is_multiple_of(4)) || data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

async fn read_capped(
    mut response: Response,
    cap: usize,
    what: &str,
    token: Option<&str>,
) -> Result<Vec<u8>, HostError> {
    let too_big = || HostError::Unusable {
        what: what.to_string(),
        message: format!("{PIPELINE_FILE} is over {} KiB", cap / 1024),
    };
    if response.content_length().is_some_and(|n| n > cap as u64 * 2) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                // The JSON form's base64 is 4/3 the file, plus line breaks and metadata.
                if body.len() > cap * 2 {
                    return Err(too_big());
                }
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(HostError::Request {
                    what: what.to_string(),
                    message: scrub(&super::error_chain(e), token),
                });
            }
        }
    }
}

/// The host's own explanation: GitHub and Gitea answer errors with `{"message": ...}`.
async fn error_message(response: Response, token: Option<&str>) -> String {
    let body = response.bytes().await.unwrap_or_default();
    let text = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => v.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_string(),
        Err(_) => String::from_utf8_lossy(&body).trim().to_string(),
    };
    scrub(&truncate_chars(&text, 300), token)
}

/// Hosts do not echo tokens, but an error message must not carry one even if one did.
fn scrub(message: &str, token: Option<&str>) -> String {
    match token {
        Some(t) if !t.is_empty() => message.replace(t, "***"),
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const SHA: &str = "7fd1a60b01f91b314f59955a4e4d4e80d8edf11d";
    const TOKEN: &str = "ghp_secret123";
    const PIPELINE: &str = "stages:\n  build:\n    steps:\n      - run: make\n";

    #[derive(Debug, Clone)]
    struct Recorded {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Recorded {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    struct Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    }

    fn reply(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply { status, headers: vec![("Content-Type", content_type.to_string())], body: body.into() }
    }

    /// A one-connection-per-request HTTP/1.1 server answering from a script, in order,
    /// and recording what it was asked.
    struct Fake {
        url: String,
        seen: Arc<Mutex<Vec<Recorded>>>,
    }

    impl Fake {
        async fn start(replies: Vec<Reply>) -> Fake {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
            let log = seen.clone();
            tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let Some(request) = read_request(&mut conn).await else { continue };
                    log.lock().unwrap().push(request);
                    let r = replies
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or_else(|| reply(599, "text/plain", "unscripted"));
                    let mut head = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        r.status,
                        r.body.len()
                    );
                    for (name, value) in &r.headers {
                        head.push_str(&format!("{name}: {value}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(&r.body).await;
                    let _ = conn.shutdown().await;
                }
            });
            Fake { url, seen }
        }

        fn seen(&self) -> Vec<Recorded> {
            self.seen.lock().unwrap().clone()
        }
    }

    async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Recorded> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = conn.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize =
            headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < len {
            let n = conn.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(Recorded { method, target, headers, body })
    }

    fn fast() -> Backoff {
        Backoff { attempts: 4, first: Duration::from_millis(1), max: Duration::from_millis(5) }
    }

    fn host(provider: Provider, url: &str) -> GitHost {
        GitHost::new(provider, url, Some(TOKEN.to_string())).with_retry(fast())
    }

    fn base64_encode(data: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// GitHub's JSON form: base64 with a line break every 60 characters.
    fn contents_json(file: &[u8]) -> String {
        let encoded = base64_encode(file);
        let wrapped: Vec<String> =
            encoded.as_bytes().chunks(60).map(|c| String::from_utf8_lossy(c).to_string() + "\n").collect();
        serde_json::json!({
            "type": "file", "encoding": "base64", "size": file.len(), "name": ".kiln.yml", "path": ".kiln.yml",
            "content": wrapped.concat(), "sha": "3d21ec53a331a6f037a91c368710b99387d012c1"
        })
        .to_string()
    }

    #[tokio::test]
    async fn github_raw_contents_with_the_documented_headers() {
        let fake = Fake::start(vec![reply(200, "application/vnd.github.raw; charset=utf-8", PIPELINE)]).await;
        let file =
            host(Provider::Github, &format!("{}/", fake.url)).pipeline_file("octo/app", SHA).await.unwrap();
        assert_eq!(file.as_deref(), Some(PIPELINE.as_bytes()));
        let seen = fake.seen();
        assert_eq!(seen.len(), 1);
        let r = &seen[0];
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, format!("/repos/octo/app/contents/.kiln.yml?ref={SHA}"));
        assert_eq!(r.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
        assert_eq!(r.header("accept"), Some("application/vnd.github.raw+json"));
        assert_eq!(r.header("x-github-api-version"), Some("2022-11-28"));
        assert_eq!(r.header("user-agent"), Some(USER_AGENT));
    }

    #[tokio::test]
    async fn base64_json_contents_for_both_hosts() {
        let file = "# ünïcode and a long line to wrap ".repeat(5) + PIPELINE;
        let fake = Fake::start(vec![
            reply(200, "application/json; charset=utf-8", contents_json(file.as_bytes())),
            // No telling content type: recognised by its shape.
            reply(200, "text/plain", contents_json(b"a: 1\n")),
            reply(200, "application/json", contents_json(file.as_bytes())),
        ])
        .await;
        let github = host(Provider::Github, &fake.url);
        assert_eq!(github.pipeline_file("octo/app", SHA).await.unwrap(), Some(file.clone().into_bytes()));
        assert_eq!(github.pipeline_file("octo/app", SHA).await.unwrap().as_deref(), Some(&b"a: 1\n"[..]));

        let gitea = host(Provider::Gitea, &format!("{}/api/v1", fake.url));
        assert_eq!(gitea.pipeline_file("org/app", SHA).await.unwrap(), Some(file.into_bytes()));
        let seen = fake.seen();
        let r = &seen[2];
        assert_eq!(r.target, format!("/api/v1/repos/org/app/contents/.kiln.yml?ref={SHA}"));
        assert_eq!(r.header("authorization"), Some(format!("token {TOKEN}").as_str()));
        assert_eq!(r.header("x-github-api-version"), None);
    }

    #[tokio::test]
    async fn no_pipeline_is_none_and_server_errors_are_retried() {
        let fake = Fake::start(vec![
            reply(404, "application/json", r#"{"message":"Not Found"}"#),
            reply(502, "text/html", "<html>bad gateway</html>"),
            reply(200, "application/vnd.github.raw", PIPELINE),
        ])
        .await;
        let github = host(Provider::Github, &fake.url);
        assert_eq!(github.pipeline_file("octo/app", SHA).await.unwrap(), None);
        assert_eq!(
            github.pipeline_file("octo/app", SHA).await.unwrap().as_deref(),
            Some(PIPELINE.as_bytes())
        );
        assert_eq!(fake.seen().len(), 3);
    }

    #[tokio::test]
    async fn unusable_contents_are_errors() {
        let fake = Fake::start(vec![
            reply(200, "application/json", r#"[{"type":"file","name":"a"}]"#),
            reply(200, "application/json", r#"{"type":"file","encoding":"none","content":""}"#),
            reply(200, "application/json", r#"{"type":"file","encoding":"base64","content":"!!!"}"#),
            reply(401, "application/json", format!(r#"{{"message":"Bad credentials {TOKEN}"}}"#)),
        ])
        .await;
        let github = host(Provider::Github, &fake.url);
        let dir = github.pipeline_file("octo/app", SHA).await.unwrap_err();
        assert!(dir.to_string().contains("directory"), "{dir}");
        let big = github.pipeline_file("octo/app", SHA).await.unwrap_err();
        assert!(big.to_string().contains("too big"), "{big}");
        let bad = github.pipeline_file("octo/app", SHA).await.unwrap_err();
        assert!(matches!(bad, HostError::Unusable { .. }), "{bad}");
        let denied = github.pipeline_file("octo/app", SHA).await.unwrap_err();
        assert_eq!(denied.status(), Some(401));
        assert!(!denied.is_transient());
        let shown = denied.to_string();
        assert!(shown.contains("Bad credentials") && !shown.contains(TOKEN), "{shown}");
        assert_eq!(fake.seen().len(), 4, "4xx is not retried");
    }

    fn status(state: StatusState, description: Option<String>) -> CommitStatus {
        CommitStatus {
            state,
            context: "kiln".into(),
            target_url: Some("https://kiln.example/builds/b-1".into()),
            description,
        }
    }

    #[tokio::test]
    async fn statuses_are_retried_on_5xx_and_posted_as_documented() {
        let fake = Fake::start(vec![
            reply(500, "application/json", r#"{"message":"Server Error"}"#),
            reply(201, "application/json", r#"{"id":1,"state":"pending"}"#),
        ])
        .await;
        let github = host(Provider::Github, &fake.url);
        github
            .post_status("octo/app", SHA, &status(StatusState::Pending, Some("running".into())))
            .await
            .unwrap();
        let seen = fake.seen();
        assert_eq!(seen.len(), 2, "retried once");
        for r in &seen {
            assert_eq!(r.method, "POST");
            assert_eq!(r.target, format!("/repos/octo/app/statuses/{SHA}"));
            assert_eq!(r.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
            assert_eq!(r.header("accept"), Some("application/vnd.github+json"));
            assert_eq!(r.header("x-github-api-version"), Some("2022-11-28"));
            assert_eq!(r.header("user-agent"), Some(USER_AGENT));
            assert_eq!(r.header("content-type"), Some("application/json"));
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(
                body,
                serde_json::json!({
                    "state": "pending",
                    "context": "kiln",
                    "target_url": "https://kiln.example/builds/b-1",
                    "description": "running"
                })
            );
        }
    }

    #[tokio::test]
    async fn a_422_is_final_and_429_waits_for_retry_after() {
        let mut throttled = reply(429, "application/json", r#"{"message":"slow down"}"#);
        throttled.headers.push(("Retry-After", "0".into()));
        let fake = Fake::start(vec![
            reply(422, "application/json", r#"{"message":"Validation Failed","errors":[]}"#),
            throttled,
            reply(201, "application/json", "{}"),
        ])
        .await;
        let gitea = host(Provider::Gitea, &fake.url);
        let err = gitea.post_status("org/app", SHA, &status(StatusState::Failure, None)).await.unwrap_err();
        assert_eq!(err.status(), Some(422));
        assert!(err.to_string().contains("Validation Failed"), "{err}");
        assert_eq!(fake.seen().len(), 1, "a 422 is not retried");

        gitea.post_status("org/app", SHA, &status(StatusState::Success, None)).await.unwrap();
        let seen = fake.seen();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2].header("authorization"), Some(format!("token {TOKEN}").as_str()));
        let body: serde_json::Value = serde_json::from_slice(&seen[2].body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"state": "success", "context": "kiln", "target_url": "https://kiln.example/builds/b-1"})
        );
    }

    #[tokio::test]
    async fn retries_stop_after_the_attempts_and_on_long_retry_after() {
        let fake = Fake::start((0..4).map(|_| reply(503, "text/plain", "down")).collect()).await;
        let err = host(Provider::Github, &fake.url)
            .post_status("octo/app", SHA, &status(StatusState::Error, None))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(503));
        assert!(err.is_transient());
        assert_eq!(fake.seen().len(), 4, "attempts counts every try");

        let mut limited = reply(403, "application/json", r#"{"message":"secondary rate limit"}"#);
        limited.headers.push(("Retry-After", "3600".into()));
        let fake = Fake::start(vec![limited]).await;
        let err = host(Provider::Github, &fake.url)
            .post_status("octo/app", SHA, &status(StatusState::Error, None))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(403));
        assert_eq!(fake.seen().len(), 1, "not waiting an hour");
    }

    #[tokio::test]
    async fn connection_errors_are_retried_then_reported_without_the_token() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let start = std::time::Instant::now();
        let err = host(Provider::Github, &url)
            .post_status("octo/app", SHA, &status(StatusState::Pending, None))
            .await
            .unwrap_err();
        assert!(matches!(err, HostError::Request { .. }), "{err}");
        assert!(err.is_transient());
        assert!(!err.to_string().contains(TOKEN));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn names_that_are_not_repositories_or_commits_are_refused_before_any_request() {
        let fake = Fake::start(vec![]).await;
        let github = host(Provider::Github, &fake.url);
        for repo in ["octo", "octo/app/x", "../app", "octo/..", "octo/a pp", "/app", "octo/"] {
            let err = github.pipeline_file(repo, SHA).await.unwrap_err();
            assert_eq!(err, HostError::BadRepo(repo.to_string()));
        }
        let err =
            github.post_status("octo/app", "HEAD", &status(StatusState::Pending, None)).await.unwrap_err();
        assert_eq!(err, HostError::BadCommit("HEAD".into()));
        assert!(fake.seen().is_empty());
        assert!(!format!("{github:?}").contains(TOKEN));
    }

    #[tokio::test]
    async fn long_descriptions_are_cut_to_140_characters() {
        let fake = Fake::start(vec![reply(201, "application/json", "{}")]).await;
        let long = "é".repeat(200);
        host(Provider::Github, &fake.url)
            .post_status("octo/app", SHA, &status(StatusState::Failure, Some(long)))
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&fake.seen()[0].body).unwrap();
        let description = body["description"].as_str().unwrap();
        assert_eq!(description.chars().count(), 140);
        assert!(description.ends_with('…') && description.starts_with("éé"));
        assert_eq!(truncate_chars("short", 140), "short");
    }

    #[test]
    fn the_content_type_decides_the_form_and_the_body_decides_when_it_does_not() {
        let object = br#"{"type":"file","encoding":"base64","content":"YTogMQo="}"#;
        assert_eq!(decode_contents(object, Form::Json).unwrap(), b"a: 1\n");
        assert_eq!(decode_contents(object, Form::Unknown).unwrap(), b"a: 1\n");
        assert_eq!(decode_contents(object, Form::Raw).unwrap(), object.to_vec());
        assert_eq!(decode_contents(b"{}", Form::Unknown).unwrap(), b"{}");
        assert_eq!(decode_contents(PIPELINE.as_bytes(), Form::Unknown).unwrap(), PIPELINE.as_bytes());
        assert!(decode_contents(PIPELINE.as_bytes(), Form::Json).is_err());
        assert!(
            decode_contents(br#"{"type":"submodule","encoding":"base64","content":""}"#, Form::Json).is_err()
        );
    }

    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        for data in [&b""[..], b"a", b"ab", b"abc", b"abcd", b"\xff\x00\x10binary"] {
            let encoded = base64_encode(data);
            assert_eq!(base64_decode(&encoded).as_deref(), Some(data), "{encoded}");
            let wrapped = encoded.chars().flat_map(|c| [c, '\n']).collect::<String>();
            assert_eq!(base64_decode(&wrapped).as_deref(), Some(data));
        }
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("a"), None);
        assert_eq!(base64_decode("aGV$bG8="), None);
        assert_eq!(base64_decode("aGVsbG8==="), None);
    }
}
