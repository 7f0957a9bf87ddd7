//! Checking a CloudEvent sent over HTTP before it reaches the fan-in.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::views::ErrorDetail;
use kiln_domain::BuildId;
use kiln_domain::event::{CloudEvent, SPEC_VERSION, now_rfc3339};
use serde_json::Value;

/// The largest event accepted from outside.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Parses and validates an event for `build`. Every problem found is listed.
pub fn validate(body: &[u8], build: &BuildId, caller: &Caller) -> Result<CloudEvent, ApiError> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(ApiError::bad_request(format!(
            "event is {} bytes, more than the limit of {MAX_EVENT_BYTES} bytes",
            body.len()
        )));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("event is not valid JSON: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err(ApiError::bad_request("an event must be a JSON object (CloudEvents 1.0, JSON format)"));
    };
    let mut problems = Vec::new();
    for attr in ["id", "source", "type", "specversion"] {
        match obj.get(attr) {
            None => problems.push(format!("missing required attribute \"{attr}\"")),
            Some(Value::String(s)) if s.trim().is_empty() => problems.push(format!("\"{attr}\" is empty")),
            Some(Value::String(_)) => {}
            Some(_) => problems.push(format!("\"{attr}\" must be a string")),
        }
    }
    if let Some(Value::String(sv)) = obj.get("specversion")
        && sv != SPEC_VERSION
    {
        problems.push(format!("unsupported specversion \"{sv}\" (supported: \"1.0\")"));
    }
    if let Some(ct) = obj.get("datacontenttype")
        && ct.as_str().is_none_or(|ct| !ct.starts_with("application/json"))
    {
        problems.push("\"datacontenttype\" must be application/json: event data is JSON".to_string());
    }
    match obj.get("data") {
        None | Some(Value::Object(_)) | Some(Value::Null) => {}
        Some(_) => {
            problems.push("\"data\" must be a JSON object (its fields reach steps as variables)".into())
        }
    }
    if obj.contains_key("data_base64") {
        problems.push("\"data_base64\" is not supported: send JSON \"data\"".to_string());
    }
    if let Some(b) = obj.get("kilnbuild")
        && b.as_str() != Some(build.as_str())
    {
        problems.push(format!("\"kilnbuild\" is {b}, but the event was sent to build {build}"));
    }
    if let Some(Value::String(ty)) = obj.get("type")
        && ty.starts_with(kiln_domain::event::RESERVED_PREFIX)
        && !matches!(caller, Caller::Runner(_))
    {
        problems.push(format!("type \"{ty}\" is reserved for Kiln itself"));
    }
    if !problems.is_empty() {
        return Err(ApiError::BadRequest {
            message: format!("invalid event: {}", problems.join("; ")),
            details: problems.into_iter().map(ErrorDetail::Problem).collect(),
        });
    }
    let mut event: CloudEvent =
        serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("invalid event: {e}")))?;
    event.kilnbuild = Some(build.clone());
    if event.time.is_none() {
        event.time = Some(now_rfc3339());
    }
    if event.data.is_null() {
        event.data = Value::Object(Default::default());
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str) -> Result<CloudEvent, String> {
        validate(body.as_bytes(), &BuildId::new("b1"), &Caller::Admin).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_a_minimal_event() {
        let e =
            check(r#"{"specversion":"1.0","id":"1","source":"me","type":"coin","data":{"content":"heads"}}"#)
                .unwrap();
        assert_eq!(e.kilnbuild, Some(BuildId::new("b1")));
        assert_eq!(e.data_str("content"), Some("heads"));
    }

    #[test]
    fn says_what_is_wrong() {
        let err = check(r#"{"specversion":"1.0","source":"me","type":"coin"}"#).unwrap_err();
        assert!(err.contains("missing required attribute \"id\""), "{err}");
        let err = check(r#"{"specversion":"1.0","id":"1","type":"coin"}"#).unwrap_err();
        assert!(err.contains("\"source\""), "{err}");
        assert!(check("not json").unwrap_err().contains("not valid JSON"));
        let big = format!(
            r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","data":{{"x":"{}"}}}}"#,
            "a".repeat(70_000)
        );
        assert!(check(&big).unwrap_err().contains("limit"));
        let err =
            check(r#"{"specversion":"1.0","id":"1","source":"s","type":"dev.kiln.report.stage-started"}"#)
                .unwrap_err();
        assert!(err.contains("reserved"), "{err}");
        let err =
            check(r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":"text"}"#).unwrap_err();
        assert!(err.contains("\"data\" must be a JSON object"), "{err}");
    }
}
