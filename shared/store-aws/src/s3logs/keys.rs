//! A stream's keys, what a scan of them finds, and the S3 errors the store tells apart.

use crate::describe;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use kiln_store::LogError;

/// A stream's keys.
pub(super) struct Paths {
    /// `build/key`, for messages.
    pub(super) name: String,
    /// `logs/<build>/<key>/`.
    pub(super) prefix: String,
}

impl Paths {
    pub(super) fn chunk(&self, offset: u64) -> String {
        format!("{}chunks/{offset:020}", self.prefix)
    }
    pub(super) fn chunks(&self) -> String {
        format!("{}chunks/", self.prefix)
    }
    pub(super) fn log(&self) -> String {
        format!("{}log", self.prefix)
    }
    pub(super) fn complete(&self) -> String {
        format!("{}complete", self.prefix)
    }
    pub(super) fn open(&self) -> String {
        format!("{}open", self.prefix)
    }
    pub(super) fn batch(&self, id: &str) -> String {
        format!("{}batches/{}", self.prefix, escape(id, false))
    }
}

/// What a stream looks like in the bucket right now.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// (offset, length) of each chunk, contiguous from 0.
    pub(super) chunks: Vec<(u64, u64)>,
    pub(super) complete: bool,
    pub(super) log_size: Option<u64>,
    pub(super) open: bool,
}

impl Scan {
    pub(super) fn end(&self) -> u64 {
        self.chunks.last().map_or(0, |(o, l)| o + l)
    }

    /// The stream's length: the compacted object's once complete.
    pub(super) fn len(&self) -> u64 {
        if self.complete { self.log_size.unwrap_or(0) } else { self.end() }
    }

    pub(super) fn exists(&self) -> bool {
        self.complete || self.open || self.log_size.is_some() || !self.chunks.is_empty()
    }
}

/// Percent-escapes everything but unreserved characters (and `/` if `keep_slash`).
pub(super) fn escape(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Build ids become key segments: ASCII letters, digits, `-` and `_` only (UUIDs are).
pub(super) fn is_safe_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn backend(what: &str, key: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Backend(format!("s3 {what} {key}: {e}"))
}

pub(super) fn sdk<E, R>(what: &str, key: &str, e: &SdkError<E, R>) -> LogError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    backend(what, key, describe(e))
}

pub(super) fn status_of<E, R: HttpStatus>(e: &SdkError<E, R>) -> Option<u16> {
    e.raw_response().map(HttpStatus::status_code)
}

/// The HTTP status of a raw response (the SDK's response type, behind a trait so helpers
/// stay generic over the operation).
pub(super) trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Whether a conditional write lost: the key exists (412), another conditional write
/// on it is in flight (409), or (S3 Express append) the object is not at the offset.
pub(super) fn lost_race<E: ProvideErrorMetadata, R: HttpStatus>(e: &SdkError<E, R>) -> bool {
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or_default();
    matches!(status_of(e), Some(412 | 409))
        || code == "PreconditionFailed"
        || code == "ConditionalRequestConflict"
        || code.contains("WriteOffset")
}

pub(super) fn not_found<E: ProvideErrorMetadata, R: HttpStatus>(e: &SdkError<E, R>) -> bool {
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or_default();
    status_of(e) == Some(404) || code == "NoSuchKey" || code == "NotFound"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape("runner-a:1", false), "runner-a%3A1");
        assert_eq!(escape("id with spaces\nand a newline", false), "id%20with%20spaces%0Aand%20a%20newline");
        assert_eq!(
            escape("logs/b/step/0001/t#2/unit/1/chunks/00", true),
            "logs/b/step/0001/t%232/unit/1/chunks/00"
        );
    }

    #[test]
    fn chunk_keys_sort_by_offset() {
        let p = Paths { name: "b/init".into(), prefix: "logs/b/init/".into() };
        assert!(p.chunk(9) < p.chunk(10));
        assert!(p.chunks() < p.chunk(0));
        // `complete`, `log` and `open` sort after every chunk, `batches/` before.
        assert!(p.chunk(u64::MAX) < p.complete());
        assert!(p.complete() < p.log() && p.log() < p.open());
        assert!(p.batch("zzz") < p.chunks());
    }
}
