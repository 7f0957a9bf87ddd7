//! The step output protocol: `::kiln::` lines a step prints, parsed by the runner.
//!
//! ```text
//! ::kiln::event TYPE {json data}
//! ::kiln::progress IMAGE PROVIDER PERCENT [building|pushing]
//! ::kiln::result IMAGE PROVIDER ok [URI]
//! ::kiln::result IMAGE PROVIDER error MESSAGE...
//! ::kiln::mask VALUE
//! ```
//! A line that does not start with `::kiln::` is plain output. Every line, directive or
//! not, stays in the log; [`Masker`] replaces secrets declared with `mask` by `***`.

use crate::event::RESERVED_PREFIX;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// What every directive line starts with.
pub const PREFIX: &[u8] = b"::kiln::";
/// What a masked secret is replaced by.
pub const MASK: &[u8] = b"***";
/// Longest accepted event type.
pub const MAX_TYPE_LEN: usize = 128;

/// One parsed directive.
#[derive(Debug, Clone, PartialEq)]
pub enum Directive {
    /// Emit a CloudEvent of this type for the build; `data` is always a JSON object.
    Event {
        ty: String,
        data: Value,
    },
    Progress {
        image: String,
        provider: String,
        percent: u8,
        phase: Phase,
    },
    Result {
        image: String,
        provider: String,
        outcome: ImageOutcome,
    },
    /// From now on, this value is replaced by `***` in stored logs.
    Mask(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Building,
    Pushing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Building => "building",
            Phase::Pushing => "pushing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageOutcome {
    Ok { uri: Option<String> },
    Error { message: String },
}

/// A line that starts with `::kiln::` but is not a valid directive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

/// Whether a line (or the start of one) is, or may still become, a directive.
pub fn may_be_directive(start: &[u8]) -> bool {
    start.starts_with(PREFIX) || PREFIX.starts_with(start)
}

/// Parses one line a step printed (without its newline; a trailing `\r` is ignored).
/// `None`: not a directive. `Some(Err)`: a malformed directive.
pub fn parse_line(line: &[u8]) -> Option<Result<Directive, ProtocolError>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(PREFIX)?;
    Some(match std::str::from_utf8(rest) {
        Ok(rest) => parse_directive(rest),
        Err(_) => err("directive is not valid UTF-8"),
    })
}

/// Splits off the first whitespace-separated token: `(token, rest)`, rest not trimmed.
fn token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    Some(s.split_once(char::is_whitespace).unwrap_or((s, "")))
}

fn parse_directive(rest: &str) -> Result<Directive, ProtocolError> {
    let Some((name, args)) = token(rest) else {
        return err("missing directive name after ::kiln:: (expected event, progress, result or mask)");
    };
    if rest.starts_with(char::is_whitespace) {
        return err("no space allowed between ::kiln:: and the directive name");
    }
    match name {
        "event" => parse_event(args),
        "progress" => parse_progress(args),
        "result" => parse_result(args),
        "mask" => {
            let value = args.trim();
            if value.is_empty() {
                err("mask: missing the value to mask")
            } else {
                Ok(Directive::Mask(value.into()))
            }
        }
        other => err(format!("unknown directive `{other}` (expected event, progress, result or mask)")),
    }
}

fn valid_type(ty: &str) -> bool {
    !ty.is_empty()
        && ty.len() <= MAX_TYPE_LEN
        && ty.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn parse_event(args: &str) -> Result<Directive, ProtocolError> {
    let Some((ty, json)) = token(args) else {
        return err("event: missing the event type (usage: ::kiln::event TYPE {json})");
    };
    if !valid_type(ty) {
        return err(format!(
            "event: invalid type `{ty}` (letters, digits, `.`, `_`, `-`; at most {MAX_TYPE_LEN})"
        ));
    }
    if ty.starts_with(RESERVED_PREFIX) {
        return err(format!("event: type `{ty}` is reserved for Kiln ({RESERVED_PREFIX}*)"));
    }
    let json = json.trim();
    let data = if json.is_empty() {
        Value::Object(Map::new())
    } else {
        match serde_json::from_str::<Value>(json) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return err("event: data must be a JSON object"),
            Err(e) => return err(format!("event: invalid JSON data: {e}")),
        }
    };
    Ok(Directive::Event { ty: ty.into(), data })
}

