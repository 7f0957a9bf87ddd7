//! Checking a commit out into a workspace: the host's tarball of the commit, downloaded
//! without ever sending the token to another host, and unpacked by [`unpack`].

pub use super::unpack::unpack;

use kiln_domain::git::{Provider, USER_AGENT};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, LOCATION};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Redirects followed before giving up (GitHub uses one, to codeload.github.com).
const MAX_REDIRECTS: usize = 5;

/// Which commit to check out, from where.
#[derive(Debug, Clone, Copy)]
pub struct CheckoutSource<'a> {
    pub provider: Provider,
    /// The host's API root, e.g. `https://api.github.com`; the token goes only to its origin.
    pub api_url: &'a str,
    /// `owner/name`.
    pub repo: &'a str,
    /// The full commit SHA.
    pub commit: &'a str,
    pub token: Option<&'a str>,
}

/// What a checkout put into the workspace; its `Display` is the init log's line.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedOut {
    pub repo: String,
    pub commit: String,
    /// Regular files and links.
    pub files: u64,
    /// Bytes of file contents.
    pub bytes: u64,
    pub seconds: f64,
}

impl std::fmt::Display for CheckedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short: String = self.commit.chars().take(7).collect();
        write!(
            f,
            "checked out {} at {short} ({} files, {} bytes, {:.2} s)",
            self.repo, self.files, self.bytes, self.seconds
        )
    }
}

/// Why a checkout failed; fails the stage with this message. URLs are shown without their
/// query (a redirect's query may carry a short-lived token); the repository's token is
/// never part of a message.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("cannot check out: {0}")]
    Invalid(String),
    #[error("GET {url}: {message}")]
    Request { url: String, message: String },
    #[error("GET {url} answered {status}")]
    Status { url: String, status: reqwest::StatusCode },
    #[error("GET {url} answered {status} without a usable Location")]
    BadRedirect { url: String, status: reqwest::StatusCode },
    #[error("GET {url}: more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects { url: String },
    /// The archive tried to reach outside the workspace.
    #[error("refused: {0}")]
    Refused(String),
    /// The archive is not the shape of a commit tarball.
    #[error("not a commit tarball: {0}")]
    Layout(String),
    #[error("reading the archive: {0}")]
    Archive(#[source] io::Error),
    #[error("{what} {path}: {source}", path = path.display())]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("the unpacking task failed: {0}")]
    Task(String),
}

/// The URL of a commit's gzip'd tarball on its host (GitHub's `tarball` endpoint; Gitea's
/// and Forgejo's `archive/{ref}.tar.gz`).
pub fn tarball_url(provider: Provider, api_url: &str, repo: &str, commit: &str) -> String {
    let api_url = api_url.trim_end_matches('/');
    match provider {
        Provider::Github => format!("{api_url}/repos/{repo}/tarball/{commit}"),
        Provider::Gitea => format!("{api_url}/repos/{repo}/archive/{commit}.tar.gz"),
    }
}

/// The HTTP client for checkouts: redirects are followed by [`checkout`] itself (so the
/// token stays on the API's origin); no overall timeout (a big repository takes a while),
/// but a stalled connection fails.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        // Only fails when the TLS backend cannot start: nothing a caller could handle.
        .expect("the HTTP client's TLS backend starts")
}

/// Downloads the commit's tarball into `scratch` (outside `dest`; removed afterwards) and
/// unpacks it into `dest`, the existing, empty workspace, owned by `owner` when given.
pub async fn checkout(
    client: &reqwest::Client,
    src: &CheckoutSource<'_>,
    dest: &Path,
    scratch: &Path,
    owner: Option<(u32, u32)>,
) -> Result<CheckedOut, CheckoutError> {
    let started = Instant::now();
    validate(src)?;
    let archive = scratch.join(format!("kiln-checkout-{}.tar.gz", uuid::Uuid::new_v4()));
    let _remove = RemoveOnDrop(archive.clone());
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&archive)
        .await
        .map_err(|e| CheckoutError::Io { what: "creating", path: archive.clone(), source: e })?;
    download(client, src, &mut file, &archive).await?;
    drop(file);

    let (path, dest_dir) = (archive.clone(), dest.to_path_buf());
    let (files, bytes) = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| CheckoutError::Io {
            what: "opening",
            path: path.clone(),
            source: e,
        })?;
        unpack(io::BufReader::new(file), &dest_dir, owner)
    })
    .await
    .map_err(|e| CheckoutError::Task(e.to_string()))??;
    Ok(CheckedOut {
        repo: src.repo.to_string(),
        commit: src.commit.to_string(),
        files,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The repository and commit go into the URL's path: nothing there may change which
/// endpoint is called.
fn validate(src: &CheckoutSource<'_>) -> Result<(), CheckoutError> {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match src.repo.split_once('/') {
        Some((owner, name)) if name_ok(owner) && name_ok(name) => {}
        _ => return Err(CheckoutError::Invalid(format!("the repository `{}` is not owner/name", src.repo))),
    }
    if !(4..=64).contains(&src.commit.len()) || !src.commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CheckoutError::Invalid(format!("`{}` is not a commit id", src.commit)));
    }
    Ok(())
}

