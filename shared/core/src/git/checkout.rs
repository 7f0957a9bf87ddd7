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

/// reqwest's own message is terse ("error sending request"); the cause chain says why.
fn request_error(url: &Url, e: reqwest::Error) -> CheckoutError {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    CheckoutError::Request { url: shown(url), message }
}

/// The downloaded archive is removed however the checkout ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