fn image_provider<'a>(
    args: &'a str,
    what: &str,
    usage: &str,
) -> Result<(&'a str, &'a str, &'a str), ProtocolError> {
    let Some((image, rest)) = token(args) else { return err(format!("{what}: missing IMAGE ({usage})")) };
    let Some((provider, rest)) = token(rest) else {
        return err(format!("{what}: missing PROVIDER ({usage})"));
    };
    Ok((image, provider, rest))
}

fn parse_progress(args: &str) -> Result<Directive, ProtocolError> {
    const USAGE: &str = "usage: ::kiln::progress IMAGE PROVIDER PERCENT [building|pushing]";
    let (image, provider, rest) = image_provider(args, "progress", USAGE)?;
    let Some((pct, rest)) = token(rest) else { return err(format!("progress: missing PERCENT ({USAGE})")) };
    let percent = match pct.strip_suffix('%').unwrap_or(pct).parse::<u8>() {
        Ok(p) if p <= 100 => p,
        _ => return err(format!("progress: percent `{pct}` is not a whole number from 0 to 100")),
    };
    let (phase, rest) = match token(rest) {
        None => (Phase::Building, ""),
        Some(("building", rest)) => (Phase::Building, rest),
        Some(("pushing", rest)) => (Phase::Pushing, rest),
        Some((other, _)) => return err(format!("progress: unknown phase `{other}` (building or pushing)")),
    };
    if !rest.trim().is_empty() {
        return err(format!("progress: unexpected `{}` ({USAGE})", rest.trim()));
    }
    Ok(Directive::Progress { image: image.into(), provider: provider.into(), percent, phase })
}

fn parse_result(args: &str) -> Result<Directive, ProtocolError> {
    const USAGE: &str = "usage: ::kiln::result IMAGE PROVIDER ok [URI] | error MESSAGE";
    let (image, provider, rest) = image_provider(args, "result", USAGE)?;
    let outcome = match token(rest) {
        Some(("ok", rest)) => match token(rest) {
            None => ImageOutcome::Ok { uri: None },
            Some((uri, more)) if more.trim().is_empty() => ImageOutcome::Ok { uri: Some(uri.into()) },
            Some(_) => return err("result: `ok` takes at most one URI"),
        },
        Some(("error", rest)) => {
            let message = rest.trim();
            if message.is_empty() {
                return err("result: `error` needs a message");
            }
            ImageOutcome::Error { message: message.into() }
        }
        Some((other, _)) => return err(format!("result: expected ok or error, found `{other}` ({USAGE})")),
        None => return err(format!("result: missing ok or error ({USAGE})")),
    };
    Ok(Directive::Result { image: image.into(), provider: provider.into(), outcome })
}

/// Replaces secrets by `***` in raw bytes (any bytes, not only UTF-8). At each position
/// the longest matching secret wins.
#[derive(Debug, Clone)]
pub struct Masker {
    /// Longest first.
    secrets: Vec<Vec<u8>>,
    /// Whether some secret starts with this byte.
    first: [bool; 256],
}

impl Default for Masker {
    fn default() -> Self {
        Self { secrets: Vec::new(), first: [false; 256] }
    }
}

