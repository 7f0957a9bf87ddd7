//! Every request and response body of the `/v1` API as a type: the server answers with
//! them, the client returns them, the CLI reads them, and the OpenAPI document's schemas
//! are generated from them (`utoipa`). Field names and shapes are the wire contract.

mod builds;
mod common;
mod events;
mod images;
mod logs;
mod repos;
mod secrets;

pub use builds::{
    BuildImageView, BuildList, BuildSummaryView, BuildView, CancelAnswer, CancelState, StageView, StepView,
    Submitted,
};
pub use common::{ErrorBody, ErrorDetail, Health, HealthStatus, IngestAnswer};
pub use events::{Accepted, CloudEventView, EventPage, StoredEventView};
pub use images::{
    BuildMissingAnswer, BuildMissingRequest, CatalogImageView, ImageDetailView, ImageList, ImageRecordView,
};
pub use logs::{LogEntry, LogKind, LogList, encode};
pub use repos::{GitView, HookAnswer, RepoList, RepoRequest, RepoView};
pub use secrets::{RunnerSecrets, SecretList, SecretView};

/// Schemas for fields whose types live in the domain crate, generated from the domain
/// type itself so they cannot drift: a status enum lists exactly what serde writes.
pub(crate) mod schema {
    use kiln_domain::Status;
    use kiln_domain::status::ImageStatus;
    use serde::Serialize;
    use utoipa::openapi::Object;
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};

    fn names<T: Serialize>(all: &[T]) -> Vec<String> {
        all.iter().filter_map(|s| serde_json::to_value(s).ok()?.as_str().map(str::to_string)).collect()
    }

    fn string_enum(values: Vec<String>, description: &str) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values))
            .description(Some(description))
            .build()
    }

    /// A build's, stage's or step's status.
    pub fn status() -> Object {
        string_enum(names(&Status::ALL), "pending, running, or how it ended")
    }

    /// A git host.
    pub fn provider() -> Object {
        string_enum(names(&kiln_domain::git::Provider::ALL), "the git host: github, or gitea (also Forgejo)")
    }

    /// A catalog record's status.
    pub fn image_status() -> Object {
        string_enum(names(&ImageStatus::ALL), "where an image's build for one provider stands")
    }

    /// CloudEvent data: any JSON object (its fields reach steps as variables).
    pub fn data() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .description(Some("a JSON object"))
            .build()
    }
}
