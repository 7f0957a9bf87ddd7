//! The `/v1` routes. [`ROUTES`] is the one definition: the router is built from it (each
//! route behind the layer for its access) and so is the OpenAPI document, so the two
//! cannot disagree.

use crate::access::guard;
use crate::handlers::meta::Document;
use crate::handlers::{builds, events, images, ingest, logs, meta, repos, secrets};
use crate::route::{Access, Content, Param, Route, Schemas, json, path, query};
use crate::views::{
    Accepted, BuildList, BuildMissingAnswer, BuildMissingRequest, BuildView, CancelAnswer, CloudEventView,
    EventPage, Health, HookAnswer, ImageDetailView, ImageList, IngestAnswer, LogList, RepoList, RepoRequest,
    RepoView, RunnerSecrets, SecretList, Submitted,
};
use crate::{AppState, MAX_BODY_BYTES};
use axum::Extension;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::{MethodFilter, on};
use std::sync::Arc;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

/// The document's own schema: an OpenAPI 3.1 document (its parts are not spelled out).
fn openapi_document(_: &mut Schemas) -> RefOr<Schema> {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let object = || ObjectBuilder::new().schema_type(Type::Object);
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("an OpenAPI 3.1 document"))
        .property("openapi", string())
        .property("info", object())
        .property("paths", object())
        .property("components", object())
        .required("openapi")
        .required("info")
        .required("paths")
        .into()
}

/// A webhook's payload, as the host documents it; Kiln reads `repository.full_name` first.
fn webhook_payload(_: &mut Schemas) -> RefOr<Schema> {
    let repository = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("full_name", ObjectBuilder::new().schema_type(Type::String))
        .required("full_name");
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("the host's webhook payload (push, pull_request, ping)"))
        .property("repository", repository)
        .required("repository")
        .into()
}

const ID: Param = path("id", "build id");
const ORG: Param = path("org", "organisation");
const REPO: Param = path("repo", "repository");
const OFFSET: Param = query("offset", true, "byte offset to read from (default 0)");
const WAIT: Param = query("wait", true, "seconds to wait for new bytes when there are none (at most 25)");
const MAX: Param = query("max", true, "most bytes to return (default 1 MiB)");
const SECRET: Param =
    path("name", "the secret's name: an environment variable name, not starting with KILN_");
const ATTEMPT: Param = query("attempt", true, "which attempt of the job (default: the latest)");

