//! YAML text → a small spanned tree: maps keep their key order and every node keeps its
//! 1-based line and column; scalars remember whether they were quoted, so the string "1"
//! and the number 1 stay distinct.
//!
//! Built from yaml-rust2's event parser with an explicit stack (no recursion, so deeply
//! nested input cannot overflow the stack), and nesting is capped at [`MAX_DEPTH`].
//!
//! Anchors are accepted (they are harmless on their own) but aliases (`*name`) are
//! rejected: resolving them would let a small file expand into a huge one, and an error
//! inside an aliased value would point somewhere the reader is not looking. Tags are
//! rejected too, except `!!str`, which simply makes a scalar a string.

use super::{CompileError, Pos};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting of lists and maps accepted; a pipeline needs about six.
pub(super) const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
    /// An alias (already reported as an error): validation skips it silently.
    Alias,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub key: Node,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Scalar {
    pub text: String,
    /// Quoted, block (`|`, `>`) or tagged `!!str`: a string whatever it looks like.
    pub quoted: bool,
}

/// What a scalar means under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str,
}

impl Scalar {
    pub fn value(&self) -> Value {
        if self.quoted {
            return Value::Str;
        }
        let t = self.text.as_str();
        match t {
            "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
            "true" | "True" | "TRUE" => return Value::Bool(true),
            "false" | "False" | "FALSE" => return Value::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
            "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
            _ => {}
        }
        let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
        if let Some(h) = t.strip_prefix("0x")
            && digits(h, 16)
        {
            return i128::from_str_radix(h, 16).map_or(Value::Str, Value::Int);
        }
        if let Some(o) = t.strip_prefix("0o")
            && digits(o, 8)
        {
            return i128::from_str_radix(o, 8).map_or(Value::Str, Value::Int);
        }
        let unsigned = t.strip_prefix(['-', '+']).unwrap_or(t);
        if digits(unsigned, 10) {
            return t.parse::<i128>().map_or(Value::Str, Value::Int);
        }
        if is_float(unsigned) {
            return t.parse::<f64>().map_or(Value::Str, Value::Float);
        }
        Value::Str
    }
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, sign already stripped.
fn is_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |x: &str| x.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = all_digits(int)
        && frac.is_none_or(all_digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}

impl Node {
    /// "a string", "a list", … for messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar(s) => match s.value() {
                Value::Null => "nothing",
                Value::Bool(_) => "a boolean",
                Value::Int(_) | Value::Float(_) => "a number",
                Value::Str => "a string",
            },
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
            Kind::Alias => "an alias",
        }
    }
}

fn pos(m: &Marker) -> Pos {
    Pos { line: m.line(), column: m.col() + 1 }
}

fn tag_error(tag: &Tag, at: Pos) -> Option<CompileError> {
    let name = if tag.handle == "tag:yaml.org,2002:" {
        if tag.suffix == "str" {
            return None;
        }
        format!("!!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    };
    Some(CompileError::at(at, format!("yaml tags are not supported (found \"{name}\")")))
}

/// The position of an empty sequence item's `-`, given the mark of its event: the start of
/// whatever follows, which may be the next item after its own `-`. Only looks locally
/// around the mark, so many empty items cost no more than one each.
fn dash_before(chars: &[char], mark: &Marker) -> Option<Pos> {
    let before = chars.get(..mark.index())?;
    let last_solid = |end: usize| before[..end].iter().rposition(|c| !c.is_whitespace());
    let mut dash = last_solid(before.len())?;
    if before[dash] == '-' && !before[dash..].contains(&'\n') {
        // The next item's own dash, on the same line as its content: look one further back.
        dash = last_solid(dash)?;
    }
    if before[dash] != '-' {
        return None;
    }
    let lines_between = before[dash..].iter().filter(|&&c| c == '\n').count();
    let line_start = before[..dash].iter().rposition(|&c| c == '\n').map_or(0, |i| i + 1);
    Some(Pos { line: mark.line().checked_sub(lines_between)?, column: dash - line_start + 1 })
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<Entry>, Option<Node>),
}

/// Parses `text` into its one document's root (None when there is no document).
/// `Err` holds the single fatal error (invalid YAML, or nesting too deep); otherwise the
/// non-fatal errors (aliases, tags, a second document) are pushed into `errors`.
pub(super) fn parse(text: &str, errors: &mut Vec<CompileError>) -> Result<Option<Node>, CompileError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    // The text as characters (marks count characters), only made if an empty item needs it.
    let mut chars: Option<Vec<char>> = None;
    loop {
        let (event, mark) = parser
            .next_token()
            .map_err(|e| CompileError::at(pos(e.marker()), format!("invalid yaml: {}", e.info())))?;
        let at = pos(&mark);
        let node = match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    errors.push(CompileError::at(
                        at,
                        "a pipeline is a single yaml document; remove the second one (after \"---\")",
                    ));
                    break;
                }
                continue;
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::Alias(_) => {
                errors.push(CompileError::at(
                    at,
                    "yaml aliases (\"*name\") are not supported; write the value out",
                ));
                Node { pos: at, kind: Kind::Alias }
            }
            Event::Scalar(text, style, _anchor, tag) => {
                let mut quoted = style != TScalarStyle::Plain;
                if let Some(tag) = tag {
                    match tag_error(&tag, at) {
                        Some(e) => errors.push(e),
                        None => quoted = true,
                    }
                }
                Node { pos: at, kind: Kind::Scalar(Scalar { text, quoted }) }
            }
            Event::SequenceStart(_, ref tag) | Event::MappingStart(_, ref tag) => {
                if let Some(e) = tag.as_ref().and_then(|t| tag_error(t, at)) {
                    errors.push(e);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(CompileError::at(
                        at,
                        format!("lists and maps are nested too deeply (more than {MAX_DEPTH} levels)"),
                    ));
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq(at, Vec::new())
                } else {
                    Frame::Map(at, Vec::new(), None)
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(p, items)) => Node { pos: p, kind: Kind::Seq(items) },
                Some(Frame::Map(p, entries, _)) => {
                    // A block mapping's start mark lands after its first key: the map
                    // starts at its first key then (a flow map's `{` comes first anyway).
                    let p = entries.first().map_or(p, |e| p.min(e.key.pos));
                    Node { pos: p, kind: Kind::Map(entries) }
                }
                None => continue,
            },
        };
        match stack.last_mut() {
            None => {
                if root.is_none() {
                    root = Some(node);
                }
            }
            Some(Frame::Seq(_, items)) => {
                let mut item = node;
                // An empty item (`-` and nothing) is marked at the next token too: point at
                // its dash.
                if let Kind::Scalar(s) = &item.kind
                    && !s.quoted
                    && s.text.is_empty()
                {
                    let chars = chars.get_or_insert_with(|| text.chars().collect());
                    item.pos = dash_before(chars, &mark).unwrap_or(item.pos);
                }
                items.push(item);
            }
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    let mut value = node;
                    // A missing value (`key:` and nothing) is marked at the next token:
                    // point at its key instead.
                    if let Kind::Scalar(s) = &value.kind
                        && !s.quoted
                        && s.text.is_empty()
                    {
                        value.pos = key.pos;
                    }
                    entries.push(Entry { key, value });
                }
            },
        }
    }
    Ok(root)
}
