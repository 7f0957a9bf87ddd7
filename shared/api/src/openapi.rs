//! The OpenAPI 3.1 document, generated from a route table: paths, parameters and access
//! from the table, every body's schema from its type (`utoipa`).

use crate::route::{Access, Content, ParamIn, Route, Schemas, json};
use crate::views::ErrorBody;
use serde_json::{Map, Value, json};

fn content(c: Content, schemas: &mut Schemas) -> Option<Value> {
    let schema = match c {
        Content::None => return None,
        Content::Json(f) => return Some(json!({ "application/json": { "schema": f(schemas) } })),
        Content::Yaml => json!({ "application/yaml": { "schema": { "type": "string" } } }),
        Content::Bytes => {
            json!({ "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } })
        }
    };
    Some(schema)
}

fn error_response(description: &str, error: &Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": error } } })
}

pub fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_lowercase();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.push_str(&part.replace(['{', '}'], "").replace(['.', '-'], "_"));
    }
    id
}

/// The document for `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut schemas = Schemas::new();
    let error = serde_json::to_value(json::<ErrorBody>(&mut schemas)).unwrap_or_default();
    let mut paths = Map::new();
    for r in routes {
        let mut responses = Map::new();
        let (status, body, description) = r.ok;
        let mut ok = json!({ "description": description });
        if let Some(c) = content(body, &mut schemas) {
            ok["content"] = c;
        }
        responses.insert(status.to_string(), ok);
        for (status, description) in r.errors {
            responses.insert(status.to_string(), error_response(description, &error));
        }
        let mut op = json!({
            "summary": r.summary,
            "operationId": operation_id(r.method.as_str(), r.path),
            "parameters": r.params.iter().map(|p| json!({
                "name": p.name,
                "in": if p.at == ParamIn::Path { "path" } else { "query" },
                "required": p.at == ParamIn::Path,
                "description": p.description,
                "schema": if p.integer {
                    json!({ "type": "integer", "minimum": 0 })
                } else {
                    json!({ "type": "string" })
                },
            })).collect::<Vec<_>>(),
        });
        if r.access == Access::Open {
            op["security"] = json!([]);
        } else if r.access == Access::Signed {
            op["security"] = json!([]);
            responses.insert("401".into(), error_response("no signature, or not the repository's", &error));
        } else {
            responses.insert("401".into(), error_response("no token, or not a valid one", &error));
            responses
                .insert("403".into(), error_response("the token may not use this route or build", &error));
        }
        // Any route may fail on a backend hiccup (503, worth retrying) or a bug (500).
        responses.insert("500".into(), error_response("internal error", &error));
        responses.insert("503".into(), error_response("a backend is unavailable: try again", &error));
        if let Some(c) = content(r.body, &mut schemas) {
            op["requestBody"] = json!({ "required": true, "content": c });
        }
        op["responses"] = Value::Object(responses);
        let item = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        item[r.method.as_str().to_lowercase()] = op;
    }
    let schemas: Map<String, Value> =
        schemas.into_iter().map(|(name, s)| (name, serde_json::to_value(s).unwrap_or_default())).collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Kiln API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Kiln, a serverless build system: builds, logs, events and the image catalog.",
        },
        "paths": paths,
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas,
        },
    })
}