pub const ROUTES: &[Route] = &[
    Route {
        method: Method::GET,
        path: "/healthz",
        summary: "Liveness: no token needed",
        access: Access::Open,
        params: &[],
        body: Content::None,
        ok: (200, Content::Json(json::<Health>), "the service is up"),
        errors: &[],
        make: |m| on(m, meta::health),
    },
    Route {
        method: Method::GET,
        path: "/v1/openapi.json",
        summary: "This document",
        access: Access::Admin,
        params: &[],
        body: Content::None,
        ok: (200, Content::Json(openapi_document), "the OpenAPI 3.1 document"),
        errors: &[],
        make: |m| on(m, meta::openapi),
    },
    Route {
        method: Method::POST,
        path: "/v1/repos/{org}/{repo}/builds",
        summary: "Submit a pipeline (YAML body): compile it and start a build",
        access: Access::Admin,
        params: &[ORG, REPO],
        body: Content::Yaml,
        ok: (201, Content::Json(json::<Submitted>), "the build was created: its id"),
        errors: &[
            (400, "the pipeline is invalid: every error with line and column"),
            (413, "body over 1 MiB"),
        ],
        make: |m| on(m, builds::submit_build),
    },
    Route {
        method: Method::GET,
        path: "/v1/repos/{org}/{repo}/builds",
        summary: "A repository's builds, newest first",
        access: Access::Admin,
        params: &[ORG, REPO, query("limit", true, "at most this many (default 50)")],
        body: Content::None,
        ok: (200, Content::Json(json::<BuildList>), "the builds"),
        errors: &[],
        make: |m| on(m, builds::list_builds),
    },
    Route {
        method: Method::GET,
        path: "/v1/builds/{id}",
        summary: "A build with its stages and steps",
        access: Access::Admin,
        params: &[ID],
        body: Content::None,
        ok: (200, Content::Json(json::<BuildView>), "the build"),
        errors: &[(404, "no such build")],
        make: |m| on(m, builds::get_build),
    },
    Route {
        method: Method::POST,
        path: "/v1/builds/{id}/cancel",
        summary: "Cancel a build: running steps get SIGTERM, then SIGKILL",
        access: Access::Admin,
        params: &[ID],
        body: Content::None,
        ok: (202, Content::Json(json::<CancelAnswer>), "cancel requested"),
        errors: &[(404, "no such build"), (409, "the build has already ended")],
        make: |m| on(m, builds::cancel_build),
    },
    Route {
        method: Method::GET,
        path: "/v1/builds/{id}/logs",
        summary: "A build's logs in the stable order: init, steps by number, services",
        access: Access::Admin,
        params: &[ID],
        body: Content::None,
        ok: (200, Content::Json(json::<LogList>), "the logs"),
        errors: &[(404, "no such build")],
        make: |m| on(m, logs::list_logs),
    },
    Route {
        method: Method::GET,
        path: "/v1/builds/{id}/logs/init",
        summary: "The build's init log (setup output), from an offset",
        access: Access::Admin,
        params: &[ID, OFFSET, WAIT, MAX],
        body: Content::None,
        ok: (200, Content::Bytes, "bytes from the offset; headers kiln-next-offset and kiln-complete"),
        errors: &[(404, "no such build")],
        make: |m| on(m, logs::read_init_log),
    },
    Route {
        method: Method::GET,
        path: "/v1/builds/{id}/logs/{stage}/{step}",
        summary: "A step's (or service's) log, from an offset: for tailing",
        access: Access::Admin,
        params: &[
            ID,
            path("stage", "stage name (`#` as %23)"),
            path("step", "step or service name"),
            OFFSET,
            WAIT,
            MAX,
            ATTEMPT,
        ],
        body: Content::None,
        ok: (200, Content::Bytes, "bytes from the offset; headers kiln-next-offset and kiln-complete"),
        errors: &[(404, "no such build, step or attempt")],
        make: |m| on(m, logs::read_step_log),
    },
    Route {
        method: Method::GET,
        path: "/v1/builds/{id}/events",
        summary: "The build's event history (CloudEvents), in order, by cursor",
        access: Access::Admin,
        params: &[
            ID,
            query("after", true, "return events after this sequence number (default 0)"),
            query("limit", true, "at most this many (default 100, max 1000)"),
        ],
        body: Content::None,
        ok: (200, Content::Json(json::<EventPage>), "events and the cursor for the next page"),
        errors: &[(404, "no such build")],
        make: |m| on(m, events::list_events),
    },
    Route {
        method: Method::POST,
        path: "/v1/builds/{id}/events",
        summary: "Send a CloudEvent (JSON format) to a build",
        access: Access::BuildWriter,
        params: &[ID],
        body: Content::Json(json::<CloudEventView>),
        ok: (202, Content::Json(json::<Accepted>), "accepted"),
        errors: &[
            (400, "not a valid CloudEvent: says why"),
            (404, "no such build"),
            (413, "body over 1 MiB"),
        ],
        make: |m| on(m, events::post_event),
    },
    Route {
        method: Method::POST,
        path: "/v1/builds/{id}/ingest/logs",
        summary: "Runner: store a log batch at its byte offset (idempotent)",
        access: Access::BuildWriter,
        params: &[
            ID,
            query("stream", false, "the stream key, e.g. step/0001/build/compile/1"),
            query("offset", true, "the batch's byte offset"),
        ],
        body: Content::Bytes,
        ok: (
            200,
            Content::Json(json::<IngestAnswer>),
            "stored; `canceled` says whether the build was canceled",
        ),
        errors: &[
            (400, "bad stream key"),
            (404, "no such build"),
            (409, "different bytes already stored there, or a gap"),
        ],
        make: |m| on(m, ingest::ingest_logs),
    },
    Route {
        method: Method::POST,
        path: "/v1/builds/{id}/ingest/init",
        summary: "Runner: append setup output to the build's init log (idempotent by batch id)",
        access: Access::BuildWriter,
        params: &[ID, query("batch", false, "the batch id")],
        body: Content::Bytes,
        ok: (200, Content::Json(json::<IngestAnswer>), "stored"),
        errors: &[(404, "no such build")],
        make: |m| on(m, ingest::ingest_init),
    },
    Route {
        method: Method::POST,
        path: "/v1/builds/{id}/ingest/complete",
        summary: "Runner: a stream has ended",
        access: Access::BuildWriter,
        params: &[ID, query("stream", false, "the stream key")],
        body: Content::None,
        ok: (200, Content::Json(json::<IngestAnswer>), "completed"),
        errors: &[(400, "bad stream key"), (404, "no such build")],
        make: |m| on(m, ingest::ingest_complete),
    },
    Route {
        method: Method::POST,
        path: "/v1/builds/{id}/ingest/heartbeat",
        summary: "Runner: should this stage stop (build canceled, or stage stopped by an event)?",
        access: Access::BuildWriter,
        params: &[ID, query("stage", false, "the runner's stage")],
        body: Content::None,
        ok: (200, Content::Json(json::<IngestAnswer>), "`canceled` says whether the build was canceled"),
        errors: &[(404, "no such build")],
        make: |m| on(m, ingest::ingest_heartbeat),
    },
    Route {
        method: Method::GET,
        path: "/v1/images",
        summary: "The image catalog: every image with its status and percent per provider",
        access: Access::Admin,
        params: &[],
        body: Content::None,
        ok: (200, Content::Json(json::<ImageList>), "the images"),
        errors: &[],
        make: |m| on(m, images::list_images),
    },
    Route {
        method: Method::GET,
        path: "/v1/images/{name}",
        summary: "One image: its record per provider, with history",
        access: Access::Admin,
        params: &[path("name", "image name")],
        body: Content::None,
        ok: (200, Content::Json(json::<ImageDetailView>), "the image"),
        errors: &[(404, "no such image")],
        make: |m| on(m, images::get_image),
    },
    Route {
        method: Method::POST,
        path: "/v1/images/{name}/builds",
        summary: "Build and push the providers that are missing or failed (or those named: {\"providers\": [...]})",
        access: Access::Admin,
        params: &[path("name", "image name")],
        body: Content::Json(json::<BuildMissingRequest>),
        ok: (201, Content::Json(json::<BuildMissingAnswer>), "the build was started: its id and providers"),
        errors: &[(400, "unknown provider"), (404, "no such image"), (409, "nothing is missing or failed")],
        make: |m| on(m, images::build_missing),
    },
    Route {
        method: Method::PUT,
        path: "/v1/repos/{org}/{repo}/secrets/{name}",
        summary: "Set a repository secret (body: the raw value, 4 bytes to 64 KiB of UTF-8 without NUL)",
        access: Access::Admin,
        params: &[ORG, REPO, SECRET],
        body: Content::Bytes,
        ok: (204, Content::None, "stored, encrypted"),
        errors: &[(400, "a bad name or value: the reason")],
        make: |m| on(m, secrets::put_secret),
    },
    Route {
        method: Method::GET,
        path: "/v1/repos/{org}/{repo}/secrets",
        summary: "A repository's secrets: names and when they were set, never values",
        access: Access::Admin,
        params: &[ORG, REPO],
        body: Content::None,
        ok: (200, Content::Json(json::<SecretList>), "the secrets, by name"),
        errors: &[],
        make: |m| on(m, secrets::list_secrets),
    },
    Route {
        method: Method::DELETE,
        path: "/v1/repos/{org}/{repo}/secrets/{name}",
        summary: "Remove a repository secret",
        access: Access::Admin,
        params: &[ORG, REPO, SECRET],
        body: Content::None,
        ok: (204, Content::None, "removed"),
        errors: &[(400, "a bad name"), (404, "no such secret")],
        make: |m| on(m, secrets::delete_secret),
    },
    Route {
        method: Method::PUT,
        path: "/v1/repos/{org}/{repo}",
        summary: "Register a repository for builds from git (or change it): its host, API root, \
                  webhook secret and token (kept as secrets, never returned)",
        access: Access::Admin,
        params: &[ORG, REPO],
        body: Content::Json(json::<RepoRequest>),
        ok: (200, Content::Json(json::<RepoView>), "the settings, without the secret and token"),
        errors: &[(400, "bad settings: the reason")],
        make: |m| on(m, repos::put_repo),
    },
    Route {
        method: Method::GET,
        path: "/v1/repos/{org}/{repo}",
        summary: "A repository's git settings (never the webhook secret or token)",
        access: Access::Admin,
        params: &[ORG, REPO],
        body: Content::None,
        ok: (200, Content::Json(json::<RepoView>), "the settings"),
        errors: &[(404, "the repository is not registered")],
        make: |m| on(m, repos::get_repo),
    },
    Route {
        method: Method::GET,
        path: "/v1/repos",
        summary: "The registered repositories",
        access: Access::Admin,
        params: &[],
        body: Content::None,
        ok: (200, Content::Json(json::<RepoList>), "the repositories, by name"),
        errors: &[],
        make: |m| on(m, repos::list_repos),
    },
    Route {
        method: Method::POST,
        path: "/v1/hooks/github",
        summary: "GitHub webhook (push, pull_request, ping), authenticated by X-Hub-Signature-256",
        access: Access::Signed,
        params: &[],
        body: Content::Json(webhook_payload),
        ok: (201, Content::Json(json::<HookAnswer>), "builds started (200 with a reason when none)"),
        errors: &[
            (400, "not a webhook Kiln reads: the reason"),
            (404, "the repository is not registered"),
            (413, "body over 25 MB"),
            (502, "the host did not serve the commit's .kiln.yml"),
        ],
        make: |m| on(m, repos::github_hook),
    },
    Route {
        method: Method::POST,
        path: "/v1/hooks/gitea",
        summary: "Gitea or Forgejo webhook (push, pull_request), authenticated by X-Gitea-Signature",
        access: Access::Signed,
        params: &[],
        body: Content::Json(webhook_payload),
        ok: (201, Content::Json(json::<HookAnswer>), "builds started (200 with a reason when none)"),
        errors: &[
            (400, "not a webhook Kiln reads: the reason"),
            (404, "the repository is not registered"),
            (413, "body over 25 MB"),
            (502, "the host did not serve the commit's .kiln.yml"),
        ],
        make: |m| on(m, repos::gitea_hook),
    },
    Route {
        method: Method::GET,
        path: "/v1/builds/{id}/secrets",
        summary: "For the build's runner only (admin tokens get 403): the values of the secrets a stage's \
                  steps and services declare, and the declared names that are not set",
        access: Access::BuildRunner,
        params: &[ID, query("stage", false, "the stage (instance) the runner runs")],
        body: Content::None,
        ok: (200, Content::Json(json::<RunnerSecrets>), "the declared values and missing names"),
        errors: &[
            (403, "not this build's runner token, or the build may not use secrets"),
            (404, "no such build or stage"),
        ],
        make: |m| on(m, secrets::runner_secrets),
    },
];

