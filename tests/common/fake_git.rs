//! A fake git host for the end-to-end tests, following GitHub's documented REST shapes: the
//! contents of a file at a commit, the commit's tarball (a 302 to a second listener, another
//! origin, as api.github.com redirects to codeload.github.com), and commit statuses. It
//! records every request, so tests can see which origin got the token.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Which of the two listeners got a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The API (`api_url`): contents, tarball redirects, statuses.
    Api,
    /// The tarball host the API redirects to (codeload.github.com on GitHub).
    Codeload,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub origin: Origin,
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub authorization: Option<String>,
}

/// One `POST .../statuses/{sha}`.
#[derive(Debug, Clone)]
pub struct PostedStatus {
    /// `owner/repo` of the path.
    pub repo: String,
    pub sha: String,
    pub body: Value,
    pub authorization: Option<String>,
    /// What the fake answered: 201, or 500 when told to fail it.
    pub answered: u16,
}

impl PostedStatus {
    pub fn context(&self) -> &str {
        self.body["context"].as_str().unwrap_or("default")
    }
    pub fn state(&self) -> &str {
        self.body["state"].as_str().unwrap_or("")
    }
}

/// A file of a commit.
#[derive(Debug, Clone)]
pub struct File {
    pub path: String,
    pub bytes: Vec<u8>,
    pub executable: bool,
}

/// What a hostile tarball adds after the commit's files.
#[derive(Debug, Clone)]
pub enum Hostile {
    /// A regular file whose path (`{top}/../../…/{target}`) climbs out of any workspace to
    /// land on `target`, an absolute path. Written as raw header bytes: tar's builder refuses
    /// `..`.
    DotDot { target: PathBuf },
    /// A symlink `{top}/{link}` pointing at `target_dir` (an absolute directory, reached
    /// with `..`), then a file `{top}/{link}/{file}` written through it.
    SymlinkOut { link: String, target_dir: PathBuf, file: String },
}

/// A commit: its files, and optionally a hostile tarball.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub files: Vec<File>,
    pub hostile: Option<Hostile>,
}

impl Commit {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn file(mut self, path: &str, content: &str) -> Self {
        self.files.push(File {
            path: path.to_string(),
            bytes: content.as_bytes().to_vec(),
            executable: false,
        });
        self
    }

    pub fn executable(mut self, path: &str, content: &str) -> Self {
        self.files.push(File {
            path: path.to_string(),
            bytes: content.as_bytes().to_vec(),
            executable: true,
        });
        self
    }

    pub fn hostile(mut self, h: Hostile) -> Self {
        self.hostile = Some(h);
        self
    }
}

#[derive(Default)]
struct Inner {
    /// `(owner/repo, sha)` → commit.
    commits: HashMap<(String, String), Commit>,
    statuses: Vec<PostedStatus>,
    requests: Vec<Recorded>,
    /// Status posts still to answer with a 500.
    fail_statuses: u32,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    /// The repositories' token (the API takes `Bearer T` or `token T`).
    token: String,
    /// The codeload listener's root, for the redirects.
    codeload_url: String,
    /// What codeload wants in `?token=`: like GitHub's signed redirect, it takes no
    /// Authorization header.
    codeload_key: String,
}

/// The fake host: two listeners on 127.0.0.1, stopped when dropped.
pub struct FakeGit {
    /// The API root to register a repository with (`api_url`).
    pub api_url: String,
    shared: Shared,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeGit {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeGit {
    /// Starts both listeners; `token` is what the API accepts.
    pub async fn start(token: &str) -> FakeGit {
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake API");
        let codeload = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake codeload");
        let api_url = format!("http://{}", api.local_addr().unwrap());
        let codeload_url = format!("http://{}", codeload.local_addr().unwrap());
        let shared = Shared {
            inner: Arc::default(),
            token: token.to_string(),
            codeload_url: codeload_url.clone(),
            codeload_key: format!("k{}x{}", std::process::id(), api.local_addr().unwrap().port()),
        };
        let api_router = Router::new().fallback(api_handler).with_state(shared.clone());
        let codeload_router = Router::new().fallback(codeload_handler).with_state(shared.clone());
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(api, api_router).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(codeload, codeload_router).await;
            }),
        ];
        FakeGit { api_url, shared, tasks }
    }

    /// Makes `sha` a commit of `repo` (`owner/name`).
    pub fn put_commit(&self, repo: &str, sha: &str, commit: Commit) {
        self.lock().commits.insert((repo.to_string(), sha.to_string()), commit);
    }

    /// The next `n` status posts get a 500.
    pub fn fail_next_status_posts(&self, n: u32) {
        self.lock().fail_statuses = n;
    }

    /// Every status post so far, in order (failed ones included, see `answered`).
    pub fn statuses(&self) -> Vec<PostedStatus> {
        self.lock().statuses.clone()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn github_json(status: StatusCode, v: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], v.to_string()).into_response()
}