/// GETs the tarball into `file`, following redirects by hand: the `Authorization` header
/// goes only to the API's origin (scheme, host, port), never to the host a redirect
/// leads to (GitHub's codeload, a storage bucket, ...).
async fn download(
    client: &reqwest::Client,
    src: &CheckoutSource<'_>,
    file: &mut tokio::fs::File,
    path: &Path,
) -> Result<u64, CheckoutError> {
    let bad_api = |e| CheckoutError::Invalid(format!("the API URL `{}`: {e}", src.api_url));
    let api = Url::parse(src.api_url).map_err(bad_api)?;
    let mut url =
        Url::parse(&tarball_url(src.provider, src.api_url, src.repo, src.commit)).map_err(bad_api)?;
    for _ in 0..=MAX_REDIRECTS {
        let mut request = client.get(url.clone());
        if let Some(token) = src.token
            && url.origin() == api.origin()
        {
            request = request.header(AUTHORIZATION, src.provider.authorization(token));
        }
        let mut response = request.send().await.map_err(|e| request_error(&url, e))?;
        let status = response.status();
        if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
            // Relative Locations are resolved against the URL that answered.
            url = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| CheckoutError::BadRedirect { url: shown(&url), status })?;
            continue;
        }
        if !status.is_success() {
            return Err(CheckoutError::Status { url: shown(&url), status });
        }
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| request_error(&url, e))? {
            file.write_all(&chunk).await.map_err(|e| CheckoutError::Io {
                what: "writing",
                path: path.to_path_buf(),
                source: e,
            })?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(|e| CheckoutError::Io {
            what: "writing",
            path: path.to_path_buf(),
            source: e,
        })?;
        return Ok(written);
    }
    Err(CheckoutError::TooManyRedirects { url: shown(&url) })
}

/// A URL as messages show it: without credentials, query or fragment.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

fn request_error(url: &Url, e: reqwest::Error) -> CheckoutError {
    CheckoutError::Request { url: shown(url), message: super::error_chain(e) }
}