/// The router for every route in [`ROUTES`], each behind the check for its access, and
/// the web UI's pages ([`crate::ui`], not in the table: they are not API).
pub fn router(state: AppState) -> axum::Router {
    let document = Document(Arc::new(crate::openapi::document(ROUTES)));
    let mut r = axum::Router::new();
    for route in ROUTES {
        let filter = MethodFilter::try_from(route.method.clone()).expect("ROUTES use standard methods");
        r = r.route(route.path, guard(route.access, &state, (route.make)(filter)));
    }
    r.merge(crate::ui::router())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(Extension(document))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::{document, operation_id};
    use serde_json::Value;

    #[test]
    fn every_route_is_documented_once_with_its_path_params() {
        let doc = document(ROUTES);
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
            assert!(op.is_object(), "{} {} missing", r.method, r.path);
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_path: Vec<&str> = r
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(declared, in_path, "{}", r.path);
            if matches!(r.access, Access::BuildWriter | Access::BuildRunner) {
                assert!(in_path.contains(&"id"), "{}: a build-writer route needs {{id}}", r.path);
            }
        }
        let mut ids: Vec<String> = ROUTES.iter().map(|r| operation_id(r.method.as_str(), r.path)).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ROUTES.len(), "operation ids are unique");
    }

    /// Every `$ref` in `v`.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_json_body_has_a_real_schema() {
        let doc = document(ROUTES);
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in &all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("odd ref {r}"));
            assert!(schemas.contains_key(name), "{r} does not resolve");
        }
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
            let mut bodies: Vec<&Value> = op["responses"].as_object().unwrap().values().collect();
            bodies.push(&op["requestBody"]);
            for b in bodies {
                let Some(schema) =
                    b.get("content").and_then(|c| c.get("application/json")).map(|j| &j["schema"])
                else {
                    continue;
                };
                let resolved = match schema.get("$ref").and_then(Value::as_str) {
                    Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
                    None => schema,
                };
                let described = resolved.get("properties").is_some()
                    || resolved.get("oneOf").is_some()
                    || resolved.get("enum").is_some();
                assert!(described, "{} {}: a body without a schema: {resolved}", r.method, r.path);
            }
        }
        // The error body is the same everywhere, and lists its fields.
        assert_eq!(schemas["Error"]["required"], serde_json::json!(["message", "details"]));
        // Statuses are listed from the domain's enum.
        let status = serde_json::to_string(&schemas["Build"]["properties"]["status"]).unwrap();
        for s in kiln_domain::Status::ALL {
            assert!(status.contains(&format!("\"{s}\"")), "{s} missing from {status}");
        }
    }
}
