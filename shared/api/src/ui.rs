//! The web UI: one HTML shell for every page (`/`, `/repos/{org}/{repo}`, `/builds/{id}`,
//! `/images`) and its two assets, compiled into the binary and served by the same router
//! as `/v1`. The pages need no token: the app asks for one and sends it to `/v1` itself.
//! These routes are not in [`crate::routes::ROUTES`]: they are not part of the API.

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const SHELL: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// The page paths that all answer with the shell.
pub const PAGES: &[&str] = &["/", "/repos/{org}/{repo}", "/builds/{id}", "/images"];

/// Only what the app needs: its own scripts and styles, and `/v1` on the same origin.
/// Logs are untrusted text; the app renders them as text nodes, and this keeps any slip
/// from running a script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// An asset with its content hash, which names its version in the shell (`?v=`) and is
/// its ETag.
struct Asset {
    body: &'static str,
    mime: &'static str,
    hash: String,
}

impl Asset {
    fn new(body: &'static str, mime: &'static str) -> Self {
        let hash = hex::encode(&Sha256::digest(body.as_bytes())[..8]);
        Asset { body, mime, hash }
    }
}

static JS: LazyLock<Asset> = LazyLock::new(|| Asset::new(APP_JS, "text/javascript; charset=utf-8"));
static CSS: LazyLock<Asset> = LazyLock::new(|| Asset::new(APP_CSS, "text/css; charset=utf-8"));
/// The shell with the assets' hashes in their URLs, so a new build's assets are never
/// taken from a cache.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    SHELL
        .replace("{{js}}", &format!("/ui/app.js?v={}", JS.hash))
        .replace("{{css}}", &format!("/ui/app.css?v={}", CSS.hash))
});

/// The router for the pages and assets (no state, no token).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new();
    for p in PAGES {
        r = r.route(p, get(page));
    }
    r.route("/ui/app.js", get(|q, h| asset(&JS, q, h))).route("/ui/app.css", get(|q, h| asset(&CSS, q, h)))
}

fn secure(h: &mut HeaderMap) {
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// The shell: never cached, as it names the current assets.
async fn page() -> Response {
    let mut resp = PAGE.as_str().to_owned().into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    secure(h);
    resp
}

#[derive(Deserialize)]
struct Version {
    v: Option<String>,
}

/// An asset: cached for a year when asked for by its current hash (the URL changes with
/// the content), else revalidated every time; 304 when the browser has it.
async fn asset(a: &Asset, Query(q): Query<Version>, headers: HeaderMap) -> Response {
    let etag = format!("\"{}\"", a.hash);
    let cache = if q.v.as_deref() == Some(a.hash.as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { a.body.into_response() };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    secure(h);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(etag: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(etag).unwrap());
        h
    }

    fn version(v: &str) -> Query<Version> {
        Query(Version { v: Some(v.into()) })
    }

    #[tokio::test]
    async fn the_shell_is_never_cached_and_names_the_current_assets() {
        let r = page().await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
        assert!(PAGE.contains(&format!("/ui/app.js?v={}", JS.hash)), "{}", *PAGE);
        assert!(PAGE.contains(&format!("/ui/app.css?v={}", CSS.hash)));
        assert!(!PAGE.contains("{{"), "a placeholder is left: {}", *PAGE);
    }

    #[tokio::test]
    async fn assets_are_cached_by_hash_and_revalidated_by_etag() {
        let current = asset(&JS, version(&JS.hash), HeaderMap::new()).await;
        assert_eq!(current.status(), 200);
        assert!(current.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"));
        let etag = current.headers()[header::ETAG].to_str().unwrap().to_string();
        let old = asset(&JS, version("0000"), HeaderMap::new()).await;
        assert_eq!(old.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(asset(&JS, Query(Version { v: None }), tagged(&etag)).await.status(), 304);
        assert_eq!(asset(&CSS, Query(Version { v: None }), tagged(&etag)).await.status(), 200, "its own tag");
    }
}