/// The downloaded archive is removed however the checkout ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    const SHA: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f80912a3b4c5";

    /// A request as the fake host saw it: path and headers (names lowercased).
    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        headers: Vec<(String, String)>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        }
    }

    type Log = Arc<Mutex<Vec<Seen>>>;

    /// A minimal HTTP/1.1 server on its own port (so its own origin) answering each
    /// request with `respond(path)`: (status line, extra headers, body).
    fn serve(
        respond: impl Fn(&str) -> (&'static str, Vec<String>, Vec<u8>) + Send + 'static,
    ) -> (String, Log) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log: Log = Arc::default();
        let seen = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((n, v)) = h.trim_end().split_once(':') {
                        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                seen.lock().unwrap().push(Seen { path: path.clone(), headers });
                let (status, extra, body) = respond(&path);
                let mut head =
                    format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
                for h in extra {
                    head.push_str(&h);
                    head.push_str("\r\n");
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        (base, log)
    }

    fn tarball() -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        b.append_data(&mut dir, "acme-web-1a2b3c4/", io::empty()).unwrap();
        for (name, data) in
            [("acme-web-1a2b3c4/.kiln.yml", &b"steps: []\n"[..]), ("acme-web-1a2b3c4/src/lib.rs", b"//\n")]
        {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn source<'a>(api_url: &'a str, commit: &'a str) -> CheckoutSource<'a> {
        CheckoutSource {
            provider: Provider::Github,
            api_url,
            repo: "acme/web",
            commit,
            token: Some("s3cret-token"),
        }
    }

    #[test]
    fn tarball_urls_follow_each_hosts_api() {
        assert_eq!(
            tarball_url(Provider::Github, "https://api.github.com/", "acme/web", SHA),
            format!("https://api.github.com/repos/acme/web/tarball/{SHA}")
        );
        assert_eq!(
            tarball_url(Provider::Gitea, "https://git.example.com/api/v1", "acme/web", SHA),
            format!("https://git.example.com/api/v1/repos/acme/web/archive/{SHA}.tar.gz")
        );
    }

    #[tokio::test]
    async fn the_token_goes_to_the_api_but_not_to_the_host_it_redirects_to() {
        let (codeload, codeload_log) = serve(|path| {
            if path.starts_with("/acme/web/legacy.tar.gz/") {
                ("200 OK", vec!["Content-Type: application/x-gzip".into()], tarball())
            } else {
                ("404 Not Found", vec![], b"no".to_vec())
            }
        });
        let target = format!("{codeload}/acme/web/legacy.tar.gz/{SHA}?token=short-lived");
        let (api, api_log) = serve(move |path| {
            if path == format!("/repos/acme/web/tarball/{SHA}") {
                // Relative first: still the API's origin, so the token goes along.
                ("302 Found", vec![format!("Location: /moved/{SHA}")], vec![])
            } else if path.starts_with("/moved/") {
                ("302 Found", vec![format!("Location: {target}")], vec![])
            } else {
                ("404 Not Found", vec![], br#"{"message":"Not Found"}"#.to_vec())
            }
        });
        let ws = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let done = checkout(&client(), &source(&api, SHA), ws.path(), scratch.path(), None).await.unwrap();

        assert_eq!((done.files, done.bytes), (2, 13));
        assert_eq!(std::fs::read(ws.path().join(".kiln.yml")).unwrap(), b"steps: []\n");
        assert_eq!(std::fs::read(ws.path().join("src/lib.rs")).unwrap(), b"//\n");
        let line = done.to_string();
        assert!(line.starts_with("checked out acme/web at 1a2b3c4 (2 files, 13 bytes, "), "{line}");
        assert!(line.ends_with(" s)"), "{line}");
        // The downloaded archive is gone.
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);

        let api_seen = api_log.lock().unwrap().clone();
        let paths: Vec<_> = api_seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, [format!("/repos/acme/web/tarball/{SHA}"), format!("/moved/{SHA}")]);
        for seen in &api_seen {
            assert_eq!(seen.header("authorization"), Some("Bearer s3cret-token"), "{seen:?}");
            assert_eq!(seen.header("user-agent"), Some(USER_AGENT));
        }
        let codeload_seen = codeload_log.lock().unwrap().clone();
        assert_eq!(codeload_seen.len(), 1, "{codeload_seen:?}");
        assert_eq!(codeload_seen[0].path, format!("/acme/web/legacy.tar.gz/{SHA}?token=short-lived"));
        assert_eq!(codeload_seen[0].header("authorization"), None, "{codeload_seen:?}");
    }

    #[tokio::test]
    async fn gitea_archives_are_fetched_with_its_token_scheme() {
        let (api, log) = serve(|path| {
            if path == format!("/api/v1/repos/acme/web/archive/{SHA}.tar.gz") {
                ("200 OK", vec![], tarball())
            } else {
                ("404 Not Found", vec![], vec![])
            }
        });
        let api_url = format!("{api}/api/v1");
        let src = CheckoutSource { provider: Provider::Gitea, ..source(&api_url, SHA) };
        let ws = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let done = checkout(&client(), &src, ws.path(), scratch.path(), None).await.unwrap();
        assert_eq!(done.files, 2);
        assert_eq!(log.lock().unwrap()[0].header("authorization"), Some("token s3cret-token"));
    }

    #[tokio::test]
    async fn failures_name_the_status_and_url_but_never_a_token() {
        let (codeload, _) = serve(|_| ("404 Not Found", vec![], b"gone".to_vec()));
        let (api, _) = serve(move |path| {
            if path.contains("/tarball/0000000") {
                ("302 Found", vec![format!("Location: {codeload}/x.tar.gz?token=short-lived")], vec![])
            } else if path.contains("/tarball/1111111") {
                ("302 Found", vec![format!("Location: {path}")], vec![])
            } else {
                ("404 Not Found", vec![], br#"{"message":"Not Found"}"#.to_vec())
            }
        });
        let ws = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();

        let err = checkout(&client(), &source(&api, SHA), ws.path(), scratch.path(), None).await.unwrap_err();
        let msg = err.to_string();
        assert_eq!(msg, format!("GET {api}/repos/acme/web/tarball/{SHA} answered 404 Not Found"));

        let zeros = "0000000000000000000000000000000000000000";
        let err =
            checkout(&client(), &source(&api, zeros), ws.path(), scratch.path(), None).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("answered 404 Not Found") && msg.contains("/x.tar.gz"), "{msg}");
        assert!(!msg.contains("short-lived") && !msg.contains("s3cret"), "{msg}");

        let ones = "1111111111111111111111111111111111111111";
        let err =
            checkout(&client(), &source(&api, ones), ws.path(), scratch.path(), None).await.unwrap_err();
        assert!(matches!(err, CheckoutError::TooManyRedirects { .. }), "{err:?}");

        // Nothing listening: the cause is in the message.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let err =
            checkout(&client(), &source(&gone, SHA), ws.path(), scratch.path(), None).await.unwrap_err();
        assert!(matches!(err, CheckoutError::Request { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("GET {gone}/repos/acme/web/tarball/{SHA}: ")), "{err}");

        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(ws.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_repository_or_commit_that_would_change_the_url_is_refused() {
        let ws = tempfile::tempdir().unwrap();
        for (repo, commit) in
            [("acme/../x", SHA), ("acme", SHA), ("acme/web", "main?x=1"), ("acme/web", "../../x")]
        {
            let src = CheckoutSource { repo, commit, ..source("http://127.0.0.1:9", SHA) };
            let err = checkout(&client(), &src, ws.path(), ws.path(), None).await.unwrap_err();
            assert!(matches!(err, CheckoutError::Invalid(_)), "{repo} {commit}: {err:?}");
        }
    }
}
