//! Events as the API shows and takes them: CloudEvents 1.0 (JSON format), a build's
//! history by cursor, and the answer to a sent event.

use super::schema;
use kiln_domain::BuildId;
use kiln_domain::event::{CloudEvent, StoredEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A CloudEvent in the JSON event format, with Kiln's `kilnbuild` extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = CloudEvent)]
pub struct CloudEventView {
    /// `1.0`.
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// RFC 3339; set on arrival when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `application/json` when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// The build: set on arrival from the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub kilnbuild: Option<BuildId>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schema(schema_with = schema::data)]
    pub data: Value,
}

impl From<CloudEvent> for CloudEventView {
    fn from(e: CloudEvent) -> Self {
        let CloudEvent { specversion, id, source, ty, subject, time, datacontenttype, kilnbuild, data } = e;
        CloudEventView { specversion, id, source, ty, subject, time, datacontenttype, kilnbuild, data }
    }
}

/// An event of a build's history, numbered in the order it was applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = StoredEvent)]
pub struct StoredEventView {
    pub seq: u64,
    pub event: CloudEventView,
}

impl From<StoredEvent> for StoredEventView {
    fn from(e: StoredEvent) -> Self {
        StoredEventView { seq: e.seq, event: e.event.into() }
    }
}

/// A page of a build's history, and the cursor for the next one (`?after=`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<StoredEventView>,
    pub next_after: u64,
}

/// The answer to a sent event: its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub id: String,
}