impl Masker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a secret; false if it is empty or already known.
    pub fn add(&mut self, secret: impl AsRef<[u8]>) -> bool {
        let secret = secret.as_ref();
        if secret.is_empty() || self.secrets.iter().any(|s| s == secret) {
            return false;
        }
        self.first[secret[0] as usize] = true;
        let at = self.secrets.partition_point(|s| s.len() >= secret.len());
        self.secrets.insert(at, secret.to_vec());
        true
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// The longest secret that starts at `bytes[0]`.
    fn match_len(&self, bytes: &[u8]) -> Option<usize> {
        self.secrets.iter().find(|s| bytes.starts_with(s)).map(Vec::len)
    }

    /// `bytes` with every secret replaced by `***` (borrowed when nothing matched).
    pub fn mask<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if self.secrets.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let mut out: Option<Vec<u8>> = None;
        let (mut i, mut copied) = (0, 0);
        while i < bytes.len() {
            if self.first[bytes[i] as usize]
                && let Some(n) = self.match_len(&bytes[i..])
            {
                let o = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
                o.extend_from_slice(&bytes[copied..i]);
                o.extend_from_slice(MASK);
                i += n;
                copied = i;
                continue;
            }
            i += 1;
        }
        match out {
            None => Cow::Borrowed(bytes),
            Some(mut o) => {
                o.extend_from_slice(&bytes[copied..]);
                Cow::Owned(o)
            }
        }
    }

    /// How many bytes at the end of `bytes` could be the start of a secret that more bytes
    /// would complete: a writer cutting a line in two keeps these back so that no secret
    /// is split across two batches unmasked.
    ///
    /// Found by scanning as [`Masker::mask`] does, from the first position whose outcome
    /// more bytes could change: a secret there not yet whole, or a longer one than matches
    /// now. Looking only at the tail is not enough: with a secret that overlaps itself
    /// (`000` in `0000|00`), masking the first part consumes bytes the tail would need, and
    /// the secret ends up whole across the cut (found by fuzzing: fuzz/, target protocol).
    pub fn pending_suffix_len(&self, bytes: &[u8]) -> usize {
        let len = bytes.len();
        let mut i = 0;
        while i < len {
            if self.first[bytes[i] as usize] {
                let rest = &bytes[i..];
                if self.secrets.iter().any(|s| s.len() > rest.len() && s.starts_with(rest)) {
                    return len - i;
                }
                if let Some(n) = self.match_len(rest) {
                    i += n;
                    continue;
                }
            }
            i += 1;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(line: &str) -> Directive {
        parse_line(line.as_bytes()).expect("a directive").expect("valid")
    }

    fn bad(line: &str) -> String {
        parse_line(line.as_bytes()).expect("a directive").expect_err("malformed").0
    }

    #[test]
    fn plain_lines_are_not_directives() {
        for l in ["hello", "", " ::kiln::mask x", "::kiln:", "::KILN::mask x", ":: kiln::event a"] {
            assert!(parse_line(l.as_bytes()).is_none(), "{l}");
        }
        assert!(parse_line(b"\xff\xfe").is_none());
    }

    #[test]
    fn events() {
        assert_eq!(
            ok(r#"::kiln::event coin {"content":"heads","n":1}"#),
            Directive::Event { ty: "coin".into(), data: json!({"content": "heads", "n": 1}) }
        );
        assert_eq!(
            ok("::kiln::event com.example.deploy-done_1\r"),
            Directive::Event { ty: "com.example.deploy-done_1".into(), data: json!({}) }
        );
        assert_eq!(ok("::kiln::event  t   {}  "), Directive::Event { ty: "t".into(), data: json!({}) });
        assert!(bad("::kiln::event").contains("missing the event type"));
        assert!(bad("::kiln::event a/b {}").contains("invalid type"));
        assert!(bad("::kiln::event t [1]").contains("JSON object"));
        assert!(bad("::kiln::event t {nope").contains("invalid JSON"));
        assert!(bad("::kiln::event dev.kiln.report.step-finished {}").contains("reserved"));
    }

    #[test]
    fn progress() {
        assert_eq!(
            ok("::kiln::progress base-os aws 42"),
            Directive::Progress {
                image: "base-os".into(),
                provider: "aws".into(),
                percent: 42,
                phase: Phase::Building
            }
        );
        assert_eq!(
            ok("::kiln::progress base-os gcp 100% pushing"),
            Directive::Progress {
                image: "base-os".into(),
                provider: "gcp".into(),
                percent: 100,
                phase: Phase::Pushing
            }
        );
        assert!(bad("::kiln::progress a b 101").contains("0 to 100"));
        assert!(bad("::kiln::progress a b -1").contains("0 to 100"));
        assert!(bad("::kiln::progress a b 5 cooking").contains("unknown phase"));
        assert!(bad("::kiln::progress a b 5 pushing extra").contains("unexpected"));
        assert!(bad("::kiln::progress a b").contains("missing PERCENT"));
        assert!(bad("::kiln::progress a").contains("missing PROVIDER"));
    }

    #[test]
    fn results() {
        assert_eq!(
            ok("::kiln::result base-os aws ok ami-123"),
            Directive::Result {
                image: "base-os".into(),
                provider: "aws".into(),
                outcome: ImageOutcome::Ok { uri: Some("ami-123".into()) }
            }
        );
        assert_eq!(
            ok("::kiln::result i p ok"),
            Directive::Result {
                image: "i".into(),
                provider: "p".into(),
                outcome: ImageOutcome::Ok { uri: None }
            }
        );
        assert_eq!(
            ok("::kiln::result i p error quota exceeded:  try later "),
            Directive::Result {
                image: "i".into(),
                provider: "p".into(),
                outcome: ImageOutcome::Error { message: "quota exceeded:  try later".into() }
            }
        );
        assert!(bad("::kiln::result i p error").contains("needs a message"));
        assert!(bad("::kiln::result i p ok a b").contains("at most one URI"));
        assert!(bad("::kiln::result i p maybe").contains("expected ok or error"));
        assert!(bad("::kiln::result i p").contains("missing ok or error"));
    }

    #[test]
    fn mask_and_unknown() {
        assert_eq!(ok("::kiln::mask  s3cr3t value \r"), Directive::Mask("s3cr3t value".into()));
        assert!(bad("::kiln::mask   ").contains("missing the value"));
        assert!(bad("::kiln::").contains("missing directive name"));
        assert!(bad("::kiln:: mask x").contains("no space"));
        assert!(bad("::kiln::eventx t").contains("unknown directive `eventx`"));
        assert!(parse_line(b"::kiln::mask \xff").unwrap().unwrap_err().0.contains("UTF-8"));
    }

    #[test]
    fn may_be_directive_prefixes() {
        assert!(may_be_directive(b""));
        assert!(may_be_directive(b"::ki"));
        assert!(may_be_directive(b"::kiln::result"));
        assert!(!may_be_directive(b"::x"));
        assert!(!may_be_directive(b"hello"));
    }

    #[test]
    fn masker_masks_bytes() {
        let mut m = Masker::new();
        assert!(matches!(m.mask(b"abc"), Cow::Borrowed(_)));
        assert!(m.add("s3cr3t"));
        assert!(!m.add("s3cr3t"));
        assert!(!m.add(""));
        assert!(m.add("s3cr3tlonger"));
        assert!(m.add(b"\xff\xfe"));
        assert_eq!(m.len(), 3);
        assert_eq!(&*m.mask(b"token=s3cr3t;s3cr3tlonger!"), b"token=***;***!");
        assert_eq!(&*m.mask(b"\x00\xff\xfe\xff"), b"\x00***\xff");
        assert_eq!(&*m.mask(b"s3cr3ts3cr3t"), b"******");
        assert!(matches!(m.mask(b"nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn masker_pending_suffix() {
        let mut m = Masker::new();
        assert_eq!(m.pending_suffix_len(b"abc"), 0);
        m.add("secret");
        assert_eq!(m.pending_suffix_len(b"my sec"), 3);
        assert_eq!(m.pending_suffix_len(b"my secret"), 0);
        assert_eq!(m.pending_suffix_len(b"my s"), 1);
        assert_eq!(m.pending_suffix_len(b"secre"), 5);
        assert_eq!(m.pending_suffix_len(b"xyz"), 0);
    }

    /// Found by fuzzing (fuzz/artifacts/protocol/crash-8aaa…): a secret that overlaps itself,
    /// cut after masking had consumed part of what the tail looked at.
    #[test]
    fn a_self_overlapping_secret_is_not_left_whole_across_a_cut() {
        let mut m = Masker::new();
        for s in [&b"\0\0\0"[..], b"\0.\0\0\0\xfb", b":2:jjjjjj"] {
            m.add(s);
        }
        let out = b"\x02\0\0\0\0\0\0\xff\xff\xff\xff\0\0\0s";
        let whole = m.mask(out).into_owned();
        for mid in 0..=out.len() {
            let cut = mid - m.pending_suffix_len(&out[..mid]);
            let mut joined = m.mask(&out[..cut]).into_owned();
            joined.extend_from_slice(&m.mask(&out[cut..]));
            assert_eq!(joined, whole, "cut at {cut} (asked {mid})");
        }
        let mut m = Masker::new();
        m.add("000");
        assert_eq!(m.pending_suffix_len(b"x0000"), 1, "0000: the first three are masked, one may start more");
        assert_eq!(m.pending_suffix_len(b"x00000"), 2);
        m.add("0001");
        assert_eq!(m.pending_suffix_len(b"x000"), 3, "a longer secret may still match");
    }
}