fn not_found() -> Response {
    github_json(
        StatusCode::NOT_FOUND,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}),
    )
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn record(s: &Shared, origin: Origin, method: &Method, uri: &Uri, headers: &HeaderMap) {
    let authorization =
        headers.get(header::AUTHORIZATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut inner = s.inner.lock().unwrap_or_else(|e| e.into_inner());
    inner.requests.push(Recorded { origin, method: method.to_string(), uri: uri.to_string(), authorization });
}

/// `None` when the request carries the token; else GitHub's answer without it.
fn check_token(s: &Shared, headers: &HeaderMap, private: bool) -> Option<Response> {
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        // A private repository does not exist for an anonymous caller.
        return Some(if private {
            not_found()
        } else {
            github_json(StatusCode::UNAUTHORIZED, json!({"message": "Requires authentication"}))
        });
    };
    let token = given.strip_prefix("Bearer ").or_else(|| given.strip_prefix("token ")).unwrap_or("");
    if token == s.token {
        None
    } else {
        Some(github_json(StatusCode::UNAUTHORIZED, json!({"message": "Bad credentials"})))
    }
}

async fn api_handler(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&s, Origin::Api, &method, &uri, &headers);
    let path = uri.path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["repos", owner, repo, "contents", rest @ ..]) if !rest.is_empty() => {
            if let Some(denied) = check_token(&s, &headers, true) {
                return denied;
            }
            let file_path = rest.join("/");
            let Some(sha) = query_param(&uri, "ref") else { return not_found() };
            let repo_name = format!("{owner}/{repo}");
            let file = {
                let inner = s.inner.lock().unwrap_or_else(|e| e.into_inner());
                inner
                    .commits
                    .get(&(repo_name.clone(), sha.clone()))
                    .and_then(|c| c.files.iter().find(|f| f.path == file_path).cloned())
            };
            let Some(file) = file else { return not_found() };
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            if accept.contains("vnd.github.raw") {
                return (StatusCode::OK, [(header::CONTENT_TYPE, "application/vnd.github.raw")], file.bytes)
                    .into_response();
            }
            let blob = pseudo_blob_sha(&file.bytes);
            let url = format!("https://api.github.com/repos/{repo_name}/contents/{file_path}?ref={sha}");
            github_json(
                StatusCode::OK,
                json!({
                    "type": "file",
                    "encoding": "base64",
                    "size": file.bytes.len(),
                    "name": file_path.rsplit('/').next().unwrap_or(&file_path),
                    "path": file_path,
                    "content": base64_lines(&file.bytes),
                    "sha": blob,
                    "url": url,
                    "git_url": null,
                    "html_url": null,
                    "download_url": null,
                    "_links": {"self": url}
                }),
            )
        }
        (Method::GET, ["repos", owner, repo, "tarball", sha]) => {
            if let Some(denied) = check_token(&s, &headers, true) {
                return denied;
            }
            let known = {
                let inner = s.inner.lock().unwrap_or_else(|e| e.into_inner());
                inner.commits.contains_key(&(format!("{owner}/{repo}"), sha.to_string()))
            };
            if !known {
                return not_found();
            }
            let location =
                format!("{}/{owner}/{repo}/legacy.tar.gz/{sha}?token={}", s.codeload_url, s.codeload_key);
            (StatusCode::FOUND, [(header::LOCATION, location)], "").into_response()
        }
        // Gitea and Forgejo serve the archive themselves: everything under `{repo}/`.
        (Method::GET, ["repos", owner, repo, "archive", file]) if file.ends_with(".tar.gz") => {
            if let Some(denied) = check_token(&s, &headers, true) {
                return denied;
            }
            let sha = file.trim_end_matches(".tar.gz");
            let commit = {
                let inner = s.inner.lock().unwrap_or_else(|e| e.into_inner());
                inner.commits.get(&(format!("{owner}/{repo}"), sha.to_string())).cloned()
            };
            let Some(commit) = commit else { return not_found() };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                tarball(repo, sha, &commit),
            )
                .into_response()
        }
        (Method::POST, ["repos", owner, repo, "statuses", sha]) => {
            if let Some(denied) = check_token(&s, &headers, false) {
                return denied;
            }
            let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
                return github_json(StatusCode::BAD_REQUEST, json!({"message": "Problems parsing JSON"}));
            };
            if !matches!(doc["state"].as_str(), Some("error" | "failure" | "pending" | "success")) {
                return github_json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "Validation Failed", "errors": [{"resource": "Status", "field": "state", "code": "custom"}]}),
                );
            }
            let authorization = headers
                .get(header::AUTHORIZATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let mut inner = s.inner.lock().unwrap_or_else(|e| e.into_inner());
            let fail = inner.fail_statuses > 0;
            if fail {
                inner.fail_statuses -= 1;
            }
            let answered = if fail { 500 } else { 201 };
            inner.statuses.push(PostedStatus {
                repo: format!("{owner}/{repo}"),
                sha: sha.to_string(),
                body: doc.clone(),
                authorization,
                answered,
            });
            if fail {
                return github_json(StatusCode::INTERNAL_SERVER_ERROR, json!({"message": "Server Error"}));
            }
            let id = inner.statuses.len();
            github_json(
                StatusCode::CREATED,
                json!({
                    "url": format!("https://api.github.com/repos/{owner}/{repo}/statuses/{sha}"),
                    "id": id,
                    "node_id": format!("SC_{id}"),
                    "state": doc["state"],
                    "description": doc["description"],
                    "target_url": doc["target_url"],
                    "context": doc.get("context").cloned().unwrap_or(json!("default")),
                    "created_at": "2026-01-01T00:00:00Z",
                    "updated_at": "2026-01-01T00:00:00Z",
                    "creator": {"login": "kiln-bot", "id": 1, "type": "Bot"}
                }),
            )
        }
        _ => not_found(),
    }
}

async fn codeload_handler(State(s): State<Shared>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    record(&s, Origin::Codeload, &method, &uri, &headers);
    let path = uri.path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["legacy.tar.gz", sha] = segs.get(2..).unwrap_or_default() else { return not_found() };
    let (Some(owner), Some(repo)) = (segs.first(), segs.get(1)) else { return not_found() };
    if method != Method::GET || query_param(&uri, "token").as_deref() != Some(s.codeload_key.as_str()) {
        return not_found();
    }
    let commit = {
        let inner = s.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.commits.get(&(format!("{owner}/{repo}"), sha.to_string())).cloned()
    };
    let Some(commit) = commit else { return not_found() };
    let top = format!("{owner}-{repo}-{}", &sha[..sha.len().min(7)]);
    let bytes = tarball(&top, sha, &commit);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-gzip".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename={top}.tar.gz")),
        ],
        bytes,
    )
        .into_response()
}

/// The gzip'd tar `git archive` would make: a pax global header with the commit, then
/// everything under `{top}/`, directories before their files; then the hostile entries.
pub fn tarball(top: &str, sha: &str, commit: &Commit) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    b.mode(tar::HeaderMode::Deterministic);

    let comment = pax_record("comment", sha);
    let mut h = tar::Header::new_ustar();
    h.set_path("pax_global_header").unwrap();
    h.set_entry_type(tar::EntryType::XGlobalHeader);
    h.set_mode(0o666);
    h.set_size(comment.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, comment.as_slice()).unwrap();

    let mut dirs = BTreeSet::new();
    dirs.insert(String::new());
    let mut files = commit.files.clone();
    files.sort_by(|a, c| a.path.cmp(&c.path));
    for f in &files {
        let mut parent = String::new();
        for part in f.path.split('/').collect::<Vec<_>>().split_last().map(|(_, d)| d).unwrap_or_default() {
            parent = if parent.is_empty() { part.to_string() } else { format!("{parent}/{part}") };
            dirs.insert(parent.clone());
        }
    }
    for d in &dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o775);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        let p = if d.is_empty() { format!("{top}/") } else { format!("{top}/{d}/") };
        b.append_data(&mut h, p, std::io::empty()).unwrap();
    }
    for f in &files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(if f.executable { 0o775 } else { 0o664 });
        h.set_size(f.bytes.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("{top}/{}", f.path), f.bytes.as_slice()).unwrap();
    }

    match &commit.hostile {
        None => {}
        Some(Hostile::DotDot { target }) => {
            let path =
                format!("{top}/{}{}", "../".repeat(40), target.display().to_string().trim_start_matches('/'));
            append_raw_path(&mut b, &path, b"escaped\n");
        }
        Some(Hostile::SymlinkOut { link, target_dir, file }) => {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            h.set_mtime(1_700_000_000);
            let to =
                format!("{}{}", "../".repeat(40), target_dir.display().to_string().trim_start_matches('/'));
            // Link targets may hold `..` (append_link writes a GNU long link name if needed).
            b.append_link(&mut h, format!("{top}/{link}"), to).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o664);
            h.set_size(b"escaped\n".len() as u64);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, format!("{top}/{link}/{file}"), &b"escaped\n"[..]).unwrap();
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A regular file entry under any path, `..` included: the name goes into the header bytes
/// as is, behind a GNU long-name entry (`././@LongLink`) when over 100 bytes.
fn append_raw_path<W: Write>(b: &mut tar::Builder<W>, path: &str, data: &[u8]) {
    let name = path.as_bytes();
    if name.len() > 100 {
        let mut long = tar::Header::new_gnu();
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_mode(0o644);
        let mut with_nul = name.to_vec();
        with_nul.push(0);
        long.set_size(with_nul.len() as u64);
        long.set_cksum();
        b.append(&long, with_nul.as_slice()).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o664);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// A pax record: `LEN KEY=VALUE\n`, LEN counting the whole record, itself included.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = format!(" {key}={value}\n");
    let mut len = rest.len() + 1;
    while format!("{len}{rest}").len() != len {
        len += 1;
    }
    format!("{len}{rest}").into_bytes()
}

/// Base64 with a newline every 60 characters, as GitHub's contents API sends it.
pub fn base64_lines(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | (u32::from(c) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    let mut lined = String::new();
    for (i, c) in out.chars().enumerate() {
        if i > 0 && i % 60 == 0 {
            lined.push('\n');
        }
        lined.push(c);
    }
    lined.push('\n');
    lined
}

/// A stand-in for a blob's id (GitHub's is a SHA-1; nothing here checks it).
fn pseudo_blob_sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))[..40].to_string()
}
